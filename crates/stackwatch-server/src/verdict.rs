//! "What changed, and is it real?": the functions whose share of CPU changed between two
//! selections by more than the selections' own variation explains.
//!
//! Method (docs/api.md, `/api/changes`). Each side is cut into time buckets (windows or
//! groups of windows); the buckets are the independent samples. For every function, its
//! share of a bucket is the periods of stacks that contain it (once per stack) over the
//! bucket's periods. The two sides' per-bucket shares are compared with Welch's t-test
//! (unequal variances, Welch–Satterthwaite degrees of freedom); the effect is the
//! difference of the mean shares with its 99% confidence interval. Over all functions
//! tested, the Benjamini–Hochberg procedure keeps the false discovery rate at `alpha`
//! (1%); what it does not keep is labelled noise. Thread roots and runtime plumbing are
//! not tested (their names differ between processes, and they are not code).

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use stackwatch_profile::views::is_plumbing;
use stackwatch_store::BucketedStacks;
use statrs::distribution::{ContinuousCDF, StudentsT};

/// The false discovery rate the verdict keeps.
pub const ALPHA: f64 = 0.01;
/// Functions below this share on both sides are not tested.
const MIN_SHARE: f64 = 0.002;

/// Buckets with samples each side needs before it is tested (a variance needs two).
pub const MIN_BUCKETS: usize = 2;
/// At most this many functions are tested (the largest by pooled share).
const MAX_TESTED: usize = 2000;

/// One function's change.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Change {
    /// Frame name.
    pub function: String,
    /// Mean share on the base side, 0..1.
    pub base_share: f64,
    /// Mean share on the target side, 0..1.
    pub target_share: f64,
    /// `target_share - base_share`.
    pub delta: f64,
    /// 99% confidence interval of `delta`.
    pub ci_low: f64,
    /// 99% confidence interval of `delta`.
    pub ci_high: f64,
    /// Two-sided p-value of Welch's t-test.
    pub p_value: f64,
    /// Kept by Benjamini–Hochberg at [`ALPHA`]; false means within the noise.
    pub significant: bool,
}

/// Per-bucket totals and per-function periods of one side.
struct Side {
    totals: Vec<f64>,
    functions: HashMap<String, Vec<f64>>,
}

fn side(b: &BucketedStacks) -> Side {
    let mut buckets: Vec<i64> = b.counts.iter().map(|(ts, _, _)| *ts).collect();
    buckets.dedup();
    let index: HashMap<i64, usize> = buckets.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let mut totals = vec![0.0; buckets.len()];
    let mut functions: HashMap<String, Vec<f64>> = HashMap::new();
    let roots: HashSet<&str> = b
        .stacks
        .iter()
        .filter_map(|s| s.split(';').next())
        .collect();
    let mut seen: HashSet<&str> = HashSet::new();
    for (ts, stack, count) in &b.counts {
        let i = index[ts];
        let c = *count as f64;
        totals[i] += c;
        seen.clear();
        for f in b.stacks[*stack as usize].split(';') {
            if roots.contains(f) || is_plumbing(f) || !seen.insert(f) {
                continue;
            }
            functions
                .entry(f.to_owned())
                .or_insert_with(|| vec![0.0; buckets.len()])[i] += c;
        }
    }
    Side { totals, functions }
}

/// Mean and sample variance of the shares of `periods` in `totals` (buckets with no
/// periods at all are skipped).
fn share_stats(periods: Option<&Vec<f64>>, totals: &[f64]) -> (f64, f64, usize) {
    let shares: Vec<f64> = totals
        .iter()
        .enumerate()
        .filter(|(_, t)| **t > 0.0)
        .map(|(i, t)| periods.map_or(0.0, |p| p[i]) / t)
        .collect();
    let n = shares.len();
    if n == 0 {
        return (0.0, 0.0, 0);
    }
    let mean = shares.iter().sum::<f64>() / n as f64;
    let var = if n > 1 {
        shares.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1) as f64
    } else {
        0.0
    };
    (mean, var, n)
}

