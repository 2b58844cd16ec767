//! Time buckets and label keys, shared by both backends: the one home of each.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use crate::{Labels, StoreError, TargetSeries};

/// `t` rounded down to a multiple of `step`.
pub(crate) fn floor_to(t: i64, step: i64) -> i64 {
    t.div_euclid(step).saturating_mul(step)
}

/// `t` rounded up to a multiple of `step`.
pub(crate) fn ceil_to(t: i64, step: i64) -> i64 {
    floor_to(t.saturating_add(step - 1), step)
}

/// Checks a bucketed range (non-empty, positive step, at most `max` buckets) and
/// returns `from_s` floored to the step.
pub(crate) fn check_buckets(
    from_s: i64,
    to_s: i64,
    step_s: i64,
    max: i64,
) -> Result<i64, StoreError> {
    if to_s <= from_s || step_s <= 0 {
        return Err(StoreError::Invalid(
            "empty range or non-positive step".into(),
        ));
    }
    let from = floor_to(from_s, step_s);
    let buckets = (to_s - from + step_s - 1) / step_s;
    if buckets > max {
        return Err(StoreError::Invalid(format!(
            "{buckets} buckets: use a larger step"
        )));
    }
    Ok(from)
}

/// Canonical text of a label set (`k="v",...`): a target's identity in every store.
pub(crate) fn labels_key(labels: &Labels) -> String {
    let mut k = String::new();
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            k.push(',');
        }
        k.push_str(name);
        k.push('=');
        k.push_str(&format!("{value:?}"));
    }
    k
}

/// One [`TargetSeries`] per target (in `targets`' order), its points from `per_target`
/// (bucket start -> periods) by the target's id in the store.
pub(crate) fn target_series_of<K: Hash + Eq>(
    targets: Vec<(K, Labels, u64)>,
    mut per_target: HashMap<K, BTreeMap<i64, u64>>,
) -> Vec<TargetSeries> {
    targets
        .into_iter()
        .map(|(id, labels, period_ns)| TargetSeries {
            labels,
            period_ns,
            points: per_target
                .remove(&id)
                .map(|m| m.into_iter().collect())
                .unwrap_or_default(),
        })
        .collect()
}
