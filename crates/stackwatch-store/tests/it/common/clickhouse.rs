//! Real ClickHouse servers for tests: a single node, or an N-shard cluster, each in its own
//! temporary directory on free loopback ports, spoken to over HTTP.
//!
//! Self-contained (std and `tempfile` only) so any test crate can include it:
//!
//! ```ignore
//! #[path = "../../../stackwatch-store/tests/it/common/clickhouse.rs"]
//! mod clickhouse;
//! ```
//!
//! It runs Debian's `clickhouse-server` (18.16) from `/usr/sbin`; `scripts/test.sh` installs
//! it. Each server is killed (SIGKILL) and reaped when its [`ClickHouse`] is dropped, and its
//! directory (`$TMPDIR/stackwatch-clickhouse-*`) removed.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The server binary (Debian's `clickhouse-server` package).
#[allow(dead_code)]
pub const SERVER_BIN: &str = "/usr/sbin/clickhouse-server";

/// How long a server may take to answer `GET /ping` before the start fails.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a start is tried with fresh ports when a port was taken meanwhile.
const START_ATTEMPTS: usize = 3;
/// The tail of a log that a failure message shows.
const LOG_TAIL_BYTES: usize = 4000;

/// One running `clickhouse-server`. Dropping it kills the server and removes its files.
#[allow(dead_code)]
pub struct ClickHouse {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub http_url: String,
    pub http_port: u16,
    /// The native-protocol port (what a cluster's `remote_servers` entry names).
    pub tcp_port: u16,
    pub user: &'static str,
    pub password: &'static str,
    dir: tempfile::TempDir,
    child: Child,
}

/// How a server is configured beyond the defaults ([`ClickHouse::start_with`]).
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Record every query in `system.query_log` (the `query_log` section in config.xml,
    /// `log_queries = 1` in the default profile; flushed every second, or at once by
    /// `SYSTEM FLUSH LOGS`). Off by default: the log is written while queries run.
    pub log_queries: bool,
}

/// Why a start failed in a way that fresh ports can fix.
struct AddrInUse(String);

#[allow(dead_code)]
impl ClickHouse {
    pub const USER: &'static str = "default";
    pub const PASSWORD: &'static str = "secret";

    /// Starts a single server and waits until it answers. Panics (with the server's logs)
    /// if it cannot.
    pub fn start() -> ClickHouse {
        Self::start_with(Options::default())
    }

    /// [`start`](ClickHouse::start) with `options` (e.g. the query log on).
    pub fn start_with(options: Options) -> ClickHouse {
        Self::start_cluster_inner(None, 1, options).pop().unwrap()
    }

    /// Starts `shards` servers whose configs all hold the same `remote_servers` entry `name`:
    /// one shard per server, in the order returned, one replica each, with the user and
    /// password. So `Distributed(name, db, table, key)` on any of them spans all of them.
    pub fn start_cluster(name: &str, shards: usize) -> Vec<ClickHouse> {
        Self::start_cluster_with(name, shards, Options::default())
    }

    /// [`start_cluster`](ClickHouse::start_cluster) with `options` (e.g. the query log on).
    pub fn start_cluster_with(name: &str, shards: usize, options: Options) -> Vec<ClickHouse> {
        assert!(shards >= 1, "a cluster needs at least one shard");
        assert!(
            !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "cluster name {name:?} must be an XML element name: letters, digits, '_'"
        );
        Self::start_cluster_inner(Some(name), shards, options)
    }

    fn start_cluster_inner(name: Option<&str>, n: usize, options: Options) -> Vec<ClickHouse> {
        if !Path::new(SERVER_BIN).exists() {
            panic!(
                "clickhouse-server is not installed: run scripts/test.sh (it installs Debian's clickhouse-server)"
            );
        }
        let mut last = String::new();
        for attempt in 1..=START_ATTEMPTS {
            // Every port of every node is picked while all are bound, so they are distinct.
            let ports = free_ports(2 * n);
            let nodes: Vec<(u16, u16)> = (0..n).map(|i| (ports[2 * i], ports[2 * i + 1])).collect();
            let cluster = name.map(|name| remote_servers(name, &nodes));
            let mut started = Vec::with_capacity(n);
            let mut failed = None;
            for &(http_port, tcp_port) in &nodes {
                match Self::spawn_new(
                    http_port,
                    tcp_port,
                    cluster.as_deref().unwrap_or(""),
                    options,
                ) {
                    Ok(ch) => started.push(ch),
                    Err(AddrInUse(why)) => {
                        failed = Some(why);
                        break;
                    }
                }
            }
            match failed {
                None => return started,
                // The peers' configs name the taken port too: start them all again.
                Some(why) => {
                    drop(started);
                    last = format!("attempt {attempt}: {why}");
                }
            }
        }
        panic!("clickhouse-server: a port was taken on each of {START_ATTEMPTS} attempts; last: {last}");
    }

