//! Compact unwind rows, precomputed from `.eh_frame` on the aggregator thread, so that the
//! signal handler finds a frame's rule with a table lookup instead of evaluating CFI.
//!
//! Every row of every FDE of a module is evaluated once, when the module is loaded, into a
//! 32-bit rule: "CFA = rsp + n, rbp unchanged or saved at CFA + m" (`OffsetSp`), "CFA =
//! rbp + 16, rbp saved at CFA − 16" (`UseFp`), "no return address" (`End`), or `Delegate`
//! for anything else (a CFA expression, a return address not at CFA − 8, a PC no FDE
//! covers, overlapping FDEs). The translation is framehop's own (its
//! `translate_into_unwind_rule` for x86_64), restricted to what fits the 32 bits, and a
//! `Delegate` row is unwound by framehop itself: so the walk gives exactly framehop's
//! answer, only without the CFI evaluation and its rule-cache misses.
//!
//! Rows are sorted by address; a per-module bucket index (one `u32` per 2^shift bytes of
//! code) narrows the search to a handful of rows, so a lookup is a few dependent loads
//! whatever the size of the module.

use crate::scratch::ScratchVec;
use std::ops::Range;
use std::sync::Arc;

use addr2line::gimli::{self, CfaRule, RegisterRule, UnwindSection, X86_64};

const KIND_MASK: u32 = 3;
const DELEGATE: u32 = 0;
const END: u32 = 1;
const OFFSET_SP: u32 = 2;
const USE_FP: u32 = 3;
const RESTORE_BP: u32 = 1 << 18;

/// A decoded row rule. Offsets in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Unwind this frame with framehop.
    Delegate,
    /// The outermost frame: no return address.
    End,
    /// CFA = rsp + `sp_offset`; rbp unchanged, or read from old rsp + `bp_from_sp`.
    OffsetSp {
        sp_offset: u64,
        bp_from_sp: Option<i64>,
    },
    /// CFA = rbp + 16, rbp saved at CFA − 16.
    UseFp,
}

fn encode(rule: Rule) -> u32 {
    match rule {
        Rule::Delegate => DELEGATE,
        Rule::End => END,
        Rule::UseFp => USE_FP,
        Rule::OffsetSp {
            sp_offset,
            bp_from_sp,
        } => {
            let by8 = (sp_offset / 8) as u32;
            let bp = match bp_from_sp {
                None => 0,
                Some(off) => RESTORE_BP | ((((off / 8) as i32 as u32) & 0x1fff) << 19),
            };
            OFFSET_SP | (by8 << 2) | bp
        }
    }
}

#[inline(always)]
fn decode(bits: u32) -> Rule {
    match bits & KIND_MASK {
        END => Rule::End,
        USE_FP => Rule::UseFp,
        OFFSET_SP => Rule::OffsetSp {
            sp_offset: ((bits >> 2) & 0xffff) as u64 * 8,
            bp_from_sp: (bits & RESTORE_BP != 0).then(|| ((bits as i32) >> 19) as i64 * 8),
        },
        _ => Rule::Delegate,
    }
}

/// framehop's translation of one CFI row (x86_64/dwarf.rs, `translate_into_unwind_rule`),
/// where the result fits our encoding; `Delegate` otherwise.
fn translate<T: gimli::ReaderOffset>(
    cfa: &CfaRule<T>,
    bp: Option<RegisterRule<T>>,
    ra: Option<RegisterRule<T>>,
) -> Rule {
    match ra {
        None | Some(RegisterRule::Undefined) => return Rule::End,
        Some(RegisterRule::Offset(-8)) => {}
        Some(_) => return Rule::Delegate,
    }
    // framehop: a bp stored relative to the CFA, or not restored at all.
    let bp_cfa_offset = match bp {
        None | Some(RegisterRule::Undefined) | Some(RegisterRule::SameValue) => None,
        Some(RegisterRule::Offset(o)) => Some(o),
        Some(_) => return Rule::Delegate,
    };
    match *cfa {
        CfaRule::RegisterAndOffset { register, offset } if register == X86_64::RSP => {
            // framehop divides by 8 (truncating); only exact multiples are taken here.
            if offset < 0 || offset % 8 != 0 || offset / 8 > 0xffff {
                return Rule::Delegate;
            }
            match bp_cfa_offset {
                None => Rule::OffsetSp {
                    sp_offset: offset as u64,
                    bp_from_sp: None,
                },
                Some(o) => {
                    let from_sp = offset + o;
                    if from_sp % 8 != 0 || !(-4096..4096).contains(&(from_sp / 8)) {
                        return Rule::Delegate;
                    }
                    Rule::OffsetSp {
                        sp_offset: offset as u64,
                        bp_from_sp: Some(from_sp),
                    }
                }
            }
        }
        CfaRule::RegisterAndOffset { register, offset }
            if register == X86_64::RBP && offset == 16 && bp_cfa_offset == Some(-16) =>
        {
            Rule::UseFp
        }
        _ => Rule::Delegate,
    }
}

