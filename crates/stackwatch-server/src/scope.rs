//! Who reads what. A request's [`ReadScope`] comes from the token it presented: the
//! operator's `bearer_token` (or no token configured at all) reads everything, a
//! `[[read_tokens]]` token the series of its tenants only, those whose target label
//! `tenant` is one of them.
//!
//! Every route takes its scope as an extractor, and every store read goes through
//! [`crate::query::read`], which takes the scope and hands the route a store that
//! applies it ([`ScopedStore`]): each selector gets a tenant restriction that always
//! selects targets ([`Matcher::target_label_in`]), and the listings (targets, label
//! names and values) keep what the tenants' targets hold. A route cannot read around it.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use stackwatch_http::auth::Access;
use stackwatch_http::BearerAuth;
use stackwatch_profile::{Profile, SampleLabels};
use stackwatch_store::selector::Matcher;
use stackwatch_store::{
    BucketedStacks, Checkpoint, CollectorBeat, GroupedSeries, LabelKeys, Labels, ProfileReader,
    Selector, StoreError, TargetSeries,
};

use crate::config::ReadAccess;

/// The target label that names a series' tenant (set from the push token's tenant).
pub const TENANT_LABEL: &str = "tenant";

/// The name of the dashboard's login cookie (`HttpOnly`, set by `POST /api/login`).
pub const COOKIE: &str = "stackwatch_token";

/// What one request may read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadScope {
    /// Everything: the operator token, or no token configured.
    All,
    /// The series whose target label `tenant` is one of these (never empty).
    Tenants(Arc<[String]>),
}

impl ReadScope {
    /// Whether this is the operator's scope.
    pub fn is_all(&self) -> bool {
        matches!(self, ReadScope::All)
    }

    /// Whether it reads the series of `tenant` (`""`: stored without a tenant, as
    /// scraped targets and anonymous pushes are; only [`ReadScope::All`] reads those).
    pub fn sees_tenant(&self, tenant: &str) -> bool {
        match self {
            ReadScope::All => true,
            ReadScope::Tenants(t) => !tenant.is_empty() && t.iter().any(|n| n == tenant),
        }
    }

    /// Whether it reads the target with these labels.
    pub fn sees(&self, target: &Labels) -> bool {
        self.sees_tenant(target.get(TENANT_LABEL).map_or("", String::as_str))
    }

    /// `selector` restricted to this scope's targets.
    pub fn restrict(&self, selector: &Selector) -> Selector {
        let mut s = selector.clone();
        if let ReadScope::Tenants(t) = self {
            s.matchers
                .push(Matcher::target_label_in(TENANT_LABEL, t.as_ref()));
        }
        s
    }
}

/// The tokens the API accepts and the scope of each (by [`Access::Token`] index).
#[derive(Clone, Debug, Default)]
pub struct ReadTokens {
    auth: BearerAuth,
    scopes: Arc<[ReadScope]>,
}

impl ReadTokens {
    /// The operator token first, then each read token with its tenants.
    pub fn new(access: &ReadAccess) -> Self {
        let mut tokens: Vec<&str> = Vec::new();
        let mut scopes = Vec::new();
        if let Some(op) = &access.operator {
            tokens.push(op);
            scopes.push(ReadScope::All);
        }
        for (token, tenants) in &access.scoped {
            tokens.push(token);
            scopes.push(ReadScope::Tenants(Arc::from(tenants.as_slice())));
        }
        ReadTokens {
            auth: BearerAuth::with_tokens(tokens)
                .with_cookie(COOKIE)
                .with_public_paths(public_paths()),
            scopes: Arc::from(scopes),
        }
    }

    /// The check every request passes (the middleware's state).
    pub fn auth(&self) -> &BearerAuth {
        &self.auth
    }

    /// The scope of `token`, or `None` when no configured token is `token`. With no
    /// token configured there is nothing to log in with: `None`.
    pub fn scope_of_token(&self, token: &str) -> Option<ReadScope> {
        let i = self.auth.token_index(token)?;
        self.scopes.get(i).cloned()
    }

