//! Read tokens scoped to tenants (issue 24, item 8): every route of the API, listed from
//! the router's own source so a new route cannot be left out, shows a tenant's token
//! that tenant's series only, and the operator's token everyone's; the dashboard logs in
//! through the server (an `HttpOnly` cookie); a browser page cannot push.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use stackwatch_server::config::{PushToken, ReadToken, TargetConfig};
use stackwatch_store::{IngestWindow, Labels, ProfileWriter, SqliteStore, StoreOptions};

use common::{labels, read_answer, Collector};

const OPERATOR: &str = "operator-token";
const READ_A: &str = "read-team-a";
const READ_B: &str = "read-team-b";
const PUSH_A: &str = "push-team-a";
const PUSH_B: &str = "push-team-b";

/// What only one tenant's data holds, and the data of targets without a tenant (scraped
/// or pushed anonymously: the operator's only). A marker in an answer means its
/// tenant's data reached it.
const MARKERS_A: &[&str] = &["svc-a", "inst-a", "only_in_a", "akey", "cust-a", "team-a"];
const MARKERS_B: &[&str] = &["svc-b", "inst-b", "only_in_b", "bkey", "cust-b", "team-b"];
const MARKERS_N: &[&str] = &["svc-n", "inst-n", "only_in_n", "nkey", "cust-n"];

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A window of `target` at `ts`: one unlabeled stack and one under the sample labels
/// `sample`.
fn window(target: &Labels, ts: i64, frame: &str, sample: &[(&str, &str)]) -> IngestWindow {
    IngestWindow {
        target: target.clone(),
        instance: "i".into(),
        seq: 0,
        start_unix_s: ts,
        stacks: vec![(format!("main;{frame}"), 40)],
        labeled: vec![(
            sample
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            vec![(format!("main;labeled;{frame}"), 7)],
        )],
        period_ns: 10_101_010,
    }
}

/// A collector whose store holds tenant a's, tenant b's and untenanted windows (two
/// each, 30 and 10 minutes ago), with an operator token, a read token per tenant, push
/// on (a token per tenant, anonymous allowed) and a scraped target per tenant.
fn scoped_collector(tune: impl FnOnce(&mut stackwatch_server::Config)) -> Collector {
    let dir = tempfile::tempdir().unwrap();
    let now = now_s();
    let a = labels(&[
        ("service", "svc-a"),
        ("instance", "inst-a"),
        ("tenant", "team-a"),
    ]);
    let b = labels(&[
        ("service", "svc-b"),
        ("instance", "inst-b"),
        ("tenant", "team-b"),
    ]);
    let n = labels(&[("service", "svc-n"), ("instance", "inst-n")]);
    {
        let mut s = SqliteStore::open(
            &stackwatch_server::db_path(dir.path()),
            StoreOptions::default(),
        )
        .unwrap();
        let mut windows = Vec::new();
        for (i, ts) in [now - 1800, now - 600].into_iter().enumerate() {
            let seq = i as u64 + 1;
            for (t, frame, sample) in [
                (&a, "only_in_a", &[("akey", "cust-a")][..]),
                (&b, "only_in_b", &[("bkey", "cust-b")][..]),
                // A sample label named like the tenant label, on a target without a
                // tenant: it must not make that target's samples team-a's.
                (
                    &n,
                    "only_in_n",
                    &[("nkey", "cust-n"), ("tenant", "team-a")][..],
                ),
            ] {
                let mut w = window(t, ts, frame, sample);
                w.seq = seq;
                windows.push(w);
            }
        }
        s.ingest(&windows).unwrap();
    }
    let mut cfg = common::config(dir.path());
    cfg.bearer_token = Some(OPERATOR.into());
    cfg.read_tokens = [(READ_A, "team-a"), (READ_B, "team-b")]
        .iter()
        .map(|(token, tenant)| ReadToken {
            token: Some(token.to_string()),
            token_file: None,
            tenants: vec![tenant.to_string()],
        })
        .collect();
    cfg.storage.flush_interval = Duration::from_millis(50);
    cfg.push.enabled = true;
    cfg.push.allow_anonymous = true;
    cfg.push.tokens = [(PUSH_A, "team-a"), (PUSH_B, "team-b")]
        .iter()
        .map(|(token, tenant)| PushToken {
            token: Some(token.to_string()),
            token_file: None,
            tenant: tenant.to_string(),
        })
        .collect();
    // Scraped targets (nothing listens there: they are listed, with their errors).
    cfg.targets = [
        ("svc-a", Some("team-a")),
        ("svc-b", Some("team-b")),
        ("svc-n", None),
    ]
    .iter()
    .map(|(service, tenant)| {
        let mut labels = labels(&[("service", service)]);
        if let Some(t) = tenant {
            labels.insert("tenant".into(), t.to_string());
        }
        TargetConfig {
            url: "http://127.0.0.1:9/".into(),
            labels,
            ..Default::default()
        }
    })
    .collect();
    tune(&mut cfg);
    Collector::start(common::runtime(), dir, cfg, Duration::from_secs(60))
}

