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

/// A resolution of stored samples: the table that holds it in either store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    /// Windows as scraped.
    Raw,
    /// Minute rollups.
    Minute,
    /// Hour rollups.
    Hour,
}

impl Table {
    /// The table's name (the same in both stores).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Raw => "samples_raw",
            Table::Minute => "samples_1m",
            Table::Hour => "samples_1h",
        }
    }
}

/// Splits `[from, to)` into pieces, each read from the coarsest table that holds it
/// completely: whole hours before `hour_done` from the hour rollups, whole minutes
/// before `minute_done` from the minute rollups, the rest raw. `finest` is the bucket a
/// caller needs: a rollup is used only if its bucket divides it.
pub(crate) fn plan(
    from: i64,
    to: i64,
    finest: i64,
    minute_done: i64,
    hour_done: i64,
) -> Vec<(Table, i64, i64)> {
    let m_done = if finest % 60 == 0 {
        minute_done
    } else {
        i64::MIN
    };
    let h_done = if finest % 3600 == 0 {
        hour_done
    } else {
        i64::MIN
    };
    let mut out = Vec::new();
    let split = |a: i64, b: i64, out: &mut Vec<(Table, i64, i64)>| {
        if a >= b {
            return;
        }
        let ma = ceil_to(a, 60);
        let mb = floor_to(b.min(m_done), 60);
        if ma < mb {
            if a < ma {
                out.push((Table::Raw, a, ma));
            }
            out.push((Table::Minute, ma, mb));
            if mb < b {
                out.push((Table::Raw, mb, b));
            }
        } else {
            out.push((Table::Raw, a, b));
        }
    };
    let ha = ceil_to(from, 3600);
    let hb = floor_to(to.min(h_done), 3600);
    if ha < hb {
        split(from, ha, &mut out);
        out.push((Table::Hour, ha, hb));
        split(hb, to, &mut out);
    } else {
        split(from, to, &mut out);
    }
    out
}

/// An empty profile of `[from_s, to_s)`, refusing an empty range.
pub(crate) fn empty_profile(
    from_s: i64,
    to_s: i64,
) -> Result<stackwatch_profile::Profile, StoreError> {
    if to_s <= from_s {
        return Err(StoreError::Invalid(format!(
            "empty time range [{from_s}, {to_s})"
        )));
    }
    Ok(stackwatch_profile::Profile {
        start_unix_ns: (from_s.max(0) as u64) * 1_000_000_000,
        duration_ns: ((to_s - from_s) as u64) * 1_000_000_000,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_reads_hours_then_minutes_then_raw() {
        // Rolled up to 10:00 by hours and 10:30 by minutes; asked 08:20:30-10:45.
        let h = 3600;
        let p = plan(8 * h + 1230, 10 * h + 2700, 3600, 10 * h + 1800, 10 * h);
        assert_eq!(
            p,
            vec![
                (Table::Raw, 8 * h + 1230, 8 * h + 1260),
                (Table::Minute, 8 * h + 1260, 9 * h),
                (Table::Hour, 9 * h, 10 * h),
                (Table::Minute, 10 * h, 10 * h + 1800),
                (Table::Raw, 10 * h + 1800, 10 * h + 2700),
            ]
        );
        // A 60 s bucket cannot use the hour rollups, a 10 s one no rollup.
        assert_eq!(
            plan(8 * h, 10 * h, 60, 10 * h, 10 * h),
            vec![(Table::Minute, 8 * h, 10 * h)]
        );
        assert_eq!(plan(0, h, 10, h, h), vec![(Table::Raw, 0, h)]);
    }
}
