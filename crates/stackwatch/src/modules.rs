//! The loaded modules (executable, shared libraries, vDSO) and the unwinder built from them.
//!
//! Runs on the aggregator thread only. Modules come from `/proc/self/maps` (not
//! `dl_iterate_phdr`, which takes the loader lock), their `.eh_frame`/`.eh_frame_hdr`
//! sections are copied into owned buffers (so a later `dlclose` cannot unmap what the
//! signal handler reads), and a fresh framehop unwinder is published whenever the set of
//! modules changes.
//!
//! A file can be replaced on disk while it is mapped (a deploy, a package upgrade of libc,
//! `cargo build` under a running binary): the maps line then ends in ` (deleted)` and the
//! path names a different file. A module is loaded once per mapping and kept while the
//! mapping lives, and a file is only ever read after checking that its inode is the mapped
//! one ([`LoadedModule::open_path`]), so a replaced file never yields wrong unwind rules or
//! wrong names.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use framehop::{ExplicitModuleSectionInfo, Module};
use object::{Object, ObjectSection, ObjectSegment};

use crate::signal_handler::{ModuleRows, NativeUnwinder, SectionBases};

/// One executable mapping of a file (or of the vDSO), with how to translate addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedModule {
    /// Path of the file, or `[vdso]`.
    pub path: PathBuf,
    /// Inode of the file (0 for the vDSO), to tell a replaced file from the old one.
    pub inode: u64,
    /// Executable address range in this process.
    pub avma: Range<u64>,
    /// Actual minus stated address (`avma = svma + bias`).
    pub bias: u64,
}

impl LoadedModule {
    /// Short display name: the file name.
    pub fn short_name(&self) -> &str {
        self.path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("[unknown]")
    }

    /// A path that opens the very file this process mapped: `path` while its inode is
    /// still the mapped one, else `/proc/self/map_files/<range>` (which reaches a replaced
    /// or deleted file, where the kernel allows it: it needs `CAP_CHECKPOINT_RESTORE` or
    /// `CAP_SYS_ADMIN`), else `None`: the file is gone and reading what is at `path` now
    /// would give wrong answers.
    pub fn open_path(&self) -> Option<PathBuf> {
        open_mapped_file(&self.path, self.inode, &self.avma).map(|(_, path)| path)
    }
}

/// Opens the file with the mapped `inode`: at `path`, or through `/proc/self/map_files`.
/// The inode is checked on the open file, so a rename between check and open cannot
/// slip another file in.
fn open_mapped_file(
    path: &std::path::Path,
    inode: u64,
    avma: &Range<u64>,
) -> Option<(File, PathBuf)> {
    let is_mapped = |f: &File| f.metadata().is_ok_and(|m| m.ino() == inode);
    if let Ok(f) = File::open(path) {
        if is_mapped(&f) {
            return Some((f, path.to_path_buf()));
        }
    }
    let mapped = PathBuf::from(format!(
        "/proc/self/map_files/{:x}-{:x}",
        avma.start, avma.end
    ));
    let f = File::open(&mapped).ok()?;
    is_mapped(&f).then_some((f, mapped))
}

/// A line of `/proc/self/maps` that maps executable code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ExecMapping {
    start: u64,
    end: u64,
    offset: u64,
    inode: u64,
    path: String,
}

fn parse_maps(text: &str) -> Vec<ExecMapping> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(offset), Some(_dev), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let path = fields.next().unwrap_or("").trim_start();
        // A file replaced or removed since it was mapped; the mapping still holds the old
        // inode, which is what the module key and `open_path` go by.
        let path = path.strip_suffix(" (deleted)").unwrap_or(path);
        if !perms.contains('x') || !(path.starts_with('/') || path == "[vdso]") {
            continue;
        }
        let Some((s, e)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(offset), Ok(inode)) = (
            u64::from_str_radix(s, 16),
            u64::from_str_radix(e, 16),
            u64::from_str_radix(offset, 16),
            inode.parse::<u64>(),
        ) else {
            continue;
        };
        out.push(ExecMapping {
            start,
            end,
            offset,
            inode,
            path: path.to_owned(),
        });
    }
    out
}

