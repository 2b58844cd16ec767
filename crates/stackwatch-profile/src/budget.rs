//! [`StackBudget`]: what one batch of stacks from outside (a scrape, a pprof body, a
//! window) may cost once decoded, and [`bound_stacks`], which enforces it.
//!
//! A body's size says little about what it expands into: a 4 KB gzipped pprof can name
//! one 1 KB function four million times. So the budget is on the decoded result: frames
//! per stack (deeper stacks keep their root side and end in [`TRUNCATED_FRAME`]), bytes
//! of stack text (an error past it), distinct stacks (the rarest fold into
//! [`PRUNED_FRAME`](crate::PRUNED_FRAME), totals exact) and periods (an error past it, so no count from
//! outside can overflow a sum downstream).

use std::collections::HashMap;

use thiserror::Error;

use crate::folded::sanitize_frame;
use crate::labels::{clean_labels, fold_label_sets, labels_within, LabelBudget, SampleLabels};
use crate::profile::prune_counts;

/// Marks a labeled stack's key inside the accumulator: `\x01<set index>\x01<stack>`.
/// Sanitized frames never contain control characters, so no real stack starts with it.
const LABELED_MARK: char = '\u{1}';

/// The frame that ends a stack cut at [`StackBudget::max_depth`].
pub const TRUNCATED_FRAME: &str = "[truncated]";

/// Limits on one batch of decoded stacks. Every field has a default and a config key in
/// the collector (`[scrape]`, docs/operations.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackBudget {
    /// Frames kept per stack; deeper stacks keep their root-most frames and end in
    /// [`TRUNCATED_FRAME`] (default 512).
    pub max_depth: usize,
    /// Distinct stacks kept; the rarest fold into [`PRUNED_FRAME`](crate::PRUNED_FRAME) (default 50 000).
    pub max_stacks: usize,
    /// Bytes of stack text a batch may expand into, counting every sample's stack
    /// (default 64 MiB). Past it the batch is refused.
    pub max_decoded_bytes: usize,
    /// Periods one batch may carry in total (default 2^32). Past it the batch is
    /// refused: with this bound, sums over a store's retention cannot overflow i64.
    pub max_samples: u64,
}

impl Default for StackBudget {
    fn default() -> Self {
        StackBudget {
            max_depth: 512,
            max_stacks: 50_000,
            max_decoded_bytes: 64 << 20,
            max_samples: 1 << 32,
        }
    }
}

/// A batch that exceeded a [`StackBudget`] that refuses (rather than folds) the excess.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BudgetError {
    /// The stacks expand into more text than `max_decoded_bytes`.
    #[error("stacks expand to more than {limit} bytes (budget max_decoded_bytes)")]
    DecodedBytes {
        /// The limit.
        limit: usize,
    },
    /// The counts add up to more than `max_samples` periods.
    #[error("counts add up to more than {limit} periods (budget max_samples)")]
    Samples {
        /// The limit.
        limit: u64,
    },
}

/// Stacks after [`bound_stacks`], with what was cut to fit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundedStacks {
    /// Stack → periods of the samples without labels; at most `max_stacks` stacks
    /// together with those in `labeled`.
    pub stacks: HashMap<String, u64>,
    /// Stack → periods per label set (non-empty sets, at most the label budget's
    /// `max_sets_per_window` of them, sorted by set).
    pub labeled: Vec<(SampleLabels, HashMap<String, u64>)>,
    /// Label sets folded into the [`LABELS_PRUNED`](crate::LABELS_PRUNED) set.
    pub label_sets_folded: u64,
    /// Stacks that were deeper than `max_depth` and cut.
    pub truncated: u64,
    /// Distinct stacks folded into [`PRUNED_FRAME`](crate::PRUNED_FRAME).
    pub pruned: u64,
    /// Sum of all counts.
    pub samples: u64,
}

impl BoundedStacks {
    /// Every stack summed over label sets (what a client that knows nothing of labels
    /// sees).
    pub fn summed(&self) -> HashMap<String, u64> {
        let mut out = self.stacks.clone();
        for (_, stacks) in &self.labeled {
            for (s, c) in stacks {
                let slot = out.entry(s.clone()).or_insert(0);
                *slot = slot.saturating_add(*c);
            }
        }
        out
    }

    /// Distinct (label set, stack) rows.
    pub fn rows(&self) -> usize {
        self.stacks.len() + self.labeled.iter().map(|(_, s)| s.len()).sum::<usize>()
    }
}

