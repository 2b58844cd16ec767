//! The commands of README.md and the shell examples of docs/*.md, taken from the Markdown
//! and run exactly as printed, so an edit that breaks one fails CI.
//!
//! # The convention (for whoever edits README.md or docs/*.md)
//!
//! - Every ` ```sh ` block is run by
//!   `every_sh_block_in_the_readme_and_docs_runs_as_printed`, one block at a time, in a
//!   fresh temporary directory as the working directory. Other fences (` ``` `, ` ```toml `,
//!   ` ```json `, ` ```rust `) are not run.
//! - A block whose fence line is immediately preceded by a line
//!   `<!-- not run: REASON -->` is skipped, and the test prints the reason. The few blocks
//!   in files this test's owner cannot mark are listed in [`NOT_RUN`], each with its reason;
//!   an entry that no longer matches a block fails the test.
//! - A command is one line, with `\` continuations and `<<'WORD'` here-documents joined;
//!   `#` comment lines are not commands. Each runs with `sh -c` and must exit 0 within 3
//!   minutes. A command that writes `> FILE` must leave FILE non-empty (an SVG when FILE
//!   ends in `.svg`); a `curl` or `go` without `>` must print something.
//! - `cargo run [--release] -p PKG -- ARGS` runs the binary this test was built with (a
//!   `cargo` stand-in on PATH: `stackwatch-cli` is `stackwatch`, `binlog-streamer` is
//!   `stackwatch worker`, the same code); `.ci/run` checks that the real `cargo run -p PKG`
//!   resolves, and `every_cargo_run_in_the_readme_and_docs_parses` that each line's flags
//!   parse, run blocks or not.
//! - A command that serves (`-- server`, `-- demo`, `--http-addr`, `--follow`) is started in
//!   the background, and the block's next command waits until its port answers: a
//!   collector once it serves a non-empty profile, a profiled service once its `/` does.
//!   Stopped with SIGINT at the end of the block.
//! - A port the block names (`localhost:P`, `127.0.0.1:P`) that none of its own commands
//!   serves is given a context started before the block: 6060 a profiled service (a
//!   binlog-streamer worker, as in "Linking the crate into a service"), 7070 the demo (three
//!   workers, `service="binlog-streamer"`, `version="main"` and `"canary"`, as docs/api.md
//!   assumes). Any other such port fails the test: add a context here or mark the block.
//! - Every file a block leaves in its directory must be git-ignored, so the examples run
//!   from a checkout leave nothing untracked.
//!
//! The README's test command cannot run itself; `the_readme_test_command_is_what_ci_runs`
//! checks it instead: `.ci/run` runs the same line, its `--dry-run` works, and every
//! `#[ignore]` reason in the workspace names it.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Blocks run nowhere else and not marked in their file, with why. (file, a line of the
/// block, reason)
const NOT_RUN: &[(&str, &str, &str)] = &[(
    "docs/operations.md",
    "sqlite3 stackwatch-data/stackwatch.db \".backup",
    "needs the sqlite3 shell (not installed by scripts/test.sh) and an existing backup/ \
     directory; the online backup is SQLite's own",
)];

