//! A library stripped of its symbols is named from a separate debug file found by its
//! build id, in a directory given to the builder: what installing a distribution's debug
//! package (Debian's `libc6-dbg`) does for the system's libraries, without installing
//! anything. Needs `cc` and binutils' `objcopy`.

mod support;

use std::ffi::CString;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const LIB: &str = r#"
#include <stdint.h>
/* Static and never inlined: only a symbol table or DWARF can name it. */
static __attribute__((noinline, noclone, used)) uint64_t sw_hidden_spin(uint64_t n) {
    uint64_t x = n;
    for (uint64_t i = 0; i < n; i++) x = x * 6364136223846793005ULL + (x >> 7) + i;
    return x;
}
uint64_t sw_run(uint64_t n) { return sw_hidden_spin(n) ^ 1; }
"#;

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (needs cc and binutils)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The GNU build id of `path`, in hex, from `readelf -n`.
fn build_id(path: &Path) -> String {
    let out = Command::new("readelf")
        .arg("-n")
        .arg(path)
        .output()
        .expect("readelf (binutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("a build id in {}: {text}", path.display()))
        .trim()
        .to_string()
}

/// A temporary directory, removed when the test ends.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("stackwatch-debug-files-")
        .tempdir()
        .unwrap()
}

#[test]
fn a_stripped_library_is_named_from_its_debug_file_found_by_build_id() {
    let tmp = scratch();
    let dir = tmp.path();
    std::fs::write(dir.join("sw.c"), LIB).unwrap();
    let lib = dir.join("libswdebug.so");
    run(Command::new("cc")
        .args(["-O2", "-g", "-shared", "-fPIC", "-Wl,--build-id", "-o"])
        .arg(&lib)
        .arg(dir.join("sw.c")));
    // The debug file where debuggers look for it: <dir>/.build-id/xx/yyyy.debug.
    let id = build_id(&lib);
    let debug_root = dir.join("debug");
    let debug_file = debug_root
        .join(".build-id")
        .join(&id[..2])
        .join(format!("{}.debug", &id[2..]));
    std::fs::create_dir_all(debug_file.parent().unwrap()).unwrap();
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&lib)
        .arg(&debug_file));
    run(Command::new("objcopy")
        .args(["--strip-debug", "--strip-unneeded"])
        .arg(&lib));
    let sections = Command::new("readelf")
        .arg("-S")
        .arg(&lib)
        .output()
        .unwrap();
    let sections = String::from_utf8_lossy(&sections.stdout);
    assert!(
        !sections.contains(".symtab") && !sections.contains(".debug_info"),
        "stripped: {sections}"
    );

    let profiler = stackwatch::Profiler::builder()
        .frequency_hz(499)
        .debug_dirs([&debug_root])
        .start()
        .unwrap();
    let c_lib = CString::new(lib.to_str().unwrap()).unwrap();
    let sym = CString::new("sw_run").unwrap();
    // SAFETY: loads the library built above; sw_run has the C signature declared here.
    let sw_run: extern "C" fn(u64) -> u64 = unsafe {
        let h = libc::dlopen(c_lib.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        assert!(!h.is_null(), "dlopen {}", lib.display());
        let f = libc::dlsym(h, sym.as_ptr());
        assert!(!f.is_null());
        std::mem::transmute::<*mut libc::c_void, extern "C" fn(u64) -> u64>(f)
    };
    let worker = std::thread::Builder::new()
        .name("debug-user".into())
        .spawn(move || {
            // 1 s of this thread's CPU, however long a busy machine takes to give it
            // (at most `support::DEADLINE`), not 1 s of wall time.
            let deadline = Instant::now() + support::DEADLINE;
            let mut x = 0;
            while support::thread_cpu_seconds() < 1.0 && Instant::now() < deadline {
                x ^= sw_run(200_000);
            }
            x
        })
        .unwrap();
    std::hint::black_box(worker.join().unwrap());
    std::thread::sleep(Duration::from_millis(100));
    let p = profiler.profile(Duration::from_secs(60));
    profiler.stop();
    let named: u64 = p
        .stacks
        .iter()
        .filter(|(s, _)| s.starts_with("debug-user;") && s.ends_with(";sw_hidden_spin"))
        .map(|(_, c)| *c)
        .sum();
    let in_thread: u64 = p
        .stacks
        .iter()
        .filter(|(s, _)| s.starts_with("debug-user;"))
        .map(|(_, c)| *c)
        .sum();
    assert!(
        named > 0 && named * 2 > in_thread,
        "sw_hidden_spin named in {named} of {in_thread} samples:\n{}",
        p.to_folded()
    );
    assert!(
        !p.to_folded().contains("[libswdebug.so]"),
        "{}",
        p.to_folded()
    );
}
