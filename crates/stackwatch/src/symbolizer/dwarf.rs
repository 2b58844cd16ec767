//! Function names and inlined calls from DWARF, read a unit at a time.
//!
//! Nothing is mapped and no section is read whole: an index of which unit covers which
//! addresses is built from the unit headers and root entries alone; the first address
//! looked up in a unit reads that unit's entries through a 64 KiB window and keeps only
//! its functions' and inlined calls' address ranges (a few words each), in a cache
//! bounded in bytes, least recently used dropped first; names are read (and demangled)
//! only for the entries an address needs. Memory therefore depends on the code that is
//! sampled, not on the size of the debug info: types, variables and line tables are
//! never parsed.
//!
//! A function is named by its linkage name, demangled (`binlog_streamer::decode::checksum_block`,
//! as the symbol table names it when it is not inlined), and by `DW_AT_name` only when
//! the producer wrote no linkage name (C, or `debug = "line-tables-only"`).

use std::rc::Rc;

use gimli::{
    constants, AttributeValue, DebugAbbrev, DebugAbbrevOffset, Encoding, EntriesRaw, Format,
    LittleEndian, UnitOffset,
};

use super::elf::{read_cstr, Elf, Shdr};
use super::error::SymbolError;

type Slice<'a> = gimli::EndianSlice<'a, LittleEndian>;

/// Bytes of parsed units (functions and inlined calls) kept.
pub(crate) const UNIT_CACHE_BYTES: usize = 4 << 20;
/// Bytes read at a time from a section.
const WINDOW: usize = 64 << 10;
/// A single entry, abbreviation table or range list larger than this is given up on.
const MAX_WINDOW: usize = 4 << 20;
/// Compressed sections (as distributions' debug files ship them) are decompressed whole,
/// up to this size each and this much in all the symbolizer holds; past either, the file's
/// DWARF is not used (its symbol table still names every function; only inlined frames
/// of that library are lost).
pub(crate) const COMPRESSED_MAX: u64 = 2 << 20;
/// See [`COMPRESSED_MAX`].
pub(crate) const COMPRESSED_TOTAL: u64 = 4 << 20;
/// Hops through `DW_AT_abstract_origin` / `DW_AT_specification` when naming.
const MAX_HOPS: u32 = 8;

/// One DWARF section, read through a window.
struct Sect {
    data: SectData,
    size: u64,
    win_off: u64,
    win: Vec<u8>,
}

enum SectData {
    File { elf: Rc<Elf>, base: u64 },
    Mem(Vec<u8>),
}

impl Sect {
    fn open(elf: &Rc<Elf>, name: &str, budget: &mut u64) -> Result<Option<Sect>, SymbolError> {
        let Some(s) = elf.section(name) else {
            return Ok(None);
        };
        Ok(Some(Sect::from_header(elf, s, budget)?))
    }

    /// A section; a compressed one is decompressed if it fits in `budget`, which it
    /// then takes from.
    fn from_header(elf: &Rc<Elf>, s: &Shdr, budget: &mut u64) -> Result<Sect, SymbolError> {
        if s.is_compressed() {
            let data = elf.section_data(s, COMPRESSED_MAX.min(*budget))?;
            *budget -= data.len() as u64;
            return Ok(Sect {
                size: data.len() as u64,
                data: SectData::Mem(data),
                win_off: 0,
                win: Vec::new(),
            });
        }
        Ok(Sect {
            data: SectData::File {
                elf: elf.clone(),
                base: s.offset,
            },
            size: s.size,
            win_off: 0,
            win: Vec::new(),
        })
    }

    /// Up to `len` bytes at `off` (fewer at the section's end).
    fn bytes(&mut self, off: u64, len: usize) -> Result<&[u8], SymbolError> {
        if off > self.size {
            return Err(SymbolError::Truncated);
        }
        let len = len.min((self.size - off) as usize);
        match &self.data {
            SectData::Mem(m) => Ok(&m[off as usize..off as usize + len]),
            SectData::File { elf, base } => {
                let inside =
                    off >= self.win_off && off + len as u64 <= self.win_off + self.win.len() as u64;
                if !inside {
                    let want = len.max(WINDOW).min((self.size - off) as usize);
                    self.win.resize(want, 0);
                    let n = elf.src.read_at(base + off, &mut self.win)?;
                    self.win.truncate(n);
                    self.win_off = off;
                    if n < len {
                        return Err(SymbolError::Truncated);
                    }
                }
                let at = (off - self.win_off) as usize;
                Ok(&self.win[at..at + len])
            }
        }
    }

