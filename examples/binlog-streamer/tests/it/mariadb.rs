//! Against a real MariaDB (started here on a temp datadir and a free port): every column
//! type decoded with its name and value, in order; the file reader equal to the live
//! stream; `kill -9` and restart losing no row; `--follow` on the file being written.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use mysql::prelude::Queryable;
use serde_json::{json, Value};

const ALL_TYPES: &str = "CREATE TABLE shop.all_types (
    id INT PRIMARY KEY AUTO_INCREMENT, ti TINYINT, su SMALLINT UNSIGNED, mi MEDIUMINT,
    bu BIGINT UNSIGNED, de DECIMAL(10,3), fl FLOAT, db DOUBLE, vc VARCHAR(50), ch CHAR(5),
    tx TEXT, bl BLOB, dt DATE, dtm DATETIME(6), ts TIMESTAMP(3) NULL, tm TIME(2), yr YEAR,
    js JSON, en ENUM('red','green'), bt BIT(8), nn VARCHAR(5) NULL)";

const FIRST_ROW: &str = "INSERT INTO shop.all_types VALUES (NULL, -5, 65535, -8388608,
    18446744073709551615, -1234.567, 1.5, 2.25, '<script>alert(1)</script>', 'abc',
    'héllo \"q\" & <b>', x'00ff10', '2024-02-29', '2024-02-29 12:34:56.123456',
    '2024-03-01 00:00:01.500', '-12:34:56.78', 2024, '{\"a\": [1, 2]}', 'green', b'10100101',
    NULL)";

#[test]
#[ignore = "needs mariadb-server: run via scripts/test.sh"]
fn live_stream_decodes_every_type_in_order_and_the_file_reader_agrees() {
    let db = MariaDb::start();
    let mut c = db.conn();
    c.query_drop("CREATE DATABASE shop").unwrap();
    c.query_drop(ALL_TYPES).unwrap();
    c.query_drop(FIRST_ROW).unwrap();
    c.query_drop("INSERT INTO shop.all_types (id) VALUES (NULL)")
        .unwrap();
    c.query_drop("UPDATE shop.all_types SET vc = 'changed', de = 0.5 WHERE id = 1")
        .unwrap();
    c.query_drop("DELETE FROM shop.all_types WHERE id = 2")
        .unwrap();

    let out = tempfile::tempdir().unwrap();
    let live = out.path().join("live.jsonl");
    let child = worker(&[
        "--source",
        &db.url(),
        "--start-file",
        "mysql-bin.000001",
        "--sink",
        &format!("file:{}", live.display()),
        "--linger-ms",
        "10",
        "--profile-hz",
        "0",
    ])
    .spawn()
    .unwrap();
    wait_until(
        "4 rows from the live stream",
        Duration::from_secs(30),
        || read_lines(&live).len() >= 4,
    );
    let (ok, stderr) = terminate(child);
    assert!(ok, "worker failed: {stderr}");
    assert!(stderr.contains("binlog-streamer: 4 events"), "{stderr}");

    let rows = read_lines(&live);
    let kinds: Vec<&str> = rows.iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["insert", "insert", "update", "delete"]);
    for r in &rows {
        assert_eq!(r["database"], "shop");
        assert_eq!(r["table"], "all_types");
        assert!(r["file"].as_str().unwrap().starts_with("mysql-bin."));
    }
    let first = &rows[0]["after"];
    let want = json!({
        "id": 1, "ti": -5, "su": 65535, "mi": -8388608, "bu": 18446744073709551615u64,
        "de": "-1234.567", "fl": 1.5, "db": 2.25, "vc": "<script>alert(1)</script>",
        "ch": "abc", "tx": "héllo \"q\" & <b>", "bl": {"base64": "AP8Q"},
        "dt": "2024-02-29", "dtm": "2024-02-29 12:34:56.123456",
        "ts": "2024-03-01T00:00:01.500000Z", "tm": "-12:34:56.780000", "yr": 2024,
        "js": "{\"a\": [1, 2]}", "en": "green", "bt": 165, "nn": null
    });
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&first[k], v, "column {k}: {first}");
    }
    let second = &rows[1]["after"];
    assert_eq!(second["id"], 2);
    assert_eq!(second["vc"], Value::Null);
    assert_eq!(rows[2]["before"]["vc"], "<script>alert(1)</script>");
    assert_eq!(rows[2]["after"]["vc"], "changed");
    assert_eq!(rows[2]["after"]["de"], "0.500");
    assert_eq!(rows[3]["before"]["id"], 2);
    assert_eq!(rows[3]["after"], Value::Null);

    // The same binlog read from disk gives the same messages, byte for byte.
    c.query_drop("FLUSH BINARY LOGS").unwrap();
    let from_file = out.path().join("file.jsonl");
    let (ok, _, stderr) = run_worker(&[
        "--source",
        &format!("file:{}", db.datadir().join("mysql-bin.000001").display()),
        "--sink",
        &format!("file:{}", from_file.display()),
        "--profile-hz",
        "0",
    ]);
    assert!(ok, "file reader failed: {stderr}");
    assert_eq!(
        std::fs::read_to_string(&from_file).unwrap(),
        std::fs::read_to_string(&live).unwrap()
    );

    // A server logging statements instead of rows is refused with a clear reason.
    c.query_drop("SET GLOBAL binlog_format = 'STATEMENT'")
        .unwrap();
    let (ok, _, stderr) =
        run_worker(&["--source", &db.url(), "--sink", "null", "--profile-hz", "0"]);
    assert!(!ok);
    assert!(stderr.contains("binlog_format=ROW"), "{stderr}");
}