    fn scope_of(&self, access: Option<&Access>) -> Option<ReadScope> {
        match access? {
            Access::Open => Some(ReadScope::All),
            Access::Token(i) => self.scopes.get(*i).cloned(),
            // A public path needs no token, so it has no scope to read with.
            Access::PublicPath => None,
        }
    }
}

/// Paths served without a token: the page and its files ([`stackwatch_web::PATHS`]), and
/// the login and logout.
pub fn public_paths() -> &'static [&'static str] {
    static PATHS: std::sync::LazyLock<&'static [&'static str]> = std::sync::LazyLock::new(|| {
        let mut paths = stackwatch_web::PATHS.to_vec();
        paths.extend(["/api/login", "/api/logout"]);
        // Built once per process; held for its life.
        Vec::leak(paths)
    });
    &PATHS
}

/// `401` with `WWW-Authenticate: Bearer`.
pub(crate) fn unauthorized(why: &'static str) -> Response {
    let mut r = (StatusCode::UNAUTHORIZED, why).into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// A router state that knows the read tokens (the server's `ApiState`): what the
/// [`ReadScope`] extractor needs of it, so this module does not depend on the state's.
pub(crate) trait HoldsReadTokens {
    /// The configured read tokens and their scopes.
    fn read_tokens(&self) -> &ReadTokens;
}

impl<S: HoldsReadTokens + Send + Sync> FromRequestParts<S> for ReadScope {
    type Rejection = Response;

    /// The scope of the token the auth middleware found; a request it did not see (a
    /// route mounted outside it) reads nothing.
    async fn from_request_parts(parts: &mut Parts, st: &S) -> Result<Self, Response> {
        st.read_tokens()
            .scope_of(parts.extensions.get::<Access>())
            .ok_or_else(|| unauthorized("missing or wrong bearer token\n"))
    }
}

/// A store that shows one [`ReadScope`] only (see the module's documentation). It only
/// reads: it is a [`ProfileReader`], not a writer.
pub(crate) struct ScopedStore<'a> {
    inner: &'a dyn ProfileReader,
    scope: &'a ReadScope,
    /// Label names and values are those of the sample label sets stored over
    /// `[labels_from, labels_to)` (the retention).
    labels_from: i64,
    labels_to: i64,
}

impl<'a> ScopedStore<'a> {
    /// `inner` as `scope` sees it; label listings read the rows of `[from, to)`.
    pub(crate) fn new(
        inner: &'a dyn ProfileReader,
        scope: &'a ReadScope,
        (labels_from, labels_to): (i64, i64),
    ) -> Self {
        ScopedStore {
            inner,
            scope,
            labels_from,
            labels_to,
        }
    }

    fn visible_targets(&self) -> Result<Vec<Labels>, StoreError> {
        let mut t = self.inner.targets()?;
        t.retain(|l| self.scope.sees(l));
        Ok(t)
    }

    /// The sample label sets the scope's targets used over the label range.
    fn visible_sets(&self) -> Result<Vec<SampleLabels>, StoreError> {
        self.inner.sample_label_sets(
            &self.scope.restrict(&Selector::all()),
            self.labels_from,
            self.labels_to,
        )
    }
}