/// Index of a label set interned by [`StackAccumulator::intern_labels`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LabelSetIndex(u32);

/// Accumulates stacks under a budget; [`StackAccumulator::finish`] prunes.
#[derive(Debug)]
pub struct StackAccumulator {
    budget: StackBudget,
    labels: LabelBudget,
    out: BoundedStacks,
    decoded_bytes: usize,
    sets: Vec<SampleLabels>,
    set_index: HashMap<SampleLabels, u32>,
}

impl StackAccumulator {
    /// An empty accumulator (label sets bounded by the default [`LabelBudget`]).
    pub fn new(budget: StackBudget) -> Self {
        Self::with_labels(budget, LabelBudget::default())
    }

    /// An empty accumulator with a label budget.
    pub fn with_labels(budget: StackBudget, labels: LabelBudget) -> Self {
        StackAccumulator {
            budget,
            labels,
            out: BoundedStacks::default(),
            decoded_bytes: 0,
            sets: Vec::new(),
            set_index: HashMap::new(),
        }
    }

    /// Interns a label set (cleaned by the label budget); `None` for the empty set. The
    /// text of every distinct set counts toward `max_decoded_bytes`.
    pub fn intern_labels(
        &mut self,
        labels: &SampleLabels,
    ) -> Result<Option<LabelSetIndex>, BudgetError> {
        if labels.is_empty() {
            return Ok(None);
        }
        if let Some(i) = self.set_index.get(labels) {
            return Ok(Some(LabelSetIndex(*i)));
        }
        let clean = if labels_within(labels, &self.labels) {
            labels.clone()
        } else {
            clean_labels(labels, &self.labels)
        };
        if clean.is_empty() {
            return Ok(None);
        }
        let bytes: usize = clean.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        self.charge(bytes)?;
        let i = u32::try_from(self.sets.len()).map_err(|_| BudgetError::DecodedBytes {
            limit: self.budget.max_decoded_bytes,
        })?;
        self.sets.push(clean);
        self.set_index.insert(labels.clone(), i);
        Ok(Some(LabelSetIndex(i)))
    }