/// Where the sections that CFI pointers may be relative to were stated to be.
#[derive(Debug, Clone, Default)]
pub struct SectionBases {
    pub eh_frame: u64,
    pub eh_frame_hdr: u64,
    pub text: u64,
    pub got: u64,
}

/// One module's rows: addresses relative to the start of its executable mapping.
#[derive(Debug, Default)]
pub struct ModuleRows {
    /// The index, then the rows, in one allocation. An index entry per `2^shift` bytes
    /// of code: the rule in force at the bucket's start (high 32 bits), `FP_BUCKET` when
    /// the bucket's code is all in frame-pointer functions, and the number of rows at or
    /// below its start (the rest of the low 32 bits). A row: `address << 32 | rule`,
    /// sorted, so a lookup's address and rule share a cache line.
    words: Box<[u64]>,
    /// Index entries at the start of `words`; the rows follow.
    index_len: usize,
    shift: u32,
    /// Runs of consecutive frame-pointer functions (diagnostics, printed by tests).
    #[cfg_attr(not(test), allow(dead_code))]
    fp_runs: usize,
    /// The two longest runs, `[start, end)`, checked before the index (see
    /// [`UnwindTable::rule_for`]).
    long_runs: [(u32, u32); 2],
}

/// Index flag: every function in this bucket keeps a frame pointer, so a return address
/// here unwinds by frame pointer without a row lookup.
const FP_BUCKET: u32 = 1 << 31;

impl ModuleRows {
    /// Evaluates every FDE of `eh_frame` for a mapping `map` of the file whose stated
    /// addresses are `bias` below the actual ones. Allocates; aggregator thread only.
    /// When memory for the build cannot be mapped, no rows: framehop answers for the
    /// module.
    pub fn build(eh_frame: &[u8], bases: &SectionBases, bias: u64, map: Range<u64>) -> Self {
        Self::try_build(eh_frame, bases, bias, map).unwrap_or_else(|e| {
            tracing::debug!(error = %e, "no compact unwind rows for a module");
            ModuleRows::default()
        })
    }