/// The functions whose share changed from `base` to `target`, most significant first
/// (at most `limit`), and the number of buckets on each side.
pub fn changes(
    base: &BucketedStacks,
    target: &BucketedStacks,
    limit: usize,
) -> (Vec<Change>, usize, usize) {
    let (b, t) = (side(base), side(target));
    let nb = b.totals.iter().filter(|x| **x > 0.0).count();
    let nt = t.totals.iter().filter(|x| **x > 0.0).count();
    if nb < MIN_BUCKETS || nt < MIN_BUCKETS {
        return (Vec::new(), nb, nt);
    }
    let pooled = |s: &Side, f: &str| {
        let total: f64 = s.totals.iter().sum();
        s.functions
            .get(f)
            .map_or(0.0, |p| p.iter().sum::<f64>() / total.max(1.0))
    };
    let mut candidates: Vec<(&String, f64)> = b
        .functions
        .keys()
        .chain(t.functions.keys())
        .collect::<HashSet<_>>()
        .into_iter()
        .map(|f| (f, pooled(&b, f).max(pooled(&t, f))))
        .filter(|(_, share)| *share >= MIN_SHARE)
        .collect();
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    candidates.truncate(MAX_TESTED);
    let mut out: Vec<Change> = candidates
        .into_iter()
        .map(|(f, _)| {
            let (mb, vb, nb) = share_stats(b.functions.get(f), &b.totals);
            let (mt, vt, nt) = share_stats(t.functions.get(f), &t.totals);
            let delta = mt - mb;
            let (qb, qt) = (vb / nb as f64, vt / nt as f64);
            let se = (qb + qt).sqrt();
            let (p_value, half) = if se > 0.0 {
                // Welch–Satterthwaite degrees of freedom.
                let df = (qb + qt).powi(2)
                    / (qb.powi(2) / (nb as f64 - 1.0) + qt.powi(2) / (nt as f64 - 1.0));
                let dist = StudentsT::new(0.0, 1.0, df.max(1.0)).expect("positive df");
                let p = 2.0 * (1.0 - dist.cdf((delta / se).abs()));
                (p.clamp(0.0, 1.0), dist.inverse_cdf(0.995) * se)
            } else if delta == 0.0 {
                (1.0, 0.0)
            } else {
                (0.0, 0.0)
            };
            Change {
                function: f.clone(),
                base_share: mb,
                target_share: mt,
                delta,
                ci_low: delta - half,
                ci_high: delta + half,
                p_value,
                significant: false,
            }
        })
        .collect();
    // Benjamini–Hochberg: the largest k with p_(k) <= k / m * alpha, and all below it.
    out.sort_by(|a, b| {
        a.p_value
            .total_cmp(&b.p_value)
            .then(b.delta.abs().total_cmp(&a.delta.abs()))
            .then_with(|| a.function.cmp(&b.function))
    });
    let m = out.len() as f64;
    let keep = out
        .iter()
        .enumerate()
        .filter(|(i, c)| c.p_value <= (*i as f64 + 1.0) / m * ALPHA)
        .map(|(i, _)| i + 1)
        .max()
        .unwrap_or(0);
    for c in &mut out[..keep] {
        c.significant = true;
    }
    out.truncate(limit);
    (out, nb, nt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A deterministic pseudo-random stream (xorshift), so the test is reproducible.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// 30 buckets of ~1 000 periods; `shares[i]` of each bucket goes to function i
    /// (plus noise: each period is drawn independently, as sampling does).
    fn synthetic(shares: &[f64], seed: u64) -> BucketedStacks {
        let mut rng = Rng(seed);
        let mut stacks: Vec<Arc<str>> = (0..shares.len())
            .map(|i| Arc::from(format!("worker;run;f{i}")))
            .collect();
        stacks.push(Arc::from("worker;run;idle"));
        let mut counts = Vec::new();
        for bucket in 0..30i64 {
            let mut per = vec![0u64; stacks.len()];
            for _ in 0..1000 {
                let r = rng.next();
                let mut acc = 0.0;
                let mut slot = shares.len();
                for (i, s) in shares.iter().enumerate() {
                    acc += s;
                    if r < acc {
                        slot = i;
                        break;
                    }
                }
                per[slot] += 1;
            }
            for (i, c) in per.into_iter().enumerate() {
                if c > 0 {
                    counts.push((bucket * 10, i as u32, c));
                }
            }
        }
        BucketedStacks {
            step_s: 10,
            stacks,
            counts,
        }
    }

    const SHARES: [f64; 6] = [0.30, 0.20, 0.10, 0.05, 0.05, 0.02];

    /// With no change, any flag is a false discovery: Benjamini–Hochberg at 1% keeps the
    /// chance of one per comparison near 1%. Over 200 comparisons, at most a few.
    #[test]
    fn no_change_flags_nothing_at_one_percent() {
        let mut with_a_flag = 0;
        for seed in 1..=200u64 {
            let (changes, nb, nt) = changes(
                &synthetic(&SHARES, seed),
                &synthetic(&SHARES, seed + 1000),
                50,
            );
            assert_eq!((nb, nt), (30, 30));
            assert!(!changes.is_empty());
            with_a_flag += usize::from(changes.iter().any(|c| c.significant));
            assert!(
                changes.iter().all(|c| c.function != "worker"),
                "no thread root"
            );
        }
        assert!(
            with_a_flag <= 6,
            "{with_a_flag} of 200 no-change comparisons flagged"
        );
    }

    #[test]
    fn a_three_point_shift_is_flagged_with_its_size() {
        let mut shifted = SHARES;
        shifted[2] += 0.03; // f2: 10% -> 13%
        shifted[1] -= 0.03; // f1: 20% -> 17%
        let (changes, _, _) = changes(&synthetic(&SHARES, 7), &synthetic(&shifted, 8), 50);
        let f2 = changes.iter().find(|c| c.function == "f2").unwrap();
        assert!(f2.significant, "{f2:?}");
        assert!((f2.delta - 0.03).abs() < 0.01, "{f2:?}");
        assert!(f2.ci_low > 0.0 && f2.ci_high > f2.ci_low);
        let f1 = changes.iter().find(|c| c.function == "f1").unwrap();
        assert!(f1.significant && f1.delta < 0.0, "{f1:?}");
        assert!(changes.iter().filter(|c| c.significant).count() <= 3);
        // The surrounding frames are in every stack: never a change.
        assert!(changes
            .iter()
            .all(|c| c.function != "run" || !c.significant));
    }
}
