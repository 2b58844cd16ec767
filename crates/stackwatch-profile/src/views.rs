//! Views of a profile that answer "where, and why": frames hidden by a pattern (like
//! `go tool pprof -hide`), the sandwich of one function (its callers and its callees,
//! merged before anything is cut), and which frames are plumbing (thread roots and
//! runtime entry points) rather than the code a user wrote.

use std::collections::HashMap;

use crate::Profile;

/// `profile` with every frame for which `hide` is true removed from every stack
/// (stacks that become empty are dropped; stacks that become equal are merged).
pub fn hide_frames(profile: &Profile, hide: impl Fn(&str) -> bool) -> Profile {
    let mut out = Profile {
        stacks: HashMap::with_capacity(profile.stacks.len()),
        ..profile.clone_meta()
    };
    let mut kept = String::new();
    for (stack, count) in &profile.stacks {
        kept.clear();
        for frame in stack.split(';').filter(|f| !hide(f)) {
            if !kept.is_empty() {
                kept.push(';');
            }
            kept.push_str(frame);
        }
        if !kept.is_empty() {
            out.add(&kept, *count);
        }
    }
    out
}

/// The callers and callees of one function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandwich {
    /// Periods with the function as the leaf.
    pub self_count: u64,
    /// Periods with the function anywhere on the stack (once per stack).
    pub total_count: u64,
    /// Stacks from the function down to the root: `function;caller;caller's caller`.
    pub callers: Profile,
    /// Stacks from the function up to the leaf: `function;callee;...`.
    pub callees: Profile,
}

/// The sandwich of `function` in `profile`: every stack through it, split at its
/// outermost occurrence (so a recursive function is counted once per stack) into the
/// callers below and the callees above. Built from the whole profile, so nothing cut
/// from a truncated view is missing from it.
pub fn sandwich(profile: &Profile, function: &str) -> Sandwich {
    let mut s = Sandwich {
        callers: profile.clone_meta(),
        callees: profile.clone_meta(),
        ..Sandwich::default()
    };
    let mut buf = String::new();
    for (stack, count) in &profile.stacks {
        let frames: Vec<&str> = stack.split(';').collect();
        let Some(at) = frames.iter().position(|f| *f == function) else {
            continue;
        };
        s.total_count = s.total_count.saturating_add(*count);
        if frames.last() == Some(&function) {
            s.self_count = s.self_count.saturating_add(*count);
        }
        buf.clear();
        for (i, f) in frames[..=at].iter().rev().enumerate() {
            if i > 0 {
                buf.push(';');
            }
            buf.push_str(f);
        }
        s.callers.add(&buf, *count);
        s.callees.add(&frames[at..].join(";"), *count);
    }
    s
}

/// Frames that are plumbing rather than code: the first frame of every stack (a thread
/// name), and the runtime's entry points that sit under every thread.
pub fn is_plumbing(frame: &str) -> bool {
    const EXACT: &[&str] = &[
        "_start",
        "__libc_start_main",
        "__libc_start_call_main",
        "main",
        "start_thread",
        "thread_start",
        "clone",
        "clone3",
        "__clone",
        "__clone3",
        "[unknown]",
        "[pruned]",
        "[other]",
        "[truncated]",
    ];
    const CONTAINS: &[&str] = &[
        "__rust_begin_short_backtrace",
        "std::rt::lang_start",
        "std::sys::pal::unix::thread::Thread::new::thread_start",
        "std::sys::thread::unix::Thread::new::thread_start",
        "core::ops::function::FnOnce::call_once",
        "std::thread::Builder::spawn_unchecked_",
        "std::panicking::try",
        "std::panic::catch_unwind",
        "<alloc::boxed::Box<F,A> as core::ops::function::FnOnce<Args>>::call_once",
    ];
    EXACT.contains(&frame)
        || CONTAINS.iter().any(|c| frame.contains(c))
        // However a build names it (`<std::sys::thread::unix::Thread>::new::thread_start`).
        || frame.ends_with("::thread_start")
}

/// The first frame of every stack: the thread (or process) it ran on.
pub fn thread_roots(profile: &Profile) -> std::collections::HashSet<&str> {
    profile
        .stacks
        .keys()
        .filter_map(|s| s.split(';').next())
        .collect()
}

impl Profile {
    /// An empty profile with this one's period and time span.
    pub fn clone_meta(&self) -> Profile {
        Profile {
            stacks: HashMap::new(),
            period_ns: self.period_ns,
            start_unix_ns: self.start_unix_ns,
            duration_ns: self.duration_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Profile {
        Profile::from_folded(text, 1).unwrap()
    }

    #[test]
    fn hiding_removes_frames_and_merges_what_becomes_equal() {
        let h = hide_frames(&p("t;std::rt;a;b 2\nt;a;b 3\nt;x 1\n"), |f| {
            f.starts_with("std::") || f == "x"
        });
        assert_eq!(h.stacks["t;a;b"], 5);
        assert_eq!(h.stacks["t"], 1);
        assert_eq!(h.total(), 6);
    }

    #[test]
    fn sandwich_splits_at_the_outermost_occurrence_and_keeps_every_period() {
        let s = sandwich(
            &p("t;main;f;g 4\nt;other;f 3\nt;main;f;f;h 2\nt;main;g 10\n"),
            "f",
        );
        assert_eq!((s.self_count, s.total_count), (3, 9));
        assert_eq!(s.callers.stacks["f;main;t"], 6);
        assert_eq!(s.callers.stacks["f;other;t"], 3);
        assert_eq!(s.callees.stacks["f;g"], 4);
        assert_eq!(s.callees.stacks["f"], 3);
        assert_eq!(s.callees.stacks["f;f;h"], 2);
        assert_eq!(s.callers.total(), s.total_count);
        assert_eq!(s.callees.total(), s.total_count);
    }

    #[test]
    fn plumbing_is_runtime_entry_points_not_user_code() {
        assert!(is_plumbing("_start"));
        assert!(is_plumbing(
            "std::sys::backtrace::__rust_begin_short_backtrace"
        ));
        assert!(is_plumbing(
            "<std::sys::thread::unix::Thread>::new::thread_start"
        ));
        assert!(!is_plumbing("binlog_streamer::decode::RowDecoder::decode"));
        assert!(!is_plumbing("main_loop"));
    }
}
