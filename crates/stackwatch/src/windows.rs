//! Windows: the open window being filled, the last N closed ones, the cumulative profile
//! since start, and on-demand captures (for Go-style `?seconds=N` profiles).
//!
//! Every count is keyed by the sample's label set id and its folded stack. Every map is
//! bounded by `max_stacks` distinct (set, stack) keys: the rarest fold into the
//! unlabeled `[pruned]` so totals stay exact, and memory depends on configuration, not
//! run time. Label sets are resolved to their pairs when a window closes, where the
//! builder's [`LabelBudget`] cuts them and folds the lightest past its count.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use stackwatch_profile::labels::{clean_labels, fold_label_sets, labels_within, SampleLabels};
use stackwatch_profile::profile::prune_counts;
use stackwatch_profile::protocol::{
    LabeledStacks, Window, WindowSeq, WindowsResponse, PROTOCOL_VERSION,
};
use stackwatch_profile::{LabelBudget, Profile};

use crate::labels::labels_of;

/// A stack as counted: the label set it was sampled under (0: none) and its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct StackKey {
    set: u32,
    stack: Arc<str>,
}

impl AsRef<str> for StackKey {
    fn as_ref(&self) -> &str {
        &self.stack
    }
}

/// Unlabeled: what pruning folds into.
impl From<&str> for StackKey {
    fn from(s: &str) -> Self {
        StackKey {
            set: 0,
            stack: Arc::from(s),
        }
    }
}

type Counts = HashMap<StackKey, u64>;

/// Which label sets a read wants: every `(key, value)` pair must be in the set. Empty:
/// every sample.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelFilter {
    pairs: Vec<(String, String)>,
}

impl LabelFilter {
    /// A filter requiring every pair.
    pub fn new<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Self {
        LabelFilter {
            pairs: pairs
                .iter()
                .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
                .collect(),
        }
    }

    /// True when it keeps every sample.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    fn matches(&self, labels: &SampleLabels) -> bool {
        self.pairs
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|x| x == v))
    }
}

/// Answers "does set `id` pass the filter" once per id for one read.
struct FilterCache<'a> {
    filter: &'a LabelFilter,
    seen: HashMap<u32, bool>,
}

impl<'a> FilterCache<'a> {
    fn new(filter: &'a LabelFilter) -> Self {
        FilterCache {
            filter,
            seen: HashMap::new(),
        }
    }

    fn keeps(&mut self, set: u32) -> bool {
        if self.filter.is_empty() {
            return true;
        }
        if set == 0 {
            return false;
        }
        let filter = self.filter;
        *self
            .seen
            .entry(set)
            .or_insert_with(|| filter.matches(&labels_of(set)))
    }
}

/// A profile split by label set: what a pprof answer with `Sample.label`s is built from.
#[derive(Debug, Clone, Default)]
pub struct LabeledProfile {
    /// The samples taken without labels (and the span and period).
    pub unlabeled: Profile,
    /// The samples of each label set.
    pub labeled: Vec<(Arc<SampleLabels>, HashMap<String, u64>)>,
}

/// The protocol response, borrowing the retained windows: serialised straight from the
/// store without copying a stack string (the JSON shape of [`WindowsResponse`]).
#[derive(serde::Serialize)]
struct WindowsView<'a> {
    version: u32,
    instance: &'a str,
    frequency_hz: u32,
    period_ns: u64,
    window_seconds: u64,
    oldest_seq: WindowSeq,
    latest_seq: WindowSeq,
    windows: Vec<WindowView<'a>>,
}

#[derive(serde::Serialize)]
struct WindowView<'a> {
    seq: WindowSeq,
    start_unix_ms: u64,
    end_unix_ms: u64,
    samples: u64,
    dropped: u64,
    pruned_stacks: u64,
    stacks: Cow<'a, [(Arc<str>, u64)]>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    labeled: &'a [LabeledView],
}

/// One label set's stacks in a closed window.
#[derive(Debug, Clone, serde::Serialize)]
struct LabeledView {
    labels: Arc<SampleLabels>,
    stacks: Vec<(Arc<str>, u64)>,
}

