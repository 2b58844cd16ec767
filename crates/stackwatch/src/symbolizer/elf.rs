//! ELF files read for names: section headers, symbol tables, build ids, debug links and
//! MiniDebugInfo, all with positioned reads of what is needed (nothing is mapped, so
//! nothing counts in the process's file-backed RSS, and nothing is read twice).
//!
//! 64-bit little-endian ELF only (x86_64, aarch64); anything else has no names.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use super::error::SymbolError;

const SHT_SYMTAB: u32 = 2;
const SHT_NOTE: u32 = 7;
const SHT_NOBITS: u32 = 8;
const SHT_DYNSYM: u32 = 11;
const SHF_COMPRESSED: u64 = 0x800;
const ELFCOMPRESS_ZLIB: u32 = 1;
const STT_FUNC: u8 = 2;
const STT_GNU_IFUNC: u8 = 10;
const NT_GNU_BUILD_ID: u32 = 3;

/// Decompressed `.gnu_debugdata` larger than this is refused (a MiniDebugInfo ELF holds
/// a symbol table of a few hundred KiB).
const MINI_DEBUG_INFO_MAX: u64 = 8 << 20;

/// Where an ELF file's bytes come from.
pub(crate) enum Source {
    /// A file, read with `pread`.
    File(File),
    /// Bytes in memory: the vDSO, a decompressed MiniDebugInfo ELF or section.
    Mem(Arc<[u8]>),
}

impl Source {
    /// Reads up to `buf.len()` bytes at `off`; fewer at the end.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Source::File(f) => {
                let mut done = 0;
                while done < buf.len() {
                    match f.read_at(&mut buf[done..], off + done as u64) {
                        Ok(0) => break,
                        Ok(n) => done += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(done)
            }
            Source::Mem(m) => {
                let start = (off as usize).min(m.len());
                let n = buf.len().min(m.len() - start);
                buf[..n].copy_from_slice(&m[start..start + n]);
                Ok(n)
            }
        }
    }

    /// Exactly `len` bytes at `off`.
    pub fn read_vec(&self, off: u64, len: usize) -> Result<Vec<u8>, SymbolError> {
        let mut v = vec![0; len];
        let n = self.read_at(off, &mut v)?;
        if n < len {
            return Err(SymbolError::Truncated);
        }
        Ok(v)
    }

    /// Bytes this source holds in memory.
    pub fn memory_bytes(&self) -> usize {
        match self {
            Source::File(_) => 0,
            Source::Mem(m) => m.len(),
        }
    }
}

/// One section header.
#[derive(Debug, Clone)]
pub(crate) struct Shdr {
    pub name: Box<str>,
    pub kind: u32,
    pub flags: u64,
    pub offset: u64,
    pub size: u64,
    pub link: u32,
}

impl Shdr {
    pub fn is_compressed(&self) -> bool {
        self.flags & SHF_COMPRESSED != 0
    }
}