    /// Adds one stack given as root-first frames (each sanitized with
    /// [`sanitize_frame`]); stops at `max_depth` frames.
    pub fn add_frames<'a>(
        &mut self,
        frames: impl IntoIterator<Item = &'a str>,
        count: u64,
    ) -> Result<(), BudgetError> {
        self.add_frames_in(None, frames, count)
    }

    /// [`add_frames`](Self::add_frames) for a sample taken under label set `set`.
    pub fn add_frames_in<'a>(
        &mut self,
        set: Option<LabelSetIndex>,
        frames: impl IntoIterator<Item = &'a str>,
        count: u64,
    ) -> Result<(), BudgetError> {
        let mut stack = String::new();
        let mut truncated = false;
        for (depth, frame) in frames.into_iter().enumerate() {
            if depth == self.budget.max_depth {
                truncated = true;
                break;
            }
            if depth > 0 {
                stack.push(';');
            }
            stack.push_str(&sanitize_frame(frame));
            // Checked per frame, so a hostile stack stops growing at the limit.
            if self.decoded_bytes + stack.len() > self.budget.max_decoded_bytes {
                return Err(BudgetError::DecodedBytes {
                    limit: self.budget.max_decoded_bytes,
                });
            }
        }
        if truncated {
            stack.push(';');
            stack.push_str(TRUNCATED_FRAME);
        }
        if stack.is_empty() {
            stack.push_str("[unknown]");
        }
        self.charge(stack.len())?;
        self.out.truncated += u64::from(truncated);
        self.insert(key_in(set, stack), count)
    }

    /// Adds one folded stack (`a;b;c`).
    pub fn add_folded(&mut self, stack: &str, count: u64) -> Result<(), BudgetError> {
        self.add_folded_in(None, stack, count)
    }

    /// [`add_folded`](Self::add_folded) for a sample taken under label set `set`.
    pub fn add_folded_in(
        &mut self,
        set: Option<LabelSetIndex>,
        stack: &str,
        count: u64,
    ) -> Result<(), BudgetError> {
        let clean = stack.split(';').count() <= self.budget.max_depth
            && stack
                .split(';')
                .all(|f| matches!(sanitize_frame(f), std::borrow::Cow::Borrowed(_)));
        if clean {
            self.charge(stack.len())?;
            self.insert(key_in(set, stack.to_owned()), count)
        } else {
            self.add_frames_in(set, stack.split(';'), count)
        }
    }

    fn charge(&mut self, bytes: usize) -> Result<(), BudgetError> {
        self.decoded_bytes = self.decoded_bytes.saturating_add(bytes);
        if self.decoded_bytes > self.budget.max_decoded_bytes {
            return Err(BudgetError::DecodedBytes {
                limit: self.budget.max_decoded_bytes,
            });
        }
        Ok(())
    }

    fn insert(&mut self, stack: String, count: u64) -> Result<(), BudgetError> {
        if count == 0 {
            return Ok(());
        }
        self.out.samples = self
            .out
            .samples
            .checked_add(count)
            .filter(|s| *s <= self.budget.max_samples)
            .ok_or(BudgetError::Samples {
                limit: self.budget.max_samples,
            })?;
        let slot = self.out.stacks.entry(stack).or_insert(0);
        *slot += count; // cannot overflow: bounded by `samples`
                        // Prune as we go once well past the bound, so memory stays near it.
        if self.out.stacks.len() >= self.budget.max_stacks.saturating_mul(2).max(1024) {
            self.out.pruned += prune_counts(&mut self.out.stacks, self.budget.max_stacks) as u64;
        }
        Ok(())
    }

    /// The bounded stacks: the rarest pruned (a pruned labeled stack counts in the
    /// unlabeled [`PRUNED_FRAME`](crate::PRUNED_FRAME)), labeled ones split by set, the
    /// lightest sets past the label budget folded together.
    pub fn finish(mut self) -> BoundedStacks {
        self.out.pruned += prune_counts(&mut self.out.stacks, self.budget.max_stacks) as u64;
        if self.sets.is_empty() {
            return self.out;
        }
        let mut groups: Vec<HashMap<String, u64>> = vec![HashMap::new(); self.sets.len()];
        let keys: Vec<String> = self
            .out
            .stacks
            .keys()
            .filter(|k| k.starts_with(LABELED_MARK))
            .cloned()
            .collect();
        for key in keys {
            let count = self.out.stacks.remove(&key).unwrap_or(0);
            let mut parts = key[1..].splitn(2, LABELED_MARK);
            let (Some(i), Some(stack)) = (parts.next(), parts.next()) else {
                continue;
            };
            if let Some(g) = i.parse::<usize>().ok().and_then(|i| groups.get_mut(i)) {
                g.insert(stack.to_owned(), count);
            }
        }
        let sets: Vec<(SampleLabels, HashMap<String, u64>)> = self
            .sets
            .into_iter()
            .zip(groups)
            .filter(|(_, g)| !g.is_empty())
            .collect();
        let (kept, folded) = fold_label_sets(
            sets,
            self.labels.max_sets_per_window,
            |g| g.values().fold(0u64, |a, c| a.saturating_add(*c)),
            |into, from| {
                for (s, c) in from {
                    let slot = into.entry(s).or_insert(0);
                    *slot = slot.saturating_add(c);
                }
            },
        );
        self.out.labeled = kept;
        self.out.label_sets_folded = folded as u64;
        self.out
    }
}

/// The accumulator's key for `stack` under `set`.
fn key_in(set: Option<LabelSetIndex>, stack: String) -> String {
    match set {
        None => stack,
        Some(LabelSetIndex(i)) => format!("{LABELED_MARK}{i}{LABELED_MARK}{stack}"),
    }
}

/// [`bound_stacks`] for a window with labeled samples: `stacks` are the samples without
/// labels, `labeled` the stacks of each label set. The stack budget applies to all of
/// them together (a pruned labeled stack goes to the unlabeled `[pruned]`), the label
/// budget to the sets.
pub fn bound_labeled_stacks<S: AsRef<str>>(
    stacks: impl IntoIterator<Item = (S, u64)>,
    labeled: impl IntoIterator<Item = (SampleLabels, Vec<(S, u64)>)>,
    budget: &StackBudget,
    labels: &LabelBudget,
) -> Result<BoundedStacks, BudgetError> {
    let mut acc = StackAccumulator::with_labels(*budget, *labels);
    for (stack, count) in stacks {
        acc.add_folded(stack.as_ref(), count)?;
    }
    for (set, stacks) in labeled {
        let set = acc.intern_labels(&set)?;
        for (stack, count) in stacks {
            acc.add_folded_in(set, stack.as_ref(), count)?;
        }
    }
    Ok(acc.finish())
}

