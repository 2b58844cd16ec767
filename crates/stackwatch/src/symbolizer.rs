//! Address → function names, on the aggregator thread, cached.
//!
//! Uses DWARF when the module has it (so inlined functions appear as their own frames)
//! and the ELF symbol table otherwise (what an ordinary `cargo build --release` binary
//! has). Rust and C++ names are demangled, Rust hashes dropped.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use stackwatch_profile::folded::sanitize_frame;

use crate::modules::LoadedModule;

/// Frames for one address, outermost first (an inlined chain has several).
pub type Frames = Arc<[Arc<str>]>;

/// Entries kept in the address cache before it is cleared (bounds memory).
const CACHE_LIMIT: usize = 200_000;

/// Resolves addresses against the current module list.
#[derive(Default)]
pub struct Symbolizer {
    modules: Vec<LoadedModule>,
    /// Modules that were unloaded at the last refresh: samples taken before the
    /// `dlclose` may still be in flight.
    retired: Vec<LoadedModule>,
    loaders: HashMap<(PathBuf, u64), Option<Rc<addr2line::Loader>>>,
    cache: HashMap<u64, Frames>,
    unknown: Option<Frames>,
}

impl Symbolizer {
    /// Replaces the module list (after `/proc/self/maps` changed).
    pub fn set_modules(&mut self, modules: &[LoadedModule]) {
        let old = std::mem::replace(&mut self.modules, modules.to_vec());
        self.retired = old
            .into_iter()
            .filter(|m| !self.modules.contains(m))
            .collect();
        let live: std::collections::HashSet<(PathBuf, u64)> = self
            .modules
            .iter()
            .chain(&self.retired)
            .map(|m| (m.path.clone(), m.inode))
            .collect();
        self.loaders.retain(|k, _| live.contains(k));
        self.cache.clear();
    }

    /// Approximate bytes held by the cache.
    pub fn memory_bytes(&self) -> usize {
        self.cache.len() * 64
    }

    /// The frames of `addr`, outermost first.
    pub fn frames(&mut self, addr: u64) -> Frames {
        if let Some(f) = self.cache.get(&addr) {
            return f.clone();
        }
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        let frames = self.resolve(addr);
        self.cache.insert(addr, frames.clone());
        frames
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
        let loader = self
            .loaders
            .entry((module.path.clone(), module.inode))
            .or_insert_with(|| {
                // Only the file this process mapped: a replaced binary would give
                // confidently wrong names, so then only the module name is shown.
                let Some(path) = module.open_path() else {
                    tracing::debug!(path = %module.path.display(), "replaced on disk: no symbols");
                    return None;
                };
                match addr2line::Loader::new(&path) {
                    Ok(l) => Some(Rc::new(l)),
                    Err(e) => {
                        tracing::debug!(path = %module.path.display(), error = %e, "no symbols");
                        None
                    }
                }
            })
            .clone();
        let mut names: Vec<Arc<str>> = Vec::new();
        if let Some(loader) = loader {
            if let Ok(mut it) = loader.find_frames(probe) {
                while let Ok(Some(frame)) = it.next() {
                    if let Some(f) = frame.function.as_ref() {
                        if let Ok(name) = f.demangle() {
                            names.push(clean(&name));
                        }
                    }
                }
            }
            if names.is_empty() {
                if let Some(sym) = loader.find_symbol(probe) {
                    names.push(clean(&addr2line::demangle_auto(Cow::Borrowed(sym), None)));
                }
            }
        }
        if names.is_empty() {
            let short = module.short_name();
            names.push(if short.starts_with('[') {
                Arc::from(short)
            } else {
                Arc::from(format!("[{short}]"))
            });
        }
        // addr2line yields the innermost inlined function first.
        names.reverse();
        Arc::from(names)
    }
}

fn find(modules: &[LoadedModule], addr: u64) -> Option<&LoadedModule> {
    let i = modules.partition_point(|m| m.avma.start <= addr);
    let m = modules.get(i.checked_sub(1)?)?;
    m.avma.contains(&addr).then_some(m)
}

fn clean(name: &str) -> Arc<str> {
    Arc::from(sanitize_frame(name).as_ref())
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
}