/// The module list and the parsed unwind data of each module, refreshed from
/// `/proc/self/maps`.
#[derive(Default)]
pub struct ModuleTable {
    mappings: Vec<ExecMapping>,
    modules: Vec<LoadedModule>,
    /// Each live mapping's module and unwind tables, loaded once: its file is read only
    /// when the mapping first appears.
    loaded: HashMap<ExecMapping, (LoadedModule, Option<UnwindModule>)>,
}

impl ModuleTable {
    /// Current modules, sorted by start address.
    pub fn modules(&self) -> &[LoadedModule] {
        &self.modules
    }

    /// Bytes of unwind tables held (eh_frame copies and compact rows).
    pub fn memory_bytes(&self) -> usize {
        self.loaded
            .values()
            .filter_map(|(_, unwind)| unwind.as_ref())
            // One copy of the eh_frame bytes: framehop's module keeps its sections
            // behind an Arc, so the published unwinder's clone shares them, as it shares
            // the rows.
            .map(|u| u.bytes + u.rows.as_ref().map_or(0, |r| r.memory_bytes()))
            .sum()
    }

    /// Re-reads `/proc/self/maps`. Returns a new unwinder when the set of modules
    /// changed (the caller publishes it to the signal handler), or `None`.
    pub fn refresh(&mut self) -> std::io::Result<Option<NativeUnwinder>> {
        let text = std::fs::read_to_string("/proc/self/maps")?;
        // Threads whose stacks the handler asked about: verified against these maps.
        crate::signal_handler::refresh_thread_stacks(&text);
        let mappings = parse_maps(&text);
        if mappings == self.mappings {
            return Ok(None);
        }
        self.mappings = mappings;
        let mut modules = Vec::new();
        for m in &self.mappings {
            if let Some((known, _)) = self.loaded.get(m) {
                modules.push(known.clone());
                continue;
            }
            match load_module(m) {
                Ok((module, unwind)) => {
                    modules.push(module.clone());
                    self.loaded.insert(m.clone(), (module, unwind));
                }
                Err(e) => {
                    tracing::debug!(path = %m.path, error = %e, "module not loaded for unwinding")
                }
            }
        }
        modules.sort_by_key(|m| m.avma.start);
        modules.dedup_by_key(|m| m.avma.start);
        // Forget modules that are gone (dlclose) and their unwind data.
        let live: std::collections::HashSet<&ExecMapping> = self.mappings.iter().collect();
        self.loaded.retain(|k, _| live.contains(k));
        let mut unwinder = NativeUnwinder::new();
        for unwind in self
            .loaded
            .values()
            .filter_map(|(_, unwind)| unwind.as_ref())
        {
            unwinder.add_module(unwind.module.clone(), unwind.rows.clone());
        }
        self.modules = modules;
        Ok(Some(unwinder))
    }
}

/// A module's unwind data: framehop's module over the eh_frame copy, and the compact rows
/// precomputed from it (x86_64).
struct UnwindModule {
    module: Module<Vec<u8>>,
    rows: Option<Arc<ModuleRows>>,
    /// Bytes of eh_frame held.
    bytes: usize,
}