    fn read_uint(&mut self, off: u64, size: u8) -> Result<u64, SymbolError> {
        let b = self.bytes(off, size as usize)?;
        if b.len() < size as usize {
            return Err(SymbolError::Truncated);
        }
        let mut v = [0u8; 8];
        v[..size as usize].copy_from_slice(b);
        Ok(u64::from_le_bytes(v))
    }

    fn trim(&mut self) {
        self.win = Vec::new();
    }

    fn memory_bytes(&self) -> usize {
        self.win.capacity()
            + match &self.data {
                SectData::Mem(m) => m.capacity(),
                SectData::File { .. } => 0,
            }
    }
}

/// What the index keeps of a unit.
#[derive(Debug, Clone)]
struct UnitMeta {
    offset: u64,
    end: u64,
    entries: u64,
    abbrev: u64,
    encoding: Encoding,
    base_addr: u64,
    str_offsets_base: u64,
    addr_base: u64,
    rnglists_base: u64,
}

/// Addresses `start..end` belong to unit `unit`.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u64,
    end: u64,
    unit: u32,
}

/// A concrete function's address range.
#[derive(Debug, Clone, Copy)]
struct FnSpan {
    start: u64,
    len: u32,
    /// Unit offset of the function's entry.
    die: u32,
}

/// The functions of one unit, sorted by start address.
struct UnitFns {
    fns: Vec<FnSpan>,
}

impl UnitFns {
    fn memory_bytes(&self) -> usize {
        self.fns.capacity() * std::mem::size_of::<FnSpan>() + 64
    }
}

/// The entries naming one address: its function's entry and its inlined calls',
/// outermost first.
pub(crate) struct Found {
    pub function: u64,
    pub inlined: Vec<u64>,
}

/// The DWARF of one file.
pub(crate) struct Dwarf {
    info: Sect,
    abbrev: Sect,
    str_: Option<Sect>,
    line_str: Option<Sect>,
    str_offsets: Option<Sect>,
    addr: Option<Sect>,
    ranges: Option<Sect>,
    rnglists: Option<Sect>,
    /// Built on the first lookup.
    units: Option<Vec<UnitMeta>>,
    spans: Vec<Span>,
    cache: Vec<(u32, Rc<UnitFns>, u64)>,
    cache_bytes: usize,
    cache_budget: usize,
    tick: u64,
    abbrevs: Option<(u64, Rc<gimli::Abbreviations>)>,
}

impl Dwarf {
    /// The DWARF of `elf`, if it has `.debug_info` and `.debug_abbrev`; compressed
    /// sections may take up to `budget` bytes decompressed.
    pub fn open(elf: &Rc<Elf>, mut budget: u64) -> Result<Option<Dwarf>, SymbolError> {
        let budget = &mut budget;
        let Some(info) = Sect::open(elf, ".debug_info", budget)? else {
            return Ok(None);
        };
        let Some(abbrev) = Sect::open(elf, ".debug_abbrev", budget)? else {
            return Ok(None);
        };
        let mut opt = |name| Sect::open(elf, name, budget).ok().flatten();
        Ok(Some(Dwarf {
            info,
            abbrev,
            str_: opt(".debug_str"),
            line_str: opt(".debug_line_str"),
            str_offsets: opt(".debug_str_offsets"),
            addr: opt(".debug_addr"),
            ranges: opt(".debug_ranges"),
            rnglists: opt(".debug_rnglists"),
            units: None,
            spans: Vec::new(),
            cache: Vec::new(),
            cache_bytes: 0,
            cache_budget: UNIT_CACHE_BYTES,
            tick: 0,
            abbrevs: None,
        }))
    }

    /// Bytes of decompressed sections held.
    pub fn decompressed_bytes(&self) -> u64 {
        self.sects()
            .iter()
            .flatten()
            .map(|s| match &s.data {
                SectData::Mem(m) => m.len() as u64,
                SectData::File { .. } => 0,
            })
            .sum()
    }

    fn sects(&self) -> [Option<&Sect>; 8] {
        [
            Some(&self.info),
            Some(&self.abbrev),
            self.str_.as_ref(),
            self.line_str.as_ref(),
            self.str_offsets.as_ref(),
            self.addr.as_ref(),
            self.ranges.as_ref(),
            self.rnglists.as_ref(),
        ]
    }

    /// Bytes held: the index, the cached units, the read windows.
    pub fn memory_bytes(&self) -> usize {
        self.sects()
            .iter()
            .flatten()
            .map(|s| s.memory_bytes())
            .sum::<usize>()
            + self
                .units
                .as_ref()
                .map_or(0, |u| u.capacity() * std::mem::size_of::<UnitMeta>())
            + self.spans.capacity() * std::mem::size_of::<Span>()
            + self.cache_bytes
            + self.abbrevs.as_ref().map_or(0, |_| WINDOW)
    }

