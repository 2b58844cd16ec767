//! What every stackwatch HTTP endpoint shares, whether a profiled service's or the
//! collector's, so each piece has one home:
//!
//! - [`serve`]: the accept loop, with a header read timeout and a connection cap that
//!   `axum::serve` does not offer (a peer that never finishes its headers is dropped).
//! - [`auth`]: the bearer-token check (constant time; header or dashboard cookie).
//! - [`metrics_text`]: the Prometheus text exposition writer.

pub mod auth;
pub mod metrics_text;
pub mod serve;

pub use auth::BearerAuth;
pub use metrics_text::MetricsText;
pub use serve::{serve, ServeOptions, ServeStats};
