//! [`Profile`]: folded stacks with their sampling period and time span, and the
//! operations every consumer needs (merge, bound, totals, top functions).

use std::collections::{HashMap, HashSet};

use crate::folded::{self, FoldedError, PRUNED_FRAME};

/// A CPU profile: folded stack → number of sampling periods spent in it.
///
/// Counts are *periods*, not signals: a sample whose timer overran `k` times stands for
/// `1 + k` periods, so `count × period_ns` is CPU time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// Folded stack (`thread;outer;...;leaf`) → periods.
    pub stacks: HashMap<String, u64>,
    /// Length of one sampling period in nanoseconds (1e9 / Hz); 0 when unknown.
    pub period_ns: u64,
    /// Start of the covered span, Unix nanoseconds; 0 when unknown.
    pub start_unix_ns: u64,
    /// Length of the covered span in nanoseconds.
    pub duration_ns: u64,
}

/// Self and total periods of one function, as listed in a top-functions table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionStat {
    /// Frame name.
    pub name: String,
    /// Periods in which the function was the leaf.
    pub self_count: u64,
    /// Periods in which the function was anywhere on the stack (counted once per stack).
    pub total_count: u64,
}

impl Profile {
    /// An empty profile with the given sampling period.
    pub fn new(period_ns: u64) -> Self {
        Profile {
            period_ns,
            ..Default::default()
        }
    }

    /// Parses folded text (see [`folded::parse_folded`]).
    pub fn from_folded(text: &str, period_ns: u64) -> Result<Self, FoldedError> {
        Ok(Profile {
            stacks: folded::parse_folded(text)?,
            period_ns,
            ..Default::default()
        })
    }

    /// Folded text, one line per stack, sorted.
    pub fn to_folded(&self) -> String {
        folded::write_folded(&self.stacks)
    }

    /// Adds `count` periods to `stack`.
    pub fn add(&mut self, stack: &str, count: u64) {
        if count == 0 {
            return;
        }
        match self.stacks.get_mut(stack) {
            Some(c) => *c = c.saturating_add(count),
            None => {
                self.stacks.insert(stack.to_owned(), count);
            }
        }
    }

    /// Adds every stack of `other` and widens the time span to cover both.
    pub fn merge(&mut self, other: &Profile) {
        for (stack, count) in &other.stacks {
            self.add(stack, *count);
        }
        if self.period_ns == 0 {
            self.period_ns = other.period_ns;
        }
        if other.duration_ns > 0 || other.start_unix_ns > 0 {
            if self.duration_ns == 0 && self.start_unix_ns == 0 {
                self.start_unix_ns = other.start_unix_ns;
                self.duration_ns = other.duration_ns;
            } else {
                let start = self.start_unix_ns.min(other.start_unix_ns);
                let end = (self.start_unix_ns + self.duration_ns)
                    .max(other.start_unix_ns + other.duration_ns);
                self.start_unix_ns = start;
                self.duration_ns = end - start;
            }
        }
    }

    /// Sum of all counts.
    pub fn total(&self) -> u64 {
        self.stacks.values().fold(0u64, |a, c| a.saturating_add(*c))
    }

    /// Keeps at most `max_stacks` distinct stacks: the rarest are folded into one
    /// [`PRUNED_FRAME`] stack (which counts toward the limit), so the total is unchanged.
    /// Returns how many stacks were folded away.
    pub fn prune(&mut self, max_stacks: usize) -> usize {
        prune_counts(&mut self.stacks, max_stacks)
    }

    /// Functions by self and total periods, highest total first, at most `limit`.
    pub fn top_functions(&self, limit: usize) -> Vec<FunctionStat> {
        let mut stats: HashMap<&str, (u64, u64)> = HashMap::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for (stack, count) in &self.stacks {
            seen.clear();
            let mut frames = stack.split(';').peekable();
            while let Some(frame) = frames.next() {
                let e = stats.entry(frame).or_insert((0, 0));
                if seen.insert(frame) {
                    e.1 += count;
                }
                if frames.peek().is_none() {
                    e.0 += count;
                }
            }
        }
        let mut out: Vec<FunctionStat> = stats
            .into_iter()
            .map(|(name, (s, t))| FunctionStat {
                name: name.to_owned(),
                self_count: s,
                total_count: t,
            })
            .collect();
        out.sort_unstable_by(|a, b| {
            b.total_count
                .cmp(&a.total_count)
                .then(b.self_count.cmp(&a.self_count))
                .then_with(|| a.name.cmp(&b.name))
        });
        out.truncate(limit);
        out
    }
}