/// One request's answer.
struct Answer {
    status: u16,
    content_type: String,
    set_cookie: Option<String>,
    body: Vec<u8>,
}

impl Collector {
    /// `method` `path` (query string included) with `headers` and `body`.
    fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let url = format!("{}{path}", self.api);
        let r = if method == "POST" {
            let mut req = self.agent.post(&url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.send(body)
        } else {
            let mut req = self.agent.get(&url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.call()
        }
        .expect("the collector answers");
        let set_cookie = r
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (status, content_type, body) = read_answer(r);
        Answer {
            status,
            content_type,
            set_cookie,
            body,
        }
    }

    /// GET `path` as `token` (none: without a token).
    fn get_as(&self, path: &str, token: Option<&str>) -> Answer {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| vec![("authorization", b)])
            .unwrap_or_default();
        self.call("GET", path, &headers, b"")
    }

    /// POST folded text to Pyroscope's `/ingest` for `service`, as `token` (basic auth,
    /// as the SDKs send it; none: anonymous) with `headers`.
    fn push_folded(
        &self,
        service: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        use base64::Engine;
        let until = now_s() - 5;
        let path = format!(
            "/ingest?name={service}.cpu&from={}&until={until}&format=folded&sampleRate=100",
            until - 10
        );
        let auth = token.map(|t| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("user:{t}"))
            )
        });
        let mut h: Vec<(&str, &str)> = headers.to_vec();
        if let Some(a) = &auth {
            h.push(("authorization", a));
        }
        self.call("POST", &path, &h, body.as_bytes())
    }
}

/// The answer's text; a pprof body is decoded to folded text first.
fn text_of(a: &Answer) -> String {
    if a.content_type == "application/octet-stream" && a.status == 200 {
        let p = stackwatch_profile::pprof::decode(&a.body, 64 << 20, &Default::default())
            .expect("a pprof answer decodes");
        return p.to_folded();
    }
    String::from_utf8_lossy(&a.body).into_owned()
}

fn found<'a>(text: &str, markers: &[&'a str]) -> Vec<&'a str> {
    markers
        .iter()
        .copied()
        .filter(|m| text.contains(m))
        .collect()
}

/// Every route path the server's sources declare with a literal (`.route("<path>",
/// ...)`), in any file under src/, so a route added anywhere (the Pyroscope query API,
/// say) must join the table below.
fn declared_routes() -> BTreeSet<String> {
    fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut paths = Vec::new();
    files(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut paths,
    );
    let mut out = BTreeSet::new();
    for path in paths {
        let src = std::fs::read_to_string(&path).unwrap();
        let mut rest = src.as_str();
        while let Some(i) = rest.find(".route(") {
            rest = rest[i + ".route(".len()..].trim_start();
            // A path given by a constant (OTLP's) is a push route: not read here.
            let Some(lit) = rest.strip_prefix('"') else {
                continue;
            };
            let len = lit.find('"').unwrap();
            out.insert(lit[..len].to_string());
        }
    }
    out
}

/// How one route is asked, and what its answer shows.
struct Route {
    /// The route as declared.
    path: &'static str,
    /// The request: the path with its parameters.
    request: String,
    /// Whether an answer shows the data's markers (the operator's then shows both
    /// tenants').
    shows_data: bool,
}

fn route(path: &'static str, query: &str, shows_data: bool) -> Route {
    let request = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    Route {
        path,
        request,
        shows_data,
    }
}

