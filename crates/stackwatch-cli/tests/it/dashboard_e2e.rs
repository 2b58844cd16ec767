//! The dashboard in a real headless browser (Debian's chromium driven by playwright-core,
//! tests/e2e/dashboard.mjs) against a live collector fed by three real profiled workers
//! (two `version="main"`, one `version="canary"`), plus stored targets with a hostile
//! frame name and with 10 000 distinct stacks. Screenshots go to
//! `target/e2e-screenshots/` (or `$STACKWATCH_SCREENSHOTS`); with
//! `STACKWATCH_DOC_IMAGES=1` the two the README shows are also copied to `docs/images/`.
//! A release build also asserts that Explore on the 10 000-stack profile is ready within
//! 1 s (a debug build only reports it).
//!
//! `dashboard_sample_labels_in_chromium`: sample labels in the dashboard, against a
//! collector with a stored target whose samples carry `table` (orders, users, a
//! `<script>` value and one with a quote and a backslash) and `op` labels. Its browser
//! script is [`LABELS_SCRIPT`], in this file, run by node from tests/e2e (where
//! playwright-core is installed).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{binlog_worker, spawn_listening, Proc};

use stackwatch_profile::SampleLabels;
use stackwatch_store::{IngestWindow, ProfileReader, ProfileWriter, SqliteStore, StoreOptions};

/// The collectors these tests start wait for a query slot as long as a busy machine
/// needs: the page loads its panels together, and the default 5 s queue would answer
/// some of them 503 (a console error, so a failure) on a machine whose cores are busy.
const QUERY_ON_A_BUSY_MACHINE: &str = "[query]\nqueue_timeout = \"120s\"\ntimeout = \"120s\"\n";

/// Where a browser test runs: the repository, its tests/e2e (where playwright-core is
/// installed), the screenshot dir, and a temp dir holding the collector's config and
/// its (empty) data dir.
struct BrowserTest {
    repo: PathBuf,
    e2e: PathBuf,
    shots: PathBuf,
    dir: tempfile::TempDir,
    data: PathBuf,
}

impl BrowserTest {
    /// Checks that playwright-core is installed and makes the temp and data dirs.
    fn new() -> BrowserTest {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let e2e = repo.join("tests/e2e");
        assert!(
            e2e.join("node_modules/playwright-core").exists(),
            "run `npm ci` in tests/e2e first (scripts/test.sh does)"
        );
        let shots = std::env::var_os("STACKWATCH_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join("target/e2e-screenshots"));
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        BrowserTest {
            repo,
            e2e,
            shots,
            dir,
            data,
        }
    }

    /// Stores `windows`, starts a collector with no targets of its own over them (it
    /// serves what is stored; `extra_config` is appended to its config), and runs the
    /// browser `script` against it: `node --input-type=module - <base-url>
    /// <screenshot-dir>`. Returns node's stdout; panics if node failed.
    fn run_over_store(&self, windows: &[IngestWindow], extra_config: &str, script: &str) -> String {
        SqliteStore::open(&self.data.join("stackwatch.db"), StoreOptions::default())
            .unwrap()
            .ingest(windows)
            .unwrap();
        let config = self.dir.path().join("stackwatch.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{extra_config}{QUERY_ON_A_BUSY_MACHINE}",
                self.data.display()
            ),
        )
        .unwrap();
        let mut server = Command::new(env!("CARGO_BIN_EXE_stackwatch"));
        server.args(["server", "--config"]).arg(&config);
        let (_server, addr) = spawn_listening(server);
        let url = format!("http://{addr}");
        let mut node = Command::new("node")
            .args(["--input-type=module", "-", &url])
            .arg(&self.shots)
            // Bare imports of a script read from stdin resolve from the working directory.
            .current_dir(&self.e2e)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("node is installed");
        {
            use std::io::Write;
            let mut stdin = node.stdin.take().unwrap();
            stdin.write_all(script.as_bytes()).unwrap();
        }
        let out = node.wait_with_output().unwrap();
        node_stdout(&out, &self.shots)
    }
}

/// A browser test's node output: its stdout, printed and returned; panics with both
/// outputs if node failed.
fn node_stdout(out: &std::process::Output, shots: &Path) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{stderr}\nscreenshots in {}",
        shots.display()
    );
    stdout.into_owned()
}

