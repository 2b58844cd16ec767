//! The worker's HTTP endpoints: stackwatch's profiling routes with the worker's metrics
//! appended to `/metrics` (or `/metrics` alone when profiling is off), behind a bearer
//! token when `--http-token-file` is given.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header;
use axum::routing::get;
use axum::Router;
use stackwatch::http::{HttpOptions, ServerHandle};
use stackwatch::Profiler;

use crate::metrics::WorkerMetrics;

/// Serves the endpoints on `addr` from a thread of their own.
pub fn serve(
    addr: SocketAddr,
    metrics: Arc<WorkerMetrics>,
    profiler: Option<&Profiler>,
    token: Option<String>,
) -> Result<ServerHandle, stackwatch::Error> {
    let router = match profiler {
        Some(p) => {
            let m = metrics.clone();
            stackwatch::http::router_with(
                p,
                HttpOptions {
                    extra_metrics: Some(Arc::new(move || m.render())),
                    bearer_token: token,
                },
            )
        }
        None => stackwatch::http::require_token(
            Router::new().route(
                "/metrics",
                get(move || {
                    let m = metrics.clone();
                    async move {
                        (
                            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                            m.render(),
                        )
                    }
                }),
            ),
            token.as_deref(),
        ),
    };
    stackwatch::http::serve_router(router, addr)
}
