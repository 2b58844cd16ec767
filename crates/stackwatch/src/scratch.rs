//! Build-time buffers that live outside the C allocator.
//!
//! Why: glibc's malloc serves a request above its mmap threshold (128 KiB at start) with
//! its own mapping, and when such a chunk is freed it raises the threshold to that size
//! and the trim threshold to twice it, for the whole process. One transient buffer of a
//! megabyte, built and dropped while the profiler loads a module's unwind rows, would
//! then make every arena of the host service keep megabytes of free memory it used to
//! give back. The profiler's own transient buffers therefore come from anonymous
//! mappings of their own, which leave malloc's state as it was.
//!
//! Aggregator thread only (maps memory, may fail like any allocation; a failure is
//! an error the caller reports, never a panic).

use bytemuck::Pod;
use memmap2::MmapMut;

/// A growable vector of plain-old-data values in an anonymous mapping of its own: a
/// `Vec` that never touches malloc. Grows by doubling (a new mapping and one copy).
pub(crate) struct ScratchVec<T: Pod> {
    map: Option<MmapMut>,
    len: usize,
    _values: std::marker::PhantomData<T>,
}

impl<T: Pod> ScratchVec<T> {
    /// Empty; maps nothing until the first push.
    pub(crate) fn new() -> Self {
        ScratchVec {
            map: None,
            len: 0,
            _values: std::marker::PhantomData,
        }
    }

    /// Appends `value`, mapping a larger region when full.
    pub(crate) fn push(&mut self, value: T) -> std::io::Result<()> {
        self.extend_from_slice(std::slice::from_ref(&value))
    }

    /// Appends `values`, mapping a larger region when they do not fit. Hot loops
    /// should gather values in a small buffer and append them here in bulk: each call
    /// costs a cast of the mapping, which unoptimized builds do not inline.
    pub(crate) fn extend_from_slice(&mut self, values: &[T]) -> std::io::Result<()> {
        const { assert!(std::mem::size_of::<T>() > 0, "no zero-sized values") };
        let size = std::mem::size_of::<T>();
        let capacity = self.map.as_ref().map_or(0, |m| m.len() / size);
        let too_large = || std::io::Error::other("scratch buffer size overflows");
        let len = self.len.checked_add(values.len()).ok_or_else(too_large)?;
        if len > capacity {
            // A whole number of values, at least a page's worth; doubling keeps copies
            // linear in the total.
            let values_wanted = len.max(capacity.saturating_mul(2)).max(4096 / size);
            let bytes = values_wanted.checked_mul(size).ok_or_else(too_large)?;
            let mut bigger = MmapMut::map_anon(bytes)?;
            if let Some(old) = &self.map {
                bigger[..self.len * size].copy_from_slice(&old[..self.len * size]);
            }
            self.map = Some(bigger);
        }
        let from = self.len;
        self.len = len;
        self.as_mut_slice()[from..].copy_from_slice(values);
        Ok(())
    }

    /// Drops the values from `len` on (the mapping stays).
    pub(crate) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// The last value, mutably.
    pub(crate) fn last_mut(&mut self) -> Option<&mut T> {
        self.as_mut_slice().last_mut()
    }

    /// The values.
    pub(crate) fn as_slice(&self) -> &[T] {
        match &self.map {
            // An anonymous mapping is page-aligned, so any `T` with an alignment of at
            // most a page casts, and `len` values fit in it; bytemuck checks both.
            Some(m) => bytemuck::cast_slice(&m[..self.len * std::mem::size_of::<T>()]),
            None => &[],
        }
    }

    /// The values, mutably.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        match &mut self.map {
            Some(m) => bytemuck::cast_slice_mut(&mut m[..self.len * std::mem::size_of::<T>()]),
            None => &mut [],
        }
    }
}

impl<T: Pod> std::ops::Deref for ScratchVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Pod> std::ops::DerefMut for ScratchVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_whose_size_does_not_divide_a_page_fit() {
        let mut v: ScratchVec<[u32; 3]> = ScratchVec::new();
        for i in 0..2_000u32 {
            v.push([i, i + 1, i + 2]).unwrap();
        }
        assert_eq!(v.len(), 2_000);
        assert_eq!(v[1_999], [1_999, 2_000, 2_001]);
    }

    #[test]
    fn grows_across_pages_and_keeps_every_value() {
        let mut v: ScratchVec<[u32; 2]> = ScratchVec::new();
        assert!(v.is_empty());
        for i in 0..50_000u32 {
            v.push([i, i.wrapping_mul(7)]).unwrap();
        }
        let more: Vec<[u32; 2]> = (50_000..100_000u32)
            .map(|i| [i, i.wrapping_mul(7)])
            .collect();
        v.extend_from_slice(&more[..20_000]).unwrap();
        v.extend_from_slice(&more[20_000..]).unwrap();
        assert_eq!(v.len(), 100_000);
        assert!(v
            .iter()
            .enumerate()
            .all(|(i, p)| *p == [i as u32, (i as u32).wrapping_mul(7)]));
        v.sort_unstable_by_key(|p| std::cmp::Reverse(p[0]));
        assert_eq!(v[0], [99_999, 99_999u32.wrapping_mul(7)]);
        v.truncate(9);
        assert_eq!(v[8], [99_991, 99_991u32.wrapping_mul(7)]);
        *v.last_mut().unwrap() = [1, 2];
        assert_eq!(v.as_slice().len(), 9);
        assert_eq!(v[8], [1, 2]);
    }
}
