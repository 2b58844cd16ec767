//! Mounting the profiler's endpoints into a service's own axum app, under `/debug/stackwatch`,
//! beside the service's routes and on its runtime, with a bearer token on the profiler's
//! routes only. A labeled handler shows up in the profile under `endpoint="/work"`.
//!
//! ```text
//! cargo run -p stackwatch --example axum_router            # listens on 127.0.0.1:8080
//! curl -s localhost:8080/work                               # the service's own route
//! curl -s -H 'Authorization: Bearer demo' 'localhost:8080/debug/stackwatch?label=endpoint=/work'
//! curl -s -H 'Authorization: Bearer demo' 'localhost:8080/debug/stackwatch/windows?after=0&labels=1'
//! ```

use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use stackwatch::{LabelFutureExt, LabelSet};

#[inline(never)]
fn busy(d: Duration) -> u64 {
    let until = Instant::now() + d;
    let mut x = 1u64;
    while Instant::now() < until {
        x = std::hint::black_box(x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(5));
    }
    x
}

async fn work() -> String {
    let set = LabelSet::new(&[("endpoint", "/work")]);
    // The labels are current during each poll of this future, on whichever worker
    // thread polls it.
    async { format!("{}\n", busy(Duration::from_millis(50))) }
        .with_labels(set)
        .await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let profiler = stackwatch::Profiler::builder().frequency_hz(99).start()?;
    let profiling =
        stackwatch::http::require_token(stackwatch::http::router(&profiler), Some("demo"));
    let app = Router::new()
        .route("/work", get(work))
        .nest("/debug/stackwatch", profiling);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{addr}: /work, /debug/stackwatch (token: demo)");
    axum::serve(listener, app).await?;
    Ok(())
}