    /// Lets go of read windows and the last abbreviation table (after a batch).
    pub fn trim(&mut self) {
        for s in [
            Some(&mut self.info),
            Some(&mut self.abbrev),
            self.str_.as_mut(),
            self.line_str.as_mut(),
            self.str_offsets.as_mut(),
            self.addr.as_mut(),
            self.ranges.as_mut(),
            self.rnglists.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            s.trim();
        }
        self.abbrevs = None;
    }

    /// The entries of the function and inlined calls at `svma`, or `None` when no unit
    /// describes it.
    pub fn find(&mut self, svma: u64) -> Option<Found> {
        if self.units.is_none() {
            if let Err(e) = self.build_index() {
                tracing::debug!(error = %e, "DWARF index incomplete");
            }
        }
        let i = self.spans.partition_point(|s| s.start <= svma);
        let span = *self.spans.get(i.checked_sub(1)?)?;
        if svma >= span.end {
            return None;
        }
        let fns = self.unit_fns(span.unit)?;
        let j = fns.fns.partition_point(|f| f.start <= svma);
        // Ranges of distinct functions do not overlap; look back a little in case one
        // contains another (nested functions).
        let f = *fns.fns[..j]
            .iter()
            .rev()
            .take(4)
            .find(|f| svma < f.start + f.len as u64)?;
        let meta = self.units.as_ref()?.get(span.unit as usize)?.clone();
        let function = meta.offset + f.die as u64;
        let inlined = self.inline_chain(&meta, function, svma);
        Some(Found { function, inlined })
    }

    /// The name of the entry at section offset `die`: its linkage name, else its
    /// origin's or specification's, else its `DW_AT_name`.
    pub fn name(&mut self, die: u64) -> Option<String> {
        self.name_hops(die, 0)
    }

    fn name_hops(&mut self, die: u64, hops: u32) -> Option<String> {
        let units = self.units.as_ref()?;
        let u = units.partition_point(|u| u.offset <= die).checked_sub(1)?;
        let meta = units[u].clone();
        if die >= meta.end || die < meta.entries {
            return None;
        }
        let abbrevs = self.abbreviations(meta.abbrev).ok()?;
        let mut want = 512;
        let (linkage, name, next) = loop {
            let buf = self.info.bytes(die, want).ok()?;
            let full = buf.len() < want;
            let mut entries = EntriesRaw::new(
                Slice::new(buf, LittleEndian),
                meta.encoding,
                &abbrevs,
                UnitOffset((die - meta.offset) as usize),
            );
            match read_name_attrs(&mut entries, meta.offset) {
                Ok(v) => break v,
                Err(_) if !full && want < MAX_WINDOW => want *= 4,
                Err(_) => return None,
            }
        };
        let linkage = linkage.and_then(|v| self.string(&meta, v));
        if linkage.is_some() {
            return linkage;
        }
        let name = name.and_then(|v| self.string(&meta, v));
        if let Some(next) = next.filter(|n| *n != die && hops < MAX_HOPS) {
            if let Some(n) = self.name_hops(next, hops + 1) {
                return Some(n);
            }
        }
        name
    }

    fn string(&mut self, meta: &UnitMeta, v: NameValue) -> Option<String> {
        match v {
            NameValue::Inline(s) => Some(s),
            NameValue::Str(off) => sect_cstr(self.str_.as_mut()?, off),
            NameValue::LineStr(off) => sect_cstr(self.line_str.as_mut()?, off),
            NameValue::StrIndex(i) => {
                let size = meta.encoding.format.word_size();
                let at = meta.str_offsets_base + i * size as u64;
                let off = self.str_offsets.as_mut()?.read_uint(at, size).ok()?;
                sect_cstr(self.str_.as_mut()?, off)
            }
        }
    }

    fn abbreviations(&mut self, offset: u64) -> Result<Rc<gimli::Abbreviations>, SymbolError> {
        if let Some((o, a)) = &self.abbrevs {
            if *o == offset {
                return Ok(a.clone());
            }
        }
        let mut want = WINDOW;
        let parsed = loop {
            let buf = self.abbrev.bytes(offset, want)?;
            let full = buf.len() < want;
            match DebugAbbrev::new(buf, LittleEndian).abbreviations(DebugAbbrevOffset(0)) {
                Ok(a) => break a,
                Err(_) if !full && want < MAX_WINDOW => want *= 4,
                Err(e) => return Err(e.into()),
            }
        };
        let a = Rc::new(parsed);
        self.abbrevs = Some((offset, a.clone()));
        Ok(a)
    }