/// An ELF file's section headers, and its bytes on demand.
pub(crate) struct Elf {
    pub src: Source,
    pub sections: Vec<Shdr>,
    /// Device and inode of the file (none for memory), to avoid reading a file twice.
    pub id: Option<(u64, u64)>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Elf {
    /// Opens `path` as an ELF file.
    pub fn open(path: &Path) -> Result<Elf, SymbolError> {
        let f = File::open(path)?;
        let meta = f.metadata()?;
        let mut elf = Elf::parse(Source::File(f))?;
        elf.id = Some((meta.dev(), meta.ino()));
        Ok(elf)
    }

    /// Reads the section headers of `src`.
    pub fn parse(src: Source) -> Result<Elf, SymbolError> {
        let ehdr = src.read_vec(0, 64)?;
        if &ehdr[..4] != b"\x7fELF" {
            return Err(SymbolError::NotElf);
        }
        // ELFCLASS64, ELFDATA2LSB.
        if ehdr[4] != 2 || ehdr[5] != 1 {
            return Err(SymbolError::Unsupported("not 64-bit little-endian ELF"));
        }
        let shoff = u64_at(&ehdr, 0x28);
        let shentsize = u16_at(&ehdr, 0x3a) as usize;
        let mut shnum = u16_at(&ehdr, 0x3c) as usize;
        let mut shstrndx = u16_at(&ehdr, 0x3e) as usize;
        if shoff == 0 || shentsize < 64 {
            return Ok(Elf {
                src,
                sections: Vec::new(),
                id: None,
            });
        }
        if shnum == 0 || shstrndx == 0xffff {
            // Extended numbering: the real values are in section 0.
            let s0 = src.read_vec(shoff, 64)?;
            if shnum == 0 {
                shnum = u64_at(&s0, 0x20) as usize;
            }
            if shstrndx == 0xffff {
                shstrndx = u32_at(&s0, 0x28) as usize;
            }
        }
        if shnum > 65_536 {
            return Err(SymbolError::Unsupported("too many sections"));
        }
        let raw = src.read_vec(shoff, shnum * shentsize)?;
        let mut sections: Vec<Shdr> = (0..shnum)
            .map(|i| {
                let h = &raw[i * shentsize..];
                Shdr {
                    name: u32_at(h, 0).to_string().into(),
                    kind: u32_at(h, 4),
                    flags: u64_at(h, 8),
                    offset: u64_at(h, 0x18),
                    size: u64_at(h, 0x20),
                    link: u32_at(h, 0x28),
                }
            })
            .collect();
        if let Some(strtab) = sections.get(shstrndx).cloned() {
            if strtab.size <= 1 << 20 {
                let names = src.read_vec(strtab.offset, strtab.size as usize)?;
                for s in &mut sections {
                    let off: usize = s.name.parse().unwrap_or(usize::MAX);
                    let name = names
                        .get(off..)
                        .and_then(|n| n.split(|b| *b == 0).next())
                        .map(|n| String::from_utf8_lossy(n).into_owned())
                        .unwrap_or_default();
                    s.name = name.into();
                }
            }
        }
        Ok(Elf {
            src,
            sections,
            id: None,
        })
    }

    /// The section called `name` that has bytes in the file.
    pub fn section(&self, name: &str) -> Option<&Shdr> {
        self.sections
            .iter()
            .find(|s| &*s.name == name && s.kind != SHT_NOBITS && s.size > 0)
    }

    /// The whole contents of a small section, decompressed when it is compressed (up to
    /// `max` bytes either way). Compressed data is streamed from the file, so only the
    /// result is allocated.
    pub fn section_data(&self, s: &Shdr, max: u64) -> Result<Vec<u8>, SymbolError> {
        if !s.is_compressed() {
            if s.size > max {
                return Err(SymbolError::TooLarge);
            }
            return self.src.read_vec(s.offset, s.size as usize);
        }
        let size = self.decompressed_size(s)?;
        if size > max {
            return Err(SymbolError::TooLarge);
        }
        let mut out = Vec::with_capacity(size as usize);
        let compressed = SourceReader {
            src: &self.src,
            off: s.offset + 24,
            end: s.offset + s.size,
        };
        flate2::read::ZlibDecoder::new(compressed)
            .take(size)
            .read_to_end(&mut out)?;
        if out.len() as u64 != size {
            return Err(SymbolError::Truncated);
        }
        Ok(out)
    }

    /// The size of a compressed section once decompressed (its `Elf64_Chdr`); only zlib
    /// is read.
    pub fn decompressed_size(&self, s: &Shdr) -> Result<u64, SymbolError> {
        if s.size < 24 {
            return Err(SymbolError::Truncated);
        }
        let chdr = self.src.read_vec(s.offset, 24)?;
        if u32_at(&chdr, 0) != ELFCOMPRESS_ZLIB {
            return Err(SymbolError::Unsupported("compression other than zlib"));
        }
        Ok(u64_at(&chdr, 8))
    }

    /// The GNU build id, from its note.
    pub fn build_id(&self) -> Option<Vec<u8>> {
        for s in self.sections.iter().filter(|s| s.kind == SHT_NOTE) {
            let Ok(data) = self.section_data(s, 4096) else {
                continue;
            };
            let mut at = 0;
            while at + 12 <= data.len() {
                let namesz = u32_at(&data, at) as usize;
                let descsz = u32_at(&data, at + 4) as usize;
                let kind = u32_at(&data, at + 8);
                let name_at = at + 12;
                let desc_at = name_at + namesz.div_ceil(4) * 4;
                let end = desc_at + descsz.div_ceil(4) * 4;
                if desc_at + descsz > data.len() {
                    break;
                }
                if kind == NT_GNU_BUILD_ID && data.get(name_at..name_at + namesz) == Some(b"GNU\0")
                {
                    return Some(data[desc_at..desc_at + descsz].to_vec());
                }
                at = end;
            }
        }
        None
    }

    /// The `.gnu_debuglink` file name and CRC.
    pub fn debuglink(&self) -> Option<(String, u32)> {
        let s = self.section(".gnu_debuglink")?;
        let data = self.section_data(s, 4096).ok()?;
        let nul = data.iter().position(|b| *b == 0)?;
        let name = std::str::from_utf8(&data[..nul]).ok()?.to_owned();
        let crc_at = (nul + 1).div_ceil(4) * 4;
        let crc = u32::from_le_bytes(data.get(crc_at..crc_at + 4)?.try_into().ok()?);
        (!name.is_empty() && !name.contains('/')).then_some((name, crc))
    }

    /// The ELF inside `.gnu_debugdata` (MiniDebugInfo: xz-compressed, holding a
    /// `.symtab` of the functions `.dynsym` does not export).
    pub fn mini_debug_info(&self) -> Option<Elf> {
        let s = self.section(".gnu_debugdata")?;
        let xz = self.src.read_vec(s.offset, s.size as usize).ok()?;
        let mut out = Vec::new();
        let mut limited = Limited {
            out: &mut out,
            left: MINI_DEBUG_INFO_MAX,
        };
        if let Err(e) = lzma_rs::xz_decompress(&mut &xz[..], &mut limited) {
            tracing::debug!(error = %e, "unreadable .gnu_debugdata");
            return None;
        }
        Elf::parse(Source::Mem(Arc::from(out))).ok()
    }

    /// Whether this file has a symbol table or DWARF worth reading.
    pub fn has_names(&self) -> bool {
        self.sections
            .iter()
            .any(|s| s.kind == SHT_SYMTAB && s.size > 0)
            || self.section(".debug_info").is_some()
    }

    /// Bytes this file holds in memory.
    pub fn memory_bytes(&self) -> usize {
        self.src.memory_bytes()
            + self.sections.capacity() * std::mem::size_of::<Shdr>()
            + self.sections.iter().map(|s| s.name.len()).sum::<usize>()
    }
}

/// Reads a byte range of a source in order (what a decompressor pulls from).
struct SourceReader<'a> {
    src: &'a Source,
    off: u64,
    end: u64,
}

