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
use crate::profile::prune_counts;

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
    /// Stack → periods, at most `max_stacks` of them.
    pub stacks: HashMap<String, u64>,
    /// Stacks that were deeper than `max_depth` and cut.
    pub truncated: u64,
    /// Distinct stacks folded into [`PRUNED_FRAME`](crate::PRUNED_FRAME).
    pub pruned: u64,
    /// Sum of all counts.
    pub samples: u64,
}

/// Accumulates stacks under a budget; [`StackAccumulator::finish`] prunes.
#[derive(Debug)]
pub struct StackAccumulator {
    budget: StackBudget,
    out: BoundedStacks,
    decoded_bytes: usize,
}

impl StackAccumulator {
    /// An empty accumulator.
    pub fn new(budget: StackBudget) -> Self {
        StackAccumulator {
            budget,
            out: BoundedStacks::default(),
            decoded_bytes: 0,
        }
    }

    /// Adds one stack given as root-first frames (each sanitized with
    /// [`sanitize_frame`]); stops at `max_depth` frames.
    pub fn add_frames<'a>(
        &mut self,
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
        self.insert(stack, count)
    }

    /// Adds one folded stack (`a;b;c`).
    pub fn add_folded(&mut self, stack: &str, count: u64) -> Result<(), BudgetError> {
        let clean = stack.split(';').count() <= self.budget.max_depth
            && stack
                .split(';')
                .all(|f| matches!(sanitize_frame(f), std::borrow::Cow::Borrowed(_)));
        if clean {
            self.charge(stack.len())?;
            self.insert(stack.to_owned(), count)
        } else {
            self.add_frames(stack.split(';'), count)
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

    /// The bounded stacks.
    pub fn finish(mut self) -> BoundedStacks {
        self.out.pruned += prune_counts(&mut self.out.stacks, self.budget.max_stacks) as u64;
        self.out
    }
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