    fn spawn_new(
        http_port: u16,
        tcp_port: u16,
        remote_servers: &str,
        options: Options,
    ) -> Result<ClickHouse, AddrInUse> {
        let dir = tempfile::Builder::new()
            .prefix("stackwatch-clickhouse-")
            .tempdir()
            .expect("a temporary directory for clickhouse-server");
        let d = dir.path();
        for sub in ["data", "tmp", "user_files", "format_schemas"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        let id = d.file_name().unwrap().to_string_lossy().into_owned();
        fs::write(
            d.join("config.xml"),
            config_xml(d, http_port, tcp_port, &id, remote_servers, options),
        )
        .unwrap();
        fs::write(d.join("users.xml"), users_xml(options)).unwrap();
        let child = spawn(d);
        let mut ch = ClickHouse {
            http_url: format!("http://127.0.0.1:{http_port}"),
            http_port,
            tcp_port,
            user: Self::USER,
            password: Self::PASSWORD,
            dir,
            child,
        };
        ch.wait_ready()?; // on Err, dropping `ch` kills what is left of the server
        Ok(ch)
    }

    /// Kills the server with SIGKILL (no clean shutdown) and reaps it. Its files stay.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same ports and data directory (after [`kill`], or
    /// kills it first), and waits until it answers.
    ///
    /// [`kill`]: ClickHouse::kill
    pub fn restart(&mut self) {
        self.kill();
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            self.child = spawn(self.dir.path());
            match self.wait_ready() {
                Ok(()) => return,
                Err(AddrInUse(why)) => {
                    self.kill();
                    last = why;
                    sleep(Duration::from_millis(500));
                }
            }
        }
        panic!("clickhouse-server could not restart on its own ports: {last}");
    }

    /// Runs one statement over HTTP (POST, with the user and password) and returns the body
    /// (e.g. `"1\n"` for `SELECT 1`); `Err` holds the HTTP status and ClickHouse's message, or
    /// the I/O error (e.g. when the server is down).
    pub fn query(&self, sql: &str) -> Result<String, String> {
        self.query_with(sql, &[])
    }

    /// [`query`](ClickHouse::query) with URL parameters: settings such as
    /// `("insert_distributed_sync", "1")`, or `("database", "db")`.
    pub fn query_with(&self, sql: &str, params: &[(&str, &str)]) -> Result<String, String> {
        // wait_end_of_query buffers the answer, so an error mid-way is a 500, not a 200
        // whose body ends in an exception.
        let mut target = String::from("/?wait_end_of_query=1");
        for (k, v) in params {
            target.push('&');
            target.push_str(&url_encode(k));
            target.push('=');
            target.push_str(&url_encode(v));
        }
        let (status, body) = http(
            self.http_port,
            "POST",
            &target,
            &[
                ("X-ClickHouse-User", self.user),
                ("X-ClickHouse-Key", self.password),
            ],
            sql.as_bytes(),
            Duration::from_secs(120),
        )
        .map_err(|e| format!("{}: {e}", self.http_url))?;
        if status == 200 {
            Ok(body)
        } else {
            Err(format!("HTTP {status}: {}", body.trim_end()))
        }
    }

    /// The server's temporary directory (config.xml, users.xml, data/, the logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory in KiB (from /proc), if it is running.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// The last part of err.log and of the server's stdout/stderr, for failure messages.
    pub fn logs(&self) -> String {
        logs_tail(self.dir.path())
    }