    fn try_build(
        eh_frame: &[u8],
        bases: &SectionBases,
        bias: u64,
        map: Range<u64>,
    ) -> std::io::Result<Self> {
        let mut section = gimli::EhFrame::new(eh_frame, gimli::LittleEndian);
        section.set_address_size(8);
        let gbases = gimli::BaseAddresses::default()
            .set_eh_frame(bases.eh_frame)
            .set_eh_frame_hdr(bases.eh_frame_hdr)
            .set_text(bases.text)
            .set_got(bases.got);
        let len = map.end.saturating_sub(map.start);
        if len == 0 || len > u32::MAX as u64 {
            return Ok(ModuleRows::default());
        }
        // Mapping-relative address of a stated address, if inside the mapping.
        let rel = |svma: u64| -> Option<u64> {
            let avma = svma.wrapping_add(bias);
            (map.start <= avma && avma <= map.end).then(|| avma - map.start)
        };
        let mut ctx: gimli::UnwindContext<usize> = gimli::UnwindContext::new();
        // Every FDE's rows, `[address, encoded rule]`, one after another; and per FDE
        // `[start, end, first row, end of rows]`. Flat, so that building holds little
        // memory beyond the result, and in scratch mappings, so that the megabytes a
        // large module needs here for a moment leave malloc's thresholds as they were
        // (see scratch.rs).
        let mut flat: ScratchVec<[u32; 2]> = ScratchVec::new();
        let mut fdes: ScratchVec<[u32; 4]> = ScratchVec::new();
        // One FDE's rows, appended to `flat` together (small: reused, never near
        // malloc's mmap threshold).
        let mut fde_buf: Vec<[u32; 2]> = Vec::new();
        let mut entries = section.entries(&gbases);
        // A malformed entry ends the walk of the section: what was read stays, the rest is
        // delegated to framehop.
        while let Ok(Some(entry)) = entries.next() {
            let gimli::CieOrFde::Fde(partial) = entry else {
                continue;
            };
            let Ok(fde) = partial.parse(|s, b, o| s.cie_from_offset(b, o)) else {
                continue;
            };
            let (start, end) = (fde.initial_address(), fde.end_address());
            let (Some(rs), Some(re)) = (rel(start), rel(end)) else {
                continue;
            };
            if re <= rs {
                continue;
            }
            let Ok(mut table) = fde.rows(&section, &gbases, &mut ctx) else {
                continue;
            };
            fde_buf.clear();
            let complete = loop {
                match table.next_row() {
                    Ok(Some(row)) => {
                        let Some(r) = rel(row.start_address()) else {
                            break false;
                        };
                        if r >= re {
                            continue;
                        }
                        let rule = translate(
                            row.cfa(),
                            row.register(X86_64::RBP),
                            row.register(X86_64::RA),
                        );
                        fde_buf.push([r as u32, encode(rule)]);
                    }
                    Ok(None) => break true,
                    Err(_) => break false,
                }
            };
            if !complete || fde_buf.is_empty() {
                // Not usable: framehop will say what it can for these addresses.
                continue;
            }
            let from = flat.len();
            flat.extend_from_slice(&fde_buf)?;
            fdes.push([rs as u32, re as u32, from as u32, flat.len() as u32])?;
        }
        fdes.sort_unstable_by_key(|f| f[0]);
        // Rows that end up at the same address (a zero-length row, an FDE starting where
        // the previous ends): the last one wins; equal neighbours merge.
        // Merged in `pending`, a small buffer whose rows move to `rows` a chunk at a time
        // (the last two stay: a merge looks two rows back).
        let mut rows: ScratchVec<u64> = ScratchVec::new();
        let mut pending: Vec<u64> = Vec::with_capacity(4096);
        let mut push = |a: u32, bits: u32| -> std::io::Result<()> {
            let row = (a as u64) << 32 | bits as u64;
            match pending.last_mut() {
                Some(last) if (*last >> 32) as u32 == a => {
                    *last = row;
                    let n = pending.len();
                    if n >= 2 && pending[n - 2] as u32 == bits {
                        pending.pop();
                    }
                }
                Some(last) if *last as u32 == bits => {}
                _ => pending.push(row),
            }
            if pending.len() == pending.capacity() {
                let done = pending.len() - 2;
                rows.extend_from_slice(&pending[..done])?;
                pending.drain(..done);
            }
            Ok(())
        };
        // Runs of frame-pointer functions, `[start, end)`.
        let mut fp: ScratchVec<[u32; 2]> = ScratchVec::new();
        let mut covered_to = 0u32;
        let all_rows: &[[u32; 2]] = &flat;
        for &[start, end, from, to] in fdes.iter() {
            if start < covered_to {
                // Overlapping FDEs: which one framehop picks depends on its index; leave
                // the overlap to framehop.
                push(start, DELEGATE)?;
                covered_to = covered_to.max(end);
                fp.push([start, start])?;
                continue;
            }
            let fde_rows = &all_rows[from as usize..to as usize];
            // A function with a frame pointer: rbp-based CFA in its body, only the shapes
            // of `push rbp` / `pop rbp` around it: CFA = rsp + 8 at entry and after
            // `pop rbp` (where compilers often leave rbp's rule at CFA - 16), where no
            // call can be (the stack would be misaligned for it); CFA = rsp + 16 after
            // `push rbp` only for the `mov rbp, rsp` that follows (3 bytes, then the
            // rbp-based rows). So every call in it returns into a `UseFp` row.
            let frame_pointer = fde_rows.iter().any(|[_, r]| decode(*r) == Rule::UseFp)
                && fde_rows
                    .iter()
                    .enumerate()
                    .all(|(k, [at, r])| match decode(*r) {
                        Rule::UseFp => true,
                        Rule::OffsetSp {
                            sp_offset: 8,
                            bp_from_sp: None | Some(-8),
                        } => true,
                        Rule::OffsetSp {
                            sp_offset: 16,
                            bp_from_sp: None | Some(0),
                        } => fde_rows.get(k + 1).is_some_and(|[next, rule]| {
                            decode(*rule) == Rule::UseFp && next - at <= 3
                        }),
                        _ => false,
                    });
            match fp.last_mut() {
                // Consecutive frame-pointer functions (and the padding between them)
                // make one range.
                Some(last) if frame_pointer && last[0] < last[1] => last[1] = end,
                _ if frame_pointer => fp.push([start, end])?,
                // An empty range marks where frame-pointer code stops.
                Some(last) if last[0] < last[1] => fp.push([start, start])?,
                _ => {}
            }
            for &[a, bits] in fde_rows {
                push(a, bits)?;
            }
            push(end, DELEGATE)?;
            covered_to = end;
        }
        rows.extend_from_slice(&pending)?;
        drop((pending, flat, fdes));
        // The runs themselves, without the empty markers.
        // (Slices taken once: every access through the mapping is a cast, which
        // unoptimized builds do not inline.)
        let mut runs = 0;
        let fp_all: &mut [[u32; 2]] = &mut fp;
        for k in 0..fp_all.len() {
            if fp_all[k][0] < fp_all[k][1] {
                fp_all[runs] = fp_all[k];
                runs += 1;
            }
        }
        fp.truncate(runs);
        let fp: &[[u32; 2]] = &fp;
        let rows: &[u64] = &rows;
        // At least one index entry per row (most buckets then start no row, and a lookup
        // is that one entry), at least 16 bytes of code per bucket.
        let mut shift = 4;
        while (len >> shift) > (rows.len() as u64).max(1) {
            shift += 1;
        }
        let buckets = (len >> shift) as usize + 2;
        // Sized for the rows too: they are appended below without a reallocation.
        let mut index = Vec::with_capacity(buckets + rows.len());
        let mut i = 0usize;
        let mut run = 0usize;
        for b in 0..buckets {
            let at = (b as u64) << shift;
            while i < rows.len() && (rows[i] >> 32) <= at {
                i += 1;
            }
            // Flag buckets that lie wholly in a run of frame-pointer functions.
            let end = at + (1 << shift);
            while run < fp.len() && (fp[run][1] as u64) < end {
                run += 1;
            }
            let in_run = run < fp.len() && fp[run][0] as u64 <= at && end <= fp[run][1] as u64;
            let carried = if i == 0 { DELEGATE } else { rows[i - 1] as u32 };
            index.push(
                (carried as u64) << 32 | i as u64 | if in_run { FP_BUCKET as u64 } else { 0 },
            );
        }
        let index_len = index.len();
        index.extend_from_slice(rows);
        // The two longest runs, longest first (the earlier of equal ones first).
        let mut long_runs = [(0u32, 0u32); 2];
        for &[start, end] in fp.iter() {
            let length = end - start;
            if length > long_runs[0].1 - long_runs[0].0 {
                long_runs = [(start, end), long_runs[0]];
            } else if length > long_runs[1].1 - long_runs[1].0 {
                long_runs[1] = (start, end);
            }
        }
        Ok(ModuleRows {
            words: index.into(),
            index_len,
            shift,
            fp_runs: fp.len(),
            long_runs,
        })
    }