/// Seconds since the Unix epoch.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
#[ignore = "needs chromium and playwright-core (tests/e2e): run via scripts/test.sh"]
fn dashboard_fleet_explore_compare_and_hostile_names_in_chromium() {
    let BrowserTest {
        repo,
        e2e,
        shots,
        dir,
        data,
    } = BrowserTest::new();
    // Stored targets: a hostile frame name, and a profile with 10 000 distinct stacks.
    {
        let now = unix_now();
        let mut s =
            SqliteStore::open(&data.join("stackwatch.db"), StoreOptions::default()).unwrap();
        let evil = [("service".to_string(), "evil".to_string())].into();
        let big = [("service".to_string(), "big".to_string())].into();
        s.ingest(&[
            IngestWindow {
                labeled: Vec::new(),
                target: evil,
                instance: "x".into(),
                seq: 1,
                start_unix_s: now - 300,
                period_ns: 10_101_010,
                stacks: vec![
                    ("main;<script>window.__pwned=1</script>".into(), 50),
                    (
                        "main;<img src=x onerror=\"window.__pwned=2\">;\"quoted\" & 'apostrophe'"
                            .into(),
                        30,
                    ),
                ],
            },
            IngestWindow {
                labeled: Vec::new(),
                target: big,
                instance: "y".into(),
                seq: 1,
                start_unix_s: now - 300,
                period_ns: 10_101_010,
                stacks: (0..10_000)
                    .map(|i| {
                        let frames: Vec<String> = (0..14)
                            .map(|d| format!("app::module_{}::function_{}", d, (i >> d) & 3))
                            .collect();
                        (
                            format!("worker;{};leaf_{i}", frames.join(";")),
                            1 + (i % 7) as u64,
                        )
                    })
                    .collect(),
            },
        ])
        .unwrap();
    }
    let workers: Vec<(Proc, String, &str, &str)> = [("a", "main"), ("b", "main"), ("c", "canary")]
        .into_iter()
        .map(|(i, v)| {
            // The canary tries Avro, as in `stackwatch demo`: Compare has a real change.
            // 999 Hz: a release build's worker uses a few hundredths of a core, and the
            // verdict needs more than a handful of periods per window to see it.
            let extra: &[&str] = if v == "canary" {
                &["--profile-hz", "999", "--format", "avro"]
            } else {
                &["--profile-hz", "999"]
            };
            let (p, addr) = binlog_worker(extra);
            (p, addr, i, v)
        })
        .collect();
    let mut cfg = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[scrape]\ninterval = \"1s\"\ntimeout = \"2s\"\n[storage]\nflush_interval = \"200ms\"\n{QUERY_ON_A_BUSY_MACHINE}",
        data.display()
    );
    for (_, addr, inst, version) in &workers {
        cfg.push_str(&format!(
            "[[targets]]\nurl = \"http://{addr}\"\nlabels = {{ service = \"binlog-streamer\", instance = \"{inst}\", version = \"{version}\" }}\n"
        ));
    }
    let config = dir.path().join("stackwatch.toml");
    std::fs::write(&config, cfg).unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_stackwatch"));
    server.args(["server", "--config"]).arg(&config);
    let (_server, addr) = spawn_listening(server);
    let url = format!("http://{addr}");
    // Let a few windows of each worker arrive (for the README's pictures, a minute and a
    // half of them): waited for in the store, however slowly a busy machine makes them.
    let doc_images = std::env::var_os("STACKWATCH_DOC_IMAGES").is_some_and(|v| v == "1");
    let want: u64 = if doc_images { 90 } else { 5 };
    let db = data.join("stackwatch.db");
    let deadline = std::time::Instant::now() + Duration::from_secs(120 + want);
    loop {
        let stored: Vec<u64> = workers
            .iter()
            .map(|(_, _, inst, version)| {
                let labels = [
                    ("service".to_string(), "binlog-streamer".to_string()),
                    ("instance".to_string(), inst.to_string()),
                    ("version".to_string(), version.to_string()),
                ]
                .into();
                SqliteStore::open_reader(&db)
                    .and_then(|s| s.checkpoints(&labels))
                    .map_or(0, |c| c.iter().map(|c| c.last_seq).max().unwrap_or(0))
            })
            .collect();
        if stored.iter().all(|n| *n >= want) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "windows stored per worker: {stored:?}, waited for {want} each"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = Command::new("node")
        .arg(e2e.join("dashboard.mjs"))
        .arg(&url)
        .arg(&shots)
        .env(
            "STACKWATCH_E2E_RELEASE",
            if cfg!(debug_assertions) { "0" } else { "1" },
        )
        .output()
        .expect("node is installed");
    let stdout = node_stdout(&out, &shots);
    assert!(stdout.contains("dashboard e2e: ok"));
    for s in [
        "fleet.png",
        "explore.png",
        "explore-function.png",
        "compare.png",
        "hostile.png",
        "dashboard-explore.png",
        "dashboard-compare.png",
    ] {
        assert!(shots.join(s).exists(), "{s} written");
    }
    if doc_images {
        for s in ["dashboard-explore.png", "dashboard-compare.png"] {
            std::fs::copy(shots.join(s), repo.join("docs/images").join(s)).unwrap();
        }
    }
    drop(workers);
}

/// The hostile and the awkward values of the `table` sample label: markup that must stay
/// text, and a value that needs selector escapes (`\"`, `\\`).
const SCRIPT_TABLE: &str = "<script>window.__pwned=3</script>";
const QUOTED_TABLE: &str = "quo\"te\\back";

