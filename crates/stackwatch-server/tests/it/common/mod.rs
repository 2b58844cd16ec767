//! The in-process collector the server's integration tests run: a `Server` on a free
//! loopback port over a temp data dir, stopped on drop, with a client that reads every
//! answer (no status is an error) and the query helpers the tests share. A test file
//! adds its own requests (pushes, refusals, ...) in an `impl Collector` block of its own.

// Every test binary compiles this module and uses a subset of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use stackwatch_server::config::{Config, PushToken, TargetConfig, TargetKind};
use stackwatch_server::ServerError;
use stackwatch_store::{IngestWindow, Labels, ProfileWriter, SqliteStore, StoreOptions};

/// A Tokio runtime of two worker threads, for the collector and any fake workers.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A default config listening on a free loopback port and storing in `data_dir`.
pub fn config(data_dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_path_buf(),
        ..Default::default()
    }
}

/// [`config`] for scraping fake workers: every 300 ms, pprof for 1 s, a scrape given up
/// after `scrape_timeout`, the writer flushing every 100 ms.
pub fn scrape_config(data_dir: &Path, scrape_timeout: Duration) -> Config {
    let mut cfg = config(data_dir);
    cfg.scrape.interval = Duration::from_millis(300);
    cfg.scrape.timeout = scrape_timeout;
    cfg.scrape.pprof_seconds = Some(Duration::from_secs(1));
    cfg.storage.flush_interval = Duration::from_millis(100);
    cfg
}

/// Serves `router` (a fake worker) on a free loopback port of `rt`; returns its address.
pub fn serve(rt: &tokio::runtime::Runtime, router: axum::Router) -> SocketAddr {
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, router).await });
        a
    })
}

/// A target at `url` labeled `service=<service>`.
pub fn target(url: String, kind: TargetKind, service: &str) -> TargetConfig {
    TargetConfig {
        url,
        kind,
        labels: [("service".to_string(), service.to_string())].into(),
        ..Default::default()
    }
}

/// Target labels from `(name, value)` pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A collector running in-process until dropped (or [`Collector::shut_down`]).
pub struct Collector {
    /// The runtime the collector runs on (fake workers may be spawned on it too).
    pub rt: tokio::runtime::Runtime,
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub api: String,
    /// A client that returns every status as an answer, never as an error.
    pub agent: ureq::Agent,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    running: Option<tokio::task::JoinHandle<Result<(), ServerError>>>,
    dir: tempfile::TempDir,
}

