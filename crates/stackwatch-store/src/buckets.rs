//! Time buckets, label keys, and how a selector splits into target and sample
//! matchers, shared by both backends: the one home of each.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Display;
use std::hash::Hash;

use stackwatch_profile::SampleLabels;

use crate::{GroupedSeries, LabelKeys, Labels, Selector, StoreError, TargetSeries, OTHER_VALUE};

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

/// Every label name of `targets`: the names a matcher selects targets by.
pub(crate) fn target_names<'a>(targets: impl IntoIterator<Item = &'a Labels>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for t in targets {
        for k in t.keys() {
            if !names.contains(k) {
                names.insert(k.clone());
            }
        }
    }
    names
}

/// What a selector picks in one store (see [`select`]).
pub(crate) struct Selection<T, K> {
    /// The targets its target matchers select (none when no label set matches).
    pub(crate) targets: Vec<T>,
    /// True when that is every stored target (no target filter needed).
    pub(crate) all_targets: bool,
    /// The label sets its sample matchers select, by id (the empty set's id included
    /// when it matches); `None` when every set does (no filter: sums over labels).
    pub(crate) sets: Option<Vec<K>>,
    /// Every target label name stored.
    pub(crate) target_names: BTreeSet<String>,
}

/// Resolves `selector` in a store: matchers named like a label of some stored target
/// select among `targets` (each with its labels from `labels_of`); the others select
/// label sets, evaluated here over the stored sets (read by `sets` only when there are
/// such matchers), the empty set (`none`) included: a sample without a label has it
/// empty, so `{table!="orders"}` keeps unlabeled samples and `{table="orders"}` does not.
pub(crate) fn select<T, K: Copy>(
    selector: &Selector,
    targets: Vec<T>,
    labels_of: impl Fn(&T) -> &Labels,
    sets: impl FnOnce() -> Result<Vec<(K, SampleLabels)>, StoreError>,
    none: K,
) -> Result<Selection<T, K>, StoreError> {
    let target_names = target_names(targets.iter().map(&labels_of));
    // Names starting with `__` are reserved for target labels the collector sets (the
    // profile type); sample labels never carry them.
    let (by_target, by_sample) =
        selector.split(|n| n.starts_with("__") || target_names.contains(n));
    let n = targets.len();
    let mut chosen: Vec<T> = targets
        .into_iter()
        .filter(|t| by_target.matches(labels_of(t)))
        .collect();
    let all_targets = chosen.len() == n;
    let sets = if by_sample.is_empty() {
        None
    } else {
        let stored = sets()?;
        let mut keep = Vec::new();
        if by_sample.matches(&SampleLabels::new()) {
            keep.push(none);
        }
        for (id, labels) in &stored {
            if by_sample.matches(labels) {
                keep.push(*id);
            }
        }
        if keep.len() == stored.len() + 1 {
            None
        } else {
            Some(keep)
        }
    };
    if matches!(&sets, Some(k) if k.is_empty()) {
        chosen.clear();
    }
    Ok(Selection {
        targets: chosen,
        all_targets,
        sets,
        target_names,
    })
}

/// The SQL condition (` AND col IN (...)`, or nothing) that keeps the rows of the label
/// sets `sets` selects (ids are integers from the store: inlining them is safe).
pub(crate) fn sets_filter<K: Display>(col: &str, sets: &Option<Vec<K>>) -> String {
    match sets {
        None => String::new(),
        Some(ids) if ids.is_empty() => " AND 0".to_string(),
        Some(ids) => {
            let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
            format!(" AND {col} IN ({})", list.join(","))
        }
    }
}

/// The label names of a store: those of its targets, then those of its label sets that
/// are not also target label names.
pub(crate) fn label_keys_of<'a>(
    targets: impl IntoIterator<Item = &'a Labels>,
    sets: impl IntoIterator<Item = &'a SampleLabels>,
) -> LabelKeys {
    let target = target_names(targets);
    let mut sample = BTreeSet::new();
    for s in sets {
        for k in s.keys() {
            if !target.contains(k) && !sample.contains(k) {
                sample.insert(k.clone());
            }
        }
    }
    LabelKeys {
        target: target.into_iter().collect(),
        sample: sample.into_iter().collect(),
    }
}