impl Read for SourceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min((self.end - self.off) as usize);
        let got = self.src.read_at(self.off, &mut buf[..n])?;
        self.off += got as u64;
        Ok(got)
    }
}

/// A writer that refuses more than `left` bytes (a decompression bomb stops there).
struct Limited<'a> {
    out: &'a mut Vec<u8>,
    left: u64,
}

impl std::io::Write for Limited<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(std::io::Error::other("decompressed data too large"));
        }
        self.left -= buf.len() as u64;
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A separate debug file for `elf` (mapped from `path`), where debuggers look for one:
/// by build id under each of `dirs` (`.build-id/xx/yyyy.debug`), then by its
/// `.gnu_debuglink` name beside the file, in `.debug/` beside it and under each of `dirs`
/// at the file's directory. A candidate counts when its build id matches (or, without
/// build ids, its CRC matches the link's) and it has a symbol table or DWARF.
pub(crate) fn find_debug_file(path: &Path, elf: &Elf, dirs: &[PathBuf]) -> Option<Elf> {
    let build_id = elf.build_id();
    if let Some(id) = build_id.as_ref().filter(|id| id.len() >= 2) {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        for d in dirs {
            let p = d
                .join(".build-id")
                .join(&hex[..2])
                .join(format!("{}.debug", &hex[2..]));
            if let Ok(cand) = Elf::open(&p) {
                if cand.build_id().as_ref() == Some(id) && cand.has_names() {
                    tracing::debug!(module = %path.display(), debug = %p.display(), "debug file by build id");
                    return Some(cand);
                }
            }
        }
    }
    let (name, crc) = elf.debuglink()?;
    let dir = path.parent()?;
    let mut candidates = vec![dir.join(&name), dir.join(".debug").join(&name)];
    for d in dirs {
        let rel = dir.strip_prefix("/").unwrap_or(dir);
        candidates.push(d.join(rel).join(&name));
    }
    for p in candidates {
        let Ok(cand) = Elf::open(&p) else { continue };
        if cand.id.is_some() && cand.id == elf.id {
            continue;
        }
        let matches = match (&build_id, cand.build_id()) {
            (Some(a), Some(b)) => *a == b,
            _ => file_crc32(&cand.src) == Some(crc),
        };
        if matches && cand.has_names() {
            tracing::debug!(module = %path.display(), debug = %p.display(), "debug file by debuglink");
            return Some(cand);
        }
    }
    None
}