/// Applies `budget` to folded stacks from outside: frames sanitized (separators and
/// control characters replaced, names cut at [`crate::folded::MAX_FRAME_LEN`]), deep
/// stacks truncated, the rarest stacks pruned; too much text or too many periods is an
/// error.
pub fn bound_stacks<S: AsRef<str>>(
    stacks: impl IntoIterator<Item = (S, u64)>,
    budget: &StackBudget,
) -> Result<BoundedStacks, BudgetError> {
    let mut acc = StackAccumulator::new(*budget);
    for (stack, count) in stacks {
        acc.add_folded(stack.as_ref(), count)?;
    }
    Ok(acc.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PRUNED_FRAME;

    fn budget() -> StackBudget {
        StackBudget {
            max_depth: 4,
            max_stacks: 3,
            max_decoded_bytes: 1000,
            max_samples: 100,
        }
    }

    #[test]
    fn deep_stacks_keep_their_root_and_are_counted() {
        let b = bound_stacks([("a;b;c;d;e;f", 2u64), ("a;b", 1)], &budget()).unwrap();
        assert_eq!(b.stacks["a;b;c;d;[truncated]"], 2);
        assert_eq!(b.stacks["a;b"], 1);
        assert_eq!((b.truncated, b.samples), (1, 3));
    }

    #[test]
    fn long_and_odd_frame_names_are_cut_and_cleaned() {
        let long = format!("main;{}", "x".repeat(5000));
        let b = bound_stacks([(long.as_str(), 1u64), ("main;a\nb", 1)], &budget());
        let b = b.unwrap_err();
        assert_eq!(b, BudgetError::DecodedBytes { limit: 1000 });
        let mut roomy = budget();
        roomy.max_decoded_bytes = 1 << 20;
        let b = bound_stacks([(long.as_str(), 1u64), ("main;a\nb", 1)], &roomy).unwrap();
        assert!(
            b.stacks.keys().all(|s| s.len() <= 1100),
            "{:?}",
            b.stacks.keys()
        );
        assert_eq!(b.stacks["main;a_b"], 1);
    }

    #[test]
    fn labeled_stacks_are_bounded_together_and_split_by_set() {
        let set = |v: &str| -> SampleLabels { [("table".to_string(), v.to_string())].into() };
        let mut roomy = budget();
        roomy.max_stacks = 10;
        let lb = LabelBudget {
            max_sets_per_window: 2,
            ..LabelBudget::default()
        };
        let b = bound_labeled_stacks(
            [("main;a", 5u64)],
            [
                (set("orders"), vec![("main;a", 7u64), ("main;b", 1)]),
                (set("users"), vec![("main;a", 3)]),
                (set("items"), vec![("main;c", 2)]),
                (set("orders"), vec![("main;b", 1)]),
                (SampleLabels::new(), vec![("main;a", 1)]),
            ],
            &roomy,
            &lb,
        )
        .unwrap();
        assert_eq!(b.stacks["main;a"], 6);
        assert_eq!(b.labeled.len(), 2, "{:?}", b.labeled);
        assert_eq!(b.label_sets_folded, 2);
        let orders = &b
            .labeled
            .iter()
            .find(|(l, _)| l == &set("orders"))
            .unwrap()
            .1;
        assert_eq!((orders["main;a"], orders["main;b"]), (7, 2));
        let pruned = &b
            .labeled
            .iter()
            .find(|(l, _)| l == &set(crate::LABELS_PRUNED))
            .unwrap()
            .1;
        assert_eq!((pruned["main;a"], pruned["main;c"]), (3, 2));
        assert_eq!(b.summed().values().sum::<u64>(), b.samples);
        assert_eq!(b.samples, 20);
        assert_eq!(b.rows(), 5);
    }

    #[test]
    fn too_many_stacks_fold_exactly_and_huge_counts_are_refused() {
        let b = bound_stacks(
            [("a", 5u64), ("b", 4), ("c", 3), ("d", 2), ("e", 1)],
            &budget(),
        )
        .unwrap();
        assert_eq!(b.stacks.len(), 3);
        assert_eq!(b.stacks.values().sum::<u64>(), 15);
        assert_eq!(b.stacks[PRUNED_FRAME], 6);
        let e = bound_stacks([("a", u64::MAX), ("a", u64::MAX)], &budget()).unwrap_err();
        assert_eq!(e, BudgetError::Samples { limit: 100 });
        let e = bound_stacks([("a", 60u64), ("b", 41)], &budget()).unwrap_err();
        assert_eq!(e, BudgetError::Samples { limit: 100 });
    }
}
