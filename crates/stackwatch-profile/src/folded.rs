//! The folded stack text format: one `frame;frame;...;leaf COUNT` line per stack.
//!
//! Parsing is strict and total: every malformed line is an error that names its line
//! number, never a panic and never a silently skipped line.

use std::collections::HashMap;

use thiserror::Error;

/// The frame that stands for every stack folded away by a `max_stacks` bound, so that
/// totals stay exact when the rarest stacks are dropped.
pub const PRUNED_FRAME: &str = "[pruned]";

/// Longest frame name kept; longer names are cut (with `…`) so one hostile or
/// pathological symbol cannot blow up every format downstream.
pub const MAX_FRAME_LEN: usize = 1024;

/// Why a folded text could not be parsed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FoldedError {
    /// The line has no space-separated count after the stack.
    #[error("line {line}: missing sample count after the stack")]
    MissingCount {
        /// 1-based line number.
        line: usize,
    },
    /// The count is not a non-negative integer.
    #[error("line {line}: sample count {count:?} is not a non-negative integer")]
    BadCount {
        /// 1-based line number.
        line: usize,
        /// The offending text.
        count: String,
    },
    /// The stack part is empty or has an empty frame (`a;;b`).
    #[error("line {line}: empty stack or empty frame name")]
    EmptyFrame {
        /// 1-based line number.
        line: usize,
    },
    /// Adding the counts overflowed u64.
    #[error("line {line}: sample counts overflow")]
    Overflow {
        /// 1-based line number.
        line: usize,
    },
}

/// Makes a frame name safe to embed in a folded stack: `;` (the separator) and control
/// characters (newlines would split the line) become `_`, and names longer than
/// [`MAX_FRAME_LEN`] bytes are cut at a character boundary. Empty names become `[unknown]`.
pub fn sanitize_frame(name: &str) -> std::borrow::Cow<'_, str> {
    let needs_change = name.is_empty()
        || name.len() > MAX_FRAME_LEN
        || name.chars().any(|c| c == ';' || c.is_control());
    if !needs_change {
        return std::borrow::Cow::Borrowed(name);
    }
    if name.is_empty() {
        return std::borrow::Cow::Borrowed("[unknown]");
    }
    let mut out = String::with_capacity(name.len().min(MAX_FRAME_LEN + 3));
    for c in name.chars() {
        if out.len() + c.len_utf8() > MAX_FRAME_LEN {
            out.push('…');
            break;
        }
        out.push(if c == ';' || c.is_control() { '_' } else { c });
    }
    std::borrow::Cow::Owned(out)
}

/// Parses folded text into stack → count, summing repeated stacks.
///
/// Blank lines are allowed. Frame names may contain spaces: the count is whatever
/// follows the last space. Bytes that are not UTF-8 must be replaced by the caller
/// (see [`parse_folded_bytes`]).
pub fn parse_folded(text: &str) -> Result<HashMap<String, u64>, FoldedError> {
    let mut stacks: HashMap<String, u64> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim_end_matches('\r').trim();
        if trimmed.is_empty() {
            continue;
        }
        let (stack, count) = trimmed
            .rsplit_once(' ')
            .ok_or(FoldedError::MissingCount { line })?;
        let count: u64 = count.parse().map_err(|_| FoldedError::BadCount {
            line,
            count: count.chars().take(64).collect(),
        })?;
        let stack = stack.trim_end();
        if stack.is_empty() || stack.split(';').any(|f| f.is_empty()) {
            return Err(FoldedError::EmptyFrame { line });
        }
        if count == 0 {
            continue;
        }
        let slot = stacks.entry(stack.to_owned()).or_insert(0);
        *slot = slot
            .checked_add(count)
            .ok_or(FoldedError::Overflow { line })?;
    }
    Ok(stacks)
}

/// Like [`parse_folded`], for bytes from an untrusted peer: invalid UTF-8 sequences are
/// replaced by U+FFFD instead of failing the whole body.
pub fn parse_folded_bytes(bytes: &[u8]) -> Result<HashMap<String, u64>, FoldedError> {
    parse_folded(&String::from_utf8_lossy(bytes))
}

/// Writes stacks as folded text, sorted by stack so output is deterministic and ready for
/// `flamegraph.pl` or `inferno-flamegraph`.
pub fn write_folded(stacks: &HashMap<String, u64>) -> String {
    let mut lines: Vec<(&String, &u64)> = stacks.iter().filter(|(_, c)| **c > 0).collect();
    lines.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut out = String::with_capacity(lines.iter().map(|(s, _)| s.len() + 12).sum());
    for (stack, count) in lines {
        out.push_str(stack);
        out.push(' ');
        out.push_str(&count.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_sums_repeated_stacks() {
        let s = parse_folded("main;a;b 3\nmain;a 2\n\nmain;a;b 4\n").unwrap();
        assert_eq!(s["main;a;b"], 7);
        assert_eq!(s["main;a"], 2);
    }

    #[test]
    fn frame_names_may_contain_spaces() {
        let s = parse_folded("main;<T as core::fmt::Debug>::fmt 5\n").unwrap();
        assert_eq!(s["main;<T as core::fmt::Debug>::fmt"], 5);
    }

    #[test]
    fn malformed_lines_name_their_line() {
        assert_eq!(
            parse_folded("a;b 1\nnocount\n"),
            Err(FoldedError::MissingCount { line: 2 })
        );
        assert!(matches!(
            parse_folded("a;b -1"),
            Err(FoldedError::BadCount { line: 1, .. })
        ));
        assert!(matches!(
            parse_folded("a;b 1.5"),
            Err(FoldedError::BadCount { line: 1, .. })
        ));
        assert_eq!(
            parse_folded("a;;b 1"),
            Err(FoldedError::EmptyFrame { line: 1 })
        );
        assert_eq!(
            parse_folded(&format!("a {}\na {}", u64::MAX, 1)),
            Err(FoldedError::Overflow { line: 2 })
        );
    }

    #[test]
    fn non_utf8_is_replaced_not_fatal() {
        let s = parse_folded_bytes(b"main;\xff\xfe 2\n").unwrap();
        assert_eq!(s["main;\u{fffd}\u{fffd}"], 2);
    }

    #[test]
    fn sanitize_removes_separators_and_newlines_and_bounds_length() {
        assert_eq!(sanitize_frame("a;b\nc"), "a_b_c");
        assert_eq!(sanitize_frame(""), "[unknown]");
        assert_eq!(sanitize_frame("<script>"), "<script>");
        let long = "x".repeat(5000);
        let cut = sanitize_frame(&long);
        assert!(cut.len() <= MAX_FRAME_LEN + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn write_then_parse_round_trips() {
        let mut m = HashMap::new();
        m.insert("t;a;b".to_string(), 4);
        m.insert("t;a".to_string(), 1);
        let text = write_folded(&m);
        assert_eq!(text, "t;a 1\nt;a;b 4\n");
        assert_eq!(parse_folded(&text).unwrap(), m);
    }
}
