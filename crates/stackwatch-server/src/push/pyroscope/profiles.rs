//! pprof bodies of a push: which of their sample types are stored as which profile type
//! (the `sample_type_config` part, Pyroscope's defaults), and the batch of one request's
//! profiles within its budgets.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use stackwatch_profile::budget::BudgetError;
use stackwatch_profile::pprof::{PprofError, PprofProfile, SampleType};
use stackwatch_profile::StackBudget;

use crate::profile_type::ProfileType;
use crate::push::accept::PushState;
use crate::push::budget::over_budget;
use crate::push::error::PushError;
use crate::push::series::PushedSeries;

use super::names::{
    hint_of_name, target_labels, type_of_units, TypeHint, MAX_FUTURE_NS, PLAUSIBLE_TIME_NS,
};

/// Profiles (a pprof body × each profile type it carries) one request may hold, at
/// most; the request's stack budget is shared among them.
pub const MAX_PROFILES_PER_REQUEST: usize = 64;

/// The largest `sample_type_config` part of a multipart `/ingest` (64 KiB): parsed as
/// JSON into a map, so its size bounds the memory parsing takes (3.3 million entries
/// in a 38 MB part took 700 MB before).
pub(super) const MAX_SAMPLE_TYPE_CONFIG_BYTES: usize = 64 << 10;

/// One entry of the `sample_type_config` part (pyroscope-go's `upstream.SampleType`).
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct SampleTypeConfig {
    #[serde(default)]
    pub(super) units: String,
    #[serde(default, rename = "display-name")]
    pub(super) display_name: String,
    #[serde(default)]
    pub(super) aggregation: String,
}

/// One profile type to expand from a pprof: which sample type, how to scale it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Selected {
    ty: ProfileType,
    contention: Option<&'static str>,
    index: usize,
    /// Values are divided by this (CPU nanoseconds by the period); 1: as is.
    divisor: u64,
    /// The series' period (CPU and wall), 0 otherwise.
    period_ns: u64,
}

/// The profile type of one sample type: its `display-name` from the config, then its
/// name, then the config's units.
pub(super) fn classify(
    st: &SampleType,
    config: Option<&SampleTypeConfig>,
    period_type: &str,
) -> Option<(ProfileType, Option<&'static str>)> {
    let display = config
        .map(|c| c.display_name.as_str())
        .filter(|d| !d.is_empty());
    for name in display.into_iter().chain([st.ty.as_str()]) {
        if let Some(TypeHint {
            ty: Some(ty),
            contention,
        }) = hint_of_name(name)
        {
            // `samples` is CPU unless the profile says wall.
            if ty == ProfileType::Cpu && name == "samples" {
                return ProfileType::from_sample_type(name, &st.unit, period_type)
                    .map(|t| (t, None));
            }
            return Some((ty, contention));
        }
        if let Some(t) = ProfileType::from_sample_type(name, &st.unit, period_type) {
            return Some((t, None));
        }
    }
    let c = config?;
    type_of_units(&c.units, &c.aggregation)
        .filter(|_| !c.units.is_empty())
        .map(|t| (t, None))
}