/// A closed window, as retained.
#[derive(Debug, Clone)]
pub struct ClosedWindow {
    /// Sequence number (1 for the first).
    pub seq: WindowSeq,
    /// Start, Unix ms.
    pub start_ms: u64,
    /// End, Unix ms.
    pub end_ms: u64,
    /// Periods recorded.
    pub samples: u64,
    /// Samples dropped (full buffer) while it was open.
    pub dropped: u64,
    /// Distinct stacks folded into `[pruned]`.
    pub pruned_stacks: u64,
    /// Stacks and counts of the samples without labels.
    pub stacks: Vec<(Arc<str>, u64)>,
    /// Stacks and counts per label set (cut and folded by the label budget).
    labeled: Vec<LabeledView>,
    /// The window's keys as counted, for reads with a label filter.
    keys: Vec<(StackKey, u64)>,
}

struct OpenWindow {
    start_ms: u64,
    end_ms: u64,
    stacks: Counts,
    samples: u64,
    dropped: u64,
    pruned_stacks: u64,
}

/// Sizes and identity of a [`WindowStore`].
#[derive(Debug, Clone)]
pub struct WindowConfig {
    /// Instance id served in the protocol.
    pub instance: String,
    /// Sampling frequency.
    pub frequency_hz: u32,
    /// Window length.
    pub window: Duration,
    /// Closed windows retained.
    pub retain: usize,
    /// Distinct stacks kept per window.
    pub max_stacks: usize,
    /// What label sets may cost per window.
    pub labels: LabelBudget,
}

/// All aggregated samples of one profiler.
pub struct WindowStore {
    cfg: WindowConfig,
    next_seq: WindowSeq,
    open: OpenWindow,
    closed: VecDeque<ClosedWindow>,
    cumulative: Counts,
    started_ms: u64,
    captures: HashMap<u64, Counts>,
    next_capture: u64,
    /// Label sets resolved and cut by the budget, by id (bounded by the interned sets).
    resolved: HashMap<u32, Arc<SampleLabels>>,
    /// Periods recorded since start (all windows, open included).
    pub samples_total: u64,
    /// Distinct stacks pruned since start.
    pub pruned_total: u64,
    /// Label sets folded into `[labels pruned]` since start.
    pub label_sets_folded_total: u64,
}

impl WindowStore {
    /// An empty store whose first window opens at `now_ms`.
    pub fn new(cfg: WindowConfig, now_ms: u64) -> Self {
        let end_ms = next_boundary(now_ms, &cfg.window);
        WindowStore {
            next_seq: 1,
            open: OpenWindow {
                start_ms: now_ms,
                end_ms,
                stacks: HashMap::new(),
                samples: 0,
                dropped: 0,
                pruned_stacks: 0,
            },
            closed: VecDeque::with_capacity(cfg.retain),
            cumulative: HashMap::new(),
            started_ms: now_ms,
            captures: HashMap::new(),
            next_capture: 1,
            resolved: HashMap::new(),
            samples_total: 0,
            pruned_total: 0,
            label_sets_folded_total: 0,
            cfg,
        }
    }

    fn period_ns(&self) -> u64 {
        1_000_000_000 / self.cfg.frequency_hz.max(1) as u64
    }

    /// Records `weight` periods of `stack`, sampled under label set `set` (0: none), in
    /// the open window and every capture.
    pub fn add(&mut self, set: u32, stack: &Arc<str>, weight: u64) {
        let key = StackKey {
            set,
            stack: stack.clone(),
        };
        for c in self.captures.values_mut() {
            *c.entry(key.clone()).or_insert(0) += weight;
            if c.len() > 2 * self.cfg.max_stacks {
                prune_counts(c, self.cfg.max_stacks);
            }
        }
        *self.open.stacks.entry(key).or_insert(0) += weight;
        self.open.samples += weight;
        self.samples_total += weight;
        if self.open.stacks.len() > 2 * self.cfg.max_stacks {
            let n = prune_counts(&mut self.open.stacks, self.cfg.max_stacks) as u64;
            self.open.pruned_stacks += n;
            self.pruned_total += n;
        }
    }

    /// Counts samples dropped while this window is open.
    pub fn add_dropped(&mut self, n: u64) {
        self.open.dropped += n;
    }

    /// When the open window is due to close.
    pub fn open_end_ms(&self) -> u64 {
        self.open.end_ms
    }

    /// The labels of set `id` as the budget lets them out.
    fn resolve(&mut self, id: u32) -> Arc<SampleLabels> {
        if let Some(l) = self.resolved.get(&id) {
            return l.clone();
        }
        let raw = labels_of(id);
        let clean = if labels_within(&raw, &self.cfg.labels) {
            raw
        } else {
            Arc::new(clean_labels(&raw, &self.cfg.labels))
        };
        self.resolved.insert(id, clean.clone());
        clean
    }

