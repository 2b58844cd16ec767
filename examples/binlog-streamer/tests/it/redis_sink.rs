//! The Redis Streams sink against a real redis-server started here.

use crate::common;

use std::time::Duration;

use binlog_streamer::encode::AVRO_SCHEMA;
use common::*;

#[test]
#[ignore = "needs redis-server: run via scripts/test.sh"]
fn every_row_lands_in_the_stream_as_json_and_as_avro() {
    let r = Redis::start();
    let url = |stream: &str| format!("redis://127.0.0.1:{}/{stream}", r.port);
    let (ok, _, stderr) = run_worker(&[
        "--source",
        "generate",
        "--events",
        "10000",
        "--sink",
        &url("rows"),
        "--profile-hz",
        "0",
    ]);
    assert!(ok, "{stderr}");
    let mut c = r.conn().unwrap();
    let len: usize = redis::cmd("XLEN").arg("rows").query(&mut c).unwrap();
    assert_eq!(len, 10_000);
    let first: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("rows")
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query(&mut c)
        .unwrap();
    let redis::Value::BulkString(body) = &first.ids[0].map["m"] else {
        panic!("{:?}", first.ids[0].map)
    };
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["database"], "shop");
    assert_eq!(v["row"], 0);

    let (ok, _, stderr) = run_worker(&[
        "--source",
        "generate",
        "--events",
        "500",
        "--format",
        "avro",
        "--sink",
        &url("avro"),
        "--profile-hz",
        "0",
    ]);
    assert!(ok, "{stderr}");
    let all: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("avro")
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    assert_eq!(all.ids.len(), 500);
    let schema = apache_avro::Schema::parse_str(AVRO_SCHEMA).unwrap();
    let reader = apache_avro::GenericSingleObjectReader::builder()
        .schema(schema)
        .build()
        .unwrap();
    for entry in &all.ids {
        let redis::Value::BulkString(body) = &entry.map["m"] else {
            panic!()
        };
        let apache_avro::types::Value::Record(fields) = reader.read_value(&mut &body[..]).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            fields[0].1,
            apache_avro::types::Value::String("shop".into())
        );
    }
}

#[test]
#[ignore = "needs redis-server: run via scripts/test.sh"]
fn a_redis_that_is_down_at_first_gets_every_row_once_it_is_up() {
    let port = free_port();
    let mut child = worker(&[
        "--source",
        "generate",
        "--events",
        "3000",
        "--batch-size",
        "500",
        "--sink",
        &format!("redis://127.0.0.1:{port}/late"),
        "--profile-hz",
        "0",
    ])
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the worker waits and retries"
    );
    // Start Redis on the very port the worker is retrying.
    let r = Redis::start_on(port);
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("publish failed; retrying"), "{err}");
    let mut c = r.conn().unwrap();
    let len: usize = redis::cmd("XLEN").arg("late").query(&mut c).unwrap();
    assert_eq!(len, 3000);
}