    /// Reads every unit header and root entry: which unit covers which addresses.
    fn build_index(&mut self) -> Result<(), SymbolError> {
        let mut units = Vec::new();
        let mut spans = Vec::new();
        let result = self.index_units(&mut units, &mut spans);
        spans.sort_unstable_by_key(|s: &Span| (s.start, s.end));
        // Neighbouring ranges of one unit merge (a Rust unit lists each function), in
        // place: the list is shrunk, not copied.
        spans.dedup_by(|next, last| {
            let same = last.unit == next.unit;
            if same {
                last.end = last.end.max(next.end);
            }
            same
        });
        spans.shrink_to_fit();
        units.shrink_to_fit();
        self.spans = spans;
        self.units = Some(units);
        self.trim();
        result
    }

    fn index_units(
        &mut self,
        units: &mut Vec<UnitMeta>,
        spans: &mut Vec<Span>,
    ) -> Result<(), SymbolError> {
        let mut off = 0u64;
        while off + 11 <= self.info.size {
            let Some((meta, compile)) = self.unit_header(off)? else {
                break;
            };
            off = meta.end;
            if !compile {
                continue;
            }
            let (meta, ranges) = match self.root_entry(meta) {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(error = %e, "unreadable DWARF unit");
                    continue;
                }
            };
            let unit = units.len() as u32;
            spans.extend(
                ranges
                    .into_iter()
                    .map(|(start, end)| Span { start, end, unit }),
            );
            units.push(meta);
        }
        Ok(())
    }

    /// The header of the unit at `off`; `compile` is false for units without code
    /// (type units, skeletons).
    fn unit_header(&mut self, off: u64) -> Result<Option<(UnitMeta, bool)>, SymbolError> {
        let h = self.info.bytes(off, 32)?;
        if h.len() < 11 {
            return Ok(None);
        }
        let mut at = 0usize;
        let rd = |at: &mut usize, n: usize| -> Option<u64> {
            let b = h.get(*at..*at + n)?;
            *at += n;
            let mut v = [0u8; 8];
            v[..n].copy_from_slice(b);
            Some(u64::from_le_bytes(v))
        };
        let mut len = rd(&mut at, 4).ok_or(SymbolError::Truncated)?;
        let format = if len == 0xffff_ffff {
            len = rd(&mut at, 8).ok_or(SymbolError::Truncated)?;
            Format::Dwarf64
        } else if len >= 0xffff_fff0 {
            return Ok(None);
        } else {
            Format::Dwarf32
        };
        let end = off + at as u64 + len;
        let word = format.word_size() as usize;
        let version = rd(&mut at, 2).ok_or(SymbolError::Truncated)? as u16;
        let (unit_type, address_size, abbrev) = if version >= 5 {
            let t = rd(&mut at, 1).ok_or(SymbolError::Truncated)? as u8;
            let a = rd(&mut at, 1).ok_or(SymbolError::Truncated)? as u8;
            let ab = rd(&mut at, word).ok_or(SymbolError::Truncated)?;
            match t {
                // skeleton, split_compile: dwo id
                0x04 | 0x05 => at += 8,
                // type, split_type: signature and type offset
                0x02 | 0x06 => at += 8 + word,
                _ => {}
            }
            (t, a, ab)
        } else if (2..=4).contains(&version) {
            let ab = rd(&mut at, word).ok_or(SymbolError::Truncated)?;
            let a = rd(&mut at, 1).ok_or(SymbolError::Truncated)? as u8;
            (0x01, a, ab)
        } else {
            return Ok(Some((
                UnitMeta {
                    offset: off,
                    end: end.max(off + 1),
                    entries: end,
                    abbrev: 0,
                    encoding: Encoding {
                        address_size: 8,
                        format,
                        version,
                    },
                    base_addr: 0,
                    str_offsets_base: 0,
                    addr_base: 0,
                    rnglists_base: 0,
                },
                false,
            )));
        };
        let compile = matches!(unit_type, 0x01 | 0x03) && (1..=8).contains(&address_size);
        Ok(Some((
            UnitMeta {
                offset: off,
                end: end.max(off + 1),
                entries: off + at as u64,
                abbrev,
                encoding: Encoding {
                    address_size: address_size.clamp(1, 8),
                    format,
                    version,
                },
                base_addr: 0,
                str_offsets_base: 0,
                addr_base: 0,
                rnglists_base: 0,
            },
            compile,
        )))
    }

    /// The unit's bases and address ranges, from its root entry.
    fn root_entry(
        &mut self,
        mut meta: UnitMeta,
    ) -> Result<(UnitMeta, Vec<(u64, u64)>), SymbolError> {
        let abbrevs = self.abbreviations(meta.abbrev)?;
        let mut want = 1024;
        let attrs = loop {
            let len = want.min((meta.end - meta.entries) as usize);
            let buf = self.info.bytes(meta.entries, len)?;
            let full = buf.len() < want;
            let mut entries = EntriesRaw::new(
                Slice::new(buf, LittleEndian),
                meta.encoding,
                &abbrevs,
                UnitOffset((meta.entries - meta.offset) as usize),
            );
            match read_code_attrs(&mut entries, true) {
                Ok(Some((tag, _, a))) => {
                    if tag != constants::DW_TAG_compile_unit
                        && tag != constants::DW_TAG_partial_unit
                    {
                        return Ok((meta, Vec::new()));
                    }
                    break a;
                }
                Ok(None) => return Ok((meta, Vec::new())),
                Err(_) if !full && want < MAX_WINDOW => want *= 4,
                Err(e) => return Err(e),
            }
        };
        meta.str_offsets_base = attrs.str_offsets_base.unwrap_or(0);
        meta.addr_base = attrs.addr_base.unwrap_or(0);
        meta.rnglists_base = attrs.rnglists_base.unwrap_or(0);
        if let Some(low) = attrs.low_pc {
            meta.base_addr = self.address(&meta, low).unwrap_or(0);
        }
        let ranges = self.ranges_of(&meta, &attrs)?;
        Ok((meta, ranges))
    }

    fn address(&mut self, meta: &UnitMeta, v: Addr) -> Option<u64> {
        match v {
            Addr::Direct(a) => Some(a),
            Addr::Index(i) => {
                let size = meta.encoding.address_size;
                let at = meta.addr_base + i * size as u64;
                self.addr.as_mut()?.read_uint(at, size).ok()
            }
        }
    }

    /// The address ranges of an entry (low/high pc or a range list); empty ranges and
    /// ranges of code the linker dropped (starting at 0) are left out.
    fn ranges_of(
        &mut self,
        meta: &UnitMeta,
        a: &CodeAttrs,
    ) -> Result<Vec<(u64, u64)>, SymbolError> {
        let mut out = Vec::new();
        if let Some(low) = a.low_pc {
            let Some(low) = self.address(meta, low) else {
                return Ok(out);
            };
            let high = match a.high_pc {
                Some(High::Offset(n)) => low.saturating_add(n),
                Some(High::Addr(h)) => self.address(meta, h).unwrap_or(low),
                None => low.saturating_add(1),
            };
            if low != 0 && high > low {
                out.push((low, high));
            }
        }
        if let Some(r) = a.ranges {
            self.range_list(meta, r, &mut out)?;
        }
        Ok(out)
    }

    fn range_list(
        &mut self,
        meta: &UnitMeta,
        r: Ranges,
        out: &mut Vec<(u64, u64)>,
    ) -> Result<(), SymbolError> {
        let asz = meta.encoding.address_size;
        let max = if asz >= 8 {
            u64::MAX
        } else {
            (1u64 << (asz * 8)) - 1
        };
        let push = |out: &mut Vec<(u64, u64)>, s: u64, e: u64| {
            if s != 0 && e > s && s < max - 1 {
                out.push((s, e));
            }
        };
        if meta.encoding.version < 5 {
            let Ranges::Offset(off) = r else {
                return Ok(());
            };
            let Some(sect) = self.ranges.as_mut() else {
                return Ok(());
            };
            let mut base = meta.base_addr;
            let mut at = off;
            for _ in 0..1_000_000 {
                let b = sect.read_uint(at, asz)?;
                let e = sect.read_uint(at + asz as u64, asz)?;
                at += 2 * asz as u64;
                if b == 0 && e == 0 {
                    break;
                }
                if b == max {
                    base = e;
                    continue;
                }
                push(out, base.wrapping_add(b), base.wrapping_add(e));
            }
            return Ok(());
        }
        let word = meta.encoding.format.word_size();
        let off = match r {
            Ranges::Offset(o) => o,
            Ranges::Index(i) => {
                let at = meta.rnglists_base + i * word as u64;
                let rel = match self.rnglists.as_mut() {
                    Some(s) => s.read_uint(at, word)?,
                    None => return Ok(()),
                };
                meta.rnglists_base + rel
            }
        };
        // Entries, decoded from a window of the list.
        let mut want = 4096;
        loop {
            let Some(sect) = self.rnglists.as_mut() else {
                return Ok(());
            };
            let buf = sect.bytes(off, want)?.to_vec();
            let full = buf.len() < want;
            let mut c = Cursor { b: &buf, at: 0 };
            let mut base = meta.base_addr;
            let mut entries: Vec<(u64, u64)> = Vec::new();
            let mut indexed: Vec<(u8, u64, u64)> = Vec::new();
            let done = (|| -> Option<()> {
                loop {
                    match c.u8()? {
                        0 => return Some(()),
                        1 => indexed.push((1, c.uleb()?, 0)),
                        2 => indexed.push((2, c.uleb()?, c.uleb()?)),
                        3 => indexed.push((3, c.uleb()?, c.uleb()?)),
                        4 => {
                            let (s, e) = (c.uleb()?, c.uleb()?);
                            indexed.push((4, s, e));
                        }
                        5 => indexed.push((5, c.uint(asz)?, 0)),
                        6 => indexed.push((6, c.uint(asz)?, c.uint(asz)?)),
                        7 => indexed.push((7, c.uint(asz)?, c.uleb()?)),
                        _ => return None,
                    }
                }
            })();
            if done.is_none() {
                if !full && want < MAX_WINDOW {
                    want *= 4;
                    continue;
                }
                return Ok(());
            }
            for (kind, a, b) in indexed {
                match kind {
                    1 => base = self.address(meta, Addr::Index(a)).unwrap_or(0),
                    2 => {
                        let s = self.address(meta, Addr::Index(a));
                        let e = self.address(meta, Addr::Index(b));
                        if let (Some(s), Some(e)) = (s, e) {
                            entries.push((s, e));
                        }
                    }
                    3 => {
                        if let Some(s) = self.address(meta, Addr::Index(a)) {
                            entries.push((s, s.saturating_add(b)));
                        }
                    }
                    4 => entries.push((base.wrapping_add(a), base.wrapping_add(b))),
                    5 => base = a,
                    6 => entries.push((a, b)),
                    7 => entries.push((a, a.saturating_add(b))),
                    _ => {}
                }
            }
            for (s, e) in entries {
                push(out, s, e);
            }
            return Ok(());
        }
    }

    /// The functions of unit `u`, from the cache or read now.
    fn unit_fns(&mut self, u: u32) -> Option<Rc<UnitFns>> {
        self.tick += 1;
        if let Some(e) = self.cache.iter_mut().find(|e| e.0 == u) {
            e.2 = self.tick;
            return Some(e.1.clone());
        }
        let meta = self.units.as_ref()?.get(u as usize)?.clone();
        let fns = match self.scan_unit(&meta) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, unit = meta.offset, "unreadable DWARF unit");
                UnitFns { fns: Vec::new() }
            }
        };
        let fns = Rc::new(fns);
        let bytes = fns.memory_bytes();
        while self.cache_bytes + bytes > self.cache_budget && !self.cache.is_empty() {
            let (i, _) = self
                .cache
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.2)
                .expect("not empty");
            let (_, old, _) = self.cache.swap_remove(i);
            self.cache_bytes -= old.memory_bytes();
        }
        // A unit larger than the budget (one unit for a whole fat-LTO program) is kept
        // alone: reading it again for every address would cost far more. Its size is
        // 16 bytes a function, whatever the debug info.
        self.cache_bytes += bytes;
        self.cache.push((u, fns.clone(), self.tick));
        Some(fns)
    }

    /// Reads a unit's entries through a window, keeping its concrete functions' ranges
    /// (16 bytes each; inlined calls are read per address, from the function's entry).
    fn scan_unit(&mut self, meta: &UnitMeta) -> Result<UnitFns, SymbolError> {
        let mut fns: Vec<FnSpan> = Vec::new();
        self.walk(meta, meta.entries, false, |dw, e| {
            if e.tag == constants::DW_TAG_subprogram
                && (e.attrs.low_pc.is_some() || e.attrs.ranges.is_some())
            {
                for (start, end) in dw.ranges_of(meta, &e.attrs).unwrap_or_default() {
                    fns.push(FnSpan {
                        start,
                        len: (end - start).min(u32::MAX as u64) as u32,
                        die: (e.die - meta.offset) as u32,
                    });
                }
            }
        })?;
        fns.sort_unstable_by_key(|f| (f.start, std::cmp::Reverse(f.len)));
        fns.shrink_to_fit();
        Ok(UnitFns { fns })
    }

    /// The inlined calls at `svma` inside the function whose entry is at `die`,
    /// outermost first: read from the function's entries alone.
    fn inline_chain(&mut self, meta: &UnitMeta, die: u64, svma: u64) -> Vec<u64> {
        let mut chain = Vec::new();
        // Open entries with children: (depth, whether an inlined call).
        let mut stack: Vec<(isize, bool)> = Vec::new();
        let result = self.walk(meta, die, true, |dw, e| {
            while stack.last().is_some_and(|(d, _)| *d >= e.depth) {
                stack.pop();
            }
            let inlined = e.tag == constants::DW_TAG_inlined_subroutine;
            if inlined {
                let depth = 1 + stack.iter().filter(|(_, i)| *i).count();
                if depth == chain.len() + 1
                    && dw
                        .ranges_of(meta, &e.attrs)
                        .unwrap_or_default()
                        .iter()
                        .any(|(s, e)| *s <= svma && svma < *e)
                {
                    chain.push(e.die);
                }
            }
            if e.has_children {
                stack.push((e.depth, inlined));
            }
        });
        if let Err(e) = result {
            tracing::debug!(error = %e, "unreadable DWARF function");
        }
        chain
    }

    /// Calls `f` for each entry from `start` (its depth relative to the first), reading
    /// through a window: to the unit's end or, with `subtree`, to the end of the first
    /// entry's children. Subprograms and inlined calls come with the attributes that
    /// place their code.
    fn walk<F>(
        &mut self,
        meta: &UnitMeta,
        start: u64,
        subtree: bool,
        mut f: F,
    ) -> Result<(), SymbolError>
    where
        F: FnMut(&mut Self, Entry),
    {
        let abbrevs = self.abbreviations(meta.abbrev)?;
        let mut depth: isize = 0;
        let mut first = true;
        let mut pos = start;
        let mut want = if subtree { WINDOW / 8 } else { WINDOW };
        let mut buf: Vec<u8> = Vec::new();
        'windows: while pos < meta.end {
            let len = want.min((meta.end - pos) as usize);
            buf.clear();
            buf.extend_from_slice(self.info.bytes(pos, len)?);
            let at_end = pos + buf.len() as u64 >= meta.end;
            let mut entries = EntriesRaw::new(
                Slice::new(&buf, LittleEndian),
                meta.encoding,
                &abbrevs,
                UnitOffset((pos - meta.offset) as usize),
            );
            loop {
                let die = meta.offset + entries.next_offset().0 as u64;
                let left = buf.len() as u64 - (die - pos);
                if left == 0 && at_end {
                    break 'windows;
                }
                if left < 2048 && !at_end {
                    pos = die;
                    want = want.max(WINDOW / 8);
                    continue 'windows;
                }
                match read_code_attrs(&mut entries, false) {
                    Ok(None) => {
                        depth -= 1;
                        if depth <= 0 {
                            break 'windows;
                        }
                    }
                    Ok(Some((tag, has_children, attrs))) => {
                        f(
                            self,
                            Entry {
                                die,
                                depth,
                                tag,
                                has_children,
                                attrs,
                            },
                        );
                        if first && subtree && !has_children {
                            break 'windows;
                        }
                        first = false;
                        if has_children {
                            depth += 1;
                        }
                    }
                    Err(e) => {
                        // An entry cut by the window: read again from it, with more room
                        // when it alone filled the window.
                        if !at_end && want < MAX_WINDOW {
                            if die == pos {
                                want *= 4;
                            }
                            pos = die;
                            continue 'windows;
                        }
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }
}

/// One entry, as [`Dwarf::walk`] hands it over.
struct Entry {
    /// Section offset.
    die: u64,
    /// Depth below the first entry walked.
    depth: isize,
    tag: constants::DwTag,
    has_children: bool,
    attrs: CodeAttrs,
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn u8(&mut self) -> Option<u8> {
        let v = *self.b.get(self.at)?;
        self.at += 1;
        Some(v)
    }
    fn uint(&mut self, n: u8) -> Option<u64> {
        let b = self.b.get(self.at..self.at + n as usize)?;
        self.at += n as usize;
        let mut v = [0u8; 8];
        v[..n as usize].copy_from_slice(b);
        Some(u64::from_le_bytes(v))
    }
    fn uleb(&mut self) -> Option<u64> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            if shift < 64 {
                v |= ((b & 0x7f) as u64) << shift;
            }
            if b & 0x80 == 0 {
                return Some(v);
            }
            shift += 7;
        }
    }
}