    /// Polls `GET /ping` until it answers `Ok.`, then checks that the answer came from this
    /// server (not another one that took the port first). Panics if the server exits or
    /// stays silent for 30 s, unless the reason is a taken port.
    fn wait_ready(&mut self) -> Result<(), AddrInUse> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting on clickhouse-server") {
                let logs = self.logs();
                if logs.contains("Address already in use") {
                    return Err(AddrInUse(format!(
                        "ports http {} / tcp {} taken",
                        self.http_port, self.tcp_port
                    )));
                }
                panic!(
                    "clickhouse-server (http {}, tcp {}) exited with {status} before it was ready\n{logs}",
                    self.http_port, self.tcp_port
                );
            }
            let pong = http(
                self.http_port,
                "GET",
                "/ping",
                &[],
                b"",
                Duration::from_secs(2),
            );
            if matches!(&pong, Ok((200, body)) if body.starts_with("Ok.")) {
                let id = self
                    .dir
                    .path()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                match self.query(
                    "SELECT substitution FROM system.macros WHERE macro = 'stackwatch_harness'",
                ) {
                    Ok(got) if got.trim_end() == id => return Ok(()),
                    // Someone else's server is on our port: ours will exit with
                    // "Address already in use" on the next turns.
                    _ => {}
                }
            }
            if Instant::now() > deadline {
                let logs = self.logs();
                self.kill();
                panic!(
                    "clickhouse-server (http {}, tcp {}) did not answer GET /ping within {}s\n{logs}",
                    self.http_port,
                    self.tcp_port,
                    READY_TIMEOUT.as_secs()
                );
            }
            sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(dir: &Path) -> Child {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stdout.log"))
        .unwrap();
    let err = out.try_clone().unwrap();
    Command::new(SERVER_BIN)
        .arg(format!(
            "--config-file={}",
            dir.join("config.xml").display()
        ))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {SERVER_BIN}: {e}"))
}

/// `n` distinct free loopback ports: all bound at once to port 0, then released.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn remote_servers(name: &str, nodes: &[(u16, u16)]) -> String {
    let mut s = format!("  <remote_servers><{name}>\n");
    for &(_, tcp_port) in nodes {
        s.push_str(&format!(
            "    <shard><replica><host>127.0.0.1</host><port>{tcp_port}</port><user>{}</user><password>{}</password></replica></shard>\n",
            ClickHouse::USER,
            ClickHouse::PASSWORD
        ));
    }
    s.push_str(&format!("  </{name}></remote_servers>\n"));
    s
}

/// A minimal config: only what 18.16 needs, with small caches (64 MiB marks, 64 MiB
/// uncompressed) so a server stays near 80 MB resident. The `stackwatch_harness` macro lets
/// the harness check which server answers on a port. With `log_queries`, the
/// `system.query_log` table (18.16 creates it on the first flush).
fn config_xml(
    dir: &Path,
    http_port: u16,
    tcp_port: u16,
    id: &str,
    remote_servers: &str,
    options: Options,
) -> String {
    let d = xml_escape(&dir.display().to_string());
    let query_log = if options.log_queries {
        "  <query_log><database>system</database><table>query_log</table><flush_interval_milliseconds>1000</flush_interval_milliseconds></query_log>\n"
    } else {
        ""
    };
    format!(
        r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/err.log</errorlog><console>0</console></logger>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <mark_cache_size>67108864</mark_cache_size>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <macros><stackwatch_harness>{id}</stackwatch_harness></macros>
{query_log}{remote_servers}</yandex>
"#,
        id = xml_escape(id),
    )
}

/// The user `default` with [`ClickHouse::PASSWORD`], from loopback only; with
/// `log_queries`, its profile logs every query.
fn users_xml(options: Options) -> String {
    let log_queries = if options.log_queries {
        "<log_queries>1</log_queries>"
    } else {
        ""
    };
    USERS_XML.replace("{log_queries}", log_queries)
}

const USERS_XML: &str = r#"<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage>{log_queries}</default></profiles>
  <users><default><password>secret</password><networks><ip>::1</ip><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"#;

fn tail(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(LOG_TAIL_BYTES);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => format!("({e})"),
    }
}

fn logs_tail(dir: &Path) -> String {
    format!(
        "--- {}/err.log (tail) ---\n{}\n--- {}/stdout.log (tail) ---\n{}",
        dir.display(),
        tail(&dir.join("err.log")),
        dir.display(),
        tail(&dir.join("stdout.log"))
    )
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// One HTTP/1.1 request to 127.0.0.1:`port` with `Connection: close`; returns the status and
/// the (de-chunked) body.
fn http(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    s.write_all(body).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;

    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no HTTP header in {:?}", String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut payload = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad HTTP status line in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        payload = dechunk(&payload)?;
    }
    Ok((status, String::from_utf8_lossy(&payload).into_owned()))
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_line = String::from_utf8_lossy(&rest[..eol]);
        let size_hex = size_line.split(';').next().unwrap().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|e| format!("chunk size {size_hex:?}: {e}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or(&[]);
    }
}
