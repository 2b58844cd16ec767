//! The HTTP endpoints a profiled service serves (docs/protocol.md specifies them).
//!
//! | route | answer |
//! |---|---|
//! | `GET /`, `GET /stacks` | folded text, cumulative since start, or the last `?seconds=N` |
//! | `GET /flamegraph.svg` | the same as an SVG flamegraph |
//! | `GET /debug/pprof/profile?seconds=N` | gzipped pprof of the next N s (default 30), as Go's |
//! | `GET /windows?after=SEQ` | the collector protocol (JSON) |
//! | `GET /metrics` | the profiler's own counters, Prometheus text |
//!
//! [`router`] gives an axum `Router` to mount into an existing app; [`serve`] runs the
//! endpoints on their own thread with their own small runtime, so the caller needs none.

// Handlers return `Response` as their error: axum's own currency, on a cold path, so
// boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::extract::{Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
pub use stackwatch_http::metrics_text::{MetricKind, MetricsText};
use stackwatch_http::{BearerAuth, ServeOptions, ServeStats};
use stackwatch_profile::labels::SampleLabels;
use stackwatch_profile::{pprof, Profile, SvgOptions};

use crate::{Error, LabelFilter, Profiler};

/// Longest `?seconds=` a pprof capture may block for.
pub const MAX_CAPTURE_SECONDS: u64 = 300;

/// Metrics of the application, appended to the profiler's on `GET /metrics`.
pub type ExtraMetrics = std::sync::Arc<dyn Fn() -> String + Send + Sync>;

/// Options of the endpoints.
#[derive(Clone, Default)]
pub struct HttpOptions {
    /// When set, every request must carry `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// The service's own metrics (Prometheus text), served after the profiler's on the
    /// same `/metrics`, so one scrape gets both.
    pub extra_metrics: Option<ExtraMetrics>,
}

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOptions")
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "<set>"))
            .field("extra_metrics", &self.extra_metrics.is_some())
            .finish()
    }
}

#[derive(Clone)]
struct AppState {
    profiler: Profiler,
    extra_metrics: Option<ExtraMetrics>,
}

/// The endpoints as an axum router, without authentication.
pub fn router(profiler: &Profiler) -> Router {
    router_with(profiler, HttpOptions::default())
}

/// The endpoints as an axum router, with options.
pub fn router_with(profiler: &Profiler, opts: HttpOptions) -> Router {
    let state = AppState {
        profiler: profiler.clone(),
        extra_metrics: opts.extra_metrics,
    };
    let auth = BearerAuth::new(opts.bearer_token.as_deref());
    Router::new()
        .route("/", get(stacks))
        .route("/stacks", get(stacks))
        .route("/flamegraph.svg", get(flamegraph))
        .route("/debug/pprof/profile", get(pprof_profile))
        .route("/windows", get(windows))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            stackwatch_http::auth::require,
        ))
        .with_state(state)
}

/// `router` behind a bearer token (none: unchanged), the same check the endpoints use;
/// for routes a service serves beside them.
pub fn require_token(router: Router, token: Option<&str>) -> Router {
    match token {
        Some(t) => router.layer(axum::middleware::from_fn_with_state(
            BearerAuth::new(Some(t)),
            stackwatch_http::auth::require,
        )),
        None => router,
    }
}

