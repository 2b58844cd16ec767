//! Sample labels: the `key=value` pairs a service attaches to the work it does
//! (`table=orders`, `tenant=acme`), carried with every sample taken while they are set.
//!
//! This module owns what a label set may look like once it leaves the process that set
//! it: [`LabelBudget`] (lengths, pairs per set, sets per window), [`clean_labels`] (cut
//! and sanitise), [`fold_label_sets`] (the heaviest sets kept, the rest merged into one
//! [`LABELS_PRUNED`] set with exact counts) and [`format_labels`] (the canonical text, also
//! the identity stores key on). The sampler, the collector and the stores all use them,
//! so a set is the same set everywhere.

use std::collections::BTreeMap;

/// One sample's labels, sorted by key. The empty set means "no labels".
pub type SampleLabels = BTreeMap<String, String>;

/// The value every key of the label sets folded away by [`fold_label_sets`] takes: a
/// `group_by` over that key shows the folded share under this name.
pub const LABELS_PRUNED: &str = "[labels pruned]";

/// What one label set, and one window's worth of them, may cost. The sampler's builder
/// and the collector's `[scrape]` section both expose these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelBudget {
    /// Distinct label sets kept per window; the lightest past it fold into one
    /// [`LABELS_PRUNED`] set (default 256).
    pub max_sets_per_window: usize,
    /// Pairs kept per set, first by key order (default 16).
    pub max_pairs: usize,
    /// Bytes of a key; longer keys are cut at a character boundary (default 64).
    pub max_key_bytes: usize,
    /// Bytes of a value; longer values are cut (default 256).
    pub max_value_bytes: usize,
}