/// [`Profile::prune`] on any stack → count map whose keys convert from `&str`.
pub fn prune_counts<K>(stacks: &mut HashMap<K, u64>, max_stacks: usize) -> usize
where
    K: std::hash::Hash + Eq + AsRef<str> + for<'a> From<&'a str>,
{
    let max_stacks = max_stacks.max(1);
    if stacks.len() <= max_stacks {
        return 0;
    }
    let pruned_key = K::from(PRUNED_FRAME);
    let mut pruned_total = stacks.remove(&pruned_key).unwrap_or(0);
    // Keep the `max_stacks - 1` most frequent stacks; the pruned stack takes the last slot.
    let keep = max_stacks - 1;
    let mut counts: Vec<u64> = stacks.values().copied().collect();
    let before = stacks.len();
    let threshold = if keep == 0 {
        u64::MAX
    } else {
        let idx = counts.len() - keep;
        *counts.select_nth_unstable(idx).1
    };
    // Stacks strictly below the threshold go; ties at the threshold are kept in
    // iteration order until `keep` is reached.
    let mut kept_at_threshold = stacks.values().filter(|c| **c > threshold).count();
    stacks.retain(|_, c| {
        if *c > threshold {
            return true;
        }
        if *c == threshold && kept_at_threshold < keep {
            kept_at_threshold += 1;
            return true;
        }
        pruned_total = pruned_total.saturating_add(*c);
        false
    });
    let removed = before - stacks.len();
    if pruned_total > 0 {
        stacks.insert(pruned_key, pruned_total);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(lines: &str) -> Profile {
        Profile::from_folded(lines, 1_000_000).unwrap()
    }

    #[test]
    fn prune_keeps_totals_exact_and_bounds_distinct_stacks() {
        let mut p = Profile::new(1);
        for i in 0..1000u64 {
            p.add(&format!("t;f{i}"), i + 1);
        }
        let total = p.total();
        let removed = p.prune(100);
        assert_eq!(p.stacks.len(), 100);
        assert_eq!(p.total(), total);
        assert_eq!(removed, 901);
        // The most frequent stack survives, the rarest does not.
        assert!(p.stacks.contains_key("t;f999"));
        assert!(!p.stacks.contains_key("t;f0"));
        assert!(p.stacks[PRUNED_FRAME] > 0);
    }

    #[test]
    fn prune_with_ties_still_respects_the_bound() {
        let mut p = Profile::new(1);
        for i in 0..50 {
            p.add(&format!("t;f{i}"), 1);
        }
        p.prune(10);
        assert_eq!(p.stacks.len(), 10);
        assert_eq!(p.total(), 50);
        // Pruning again folds into the existing pruned stack.
        p.add("t;new", 1);
        p.prune(10);
        assert_eq!(p.stacks.len(), 10);
        assert_eq!(p.total(), 51);
    }

    #[test]
    fn top_functions_counts_recursion_once_in_total() {
        let p = profile("t;a;b;a 4\nt;a;c 1\n");
        let top = p.top_functions(10);
        let a = top.iter().find(|f| f.name == "a").unwrap();
        assert_eq!((a.self_count, a.total_count), (4, 5));
        let c = top.iter().find(|f| f.name == "c").unwrap();
        assert_eq!((c.self_count, c.total_count), (1, 1));
        assert_eq!(top[0].name, "a");
    }

    #[test]
    fn merge_widens_span_and_sums() {
        let mut a = profile("t;x 1\n");
        a.start_unix_ns = 100;
        a.duration_ns = 10;
        let mut b = profile("t;x 2\nt;y 3\n");
        b.start_unix_ns = 105;
        b.duration_ns = 20;
        a.merge(&b);
        assert_eq!(a.stacks["t;x"], 3);
        assert_eq!(a.total(), 6);
        assert_eq!((a.start_unix_ns, a.duration_ns), (100, 25));
    }
}