    /// Runs of frame-pointer functions.
    #[cfg(test)]
    pub fn fp_runs(&self) -> usize {
        self.fp_runs
    }

    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.words.len() * 8
    }

    /// Every row.
    #[inline(always)]
    fn rows(&self) -> &[u64] {
        &self.words[self.index_len..]
    }

    /// The bucket index.
    #[inline(always)]
    fn index(&self) -> &[u64] {
        &self.words[..self.index_len]
    }

    /// The rule for mapping-relative address `rel`, the interrupted PC when
    /// `first_frame`, else a return address minus one. Pure computation on read-only
    /// memory: async-signal-safe.
    #[inline]
    fn rule_at(&self, rel: u64, first_frame: bool) -> Rule {
        let b = (rel >> self.shift) as usize;
        let index = self.index();
        if b + 1 >= index.len() {
            return Rule::Delegate;
        }
        let entry = index[b];
        let at = entry as u32;
        // A call in a frame-pointer function is always made from its body (after
        // `mov rbp, rsp`, before `pop rbp`), so a return address there unwinds by frame
        // pointer. Not the interrupted PC, which may be in a prologue or epilogue.
        if at & FP_BUCKET != 0 && !first_frame {
            return Rule::UseFp;
        }
        let lo = (at & !FP_BUCKET) as usize;
        let hi = (index[b + 1] as u32 & !FP_BUCKET) as usize;
        // Rows that start inside the bucket, at or below `rel`; none: the rule the bucket
        // starts with, from the entry itself.
        let rows = self.rows();
        let n = rows[lo..hi].partition_point(|&r| r >> 32 <= rel);
        if n == 0 {
            return decode((entry >> 32) as u32);
        }
        decode(rows[lo + n - 1] as u32)
    }
}

