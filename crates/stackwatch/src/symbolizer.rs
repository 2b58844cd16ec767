//! Address → function names, on the aggregator thread, cached and bounded.
//!
//! Names come from where debuggers find them: the module's `.symtab`, a separate debug
//! file (by build id under `/usr/lib/debug/.build-id/`, or by `.gnu_debuglink` beside the
//! module, in its `.debug/` or under `/usr/lib/debug/<dir>`: so installing Debian's
//! `libc6-dbg` names libc's internals), MiniDebugInfo (`.gnu_debugdata`, an xz-compressed
//! ELF with the symbols `.dynsym` does not export), and `.dynsym`. DWARF, where the module
//! or its debug file has it, adds inlined functions as frames of their own, named by
//! their linkage names so that a function has the same name whatever the build's debug
//! level. Rust and C++ names are demangled, Rust hashes dropped.
//!
//! Memory does not grow with the debug info: files are read with positioned reads
//! (nothing is mapped), symbol tables are kept as 16 bytes a function with names read
//! when needed, DWARF is read a unit at a time into a bounded cache
//! ([`dwarf`]), and resolved addresses are kept in a bounded two-generation cache.
//! [`Symbolizer::memory_bytes`] counts all of it.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stackwatch_profile::folded::sanitize_frame;

use crate::modules::LoadedModule;

mod dwarf;
mod elf;
mod error;

use dwarf::Dwarf;
use elf::{Elf, Source, SymbolTable};
use error::SymbolError;

/// Frames for one address, outermost first (an inlined chain has several).
pub type Frames = Arc<[Arc<str>]>;

pub(crate) use crate::settings::DEFAULT_DEBUG_DIR;

/// Resolved addresses kept per generation; two generations are kept (the older is
/// dropped when the newer fills), so an address in use stays resolved.
const GENERATION: usize = 16_384;

/// Bytes of interned names kept before names and resolved addresses are dropped.
const NAMES_LIMIT: usize = 2 << 20;

/// What one module's files give: its function symbols and, where present, its DWARF.
struct ModuleSymbols {
    symbols: SymbolTable,
    dwarf: Option<Dwarf>,
    /// Memory held by the files themselves (section tables, decompressed images).
    file_bytes: usize,
}

impl ModuleSymbols {
    /// Reads what `module`'s files give; compressed DWARF sections may take up to
    /// `decompress_budget` bytes.
    fn load(
        module: &LoadedModule,
        debug_dirs: &[PathBuf],
        decompress_budget: u64,
    ) -> Result<ModuleSymbols, SymbolError> {
        let elf = if module.path.as_os_str() == "[vdso]" {
            let len = (module.avma.end - module.avma.start) as usize;
            let mut buf = vec![0u8; len];
            // SAFETY: the vDSO's executable mapping is readable, is a complete ELF image
            // and is never unmapped (modules.rs copies it the same way).
            unsafe {
                std::ptr::copy_nonoverlapping(module.avma.start as *const u8, buf.as_mut_ptr(), len)
            };
            Elf::parse(Source::Mem(Arc::from(buf)))?
        } else {
            // Only the file this process mapped: a replaced binary would give
            // confidently wrong names, so then only the module name is shown.
            let path = module
                .open_path()
                .ok_or(SymbolError::Unsupported("replaced on disk"))?;
            let mut elf = Elf::open(&path)?;
            elf.id = elf.id.or(Some((0, module.inode)));
            elf
        };
        let elf = Rc::new(elf);
        let mut symbols = SymbolTable::default();
        let own = symbols.add(&elf, false)?;
        let debug = if module.path.as_os_str() == "[vdso]" {
            None
        } else {
            elf::find_debug_file(&module.path, &elf, debug_dirs).map(Rc::new)
        };
        let mut from_debug = 0;
        if own == 0 {
            if let Some(d) = &debug {
                from_debug = symbols.add(d, false).unwrap_or(0);
            }
        }
        let mut mini = None;
        if own == 0 && from_debug == 0 {
            if let Some(m) = elf.mini_debug_info() {
                let m = Rc::new(m);
                if symbols.add(&m, false).unwrap_or(0) > 0 {
                    mini = Some(m);
                }
            }
        }
        let _ = symbols.add(&elf, true);
        symbols.finish();
        let dwarf = match Dwarf::open(&elf, decompress_budget) {
            Ok(Some(d)) => Some(d),
            Ok(None) => debug.as_ref().and_then(|d| match Dwarf::open(d, decompress_budget) {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(path = %module.path.display(), error = %e, "debug file's DWARF not used");
                    None
                }
            }),
            Err(e) => {
                tracing::debug!(path = %module.path.display(), error = %e, "DWARF not used");
                None
            }
        };
        let file_bytes = elf.memory_bytes()
            + debug.as_ref().map_or(0, |d| d.memory_bytes())
            + mini.as_ref().map_or(0, |m| m.memory_bytes());
        let has_debug_file = debug.is_some();
        tracing::debug!(
            path = %module.path.display(),
            functions = symbols.len(),
            dwarf = dwarf.is_some(),
            debug_file = has_debug_file,
            "symbols loaded"
        );
        Ok(ModuleSymbols {
            symbols,
            dwarf,
            file_bytes,
        })
    }

    fn memory_bytes(&self) -> usize {
        self.symbols.memory_bytes()
            + self.dwarf.as_ref().map_or(0, |d| d.memory_bytes())
            + self.file_bytes
            + 128
    }
}