fn sect_cstr(s: &mut Sect, off: u64) -> Option<String> {
    match &s.data {
        SectData::File { elf, base } => {
            if off >= s.size {
                return None;
            }
            read_cstr(&elf.src, base + off, s.size - off)
        }
        SectData::Mem(m) => {
            let rest = m.get(off as usize..)?;
            let nul = rest.iter().position(|b| *b == 0)?;
            Some(String::from_utf8_lossy(&rest[..nul]).into_owned())
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Addr {
    Direct(u64),
    Index(u64),
}

#[derive(Debug, Clone, Copy)]
enum High {
    Offset(u64),
    Addr(Addr),
}

#[derive(Debug, Clone, Copy)]
enum Ranges {
    Offset(u64),
    Index(u64),
}

/// The attributes that place code.
#[derive(Debug, Default)]
struct CodeAttrs {
    low_pc: Option<Addr>,
    high_pc: Option<High>,
    ranges: Option<Ranges>,
    str_offsets_base: Option<u64>,
    addr_base: Option<u64>,
    rnglists_base: Option<u64>,
}

fn addr_value(v: AttributeValue<Slice<'_>>) -> Option<Addr> {
    match v {
        AttributeValue::Addr(a) => Some(Addr::Direct(a)),
        AttributeValue::DebugAddrIndex(i) => Some(Addr::Index(i.0 as u64)),
        _ => None,
    }
}

/// Reads one entry; for subprograms, inlined calls and (with `root`) units, the
/// attributes that place their code; other entries are skipped. `None` for a null entry.
fn read_code_attrs(
    entries: &mut EntriesRaw<'_, Slice<'_>>,
    root: bool,
) -> Result<Option<(constants::DwTag, bool, CodeAttrs)>, SymbolError> {
    let Some(abbrev) = entries.read_abbreviation()? else {
        return Ok(None);
    };
    let tag = abbrev.tag();
    let mut a = CodeAttrs::default();
    let wanted =
        root || tag == constants::DW_TAG_subprogram || tag == constants::DW_TAG_inlined_subroutine;
    if !wanted {
        entries.skip_attributes(abbrev.attributes())?;
        return Ok(Some((tag, abbrev.has_children(), a)));
    }
    for spec in abbrev.attributes() {
        let attr = entries.read_attribute(*spec)?;
        match attr.name() {
            constants::DW_AT_low_pc => a.low_pc = addr_value(attr.value()),
            constants::DW_AT_high_pc => {
                a.high_pc = match attr.value() {
                    AttributeValue::Udata(n) => Some(High::Offset(n)),
                    v => addr_value(v).map(High::Addr),
                }
            }
            constants::DW_AT_ranges => {
                a.ranges = match attr.value() {
                    AttributeValue::RangeListsRef(o) => Some(Ranges::Offset(o.0 as u64)),
                    AttributeValue::DebugRngListsIndex(i) => Some(Ranges::Index(i.0 as u64)),
                    _ => None,
                }
            }
            constants::DW_AT_str_offsets_base => {
                if let AttributeValue::DebugStrOffsetsBase(b) = attr.value() {
                    a.str_offsets_base = Some(b.0 as u64);
                }
            }
            constants::DW_AT_addr_base | constants::DW_AT_GNU_addr_base => {
                if let AttributeValue::DebugAddrBase(b) = attr.value() {
                    a.addr_base = Some(b.0 as u64);
                }
            }
            constants::DW_AT_rnglists_base => {
                if let AttributeValue::DebugRngListsBase(b) = attr.value() {
                    a.rnglists_base = Some(b.0 as u64);
                }
            }
            _ => {}
        }
    }
    Ok(Some((tag, abbrev.has_children(), a)))
}

/// A name attribute's value, before the string is read.
enum NameValue {
    Inline(String),
    Str(u64),
    LineStr(u64),
    StrIndex(u64),
}

fn name_value(v: AttributeValue<Slice<'_>>) -> Option<NameValue> {
    match v {
        AttributeValue::String(s) => Some(NameValue::Inline(
            String::from_utf8_lossy(s.slice()).into_owned(),
        )),
        AttributeValue::DebugStrRef(o) => Some(NameValue::Str(o.0 as u64)),
        AttributeValue::DebugLineStrRef(o) => Some(NameValue::LineStr(o.0 as u64)),
        AttributeValue::DebugStrOffsetsIndex(i) => Some(NameValue::StrIndex(i.0 as u64)),
        _ => None,
    }
}

type NameAttrs = (Option<NameValue>, Option<NameValue>, Option<u64>);

/// Reads one entry's linkage name, name, and origin or specification (as a section
/// offset; `unit` is the unit's).
fn read_name_attrs(
    entries: &mut EntriesRaw<'_, Slice<'_>>,
    unit: u64,
) -> Result<NameAttrs, SymbolError> {
    let Some(abbrev) = entries.read_abbreviation()? else {
        return Err(SymbolError::Truncated);
    };
    let (mut linkage, mut name, mut next) = (None, None, None);
    for spec in abbrev.attributes() {
        let attr = entries.read_attribute(*spec)?;
        match attr.name() {
            constants::DW_AT_linkage_name | constants::DW_AT_MIPS_linkage_name => {
                linkage = name_value(attr.value())
            }
            constants::DW_AT_name => name = name_value(attr.value()),
            constants::DW_AT_abstract_origin | constants::DW_AT_specification => {
                next = match attr.value() {
                    AttributeValue::UnitRef(o) => Some(unit + o.0 as u64),
                    AttributeValue::DebugInfoRef(o) => Some(o.0 as u64),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    Ok((linkage, name, next))
}

impl From<gimli::Error> for SymbolError {
    fn from(e: gimli::Error) -> Self {
        SymbolError::Dwarf(e.to_string())
    }
}
