//! `store_cache_bytes`: what the SQLite stores' own caches hold is counted as they fill,
//! and given back when a store is dropped. Its own test binary: the count is
//! process-wide, and other tests' stores would move it under this one.

use stackwatch_store::{
    store_cache_bytes, IngestWindow, Labels, ProfileReader, ProfileWriter, Selector, SqliteStore,
    StoreOptions,
};

const T0: i64 = 1_795_000_000 - 1_795_000_000 % 3600;

fn window(seq: u64, stacks: Vec<(String, u64)>) -> IngestWindow {
    let target: Labels = [("service".to_string(), "api".to_string())].into();
    IngestWindow {
        target,
        instance: "i".into(),
        seq,
        start_unix_s: T0 + seq as i64,
        stacks,
        labeled: Vec::new(),
        period_ns: 10_101_010,
    }
}

#[test]
fn the_stores_caches_are_counted_as_they_fill_and_given_back_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let before = store_cache_bytes();
    let mut writer = SqliteStore::open(&db, StoreOptions::default()).unwrap();
    // 20 000 distinct stacks: the writer's stack-id cache holds each.
    for seq in 1..=20 {
        let stacks = (0..1000)
            .map(|i| (format!("main;work;frame_{seq}_{i}"), 1))
            .collect();
        writer.ingest(&[window(seq, stacks)]).unwrap();
    }
    let written = store_cache_bytes() - before;
    assert!(
        written >= 20_000 * 24,
        "20 000 stack ids of 24 bytes, counted {written}"
    );
    // A query connection's stack texts: each of the 20 000 read once.
    let reader = SqliteStore::open_reader(&db).unwrap();
    let p = reader.profile(&Selector::all(), T0, T0 + 3600).unwrap();
    assert_eq!(p.stacks.len(), 20_000);
    let read = store_cache_bytes() - before - written;
    assert!(
        read >= 20_000 * "main;work;frame_1_1".len() as u64,
        "20 000 stack texts, counted {read}"
    );
    drop(reader);
    assert_eq!(store_cache_bytes() - before, written);
    drop(writer);
    assert_eq!(store_cache_bytes(), before);
}
