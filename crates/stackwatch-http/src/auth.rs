//! The bearer-token check: `Authorization: Bearer <token>`, or a cookie for pages whose
//! frames and download links cannot set headers. Compared in constant time.
//!
//! Several tokens may be accepted (the collector's operator token and its tenant-scoped
//! read tokens): [`require`] records which one a request presented ([`Access`], in the
//! request's extensions), so a handler can tell what that token may see.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

/// Who may pass: the tokens (none: everyone), the cookie that may carry one, and paths
/// served without one.
#[derive(Clone, Debug, Default)]
pub struct BearerAuth {
    tokens: Vec<Arc<str>>,
    cookie: Option<&'static str>,
    public_paths: &'static [&'static str],
}

/// How a request passed [`BearerAuth`]; [`require`] inserts it in the request's
/// extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No token is configured: everyone passes.
    Open,
    /// A public path (a login page and its assets): passed without a token.
    PublicPath,
    /// The request presented the token at this index (in the order given to
    /// [`BearerAuth::with_tokens`]; 0 for [`BearerAuth::new`]'s).
    Token(usize),
}

impl BearerAuth {
    /// Requires `token` when it is `Some`.
    pub fn new(token: Option<&str>) -> Self {
        BearerAuth {
            tokens: token.map(Arc::from).into_iter().collect(),
            ..Default::default()
        }
    }

    /// Requires one of `tokens` (none: no token is required). [`Access::Token`] says
    /// which by its index here.
    pub fn with_tokens<S: AsRef<str>>(tokens: impl IntoIterator<Item = S>) -> Self {
        BearerAuth {
            tokens: tokens.into_iter().map(|t| Arc::from(t.as_ref())).collect(),
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
        !self.tokens.is_empty()
    }

    /// Whether a request with these headers to `path` may pass.
    pub fn allows(&self, path: &str, headers: &HeaderMap) -> bool {
        self.access(path, headers).is_some()
    }

    /// How a request with these headers to `path` passes, or `None` when it may not.
    pub fn access(&self, path: &str, headers: &HeaderMap) -> Option<Access> {
        if self.tokens.is_empty() {
            return Some(Access::Open);
        }
        if self.public_paths.contains(&path) {
            return Some(Access::PublicPath);
        }
        let given = presented_token(headers, self.cookie)?;
        self.token_index(&given).map(Access::Token)
    }

    /// The index of the configured token equal to `given`. Every token is compared
    /// (in constant time each), so the time taken says nothing of which matched.
    pub fn token_index(&self, given: &str) -> Option<usize> {
        let mut found = None;
        for (i, t) in self.tokens.iter().enumerate() {
            if constant_time_eq(given.as_bytes(), t.as_bytes()) && found.is_none() {
                found = Some(i);
            }
        }
        found
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

/// The `Set-Cookie` value that stores `token` in cookie `name` for the whole site:
/// `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page sends it),
/// `Secure` when `secure` (only over TLS). The token is percent-encoded.
pub fn token_cookie(name: &str, token: &str, secure: bool) -> Option<HeaderValue> {
    let value = utf8_percent_encode(token, NON_ALPHANUMERIC);
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict{secure}"
    ))
    .ok()
}

/// The `Set-Cookie` value that removes cookie `name` (set by [`token_cookie`]).
pub fn clear_cookie(name: &str, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
    ))
    .ok()
}

/// The axum middleware: `401` with `WWW-Authenticate: Bearer` unless [`BearerAuth::allows`];
/// otherwise the request goes on with its [`Access`] in its extensions.
/// Mount with `axum::middleware::from_fn_with_state(auth, stackwatch_http::auth::require)`.
pub async fn require(State(auth): State<BearerAuth>, mut req: Request, next: Next) -> Response {
    if let Some(access) = auth.access(req.uri().path(), req.headers()) {
        req.extensions_mut().insert(access);
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

    #[test]
    fn the_token_presented_is_told_apart() {
        let auth = BearerAuth::with_tokens(["op", "team-a", "team-b"])
            .with_cookie("t")
            .with_public_paths(&["/"]);
        let bearer = |t: &str| headers(&[(header::AUTHORIZATION, &format!("Bearer {t}"))]);
        assert_eq!(auth.access("/x", &bearer("op")), Some(Access::Token(0)));
        assert_eq!(auth.access("/x", &bearer("team-b")), Some(Access::Token(2)));
        assert_eq!(auth.access("/x", &bearer("team-c")), None);
        assert_eq!(
            auth.access("/x", &headers(&[(header::COOKIE, "t=team%2Da")])),
            Some(Access::Token(1))
        );
        assert_eq!(
            auth.access("/", &HeaderMap::new()),
            Some(Access::PublicPath)
        );
        assert_eq!(
            BearerAuth::with_tokens(Vec::<String>::new()).access("/x", &HeaderMap::new()),
            Some(Access::Open)
        );
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_round_trips() {
        let c = token_cookie("t", "a b;c=d/é", false).unwrap();
        let text = c.to_str().unwrap();
        assert!(
            text.ends_with("; Path=/; HttpOnly; SameSite=Strict"),
            "{text}"
        );
        assert!(!text.contains("Secure"));
        let value = text.split(';').next().unwrap();
        let auth = BearerAuth::new(Some("a b;c=d/é")).with_cookie("t");
        assert!(auth.allows("/x", &headers(&[(header::COOKIE, value)])));
        assert!(token_cookie("t", "x", true)
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("; Secure"));
        assert!(clear_cookie("t", false)
            .unwrap()
            .to_str()
            .unwrap()
            .contains("Max-Age=0"));
    }
}