/// A running endpoint server; stops when [`ServerHandle::shutdown`] is called or it is
/// dropped, so keep it: `let _server = stackwatch::http::serve(&p, addr)?;`.
#[must_use = "the server stops as soon as its handle is dropped"]
pub struct ServerHandle {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves the endpoints on `addr` (use a loopback address unless a token is set) from a
/// thread of its own.
pub fn serve(profiler: &Profiler, addr: SocketAddr) -> Result<ServerHandle, Error> {
    serve_with(profiler, addr, HttpOptions::default())
}

/// [`serve`] with options.
pub fn serve_with(
    profiler: &Profiler,
    addr: SocketAddr,
    opts: HttpOptions,
) -> Result<ServerHandle, Error> {
    serve_router(router_with(profiler, opts), addr)
}

/// Serves any axum `Router` on `addr` from a thread of its own with its own small
/// runtime (what [`serve`] does with the profiler's router), for services without one.
pub fn serve_router(app: Router, addr: SocketAddr) -> Result<ServerHandle, Error> {
    let os = |what| move |source| Error::Os { what, source };
    let listener = std::net::TcpListener::bind(addr).map_err(os("binding the HTTP address"))?;
    listener
        .set_nonblocking(true)
        .map_err(os("configuring the listener"))?;
    let local = listener
        .local_addr()
        .map_err(os("reading the bound address"))?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(os("starting the HTTP runtime"))?;
    let thread = std::thread::Builder::new()
        .name("stackwatch-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "stackwatch HTTP listener");
                        return;
                    }
                };
                // Header read timeout and connection cap: a slow or flooding peer
                // cannot hold the service's endpoint.
                stackwatch_http::serve(
                    listener,
                    app,
                    ServeOptions::default(),
                    Arc::new(ServeStats::default()),
                    async {
                        let _ = rx.await;
                    },
                )
                .await;
            });
        })
        .map_err(os("spawning the HTTP thread"))?;
    Ok(ServerHandle {
        addr: local,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}

#[derive(Deserialize)]
struct SecondsQuery {
    seconds: Option<u64>,
}

#[derive(Deserialize)]
struct AfterQuery {
    after: Option<u64>,
    labels: Option<u8>,
}

/// The `label=KEY=VALUE` parameters (repeatable, all must hold) of a raw query string.
fn label_filter(raw: Option<&str>) -> Result<LabelFilter, Response> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if k != "label" {
            continue;
        }
        match v.split_once('=') {
            Some((key, value)) if !key.is_empty() => pairs.push((key.to_owned(), value.to_owned())),
            _ => return Err(bad_request(format!("label must be KEY=VALUE, got {v:?}"))),
        }
        if pairs.len() > 16 {
            return Err(bad_request("at most 16 label parameters"));
        }
    }
    Ok(LabelFilter::new(&pairs))
}

fn bad_request(msg: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, format!("{}\n", msg.into())).into_response()
}

/// A malformed query string is a 400 carrying the extractor's reason (which names the
/// field), never a 500 and never a panic.
fn parse_query<T: serde::de::DeserializeOwned>(q: QueryResult<T>) -> Result<T, Response> {
    q.map(|Query(v)| v)
        .map_err(|e| bad_request(format!("bad query string: {}", e.body_text())))
}

/// Runs CPU-bound work (folding, rendering, encoding) off the async thread.
async fn blocking(f: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response())
}

fn with_type(content_type: &'static str, body: impl IntoResponse) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The `?seconds=N` selection: cumulative when absent, the last N s otherwise; only the
/// samples whose labels pass `filter`.
fn selected_profile(
    p: &Profiler,
    seconds: Option<u64>,
    filter: &LabelFilter,
) -> Result<Profile, Response> {
    match seconds {
        None => Ok(p.profile_cumulative_matching(filter)),
        Some(0) => Err(bad_request("seconds must be at least 1")),
        Some(s) => Ok(p.profile_matching(Duration::from_secs(s.min(365 * 24 * 3600)), filter)),
    }
}

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

async fn stacks(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
    q: QueryResult<SecondsQuery>,
) -> Response {
    let (q, filter) = match parse_query(q).and_then(|q| Ok((q, label_filter(raw.as_deref())?))) {
        Ok(q) => q,
        Err(r) => return r,
    };
    blocking(move || {
        let text = match q.seconds {
            // The common `curl host:port/` case, written straight from the store.
            None => st.profiler.cumulative_folded_matching(&filter),
            Some(_) => match selected_profile(&st.profiler, q.seconds, &filter) {
                Ok(p) => p.to_folded(),
                Err(r) => return r,
            },
        };
        with_type("text/plain; charset=utf-8", text)
    })
    .await
}

async fn flamegraph(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
    q: QueryResult<SecondsQuery>,
) -> Response {
    let (q, filter) = match parse_query(q).and_then(|q| Ok((q, label_filter(raw.as_deref())?))) {
        Ok(q) => q,
        Err(r) => return r,
    };
    blocking(
        move || match selected_profile(&st.profiler, q.seconds, &filter) {
            Ok(p) => {
                let opts = SvgOptions {
                    subtitle: Some(match q.seconds {
                        Some(s) => format!("last {s} s"),
                        None => "since start".to_owned(),
                    }),
                    ..SvgOptions::default()
                };
                with_type("image/svg+xml", p.to_svg(&opts))
            }
            Err(r) => r,
        },
    )
    .await
}

async fn pprof_profile(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
    q: QueryResult<SecondsQuery>,
) -> Response {
    let (q, filter) = match parse_query(q).and_then(|q| Ok((q, label_filter(raw.as_deref())?))) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let seconds = q.seconds.unwrap_or(30);
    if seconds == 0 || seconds > MAX_CAPTURE_SECONDS {
        return bad_request(format!("seconds must be 1..={MAX_CAPTURE_SECONDS}"));
    }
    // Dropped unfinished (the client hung up during the sleep), the capture is discarded.
    let capture = st.profiler.start_capture();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    blocking(move || {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"profile\""),
        );
        let p = capture.finish_labeled(&filter);
        let labeled: Vec<(&SampleLabels, &HashMap<String, u64>)> =
            p.labeled.iter().map(|(l, s)| (&**l, s)).collect();
        (h, pprof::encode_labeled(&p.unlabeled, &labeled)).into_response()
    })
    .await
}