/// The CRC-32 (IEEE, as `.gnu_debuglink` uses) of a whole file.
fn file_crc32(src: &Source) -> Option<u32> {
    let mut crc = flate2::Crc::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut off = 0;
    loop {
        let n = src.read_at(off, &mut buf).ok()?;
        if n == 0 {
            break;
        }
        crc.update(&buf[..n]);
        off += n as u64;
    }
    Some(crc.sum())
}

/// A function symbol: its address, size and name (an offset into one of the table's
/// string tables). 16 bytes.
#[derive(Debug, Clone, Copy)]
struct Sym {
    addr: u64,
    name: u32,
    /// Size (low 28 bits, saturated) and string table (high 4 bits).
    size_table: u32,
}

const SIZE_BITS: u32 = 28;
const SIZE_MASK: u32 = (1 << SIZE_BITS) - 1;

impl Sym {
    fn size(&self) -> u64 {
        (self.size_table & SIZE_MASK) as u64
    }
    fn table(&self) -> usize {
        (self.size_table >> SIZE_BITS) as usize
    }
}

/// A string table: where it is in which file.
struct StrTab {
    elf: Rc<Elf>,
    offset: u64,
    size: u64,
}

/// The function symbols of a module, from every table that has some, sorted by
/// address; names stay in their files and are read when asked for.
#[derive(Default)]
pub(crate) struct SymbolTable {
    syms: Vec<Sym>,
    tables: Vec<StrTab>,
}