    /// Closes the open window at `now_ms` and opens the next one.
    pub fn close(&mut self, now_ms: u64) {
        let end_ms = now_ms.max(self.open.start_ms);
        let mut counts = std::mem::take(&mut self.open.stacks);
        let n = prune_counts(&mut counts, self.cfg.max_stacks) as u64;
        self.open.pruned_stacks += n;
        self.pruned_total += n;
        for (k, c) in &counts {
            *self.cumulative.entry(k.clone()).or_insert(0) += c;
        }
        prune_counts(&mut self.cumulative, self.cfg.max_stacks);
        // Split by label set; sets whose labels the budget cut to nothing are unlabeled.
        let mut unlabeled: HashMap<Arc<str>, u64> = HashMap::new();
        let mut by_set: HashMap<u32, HashMap<Arc<str>, u64>> = HashMap::new();
        for (k, c) in &counts {
            let target = if k.set == 0 {
                &mut unlabeled
            } else {
                by_set.entry(k.set).or_default()
            };
            *target.entry(k.stack.clone()).or_insert(0) += c;
        }
        let mut groups: Vec<(SampleLabels, HashMap<Arc<str>, u64>)> = Vec::new();
        for (id, stacks) in by_set {
            let labels = self.resolve(id);
            if labels.is_empty() {
                for (s, c) in stacks {
                    *unlabeled.entry(s).or_insert(0) += c;
                }
            } else {
                groups.push(((*labels).clone(), stacks));
            }
        }
        let (groups, folded) = fold_label_sets(
            groups,
            self.cfg.labels.max_sets_per_window,
            |g| g.values().sum(),
            |into, from| {
                for (s, c) in from {
                    *into.entry(s).or_insert(0) += c;
                }
            },
        );
        self.label_sets_folded_total += folded as u64;
        let labeled = groups
            .into_iter()
            .filter(|(l, _)| !l.is_empty())
            .map(|(labels, stacks)| LabeledView {
                labels: Arc::new(labels),
                stacks: sorted(stacks),
            })
            .collect();
        let mut keys: Vec<(StackKey, u64)> = counts.into_iter().collect();
        keys.shrink_to_fit();
        self.closed.push_back(ClosedWindow {
            seq: self.next_seq,
            start_ms: self.open.start_ms,
            end_ms,
            samples: self.open.samples,
            dropped: self.open.dropped,
            pruned_stacks: self.open.pruned_stacks,
            stacks: sorted(unlabeled),
            labeled,
            keys,
        });
        self.next_seq += 1;
        while self.closed.len() > self.cfg.retain {
            self.closed.pop_front();
        }
        self.open = OpenWindow {
            start_ms: end_ms,
            end_ms: next_boundary(end_ms, &self.cfg.window),
            stacks: HashMap::new(),
            samples: 0,
            dropped: 0,
            pruned_stacks: 0,
        };
    }