/// The non-empty values of label `name`, sorted, at most `limit`: of the targets when
/// it is a target label name, else of the label sets (read by `sets` only then).
pub(crate) fn label_values_of(
    name: &str,
    limit: usize,
    targets: &[Labels],
    sets: impl FnOnce() -> Result<Vec<SampleLabels>, StoreError>,
) -> Result<Vec<String>, StoreError> {
    let mut values = BTreeSet::new();
    if targets.iter().any(|t| t.contains_key(name)) {
        for t in targets {
            if let Some(v) = t.get(name).filter(|v| !v.is_empty()) {
                values.insert(v.clone());
            }
        }
    } else {
        for s in sets()? {
            if let Some(v) = s.get(name).filter(|v| !v.is_empty()) {
                values.insert(v.clone());
            }
        }
    }
    Ok(values.into_iter().take(limit).collect())
}

/// The `limit` values with the highest totals (ties by value), highest first;
/// [`OTHER_VALUE`] is never one of them.
pub(crate) fn top_values(totals: &HashMap<String, u64>, limit: usize) -> Vec<String> {
    let mut v: Vec<(&String, u64)> = totals
        .iter()
        .filter(|(k, _)| k.as_str() != OTHER_VALUE)
        .map(|(k, c)| (k, *c))
        .collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    v.truncate(limit);
    v.into_iter().map(|(k, _)| k.clone()).collect()
}