/// Resolves addresses against the current module list.
pub struct Symbolizer {
    modules: Vec<LoadedModule>,
    /// Modules that were unloaded at the last refresh: samples taken before the
    /// `dlclose` may still be in flight.
    retired: Vec<LoadedModule>,
    debug_dirs: Vec<PathBuf>,
    loaded: HashMap<(PathBuf, u64), Option<ModuleSymbols>>,
    /// Resolved addresses: `hot` takes new ones; when it is full it becomes `cold`.
    hot: HashMap<u64, Frames>,
    cold: HashMap<u64, Frames>,
    hot_bytes: usize,
    cold_bytes: usize,
    names: HashSet<Arc<str>>,
    names_bytes: usize,
    unknown: Option<Frames>,
    /// Work since the last batch that left freed memory behind (files read, units parsed).
    heavy: bool,
    last_trim: Option<Instant>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Symbolizer::new(vec![PathBuf::from(DEFAULT_DEBUG_DIR)])
    }
}

/// Bytes glibc's malloc takes for an allocation of `n` bytes.
fn chunk(n: usize) -> usize {
    (n + 8).div_ceil(16).max(2) * 16
}

impl Symbolizer {
    /// A symbolizer searching `debug_dirs` for separate debug files.
    pub fn new(debug_dirs: Vec<PathBuf>) -> Self {
        Symbolizer {
            modules: Vec::new(),
            retired: Vec::new(),
            debug_dirs,
            loaded: HashMap::new(),
            hot: HashMap::new(),
            cold: HashMap::new(),
            hot_bytes: 0,
            cold_bytes: 0,
            names: HashSet::new(),
            names_bytes: 0,
            unknown: None,
            heavy: false,
            last_trim: None,
        }
    }

    /// Replaces the module list (after `/proc/self/maps` changed).
    pub fn set_modules(&mut self, modules: &[LoadedModule]) {
        let old = std::mem::replace(&mut self.modules, modules.to_vec());
        self.retired = old
            .into_iter()
            .filter(|m| !self.modules.contains(m))
            .collect();
        let live: HashSet<(PathBuf, u64)> = self
            .modules
            .iter()
            .chain(&self.retired)
            .map(|m| (m.path.clone(), m.inode))
            .collect();
        self.loaded.retain(|k, _| live.contains(k));
        self.clear_addresses();
    }

    fn clear_addresses(&mut self) {
        // Cleared, not dropped: the tables are reused (see `frames`).
        self.hot.clear();
        self.cold.clear();
        self.hot_bytes = 0;
        self.cold_bytes = 0;
    }

    /// Bytes held: resolved addresses, names, symbol tables, DWARF indexes and caches.
    pub fn memory_bytes(&self) -> usize {
        let map = |m: &HashMap<u64, Frames>| m.capacity() * 25 * 8 / 7;
        map(&self.hot)
            + map(&self.cold)
            + self.hot_bytes
            + self.cold_bytes
            + self.names.capacity() * 17 * 8 / 7
            + self.names_bytes
            + self
                .loaded
                .values()
                .flatten()
                .map(ModuleSymbols::memory_bytes)
                .sum::<usize>()
            + self.loaded.capacity() * 64
            + (self.modules.capacity() + self.retired.capacity())
                * std::mem::size_of::<LoadedModule>()
    }