impl ProfileReader for ScopedStore<'_> {
    fn checkpoints(&self, target: &Labels) -> Result<Vec<Checkpoint>, StoreError> {
        if self.scope.sees(target) {
            self.inner.checkpoints(target)
        } else {
            Ok(Vec::new())
        }
    }

    fn targets(&self) -> Result<Vec<Labels>, StoreError> {
        self.visible_targets()
    }

    fn profile(&self, selector: &Selector, from_s: i64, to_s: i64) -> Result<Profile, StoreError> {
        self.inner
            .profile(&self.scope.restrict(selector), from_s, to_s)
    }

    fn timeseries(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        self.inner
            .timeseries(&self.scope.restrict(selector), from_s, to_s, step_s)
    }

    fn target_series(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<Vec<TargetSeries>, StoreError> {
        self.inner
            .target_series(&self.scope.restrict(selector), from_s, to_s, step_s)
    }

    fn bucketed_stacks(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<BucketedStacks, StoreError> {
        self.inner
            .bucketed_stacks(&self.scope.restrict(selector), from_s, to_s, step_s)
    }

    /// The label names of the scope's targets, and of the sample label sets their
    /// samples used over the label range.
    fn label_keys(&self) -> Result<LabelKeys, StoreError> {
        let targets = self.visible_targets()?;
        let mut target: Vec<String> = targets.iter().flat_map(|t| t.keys().cloned()).collect();
        target.sort();
        target.dedup();
        let mut sample: Vec<String> = self
            .visible_sets()?
            .iter()
            .flat_map(|s| s.keys().cloned())
            .filter(|k| target.binary_search(k).is_err())
            .collect();
        sample.sort();
        sample.dedup();
        Ok(LabelKeys { target, sample })
    }

    /// The values of the scope's targets when one of them has label `name` (or the name
    /// starts with `__`, reserved for target labels), else of the sample label sets
    /// their samples used over the label range.
    fn label_values(&self, name: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let targets = self.visible_targets()?;
        let by_target = name.starts_with("__") || targets.iter().any(|t| t.contains_key(name));
        let mut values: Vec<String> = if by_target {
            targets
                .iter()
                .filter_map(|t| t.get(name).cloned())
                .collect()
        } else {
            self.visible_sets()?
                .into_iter()
                .filter_map(|mut s| s.remove(name))
                .collect()
        };
        values.retain(|v| !v.is_empty());
        values.sort();
        values.dedup();
        values.truncate(limit);
        Ok(values)
    }

    fn sample_label_sets(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<SampleLabels>, StoreError> {
        self.inner
            .sample_label_sets(&self.scope.restrict(selector), from_s, to_s)
    }

    fn grouped_series(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        step_s: i64,
        group_by: &str,
        limit: usize,
    ) -> Result<Vec<GroupedSeries>, StoreError> {
        self.inner.grouped_series(
            &self.scope.restrict(selector),
            from_s,
            to_s,
            step_s,
            group_by,
            limit,
        )
    }

    fn live_collectors(&self, since_ms: u64) -> Result<Vec<CollectorBeat>, StoreError> {
        self.inner.live_collectors(since_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_tenant_scope_sees_its_tenants_only() {
        let a = ReadScope::Tenants(Arc::from(vec!["a".to_string(), "c".to_string()]));
        assert!(a.sees(&labels(&[("tenant", "a")])));
        assert!(a.sees(&labels(&[("tenant", "c"), ("service", "x")])));
        assert!(!a.sees(&labels(&[("tenant", "b")])));
        assert!(
            !a.sees(&labels(&[("service", "scraped")])),
            "no tenant: operator only"
        );
        assert!(!a.sees_tenant(""));
        assert!(ReadScope::All.sees(&labels(&[("service", "scraped")])));
        let restricted = a.restrict(&Selector::parse(r#"{service="x"}"#).unwrap());
        assert_eq!(restricted.matchers.len(), 2);
        assert!(restricted.matchers[1].is_target_only());
        assert_eq!(
            ReadScope::All
                .restrict(&Selector::parse(r#"{service="x"}"#).unwrap())
                .matchers
                .len(),
            1
        );
    }

    #[test]
    fn each_token_has_its_scope() {
        let t = ReadTokens::new(&ReadAccess {
            operator: Some("op".into()),
            scoped: vec![("ra".into(), vec!["a".into()])],
        });
        assert_eq!(t.scope_of_token("op"), Some(ReadScope::All));
        assert_eq!(
            t.scope_of_token("ra"),
            Some(ReadScope::Tenants(Arc::from(vec!["a".to_string()])))
        );
        assert_eq!(t.scope_of_token("rb"), None);
        assert_eq!(t.scope_of(Some(&Access::Token(1))), t.scope_of_token("ra"));
        assert_eq!(t.scope_of(Some(&Access::PublicPath)), None);
        assert_eq!(t.scope_of(None), None);
        // Without tokens everyone is the operator, and nobody logs in.
        let open = ReadTokens::new(&ReadAccess::default());
        assert!(!open.auth().is_enabled());
        assert_eq!(open.scope_of(Some(&Access::Open)), Some(ReadScope::All));
        assert_eq!(open.scope_of_token(""), None);
    }
}
