//! The bearer-token check: `Authorization: Bearer <token>`, or a cookie for pages whose
//! frames and download links cannot set headers. Compared in constant time.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Who may pass: the token (none: everyone), the cookie that may carry it, and paths
/// served without it.
#[derive(Clone, Debug, Default)]
pub struct BearerAuth {
    token: Option<Arc<str>>,
    cookie: Option<&'static str>,
    public_paths: &'static [&'static str],
}

impl BearerAuth {
    /// Requires `token` when it is `Some`.
    pub fn new(token: Option<&str>) -> Self {
        BearerAuth {
            token: token.map(Arc::from),
            ..Default::default()
        }
    }

    /// Also accepts the token from the cookie `name` (percent-encoded).
    pub fn with_cookie(mut self, name: &'static str) -> Self {
        self.cookie = Some(name);
        self
    }

    /// Serves `paths` without a token (a login page and its assets).
    pub fn with_public_paths(mut self, paths: &'static [&'static str]) -> Self {
        self.public_paths = paths;
        self
    }

    /// Whether a token is required at all.
    pub fn is_enabled(&self) -> bool {
        self.token.is_some()
    }

    /// Whether a request with these headers to `path` may pass.
    pub fn allows(&self, path: &str, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        if self.public_paths.contains(&path) {
            return true;
        }
        presented_token(headers, self.cookie)
            .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
    }
}

/// The token a request presents: the `Authorization: Bearer` header, else the cookie.
fn presented_token(headers: &HeaderMap, cookie: Option<&str>) -> Option<String> {
    if let Some(t) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(t.to_owned());
    }
    let name = cookie?;
    for value in headers.get_all(header::COOKIE) {
        for part in value.to_str().unwrap_or("").split(';') {
            if let Some(v) = part
                .trim()
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix('='))
            {
                return Some(
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned(),
                );
            }
        }
    }
    None
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The axum middleware: `401` with `WWW-Authenticate: Bearer` unless [`BearerAuth::allows`].
/// Mount with `axum::middleware::from_fn_with_state(auth, stackwatch_http::auth::require)`.
pub async fn require(State(auth): State<BearerAuth>, req: Request, next: Next) -> Response {
    if auth.allows(req.uri().path(), req.headers()) {
        return next.run(req).await;
    }
    let mut r = (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn header_cookie_public_paths_and_no_token() {
        let auth = BearerAuth::new(Some("s3cret"))
            .with_cookie("stackwatch_token")
            .with_public_paths(&["/"]);
        assert!(auth.allows("/x", &headers(&[(header::AUTHORIZATION, "Bearer s3cret")])));
        assert!(!auth.allows("/x", &headers(&[(header::AUTHORIZATION, "Bearer s3cre")])));
        assert!(!auth.allows("/x", &headers(&[(header::AUTHORIZATION, "s3cret")])));
        assert!(auth.allows(
            "/x",
            &headers(&[(header::COOKIE, "a=b; stackwatch_token=s3c%72et")])
        ));
        assert!(!auth.allows(
            "/x",
            &headers(&[(header::COOKIE, "stackwatch_tokenx=s3cret")])
        ));
        assert!(auth.allows("/", &HeaderMap::new()));
        assert!(!auth.allows("/x", &HeaderMap::new()));
        let header_only = BearerAuth::new(Some("s3cret"));
        assert!(!header_only.allows(
            "/x",
            &headers(&[(header::COOKIE, "stackwatch_token=s3cret")])
        ));
        assert!(BearerAuth::new(None).allows("/x", &HeaderMap::new()));
    }
}