/// The Markdown files whose examples are run.
fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("reading docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| PathBuf::from("docs").join(p.file_name().unwrap()))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// One ```sh block of a Markdown file.
#[derive(Debug, Clone)]
struct Block {
    file: PathBuf,
    /// 1-based line of the opening fence.
    line: usize,
    /// The reason of a `<!-- not run: ... -->` line right before the fence.
    not_run: Option<String>,
    text: String,
}

impl Block {
    fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

fn sh_blocks(file: &Path) -> Vec<Block> {
    let md = std::fs::read_to_string(repo().join(file))
        .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    let lines: Vec<&str> = md.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let fence = lines[i].trim_end();
        if !fence.starts_with("```") {
            i += 1;
            continue;
        }
        let start = i;
        let end = (i + 1..lines.len())
            .find(|&j| lines[j].trim_end() == "```")
            .unwrap_or_else(|| panic!("{}:{}: unclosed fence", file.display(), i + 1));
        if fence == "```sh" {
            let not_run = start
                .checked_sub(1)
                .and_then(|p| lines[p].trim().strip_prefix("<!-- not run:"))
                .map(|r| r.trim_end_matches("-->").trim().to_string());
            blocks.push(Block {
                file: file.to_owned(),
                line: start + 1,
                not_run,
                text: lines[start + 1..end].join("\n"),
            });
        }
        i = end + 1;
    }
    blocks
}

fn all_blocks() -> Vec<Block> {
    doc_files().iter().flat_map(|f| sh_blocks(f)).collect()
}

/// One shell command of a block: `\` continuations and here-documents joined.
#[derive(Debug, Clone, PartialEq)]
struct ShellCommand {
    /// What `sh -c` runs.
    script: String,
    /// The command line(s) without the here-document's body.
    line: String,
}

fn commands(block: &str) -> Vec<ShellCommand> {
    let mut out = Vec::new();
    let mut lines = block.lines();
    while let Some(first) = lines.next() {
        if first.trim().is_empty() || first.trim_start().starts_with('#') {
            continue;
        }
        let mut line = first.to_string();
        while line.ends_with('\\') {
            let next = lines.next().expect("a `\\` continuation has a next line");
            line.push('\n');
            line.push_str(next);
        }
        let mut script = line.clone();
        if let Some(word) = heredoc_word(&line) {
            loop {
                let body = lines
                    .next()
                    .unwrap_or_else(|| panic!("here-document {word} is not closed in:\n{block}"));
                script.push('\n');
                script.push_str(body);
                if body == word {
                    break;
                }
            }
        }
        out.push(ShellCommand { script, line });
    }
    out
}

/// `WORD` of `<<'WORD'`, `<<"WORD"` or `<<WORD`.
fn heredoc_word(line: &str) -> Option<String> {
    let rest = line
        .split_once("<<")?
        .1
        .trim_start_matches('-')
        .trim_start();
    let word: String = rest
        .trim_start_matches(['\'', '"'])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!word.is_empty()).then_some(word)
}

/// Ports named as `localhost:P` or `127.0.0.1:P`.
fn ports_named(text: &str) -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for host in ["localhost:", "127.0.0.1:"] {
        for (i, _) in text.match_indices(host) {
            let digits: String = text[i + host.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(p) = digits.parse() {
                ports.insert(p);
            }
        }
    }
    ports
}

/// A command that serves until stopped.
fn is_service(cmd: &ShellCommand) -> bool {
    let l = &cmd.line;
    l.contains(" -- server ")
        || l.contains(" -- demo")
        || l.contains("--http-addr")
        || l.contains("--follow")
}

/// The ports a service command listens on: `--http-addr`, `--port`, `--listen`, a
/// `listen = "...:P"` line in the block (the config it writes), or the demo's 7070.
fn ports_served(cmd: &ShellCommand, block: &str) -> BTreeSet<u16> {
    let words: Vec<&str> = cmd.line.split_whitespace().collect();
    let mut ports = BTreeSet::new();
    for w in words.windows(2) {
        match w[0] {
            "--http-addr" | "--listen" => ports.extend(
                w[1].rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok()),
            ),
            "--port" => ports.extend(w[1].parse::<u16>().ok()),
            _ => {}
        }
    }
    if cmd.line.contains(" -- server ") && !cmd.line.contains("--listen") {
        let listen = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("listen"))
            .map(|l| ports_named(l).into_iter().collect::<Vec<_>>());
        match listen {
            Some(p) => ports.extend(p),
            None => {
                ports.insert(7070);
            }
        }
    }
    if cmd.line.contains(" -- demo") && !cmd.line.contains("--port") {
        ports.insert(7070);
    }
    ports
}

/// The file a command writes with `> FILE`.
fn redirect_target(line: &str) -> Option<String> {
    let (_, after) = line.rsplit_once(" > ")?;
    let target = after.split_whitespace().next()?;
    (!target.starts_with("<<")).then(|| target.to_string())
}

// ---------------------------------------------------------------------------------------
// Checks that need no installed tool.