impl Collector {
    /// Binds a collector with `cfg` on `rt` and runs it. `dir` is `cfg`'s data dir, kept
    /// (and then removed) with the collector; the client gives up on a request after
    /// `client_timeout`.
    pub fn start(
        rt: tokio::runtime::Runtime,
        dir: tempfile::TempDir,
        cfg: Config,
        client_timeout: Duration,
    ) -> Collector {
        let server = rt
            .block_on(stackwatch_server::Server::bind(cfg))
            .expect("server starts");
        let api = format!("http://{}", server.local_addr());
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let running = rt.spawn(server.run(async {
            let _ = stop_rx.await;
        }));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(client_timeout))
            .build()
            .into();
        Collector {
            rt,
            api,
            agent,
            stop: Some(stop),
            running: Some(running),
            dir,
        }
    }

    /// A collector with the default config over a store that already holds `windows`.
    pub fn over_store(windows: &[IngestWindow]) -> Collector {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = SqliteStore::open(
                &stackwatch_server::db_path(dir.path()),
                StoreOptions::default(),
            )
            .unwrap();
            s.ingest(windows).unwrap();
        }
        let cfg = config(dir.path());
        Collector::start(runtime(), dir, cfg, Duration::from_secs(10))
    }

    /// A collector with push on, accepting each `(token, tenant)` of `tokens`, its writer
    /// flushing every 50 ms; `tune` adjusts the config last.
    pub fn with_push(tokens: &[(&str, &str)], tune: impl FnOnce(&mut Config)) -> Collector {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.storage.flush_interval = Duration::from_millis(50);
        cfg.push.enabled = true;
        cfg.push.tokens = tokens
            .iter()
            .map(|(token, tenant)| PushToken {
                token: Some(token.to_string()),
                token_file: None,
                tenant: tenant.to_string(),
            })
            .collect();
        tune(&mut cfg);
        Collector::start(runtime(), dir, cfg, Duration::from_secs(120))
    }

    /// The collector's data dir.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the collector and waits for it; returns how its run ended.
    pub fn shut_down(&mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.running.take() {
            Some(running) => self.rt.block_on(running).expect("the server task ends"),
            None => Ok(()),
        }
    }

    /// `path` with every query value of `params` percent-encoded.
    pub fn url(&self, path: &str, params: &[(&str, &str)]) -> String {
        let qs: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        if qs.is_empty() {
            format!("{}{path}", self.api)
        } else {
            format!("{}{path}?{}", self.api, qs.join("&"))
        }
    }

    /// GET; returns status, content type and body (up to 64 MiB).
    pub fn get_bytes(&self, path: &str, params: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
        read_answer(
            self.agent
                .get(&self.url(path, params))
                .call()
                .expect("the collector answers"),
        )
    }

    /// GET; returns status and body as text.
    pub fn get(&self, path: &str, params: &[(&str, &str)]) -> (u16, String) {
        let (status, _, body) = self.get_bytes(path, params);
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// GET of a 200 answer's text.
    pub fn text(&self, path: &str, params: &[(&str, &str)]) -> String {
        let (status, _, body) = self.get_bytes(path, params);
        let body = String::from_utf8(body).unwrap();
        assert_eq!(status, 200, "{path} {params:?}: {body}");
        body
    }

    /// GET of a 200 answer's JSON.
    pub fn json(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let body = self.text(path, params);
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// Folded stacks of a selection over the last hour, as `stack -> count` (`ty`: the
    /// profile type, CPU if none).
    pub fn folded(&self, query: &str, ty: Option<&str>) -> BTreeMap<String, u64> {
        let mut params = vec![("query", query), ("from", "now-1h")];
        if let Some(t) = ty {
            params.push(("type", t));
        }
        let (status, body) = self.get("/api/profile.folded", &params);
        assert_eq!(status, 200, "{query}: {body}");
        parse_folded(&body)
    }

    /// `/api/targets` by service name.
    pub fn targets(&self) -> HashMap<String, Value> {
        let list: Vec<Value> = serde_json::from_value(self.json("/api/targets", &[])).unwrap();
        list.into_iter()
            .map(|t| (t["labels"]["service"].as_str().unwrap().to_owned(), t))
            .collect()
    }

    /// Waits (up to a minute) until `service`'s health satisfies `done`; returns it.
    pub fn wait_target(&self, service: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // Listed once its scrape task has started.
            if let Some(t) = self.targets().remove(service) {
                if done(&t) {
                    return t;
                }
                assert!(Instant::now() < deadline, "{service}: {t}");
            }
            assert!(Instant::now() < deadline, "{service} never scraped");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(running) = self.running.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(20), running).await });
        }
    }
}

/// An answer's status, content type and body (up to 64 MiB).
pub fn read_answer(mut r: ureq::http::Response<ureq::Body>) -> (u16, String, Vec<u8>) {
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut body = Vec::new();
    r.body_mut()
        .with_config()
        .limit(64 << 20)
        .reader()
        .read_to_end(&mut body)
        .unwrap();
    (r.status().as_u16(), ctype, body)
}

/// Percent-encodes all but the unreserved characters of `s`, for a query value.
pub fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// What [`encode`] escapes: everything but RFC 3986's unreserved characters.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Folded text (`stack count` lines) as `stack -> count`.
pub fn parse_folded(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (s, c) = l.rsplit_once(' ').unwrap();
            (s.to_string(), c.parse().unwrap())
        })
        .collect()
}

/// The sum of a folded profile's counts.
pub fn total(m: &BTreeMap<String, u64>) -> u64 {
    m.values().sum()
}