/// The series of [`ProfileReader::grouped_series`](crate::ProfileReader::grouped_series)
/// from periods per value and bucket start: the `limit` values with the most periods,
/// highest first, then one [`OTHER_VALUE`] series for every other value (and what is
/// already under [`OTHER_VALUE`]) when there is any; each with every bucket of
/// `[from, to)` (`from` on a multiple of `step`).
pub(crate) fn grouped_of(
    mut per_value: HashMap<String, HashMap<i64, u64>>,
    from: i64,
    to: i64,
    step: i64,
    limit: usize,
) -> Vec<GroupedSeries> {
    let totals: HashMap<String, u64> = per_value
        .iter()
        .map(|(v, p)| {
            (
                v.clone(),
                p.values().fold(0u64, |a, c| a.saturating_add(*c)),
            )
        })
        .collect();
    let top = top_values(&totals, limit);
    let buckets = ((to - from + step - 1) / step).max(0) as usize;
    let points_of = |parts: &[HashMap<i64, u64>]| -> Vec<(i64, u64)> {
        let mut out: Vec<(i64, u64)> = (0..buckets).map(|i| (from + i as i64 * step, 0)).collect();
        for p in parts {
            for (ts, c) in p {
                if *ts < from {
                    continue;
                }
                if let Some(b) = out.get_mut(((ts - from) / step) as usize) {
                    b.1 = b.1.saturating_add(*c);
                }
            }
        }
        out
    };
    let mut out = Vec::with_capacity(top.len() + 1);
    for v in top {
        let p = per_value.remove(&v).unwrap_or_default();
        out.push(GroupedSeries {
            points: points_of(std::slice::from_ref(&p)),
            value: v,
        });
    }
    if !per_value.is_empty() {
        let rest: Vec<HashMap<i64, u64>> = per_value.into_values().collect();
        out.push(GroupedSeries {
            value: OTHER_VALUE.to_string(),
            points: points_of(&rest),
        });
    }
    out
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

    fn set(pairs: &[(&str, &str)]) -> SampleLabels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn target(pairs: &[(&str, &str)]) -> Labels {
        Labels::from(set(pairs))
    }

    #[test]
    fn sample_matchers_select_label_sets_and_the_empty_one() {
        let targets = vec![
            (1, target(&[("service", "api")])),
            (2, target(&[("service", "db")])),
        ];
        let sets = || {
            Ok(vec![
                (5, set(&[("table", "orders")])),
                (6, set(&[("table", "users"), ("op", "insert")])),
            ])
        };
        let pick = |sel: &str| {
            let s = select(
                &Selector::parse(sel).unwrap(),
                targets.clone(),
                |t| &t.1,
                sets,
                0,
            )
            .unwrap();
            (s.targets.iter().map(|t| t.0).collect::<Vec<_>>(), s.sets)
        };
        assert_eq!(pick("{}"), (vec![1, 2], None));
        assert_eq!(pick(r#"{service="api"}"#), (vec![1], None));
        assert_eq!(
            pick(r#"{service="api", table="orders"}"#),
            (vec![1], Some(vec![5]))
        );
        assert_eq!(pick(r#"{table!="orders"}"#), (vec![1, 2], Some(vec![0, 6])));
        assert_eq!(
            pick(r#"{table=~"o.*|u.*"}"#),
            (vec![1, 2], Some(vec![5, 6]))
        );
        assert_eq!(pick(r#"{op!="x"}"#), (vec![1, 2], None));
        assert_eq!(pick(r#"{table="nope"}"#), (vec![], Some(vec![])));
        assert_eq!(
            sets_filter("labels", &Some(vec![0u64, 6])),
            " AND labels IN (0,6)"
        );
        assert_eq!(sets_filter::<u64>("labels", &None), "");
    }

    #[test]
    fn a_tenant_restriction_selects_targets_even_where_no_target_has_the_label() {
        // No stored target has `tenant`, and a sample label set says tenant="a": a parsed
        // matcher `tenant="a"` selects those samples of every target; the restriction
        // selects no target.
        let untenanted = vec![(1, target(&[("service", "api")]))];
        let sets = || Ok(vec![(5, set(&[("tenant", "a")]))]);
        let restricted = |targets: Vec<(i32, Labels)>, tenants: &[&str]| {
            let mut sel = Selector::parse(r#"{service=~".+"}"#).unwrap();
            let tenants: Vec<String> = tenants.iter().map(|t| t.to_string()).collect();
            sel.matchers.push(crate::selector::Matcher::target_label_in(
                "tenant", &tenants,
            ));
            let s = select(&sel, targets, |t| &t.1, sets, 0).unwrap();
            (s.targets.iter().map(|t| t.0).collect::<Vec<_>>(), s.sets)
        };
        let parsed = select(
            &Selector::parse(r#"{tenant="a"}"#).unwrap(),
            untenanted.clone(),
            |t| &t.1,
            sets,
            0,
        )
        .unwrap();
        assert_eq!(
            parsed.sets,
            Some(vec![5]),
            "the leak the restriction closes"
        );
        assert_eq!(restricted(untenanted.clone(), &["a"]), (vec![], None));
        let mixed = vec![
            (1, target(&[("service", "api")])),
            (2, target(&[("service", "api"), ("tenant", "a")])),
            (3, target(&[("service", "api"), ("tenant", "b")])),
            (4, target(&[("service", "api"), ("tenant", "a|b")])),
        ];
        assert_eq!(restricted(mixed.clone(), &["a"]), (vec![2], None));
        assert_eq!(restricted(mixed.clone(), &["a", "b"]), (vec![2, 3], None));
        // Values are literals, not patterns; no tenant at all selects nothing.
        assert_eq!(restricted(mixed.clone(), &["a|b"]), (vec![4], None));
        assert_eq!(restricted(mixed.clone(), &[".*"]), (vec![], None));
        assert_eq!(restricted(mixed, &[]), (vec![], None));
    }

    #[test]
    fn grouped_series_keep_the_top_values_and_sum_the_rest() {
        let mut per: HashMap<String, HashMap<i64, u64>> = HashMap::new();
        per.insert("a".into(), [(0, 5), (20, 5)].into());
        per.insert("b".into(), [(10, 3)].into());
        per.insert("".into(), [(10, 4)].into());
        per.insert("c".into(), [(0, 1)].into());
        let g = grouped_of(per, 0, 30, 10, 2);
        let values: Vec<&str> = g.iter().map(|s| s.value.as_str()).collect();
        assert_eq!(values, ["a", "", OTHER_VALUE]);
        assert_eq!(g[0].points, vec![(0, 5), (10, 0), (20, 5)]);
        assert_eq!(g[2].points, vec![(0, 1), (10, 3), (20, 0)]);
        let keys = label_keys_of(
            [&target(&[("service", "a"), ("table", "t")])],
            [&set(&[("table", "x"), ("op", "i")])],
        );
        assert_eq!(keys.target, ["service", "table"]);
        assert_eq!(keys.sample, ["op"]);
    }

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