impl Default for LabelBudget {
    fn default() -> Self {
        LabelBudget {
            max_sets_per_window: 256,
            max_pairs: 16,
            max_key_bytes: 64,
            max_value_bytes: 256,
        }
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary and replaces control
/// characters with `_`.
fn clean_text(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(if c.is_control() { '_' } else { c });
    }
    out
}

/// A label set as the budget allows it: keys and values cut and free of control
/// characters, empty keys and reserved keys (starting with `__`, the collector's own
/// target labels) dropped, at most `max_pairs` pairs (two keys that become equal once
/// cut keep the first value).
pub fn clean_labels(labels: &SampleLabels, budget: &LabelBudget) -> SampleLabels {
    let mut out = SampleLabels::new();
    for (k, v) in labels {
        if out.len() >= budget.max_pairs {
            break;
        }
        let k = clean_text(k, budget.max_key_bytes);
        if k.is_empty() || k.starts_with("__") {
            continue;
        }
        out.entry(k)
            .or_insert_with(|| clean_text(v, budget.max_value_bytes));
    }
    out
}

/// True when `labels` needs no change under `budget` (the common case: no copy).
pub fn labels_within(labels: &SampleLabels, budget: &LabelBudget) -> bool {
    labels.len() <= budget.max_pairs
        && labels.iter().all(|(k, v)| {
            !k.is_empty()
                && !k.starts_with("__")
                && k.len() <= budget.max_key_bytes
                && v.len() <= budget.max_value_bytes
                && !k.chars().any(char::is_control)
                && !v.chars().any(char::is_control)
        })
}

/// Keeps the `max_sets` heaviest label sets (by `weight`) and merges the rest, with
/// `merge`, into one set whose keys are every key of the folded sets, each valued
/// [`LABELS_PRUNED`]. The empty set (no labels) is always kept and does not count
/// toward `max_sets`. Returns the kept groups (sorted by label set) and how many sets
/// were folded away.
pub fn fold_label_sets<T>(
    groups: Vec<(SampleLabels, T)>,
    max_sets: usize,
    weight: impl Fn(&T) -> u64,
    mut merge: impl FnMut(&mut T, T),
) -> (Vec<(SampleLabels, T)>, usize) {
    // Merge equal sets first (callers may pass sets that became equal once cleaned).
    let mut by_set: BTreeMap<SampleLabels, T> = BTreeMap::new();
    for (labels, value) in groups {
        match by_set.get_mut(&labels) {
            Some(existing) => merge(existing, value),
            None => {
                by_set.insert(labels, value);
            }
        }
    }
    let labeled = by_set.keys().filter(|k| !k.is_empty()).count();
    if labeled <= max_sets {
        return (by_set.into_iter().collect(), 0);
    }
    let empty = by_set.remove(&SampleLabels::new());
    let mut sets: Vec<(SampleLabels, T)> = by_set.into_iter().collect();
    // Heaviest first; ties by label text so the choice is deterministic.
    sets.sort_by(|a, b| weight(&b.1).cmp(&weight(&a.1)).then_with(|| a.0.cmp(&b.0)));
    let folded_sets = sets.split_off(max_sets.saturating_sub(1).min(sets.len()));
    let folded = folded_sets.len();
    let mut pruned_labels = SampleLabels::new();
    let mut pruned: Option<T> = None;
    for (labels, value) in folded_sets {
        for k in labels.into_keys() {
            pruned_labels.insert(k, LABELS_PRUNED.to_owned());
        }
        match pruned.as_mut() {
            Some(p) => merge(p, value),
            None => pruned = Some(value),
        }
    }
    let mut out: BTreeMap<SampleLabels, T> = sets.into_iter().collect();
    if let Some(p) = pruned {
        match out.get_mut(&pruned_labels) {
            Some(existing) => merge(existing, p),
            None => {
                out.insert(pruned_labels, p);
            }
        }
    }
    if let Some(e) = empty {
        out.insert(SampleLabels::new(), e);
    }
    (out.into_iter().collect(), folded)
}

/// The canonical text of a label set, Prometheus style: `{op="insert",table="orders"}`
/// (keys sorted, `\`, `"` and newlines escaped; `{}` for no labels). Two sets are equal
/// exactly when their texts are, so stores key on it.
pub fn format_labels(labels: &SampleLabels) -> String {
    let mut out = String::with_capacity(2 + labels.len() * 16);
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_quoted_key(&mut out, k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// Keys are written bare when they are identifiers, quoted otherwise, so the text parses
/// back unambiguously (see [`parse_labels`]).
fn push_quoted_key(out: &mut String, k: &str) {
    let bare = k
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
        && !k.is_empty();
    if bare {
        out.push_str(k);
    } else {
        out.push('"');
        for c in k.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// Parses what [`format_labels`] wrote. Returns `None` for anything else (a corrupt
/// stored value), never panics.
pub fn parse_labels(text: &str) -> Option<SampleLabels> {
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    let mut out = SampleLabels::new();
    let mut chars = inner.chars().peekable();
    loop {
        if chars.peek().is_none() {
            return Some(out);
        }
        let key = if chars.peek() == Some(&'"') {
            chars.next();
            read_quoted(&mut chars)?
        } else {
            let mut k = String::new();
            while let Some(&c) = chars.peek() {
                if c == '=' {
                    break;
                }
                k.push(c);
                chars.next();
            }
            k
        };
        if chars.next() != Some('=') || chars.next() != Some('"') {
            return None;
        }
        let value = read_quoted(&mut chars)?;
        out.insert(key, value);
        match chars.next() {
            None => return Some(out),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

/// Reads up to and including the closing quote, undoing the escapes.
fn read_quoted(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<String> {
    let mut s = String::new();
    loop {
        match chars.next()? {
            '"' => return Some(s),
            '\\' => match chars.next()? {
                'n' => s.push('\n'),
                c => s.push(c),
            },
            c => s.push(c),
        }
    }
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

    #[test]
    fn format_and_parse_round_trip_odd_text() {
        for s in [
            set(&[]),
            set(&[("table", "orders")]),
            set(&[("op", "in\"se\\rt\n"), ("table", "<script>")]),
            set(&[("weird key", "v"), ("k=1", "x,y}")]),
        ] {
            let text = format_labels(&s);
            assert_eq!(parse_labels(&text), Some(s.clone()), "{text}");
        }
        assert_eq!(
            format_labels(&set(&[("table", "orders"), ("op", "insert")])),
            r#"{op="insert",table="orders"}"#
        );
        assert_eq!(parse_labels("{a=\"b\""), None);
        assert_eq!(parse_labels("nonsense"), None);
        assert_eq!(parse_labels("{a=\"b\"x}"), None);
    }

    #[test]
    fn clean_cuts_keys_values_and_pairs() {
        let b = LabelBudget {
            max_pairs: 2,
            max_key_bytes: 3,
            max_value_bytes: 4,
            ..LabelBudget::default()
        };
        let s = set(&[
            ("", "x"),
            ("__profile_type__", "x"),
            ("abcdef", "é€€€"),
            ("b\n", "v\u{7}"),
            ("c", "z"),
        ]);
        assert!(!labels_within(&s, &b));
        let c = clean_labels(&s, &b);
        assert_eq!(c, set(&[("abc", "é"), ("b_", "v_")]));
        assert!(labels_within(&c, &b));
    }

    #[test]
    fn fold_keeps_heaviest_and_totals_exact() {
        let groups: Vec<(SampleLabels, u64)> = (0..10u64)
            .map(|i| (set(&[("table", &format!("t{i}"))]), i + 1))
            .chain([(SampleLabels::new(), 100)])
            .collect();
        let (kept, folded) = fold_label_sets(groups, 4, |c| *c, |a, b| *a += b);
        assert_eq!(folded, 7);
        // Three heaviest + the pruned set + the unlabeled one.
        assert_eq!(kept.len(), 5);
        assert_eq!(kept.iter().map(|(_, c)| c).sum::<u64>(), 155);
        let pruned = kept
            .iter()
            .find(|(l, _)| l.get("table").map(String::as_str) == Some(LABELS_PRUNED))
            .unwrap();
        assert_eq!(pruned.1, 1 + 2 + 3 + 4 + 5 + 6 + 7);
        assert!(kept.iter().any(|(l, c)| l.is_empty() && *c == 100));
        let (kept, folded) = fold_label_sets(kept, 100, |c| *c, |a, b| *a += b);
        assert_eq!((kept.len(), folded), (5, 0));
    }
}
