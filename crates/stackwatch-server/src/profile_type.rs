//! Profile types: what a stored count measures. Scraped targets are CPU; pushed
//! profiles may also be wall-clock time, allocations, in-use memory, goroutines or
//! contention, each kept as its own series and never mixed into CPU.
//!
//! In the store a profile type is the reserved target label [`PROFILE_TYPE_LABEL`]; CPU
//! series do not carry it (so everything stored before push existed is CPU). Queries
//! select one type ([`ProfileType::matcher`]), CPU unless asked otherwise.

use std::fmt;

/// The reserved target label that holds a series' profile type (absent: CPU).
pub const PROFILE_TYPE_LABEL: &str = "__profile_type__";

/// What the counts of a profile type are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Sampling periods of CPU time (`count × period_ns` is CPU time; shown as cores).
    CpuPeriods,
    /// Sampling periods of wall-clock time (shown as seconds).
    WallPeriods,
    /// Nanoseconds (contention delay).
    Nanoseconds,
    /// Bytes.
    Bytes,
    /// Objects, goroutines, events.
    Count,
}

impl Unit {
    /// The name the API reports.
    pub fn name(self) -> &'static str {
        match self {
            Unit::CpuPeriods => "cpu_periods",
            Unit::WallPeriods => "wall_periods",
            Unit::Nanoseconds => "nanoseconds",
            Unit::Bytes => "bytes",
            Unit::Count => "count",
        }
    }
}

/// A profile type stackwatch stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProfileType {
    /// On-CPU time (every scraped target).
    Cpu,
    /// Wall-clock time.
    Wall,
    /// Objects allocated.
    AllocObjects,
    /// Bytes allocated.
    AllocSpace,
    /// Objects live at the time of the profile.
    InuseObjects,
    /// Bytes live at the time of the profile.
    InuseSpace,
    /// Goroutines (or threads) at the time of the profile.
    Goroutines,
    /// Lock or channel contention events.
    Contentions,
    /// Time spent waiting on contention, ns.
    Delay,
}

/// Every type, in the order the API lists them.
pub const ALL_TYPES: [ProfileType; 9] = [
    ProfileType::Cpu,
    ProfileType::Wall,
    ProfileType::AllocObjects,
    ProfileType::AllocSpace,
    ProfileType::InuseObjects,
    ProfileType::InuseSpace,
    ProfileType::Goroutines,
    ProfileType::Contentions,
    ProfileType::Delay,
];