    /// Called after each batch of lookups: lets go of read buffers, and after work that
    /// freed memory (files read, units parsed) returns the freed pages to the kernel
    /// (at most once a second).
    pub fn end_batch(&mut self) {
        if !self.heavy {
            return;
        }
        for m in self.loaded.values_mut().flatten() {
            if let Some(d) = m.dwarf.as_mut() {
                d.trim();
            }
        }
        if self
            .last_trim
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.heavy = false;
        self.last_trim = Some(Instant::now());
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free memory of malloc's arenas.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    /// The frames of `addr`, outermost first.
    pub fn frames(&mut self, addr: u64) -> Frames {
        if let Some(f) = self.hot.get(&addr) {
            return f.clone();
        }
        let frames = match self.cold.remove(&addr) {
            Some(f) => {
                self.cold_bytes = self.cold_bytes.saturating_sub(frames_bytes(&f));
                f
            }
            None => self.resolve(addr),
        };
        if self.hot.len() >= GENERATION {
            // The old generation goes; both tables keep their allocations (freeing a
            // large one would raise malloc's mmap and trim thresholds for the whole
            // process, and the service's arenas would keep more free memory).
            std::mem::swap(&mut self.hot, &mut self.cold);
            self.hot.clear();
            self.cold_bytes = std::mem::replace(&mut self.hot_bytes, 0);
        }
        self.hot_bytes += frames_bytes(&frames);
        self.hot.insert(addr, frames.clone());
        frames
    }

    fn intern(&mut self, name: &str) -> Arc<str> {
        let clean = sanitize_frame(name);
        if let Some(n) = self.names.get(clean.as_ref()) {
            return n.clone();
        }
        if self.names_bytes >= NAMES_LIMIT {
            // Forget every name, and the resolved addresses that hold them.
            self.names = HashSet::new();
            self.names_bytes = 0;
            self.clear_addresses();
        }
        let n: Arc<str> = Arc::from(clean.as_ref());
        self.names_bytes += chunk(16 + n.len());
        self.names.insert(n.clone());
        n
    }

    fn resolve(&mut self, addr: u64) -> Frames {
        let Some(module) = find(&self.modules, addr).or_else(|| find(&self.retired, addr)) else {
            return self
                .unknown
                .get_or_insert_with(|| Arc::from(vec![Arc::<str>::from("[unknown]")]))
                .clone();
        };
        let module = module.clone();
        let probe = addr.wrapping_sub(module.bias);
        let key = (module.path.clone(), module.inode);
        if !self.loaded.contains_key(&key) {
            self.heavy = true;
            let decompressed: u64 = self
                .loaded
                .values()
                .flatten()
                .filter_map(|m| m.dwarf.as_ref())
                .map(Dwarf::decompressed_bytes)
                .sum();
            let budget = dwarf::COMPRESSED_TOTAL.saturating_sub(decompressed);
            let syms = match ModuleSymbols::load(&module, &self.debug_dirs, budget) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::debug!(path = %module.path.display(), error = %e, "no symbols");
                    None
                }
            };
            self.loaded.insert(key.clone(), syms);
        }
        let mut raw: Vec<String> = Vec::new();
        if let Some(syms) = self.loaded.get_mut(&key).and_then(Option::as_mut) {
            let symbol = syms.symbols.lookup(probe).map(|mut s| {
                // `memcpy@GLIBC_2.2.5`: the version is not part of the name.
                if let Some(at) = s.find('@').filter(|at| *at > 0) {
                    s.truncate(at);
                }
                s
            });
            let found = syms.dwarf.as_mut().and_then(|d| {
                let before = d.memory_bytes();
                let f = d.find(probe);
                self.heavy |= d.memory_bytes() != before;
                Some((f?, d))
            });
            match found {
                Some((found, dwarf)) => {
                    match symbol.or_else(|| dwarf.name(found.function)) {
                        Some(outer) => raw.push(outer),
                        None => raw.push(format!("[{}]", module.short_name())),
                    }
                    raw.extend(found.inlined.iter().filter_map(|die| dwarf.name(*die)));
                }
                None => raw.extend(symbol),
            }
        }
        if raw.is_empty() {
            let short = module.short_name();
            raw.push(if short.starts_with('[') {
                short.to_owned()
            } else {
                format!("[{short}]")
            });
        }
        let names: Vec<Arc<str>> = raw
            .iter()
            .map(|n| {
                let d = addr2line::demangle_auto(Cow::Borrowed(n.as_str()), None);
                self.intern(&d)
            })
            .collect();
        Arc::from(names)
    }
}

