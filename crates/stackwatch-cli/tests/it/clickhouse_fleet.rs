//! Several collectors over one ClickHouse, with real processes: three binlog-streamer
//! workers, two collectors splitting them; one collector is SIGKILLed and comes back
//! while a third joins (a different collector count), the other keeps going. In the
//! end every window each worker closed is stored exactly once, whoever stored it,
//! and a query node with no targets of its own answers for the whole fleet.

use crate::common;

use crate::clickhouse;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{binlog_worker, wait_windows, Proc};
use stackwatch_profile::protocol::WindowsResponse;
use stackwatch_store::{ClickHouseOptions, ClickHouseStore, ProfileReader, Selector};

fn kill9(p: &mut Proc) {
    // SAFETY: kill(2) on our own child's pid; no memory is touched.
    unsafe { libc::kill(p.0.id() as i32, libc::SIGKILL) };
    let _ = p.0.wait();
}

fn term(p: &mut Proc) {
    // SAFETY: as above.
    unsafe { libc::kill(p.0.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = p.0.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("collector did not exit on SIGTERM");
}

fn worker() -> (Proc, String) {
    binlog_worker(&["--profile-hz", "199", "--profile-retain-windows", "600"])
}

/// A collector (or, with no workers, a pure query node); returns it and its address.
fn collector(dir: &Path, ch: &ClickHouse, id: &str, workers: &[(&str, &str)]) -> (Proc, String) {
    collector_with(dir, ch, id, workers, "")
}

/// [`collector`] with extra `[store]` keys.
fn collector_with(
    dir: &Path,
    ch: &ClickHouse,
    id: &str,
    workers: &[(&str, &str)],
    store_extra: &str,
) -> (Proc, String) {
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[scrape]\ninterval = \"400ms\"\ntimeout = \"2s\"\n\
         [storage]\nflush_interval = \"200ms\"\n[store]\nkind = \"clickhouse\"\nurl = \"{}\"\ndatabase = \"fleet\"\n\
         user = \"{}\"\npassword = \"{}\"\n{store_extra}\n[collector]\nid = \"{id}\"\n",
        dir.join(format!("data-{id}")).display(),
        ch.http_url,
        ch.user,
        ch.password
    );
    for (inst, addr) in workers {
        text.push_str(&format!(
            "[[targets]]\nurl = \"http://{addr}\"\nlabels = {{ service = \"sim\", instance = \"{inst}\" }}\n"
        ));
    }
    let config: PathBuf = dir.join(format!("{id}.toml"));
    std::fs::write(&config, text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stackwatch"));
    cmd.args(["server", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit());
    let (p, line) = common::spawn_listening(cmd);
    (p, line)
}

use clickhouse::ClickHouse;

fn get_json(url: &str) -> serde_json::Value {
    let body = ureq::get(url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&body).unwrap()
}

/// `{instance label: collector id}` as a collector's /api/targets says.
fn owners(addr: &str) -> Vec<(String, String, bool)> {
    let v = get_json(&format!("http://{addr}/api/targets"));
    let mut out: Vec<(String, String, bool)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["labels"]["instance"].as_str().unwrap().to_string(),
                t["collector"].as_str().unwrap().to_string(),
                t["scraped_here"].as_bool().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn toml_target() -> stackwatch_server::config::TargetConfig {
    let cfg = stackwatch_server::Config::parse(
        "[[targets]]\nurl = \"http://127.0.0.1:1\"\n",
        Path::new("t.toml"),
    )
    .unwrap();
    cfg.targets[0].clone()
}

fn labels(inst: &str) -> stackwatch_store::Labels {
    [
        ("service".to_string(), "sim".to_string()),
        ("instance".to_string(), inst.to_string()),
    ]
    .into()
}

#[test]
#[ignore = "needs clickhouse-server: run via scripts/test.sh"]
fn collectors_sharing_clickhouse_hand_off_targets_without_loss_or_doubling() {
    let ch = ClickHouse::start();
    ch.query("CREATE DATABASE fleet").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_a, a) = worker();
    let (_b, b) = worker();
    let (_c, c) = worker();
    let fleet = [("a", a.as_str()), ("b", b.as_str()), ("c", c.as_str())];
    // Worker ports are random: pick a first collector id that wins at least one target
    // and loses at least one, so the kill below really moves targets.
    let keys: Vec<String> = fleet
        .iter()
        .map(|(inst, addr)| {
            let t = stackwatch_server::config::TargetConfig {
                url: format!("http://{addr}"),
                labels: labels(inst),
                ..toml_target()
            };
            stackwatch_server::scrape::target_key(&t)
        })
        .collect();
    let id1 = (0..1000)
        .map(|n| format!("c1-{n}"))
        .find(|id| {
            let won = keys
                .iter()
                .filter(|k| {
                    stackwatch_server::membership::rendezvous([id.as_str(), "c2"].into_iter(), k)
                        == Some(id.as_str())
                })
                .count();
            (1..3).contains(&won)
        })
        .unwrap();
    let (mut c1, c1_addr) = collector(dir.path(), &ch, &id1, &fleet);
    let (mut c2, c2_addr) = collector(dir.path(), &ch, "c2", &fleet);
    // Both see both, and agree on who scrapes what: every target exactly once.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (o1, o2) = (owners(&c1_addr), owners(&c2_addr));
        let agree = o1.len() == 3
            && o1
                .iter()
                .zip(&o2)
                .all(|(x, y)| x.0 == y.0 && x.1 == y.1 && x.2 != y.2);
        let both = o1.iter().any(|o| o.1 == id1) && o1.iter().any(|o| o.1 == "c2");
        if agree && both {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "collectors never agreed: {o1:?} vs {o2:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));

    // c1 dies mid-flight; c2 takes its targets within a few intervals.
    kill9(&mut c1);
    let killed = Instant::now();
    loop {
        let o2 = owners(&c2_addr);
        if o2.iter().all(|o| o.1 == "c2" && o.2) {
            eprintln!(
                "c2 took every target {:?} after c1's SIGKILL",
                killed.elapsed()
            );
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "no takeover: {o2:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    // c1 comes back and c3 joins: three collectors now.
    let (mut c1, c1_addr) = collector(dir.path(), &ch, &id1, &fleet);
    let (mut c3, _c3_addr) = collector(dir.path(), &ch, "c3", &fleet);
    // Every target scraped by exactly one collector, once the three agree (a busy
    // machine takes longer to get there).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let scraping = owners(&c1_addr).iter().filter(|o| o.2).count()
            + owners(&c2_addr).iter().filter(|o| o.2).count()
            + owners(&_c3_addr).iter().filter(|o| o.2).count();
        if scraping == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "every target scraped by exactly one collector: {scraping} scrapes of 3 targets after 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A pure query node sees the whole fleet, and takes no target from the collectors.
    let (mut q, q_addr) = collector(dir.path(), &ch, "query", &[]);
    // It lists the stored fleet once it has read the store's target list.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = get_json(&format!("http://{q_addr}/api/targets"));
        let mut insts: Vec<String> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["labels"]["instance"].as_str().unwrap().to_string())
            .collect();
        insts.sort();
        if insts == ["a", "b", "c"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the query node lists the stored fleet: {insts:?} after 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        owners(&c1_addr).iter().all(|o| o.1 != "query"),
        "a query node was given targets"
    );

    // Snapshots once each worker has closed enough windows to check (8).
    let snaps: Vec<(&str, WindowsResponse)> = fleet
        .iter()
        .map(|(i, addr)| (*i, wait_windows(addr, 8)))
        .collect();
    let opts = ClickHouseOptions {
        url: ch.http_url.clone(),
        database: "fleet".into(),
        user: ch.user.into(),
        password: ch.password.into(),
        ..Default::default()
    };
    let store = ClickHouseStore::open(opts).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    for (inst, snap) in &snaps {
        loop {
            let stored = store
                .checkpoints(&labels(inst))
                .unwrap()
                .into_iter()
                .find(|c| c.instance == snap.instance)
                .map_or(0, |c| c.last_seq);
            if stored >= snap.latest_seq {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{inst}: stored up to {stored}, worker closed {}",
                snap.latest_seq
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    for p in [&mut c1, &mut c2, &mut c3] {
        term(p);
    }
    let mut checked = 0;
    for (inst, snap) in &snaps {
        let sel = Selector::parse(&format!("{{instance=\"{inst}\"}}")).unwrap();
        assert!(snap.windows.len() >= 8, "{inst}: too few windows");
        let mut prefix = 0u64;
        for w in &snap.windows {
            let ts = (w.start_unix_ms / 1000) as i64;
            let stored = store.profile(&sel, ts, ts + 1).unwrap();
            assert_eq!(
                stored.total(),
                w.samples,
                "instance {inst} window {} (start {ts}): stored {} periods, the worker closed it with {}",
                w.seq,
                stored.total(),
                w.samples
            );
            prefix += w.samples;
            checked += 1;
        }
        // The whole history of the instance is a prefix sum of its windows: the
        // snapshot's, plus whatever it closed after the snapshot and before the stop.
        let first = (snap.windows[0].start_unix_ms / 1000) as i64;
        let last = (snap.windows.last().unwrap().start_unix_ms / 1000) as i64;
        let total = store.profile(&sel, first, last + 1).unwrap().total();
        assert_eq!(
            total, prefix,
            "{inst}: stored total is not the sum of its windows"
        );
    }
    assert!(checked >= 24, "{checked} windows checked");

    // The query node answers for all three, though it scrapes none of them.
    let now = stackwatch_profile::clock::unix_s();
    let folded = ureq::get(&format!(
        "http://{q_addr}/api/profile.folded?query=%7Bservice%3D%22sim%22%7D&from={}&to={}",
        now - 600,
        now + 60
    ))
    .call()
    .unwrap()
    .body_mut()
    .read_to_string()
    .unwrap();
    assert!(folded.lines().count() > 5, "{folded}");
    let metrics = ureq::get(&format!("http://{q_addr}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics.contains("stackwatch_store_backlog_rows 0"),
        "{metrics}"
    );
    term(&mut q);
}

fn metric(addr: &str, name: &str) -> u64 {
    let text = ureq::get(&format!("http://{addr}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// With `max_buffered_rows` small, an outage fills the backlog: scrapes then fail
/// without advancing (the worker keeps its windows), queries answer 503 with the
/// reason, and once ClickHouse is back everything is stored, each window once.
#[test]
#[ignore = "needs clickhouse-server: run via scripts/test.sh"]
fn a_clickhouse_outage_is_buffered_then_caught_up_without_loss() {
    let mut ch = ClickHouse::start();
    ch.query("CREATE DATABASE fleet").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_a, a) = worker();
    let fleet = [("a", a.as_str())];
    // A backlog of a few hundred rows (a few windows): the outage below outlasts it,
    // so scrapes are refused too and the worker keeps what the backlog cannot take.
    let (mut c1, c1_addr) =
        collector_with(dir.path(), &ch, "solo", &fleet, "max_buffered_rows = 300");
    std::thread::sleep(Duration::from_secs(2));
    ch.kill();
    let down = Instant::now();
    // Scraping goes on into the backlog; the API says the store is unavailable.
    loop {
        if metric(&c1_addr, "stackwatch_store_backlog_rows") > 0 {
            break;
        }
        assert!(
            down.elapsed() < Duration::from_secs(60),
            "no backlog while ClickHouse is down"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric(&c1_addr, "stackwatch_store_unavailable"), 1);
    let targets = get_json(&format!("http://{c1_addr}/api/targets"));
    assert!(
        targets[0]["store_backlog_rows"].as_u64().unwrap() > 0,
        "{targets}"
    );
    let now = stackwatch_profile::clock::unix_s();
    let started = Instant::now();
    let resp = ureq::get(&format!(
        "http://{c1_addr}/api/profile.folded?from={}&to={}",
        now - 60,
        now
    ))
    .config()
    .http_status_as_error(false)
    .build()
    .call()
    .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let body = resp.into_body().read_to_string().unwrap();
    assert!(body.contains("unavailable"), "{body}");
    // Refused connections answer at once (a host that drops packets takes the 5 s
    // connect timeout): not a hang.
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    // Full: the scrape fails with the backlog's error and does not advance.
    loop {
        let t = get_json(&format!("http://{c1_addr}/api/targets"));
        if t[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("backlog"))
        {
            break;
        }
        assert!(
            down.elapsed() < Duration::from_secs(90),
            "backlog never full: {t}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(metric(&c1_addr, "stackwatch_store_backlog_refused_total") > 0);
    ch.restart();
    // The backlog drains, and the worker's windows are all stored, once.
    // Six windows or more to check, however slowly a busy machine closes them.
    let snap = wait_windows(&a, 6);
    let opts = ClickHouseOptions {
        url: ch.http_url.clone(),
        database: "fleet".into(),
        user: ch.user.into(),
        password: ch.password.into(),
        ..Default::default()
    };
    let store = ClickHouseStore::open(opts).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let stored = store
            .checkpoints(&labels("a"))
            .unwrap()
            .into_iter()
            .find(|c| c.instance == snap.instance)
            .map_or(0, |c| c.last_seq);
        if stored >= snap.latest_seq && metric(&c1_addr, "stackwatch_store_backlog_rows") == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not caught up: stored {stored} of {}",
            snap.latest_seq
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    term(&mut c1);
    let sel = Selector::parse("{instance=\"a\"}").unwrap();
    assert!(snap.windows.len() >= 6);
    for w in &snap.windows {
        let ts = (w.start_unix_ms / 1000) as i64;
        assert_eq!(
            store.profile(&sel, ts, ts + 1).unwrap().total(),
            w.samples,
            "window {}",
            w.seq
        );
    }
}