/// The profile types to expand from `p`: one per type (CPU prefers a count sample type
/// over nanoseconds), each with its scale.
pub(super) fn select_types(
    p: &PprofProfile,
    hint: TypeHint,
    config: Option<&HashMap<String, SampleTypeConfig>>,
    sample_rate: u32,
) -> Result<Vec<Selected>, PushError> {
    let types = p.sample_types().map_err(pprof_error)?;
    let period_type = p.period_type().map_err(pprof_error)?;
    let period_type_name = match (&period_type, hint.ty) {
        (Some(pt), _) if !pt.ty.is_empty() => pt.ty.clone(),
        (_, Some(ProfileType::Wall)) => "wall".into(),
        _ => String::new(),
    };
    let period_ns = match &period_type {
        Some(pt) if pt.unit == "nanoseconds" && p.period() > 0 => p.period(),
        _ => 1_000_000_000 / u64::from(sample_rate.max(1)),
    };
    let mut chosen: BTreeMap<(ProfileType, Option<&'static str>), Selected> = BTreeMap::new();
    for (index, st) in types.iter().enumerate() {
        let conf = config.and_then(|c| c.get(&st.ty));
        let Some((ty, contention)) = classify(st, conf, &period_type_name) else {
            continue;
        };
        let contention = contention
            .or(hint.contention)
            .filter(|_| matches!(ty, ProfileType::Contentions | ProfileType::Delay));
        let timed = matches!(ty, ProfileType::Cpu | ProfileType::Wall);
        let divisor = if timed && st.unit == "nanoseconds" {
            period_ns
        } else {
            1
        };
        let sel = Selected {
            ty,
            contention,
            index,
            divisor,
            period_ns: if timed { period_ns } else { 0 },
        };
        match chosen.get(&(ty, contention)) {
            Some(prev) if prev.divisor == 1 || sel.divisor != 1 => {}
            _ => {
                chosen.insert((ty, contention), sel);
            }
        }
    }
    if chosen.is_empty() {
        let names: Vec<String> = types
            .iter()
            .take(8)
            .map(|t| format!("{}/{}", t.ty, t.unit))
            .collect();
        return Err(PushError::Invalid(format!(
            "pprof: no sample type stackwatch stores (it has [{}]; cpu, wall, alloc_*, inuse_*, goroutines, contentions, delay)",
            names.join(", ")
        )));
    }
    Ok(chosen.into_values().collect())
}

pub(super) fn pprof_error(e: PprofError) -> PushError {
    match e {
        PprofError::TooLarge { .. } => PushError::TooLarge(e.to_string()),
        PprofError::Expands(o) => PushError::TooLarge(format!(
            "pprof: {o} (twice the larger of scrape.max_decoded_bytes and push.max_decompressed_bytes, shared by the request's profiles)"
        )),
        e => PushError::Invalid(e.to_string()),
    }
}

/// A parsed pprof of a request and what to make of it.
pub(super) struct PendingProfile {
    /// Target labels without the type-specific ones.
    tags: Vec<(String, String)>,
    app: Option<String>,
    profile: PprofProfile,
    selected: Vec<Selected>,
    /// The request's range, used when the profile carries none.
    fallback_start_ns: u64,
    fallback_duration_ns: u64,
}

/// Parses the pprof profiles of one request, within what is left of the request's
/// decompression cap (`inflate_left`) and of the memory its decoded messages may take
/// together (`message_left`, from `scrape.max_decoded_bytes`), and counts what they
/// expand to.
pub(super) struct ProfileBatch {
    pending: Vec<PendingProfile>,
    inflate_left: usize,
    message_left: usize,
}

impl ProfileBatch {
    pub(super) fn new(max_decompressed: usize, max_message_bytes: usize) -> Self {
        ProfileBatch {
            pending: Vec::new(),
            inflate_left: max_decompressed,
            message_left: max_message_bytes,
        }
    }

    fn profiles(&self) -> usize {
        self.pending.iter().map(|p| p.selected.len()).sum()
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn add(
        &mut self,
        bytes: &[u8],
        app: Option<String>,
        tags: Vec<(String, String)>,
        hint: TypeHint,
        config: Option<&HashMap<String, SampleTypeConfig>>,
        sample_rate: u32,
        fallback: (u64, u64),
    ) -> Result<(), PushError> {
        let profile = PprofProfile::parse(bytes, self.inflate_left, self.message_left).map_err(
            |e| match e {
                PprofError::TooLarge { .. } => PushError::TooLarge(format!(
                    "the profiles of this request decompress past push.max_decompressed_bytes: {e}"
                )),
                e => pprof_error(e),
            },
        )?;
        self.inflate_left = self.inflate_left.saturating_sub(profile.raw_len());
        self.message_left = self.message_left.saturating_sub(profile.message_bytes());
        let selected = select_types(&profile, hint, config, sample_rate)?;
        if self.profiles() + selected.len() > MAX_PROFILES_PER_REQUEST {
            return Err(PushError::Invalid(format!(
                "more than {MAX_PROFILES_PER_REQUEST} profiles (pprof bodies × sample types) in one request"
            )));
        }
        self.pending.push(PendingProfile {
            tags,
            app,
            profile,
            selected,
            fallback_start_ns: fallback.0,
            fallback_duration_ns: fallback.1,
        });
        Ok(())
    }

    /// Expands every selected type into a series, the request's stack budget shared
    /// among them (decoded bytes split evenly; periods and amounts spent in turn).
    pub(super) fn into_series(
        self,
        state: &PushState,
        now_ns: u64,
    ) -> Result<Vec<PushedSeries>, PushError> {
        let n = self.profiles().max(1);
        let decoded_bytes = (state.stack_budget.max_decoded_bytes / n).max(1);
        let mut left = state.request_budget();
        let mut out = Vec::with_capacity(n);
        for p in self.pending {
            let (start, duration) = if p.profile.time_nanos() >= PLAUSIBLE_TIME_NS {
                (p.profile.time_nanos(), p.profile.duration_nanos())
            } else {
                (
                    p.fallback_start_ns,
                    match p.profile.duration_nanos() {
                        0 => p.fallback_duration_ns,
                        d => d,
                    },
                )
            };
            check_start(start, now_ns)?;
            for sel in &p.selected {
                let (_, stacks) = p
                    .profile
                    .stacks(
                        sel.index,
                        sel.divisor,
                        &StackBudget {
                            max_decoded_bytes: decoded_bytes,
                            max_samples: left.for_type(sel.ty),
                            ..state.stack_budget
                        },
                        &state.label_budget,
                    )
                    .map_err(|e| match e {
                        PprofError::Budget(BudgetError::Samples { limit }) => {
                            PushError::Invalid(over_budget(sel.ty, limit))
                        }
                        e => pprof_error(e),
                    })?;
                left.spend(sel.ty, stacks.samples);
                let labels = target_labels(
                    p.app.as_deref(),
                    p.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    sel.contention,
                );
                out.push(PushedSeries {
                    labels,
                    profile_type: sel.ty,
                    start_unix_ns: start,
                    duration_ns: duration,
                    period_ns: sel.period_ns,
                    stacks,
                });
            }
        }
        Ok(out)
    }
}

pub(super) fn check_start(start_ns: u64, now_ns: u64) -> Result<(), PushError> {
    if start_ns > now_ns.saturating_add(MAX_FUTURE_NS) {
        return Err(PushError::Invalid(format!(
            "the profile starts {} s in the future",
            (start_ns - now_ns) / 1_000_000_000
        )));
    }
    Ok(())
}