async fn windows(State(st): State<AppState>, q: QueryResult<AfterQuery>) -> Response {
    let q = match parse_query(q) {
        Ok(q) => q,
        Err(r) => return r,
    };
    blocking(move || {
        with_type(
            "application/json",
            st.profiler
                .windows_after_json(q.after.unwrap_or(0), q.labels.unwrap_or(0) != 0),
        )
    })
    .await
}

async fn metrics(State(st): State<AppState>) -> Response {
    let mut text = metrics_text(&st.profiler);
    if let Some(extra) = &st.extra_metrics {
        text.push_str(&extra());
    }
    with_type(stackwatch_http::metrics_text::CONTENT_TYPE, text)
}

/// The profiler's counters in the Prometheus text format, for services that serve their
/// own `/metrics` and want to append these.
pub fn metrics_text(profiler: &Profiler) -> String {
    let s = profiler.stats();
    let mut m = MetricsText::new();
    m.single(
        "stackwatch_samples_total",
        MetricKind::Counter,
        "Sampling periods recorded (sum of all stack counts; a sample with timer overruns counts each period).",
        s.samples,
    )
    .single(
        "stackwatch_signals_total",
        MetricKind::Counter,
        "SIGPROF signals handled.",
        s.signals,
    )
    .single(
        "stackwatch_dropped_samples_total",
        MetricKind::Counter,
        "Samples dropped because the sample buffer was full.",
        s.dropped,
    )
    .single(
        "stackwatch_pruned_stacks_total",
        MetricKind::Counter,
        "Distinct stacks folded into [pruned] by the max_stacks bound.",
        s.pruned_stacks,
    )
    .single(
        "stackwatch_label_sets_folded_total",
        MetricKind::Counter,
        "Label sets folded into [labels pruned] by the per-window label set cap.",
        s.label_sets_folded,
    )
    .single(
        "stackwatch_unlabeled_threads_total",
        MetricKind::Counter,
        "Threads that set labels while every label slot was taken (sampled without labels).",
        s.unlabeled_threads,
    )
    .single(
        "stackwatch_handler_seconds_total",
        MetricKind::Counter,
        "Time spent inside the signal handler.",
        format!("{:.6}", s.handler_ns as f64 / 1e9),
    )
    .single(
        "stackwatch_aggregator_cpu_seconds_total",
        MetricKind::Counter,
        "CPU time of the aggregator thread.",
        format!("{:.6}", s.aggregator_ns as f64 / 1e9),
    )
    .single(
        "stackwatch_memory_bytes",
        MetricKind::Gauge,
        "Bytes held by the profiler: buffers, unwind tables, windows.",
        s.memory_bytes,
    )
    .single(
        "stackwatch_threads_tracked",
        MetricKind::Gauge,
        "Threads with a CPU timer.",
        s.threads,
    )
    .single(
        "stackwatch_per_thread_timers",
        MetricKind::Gauge,
        "1 when per-thread CPU timers are used, 0 on the setitimer fallback.",
        u8::from(s.per_thread_timers),
    )
    .single(
        "stackwatch_frequency_hz",
        MetricKind::Gauge,
        "Sampling frequency.",
        profiler.frequency_hz(),
    )
    .family(
        "stackwatch_info",
        MetricKind::Gauge,
        "Identity of this profiler instance.",
    )
    .sample(
        "stackwatch_info",
        &[("instance", profiler.instance_id())],
        1,
    );
    m.finish()
}