/// The README's test command: the one-line ```sh block after the demo's, in "Two commands".
fn readme_test_command() -> String {
    let readme = sh_blocks(Path::new("README.md"));
    let md = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = md
        .lines()
        .position(|l| l == "## Two commands")
        .expect("README.md has a `## Two commands` section")
        + 1;
    let next = md
        .lines()
        .enumerate()
        .skip(section)
        .find(|(_, l)| l.starts_with("## "))
        .map_or(usize::MAX, |(i, _)| i + 1);
    let in_section: Vec<&Block> = readme
        .iter()
        .filter(|b| b.line > section && b.line < next)
        .collect();
    assert_eq!(
        in_section.len(),
        2,
        "`## Two commands` has two ```sh blocks, the demo and the tests: {in_section:#?}"
    );
    let cmds = commands(&in_section[1].text);
    assert_eq!(cmds.len(), 1, "the test command is one command: {cmds:?}");
    cmds[0].line.clone()
}

#[test]
fn the_readme_test_command_is_what_ci_runs_and_every_ignore_reason_names_it() {
    let cmd = readme_test_command();
    let repo = repo();

    // .ci/run runs the very same line.
    let ci = std::fs::read_to_string(repo.join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == cmd),
        ".ci/run must run the README's test command `{cmd}` as a line of its own, so the two \
         cannot drift:\n{ci}"
    );

    // It resolves: an executable file of the repository, whose dry run names what it runs.
    let program = cmd.split_whitespace().next().unwrap();
    let meta = std::fs::metadata(repo.join(program))
        .unwrap_or_else(|e| panic!("the README's test command `{cmd}`: {program}: {e}"));
    assert!(
        meta.permissions().mode() & 0o111 != 0,
        "{program} is executable"
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{cmd} --dry-run"))
        .current_dir(&repo)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "`{cmd} --dry-run` failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("would run: cargo test --workspace -- --include-ignored"),
        "the dry run names the test run: {stdout}"
    );
    for tool in [
        "golang-go",
        "chromium",
        "mariadb-server",
        "redis-server",
        "curl",
    ] {
        assert!(
            stdout.contains(&format!(" {tool}")),
            "the dry run reports on {tool}: {stdout}"
        );
    }

    // Every ignored test says how to run it: with this command.
    let mut sources = Vec::new();
    for dir in ["crates", "examples"] {
        rust_files(&repo.join(dir), &mut sources);
    }
    let wanted = format!("run via {cmd}\"]");
    let mut wrong = Vec::new();
    let mut ignored = 0;
    for path in &sources {
        let text = std::fs::read_to_string(path).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("#[ignore") {
                ignored += 1;
                if !line.contains(&wanted) {
                    wrong.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(ignored > 0, "the workspace has ignored tests");
    assert!(
        wrong.is_empty(),
        "an ignored test's reason names what it needs and ends `{wanted}`:\n{}",
        wrong.join("\n")
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_cargo_run_in_the_readme_and_docs_parses() {
    let env = Env::new();
    let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    let mut checked = 0;
    for block in all_blocks() {
        for cmd in commands(&block.text) {
            if !cmd.line.starts_with("cargo run") {
                continue;
            }
            // `cargo run -p PKG` itself must resolve: .ci/run checks it for every package.
            let pkg = cmd
                .line
                .split_whitespace()
                .skip_while(|w| *w != "-p")
                .nth(1)
                .unwrap_or_else(|| panic!("{}: `cargo run` without -p: {}", block.at(), cmd.line));
            assert!(
                ci.contains(&format!("cargo run -q -p {pkg} -- ")),
                "{}: .ci/run checks that `cargo run -p {pkg}` resolves",
                block.at()
            );
            let script = format!("{} --help", cmd.line);
            let out = env.sh(&script, env.home.path()).output().unwrap();
            assert!(
                out.status.success(),
                "{}: `{}` does not parse: {}",
                block.at(),
                cmd.line,
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "the README's cargo run lines were found");
}

#[test]
fn markdown_parsing_joins_continuations_and_heredocs() {
    let block = "# a comment\ncurl -sG x \\\n  -d a=b > p.svg\n\ncat > f.toml <<'TOML'\nlisten = \"127.0.0.1:7071\"\nTOML\ncargo run --release -p stackwatch-cli -- server --config f.toml";
    let cmds = commands(block);
    assert_eq!(cmds.len(), 3, "{cmds:?}");
    assert_eq!(cmds[0].line, "curl -sG x \\\n  -d a=b > p.svg");
    assert_eq!(redirect_target(&cmds[0].line).as_deref(), Some("p.svg"));
    assert_eq!(cmds[1].line, "cat > f.toml <<'TOML'");
    assert!(cmds[1].script.ends_with("\nTOML"));
    assert_eq!(redirect_target(&cmds[1].line).as_deref(), Some("f.toml"));
    assert!(is_service(&cmds[2]));
    assert_eq!(
        ports_served(&cmds[2], block),
        BTreeSet::from([7071]),
        "the server listens where its config says"
    );
    assert_eq!(
        ports_named("curl localhost:6060/ 'http://127.0.0.1:7070/x'"),
        BTreeSet::from([6060, 7070])
    );
}

// ---------------------------------------------------------------------------------------
// Running the blocks.

/// Where commands run: a PATH whose `cargo` runs this test's binaries, and a HOME of its
/// own (`go tool pprof` saves profiles under it).
struct Env {
    home: tempfile::TempDir,
    path: String,
}

impl Env {
    fn new() -> Env {
        let home = tempfile::tempdir().unwrap();
        let bin = home.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let shim = bin.join("cargo");
        std::fs::write(&shim, CARGO_SHIM).unwrap();
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Env { home, path }
    }

    fn sh(&self, script: &str, dir: &Path) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .current_dir(dir)
            .env("PATH", &self.path)
            .env("HOME", self.home.path())
            .env("STACKWATCH_BIN", env!("CARGO_BIN_EXE_stackwatch"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        cmd
    }
}

/// `cargo` in the blocks' PATH.
const CARGO_SHIM: &str = r#"#!/bin/sh
# Stands in for cargo in README and docs commands: `cargo run [--release] -p PKG -- ARGS`
# runs the binary the test was built with.
fail() { echo "cargo stand-in (crates/stackwatch-cli/tests/it/readme_commands.rs): $*; add it there" >&2; exit 97; }
[ "$1" = run ] || fail "only 'cargo run' is expected, got: cargo $*"
shift
[ "$1" = --release ] && shift
[ "$1" = -p ] || fail "expected 'cargo run [--release] -p PKG -- ...', got -p missing"
pkg=$2
shift 2
[ "$1" = -- ] || fail "expected '--' after -p $pkg"
shift
case "$pkg" in
  stackwatch-cli) exec "$STACKWATCH_BIN" "$@" ;;
  binlog-streamer) exec "$STACKWATCH_BIN" worker "$@" ;;
  *) fail "no binary known for package $pkg" ;;
esac
"#;

/// A background process group: a service a block started or a context.
struct Service {
    what: String,
    child: Child,
    log: PathBuf,
}

impl Service {
    fn start(mut cmd: Command, what: String, log: PathBuf) -> Service {
        let file = std::fs::File::create(&log).unwrap();
        cmd.stdout(file.try_clone().unwrap())
            .stderr(file)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        Service { what, child, log }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until `port` answers, and for data: from a collector, samples of every target
    /// and a non-empty profile; from a profiled service, a non-empty `/`.
    fn wait_ready(&mut self, port: u16) -> Result<(), String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) before serving {port}:\n{}",
                    self.what,
                    self.log_tail()
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                let ready = match http_get(port, "/api/targets") {
                    Some(targets) => {
                        every_target_has_samples(&targets)
                            && http_get(port, "/api/profile.folded?from=now-15m")
                                .is_some_and(|b| !b.trim().is_empty())
                    }
                    None => http_get(port, "/").is_some_and(|b| !b.trim().is_empty()),
                };
                if ready {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} served no data on port {port} within 2 minutes:\n{}",
                    self.what,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Service {
    /// Ctrl-C to the group (the demo stops its workers), then SIGKILL if it lingers.
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // Safety: signals to the process group this test created.
        unsafe { libc::killpg(pgid, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        unsafe { libc::killpg(pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// `/api/targets` lists targets, each with samples stored (the demo's canary too, before a
/// diff against main is drawn).
fn every_target_has_samples(targets: &str) -> bool {
    let Ok(serde_json::Value::Array(targets)) = serde_json::from_str(targets) else {
        return false;
    };
    !targets.is_empty()
        && targets
            .iter()
            .all(|t| t["samples_ingested_total"].as_u64().is_some_and(|n| n > 0))
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut resp = agent
        .get(format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()?;
    resp.body_mut().read_to_string().ok()
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// What a block's port needs when no command of the block serves it.
fn context(env: &Env, port: u16, dir: &Path) -> Option<Service> {
    let bin = env!("CARGO_BIN_EXE_stackwatch");
    let (cmd, what) = match port {
        6060 => {
            let mut c = Command::new(bin);
            c.args(["worker", "--source", "generate", "--rate", "20000"])
                .args(["--sink", "null", "--http-addr", "127.0.0.1:6060"])
                .args(["--profile-window-secs", "1"]);
            (c, "a profiled service on 6060 (stackwatch worker)")
        }
        7070 => {
            let mut c = Command::new(bin);
            c.args(["demo", "--port", "7070", "--rate", "5000"]);
            (c, "the demo on 7070 (the collector docs/api.md queries)")
        }
        _ => return None,
    };
    let mut cmd = cmd;
    cmd.current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    Some(Service::start(
        cmd,
        what.to_string(),
        env.home.path().join(format!("context-{port}.log")),
    ))
}

/// Runs one block; returns what went wrong.
fn run_block(env: &Env, block: &Block) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let ctx_dir = tempfile::tempdir().unwrap();
    let cmds = commands(&block.text);
    let served: BTreeSet<u16> = cmds
        .iter()
        .filter(|c| is_service(c))
        .flat_map(|c| ports_served(c, &block.text))
        .collect();
    let mut services = Vec::new();
    for port in ports_named(&block.text).difference(&served) {
        if !port_is_free(*port) {
            return Err(format!(
                "port {port} is taken on this machine; the block needs it for its context"
            ));
        }
        let mut svc = context(env, *port, ctx_dir.path()).ok_or_else(|| {
            format!(
                "it names port {port}, which none of its commands serves and for which \
                 crates/stackwatch-cli/tests/it/readme_commands.rs knows no context: add one there, or mark the block \
                 `<!-- not run: reason -->`"
            )
        })?;
        svc.wait_ready(*port)?;
        services.push(svc);
    }
    for (n, cmd) in cmds.iter().enumerate() {
        let what = format!("command {}: `{}`", n + 1, cmd.line);
        if is_service(cmd) {
            let ports = ports_served(cmd, &block.text);
            if let Some(p) = ports.iter().find(|p| !port_is_free(**p)) {
                return Err(format!("{what}: port {p} is taken on this machine"));
            }
            let log = env.home.path().join(format!("service-{n}.log"));
            let mut svc = Service::start(env.sh(&cmd.script, dir.path()), what.clone(), log);
            for p in ports {
                svc.wait_ready(p)?;
            }
            services.push(svc);
            continue;
        }
        let started = Instant::now();
        let out = run_with_timeout(env.sh(&cmd.script, dir.path()), Duration::from_secs(180))
            .map_err(|e| format!("{what}: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!(
                "{what} failed ({}):\n{stdout}\n{stderr}",
                out.status
            ));
        }
        match redirect_target(&cmd.line) {
            Some(file) => {
                let body = std::fs::read(dir.path().join(&file)).unwrap_or_default();
                if body.is_empty() {
                    return Err(format!("{what} left {file} empty or missing\n{stderr}"));
                }
                let text = String::from_utf8_lossy(&body);
                if file.ends_with(".svg") && !text.contains("<svg") {
                    return Err(format!(
                        "{what}: {file} is no SVG: {}",
                        &text[..text.len().min(300)]
                    ));
                }
                // Every service and context here runs binlog-streamer workers: a flamegraph
                // of them that shows none of their frames drew nothing.
                if file.ends_with(".svg") && !text.contains("binlog_streamer") {
                    // What it drew instead (frame titles, or the message of an empty one).
                    let titles: Vec<&str> = text
                        .split("<title>")
                        .skip(1)
                        .filter_map(|t| t.split("</title>").next())
                        .take(12)
                        .collect();
                    return Err(format!(
                        "{what}: {file} shows no binlog_streamer frame ({} bytes; titles: {titles:?}; \
                         text: {:?})",
                        text.len(),
                        text.split("<text")
                            .nth(1)
                            .map(|t| t.chars().take(300).collect::<String>())
                    ));
                }
            }
            None if ["curl ", "go "].iter().any(|p| cmd.line.starts_with(p))
                && stdout.trim().is_empty() =>
            {
                return Err(format!("{what} printed nothing\n{stderr}"));
            }
            None => {}
        }
        eprintln!(
            "  {} ran in {:.1} s",
            cmd.line.lines().next().unwrap(),
            started.elapsed().as_secs_f64()
        );
    }
    drop(services);
    untracked_files(dir.path())
}

fn run_with_timeout(mut cmd: Command, limit: Duration) -> Result<std::process::Output, String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if Instant::now() > deadline {
            // Safety: the group this function created.
            unsafe { libc::killpg(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
            return Err(format!("still running after {} s", limit.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(std::process::Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    })
}

/// Files the block left that a checkout would show as untracked.
fn untracked_files(dir: &Path) -> Result<(), String> {
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files);
    let mut untracked = Vec::new();
    for f in files {
        let status = Command::new("git")
            .args(["check-ignore", "-q", "--no-index"])
            .arg(&f)
            .current_dir(repo())
            .status()
            .map_err(|e| format!("git check-ignore: {e}"))?;
        if !status.success() {
            untracked.push(f.display().to_string());
        }
    }
    if untracked.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "run from the repository root, it would leave untracked files (ignore them in \
             .gitignore or write elsewhere): {}",
            untracked.join(", ")
        ))
    }
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_files(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).unwrap().to_owned());
        }
    }
}

#[test]
#[ignore = "needs curl, golang-go and inferno-flamegraph: run via scripts/test.sh"]
fn every_sh_block_in_the_readme_and_docs_runs_as_printed() {
    let env = Env::new();
    let test_command = readme_test_command();
    let blocks = all_blocks();
    let mut report = String::new();
    let mut failures = Vec::new();
    let mut ran = 0;
    let mut used_skips = BTreeSet::new();
    for block in &blocks {
        let listed = NOT_RUN.iter().find(|(file, line, _)| {
            block.file == Path::new(file) && block.text.lines().any(|l| l.contains(line))
        });
        let skip = if let Some(reason) = &block.not_run {
            Some(reason.clone())
        } else if let Some((file, line, reason)) = listed {
            used_skips.insert((*file, *line));
            Some(reason.to_string())
        } else if block.file == Path::new("README.md") && block.text.trim() == test_command {
            Some(
                "the README's test command (this test runs inside it); checked by \
                 the_readme_test_command_is_what_ci_runs_and_every_ignore_reason_names_it"
                    .to_string(),
            )
        } else {
            None
        };
        if let Some(reason) = skip {
            let _ = writeln!(report, "not run: {} ({reason})", block.at());
            continue;
        }
        let started = Instant::now();
        eprintln!("running {}", block.at());
        match run_block(&env, block) {
            Ok(()) => {
                let _ = writeln!(
                    report,
                    "ran {} in {:.1} s",
                    block.at(),
                    started.elapsed().as_secs_f64()
                );
                ran += 1;
            }
            Err(e) => failures.push(format!("{}:\n{}\n{e}", block.at(), block.text)),
        }
    }
    // Straight to stderr, past the test harness's capture: which blocks ran and which did
    // not, and why, is in every log, passing or not.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("readme_commands:\n{report}").as_bytes(),
    );
    let stale: Vec<_> = NOT_RUN
        .iter()
        .filter(|(f, l, _)| !used_skips.contains(&(*f, *l)))
        .collect();
    assert!(
        stale.is_empty(),
        "NOT_RUN entries that match no block (remove them): {stale:?}"
    );
    assert!(
        failures.is_empty(),
        "{} of {} blocks failed as printed:\n\n{}",
        failures.len(),
        ran + failures.len(),
        failures.join("\n\n")
    );
    assert!(ran >= 5, "the README's and docs' blocks ran: {report}");
}
