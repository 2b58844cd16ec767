//! The profile model shared by every stackwatch crate.
//!
//! A [`Profile`] is a set of folded stacks (`root;caller;callee` → count of sampling
//! periods) plus the sampling period and the time span it covers. This crate owns the
//! formats those profiles travel in and the operations on them:
//!
//! - [`folded`]: the Brendan Gregg folded text format (`flamegraph.pl` / inferno input),
//!   parsed strictly with line-numbered errors.
//! - [`pprof`]: the gzipped pprof protobuf that `go tool pprof` reads (encode and decode).
//! - [`svg`]: flamegraphs and differential flamegraphs, laid out by inferno.
//! - [`budget`]: what a batch of stacks from outside may cost once decoded.
//! - [`labels`]: sample labels (`table=orders`): their budget, canonical text and folding.
//! - [`clock`]: the wall clock in the units stored and sent.
//! - [`views`]: frames hidden by a pattern, the sandwich of a function, plumbing frames.
//! - [`wire_scan`]: what decoding a protobuf (or its JSON) would build, counted first.
//! - [`protocol`]: the types of the window protocol (`GET /windows?after=SEQ`) that the
//!   sampler serves and the collector reads; docs/protocol.md is its specification.
//!
//! It depends on nothing else of stackwatch, so the sampler, the store and the server all
//! build on it.

pub mod budget;
pub mod clock;
pub mod folded;
pub mod labels;
pub mod pprof;
pub mod profile;
pub mod protocol;
pub mod svg;
pub mod views;
pub mod wire_scan;

pub use budget::{bound_labeled_stacks, BoundedStacks, BudgetError, LabelSetIndex, StackBudget};
pub use folded::{parse_folded, FoldedError, PRUNED_FRAME};
pub use labels::{LabelBudget, SampleLabels, LABELS_PRUNED};
pub use profile::{FunctionStat, Profile};
pub use svg::SvgOptions;

impl Profile {
    /// Gzipped pprof protobuf (see [`pprof::encode`]).
    pub fn to_pprof(&self) -> Vec<u8> {
        pprof::encode(self)
    }

    /// SVG flamegraph (see [`svg::render`]).
    pub fn to_svg(&self, opts: &SvgOptions) -> Vec<u8> {
        svg::render(self, opts)
    }
}