impl SymbolTable {
    /// Adds the functions of `elf`'s symbol table of type `kind` (`.symtab` or
    /// `.dynsym`). Earlier tables win where two name one address.
    pub fn add(&mut self, elf: &Rc<Elf>, dynamic: bool) -> Result<usize, SymbolError> {
        let kind = if dynamic { SHT_DYNSYM } else { SHT_SYMTAB };
        let Some(symtab) = elf.sections.iter().find(|s| s.kind == kind && s.size > 0) else {
            return Ok(0);
        };
        if symtab.is_compressed() {
            return Err(SymbolError::Unsupported("compressed symbol table"));
        }
        let Some(strtab) = elf.sections.get(symtab.link as usize) else {
            return Ok(0);
        };
        if self.tables.len() >= 1 << (32 - SIZE_BITS) {
            return Ok(0);
        }
        let table = self.tables.len() as u32;
        let before = self.syms.len();
        const ENT: usize = 24;
        let total = (symtab.size as usize) / ENT;
        let mut buf = vec![0u8; ENT * 2730];
        let mut i = 0;
        while i < total {
            let n = (total - i).min(buf.len() / ENT);
            let got = elf
                .src
                .read_at(symtab.offset + (i * ENT) as u64, &mut buf[..n * ENT])?;
            if got < n * ENT {
                return Err(SymbolError::Truncated);
            }
            for e in buf[..n * ENT].chunks_exact(ENT) {
                let name = u32_at(e, 0);
                let info = e[4];
                let shndx = u16_at(e, 6);
                let value = u64_at(e, 8);
                let size = u64_at(e, 16);
                let kind = info & 0xf;
                if (kind != STT_FUNC && kind != STT_GNU_IFUNC) || shndx == 0 || value == 0 {
                    continue;
                }
                if name as u64 >= strtab.size {
                    continue;
                }
                self.syms.push(Sym {
                    addr: value,
                    name,
                    size_table: (size.min(SIZE_MASK as u64) as u32) | (table << SIZE_BITS),
                });
            }
            i += n;
        }
        self.tables.push(StrTab {
            elf: elf.clone(),
            offset: strtab.offset,
            size: strtab.size,
        });
        Ok(self.syms.len() - before)
    }

    /// Sorts by address; of symbols at one address the first table's, then the larger
    /// size, is kept.
    pub fn finish(&mut self) {
        // Unstable: no buffer of half the table to allocate and free.
        self.syms.sort_unstable_by(|a, b| {
            a.addr
                .cmp(&b.addr)
                .then(a.table().cmp(&b.table()))
                .then(b.size().cmp(&a.size()))
        });
        self.syms.dedup_by_key(|s| s.addr);
        self.syms.shrink_to_fit();
    }

    /// Function symbols held.
    pub fn len(&self) -> usize {
        self.syms.len()
    }

    /// The raw (mangled) name of the function containing `svma`: a symbol with a size
    /// must cover it; one without extends to the next symbol.
    pub fn lookup(&self, svma: u64) -> Option<String> {
        let i = self.syms.partition_point(|s| s.addr <= svma);
        let s = self.syms.get(i.checked_sub(1)?)?;
        let covers = if s.size() > 0 {
            svma < s.addr + s.size()
        } else {
            self.syms.get(i).is_some_and(|next| svma < next.addr)
        };
        if !covers {
            return None;
        }
        let t = &self.tables[s.table()];
        read_cstr(&t.elf.src, t.offset + s.name as u64, t.size - s.name as u64)
    }

    /// Bytes held (string tables stay in their files).
    pub fn memory_bytes(&self) -> usize {
        self.syms.capacity() * std::mem::size_of::<Sym>()
            + self.tables.capacity() * std::mem::size_of::<StrTab>()
    }
}

/// A NUL-terminated string at `off`, at most `max` bytes long (and 64 KiB).
pub(crate) fn read_cstr(src: &Source, off: u64, max: u64) -> Option<String> {
    let max = max.min(64 << 10) as usize;
    let mut out = Vec::new();
    let mut chunk = 256;
    while out.len() < max {
        let want = chunk.min(max - out.len());
        let start = out.len();
        out.resize(start + want, 0);
        let n = src.read_at(off + start as u64, &mut out[start..]).ok()?;
        out.truncate(start + n);
        if let Some(nul) = out[start..].iter().position(|b| *b == 0) {
            out.truncate(start + nul);
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        if n < want {
            return None;
        }
        chunk *= 4;
    }
    None
}