/// Maps one executable mapping to a module with its bias and, where the file has them,
/// its unwind sections.
fn load_module(m: &ExecMapping) -> Result<(LoadedModule, Option<UnwindModule>), String> {
    let data: Vec<u8>;
    let mmap;
    let bytes: &[u8] = if m.path == "[vdso]" {
        // The vDSO is a complete ELF image mapped by the kernel; copy it out of memory.
        let len = (m.end - m.start) as usize;
        let mut buf = vec![0u8; len];
        // SAFETY: the range comes from /proc/self/maps as readable and executable, and
        // the vDSO is never unmapped.
        unsafe { std::ptr::copy_nonoverlapping(m.start as *const u8, buf.as_mut_ptr(), len) };
        data = buf;
        &data
    } else {
        let (file, _) = open_mapped_file(m.path.as_ref(), m.inode, &(m.start..m.end)).ok_or(
            "not readable, or replaced on disk since it was mapped (and /proc/self/map_files \
             is not readable)",
        )?;
        // SAFETY: a read-only private mapping of a shared library/executable; if the
        // file is truncated under us we may read garbage, which object handles as
        // parse errors.
        mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| e.to_string())?;
        &mmap
    };
    let obj = object::File::parse(bytes).map_err(|e| e.to_string())?;
    let file_offset = if m.path == "[vdso]" { 0 } else { m.offset };
    // The loadable segment containing this mapping's file offset tells which stated
    // address the mapping starts at.
    // Several segments can share the mapped page (a read-only one ending where the
    // executable one starts); the executable one is the one this mapping is for.
    let covers = |s: &object::Segment<'_, '_>| {
        let (off, size) = s.file_range();
        off & !0xfff <= file_offset && file_offset < off + size.max(1)
    };
    let executable = |s: &object::Segment<'_, '_>| matches!(s.flags(), object::SegmentFlags::Elf { p_flags, .. } if p_flags.0 & object::elf::PF_X.0 != 0);
    let seg = obj
        .segments()
        .find(|s| covers(s) && executable(s))
        .or_else(|| obj.segments().find(|s| covers(s)))
        .ok_or("no segment for the mapped offset")?;
    let (seg_off, _) = seg.file_range();
    let svma_at_start = seg
        .address()
        .wrapping_sub(seg_off)
        .wrapping_add(file_offset);
    let bias = m.start.wrapping_sub(svma_at_start);
    let module = LoadedModule {
        path: PathBuf::from(&m.path),
        inode: m.inode,
        avma: m.start..m.end,
        bias,
    };
    let section = |name: &str| obj.section_by_name(name);
    let range = |s: &object::Section<'_, '_>| s.address()..s.address() + s.size();
    let eh_frame = section(".eh_frame");
    let eh_frame_hdr = section(".eh_frame_hdr");
    if eh_frame.is_none() {
        // No CFI: framehop still walks frame pointers for this module.
        return Ok((module, None));
    }
    let mut held = 0;
    let mut copy = |s: &Option<object::Section<'_, '_>>| -> Option<Vec<u8>> {
        let d = s.as_ref()?.data().ok()?.to_vec();
        held += d.len();
        Some(d)
    };
    let info = ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma: section(".text").map(|s| range(&s)),
        text: None,
        got_svma: section(".got").map(|s| range(&s)),
        eh_frame_svma: eh_frame.as_ref().map(range),
        eh_frame: copy(&eh_frame),
        eh_frame_hdr_svma: eh_frame_hdr.as_ref().map(range),
        eh_frame_hdr: copy(&eh_frame_hdr),
        ..Default::default()
    };
    // Every FDE evaluated once, here, into compact rows the handler looks up.
    let rows = cfg!(target_arch = "x86_64").then(|| {
        let start = |s: &Option<object::Section<'_, '_>>| s.as_ref().map_or(0, |s| s.address());
        let bases = SectionBases {
            eh_frame: start(&eh_frame),
            eh_frame_hdr: start(&eh_frame_hdr),
            text: start(&section(".text")),
            got: start(&section(".got")),
        };
        let data = info.eh_frame.as_deref().unwrap_or_default();
        Arc::new(ModuleRows::build(data, &bases, bias, m.start..m.end))
    });
    let unwind = Module::new(m.path.clone(), m.start..m.end, bias, info);
    Ok((
        module,
        Some(UnwindModule {
            module: unwind,
            rows,
            bytes: held,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_executable_file_and_vdso_mappings() {
        let maps = "\
55d0c0a00000-55d0c0a10000 r--p 00000000 08:01 1234 /usr/bin/x\n\
55d0c0a10000-55d0c0a50000 r-xp 00010000 08:01 1234 /usr/bin/x\n\
7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n\
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]\n\
7ffd00010000-7ffd00012000 r-xp 00000000 00:00 0 [anon:jit]\n\
garbage line\n";
        let m = parse_maps(maps);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].path, "/usr/bin/x");
        assert_eq!(m[0].offset, 0x10000);
        assert_eq!(m[1].path, "[vdso]");
    }

    #[test]
    fn a_deleted_file_keeps_its_path() {
        let maps = "7f0000000000-7f0000010000 r-xp 00001000 08:01 99 /opt/app/libx.so (deleted)\n";
        let m = parse_maps(maps);
        assert_eq!(m[0].path, "/opt/app/libx.so");
        assert_eq!(m[0].inode, 99);
    }

    /// The path of a loaded library whose file name contains `name`, from our maps.
    fn mapped_path(name: &str) -> PathBuf {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains(name))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("{name} is mapped"))
    }

    /// Held by the tests that change this process's mappings or expect them unchanged.
    static MAPS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn a_library_replaced_on_disk_keeps_its_unwind_data_and_never_gets_the_new_files_names() {
        let _maps = MAPS.lock().unwrap_or_else(|e| e.into_inner());
        use crate::symbolizer::Symbolizer;
        use std::ffi::CString;
        // A private copy of libz, so that replacing it touches nothing else.
        let libz = CString::new("libz.so.1").unwrap();
        // SAFETY: dlopen of a system library with a constant name.
        let handle = unsafe { libc::dlopen(libz.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!handle.is_null());
        let tmp = tempfile::Builder::new()
            .prefix("stackwatch-replaced-")
            .tempdir()
            .unwrap();
        let dir = tmp.path();
        let copy = dir.join("libcopy.so");
        std::fs::copy(mapped_path("libz.so"), &copy).unwrap();
        let c_copy = CString::new(copy.to_str().unwrap()).unwrap();
        // SAFETY: dlopen/dlsym of a copy of libz; `crc32` is only used as an address.
        let crc32 = unsafe {
            let h = libc::dlopen(c_copy.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            assert!(!h.is_null());
            let sym = CString::new("crc32").unwrap();
            libc::dlsym(h, sym.as_ptr()) as u64
        };
        assert_ne!(crc32, 0);
        let in_crc32 = crc32 + 4;

        let mut table = ModuleTable::default();
        table.refresh().unwrap();
        let module = |t: &ModuleTable| {
            t.modules()
                .iter()
                .find(|m| m.avma.contains(&in_crc32))
                .cloned()
        };
        let before = module(&table).expect("the copy is a module");
        assert_eq!(before.open_path(), Some(copy.clone()));
        let held = table.memory_bytes();
        let mut early = Symbolizer::default();
        early.set_modules(table.modules());
        assert_eq!(early.frames(in_crc32).last().unwrap().as_ref(), "crc32");

        // Deploy: another ELF file (libc) renamed over the mapped one.
        let next = dir.join("next.so");
        std::fs::copy(mapped_path("libc.so"), &next).unwrap();
        std::fs::rename(&next, &copy).unwrap();

        // The running table keeps the module and its unwind rules, read from the old file.
        let _ = table.refresh().unwrap();
        assert_eq!(module(&table).as_ref(), Some(&before));
        assert!(table.memory_bytes() >= held);
        // The new file at the path is never read for this mapping.
        let reach = before.open_path();
        assert!(
            reach
                .as_ref()
                .is_none_or(|p| p.starts_with("/proc/self/map_files")),
            "{reach:?}"
        );
        // A symbolizer that had loaded the file keeps its names ...
        early.set_modules(table.modules());
        assert_eq!(early.frames(in_crc32).last().unwrap().as_ref(), "crc32");
        // ... and one that had not either reaches the old file or shows only the module.
        let mut late = Symbolizer::default();
        late.set_modules(table.modules());
        let name = late.frames(in_crc32).last().unwrap().to_string();
        if reach.is_some() {
            assert_eq!(name, "crc32");
        } else {
            assert_eq!(name, "[libcopy.so]");
        }
        // A table built from scratch loads the mapping from the old file or not at all.
        let mut fresh = ModuleTable::default();
        fresh.refresh().unwrap();
        match module(&fresh) {
            Some(m) => assert_eq!(m.bias, before.bias),
            None => assert!(reach.is_none(), "map_files was readable but not used"),
        }
    }

    #[test]
    fn own_executable_is_found_with_a_consistent_bias() {
        let _maps = MAPS.lock().unwrap_or_else(|e| e.into_inner());
        let mut table = ModuleTable::default();
        assert!(table.refresh().unwrap().is_some());
        let here = own_executable_is_found_with_a_consistent_bias as *const () as u64;
        let m = table
            .modules()
            .iter()
            .find(|m| m.avma.contains(&here))
            .expect("the test binary's code is a module");
        assert!(m.path.exists());
        // Unchanged maps give no new unwinder.
        assert!(table.refresh().unwrap().is_none());
        // The test binary and libc have .eh_frame: unwind tables are held.
        assert!(table.memory_bytes() > 0);
    }
}
