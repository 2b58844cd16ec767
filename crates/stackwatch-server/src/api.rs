//! The collector's HTTP API: the routes, authentication, health and the collector's
//! own metrics. The query routes are in [`crate::query`].

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::query::{self, Format};
use crate::scrape::{HealthMap, TargetHealth};
use crate::writer::WriterHandle;
use crate::Config;

/// What the routes share.
#[derive(Clone)]
pub struct ApiState {
    cfg: std::sync::Arc<Config>,
    health: HealthMap,
    writer: WriterHandle,
}

impl ApiState {
    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Shared state of the routes.
    pub fn new(cfg: Config, health: HealthMap, writer: WriterHandle) -> Self {
        ApiState {
            cfg: std::sync::Arc::new(cfg),
            health,
            writer,
        }
    }
}

/// Every route, behind the bearer token when one is configured.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/assets/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/metrics", get(metrics))
        .route("/api/targets", get(targets))
        .route(
            "/api/profile.svg",
            get(|s, q| query::profile(s, Format::Svg, q)),
        )
        .route(
            "/api/profile.folded",
            get(|s, q| query::profile(s, Format::Folded, q)),
        )
        .route(
            "/api/profile.pb.gz",
            get(|s, q| query::profile(s, Format::Pprof, q)),
        )
        .route("/api/diff.svg", get(|s, q| query::diff(s, Format::Svg, q)))
        .route(
            "/api/diff.folded",
            get(|s, q| query::diff(s, Format::Folded, q)),
        )
        .route("/api/timeseries", get(query::timeseries))
        .route("/api/top", get(query::top))
        .route("/api/labels", get(query::labels))
        .route("/api/label/{name}/values", get(query::label_values))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

/// The dashboard, embedded at build time from web/ (no CDN: it works offline).
const INDEX_HTML: &str = include_str!("../../../web/index.html");
const APP_JS: &str = include_str!("../../../web/app.js");
const STYLE_CSS: &str = include_str!("../../../web/style.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Frame names are untrusted; the page never needs inline script or other origins.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; frame-src 'self' blob:",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// The token from `Authorization: Bearer` or, for the dashboard's frames and download
/// links (which cannot set headers), the `stackwatch_token` cookie the page sets.
fn presented_token(req: &axum::extract::Request) -> String {
    if let Some(t) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return t.to_owned();
    }
    for cookie in req.headers().get_all(header::COOKIE) {
        for part in cookie.to_str().unwrap_or("").split(';') {
            if let Some(v) = part.trim().strip_prefix("stackwatch_token=") {
                return percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned();
            }
        }
    }
    String::new()
}

async fn auth(
    State(st): State<ApiState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // The page itself and its assets load without a token; the page then asks for it.
    let public = matches!(
        req.uri().path(),
        "/" | "/assets/app.js" | "/assets/style.css"
    );
    if let (Some(token), false) = (&st.cfg.bearer_token, public) {
        let given = presented_token(&req);
        let ok = given.len() == token.len()
            && given
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0;
        if !ok {
            let mut r =
                (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(req).await
}

fn snapshot(health: &HealthMap) -> Vec<TargetHealth> {
    health
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect()
}

async fn targets(State(st): State<ApiState>) -> Json<Vec<TargetHealth>> {
    Json(snapshot(&st.health))
}

/// Escapes a Prometheus label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_set(t: &TargetHealth) -> String {
    let mut s = String::from("{");
    let _ = write!(s, "url=\"{}\"", escape(&t.url));
    for (k, v) in &t.labels {
        if k != "url" && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            let _ = write!(s, ",{k}=\"{}\"", escape(v));
        }
    }
    s.push('}');
    s
}

async fn metrics(State(st): State<ApiState>) -> Response {
    let targets = snapshot(&st.health);
    let mut out = String::new();
    type PerTarget = (
        &'static str,
        &'static str,
        &'static str,
        fn(&TargetHealth) -> String,
    );
    let per_target: [PerTarget; 7] = [
        (
            "stackwatch_target_up",
            "gauge",
            "1 if the last scrape succeeded.",
            |t| u8::from(t.up).to_string(),
        ),
        (
            "stackwatch_target_scrape_duration_seconds",
            "gauge",
            "Duration of the last scrape.",
            |t| format!("{:.6}", t.last_scrape_duration_seconds),
        ),
        (
            "stackwatch_target_scrape_bytes",
            "gauge",
            "Body size of the last scrape.",
            |t| t.last_scrape_bytes.to_string(),
        ),
        (
            "stackwatch_target_samples_ingested_total",
            "counter",
            "Periods stored from the target.",
            |t| t.samples_ingested_total.to_string(),
        ),
        (
            "stackwatch_target_scrape_failures_total",
            "counter",
            "Failed scrapes.",
            |t| t.scrape_failures_total.to_string(),
        ),
        (
            "stackwatch_target_scrapes_skipped_total",
            "counter",
            "Scrapes skipped because the target fell behind.",
            |t| t.scrapes_skipped_total.to_string(),
        ),
        (
            "stackwatch_target_windows_lost_total",
            "counter",
            "Windows the worker no longer had when asked.",
            |t| t.windows_lost_total.to_string(),
        ),
    ];
    for (name, kind, help, value) in per_target {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for t in &targets {
            let _ = writeln!(out, "{name}{} {}", label_set(t), value(t));
        }
    }
    let w = &st.writer.stats;
    for (name, kind, help, v) in [
        (
            "stackwatch_ingest_rows_total",
            "counter",
            "Stack rows committed.",
            w.rows.load(Ordering::Relaxed) as f64,
        ),
        (
            "stackwatch_ingest_windows_total",
            "counter",
            "Windows committed.",
            w.windows.load(Ordering::Relaxed) as f64,
        ),
        (
            "stackwatch_ingest_transactions_total",
            "counter",
            "Ingest transactions committed.",
            w.flushes.load(Ordering::Relaxed) as f64,
        ),
        (
            "stackwatch_ingest_errors_total",
            "counter",
            "Ingest transactions that failed.",
            w.flush_errors.load(Ordering::Relaxed) as f64,
        ),
        (
            "stackwatch_ingest_seconds_total",
            "counter",
            "Time spent in ingest transactions.",
            w.flush_micros.load(Ordering::Relaxed) as f64 / 1e6,
        ),
        (
            "stackwatch_rollup_steps_total",
            "counter",
            "Rollup steps run.",
            w.rollups.load(Ordering::Relaxed) as f64,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
