//! Real servers for the integration tests: a MariaDB primary and a Redis server, each on a
//! temp dir and a free loopback port, stopped when dropped. A missing server binary is a
//! failure with the package to install, never a silent skip.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed and reaped on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn find(binary: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = Path::new(dir).join(binary);
        if p.exists() {
            return p;
        }
    }
    panic!("{binary} not found: apt-get install -y {package} (scripts/test.sh does)");
}

/// A MariaDB server with `log_bin`, `binlog_format=ROW`, `binlog_row_metadata=FULL`.
pub struct MariaDb {
    pub dir: tempfile::TempDir,
    pub port: u16,
    proc: Proc,
}

impl MariaDb {
    /// Initialises a datadir and starts `mariadbd`; returns once it accepts connections
    /// and the `stream` user exists.
    pub fn start() -> MariaDb {
        let server = find("mariadbd", "mariadb-server");
        let install = find("mariadb-install-db", "mariadb-server");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // A temp dir of its own: bootstraps running side by side in a shared /tmp have
        // been seen to trip over each other's temporary tables.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let root_user = unsafe { libc::geteuid() } == 0;
        let mut last_error = String::new();
        for attempt in 1..=3 {
            let _ = std::fs::remove_dir_all(&data);
            let mut init = Command::new(&install);
            init.arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--tmpdir={}", tmp.display()))
                .arg("--auth-root-authentication-method=normal")
                .arg("--skip-test-db");
            if root_user {
                init.arg("--user=root");
            }
            let out = init.output().expect("mariadb-install-db");
            if out.status.success() {
                last_error.clear();
                break;
            }
            last_error = format!(
                "attempt {attempt}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            last_error.is_empty(),
            "mariadb-install-db failed: {last_error}"
        );
        let port = free_port();
        let mut cmd = Command::new(server);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--server-id=1")
            .arg("--log-bin=mysql-bin")
            .arg("--binlog-format=ROW")
            .arg("--binlog-row-metadata=FULL")
            .arg("--default-time-zone=+00:00")
            .arg("--skip-name-resolve")
            .arg("--innodb-buffer-pool-size=32M")
            .arg("--innodb-log-file-size=16M")
            .arg(format!(
                "--log-error={}",
                dir.path().join("error.log").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if root_user {
            cmd.arg("--user=root");
        }
        let proc = Proc(cmd.spawn().expect("mariadbd"));
        let db = MariaDb { dir, port, proc };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match db.root() {
                Ok(mut c) => {
                    use mysql::prelude::Queryable;
                    c.query_drop("CREATE USER 'stream'@'%' IDENTIFIED BY 'pw'")
                        .unwrap();
                    c.query_drop("GRANT ALL ON *.* TO 'stream'@'%'").unwrap();
                    break;
                }
                Err(e) => {
                    if Instant::now() > deadline {
                        let log = std::fs::read_to_string(db.dir.path().join("error.log"))
                            .unwrap_or_default();
                        panic!("mariadbd did not start: {e}\n{log}");
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        db
    }

    fn root(&self) -> mysql::Result<mysql::Conn> {
        let opts = mysql::OptsBuilder::new()
            .socket(Some(
                self.dir.path().join("sock").to_string_lossy().into_owned(),
            ))
            .user(Some("root"));
        mysql::Conn::new(opts)
    }

    /// A connection as the `stream` user over TCP.
    pub fn conn(&self) -> mysql::Conn {
        mysql::Conn::new(mysql::Opts::from_url(&self.url()).unwrap()).unwrap()
    }

    /// `mysql://stream:pw@127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mysql://stream:pw@127.0.0.1:{}", self.port)
    }

    /// The directory holding the binlog files.
    pub fn datadir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// A Redis server without persistence.
pub struct Redis {
    pub dir: tempfile::TempDir,
    pub port: u16,
    proc: Proc,
}

impl Redis {
    /// Starts `redis-server` on a free port and waits for PONG.
    pub fn start() -> Redis {
        Self::start_on(free_port())
    }

    /// Starts `redis-server` on `port` and waits for PONG.
    pub fn start_on(port: u16) -> Redis {
        let server = find("redis-server", "redis-server");
        let dir = tempfile::tempdir().unwrap();
        let proc = Proc(
            Command::new(server)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server"),
        );
        let r = Redis { dir, port, proc };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = r.conn() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return r;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A connection.
    pub fn conn(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?.get_connection()
    }
}

/// The worker binary with `args`; stderr captured.
pub fn worker(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_binlog-streamer"));
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs a worker to completion; returns (exit ok, stdout, stderr).
pub fn run_worker(args: &[&str]) -> (bool, String, String) {
    let out = worker(args).output().expect("binlog-streamer");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Stops a running worker with SIGTERM and returns (exit ok, stderr).
pub fn terminate(mut child: Child) -> (bool, String) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status.success(), err)
}

/// JSON lines of a file sink (partial last line ignored).
pub fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits until `f` holds or the deadline passes.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads a child's stderr lines in the background (so it never blocks on a full pipe).
pub fn drain_stderr(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}