impl ProfileType {
    /// The name used in the API, in `stackwatch.toml` and in the store.
    pub fn name(self) -> &'static str {
        match self {
            ProfileType::Cpu => "cpu",
            ProfileType::Wall => "wall",
            ProfileType::AllocObjects => "alloc_objects",
            ProfileType::AllocSpace => "alloc_space",
            ProfileType::InuseObjects => "inuse_objects",
            ProfileType::InuseSpace => "inuse_space",
            ProfileType::Goroutines => "goroutines",
            ProfileType::Contentions => "contentions",
            ProfileType::Delay => "delay",
        }
    }

    /// Whether its counts are sampling periods (CPU, wall), not amounts.
    pub fn is_periods(self) -> bool {
        matches!(self.unit(), Unit::CpuPeriods | Unit::WallPeriods)
    }

    /// What its counts are.
    pub fn unit(self) -> Unit {
        match self {
            ProfileType::Cpu => Unit::CpuPeriods,
            ProfileType::Wall => Unit::WallPeriods,
            ProfileType::AllocSpace | ProfileType::InuseSpace => Unit::Bytes,
            ProfileType::Delay => Unit::Nanoseconds,
            ProfileType::AllocObjects
            | ProfileType::InuseObjects
            | ProfileType::Goroutines
            | ProfileType::Contentions => Unit::Count,
        }
    }

    /// The unit of its counts as pprof names it (`bytes`, `count`, `nanoseconds`), for a
    /// pprof answer of a non-CPU type. Wall counts are periods, written as `count` with
    /// the period in the profile's period type.
    pub fn pprof_unit(self) -> &'static str {
        match self.unit() {
            Unit::Bytes => "bytes",
            Unit::Nanoseconds => "nanoseconds",
            Unit::CpuPeriods | Unit::WallPeriods | Unit::Count => "count",
        }
    }

    /// The unit of its `/api/timeseries` values (the response's `unit`): what the
    /// dashboard's axis says.
    pub fn series_unit(self) -> &'static str {
        match self {
            ProfileType::Cpu => "cores",
            ProfileType::Wall => "wall_seconds_per_second",
            ProfileType::AllocSpace => "bytes_per_second",
            ProfileType::AllocObjects | ProfileType::Contentions => "count_per_second",
            ProfileType::Delay => "nanoseconds_per_second",
            ProfileType::InuseSpace => "bytes",
            ProfileType::InuseObjects | ProfileType::Goroutines => "count",
        }
    }

    /// Parses an API or stored name.
    pub fn from_name(name: &str) -> Option<ProfileType> {
        ALL_TYPES.into_iter().find(|t| t.name() == name)
    }

    /// The type of a pprof / OTLP sample type `(type, unit)`, with the profile's period
    /// type for the ambiguous `samples/count`. Names as Go, pprof-rs, async-profiler and
    /// the Pyroscope SDKs write them; `None` for anything else.
    pub fn from_sample_type(ty: &str, unit: &str, period_type: &str) -> Option<ProfileType> {
        Some(match (ty, unit) {
            ("cpu", "nanoseconds") | ("cpu", "count") | ("itimer", _) => ProfileType::Cpu,
            ("samples", "count") if period_type == "wall" => ProfileType::Wall,
            ("samples", "count") => ProfileType::Cpu,
            ("wall", _) => ProfileType::Wall,
            ("alloc_objects", _) | ("alloc_count", _) => ProfileType::AllocObjects,
            ("alloc_space", _) | ("alloc_size", _) | ("alloc_in_new_tlab_bytes", _) => {
                ProfileType::AllocSpace
            }
            ("inuse_objects", _) => ProfileType::InuseObjects,
            ("inuse_space", _) => ProfileType::InuseSpace,
            ("goroutine", _) | ("goroutines", _) => ProfileType::Goroutines,
            ("contentions", _) | ("lock_count", _) => ProfileType::Contentions,
            ("delay", _) | ("lock_time", _) => ProfileType::Delay,
            _ => return None,
        })
    }

    /// The value of [`PROFILE_TYPE_LABEL`] a series of this type carries (`None`: CPU,
    /// which carries none).
    pub fn label_value(self) -> Option<&'static str> {
        match self {
            ProfileType::Cpu => None,
            t => Some(t.name()),
        }
    }

    /// A selector matcher text that selects this type's series:
    /// `__profile_type__=""` for CPU, `__profile_type__="alloc_space"` otherwise.
    pub fn matcher(self) -> String {
        format!(
            "{PROFILE_TYPE_LABEL}=\"{}\"",
            self.label_value().unwrap_or("")
        )
    }
}

impl fmt::Display for ProfileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_cpu_has_no_label() {
        for t in ALL_TYPES {
            assert_eq!(ProfileType::from_name(t.name()), Some(t));
        }
        assert_eq!(ProfileType::Cpu.label_value(), None);
        assert_eq!(ProfileType::Cpu.matcher(), r#"__profile_type__="""#);
        assert_eq!(
            ProfileType::AllocSpace.matcher(),
            r#"__profile_type__="alloc_space""#
        );
        assert_eq!(ProfileType::from_name("nonsense"), None);
    }

    #[test]
    fn sample_types_of_common_producers() {
        let t = |a, b, p| ProfileType::from_sample_type(a, b, p);
        assert_eq!(t("cpu", "nanoseconds", "cpu"), Some(ProfileType::Cpu));
        assert_eq!(t("samples", "count", "cpu"), Some(ProfileType::Cpu));
        assert_eq!(t("samples", "count", "wall"), Some(ProfileType::Wall));
        assert_eq!(
            t("alloc_space", "bytes", "space"),
            Some(ProfileType::AllocSpace)
        );
        assert_eq!(
            t("inuse_objects", "count", "space"),
            Some(ProfileType::InuseObjects)
        );
        assert_eq!(
            t("delay", "nanoseconds", "contentions"),
            Some(ProfileType::Delay)
        );
        assert_eq!(t("weird", "furlongs", ""), None);
    }
}