/// Bytes a resolved address's frames take (the names are counted once, interned).
fn frames_bytes(f: &Frames) -> usize {
    chunk(16 + f.len() * 16)
}

fn find(modules: &[LoadedModule], addr: u64) -> Option<&LoadedModule> {
    let i = modules.partition_point(|m| m.avma.start <= addr);
    let m = modules.get(i.checked_sub(1)?)?;
    m.avma.contains(&addr).then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::ModuleTable;

    #[inline(never)]
    fn a_function_with_a_distinctive_name() -> u64 {
        std::hint::black_box(42)
    }

    #[test]
    fn names_a_function_of_this_binary_and_marks_unknown_addresses() {
        let mut table = ModuleTable::default();
        table.refresh().unwrap();
        let mut s = Symbolizer::default();
        s.set_modules(table.modules());
        let addr = a_function_with_a_distinctive_name as *const () as u64 + 1;
        let frames = s.frames(addr);
        let leaf = frames.last().unwrap();
        assert!(
            leaf.ends_with("a_function_with_a_distinctive_name"),
            "got {frames:?}"
        );
        assert!(!leaf.contains("::h"), "hash not stripped: {leaf}");
        assert_eq!(&*s.frames(8)[0], "[unknown]");
    }

    // Libraries built here, read without loading them: a module placed at a made-up
    // address so that `BASE + svma` is `svma` in the file.
    const BASE: u64 = 0x1000_0000_0000;

    /// A temporary directory, removed when the test ends.
    fn scratch(tag: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("stackwatch-sym-{tag}-"))
            .tempdir()
            .unwrap()
    }

    fn run(cmd: &mut std::process::Command) {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e} (cc, binutils and rustc are needed)"));
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Address and size of `name` in `path`'s symbol table (`nm -S`).
    fn nm(path: &std::path::Path, name: &str) -> (u64, u64) {
        let out = std::process::Command::new("nm")
            .args(["-S", "--defined-only"])
            .arg(path)
            .output()
            .expect("nm (binutils)");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 4 && f[3] == name).then(|| {
                    (
                        u64::from_str_radix(f[0], 16).unwrap(),
                        u64::from_str_radix(f[1], 16).unwrap(),
                    )
                })
            })
            .unwrap_or_else(|| panic!("{name} in {}: {text}", path.display()))
    }

    fn module(path: &std::path::Path) -> LoadedModule {
        use std::os::unix::fs::MetadataExt;
        LoadedModule {
            path: path.to_path_buf(),
            inode: std::fs::metadata(path).unwrap().ino(),
            avma: BASE..BASE + (1 << 32),
            bias: BASE,
        }
    }

    fn leaf_at(dirs: &[PathBuf], lib: &std::path::Path, svma: u64) -> String {
        let mut s = Symbolizer::new(dirs.to_vec());
        s.set_modules(&[module(lib)]);
        s.frames(BASE + svma).last().unwrap().to_string()
    }

    const C_LIB: &str = r#"
