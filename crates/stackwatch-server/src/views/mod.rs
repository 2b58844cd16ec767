//! The query routes, one module each: the merged profile (`/api/profile.*`), a
//! differential flamegraph (`/api/diff.*`), a selection over time in its type's unit
//! (`/api/timeseries`), top functions (`/api/top`), the sandwich of one function
//! (`/api/sandwich`, `/api/sandwich.svg`), the verdict of what changed (`/api/changes`) and
//! the label listings. docs/api.md documents each. Their parameters are
//! [`crate::request`]'s extractors; each reads the store through [`crate::query::read`].
//!
//! Counts become values by the profile type's [`Measure`](measure::Measure): periods (CPU, wall) times
//! each target's sampling period over the bucket's length (cores; wall seconds per
//! second); amounts accumulated over each profile's interval (allocations, contentions,
//! delay) over the bucket's length (per second); amounts at the time of each profile
//! (in-use memory, goroutines) as each target's mean per profile, summed over targets.
//! Targets whose period is unknown (folded text) count at [`DEFAULT_PERIOD_NS`](measure::DEFAULT_PERIOD_NS).

pub mod changes;
pub mod diff;
pub mod labels;
pub mod measure;
pub mod profile;
pub mod sandwich;
pub mod timeseries;
pub mod top;