#[test]
#[ignore = "needs mariadb-server: run via scripts/test.sh"]
fn sigkill_mid_stream_and_restart_loses_no_row() {
    const ROWS: usize = 6000;
    let db = MariaDb::start();
    let mut c = db.conn();
    c.query_drop("CREATE DATABASE shop").unwrap();
    c.query_drop("CREATE TABLE shop.events (id INT PRIMARY KEY, payload VARCHAR(100))")
        .unwrap();
    let url = db.url();
    let writer = std::thread::spawn(move || {
        let mut c = mysql::Conn::new(mysql::Opts::from_url(&url).unwrap()).unwrap();
        for tx in 0..ROWS / 3 {
            let mut t = c.start_transaction(mysql::TxOpts::default()).unwrap();
            for k in 0..3 {
                let id = tx * 3 + k + 1;
                t.exec_drop(
                    "INSERT INTO shop.events VALUES (?, ?)",
                    (id, format!("payload {id}")),
                )
                .unwrap();
            }
            t.commit().unwrap();
            if tx % 100 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });

    let out = tempfile::tempdir().unwrap();
    let sink = out.path().join("out.jsonl");
    let cp = out.path().join("checkpoint.json");
    let args = [
        "--source".to_string(),
        db.url(),
        "--start-file".into(),
        "mysql-bin.000001".into(),
        "--sink".into(),
        format!("file:{}", sink.display()),
        "--checkpoint".into(),
        cp.display().to_string(),
        "--batch-size".into(),
        "50".into(),
        "--linger-ms".into(),
        "20".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut first = worker(&args).spawn().unwrap();
    wait_until("the first rows", Duration::from_secs(60), || {
        read_lines(&sink).len() >= 1000
    });
    first.kill().unwrap(); // SIGKILL: no flush, no goodbye
    first.wait().unwrap();
    let at_kill = read_lines(&sink).len();
    let checkpoint: Value = serde_json::from_slice(&std::fs::read(&cp).unwrap()).unwrap();
    assert!(
        checkpoint["position"]["pos"].as_u64().unwrap() > 4,
        "{checkpoint}"
    );

    let second = worker(&args).spawn().unwrap();
    writer.join().unwrap();
    let mut seen: HashMap<i64, usize> = HashMap::new();
    wait_until(
        "every row after the restart",
        Duration::from_secs(90),
        || {
            seen.clear();
            for r in read_lines(&sink) {
                *seen.entry(r["after"]["id"].as_i64().unwrap()).or_default() += 1;
            }
            seen.len() >= ROWS
        },
    );
    let (ok, stderr) = terminate(second);
    assert!(ok, "{stderr}");
    let missing: Vec<usize> = (1..=ROWS)
        .filter(|id| !seen.contains_key(&(*id as i64)))
        .collect();
    assert!(missing.is_empty(), "missing rows: {missing:?}");
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!("killed after {at_kill} lines; {duplicates} rows delivered twice (allowed)");
    // Duplicates come only from the unacknowledged tail, never more than a batch or two.
    assert!(duplicates <= 200, "{duplicates} duplicates");
}

#[test]
#[ignore = "needs mariadb-server: run via scripts/test.sh"]
fn follow_tails_the_binlog_the_server_is_writing_across_a_rotate() {
    let db = MariaDb::start();
    let out = tempfile::tempdir().unwrap();
    let sink = out.path().join("out.jsonl");
    let child = worker(&[
        "--source",
        &format!("file:{}", db.datadir().join("mysql-bin.000001").display()),
        "--follow",
        "--sink",
        &format!("file:{}", sink.display()),
        "--linger-ms",
        "10",
        "--profile-hz",
        "0",
    ])
    .spawn()
    .unwrap();
    let mut c = db.conn();
    c.query_drop("CREATE DATABASE shop").unwrap();
    c.query_drop("CREATE TABLE shop.t (id INT PRIMARY KEY, note TEXT)")
        .unwrap();
    for i in 1..=50 {
        c.exec_drop(
            "INSERT INTO shop.t VALUES (?, REPEAT('x', ?))",
            (i, i * 100),
        )
        .unwrap();
    }
    wait_until("50 rows while following", Duration::from_secs(90), || {
        read_lines(&sink).len() >= 50
    });
    c.query_drop("FLUSH BINARY LOGS").unwrap();
    for i in 51..=60 {
        c.exec_drop("INSERT INTO shop.t VALUES (?, 'after rotate')", (i,))
            .unwrap();
    }
    wait_until("rows from the next file", Duration::from_secs(90), || {
        read_lines(&sink).len() >= 60
    });
    let (ok, stderr) = terminate(child);
    assert!(ok, "{stderr}");
    let rows = read_lines(&sink);
    let ids: Vec<i64> = rows
        .iter()
        .map(|r| r["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (1..=60).collect::<Vec<_>>());
    assert_eq!(rows[59]["file"], "mysql-bin.000002");
    assert_eq!(rows[10]["after"]["note"].as_str().unwrap().len(), 1100);
}
