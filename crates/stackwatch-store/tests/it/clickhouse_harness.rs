//! The ClickHouse test harness itself (tests/it/common/clickhouse.rs): a single node that
//! answers, survives SIGKILL with its data, and a 2-shard cluster whose Distributed table
//! spreads rows over both shards.

use crate::clickhouse;

use clickhouse::ClickHouse;
use std::time::Instant;

fn count(ch: &ClickHouse, sql: &str) -> u64 {
    let got = ch
        .query(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}\n{}", ch.logs()));
    got.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {got:?}: {e}"))
}

#[test]
#[ignore = "needs clickhouse-server: run via scripts/test.sh"]
fn single_node_answers_and_keeps_its_data_across_kill_and_restart() {
    let t0 = Instant::now();
    let mut ch = ClickHouse::start();
    eprintln!(
        "single node ready in {:?} at {} (tcp {}), RSS {:?} KiB",
        t0.elapsed(),
        ch.http_url,
        ch.tcp_port,
        ch.rss_kib()
    );
    assert!(ch.http_url.starts_with("http://127.0.0.1:"));
    assert_eq!((ch.user, ch.password), ("default", "secret"));

    let version = ch.query("SELECT version()").unwrap();
    let version = version.trim();
    assert!(
        version.starts_with(|c: char| c.is_ascii_digit()),
        "version {version:?}"
    );
    eprintln!("version {version}");

    ch.query("CREATE DATABASE sw").unwrap();
    assert_eq!(
        count(
            &ch,
            "SELECT count() FROM system.databases WHERE name = 'sw'"
        ),
        1
    );
    // Errors come back as Err with ClickHouse's message.
    let err = ch.query("SELECT * FROM sw.nope").unwrap_err();
    assert!(
        err.contains("HTTP 404") || err.contains("doesn't exist"),
        "{err}"
    );
    // URL parameters reach the server.
    assert_eq!(
        ch.query_with("SELECT currentDatabase()", &[("database", "sw")])
            .unwrap(),
        "sw\n"
    );

    ch.query("CREATE TABLE sw.t (x UInt64, s String) ENGINE = MergeTree() ORDER BY x")
        .unwrap();
    ch.query("INSERT INTO sw.t SELECT number, toString(number) FROM system.numbers LIMIT 1000")
        .unwrap();
    ch.query("INSERT INTO sw.t FORMAT TabSeparated\n1000\ta 'quoted' & <odd> string\n")
        .unwrap();
    assert_eq!(count(&ch, "SELECT count() FROM sw.t"), 1001);

    let pid = ch.pid();
    ch.kill();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/status")).exists(),
        "the killed server was reaped"
    );
    let down = ch.query("SELECT 1");
    assert!(down.is_err(), "a killed server answered: {down:?}");

    let t1 = Instant::now();
    ch.restart();
    eprintln!("restart ready in {:?}", t1.elapsed());
    assert_ne!(ch.pid(), pid);
    assert_eq!(count(&ch, "SELECT count() FROM sw.t"), 1001);
    assert_eq!(
        ch.query("SELECT s FROM sw.t WHERE x = 1000 FORMAT TabSeparatedRaw")
            .unwrap(),
        "a 'quoted' & <odd> string\n"
    );
    assert_eq!(
        count(&ch, "SELECT sum(x) FROM sw.t WHERE x < 1000"),
        499_500
    );
}

#[test]
#[ignore = "needs clickhouse-server: run via scripts/test.sh"]
fn two_shard_cluster_distributes_inserts_over_both_shards() {
    let t0 = Instant::now();
    let nodes = ClickHouse::start_cluster("two", 2);
    eprintln!(
        "2-shard cluster ready in {:?}: {:?}, RSS {:?} KiB",
        t0.elapsed(),
        nodes
            .iter()
            .map(|n| (&n.http_url, n.tcp_port))
            .collect::<Vec<_>>(),
        nodes.iter().map(|n| n.rss_kib()).collect::<Vec<_>>()
    );
    assert_eq!(nodes.len(), 2);
    assert_ne!(nodes[0].http_url, nodes[1].http_url);

    for n in &nodes {
        // Each node's config names both shards, in order, by their native ports.
        let shards = n
            .query("SELECT shard_num, port FROM system.clusters WHERE cluster = 'two' ORDER BY shard_num")
            .unwrap();
        assert_eq!(
            shards,
            format!("1\t{}\n2\t{}\n", nodes[0].tcp_port, nodes[1].tcp_port)
        );
        n.query("CREATE DATABASE db").unwrap();
        n.query("CREATE TABLE db.t_local (x UInt64, s String) ENGINE = MergeTree() ORDER BY x")
            .unwrap();
    }
    let first = &nodes[0];
    first
        .query("CREATE TABLE db.t AS db.t_local ENGINE = Distributed(two, db, t_local, x)")
        .unwrap();
    first
        .query_with(
            "INSERT INTO db.t SELECT number, toString(number) FROM system.numbers LIMIT 100",
            &[("insert_distributed_sync", "1")],
        )
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", first.logs(), nodes[1].logs()));

    let local: Vec<u64> = nodes
        .iter()
        .map(|n| count(n, "SELECT count() FROM db.t_local"))
        .collect();
    eprintln!("rows per shard: {local:?}");
    // Sharding key x: even x to shard 1, odd x to shard 2 (equal weights).
    assert_eq!(local, vec![50, 50]);
    assert_eq!(count(first, "SELECT count() FROM db.t"), 100);
    assert_eq!(count(first, "SELECT sum(x) FROM db.t"), 4950);
    assert_eq!(
        count(&nodes[1], "SELECT count() FROM db.t_local WHERE x % 2 = 1"),
        50
    );
}
