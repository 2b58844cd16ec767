//! The collector's HTTP API: the routes, authentication, health and the collector's
//! own metrics. The query routes are in [`crate::views`], their parameters in
//! [`crate::request`]; what they share is in [`crate::state`].

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use stackwatch_http::auth::{clear_cookie, token_cookie};
use stackwatch_http::metrics_text::{MetricKind, MetricsText, CONTENT_TYPE as METRICS_TYPE};

use crate::request::{ParamError, QueryParams};
use crate::scope::{unauthorized, ReadScope, COOKIE};
use crate::scrape::TargetHealth;
use crate::state::ApiState;
use crate::views::{self, profile::Format};

/// Every route, behind the tokens when any is configured. Each route that reads takes
/// its request's [`ReadScope`] and reads through it.
pub fn router(state: ApiState) -> Router {
    // The page itself and its assets load without a token; the page then asks for one
    // and logs in (`POST /api/login`), which keeps it in an `HttpOnly` cookie for frames
    // and downloads, which cannot set headers.
    let auth = state.read_tokens.auth().clone();
    Router::new()
        .route("/", get(|| async { asset("/") }))
        .route(
            "/assets/{file}",
            get(|uri: axum::http::Uri| async move { asset(uri.path()) }),
        )
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/metrics", get(metrics))
        .route("/api/targets", get(targets))
        .route("/api/push-sources", get(push_sources))
        .route(
            "/api/profile.svg",
            get(|s, scope, sel, layout, hide| {
                views::profile::profile(s, scope, Format::Svg, sel, layout, hide)
            }),
        )
        .route(
            "/api/profile.folded",
            get(|s, scope, sel, layout, hide| {
                views::profile::profile(s, scope, Format::Folded, sel, layout, hide)
            }),
        )
        .route(
            "/api/profile.pb.gz",
            get(|s, scope, sel, layout, hide| {
                views::profile::profile(s, scope, Format::Pprof, sel, layout, hide)
            }),
        )
        .route(
            "/api/diff.svg",
            get(|s, scope, cmp, layout, hide, q| {
                views::diff::diff(s, scope, Format::Svg, cmp, layout, hide, q)
            }),
        )
        .route(
            "/api/diff.folded",
            get(|s, scope, cmp, layout, hide, q| {
                views::diff::diff(s, scope, Format::Folded, cmp, layout, hide, q)
            }),
        )
        .route("/api/timeseries", get(views::timeseries::timeseries))
        .route("/api/top", get(views::top::top))
        .route("/api/sandwich", get(views::sandwich::sandwich_json))
        .route("/api/sandwich.svg", get(views::sandwich::sandwich_svg))
        .route("/api/changes", get(views::changes::changes))
        .route("/api/labels", get(views::labels::labels))
        .route("/api/label-keys", get(views::labels::label_keys))
        .route("/api/profile-types", get(views::labels::profile_types))
        .route("/api/label/{name}/values", get(views::labels::label_values))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            stackwatch_http::auth::require,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// The body of `POST /api/login`.
#[derive(serde::Deserialize)]
struct Login {
    token: String,
}

/// Whether the login cookie is `Secure`: `http.cookie_secure`, or the request came over
/// TLS to a proxy in front (`X-Forwarded-Proto: https`; the collector speaks plain HTTP).
fn cookie_secure(st: &ApiState, headers: &HeaderMap) -> bool {
    st.cfg.http.cookie_secure
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// `POST /api/login` with `{"token": "..."}` (JSON only, which a form on another site
/// cannot send): a configured token gets `204` and the `HttpOnly; SameSite=Strict`
/// cookie that carries it (`Secure` over TLS), anything else `401`.
async fn login(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<Login>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(login) = match body {
        Ok(b) => b,
        Err(e) => {
            return (
                e.status(),
                Json(serde_json::json!({ "error": format!("expected {{\"token\": \"...\"}} as application/json: {}", e.body_text()) })),
            )
                .into_response()
        }
    };
    if st.read_tokens.scope_of_token(&login.token).is_none() {
        return unauthorized("wrong token\n");
    }
    match token_cookie(COOKIE, &login.token, cookie_secure(&st, &headers)) {
        Some(cookie) => (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response(),
        // A configured token is visible ASCII once percent-encoded; never reached.
        None => unauthorized("the token cannot be a cookie\n"),
    }
}

/// `POST /api/logout`: `204` and the cookie removed.
async fn logout(State(st): State<ApiState>, headers: HeaderMap) -> Response {
    let secure = cookie_secure(&st, &headers);
    match clear_cookie(COOKIE, secure) {
        Some(c) => (StatusCode::NO_CONTENT, [(header::SET_COOKIE, c)]).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// Refuses a push that a browser page sent: one with an `Origin` header, or with a
/// `Sec-Fetch-Site` other than `none` (browsers add them; SDKs, agents and collectors
/// do not). A page on any site can POST a form (`text/plain`, `multipart/form-data`,
/// which Pyroscope's `/ingest` takes) to a collector it can reach, and with
/// `push.allow_anonymous` that would store its data; a form cannot drop those headers.
pub(crate) async fn refuse_browser_pushes(req: axum::extract::Request, next: Next) -> Response {
    let h = req.headers();
    let from_page = h.contains_key(header::ORIGIN)
        || h.get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() != b"none");
    if from_page {
        tracing::debug!(path = %req.uri().path(), "push from a browser page refused");
        return (
            StatusCode::FORBIDDEN,
            "pushes from a browser page are refused (a request with Origin or Sec-Fetch-Site): push from a program\n",
        )
            .into_response();
    }
    next.run(req).await
}

/// Every response: `nosniff`; SVGs (which embed untrusted frame names) also get a
/// policy that lets their own inline script run but load and send nothing.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if h.get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"image/svg+xml"))
    {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        );
    }
    r
}

/// A file of the dashboard (the `stackwatch-web` crate: web/, embedded at build time, no
/// CDN: it works offline), or 404.
fn asset(path: &str) -> Response {
    let Some(a) = stackwatch_web::asset(path) else {
        return (StatusCode::NOT_FOUND, "no such file\n").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, a.content_type),
            // Frame names are untrusted; the page never needs inline script or other origins.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; frame-src 'self' blob:",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        a.body,
    )
        .into_response()
}

/// Every configured target: those this collector scrapes with their health, those
/// another collector sharing the store scrapes with its id.
fn snapshot(st: &ApiState) -> Vec<TargetHealth> {
    let mut out: Vec<TargetHealth> = {
        let h = st.health.lock().unwrap_or_else(|e| e.into_inner());
        h.iter()
            .map(|(key, t)| {
                let mut t = t.clone();
                t.collector = st.members.owner(key);
                t
            })
            .collect()
    };
    {
        let backlog = st
            .writer
            .backlog_by_target
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for t in &mut out {
            t.store_backlog_rows = backlog.get(&t.labels).copied().unwrap_or(0);
        }
    }
    let local: std::collections::HashSet<(String, _)> = out
        .iter()
        .map(|t| (t.url.clone(), t.labels.clone()))
        .collect();
    for t in st.cfg.all_targets().0 {
        if local.contains(&(t.url.clone(), t.labels.clone())) {
            continue;
        }
        let key = crate::scrape::target_key(&t);
        let mut h = TargetHealth::new(&t);
        h.collector = st.members.owner(&key);
        h.scraped_here = false;
        out.push(h);
    }
    out
}

/// `GET /api/targets`: the targets the request's scope sees.
async fn targets(State(st): State<ApiState>, scope: ReadScope) -> Response {
    let mut out = snapshot(&st);
    out.retain(|t| scope.sees(&t.labels));
    // A query node scrapes nothing: it lists the fleet as stored (labels only; each
    // target's health is on the collector that scrapes it).
    let query_node = st.cfg.targets.is_empty() && st.cfg.target_files.is_empty();
    if query_node && st.members.shared() {
        match crate::query::read(&st, &scope, |store| store.targets()).await {
            Ok(stored) => {
                for labels in stored {
                    let t = crate::config::TargetConfig {
                        url: String::new(),
                        kind: crate::config::TargetKind::Stackwatch,
                        labels,
                        folded_counts: Default::default(),
                        bearer_token: None,
                        bearer_token_file: None,
                    };
                    let mut h = TargetHealth::new(&t);
                    h.kind = "stored";
                    h.scraped_here = false;
                    out.push(h);
                }
            }
            Err(resp) => return resp,
        }
    }
    Json(out).into_response()
}

/// Series per page of `/api/push-sources` unless `limit` says otherwise.
pub const PUSH_SOURCES_PAGE: usize = 500;
/// The largest `limit` of `/api/push-sources`.
pub const MAX_PUSH_SOURCES_PAGE: usize = 5_000;

/// Push sources and their series (empty when push is off), those of the request's
/// scope's tenants, a page of at most `limit`
/// series (default [`PUSH_SOURCES_PAGE`]) after `cursor`; the next page's cursor in
/// the `X-Next-Cursor` header when more follow.
async fn push_sources(
    State(st): State<ApiState>,
    scope: ReadScope,
    params: QueryParams,
) -> Response {
    let limit = match params.limit(PUSH_SOURCES_PAGE, MAX_PUSH_SOURCES_PAGE) {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    let cursor = match params.get("cursor") {
        None => None,
        Some(c) => match crate::push::gate::PageCursor::decode(c) {
            Some(c) => Some(c),
            None => {
                return ParamError::new("cursor", "not a cursor of /api/push-sources")
                    .into_response()
            }
        },
    };
    let (page, next) = st
        .push
        .as_ref()
        .map(|g| g.sources_page(cursor.as_ref(), limit, |tenant| scope.sees_tenant(tenant)))
        .unwrap_or_default();
    let mut r = Json(page).into_response();
    if let Some(next) = next.and_then(|n| HeaderValue::from_str(&n.encode()).ok()) {
        r.headers_mut().insert("x-next-cursor", next);
    }
    r
}

fn target_labels(t: &TargetHealth) -> Vec<(&str, &str)> {
    let mut labels = vec![("url", t.url.as_str())];
    labels.extend(
        t.labels
            .iter()
            .filter(|(k, _)| k.as_str() != "url")
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    labels
}

/// `GET /metrics`: the collector's own metrics, every target's among them, so for the
/// operator only: `403` to a tenant's read token.
async fn metrics(State(st): State<ApiState>, scope: ReadScope) -> Response {
    if !scope.is_all() {
        return (
            StatusCode::FORBIDDEN,
            "/metrics shows every tenant's targets: the operator's bearer_token reads it\n",
        )
            .into_response();
    }
    let all = snapshot(&st);
    let (targets, elsewhere): (Vec<TargetHealth>, Vec<TargetHealth>) =
        all.into_iter().partition(|t| t.scraped_here);
    let mut m = MetricsText::new();
    m.family(
        "stackwatch_target_collector",
        MetricKind::Gauge,
        "1 for the collector that scrapes each configured target (label collector).",
    );
    for t in targets.iter().chain(&elsewhere) {
        let mut labels = target_labels(t);
        labels.push(("collector", t.collector.as_str()));
        m.sample("stackwatch_target_collector", &labels, 1);
    }
    m.family(
        "stackwatch_target_store_backlog_rows",
        MetricKind::Gauge,
        "Rows of the target waiting for the store to come back.",
    );
    for t in &targets {
        m.sample(
            "stackwatch_target_store_backlog_rows",
            &target_labels(t),
            t.store_backlog_rows,
        );
    }
    let live = st.members.live();
    m.family(
        "stackwatch_collector_live",
        MetricKind::Gauge,
        "Collectors sharing the store that this one sees alive (label collector).",
    );
    for c in &live {
        m.sample(
            "stackwatch_collector_live",
            &[("collector", c.id.as_str()), ("addr", c.addr.as_str())],
            1,
        );
    }
    type PerTarget = (
        &'static str,
        MetricKind,
        &'static str,
        fn(&TargetHealth) -> String,
    );
    let per_target: [PerTarget; 12] = [
        (
            "stackwatch_target_up",
            MetricKind::Gauge,
            "1 if the last scrape succeeded.",
            |t| u8::from(t.up).to_string(),
        ),
        (
            "stackwatch_target_scrape_duration_seconds",
            MetricKind::Gauge,
            "Duration of the last scrape.",
            |t| format!("{:.6}", t.last_scrape_duration_seconds),
        ),
        (
            "stackwatch_target_scrape_bytes",
            MetricKind::Gauge,
            "Body size of the last scrape.",
            |t| t.last_scrape_bytes.to_string(),
        ),
        (
            "stackwatch_target_samples_ingested_total",
            MetricKind::Counter,
            "Periods stored from the target.",
            |t| t.samples_ingested_total.to_string(),
        ),
        (
            "stackwatch_target_scrape_failures_total",
            MetricKind::Counter,
            "Failed scrapes.",
            |t| t.scrape_failures_total.to_string(),
        ),
        (
            "stackwatch_target_scrapes_skipped_total",
            MetricKind::Counter,
            "Scrapes skipped because the target fell behind.",
            |t| t.scrapes_skipped_total.to_string(),
        ),
        (
            "stackwatch_target_windows_lost_total",
            MetricKind::Counter,
            "Windows the worker no longer had when asked.",
            |t| t.windows_lost_total.to_string(),
        ),
        (
            "stackwatch_target_stacks_truncated_total",
            MetricKind::Counter,
            "Stacks cut at scrape.max_stack_depth.",
            |t| t.stacks_truncated_total.to_string(),
        ),
        (
            "stackwatch_target_stacks_pruned_total",
            MetricKind::Counter,
            "Distinct stacks folded into [pruned] by scrape.max_stacks_per_window.",
            |t| t.stacks_pruned_total.to_string(),
        ),
        (
            "stackwatch_target_label_sets_folded_total",
            MetricKind::Counter,
            "Sample label sets folded into [labels pruned] by scrape.max_label_sets_per_window.",
            |t| t.label_sets_folded_total.to_string(),
        ),
        (
            "stackwatch_target_scrapes_row_limited_total",
            MetricKind::Counter,
            "Scrapes that left windows for the next one (scrape.max_rows_per_scrape).",
            |t| t.scrapes_row_limited_total.to_string(),
        ),
        (
            "stackwatch_target_folded_intervals_dropped_total",
            MetricKind::Counter,
            "Cumulative folded intervals refused for good (a budget, the store): the baseline moved on without them.",
            |t| t.folded_intervals_dropped_total.to_string(),
        ),
    ];
    for (name, kind, help, value) in per_target {
        m.family(name, kind, help);
        for t in &targets {
            m.sample(name, &target_labels(t), value(t));
        }
    }
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let w = &st.writer;
    m.single(
        "stackwatch_ingest_rows_total",
        MetricKind::Counter,
        "Stack rows committed.",
        load(&w.rows),
    )
    .single(
        "stackwatch_ingest_windows_total",
        MetricKind::Counter,
        "Windows committed.",
        load(&w.windows),
    )
    .single(
        "stackwatch_ingest_transactions_total",
        MetricKind::Counter,
        "Ingest transactions committed.",
        load(&w.flushes),
    )
    .single(
        "stackwatch_ingest_errors_total",
        MetricKind::Counter,
        "Ingest requests the store refused.",
        load(&w.flush_errors),
    )
    .single(
        "stackwatch_ingest_isolated_failures_total",
        MetricKind::Counter,
        "Requests refused alone after a shared transaction failed (the others were stored).",
        load(&w.isolated_failures),
    )
    .single(
        "stackwatch_ingest_seconds_total",
        MetricKind::Counter,
        "Time spent in ingest transactions.",
        load(&w.flush_micros) as f64 / 1e6,
    )
    .single(
        "stackwatch_rollup_steps_total",
        MetricKind::Counter,
        "Rollup steps run.",
        load(&w.rollups),
    )
    .single(
        "stackwatch_rollup_errors_total",
        MetricKind::Counter,
        "Rollup steps that failed.",
        load(&w.rollup_errors),
    )
    .single(
        "stackwatch_retention_deleted_rows_total",
        MetricKind::Counter,
        "Rows deleted by retention: samples, stacks, targets, checkpoints.",
        load(&w.retention_deleted),
    )
    .single(
        "stackwatch_store_unavailable",
        MetricKind::Gauge,
        "1 while the store cannot be written (windows wait in the backlog).",
        load(&w.store_unavailable),
    )
    .single(
        "stackwatch_store_backlog_rows",
        MetricKind::Gauge,
        "Rows waiting for the store to come back (store.max_buffered_rows).",
        load(&w.backlog_rows),
    )
    .single(
        "stackwatch_store_backlog_windows",
        MetricKind::Gauge,
        "Windows waiting for the store to come back.",
        load(&w.backlog_windows),
    )
    .single(
        "stackwatch_store_backlog_refused_total",
        MetricKind::Counter,
        "Write requests refused because the backlog was full (their workers keep the windows).",
        load(&w.backlog_refused),
    )
    .single(
        "stackwatch_store_backlog_dropped_windows_total",
        MetricKind::Counter,
        "Backlogged windows the store refused for what they are once it was back.",
        load(&w.backlog_dropped_windows),
    )
    .single(
        "stackwatch_store_spool_bytes",
        MetricKind::Gauge,
        "Bytes of backlogged requests in the spool on disk (<data_dir>/backlog).",
        load(&w.spool_bytes),
    )
    .single(
        "stackwatch_store_spooled_rows_total",
        MetricKind::Counter,
        "Rows written to the backlog's spool (each request synced before it is acknowledged).",
        load(&w.spooled_rows),
    )
    .single(
        "stackwatch_store_spool_replayed_total",
        MetricKind::Counter,
        "Requests read back from the spool at start, to be stored before anything new.",
        load(&w.spool_replayed),
    )
    .single(
        "stackwatch_store_spool_already_stored_total",
        MetricKind::Counter,
        "Replayed requests the store had already committed before the last stop (not stored again).",
        load(&w.spool_already_stored),
    )
    .single(
        "stackwatch_store_spool_corrupt_records_total",
        MetricKind::Counter,
        "Torn or corrupt spool records skipped at start (writes a crash cut short, never acknowledged).",
        load(&w.spool_corrupt_records),
    )
    .single(
        "stackwatch_store_spool_errors_total",
        MetricKind::Counter,
        "Requests refused because the spool could not be written (not acknowledged).",
        load(&w.spool_errors),
    )
    .single(
        "stackwatch_sqlite_memory_bytes",
        MetricKind::Gauge,
        "Bytes SQLite holds in this process: the page caches of the writer and the pooled readers, each bounded by its cache size (0 on ClickHouse).",
        stackwatch_store::sqlite_memory_bytes(),
    )
    .single(
        "stackwatch_store_cache_bytes",
        MetricKind::Gauge,
        "Bytes of the SQLite store's own caches in this process: the writer's id caches and the query connections' stack texts, each bounded (0 on ClickHouse).",
        stackwatch_store::store_cache_bytes(),
    )
    .single(
        "stackwatch_collector_maintenance",
        MetricKind::Gauge,
        "1 when this collector runs rollups and retention for the shared store.",
        u8::from(st.members.maintenance.load(Ordering::Relaxed)),
    );
    let q = &st.slots.stats;
    m.single(
        "stackwatch_queries_total",
        MetricKind::Counter,
        "Queries admitted.",
        load(&q.admitted),
    )
    .single(
        "stackwatch_queries_in_flight",
        MetricKind::Gauge,
        "Queries running now.",
        load(&q.in_flight),
    )
    .single(
        "stackwatch_queries_waiting",
        MetricKind::Gauge,
        "Queries waiting for a slot now.",
        st.slots.waiting(),
    )
    .family(
        "stackwatch_queries_shed_total",
        MetricKind::Counter,
        "Queries answered 503 without running (query.max_queued, query.queue_timeout).",
    )
    .sample(
        "stackwatch_queries_shed_total",
        &[("reason", "queue_full")],
        load(&q.shed_queue_full),
    )
    .sample(
        "stackwatch_queries_shed_total",
        &[("reason", "queue_timeout")],
        load(&q.shed_queue_timeout),
    )
    .family(
        "stackwatch_queries_stopped_total",
        MetricKind::Counter,
        "Queries stopped while running (query.timeout, or the client went away).",
    )
    .sample(
        "stackwatch_queries_stopped_total",
        &[("reason", "timeout")],
        load(&q.timed_out),
    )
    .sample(
        "stackwatch_queries_stopped_total",
        &[("reason", "client_gone")],
        load(&q.abandoned),
    )
    .single(
        "stackwatch_queries_selector_refused_total",
        MetricKind::Counter,
        "Queries refused for a selector over a budget (query.max_matchers, query.max_regex_*).",
        load(&q.selector_refused),
    )
    .single(
        "stackwatch_query_seconds_total",
        MetricKind::Counter,
        "Time spent running queries.",
        load(&q.micros) as f64 / 1e6,
    );
    let h = &st.http;
    m.single(
        "stackwatch_http_connections_open",
        MetricKind::Gauge,
        "API connections open now.",
        load(&h.open_connections),
    )
    .single(
        "stackwatch_http_connections_refused_total",
        MetricKind::Counter,
        "Connections closed on accept (http.max_connections).",
        load(&h.refused_total),
    )
    .single(
        "stackwatch_http_connection_errors_total",
        MetricKind::Counter,
        "Connections ended by an error (http.header_read_timeout, malformed requests).",
        load(&h.errors_total),
    );
    if let Some(gate) = &st.push {
        crate::push::write_metrics(gate, &mut m);
    }
    ([(header::CONTENT_TYPE, METRICS_TYPE)], m.finish()).into_response()
}
