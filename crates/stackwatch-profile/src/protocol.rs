//! The window protocol: what `GET /windows?after=SEQ` returns. docs/protocol.md is the
//! specification; these types are its single implementation on both sides.
//!
//! A sampler closes a window every `window_seconds` and numbers it with a [`WindowSeq`]
//! that increases by one per window within an `instance` (a random id drawn when the
//! profiler starts). A collector remembers the last sequence it stored per instance and
//! asks for windows after it, so a missed poll loses nothing (up to the retained count)
//! and nothing is counted twice.

use serde::{Deserialize, Serialize};

use crate::labels::SampleLabels;

/// Version of the response format; bumped on incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// Sequence number of a closed window. The first closed window of an instance is 1.
pub type WindowSeq = u64;

/// Body of `GET /windows?after=SEQ`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowsResponse {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// Random id of this profiler instance; a new one means a new series.
    pub instance: String,
    /// Sampling frequency in Hz.
    pub frequency_hz: u32,
    /// Length of one sampling period in nanoseconds; counts × this is CPU time.
    pub period_ns: u64,
    /// Nominal window length in seconds.
    pub window_seconds: u64,
    /// Sequence of the oldest window still retained (0 when none closed yet). If a
    /// collector's `after` is below `oldest_seq - 1`, the windows between were lost.
    pub oldest_seq: WindowSeq,
    /// Sequence of the newest closed window (0 when none closed yet).
    pub latest_seq: WindowSeq,
    /// Every retained window with `seq > after`, oldest first.
    pub windows: Vec<Window>,
}

/// One closed window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Its sequence number.
    pub seq: WindowSeq,
    /// Start, Unix milliseconds (inclusive).
    pub start_unix_ms: u64,
    /// End, Unix milliseconds (exclusive).
    pub end_unix_ms: u64,
    /// Sampling periods recorded in this window (the sum of `stacks` counts).
    pub samples: u64,
    /// Samples dropped in this window because the sample buffer was full.
    pub dropped: u64,
    /// Distinct stacks folded into `[pruned]` by the `max_stacks` bound.
    pub pruned_stacks: u64,
    /// `(folded stack, periods)`, root frame first; the root is the thread name. For a
    /// client that did not ask for labels (`labels=1`), every sample of the window;
    /// otherwise only the samples taken with no label set.
    pub stacks: Vec<(String, u64)>,
    /// Samples taken while a label set was current, one entry per set (only when the
    /// client asked with `labels=1`; absent otherwise). `samples` counts these too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labeled: Vec<LabeledStacks>,
}

/// The stacks of one window sampled under one label set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabeledStacks {
    /// The label set (never empty).
    pub labels: SampleLabels,
    /// `(folded stack, periods)`, as in [`Window::stacks`].
    pub stacks: Vec<(String, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_is_stable() {
        let r = WindowsResponse {
            version: PROTOCOL_VERSION,
            instance: "ab12".into(),
            frequency_hz: 99,
            period_ns: 10_101_010,
            window_seconds: 10,
            oldest_seq: 1,
            latest_seq: 1,
            windows: vec![Window {
                seq: 1,
                start_unix_ms: 1000,
                end_unix_ms: 11000,
                samples: 3,
                dropped: 0,
                pruned_stacks: 0,
                stacks: vec![("main;a".into(), 3)],
                labeled: Vec::new(),
            }],
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""stacks":[["main;a",3]]"#), "{json}");
        assert!(!json.contains("labeled"), "{json}");
        let back: WindowsResponse = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        let mut labeled = r.clone();
        labeled.windows[0].labeled = vec![LabeledStacks {
            labels: [("table".to_string(), "orders".to_string())].into(),
            stacks: vec![("main;b".into(), 2)],
        }];
        let json = serde_json::to_string(&labeled).unwrap();
        assert!(
            json.contains(r#""labeled":[{"labels":{"table":"orders"},"stacks":[["main;b",2]]}]"#),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<WindowsResponse>(&json).unwrap(),
            labeled
        );
    }
}