#[test]
#[ignore = "needs chromium and playwright-core (tests/e2e): run via scripts/test.sh"]
fn dashboard_sample_labels_in_chromium() {
    let t = BrowserTest::new();
    // One stored target, ten minutes of 10 s windows: per window, orders 40-44 periods
    // (op=insert), users 20-22 (op=update), the <script> table 8, the quoted table 4,
    // and 5 periods taken without labels. Each table runs its own function.
    let windows: Vec<IngestWindow> = {
        let now = unix_now();
        let set = |pairs: &[(&str, &str)]| -> SampleLabels {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let target: stackwatch_store::selector::Labels = [
            ("service".to_string(), "shop".to_string()),
            ("instance".to_string(), "s1".to_string()),
            ("version".to_string(), "main".to_string()),
        ]
        .into();
        (0..60u64)
            .map(|i| IngestWindow {
                target: target.clone(),
                instance: "s1".into(),
                seq: i + 1,
                start_unix_s: now - 610 + 10 * i as i64,
                period_ns: 10_101_010,
                stacks: vec![("main;idle_loop".into(), 5)],
                labeled: vec![
                    (
                        set(&[("table", "orders"), ("op", "insert")]),
                        vec![("main;worker;orders::insert_row".into(), 40 + i % 5)],
                    ),
                    (
                        set(&[("table", "users"), ("op", "update")]),
                        vec![("main;worker;users::update_row".into(), 20 + i % 3)],
                    ),
                    (
                        set(&[("table", SCRIPT_TABLE)]),
                        vec![("main;worker;hostile_table_work".into(), 8)],
                    ),
                    (
                        set(&[("table", QUOTED_TABLE)]),
                        vec![("main;worker;quoted_table_work".into(), 4)],
                    ),
                ],
            })
            .collect()
    };
    let stdout = t.run_over_store(&windows, "", LABELS_SCRIPT);
    assert!(stdout.contains("dashboard labels e2e: ok"));
    for s in [
        "labels-explore.png",
        "labels-filtered.png",
        "labels-compare.png",
    ] {
        assert!(t.shots.join(s).exists(), "{s} written");
    }
}

/// The browser side of `dashboard_sample_labels_in_chromium` (playwright-core driving
/// Debian's chromium): `node --input-type=module - <base-url> <screenshot-dir>`.
const LABELS_SCRIPT: &str = r#####"
import { openPage, expect } from './browser.mjs';
import { mkdirSync } from 'node:fs';

const [base, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const problems = [];
const SCRIPT_TABLE = '<script>window.__pwned=3</script>';
const QUOTED_TABLE = 'quo"te\\back';
const SHOP = '{service="shop"}';
const FUNCTIONS = ['orders::insert_row', 'users::update_row', 'hostile_table_work', 'quoted_table_work', 'idle_loop'];

const { browser, page } = await openPage(problems, { width: 1440, height: 1000 });
const step = (name) => console.log('step: ' + name);
const ready = (name) => page.waitForSelector(`body[data-ready="${name}"]`, { timeout: 120000 });
const hash = () => page.evaluate(() => decodeURIComponent(location.hash));
const hashParams = () => page.evaluate(() => Object.fromEntries(new URLSearchParams(location.hash.replace(/^#\/?[^?]*\??/, ''))));
// The function names in a flamegraph frame (every frame's <title> is "name (n samples, x%)").
const flameFunctions = async (testid) => {
  const want = 'iframe[data-testid="' + (testid || 'flamegraph') + '"]';
  await page.frameLocator(want).locator('#frames').waitFor({ state: 'attached', timeout: 120000 });
  const src = await page.locator(want).getAttribute('src');
  const frame = page.frames().find((f) => f.url().endsWith(src));
  return frame.evaluate(() => [...document.querySelectorAll('#frames > g > title')].map((t) => t.textContent.replace(/ \([^(]*\)$/, '')));
};
const noInjection = async (where) => {
  const pwned = await page.evaluate(() => window.__pwned);
  const scripts = await page.evaluate(() => document.querySelectorAll('#view script').length);
  expect(pwned === undefined && scripts === 0, where + ': no injected element or script (' + pwned + ', ' + scripts + ')');
};

try {
  step('group-by picker');
  // The picker lists target labels and sample labels apart.
  await page.goto(base + '/#/explore?' + new URLSearchParams({ query: SHOP, from: 'now-15m', to: 'now' }));
  await ready('explore');
  await page.waitForSelector('[data-testid="group-by"] optgroup[data-kind="sample"] option[value="table"]', { state: 'attached', timeout: 120000 });
  const groups = await page.locator('[data-testid="group-by"] optgroup').evaluateAll((gs) => gs.map((g) => g.label + ': ' + [...g.querySelectorAll('option')].map((o) => o.value).join(',')));
  console.log('group by: ' + groups.join(' | '));
  expect(groups.length === 2 && groups[0] === 'target labels: instance,service,version' && groups[1] === 'sample labels: op,table', 'target and sample labels apart: ' + groups.join(' | '));

  step('stacked by table');
  await page.selectOption('[data-testid="group-by"]', 'table');
  await page.waitForFunction(() => location.hash.includes('group_by=table'));
  await ready('explore');
  const chart = page.locator('[data-testid="cpu-chart"]');
  expect(await chart.getAttribute('data-stacked') === '1', 'the chart is stacked');
  const series = await page.locator('[data-testid="cpu-chart"] g.series').evaluateAll((gs) => gs.map((g) => ({ name: g.dataset.series, areas: g.querySelectorAll('path.stack-area').length })));
  console.log('series: ' + JSON.stringify(series));
  for (const v of ['orders', 'users', SCRIPT_TABLE, QUOTED_TABLE, '(none)']) {
    expect(series.some((s) => s.name === v && s.areas > 0), 'a stacked area for ' + v);
  }
  expect(series.length === 5, 'one series per value and (none): ' + series.length);
  // The legend: every value as text with its share; the shares add up.
  const legend = await page.locator('[data-testid="cpu-chart"] ~ [data-testid="chart-legend"] .legend-item').evaluateAll((els) => els.map((e) => ({
    series: e.dataset.series, name: e.querySelector('.name').textContent, share: Number(e.querySelector('.share').dataset.share), tag: e.tagName,
  })));
  console.log('legend: ' + legend.map((l) => l.name + ' ' + (100 * l.share).toFixed(1) + '%').join(', '));
  const script = legend.find((l) => l.series === SCRIPT_TABLE);
  expect(script && script.name === SCRIPT_TABLE, 'the <script> value is shown as text in the legend');
  expect(Math.abs(legend.reduce((a, l) => a + l.share, 0) - 1) < 0.01, 'the shares add up to 100%');
  const orders = legend.find((l) => l.series === 'orders');
  // orders: 42 of 80 periods a window on average.
  expect(orders && Math.abs(orders.share - 42 / 80) < 0.01, 'orders is 42 of 80 periods: ' + (orders && orders.share));
  expect(orders.tag === 'BUTTON', 'a legend entry is a button');
  await noInjection('legend');
  // Hover: the total and each value with its share of the bucket, the <script> one as text.
  const box = await chart.boundingBox();
  await page.mouse.move(box.x + box.width * 0.8, box.y + box.height / 2);
  await page.waitForSelector('[data-testid="chart-tooltip"]:not([hidden])', { timeout: 120000 });
  const tip = await page.locator('[data-testid="chart-tooltip"]').textContent();
  console.log('hover: ' + tip);
  expect(/total: \d+(\.\d+)? cores/.test(tip) && /orders: \d+(\.\d+)? cores \(\d+\.\d%\)/.test(tip) && tip.includes(SCRIPT_TABLE + ': ') && !tip.includes('null'), 'hover shows the total and each value: ' + tip);
  await page.mouse.move(1, 1);
  await page.screenshot({ path: shots + '/labels-explore.png', fullPage: true });

  step('click orders');
  // A click on a value filters on it: the selector, the chip, the flamegraph, the URL.
  await page.locator('[data-testid="chart-legend"] button.legend-item[data-series="orders"]').click();
  await page.waitForFunction(() => decodeURIComponent(location.hash).includes('table="orders"'));
  await ready('explore');
  let params = await hashParams();
  expect(params.query === '{service="shop",table="orders"}' && params.group_by === 'table', 'the URL carries the filter and group_by: ' + JSON.stringify(params));
  expect(await page.inputValue('input[name="query"]') === '{service="shop",table="orders"}', 'the selector field shows the filter');
  const chips = await page.locator('[data-testid="filters"] [data-testid="filter-chip"]').evaluateAll((cs) => cs.map((c) => ({ label: c.dataset.label, value: c.dataset.value, text: c.querySelector('.chip-text').textContent, sample: c.classList.contains('sample') })));
  console.log('chips: ' + chips.map((c) => c.text).join(' | '));
  expect(chips.length === 2 && chips[1].label === 'table' && chips[1].value === 'orders' && chips[1].text === 'table = "orders"', 'a chip for the filter');
  await page.waitForFunction(() => document.querySelector('[data-testid="filter-chip"][data-label="table"]').classList.contains('sample'));
  let fns = await flameFunctions();
  expect(fns.includes('orders::insert_row'), 'the flamegraph has the orders frames');
  expect(!FUNCTIONS.filter((f) => f !== 'orders::insert_row').some((f) => fns.includes(f)), 'and only them: ' + fns.join(', '));
  const topRows = await page.locator('[data-testid="top-functions"] tbody tr').evaluateAll((rs) => rs.map((r) => r.dataset.function));
  expect(topRows.includes('orders::insert_row') && !topRows.includes('users::update_row'), 'top functions filtered too');
  const legendNow = await page.locator('[data-testid="chart-legend"] .legend-item').evaluateAll((els) => els.map((e) => e.dataset.series));
  expect(legendNow.join() === 'orders', 'the chart shows only orders now: ' + legendNow);
  await page.screenshot({ path: shots + '/labels-filtered.png', fullPage: true });

  step('reload');
  const filtered = await hash();
  await page.reload();
  await ready('explore');
  expect((await hash()) === filtered && (await page.locator('[data-testid="filter-chip"][data-label="table"]').count()) === 1, 'a link reproduces the filtered view');
  expect((await flameFunctions()).includes('orders::insert_row'), 'and its flamegraph');

  step('remove the filter');
  await page.locator('[data-testid="filter-chip"][data-label="table"] button.chip-remove').click();
  await page.waitForFunction(() => !decodeURIComponent(location.hash).includes('table="orders"'));
  await ready('explore');
  expect((await hashParams()).query === SHOP, 'the filter is gone from the URL');
  fns = await flameFunctions();
  expect(fns.includes('users::update_row') && fns.includes('orders::insert_row'), 'the flamegraph has every table again');

  step('click (none)');
  // The samples without the label: `table=""`, named for what they are (issue 26, item 6).
  const noneName = await page.locator('[data-testid="chart-legend"] button.legend-item[data-series="(none)"] .name').textContent();
  expect(noneName === 'no table label', 'the samples outside any table label are named so: ' + noneName);
  await page.locator('[data-testid="chart-legend"] button.legend-item[data-series="(none)"]').click();
  await page.waitForFunction(() => decodeURIComponent(location.hash).includes('table=""'));
  await ready('explore');
  fns = await flameFunctions();
  expect(fns.includes('idle_loop') && !fns.includes('worker'), 'the flamegraph of the unlabeled samples: ' + fns.join(', '));
  await page.locator('[data-testid="filter-chip"][data-label="table"] button.chip-remove').click();
  await page.waitForFunction(() => !decodeURIComponent(location.hash).includes('table=""'));
  await ready('explore');

  step('click an area with a value that needs escapes');
  // A real click on the quoted table's area (found by hit-testing the chart, in view;
  // tried again for a few seconds while a busy machine is still redrawing it).
  await page.locator('[data-testid="cpu-chart"]').scrollIntoViewIfNeeded();
  const hitTest = () => page.evaluate((name) => {
    const svg = document.querySelector('[data-testid="cpu-chart"]');
    const r = svg.getBoundingClientRect();
    for (let x = r.left + r.width - 20; x > r.left + 60; x -= 7) {
      for (let y = r.top + 10; y < r.bottom - 38; y += 1) {
        const e = document.elementFromPoint(x, y);
        if (e && e.classList.contains('stack-area') && e.parentNode.dataset.series === name) return { x, y };
      }
    }
    return null;
  }, QUOTED_TABLE);
  let point = await hitTest();
  for (let i = 0; !point && i < 20; i++) {
    await page.waitForTimeout(250);
    point = await hitTest();
  }
  expect(point, 'the quoted table has a visible area');
  await page.mouse.click(point.x, point.y);
  await page.waitForFunction(() => decodeURIComponent(location.hash).includes('table='));
  await ready('explore');
  params = await hashParams();
  expect(params.query === '{service="shop",table="quo\\"te\\\\back"}', 'the value is escaped in the selector: ' + params.query);
  fns = await flameFunctions();
  expect(fns.includes('quoted_table_work') && !fns.includes('orders::insert_row'), 'the flamegraph is the quoted table\'s: ' + fns.join(', '));
  expect((await page.locator('[data-testid="filter-chip"][data-label="table"]').getAttribute('data-value')) === QUOTED_TABLE, 'the chip holds the value as it is');

  step('the <script> value');
  await page.goto(base + '/#/explore?' + new URLSearchParams({ query: '{table="' + SCRIPT_TABLE + '"}', from: 'now-15m', to: 'now', group_by: 'op' }));
  await ready('explore');
  expect((await page.locator('[data-testid="filter-chip"]').getAttribute('data-value')) === SCRIPT_TABLE, 'the chip shows the <script> value');
  expect((await page.locator('[data-testid="filter-chip"] .chip-text').textContent()) === 'table = "' + SCRIPT_TABLE + '"', 'as text');
  fns = await flameFunctions();
  expect(fns.includes('hostile_table_work') && fns.length <= 4, 'its flamegraph: ' + fns.join(', '));
  const ops = await page.locator('[data-testid="chart-legend"] .legend-item').evaluateAll((els) => els.map((e) => e.dataset.series));
  expect(ops.join() === '(none)', 'the <script> table has no op: ' + ops);
  await noInjection('chip');

  step('search right after load');
  // A search asked for before the flamegraph's script has initialised runs once it has.
  await page.goto(base + '/#/explore?' + new URLSearchParams({ query: SHOP, from: 'now-15m', to: 'now', search: 'insert_row' }));
  await page.fill('input[name="search"]', 'update_row');
  await page.press('input[name="search"]', 'Enter');
  await ready('explore');
  await page.waitForFunction(() => /Matched/.test(document.querySelector('[data-testid="search-share"]')?.textContent || ''), null, { timeout: 120000 });
  console.log('search share: ' + await page.locator('[data-testid="search-share"]').textContent());

  step('compare users against orders with the picker');
  await page.goto(base + '/#/compare?' + new URLSearchParams({ base: SHOP, query: SHOP, from: 'now-15m', to: 'now' }));
  await ready('compare');
  const pick = async (key, label, value) => {
    await page.waitForSelector(`[data-testid="pick-label-${key}"] option[value="${label}"]`, { state: 'attached', timeout: 120000 });
    await page.selectOption(`[data-testid="pick-label-${key}"]`, label);
    await page.waitForSelector(`[data-testid="pick-value-${key}"][data-ready="${label}"]`, { timeout: 120000 });
    await page.selectOption(`[data-testid="pick-value-${key}"]`, value);
  };
  await pick('base', 'table', 'users');
  await page.waitForFunction(() => decodeURIComponent(location.hash).includes('table="users"'));
  await ready('compare');
  await pick('query', 'table', 'orders');
  await page.waitForFunction(() => decodeURIComponent(location.hash).includes('table="orders"'));
  await ready('compare');
  params = await hashParams();
  expect(params.base === '{service="shop",table="users"}' && params.query === '{service="shop",table="orders"}', 'the picker filled both selectors: ' + JSON.stringify(params));
  expect((await page.locator('[data-testid="base-filters"] [data-testid="filter-chip"][data-label="table"]').getAttribute('data-value')) === 'users', 'A\'s chip');
  expect((await page.locator('[data-testid="filters"] [data-testid="filter-chip"][data-label="table"]').getAttribute('data-value')) === 'orders', 'B\'s chip');
  await page.frameLocator('iframe[data-testid="flamegraph"]').locator('#title', { hasText: 'Differential' }).waitFor({ state: 'attached', timeout: 120000 });
  fns = await flameFunctions();
  expect(fns.includes('orders::insert_row') && !fns.includes('idle_loop'), 'the diff is of the tables: ' + fns.join(', '));
  const significant = await page.locator('[data-testid="changes-significant"] tbody tr').evaluateAll((els) => els.map((e) => e.dataset.function + ' ' + e.querySelector('.badge').textContent));
  console.log('verdict: ' + (await page.locator('[data-testid="verdict-line"]').textContent()) + ' ' + significant.join('; '));
  expect(significant.includes('orders::insert_row grew') && significant.includes('users::update_row shrank'), 'orders grew and users shrank');
  await page.screenshot({ path: shots + '/labels-compare.png', fullPage: true });

  step('compare orders with the period before');
  await page.goto(base + '/#/compare?' + new URLSearchParams({ query: '{table="orders"}', from: 'now-5m', to: 'now' }));
  await ready('compare');
  await page.click('[data-testid="base-previous-period"]');
  await page.waitForFunction(() => location.hash.includes('base_from=now-10m'));
  await ready('compare');
  params = await hashParams();
  expect(params.base === '{table="orders"}' && params.base_from === 'now-10m' && params.base_to === 'now-5m', 'A is orders over the five minutes before: ' + JSON.stringify(params));
  await page.frameLocator('iframe[data-testid="flamegraph"]').locator('#title', { hasText: 'Differential' }).waitFor({ state: 'attached', timeout: 120000 });
  fns = await flameFunctions();
  expect(fns.includes('orders::insert_row') && !fns.includes('users::update_row'), 'the diff is orders against orders: ' + fns.join(', '));
  console.log('orders vs before: ' + await page.locator('[data-testid="verdict-line"]').textContent());

  step('explore links to compare');
  await page.goto(base + '/#/explore?' + new URLSearchParams({ query: '{table="orders"}', from: 'now-5m', to: 'now' }));
  await ready('explore');
  const link = decodeURIComponent(await page.locator('[data-testid="compare-previous"]').getAttribute('href'));
  expect(link.includes('base={table="orders"}') && link.includes('base_from=now-10m') && link.includes('base_to=now-5m'), 'Explore links to the period before: ' + link);
  await noInjection('the end');
} catch (e) {
  problems.push(e.message);
  await page.screenshot({ path: shots + '/labels-failure.png', fullPage: true }).catch(() => {});
}
await browser.close();
if (problems.length) {
  console.error(problems.join('\n'));
  process.exit(1);
}
console.log('dashboard labels e2e: ok');
"#####;

#[test]
#[ignore = "needs chromium and playwright-core (tests/e2e): run via scripts/test.sh"]
fn dashboard_profile_types_and_push_sources_in_chromium() {
    let t = BrowserTest::new();
    // One service, ten minutes of 10 s windows of two types: CPU (80 periods of a 99 Hz
    // period a window, all in parse_json) and allocations (`__profile_type__`
    // alloc_space, no period: 6 MiB a window in Vec::reserve, 2 MiB in String::push_str).
    let windows = {
        let now = unix_now();
        let cpu: stackwatch_store::selector::Labels = [
            ("service".to_string(), "shop".to_string()),
            ("instance".to_string(), "s1".to_string()),
        ]
        .into();
        let mut alloc = cpu.clone();
        alloc.insert("__profile_type__".into(), "alloc_space".into());
        let mut windows = Vec::new();
        for i in 0..60u64 {
            let start_unix_s = now - 610 + 10 * i as i64;
            windows.push(IngestWindow {
                target: cpu.clone(),
                instance: "s1".into(),
                seq: i + 1,
                start_unix_s,
                period_ns: 10_101_010,
                stacks: vec![("main;cpu_loop;parse_json".into(), 80)],
                labeled: Vec::new(),
            });
            windows.push(IngestWindow {
                target: alloc.clone(),
                instance: "s1-alloc".into(),
                seq: i + 1,
                start_unix_s,
                period_ns: 0,
                stacks: vec![
                    ("main;alloc_loop;Vec::reserve".into(), 6 << 20),
                    ("main;alloc_loop;String::push_str".into(), 2 << 20),
                ],
                labeled: Vec::new(),
            });
        }
        windows
    };
    // Push on, without tokens (loopback).
    let stdout = t.run_over_store(
        &windows,
        "[push]\nenabled = true\nallow_anonymous = true\n",
        TYPES_SCRIPT,
    );
    assert!(stdout.contains("dashboard types e2e: ok"));
    for s in ["types-explore.png", "types-compare.png", "fleet-push.png"] {
        assert!(t.shots.join(s).exists(), "{s} written");
    }
}

/// The browser side of `dashboard_profile_types_and_push_sources_in_chromium`:
/// `node --input-type=module - <base-url> <screenshot-dir>`. It pushes through the
/// Pyroscope ingest route first (folded text: an allocation profile, a CPU profile, a
/// repeat of the first, and one refused for its units), with a tag value and an error
/// text that are markup.
const TYPES_SCRIPT: &str = r#####"
import { openPage, expect } from './browser.mjs';
import { mkdirSync } from 'node:fs';

const [base, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const problems = [];
const SHOP = '{service="shop"}';
const REGION = '<b>eu</b>';

// Pushes, as a Pyroscope agent sends them.
const now = Math.floor(Date.now() / 1000);
const ingest = (params, body) => fetch(base + '/ingest?' + new URLSearchParams(params), { method: 'POST', body });
const tags = '{region=' + REGION + ',pod=p-1}';
const allocPush = { name: 'pushed-app.alloc_space' + tags, from: String(now - 30), until: String(now - 20), format: 'folded' };
const allocBody = 'main;push_alloc;grow_buffer 4096\nmain;push_alloc;parse_header 1024\n';
let r = await ingest(allocPush, allocBody);
expect(r.status === 200, 'the allocation push is accepted: ' + r.status + ' ' + await r.text());
r = await ingest({ name: 'pushed-app.cpu' + tags, from: String(now - 30), until: String(now - 20), format: 'folded', sampleRate: '100' }, 'main;push_cpu;spin 50\n');
expect(r.status === 200, 'the CPU push is accepted: ' + r.status);
r = await ingest(allocPush, allocBody);
expect(r.status === 200, 'a repeat is acknowledged: ' + r.status);
r = await ingest({ name: 'pushed-app{region=' + REGION + '}', format: 'folded', units: '<i>furlongs</i>' }, 'main;x 1\n');
expect(r.status === 400, 'a push of no known type is refused: ' + r.status);
const sources = await (await fetch(base + '/api/push-sources')).json();
console.log('push sources: ' + JSON.stringify(sources));

const { browser, page } = await openPage(problems, { width: 1440, height: 1000 });
const step = (name) => console.log('step: ' + name);
const ready = (name) => page.waitForSelector(`body[data-ready="${name}"]`, { timeout: 120000 });
const text = async (sel) => (await page.locator(sel).first().textContent()).trim();
const hashParams = () => page.evaluate(() => Object.fromEntries(new URLSearchParams(location.hash.replace(/^#\/?[^?]*\??/, ''))));
// The frames of a flamegraph: their <title>s ("name (n bytes, x%)").
const flameTitles = async (testid) => {
  const want = 'iframe[data-testid="' + (testid || 'flamegraph') + '"]';
  await page.frameLocator(want).locator('#frames').waitFor({ state: 'attached', timeout: 120000 });
  const src = await page.locator(want).getAttribute('src');
  const frame = page.frames().find((f) => f.url().endsWith(src));
  return frame.evaluate(() => [...document.querySelectorAll('#frames > g > title')].map((t) => t.textContent));
};
const names = (titles) => titles.map((t) => t.replace(/ \([^(]*\)$/, ''));
const noInjection = async (where) => {
  const pwned = await page.evaluate(() => document.querySelectorAll('#view b, #view i, #view script').length);
  expect(pwned === 0, where + ': no element made of pushed text (' + pwned + ')');
};

try {
  step('fleet: push sources');
  await page.goto(base + '/#/fleet');
  await ready('fleet');
  const src = page.locator('[data-testid="push-source"][data-service="pushed-app"]');
  expect(await src.count() === 1, 'one push source for pushed-app');
  expect((await src.locator('[data-testid="push-tenant"]').textContent()).trim() === 'anonymous', 'anonymous: no tenant');
  const rows = await src.locator('tr[data-testid="push-series"]').evaluateAll((rs) => rs.map((r) => ({
    type: r.dataset.type, protocol: r.dataset.protocol, labels: r.querySelector('[data-testid="push-labels"]').textContent,
    typeText: r.querySelector('[data-testid="push-type"]').textContent, seen: r.querySelector('[data-testid="push-seen"]').textContent,
    pushes: r.querySelector('[data-testid="push-pushes"]').textContent, repeats: r.querySelector('[data-testid="push-repeats"]').textContent,
  })));
  console.log('push series: ' + JSON.stringify(rows));
  expect(rows.length === 2, 'two series: ' + rows.length);
  const alloc = rows.find((x) => x.type === 'alloc_space'), cpu = rows.find((x) => x.type === 'cpu');
  expect(alloc && cpu, 'an allocation series and a CPU series');
  for (const x of rows) {
    expect(x.protocol === 'pyroscope', 'protocol pyroscope: ' + x.protocol);
    expect(x.labels.includes('region="' + REGION + '"') && x.labels.includes('service="pushed-app"') && !x.labels.includes('__profile_type__'), 'labels as text: ' + x.labels);
    expect(/^\d+ s ago$/.test(x.seen), 'last seen, relative: ' + x.seen);
  }
  expect(alloc.typeText === 'allocations (bytes)' && cpu.typeText === 'CPU', 'type names: ' + alloc.typeText + ', ' + cpu.typeText);
  expect(alloc.pushes === '1' && alloc.repeats === '1' && cpu.pushes === '1' && cpu.repeats === '0', 'pushes and repeats');
  expect((await src.locator('[data-testid="push-refusals"]').textContent()) === '1 refused', 'one refusal');
  const lastError = await src.locator('[data-testid="push-last-error"]').textContent();
  expect(lastError.includes('<i>furlongs</i>'), 'the last error, as text: ' + lastError);
  await noInjection('fleet');
  await page.screenshot({ path: shots + '/fleet-push.png', fullPage: true });

  step('fleet: a pushed series opens in Explore with its type');
  await src.locator('tr[data-testid="push-series"][data-type="alloc_space"] a[data-testid="push-explore"]').click();
  await page.waitForFunction(() => location.hash.startsWith('#/explore'));
  await ready('explore');
  let params = await hashParams();
  expect(params.type === 'alloc_space' && params.query.includes('region="' + REGION + '"'), 'explore the pushed series: ' + JSON.stringify(params));
  let fns = names(await flameTitles());
  expect(fns.includes('grow_buffer') && !fns.includes('spin'), 'the pushed allocations: ' + fns.join(', '));
  await noInjection('explore of a pushed series');

  step('explore: CPU by default');
  await page.goto(base + '/#/explore?' + new URLSearchParams({ query: SHOP, from: 'now-15m', to: 'now' }));
  await ready('explore');
  const picker = '[data-testid="profile-type"]';
  await page.waitForSelector(picker + '[data-ready="1"]', { state: 'attached', timeout: 120000 });
  expect(await page.inputValue(picker) === 'cpu', 'CPU is the default');
  const options = await page.locator(picker + ' option').evaluateAll((os) => os.map((o) => ({ v: o.value, disabled: o.disabled })));
  console.log('types: ' + options.map((o) => o.v + (o.disabled ? ' (disabled)' : '')).join(', '));
  expect(options.find((o) => o.v === 'alloc_space' && !o.disabled), 'alloc_space can be picked (stored)');
  expect(options.find((o) => o.v === 'goroutines' && o.disabled) && options.find((o) => o.v === 'inuse_space' && o.disabled), 'types not stored cannot');
  expect(await page.locator('[data-testid="cpu-chart"]').getAttribute('data-unit') === 'cores', 'CPU in cores');
  expect(await text('[data-testid="cpu-chart"] [data-testid="y-axis-title"]') === 'cores', 'y axis: cores');
  fns = names(await flameTitles());
  expect(fns.includes('parse_json') && !fns.includes('Vec::reserve'), 'the CPU flamegraph: ' + fns.join(', '));

  step('explore: allocations');
  await page.selectOption(picker, 'alloc_space');
  await page.waitForFunction(() => location.hash.includes('type=alloc_space'));
  await ready('explore');
  const chart = page.locator('[data-testid="cpu-chart"]');
  expect(await chart.getAttribute('data-unit') === 'bytes_per_second', 'the chart is in bytes per second');
  expect(await text('[data-testid="cpu-chart"] [data-testid="y-axis-title"]') === 'bytes per second', 'y axis: bytes per second');
  expect(await text('[data-testid="series-title"]') === 'allocations (bytes) over time, in bytes per second', 'card title: ' + await text('[data-testid="series-title"]'));
  const ticks = await page.locator('[data-testid="cpu-chart"] text.ytick').allTextContents();
  console.log('y ticks: ' + ticks.join(' | '));
  expect(ticks.length >= 2 && ticks.every((t) => /^\d+(\.\d+)? (B|KiB|MiB)$/.test(t)) && ticks.some((t) => /MiB|KiB/.test(t)), 'ticks in KiB/MiB: ' + ticks);
  const box = await chart.boundingBox();
  await page.mouse.move(box.x + box.width * 0.8, box.y + box.height / 2);
  await page.waitForSelector('[data-testid="chart-tooltip"]:not([hidden])', { timeout: 120000 });
  const tip = await text('[data-testid="chart-tooltip"]');
  console.log('hover: ' + tip);
  // 8 MiB every 10 s: 819.2 KiB/s.
  expect(/819 KiB\/s/.test(tip), 'hover in KiB/s: ' + tip);
  await page.mouse.move(1, 1);
  const titles = await flameTitles();
  fns = names(titles);
  expect(fns.includes('Vec::reserve') && fns.includes('String::push_str') && !fns.includes('parse_json'), 'the allocation flamegraph: ' + fns.join(', '));
  expect(titles.some((t) => /^Vec::reserve \([\d,]+ bytes, /.test(t)), 'its tooltips count bytes: ' + titles.join(' | '));
  const topRows = await page.locator('[data-testid="top-functions"] tbody tr').evaluateAll((rs) => rs.map((r) => r.dataset.function));
  expect(topRows.includes('Vec::reserve') && !topRows.includes('parse_json'), 'top functions of the allocations: ' + topRows);
  const topText = await page.locator('[data-testid="top-functions"]').locator('xpath=..').locator('p').first().textContent();
  console.log('top: ' + topText);
  expect(topText.includes('allocations (bytes)') && /MiB/.test(topText) && /KiB\/s averaged/.test(topText), 'top totals in bytes: ' + topText);
  await page.screenshot({ path: shots + '/types-explore.png', fullPage: true });
  step('reload keeps the type');
  await page.reload();
  await ready('explore');
  expect(await page.inputValue(picker) === 'alloc_space' && (await chart.getAttribute('data-unit')) === 'bytes_per_second', 'the URL keeps the type');

  step('compare: allocations');
  await page.goto(base + '/#/compare?' + new URLSearchParams({ base: SHOP, query: SHOP, from: 'now-5m', to: 'now', base_from: 'now-10m', base_to: 'now-5m', type: 'alloc_space' }));
  await ready('compare');
  expect(await page.inputValue(picker) === 'alloc_space', 'Compare picks the type from the URL');
  const a = page.locator('[data-testid="cores-base"]');
  expect(await a.getAttribute('data-unit') === 'bytes_per_second' && /KiB\/s$/.test(await a.textContent()), 'A in KiB/s: ' + await a.textContent());
  await page.frameLocator('iframe[data-testid="flamegraph"]').locator('#title', { hasText: 'Differential' }).waitFor({ state: 'attached', timeout: 120000 });
  fns = names(await flameTitles());
  expect(fns.includes('Vec::reserve') && !fns.includes('parse_json'), 'the diff of the allocations: ' + fns.join(', '));
  console.log('verdict: ' + await text('[data-testid="verdict-line"]'));
  await page.screenshot({ path: shots + '/types-compare.png', fullPage: true });
  await page.selectOption(picker, 'cpu');
  await page.waitForFunction(() => !location.hash.includes('type='));
  await ready('compare');
  expect(/cores$/.test(await text('[data-testid="cores-target"]')), 'back to CPU, in cores');
} catch (e) {
  problems.push(e.message);
  await page.screenshot({ path: shots + '/types-failure.png', fullPage: true }).catch(() => {});
}
await browser.close();
if (problems.length) {
  console.error(problems.join('\n'));
  process.exit(1);
}
console.log('dashboard types e2e: ok');
"#####;

#[test]
#[ignore = "needs chromium and playwright-core (tests/e2e): run via scripts/test.sh"]
fn dashboard_logs_in_through_the_server_and_sees_its_tenant_only_in_chromium() {
    let t = BrowserTest::new();
    // Two tenants' services, ten 10 s windows each over the last two minutes.
    let windows = {
        let now = unix_now();
        let mut windows = Vec::new();
        for (tenant, service, frame) in [
            ("team-a", "shop-a", "only_team_a"),
            ("team-b", "shop-b", "only_team_b"),
        ] {
            let target: stackwatch_store::selector::Labels = [
                ("service".to_string(), service.to_string()),
                ("tenant".to_string(), tenant.to_string()),
            ]
            .into();
            for i in 0..10u64 {
                windows.push(IngestWindow {
                    target: target.clone(),
                    instance: service.into(),
                    seq: i + 1,
                    start_unix_s: now - 110 + 10 * i as i64,
                    period_ns: 10_101_010,
                    stacks: vec![(format!("main;{frame}"), 50)],
                    labeled: Vec::new(),
                });
            }
        }
        windows
    };
    let stdout = t.run_over_store(
        &windows,
        "bearer_token = \"operator-token\"\n[[read_tokens]]\ntoken = \"read-team-a\"\ntenants = [\"team-a\"]\n",
        LOGIN_SCRIPT,
    );
    assert!(stdout.contains("dashboard login e2e: ok"));
}

/// The browser side of
/// `dashboard_logs_in_through_the_server_and_sees_its_tenant_only_in_chromium`: the page
/// asks for a token once, logs in through `POST /api/login` (an `HttpOnly` cookie script
/// cannot read), shows team-a's data only, and logs out.
const LOGIN_SCRIPT: &str = r#####"
import { openPage, expect } from './browser.mjs';
import { mkdirSync } from 'node:fs';

const [base, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const problems = [];
const { browser, page } = await openPage(problems, { width: 1280, height: 900 });
// This page is expected to prompt for the token; the 401s before the login are expected
// too (chromium logs each as a console error).
page.removeAllListeners('dialog');
let prompts = 0;
let answer = 'read-team-a';
page.on('dialog', async (d) => {
  prompts++;
  if (d.type() !== 'prompt') problems.push('unexpected dialog: ' + d.message());
  if (answer) await d.accept(answer); else await d.dismiss();
});
const step = (name) => console.log('step: ' + name);
const ready = (name) => page.waitForSelector(`body[data-ready="${name}"]`, { timeout: 120000 });
const folded = () => page.evaluate(async () => {
  const r = await fetch('/api/profile.folded?from=now-10m', { credentials: 'same-origin' });
  return r.status + ' ' + await r.text();
});
try {
  step('the page asks once and logs in');
  await page.goto(base + '/#/explore?' + new URLSearchParams({ query: '{}', from: 'now-10m', to: 'now' }));
  await ready('explore');
  expect(prompts === 1, 'one prompt for every panel: ' + prompts);
  expect(await page.evaluate(() => document.cookie) === '', 'the cookie is HttpOnly: script sees none');
  const seen = await folded();
  expect(seen.startsWith('200 ') && seen.includes('only_team_a') && !seen.includes('only_team_b'),
    'the cookie reads team-a only: ' + seen);
  await page.screenshot({ path: shots + '/login-explore.png', fullPage: true });

  step('log out');
  answer = null;
  await Promise.all([page.waitForEvent('load'), page.locator('#logout').click()]);
  const after = await folded();
  expect(after.startsWith('401 '), 'logged out: ' + after);
  expect(prompts >= 2, 'the reloaded page asks again: ' + prompts);
} catch (e) {
  problems.push(e.message);
  await page.screenshot({ path: shots + '/login-failure.png', fullPage: true }).catch(() => {});
}
await browser.close();
// Expected: the 401s before the login and after the logout (chromium's resource errors
// and the panels' own).
const real = problems.filter((p) => !/401/.test(p));
if (real.length) {
  console.error(real.join('\n'));
  process.exit(1);
}
console.log('dashboard login e2e: ok');
"#####;