#[test]
fn every_route_shows_a_tenant_token_its_tenants_series_only() {
    let c = scoped_collector(|_| {});
    // Pushes put each tenant (and an anonymous service) among the push sources.
    for (service, token, frame) in [
        ("svc-a", Some(PUSH_A), "only_in_a"),
        ("svc-b", Some(PUSH_B), "only_in_b"),
        ("svc-n", None, "only_in_n"),
    ] {
        let r = c.push_folded(service, token, &[], &format!("main;pushed;{frame} 5\n"));
        assert_eq!(
            r.status,
            200,
            "{service}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let enc = common::encode;
    let routes = vec![
        route("/", "", false),
        Route {
            path: "/assets/{file}",
            request: "/assets/main.js".into(),
            shows_data: false,
        },
        route("/metrics", "", true),
        route("/api/targets", "", true),
        route("/api/push-sources", "", true),
        route("/api/profile.svg", "from=now-1h", true),
        route("/api/profile.folded", "from=now-1h", true),
        route("/api/profile.pb.gz", "from=now-1h", true),
        route(
            "/api/diff.svg",
            &format!("base={}&from=now-1h", enc("{}")),
            true,
        ),
        route(
            "/api/diff.folded",
            &format!("base={}&from=now-1h", enc("{}")),
            true,
        ),
        route("/api/timeseries", "from=now-1h&group_by=service", true),
        route("/api/top", "from=now-1h", true),
        route("/api/sandwich", "from=now-1h&function=main", true),
        route("/api/sandwich.svg", "from=now-1h&function=main", true),
        route(
            "/api/changes",
            "base_from=now-50m&base_to=now-20m&from=now-20m&to=now",
            true,
        ),
        route("/api/labels", "", true),
        route("/api/label-keys", "", true),
        route("/api/profile-types", "", false),
        route("/api/label/{name}/values", "", true),
    ];
    let mut tabled: BTreeSet<String> = routes.iter().map(|r| r.path.to_string()).collect();
    // Login and logout have their own test; the push routes write, they read nothing.
    for other in [
        "/api/login",
        "/api/logout",
        "/ingest",
        "/push.v1.PusherService/Push",
    ] {
        tabled.insert(other.into());
    }
    assert_eq!(
        tabled,
        declared_routes(),
        "every route the server declares is in this table"
    );
    // The page and every file of it load without a token (they hold no data); a path
    // under /assets/ that is not one of them is not public.
    for path in stackwatch_web::PATHS {
        assert_eq!(c.get_as(path, None).status, 200, "{path}");
    }
    assert_eq!(c.get_as("/assets/app.js", None).status, 401);
    assert_eq!(c.get_as("/assets/app.js", Some(OPERATOR)).status, 404);
    let public = ["/", "/assets/{file}"];
    for r in &routes {
        let request = r.request.replace("{name}", "service");
        if public.contains(&r.path) {
            assert_eq!(c.get_as(&request, None).status, 200, "{request}");
            continue;
        }
        let anonymous = c.get_as(&request, None);
        assert_eq!(anonymous.status, 401, "{request} without a token");
        let wrong = c.get_as(&request, Some("read-team-c"));
        assert_eq!(wrong.status, 401, "{request} with an unknown token");

        let op = c.get_as(&request, Some(OPERATOR));
        let op_text = text_of(&op);
        assert_eq!(op.status, 200, "{request} as the operator: {op_text}");
        if r.shows_data {
            assert!(
                !found(&op_text, MARKERS_A).is_empty() && !found(&op_text, MARKERS_B).is_empty(),
                "{request}: the operator sees both tenants: {op_text}"
            );
        }
        for (token, own, others) in [
            (READ_A, MARKERS_A, [MARKERS_B, MARKERS_N]),
            (READ_B, MARKERS_B, [MARKERS_A, MARKERS_N]),
        ] {
            let a = c.get_as(&request, Some(token));
            let text = text_of(&a);
            if r.path == "/metrics" {
                assert_eq!(a.status, 403, "{request} as {token}: {text}");
                continue;
            }
            assert_eq!(a.status, 200, "{request} as {token}: {text}");
            for other in others {
                assert_eq!(
                    found(&text, other),
                    Vec::<&str>::new(),
                    "{request} as {token} shows another tenant's data: {text}"
                );
            }
            if r.shows_data {
                assert!(
                    !found(&text, own).is_empty(),
                    "{request} as {token} shows its own data: {text}"
                );
            }
        }
    }

    // Label values by kind: target labels of the tenant's targets, sample labels of
    // the label sets its samples used (the store holds them all in one table).
    let json = |path: &str, token: &str| -> serde_json::Value {
        let a = c.get_as(path, Some(token));
        assert_eq!(a.status, 200, "{path} as {token}");
        serde_json::from_slice(&a.body).unwrap()
    };
    assert_eq!(
        json("/api/label/tenant/values", READ_A),
        serde_json::json!(["team-a"])
    );
    assert_eq!(
        json("/api/label/tenant/values", OPERATOR),
        serde_json::json!(["team-a", "team-b"])
    );
    assert_eq!(
        json("/api/label/akey/values", READ_A),
        serde_json::json!(["cust-a"])
    );
    assert_eq!(
        json("/api/label/bkey/values", READ_A),
        serde_json::json!([])
    );
    assert_eq!(
        json("/api/label/bkey/values", OPERATOR),
        serde_json::json!(["cust-b"])
    );
    let keys = json("/api/label-keys", READ_A);
    assert_eq!(keys["sample"], serde_json::json!(["akey"]), "{keys}");
    let target = keys["target"].as_array().unwrap();
    assert!(target.contains(&serde_json::json!("tenant")), "{keys}");
    // A selector naming another tenant finds nothing; it cannot widen the scope.
    let q = |sel: &str| format!("/api/profile.folded?from=now-1h&query={}", enc(sel));
    for sel in [
        r#"{tenant="team-b"}"#,
        r#"{tenant=~".*"}"#,
        r#"{tenant!="team-a"}"#,
        r#"{service="svc-n"}"#,
    ] {
        let a = c.get_as(&q(sel), Some(READ_A));
        assert_eq!(a.status, 200);
        let text = text_of(&a);
        assert!(
            found(&text, MARKERS_B).is_empty() && found(&text, MARKERS_N).is_empty(),
            "{sel}: {text}"
        );
    }
    let own = text_of(&c.get_as(&q(r#"{tenant=~".*"}"#), Some(READ_A)));
    assert!(own.contains("main;only_in_a 80"), "{own}");
    assert!(own.contains("main;labeled;only_in_a 14"), "{own}");
}

#[test]
fn the_dashboard_logs_in_with_an_http_only_cookie_and_out() {
    let c = scoped_collector(|_| {});
    let login = |body: &str, headers: &[(&str, &str)]| {
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(headers);
        c.call("POST", "/api/login", &h, body.as_bytes())
    };
    let wrong = login(r#"{"token": "nope"}"#, &[]);
    assert_eq!((wrong.status, wrong.set_cookie.as_deref()), (401, None));
    // A form cannot log anyone in: JSON only.
    let form = c.call(
        "POST",
        "/api/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("token={READ_A}").as_bytes(),
    );
    assert!(
        form.status >= 400 && form.set_cookie.is_none(),
        "{}",
        form.status
    );

    let ok = login(&format!(r#"{{"token": "{READ_A}"}}"#), &[]);
    assert_eq!(ok.status, 204);
    let cookie = ok.set_cookie.expect("a cookie");
    assert!(
        cookie.contains("; HttpOnly") && cookie.contains("; SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    // The cookie reads as its token does: team-a only.
    let as_cookie = c.call(
        "GET",
        "/api/profile.folded?from=now-1h",
        &[("cookie", &pair)],
        b"",
    );
    let text = text_of(&as_cookie);
    assert_eq!(as_cookie.status, 200);
    assert!(
        text.contains("only_in_a") && !text.contains("only_in_b"),
        "{text}"
    );

    // Over TLS (a proxy in front says so), or when the config says so: Secure.
    let tls = login(
        &format!(r#"{{"token": "{OPERATOR}"}}"#),
        &[("x-forwarded-proto", "https")],
    );
    assert!(tls.set_cookie.unwrap().ends_with("; Secure"));

    let out = c.call("POST", "/api/logout", &[], b"");
    assert_eq!(out.status, 204);
    let cleared = out.set_cookie.expect("the cookie cleared");
    assert!(
        cleared.starts_with("stackwatch_token=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );

    let secure = scoped_collector(|cfg| cfg.http.cookie_secure = true);
    let a = secure.call(
        "POST",
        "/api/login",
        &[("content-type", "application/json")],
        format!(r#"{{"token": "{READ_B}"}}"#).as_bytes(),
    );
    assert_eq!(a.status, 204);
    assert!(a.set_cookie.unwrap().ends_with("; Secure"));
}

#[test]
fn a_browser_page_cannot_push_anonymously_or_otherwise() {
    let c = scoped_collector(|_| {});
    // What a form on another site sends: text/plain, an Origin, Sec-Fetch-Site.
    for headers in [
        vec![
            ("content-type", "text/plain"),
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ],
        vec![("content-type", "text/plain"), ("origin", "null")],
        vec![
            ("content-type", "text/plain"),
            ("sec-fetch-site", "same-site"),
        ],
        vec![
            ("content-type", "multipart/form-data; boundary=x"),
            ("sec-fetch-site", "cross-site"),
        ],
    ] {
        let r = c.push_folded("from-a-page", None, &headers, "main;csrf 5\n");
        assert_eq!(r.status, 403, "{headers:?}");
        let r = c.push_folded("from-a-page", Some(PUSH_A), &headers, "main;csrf 5\n");
        assert_eq!(r.status, 403, "with a token too: {headers:?}");
    }
    // A program's push (no browser headers) is stored.
    let r = c.push_folded(
        "a-program",
        None,
        &[("content-type", "text/plain")],
        "main;ok 5\n",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let folded = loop {
        let a = c.get_as("/api/profile.folded?from=now-1h", Some(OPERATOR));
        let text = text_of(&a);
        if text.contains("main;ok 5") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(folded.contains("main;ok 5"), "{folded}");
    assert!(
        !folded.contains("csrf"),
        "nothing of the refused pushes: {folded}"
    );
    let sources = text_of(&c.get_as("/api/push-sources", Some(OPERATOR)));
    assert!(!sources.contains("from-a-page"), "{sources}");
}