/// One executable mapping as the handler looks it up.
#[derive(Debug)]
struct TableModule {
    start: u64,
    end: u64,
    /// The module's two longest runs of frame-pointer functions, mapping-relative: in a
    /// binary built with frame pointers one run holds nearly all its code, so most
    /// return addresses are placed without touching the rows.
    long_runs: [(u32, u32); 2],
    rows: Arc<ModuleRows>,
}

/// The rows of every module, by actual address, as the handler reads them.
#[derive(Debug, Default)]
pub struct UnwindTable {
    /// Sorted by start.
    modules: Vec<TableModule>,
}

impl UnwindTable {
    /// Adds a mapping `[start, end)` and its rows. Aggregator thread.
    pub fn add(&mut self, range: Range<u64>, rows: Arc<ModuleRows>) {
        let at = self.modules.partition_point(|m| m.start < range.start);
        self.modules.insert(
            at,
            TableModule {
                start: range.start,
                end: range.end,
                long_runs: rows.long_runs,
                rows,
            },
        );
    }

    /// Runs of frame-pointer functions of each module.
    #[cfg(test)]
    pub fn fp_runs(&self) -> Vec<usize> {
        self.modules.iter().map(|m| m.rows.fp_runs()).collect()
    }

    /// The rule for the code at `addr`: the interrupted PC when `first_frame`, else a
    /// return address minus one. Binary searches on read-only memory, no allocation:
    /// async-signal-safe.
    /// `hint` is the module of the previous lookup (most frames are in the module of
    /// the one before).
    #[inline]
    pub fn rule_for(&self, addr: u64, first_frame: bool, hint: &mut usize) -> Rule {
        let i = match self.modules.get(*hint) {
            Some(m) if m.start <= addr && addr < m.end => *hint,
            _ => {
                let i = self.modules.partition_point(|m| m.start <= addr);
                if i == 0 || addr >= self.modules[i - 1].end {
                    return Rule::Delegate;
                }
                *hint = i - 1;
                i - 1
            }
        };
        let m = &self.modules[i];
        let rel = addr - m.start;
        // A return address in a run of frame-pointer functions (see `rule_at`).
        if !first_frame
            && m.long_runs
                .iter()
                .any(|r| r.0 as u64 <= rel && rel < r.1 as u64)
        {
            return Rule::UseFp;
        }
        m.rows.rule_at(rel, first_frame)
    }
}

/// The registers a walk tracks on x86_64.
#[derive(Debug, Clone, Copy)]
pub struct Regs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