    /// The retained windows after `after`, borrowed. With `labels`, labeled samples
    /// come per set; without, every window's stacks are summed over label sets (what
    /// a collector that knows nothing of labels expects).
    fn view(&self, after: WindowSeq, labels: bool) -> WindowsView<'_> {
        WindowsView {
            version: PROTOCOL_VERSION,
            instance: &self.cfg.instance,
            frequency_hz: self.cfg.frequency_hz,
            period_ns: self.period_ns(),
            window_seconds: self.cfg.window.as_secs().max(1),
            oldest_seq: self.closed.front().map_or(0, |w| w.seq),
            latest_seq: self.closed.back().map_or(0, |w| w.seq),
            windows: self
                .closed
                .iter()
                .filter(|w| w.seq > after)
                .map(|w| WindowView {
                    seq: w.seq,
                    start_unix_ms: w.start_ms,
                    end_unix_ms: w.end_ms,
                    samples: w.samples,
                    dropped: w.dropped,
                    pruned_stacks: w.pruned_stacks,
                    stacks: if labels || w.labeled.is_empty() {
                        Cow::Borrowed(&w.stacks[..])
                    } else {
                        Cow::Owned(summed(w))
                    },
                    labeled: if labels { &w.labeled } else { &[] },
                })
                .collect(),
        }
    }

    /// The protocol response for `GET /windows?after=SEQ` (`labels`: `&labels=1`), owned.
    pub fn windows_after(&self, after: WindowSeq, labels: bool) -> WindowsResponse {
        let v = self.view(after, labels);
        WindowsResponse {
            version: v.version,
            instance: v.instance.to_owned(),
            frequency_hz: v.frequency_hz,
            period_ns: v.period_ns,
            window_seconds: v.window_seconds,
            oldest_seq: v.oldest_seq,
            latest_seq: v.latest_seq,
            windows: v
                .windows
                .iter()
                .map(|w| Window {
                    seq: w.seq,
                    start_unix_ms: w.start_unix_ms,
                    end_unix_ms: w.end_unix_ms,
                    samples: w.samples,
                    dropped: w.dropped,
                    pruned_stacks: w.pruned_stacks,
                    stacks: w.stacks.iter().map(|(s, c)| (s.to_string(), *c)).collect(),
                    labeled: w
                        .labeled
                        .iter()
                        .map(|l| LabeledStacks {
                            labels: (*l.labels).clone(),
                            stacks: l.stacks.iter().map(|(s, c)| (s.to_string(), *c)).collect(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// [`WindowStore::windows_after`] as JSON bytes, written without copying stacks.
    pub fn windows_after_json(&self, after: WindowSeq, labels: bool) -> Vec<u8> {
        let view = self.view(after, labels);
        let bytes: usize = view
            .windows
            .iter()
            .flat_map(|w| {
                w.stacks
                    .iter()
                    .chain(w.labeled.iter().flat_map(|l| l.stacks.iter()))
            })
            .map(|(s, _)| s.len() + 16)
            .sum();
        let mut out = Vec::with_capacity(bytes + 256);
        serde_json::to_writer(&mut out, &view).expect("serialising to a Vec cannot fail");
        out
    }

    /// Folded text of everything since start plus the open window, written straight from
    /// the store for `GET /`. Lines are not sorted (folded-text consumers sort), and
    /// counts are merged by pointer: the aggregator hands out one shared string per
    /// stack, so this avoids hashing megabytes of stack text per request.
    pub fn cumulative_folded(&self, filter: &LabelFilter) -> String {
        let mut keep = FilterCache::new(filter);
        let mut lines: Vec<(&str, u64)> =
            Vec::with_capacity(self.cumulative.len() + self.open.stacks.len());
        let mut index: HashMap<*const u8, usize> = HashMap::with_capacity(lines.capacity());
        for (k, c) in self.cumulative.iter().chain(self.open.stacks.iter()) {
            if !keep.keeps(k.set) {
                continue;
            }
            match index.entry(k.stack.as_ptr()) {
                std::collections::hash_map::Entry::Occupied(e) => lines[*e.get()].1 += c,
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(lines.len());
                    lines.push((&k.stack, *c));
                }
            }
        }
        let mut out = String::with_capacity(lines.iter().map(|(s, _)| s.len() + 12).sum());
        for (stack, count) in lines {
            out.push_str(stack);
            out.push(' ');
            out.push_str(itoa_u64(count, &mut [0u8; 20]));
            out.push('\n');
        }
        out
    }

    /// Retained windows that end after `now_ms - last`, plus the open window; only the
    /// samples whose label set passes `filter`.
    pub fn profile_last(&self, last: Duration, now_ms: u64, filter: &LabelFilter) -> Profile {
        let since = now_ms.saturating_sub(last.as_millis() as u64);
        let mut keep = FilterCache::new(filter);
        let mut p = Profile::new(self.period_ns());
        let mut start = self.open.start_ms;
        for w in self.closed.iter().filter(|w| w.end_ms > since) {
            start = start.min(w.start_ms);
            for (k, c) in &w.keys {
                if keep.keeps(k.set) {
                    p.add(&k.stack, *c);
                }
            }
        }
        add_counts(&mut p, &self.open.stacks, &mut keep);
        p.start_unix_ns = start * 1_000_000;
        p.duration_ns = now_ms.saturating_sub(start) * 1_000_000;
        p
    }

    /// Everything since start (pruned to `max_stacks`), open window included; only the
    /// samples whose label set passes `filter`.
    pub fn profile_cumulative(&self, now_ms: u64, filter: &LabelFilter) -> Profile {
        let mut keep = FilterCache::new(filter);
        let mut p = Profile::new(self.period_ns());
        add_counts(&mut p, &self.cumulative, &mut keep);
        add_counts(&mut p, &self.open.stacks, &mut keep);
        p.start_unix_ns = self.started_ms * 1_000_000;
        p.duration_ns = now_ms.saturating_sub(self.started_ms) * 1_000_000;
        p
    }

    /// Starts collecting every new sample into a capture; returns its id.
    pub fn start_capture(&mut self) -> u64 {
        let id = self.next_capture;
        self.next_capture += 1;
        self.captures.insert(id, HashMap::new());
        id
    }

    /// Ends a capture and returns what it collected, split by label set (sets cut by
    /// the label budget; only those passing `filter`).
    pub fn finish_capture(
        &mut self,
        id: u64,
        start_ms: u64,
        now_ms: u64,
        filter: &LabelFilter,
    ) -> LabeledProfile {
        let mut out = LabeledProfile {
            unlabeled: Profile::new(self.period_ns()),
            labeled: Vec::new(),
        };
        if let Some(mut c) = self.captures.remove(&id) {
            prune_counts(&mut c, self.cfg.max_stacks);
            let mut keep = FilterCache::new(filter);
            let mut by_set: HashMap<u32, HashMap<String, u64>> = HashMap::new();
            for (k, n) in c {
                if !keep.keeps(k.set) {
                    continue;
                }
                if k.set == 0 {
                    out.unlabeled.add(&k.stack, n);
                } else {
                    *by_set
                        .entry(k.set)
                        .or_default()
                        .entry(k.stack.to_string())
                        .or_insert(0) += n;
                }
            }
            let mut groups = Vec::new();
            for (set, stacks) in by_set {
                let labels = self.resolve(set);
                if labels.is_empty() {
                    for (s, n) in stacks {
                        out.unlabeled.add(&s, n);
                    }
                } else {
                    groups.push(((*labels).clone(), stacks));
                }
            }
            let (groups, _) = fold_label_sets(
                groups,
                self.cfg.labels.max_sets_per_window,
                |g| g.values().sum(),
                |into, from| {
                    for (s, c) in from {
                        *into.entry(s).or_insert(0) += c;
                    }
                },
            );
            out.labeled = groups.into_iter().map(|(l, s)| (Arc::new(l), s)).collect();
        }
        out.unlabeled.start_unix_ns = start_ms * 1_000_000;
        out.unlabeled.duration_ns = now_ms.saturating_sub(start_ms) * 1_000_000;
        out
    }

    /// Discards a capture that will not be finished.
    pub fn cancel_capture(&mut self, id: u64) {
        self.captures.remove(&id);
    }

    /// Rough bytes held: stack strings and map entries of every window.
    pub fn memory_bytes(&self) -> usize {
        let entry = 48;
        let open: usize = self.open.stacks.keys().map(|k| k.stack.len() + entry).sum();
        let closed: usize = self
            .closed
            .iter()
            .map(|w| {
                let labeled: usize = w
                    .labeled
                    .iter()
                    .map(|l| l.stacks.len() * (entry / 2) + 64)
                    .sum();
                w.stacks.len() * (entry / 2) + w.keys.len() * (entry / 2) + labeled
            })
            .sum();
        let cumulative: usize = self.cumulative.keys().map(|k| k.stack.len() + entry).sum();
        let resolved: usize = self
            .resolved
            .values()
            .map(|l| 64 + l.iter().map(|(k, v)| k.len() + v.len() + 48).sum::<usize>())
            .sum();
        open + closed + cumulative + resolved
    }
}

fn add_counts(p: &mut Profile, counts: &Counts, keep: &mut FilterCache<'_>) {
    for (k, c) in counts {
        if keep.keeps(k.set) {
            p.add(&k.stack, *c);
        }
    }
}

fn sorted(stacks: HashMap<Arc<str>, u64>) -> Vec<(Arc<str>, u64)> {
    let mut v: Vec<(Arc<str>, u64)> = stacks.into_iter().collect();
    v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A window's stacks summed over label sets.
fn summed(w: &ClosedWindow) -> Vec<(Arc<str>, u64)> {
    let mut all: HashMap<Arc<str>, u64> = HashMap::new();
    for (s, c) in w
        .stacks
        .iter()
        .chain(w.labeled.iter().flat_map(|l| l.stacks.iter()))
    {
        *all.entry(s.clone()).or_insert(0) += c;
    }
    sorted(all)
}

fn itoa_u64(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).expect("ASCII digits")
}

fn next_boundary(now_ms: u64, window: &Duration) -> u64 {
    let len = (window.as_millis() as u64).max(1);
    (now_ms / len + 1) * len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max_stacks: usize, retain: usize) -> WindowStore {
        WindowStore::new(
            WindowConfig {
                instance: "i".into(),
                frequency_hz: 100,
                window: Duration::from_secs(10),
                retain,
                max_stacks,
                labels: LabelBudget::default(),
            },
            5_000,
        )
    }

    #[test]
    fn windows_align_to_the_wall_clock_and_are_returned_once_per_seq() {
        let mut s = store(100, 3);
        assert_eq!(s.open_end_ms(), 10_000);
        let a: Arc<str> = Arc::from("t;a");
        s.add(0, &a, 2);
        s.close(10_000);
        s.add(0, &a, 3);
        s.close(20_000);
        let r = s.windows_after(0, true);
        assert_eq!(r.windows.len(), 2);
        assert_eq!(
            (
                r.windows[0].seq,
                r.windows[0].start_unix_ms,
                r.windows[0].end_unix_ms
            ),
            (1, 5_000, 10_000)
        );
        assert_eq!(r.windows[1].samples, 3);
        let r = s.windows_after(1, true);
        assert_eq!(r.windows.iter().map(|w| w.seq).collect::<Vec<_>>(), vec![2]);
        assert!(s.windows_after(2, true).windows.is_empty());
    }

    #[test]
    fn borrowed_json_is_the_protocol_response_and_folded_matches_the_profile() {
        let mut s = store(100, 3);
        s.add(0, &Arc::from("t;a;\"quoted\"<b>"), 2);
        s.add(0, &Arc::from("t;c"), 12345678901);
        s.close(10_000);
        s.add(0, &Arc::from("t;c"), 1);
        let parsed: WindowsResponse =
            serde_json::from_slice(&s.windows_after_json(0, true)).unwrap();
        assert_eq!(parsed, s.windows_after(0, true));
        // Same counts as the Profile path (a stack may span two lines; parsing sums them).
        let fast = stackwatch_profile::parse_folded(&s.cumulative_folded(&LabelFilter::default()))
            .unwrap();
        assert_eq!(
            fast,
            s.profile_cumulative(10_000, &LabelFilter::default()).stacks
        );
        // With the shared string the aggregator hands out, one line per stack.
        let c: Arc<str> = Arc::from("t;shared");
        s.add(0, &c, 1);
        s.close(20_000);
        s.add(0, &c, 2);
        let text = s.cumulative_folded(&LabelFilter::default());
        assert_eq!(text.matches("t;shared ").count(), 1, "{text}");
        assert!(text.contains("t;shared 3\n"));
    }

    #[test]
    fn retention_drops_oldest_and_reports_it() {
        let mut s = store(100, 2);
        let a: Arc<str> = Arc::from("t;a");
        for i in 1..=5 {
            s.add(0, &a, 1);
            s.close(i * 10_000);
        }
        let r = s.windows_after(0, true);
        assert_eq!((r.oldest_seq, r.latest_seq), (4, 5));
        assert_eq!(r.windows.len(), 2);
        assert_eq!(s.samples_total, 5);
    }

    #[test]
    fn max_stacks_bounds_every_window_and_keeps_totals() {
        let mut s = store(10, 5);
        for i in 0..1000u64 {
            s.add(0, &Arc::from(format!("t;f{}", i % 300)), 1 + i % 7);
        }
        let expected: u64 = (0..1000u64).map(|i| 1 + i % 7).sum();
        s.close(10_000);
        let w = &s.windows_after(0, true).windows[0];
        assert!(w.stacks.len() <= 10);
        assert_eq!(w.stacks.iter().map(|x| x.1).sum::<u64>(), expected);
        assert_eq!(w.samples, expected);
        assert!(w.pruned_stacks > 0);
        assert_eq!(
            s.profile_cumulative(10_000, &LabelFilter::default())
                .total(),
            expected
        );
    }

    #[test]
    fn captures_see_only_samples_after_they_start() {
        let mut s = store(100, 5);
        let a: Arc<str> = Arc::from("t;a");
        s.add(0, &a, 5);
        let id = s.start_capture();
        s.add(0, &a, 2);
        let p = s
            .finish_capture(id, 6_000, 7_000, &LabelFilter::default())
            .unlabeled;
        assert_eq!(p.total(), 2);
        assert_eq!(p.duration_ns, 1_000_000_000);
        s.add(0, &a, 1);
        assert_eq!(
            s.profile_last(Duration::from_secs(60), 8_000, &LabelFilter::default())
                .total(),
            8
        );
    }
}
