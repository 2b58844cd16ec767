//! The one way a route reads the store: within a query slot, the query budget and the
//! request's scope.
//!
//! Every read goes through the query slots ([`crate::state::QuerySlots`]): a bounded
//! number run, a bounded number wait, the rest get `503` with `Retry-After`. A running
//! query stops at `query.timeout` or as soon as its client goes away. The routes
//! themselves are in [`crate::views`]; their parameters in [`crate::request`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use stackwatch_profile::clock::unix_s as now_s;
use stackwatch_store::{Interruption, ProfileReader, QueryGuard, StoreError};

use crate::request::ParamError;
use crate::scope::{ReadScope, ScopedStore};
use crate::state::{ApiState, Shed};

/// `503` with `Retry-After` and a JSON reason: the store failed or the collector is
/// shedding load. The message carries no request data.
fn unavailable(e: impl std::fmt::Display, retry_after_s: u64) -> Response {
    let mut r = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "error": e.to_string() })),
    )
        .into_response();
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&retry_after_s.to_string()).unwrap_or(HeaderValue::from_static("1")),
    );
    r
}

pub(crate) fn server_error(e: impl std::fmt::Display) -> Response {
    unavailable(e, 1)
}

/// Sets the query's cancel flag when the handler's future is dropped (the client went
/// away), so the store stops working for nobody.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `f` on a pooled read-only connection off the async threads, within a query
/// slot and the query budget; the slot is held until `f` (rendering included) is done.
///
/// `f` sees the store as `scope` does ([`ScopedStore`]): this is the one place a route
/// reaches the store, so none can read past its request's scope.
pub(crate) async fn read<T: Send + 'static>(
    st: &ApiState,
    scope: &ReadScope,
    f: impl FnOnce(&dyn ProfileReader) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    let slot = st.slots.acquire().await.map_err(|shed| {
        let retry = st.cfg.query.queue_timeout.as_secs().max(1);
        unavailable(
            match shed {
                Shed::QueueFull => format!(
                    "overloaded: {} queries running and {} waiting (query.max_concurrent, query.max_queued); retry later",
                    st.cfg.query.max_concurrent, st.cfg.query.max_queued
                ),
                Shed::QueueTimeout => format!(
                    "overloaded: no query slot within {:?} (query.queue_timeout); retry later",
                    st.cfg.query.queue_timeout
                ),
            },
            retry,
        )
    })?;
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel = CancelOnDrop(cancelled.clone());
    let guard = QueryGuard {
        deadline: Instant::now() + st.cfg.query.timeout,
        cancelled,
    };
    let readers = st.readers.clone();
    let slots = st.slots.clone();
    let scope = scope.clone();
    // Label listings of a tenant scope read the rows of the retention (windows are at
    // most a day ahead).
    let retention = i64::try_from(st.cfg.storage.retention.as_secs()).unwrap_or(i64::MAX);
    let now = now_s();
    let label_range = (now.saturating_sub(retention), now.saturating_add(86_400));
    st.slots
        .run(move || {
            let result = readers.get(Some(guard)).and_then(|store| match &scope {
                ReadScope::All => f(&*store),
                tenants => f(&ScopedStore::new(&*store, tenants, label_range)),
            });
            if let Err(StoreError::Interrupted(why)) = &result {
                let s = &slots.stats;
                match why {
                    Interruption::ClientGone => s.abandoned.fetch_add(1, Ordering::Relaxed),
                    Interruption::Timeout => s.timed_out.fetch_add(1, Ordering::Relaxed),
                };
            }
            drop(slot);
            result
        })
        .await
        .map_err(server_error)?
        .map_err(|e| match e {
            // A range or step the store cannot answer: the request's fault, not a
            // reason to come back later.
            StoreError::Invalid(msg) => ParamError::new("range", msg).into_response(),
            e => server_error(e),
        })
}