/// Applies `rule` (not `Delegate`) to `regs`: framehop's `UnwindRuleX86_64::exec`, step for
/// step. `Ok(Some(return address))`, `Ok(None)` at the end of the stack, `Err` when the
/// walk cannot continue. Memory is read only through `read`; no allocation:
/// async-signal-safe.
#[inline]
pub fn exec(
    rule: Rule,
    first_frame: bool,
    regs: &mut Regs,
    read: &mut impl FnMut(u64) -> Result<u64, ()>,
) -> Result<Option<u64>, ()> {
    let sp = regs.sp;
    let (new_sp, new_bp) = match rule {
        Rule::Delegate => return Err(()),
        Rule::End => return Ok(None),
        Rule::OffsetSp {
            sp_offset,
            bp_from_sp,
        } => {
            let new_sp = sp.checked_add(sp_offset).ok_or(())?;
            let new_bp = match bp_from_sp {
                None => regs.bp,
                Some(off) => {
                    let at = sp.checked_add_signed(off).ok_or(())?;
                    match read(at) {
                        Ok(v) => v,
                        // framehop: in the first frame an epilogue may have popped rbp
                        // already; a slot below rsp that cannot be read keeps rbp.
                        Err(()) if first_frame && at < sp => regs.bp,
                        Err(()) => return Err(()),
                    }
                }
            };
            (new_sp, new_bp)
        }
        Rule::UseFp => {
            let bp = regs.bp;
            if bp == 0 {
                return Ok(None);
            }
            let new_sp = bp.checked_add(16).ok_or(())?;
            if new_sp <= sp {
                return Err(());
            }
            (new_sp, read(bp)?)
        }
    };
    let ra = read(new_sp.checked_sub(8).ok_or(())?)?;
    if ra == 0 {
        return Ok(None);
    }
    if new_sp == sp && ra == regs.ip {
        return Err(());
    }
    regs.ip = ra;
    regs.sp = new_sp;
    regs.bp = new_bp;
    Ok(Some(ra))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_survive_encoding() {
        for rule in [
            Rule::Delegate,
            Rule::End,
            Rule::UseFp,
            Rule::OffsetSp {
                sp_offset: 8,
                bp_from_sp: None,
            },
            Rule::OffsetSp {
                sp_offset: 0xffff * 8,
                bp_from_sp: Some(-4096 * 8),
            },
            Rule::OffsetSp {
                sp_offset: 56,
                bp_from_sp: Some(4095 * 8),
            },
            Rule::OffsetSp {
                sp_offset: 16,
                bp_from_sp: Some(0),
            },
        ] {
            assert_eq!(decode(encode(rule)), rule);
        }
    }

    #[test]
    fn framehops_translation_where_it_fits() {
        type R = RegisterRule<usize>;
        let rsp = |o| CfaRule::RegisterAndOffset {
            register: X86_64::RSP,
            offset: o,
        };
        let rbp = |o| CfaRule::RegisterAndOffset {
            register: X86_64::RBP,
            offset: o,
        };
        let ra = || Some(R::Offset(-8));
        assert_eq!(translate(&rsp(8), None, None), Rule::End);
        assert_eq!(translate(&rsp(8), None, Some(R::Undefined)), Rule::End);
        assert_eq!(
            translate(&rsp(8), None, Some(R::Offset(-16))),
            Rule::Delegate
        );
        assert_eq!(
            translate(&rsp(24), Some(R::SameValue), ra()),
            Rule::OffsetSp {
                sp_offset: 24,
                bp_from_sp: None
            }
        );
        assert_eq!(
            translate(&rsp(24), Some(R::Offset(-16)), ra()),
            Rule::OffsetSp {
                sp_offset: 24,
                bp_from_sp: Some(8)
            }
        );
        assert_eq!(translate(&rsp(12), None, ra()), Rule::Delegate);
        assert_eq!(translate(&rbp(16), Some(R::Offset(-16)), ra()), Rule::UseFp);
        assert_eq!(
            translate(&rbp(32), Some(R::Offset(-16)), ra()),
            Rule::Delegate
        );
        assert_eq!(translate(&rbp(16), None, ra()), Rule::Delegate);
        assert_eq!(
            translate(&rsp(16), Some(R::Register(X86_64::RBX)), ra()),
            Rule::Delegate
        );
    }

    #[test]
    fn exec_follows_framehop() {
        // The stack of framehop's own rule test (x86_64/unwind_rule.rs, test_basic).
        let stack = [
            1u64, 2, 0x100300, 4, 0x40, 0x100200, 5, 6, 0x70, 0x100100, 7, 8, 9, 10, 0x0, 0x0,
        ];
        let mut read = |addr: u64| stack.get((addr / 8) as usize).copied().ok_or(());
        let mut regs = Regs {
            ip: 0x100400,
            sp: 0x10,
            bp: 0x20,
        };
        let off = Rule::OffsetSp {
            sp_offset: 8,
            bp_from_sp: None,
        };
        assert_eq!(exec(off, true, &mut regs, &mut read), Ok(Some(0x100300)));
        assert_eq!((regs.ip, regs.sp, regs.bp), (0x100300, 0x18, 0x20));
        assert_eq!(
            exec(Rule::UseFp, false, &mut regs, &mut read),
            Ok(Some(0x100200))
        );
        assert_eq!((regs.ip, regs.sp, regs.bp), (0x100200, 0x30, 0x40));
        assert_eq!(
            exec(Rule::UseFp, false, &mut regs, &mut read),
            Ok(Some(0x100100))
        );
        assert_eq!((regs.ip, regs.sp, regs.bp), (0x100100, 0x50, 0x70));
        assert_eq!(exec(Rule::UseFp, false, &mut regs, &mut read), Ok(None));
        // Moving backwards is an error, as in framehop.
        let mut regs = Regs {
            ip: 1,
            sp: 0x40,
            bp: 0x20,
        };
        assert_eq!(exec(Rule::UseFp, false, &mut regs, &mut read), Err(()));
    }
}