#include <stdint.h>
static inline __attribute__((always_inline)) uint64_t sw_inner(uint64_t x) {
    for (int i = 0; i < 64; i++) x = x * 6364136223846793005ULL + (x >> 7);
    return x;
}
static __attribute__((noinline, noclone, used)) uint64_t sw_hidden_spin(uint64_t n) {
    uint64_t x = n;
    for (uint64_t i = 0; i < n; i++) x = sw_inner(x + i);
    return x;
}
uint64_t sw_run(uint64_t n) { return sw_hidden_spin(n) ^ 1; }
"#;

    /// Builds `libsw.so` (-O2 -g) in `dir`; returns it.
    fn c_library(dir: &std::path::Path) -> PathBuf {
        std::fs::write(dir.join("sw.c"), C_LIB).unwrap();
        let lib = dir.join("libsw.so");
        run(std::process::Command::new("cc")
            .args(["-O2", "-g", "-shared", "-fPIC", "-Wl,--build-id", "-o"])
            .arg(&lib)
            .arg(dir.join("sw.c")));
        lib
    }

    fn build_id_path(root: &std::path::Path, lib: &std::path::Path) -> PathBuf {
        let elf = Elf::open(lib).unwrap();
        let hex: String = elf
            .build_id()
            .expect("a build id")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        root.join(".build-id")
            .join(&hex[..2])
            .join(format!("{}.debug", &hex[2..]))
    }

    #[test]
    fn a_stripped_library_is_named_from_a_debug_file_found_by_build_id_or_debuglink() {
        let tmp = scratch("debugfile");
        let dir = tmp.path();
        let lib = c_library(dir);
        let (spin, _) = nm(&lib, "sw_hidden_spin");
        // Debug file by build id, in a directory of our own; the library stripped.
        let debug_root = dir.join("debug");
        let by_id = build_id_path(&debug_root, &lib);
        std::fs::create_dir_all(by_id.parent().unwrap()).unwrap();
        run(std::process::Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&lib)
            .arg(&by_id));
        run(std::process::Command::new("objcopy")
            .args(["--strip-debug", "--strip-unneeded"])
            .arg(&lib));
        assert!(Elf::open(&lib).unwrap().section(".symtab").is_none());
        let inside = spin + 4;
        assert_eq!(
            leaf_at(std::slice::from_ref(&debug_root), &lib, inside),
            "sw_hidden_spin"
        );
        // Without it the static function has no name (and is not given its neighbour's).
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert_eq!(
            leaf_at(std::slice::from_ref(&empty), &lib, inside),
            "[libsw.so]"
        );
        // Exported functions are named from .dynsym either way.
        let (run_fn, _) = nm(&by_id, "sw_run");
        assert_eq!(
            leaf_at(std::slice::from_ref(&empty), &lib, run_fn),
            "sw_run"
        );

        // By .gnu_debuglink, in .debug/ beside the library (a stripped copy without a
        // build id, so only the link and its CRC can find it).
        let other = dir.join("other");
        std::fs::create_dir_all(other.join(".debug")).unwrap();
        let lib2 = other.join("libsw2.so");
        std::fs::write(other.join("sw.c"), C_LIB).unwrap();
        run(std::process::Command::new("cc")
            .args(["-O2", "-g", "-shared", "-fPIC", "-Wl,--build-id=none", "-o"])
            .arg(&lib2)
            .arg(other.join("sw.c")));
        let (spin2, _) = nm(&lib2, "sw_hidden_spin");
        let dbg = other.join(".debug").join("libsw2.so.debug");
        run(std::process::Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&lib2)
            .arg(&dbg));
        run(std::process::Command::new("objcopy")
            .args(["--strip-debug", "--strip-unneeded"])
            .arg(format!("--add-gnu-debuglink={}", dbg.display()))
            .arg(&lib2));
        assert_eq!(
            leaf_at(std::slice::from_ref(&empty), &lib2, spin2 + 4),
            "sw_hidden_spin"
        );
        // A debug file whose CRC does not match the link is not used.
        std::fs::write(&dbg, b"not the debug file").unwrap();
        assert_eq!(leaf_at(&[empty], &lib2, spin2 + 4), "[libsw2.so]");
    }

    #[test]
    fn mini_debug_info_names_what_dynsym_does_not_export() {
        let tmp = scratch("minidebuginfo");
        let dir = tmp.path();
        let lib = c_library(dir);
        let (spin, _) = nm(&lib, "sw_hidden_spin");
        // As distributions build it: the symbol table alone, xz-compressed, added to the
        // fully stripped library as .gnu_debugdata.
        let mini = dir.join("mini.elf");
        run(std::process::Command::new("objcopy")
            .args(["--strip-debug", "--remove-section=.comment"])
            .arg(&lib)
            .arg(&mini));
        run(std::process::Command::new("xz").arg("-f").arg(&mini));
        run(std::process::Command::new("strip")
            .arg("--strip-all")
            .arg(&lib));
        run(std::process::Command::new("objcopy")
            .arg(format!(
                "--add-section=.gnu_debugdata={}.xz",
                mini.display()
            ))
            .arg(&lib));
        assert!(Elf::open(&lib).unwrap().section(".symtab").is_none());
        let none = dir.join("none");
        assert_eq!(leaf_at(&[none], &lib, spin + 4), "sw_hidden_spin");
    }

    /// Every distinct frame chain of the addresses of `function` in `lib`.
    fn chains(lib: &std::path::Path, function: &str) -> Vec<Vec<String>> {
        let (start, size) = nm(lib, function);
        let mut s = Symbolizer::new(Vec::new());
        s.set_modules(&[module(lib)]);
        let mut out: Vec<Vec<String>> = Vec::new();
        for a in start..start + size {
            let f: Vec<String> = s.frames(BASE + a).iter().map(|n| n.to_string()).collect();
            if !out.contains(&f) {
                out.push(f);
            }
        }
        out
    }

    #[test]
    fn c_inlined_functions_are_frames_of_their_own_with_plain_or_compressed_dwarf() {
        let tmp = scratch("inline-c");
        let dir = tmp.path();
        let lib = c_library(dir);
        // The same with zlib-compressed debug sections, as distributions ship them.
        let gz = dir.join("gz");
        std::fs::create_dir_all(&gz).unwrap();
        let lib_gz = gz.join("libsw.so");
        run(std::process::Command::new("cc")
            .args(["-O2", "-g", "-gz=zlib", "-shared", "-fPIC", "-o"])
            .arg(&lib_gz)
            .arg(dir.join("sw.c")));
        assert!(Elf::open(&lib_gz)
            .unwrap()
            .section(".debug_info")
            .unwrap()
            .is_compressed());
        for lib in [lib, lib_gz] {
            let chains = chains(&lib, "sw_hidden_spin");
            assert!(
                chains.contains(&vec!["sw_hidden_spin".to_string(), "sw_inner".to_string()]),
                "{}: {chains:?}",
                lib.display()
            );
            assert!(
                chains.iter().all(|c| c[0] == "sw_hidden_spin"),
                "{chains:?}"
            );
        }
    }

    #[test]
    fn rust_inlined_functions_have_their_full_path_at_every_debug_level() {
        let tmp = scratch("inline-rust");
        let dir = tmp.path();
        let src = dir.join("swtest.rs");
        std::fs::write(
            &src,
            r#"
pub mod decode {
    #[inline(always)]
    pub fn checksum_block(b: &[u8]) -> u64 {
        let mut h = 0u64;
        for x in b {
            h = h.wrapping_mul(31).wrapping_add(*x as u64).rotate_left(5);
        }
        h
    }
}
/// # Safety
/// `p` points to `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn sw_checksum(p: *const u8, n: usize) -> u64 {
    decode::checksum_block(core::slice::from_raw_parts(p, n)) ^ 7
}
"#,
        )
        .unwrap();
        for level in ["0", "1", "2"] {
            let out = dir.join(format!("d{level}"));
            std::fs::create_dir_all(&out).unwrap();
            run(std::process::Command::new(
                std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()),
            )
            .args(["--crate-type", "cdylib", "--crate-name", "swtest", "-O"])
            .arg(format!("-Cdebuginfo={level}"))
            .arg("--out-dir")
            .arg(&out)
            .arg(&src));
            let chains = chains(&out.join("libswtest.so"), "sw_checksum");
            assert!(
                chains.iter().all(|c| c[0] == "sw_checksum"),
                "{level}: {chains:?}"
            );
            let inlined: Vec<&String> = chains.iter().flat_map(|c| &c[1..]).collect();
            assert!(
                inlined.iter().all(|n| n.contains("::")),
                "debuginfo={level}: an inlined frame without its path: {chains:?}"
            );
            if level == "0" {
                assert!(inlined.is_empty(), "{chains:?}");
            } else {
                assert!(
                    inlined
                        .iter()
                        .any(|n| *n == "swtest::decode::checksum_block"),
                    "debuginfo={level}: {chains:?}"
                );
            }
        }
    }

    #[test]
    fn memory_stays_bounded_across_a_whole_binary_with_full_debug_info() {
        // The test binary: a debug build, full DWARF for every crate it links.
        let mut table = ModuleTable::default();
        table.refresh().unwrap();
        let here = names_a_function_of_this_binary_and_marks_unknown_addresses as *const () as u64;
        let exe = table
            .modules()
            .iter()
            .find(|m| m.avma.contains(&here))
            .unwrap()
            .clone();
        let mut s = Symbolizer::default();
        s.set_modules(table.modules());
        let span = exe.avma.end - exe.avma.start;
        let mut named = 0;
        let mut peak = 0;
        for i in 0..3_000 {
            let f = s.frames(exe.avma.start + span / 3_000 * i + 1);
            if !f[0].starts_with('[') {
                named += 1;
            }
            peak = peak.max(s.memory_bytes());
        }
        assert!(named > 2_500, "{named} of 3000 addresses named");
        assert!(peak < 16 << 20, "memory_bytes reached {} MiB", peak >> 20);
        let module_bytes: usize = s.loaded.values().flatten().map(|m| m.memory_bytes()).sum();
        eprintln!(
            "{} MiB binary: peak {} KiB counted, {} KiB for its symbols and DWARF",
            std::fs::metadata(&exe.path).unwrap().len() >> 20,
            peak >> 10,
            module_bytes >> 10
        );
    }
}
