//! The loaded modules (executable, shared libraries, vDSO) and the unwinder built from them.
//!
//! Runs on the aggregator thread only. Modules come from `/proc/self/maps` (not
//! `dl_iterate_phdr`, which takes the loader lock), their `.eh_frame`/`.eh_frame_hdr`
//! sections are copied into owned buffers (so a later `dlclose` cannot unmap what the
//! signal handler reads), and a fresh framehop unwinder is published whenever the set of
//! modules changes.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use framehop::{ExplicitModuleSectionInfo, Module, Unwinder};
use object::{Object, ObjectSection, ObjectSegment};

use crate::signal_handler::NativeUnwinder;

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
}

/// A line of `/proc/self/maps` that maps executable code.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    unwind: HashMap<(PathBuf, u64, u64), UnwindModule>,
}

impl ModuleTable {
    /// Current modules, sorted by start address.
    pub fn modules(&self) -> &[LoadedModule] {
        &self.modules
    }

    /// Bytes of unwind tables held.
    pub fn memory_bytes(&self) -> usize {
        self.unwind.values().map(|(_, bytes)| bytes).sum()
    }

    /// Re-reads `/proc/self/maps`. Returns a new unwinder when the set of modules
    /// changed (the caller publishes it to the signal handler), or `None`.
    pub fn refresh(&mut self) -> std::io::Result<Option<NativeUnwinder>> {
        let text = std::fs::read_to_string("/proc/self/maps")?;
        let mappings = parse_maps(&text);
        if mappings == self.mappings {
            return Ok(None);
        }
        self.mappings = mappings;
        let mut modules = Vec::new();
        for m in &self.mappings {
            let key = (PathBuf::from(&m.path), m.inode, m.start);
            // Unwind tables of a module already loaded are kept, not copied again.
            let need_unwind = !self.unwind.contains_key(&key);
            match load_module(m, need_unwind) {
                Ok((module, unwind)) => {
                    if let Some(unwind) = unwind {
                        self.unwind.insert(key, unwind);
                    }
                    modules.push(module);
                }
                Err(e) => {
                    tracing::debug!(path = %m.path, error = %e, "module not loaded for unwinding")
                }
            }
        }
        modules.sort_by_key(|m| m.avma.start);
        modules.dedup_by_key(|m| m.avma.start);
        // Forget unwind data of modules that are gone (dlclose).
        let live: std::collections::HashSet<_> = modules
            .iter()
            .map(|m| (m.path.clone(), m.inode, m.avma.start))
            .collect();
        self.unwind.retain(|k, _| live.contains(k));
        let mut unwinder = NativeUnwinder::new();
        for (module, _) in self.unwind.values() {
            unwinder.add_module(module.clone());
        }
        self.modules = modules;
        Ok(Some(unwinder))
    }
}

type UnwindModule = (Module<Vec<u8>>, usize);

/// Maps one executable mapping to a module with its bias and, where the file has them,
/// its unwind sections.
fn load_module(
    m: &ExecMapping,
    with_unwind: bool,
) -> Result<(LoadedModule, Option<UnwindModule>), String> {
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
        let file = File::open(Path::new(&m.path)).map_err(|e| e.to_string())?;
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
    if eh_frame.is_none() || !with_unwind {
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
    let unwind = Module::new(m.path.clone(), m.start..m.end, bias, info);
    Ok((module, Some((unwind, held))))
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
    fn own_executable_is_found_with_a_consistent_bias() {
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
