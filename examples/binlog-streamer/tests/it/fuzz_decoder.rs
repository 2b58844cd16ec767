//! Fuzzing the event framer and decoder (proptest; `cargo fuzz` needs nightly, which this
//! machine lacks). Inputs start from real events: the built-in generator's and a binlog
//! written by MariaDB 10.11 (fuzz-seeds/). Mutations either keep the checksums wrong (the
//! framer must refuse them) or recompute them, so mutated bodies reach the decoder.
//! Any outcome but a panic is fine: the property is "a clear error, never a crash" (and
//! the table a rows event names before decoding is the one decoding finds).
//!
//! Runs for `STACKWATCH_FUZZ_SECONDS` (default 5) per property:
//! `STACKWATCH_FUZZ_SECONDS=600 cargo test --release -p binlog-streamer --test it fuzz_decoder::`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use binlog_streamer::decode::RowDecoder;
use binlog_streamer::frame::{EventFramer, Framed, BINLOG_MAGIC, HEADER_LEN};
use binlog_streamer::generate::BinlogGenerator;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn seeds() -> Vec<Vec<u8>> {
    let mut generated = Vec::new();
    BinlogGenerator::new(3).write_rows(&mut generated, 200, 1_700_000_000);
    let real = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz-seeds/mariadb-10.11-all-types.bin"
    ))
    .expect("seed file");
    assert_eq!(real[..4], BINLOG_MAGIC);
    vec![generated, real[4..].to_vec()]
}

/// Frames and decodes everything in `bytes`, stopping at the first error.
fn run(bytes: &[u8]) -> usize {
    let mut framer = EventFramer::new();
    let mut decoder = RowDecoder::new();
    let file: Arc<str> = Arc::from("fuzz-bin.000001");
    let mut off = 0;
    let mut rows = 0;
    while off < bytes.len() {
        match framer.frame(&bytes[off..]) {
            Ok(Framed::Event(ev, n)) => {
                // The pipeline's cheap look at a rows event (for its labels) must agree
                // with what decoding it finds, whatever the bytes.
                let peeked = decoder
                    .rows_event_table(&ev)
                    .map(|(_, t, kind)| (t.table.clone(), kind));
                if let Ok(binlog_streamer::decode::Decoded::Rows { changes, .. }) =
                    decoder.decode(&ev, &file, off as u64)
                {
                    if let Some(first) = changes.first() {
                        assert_eq!(peeked, Some((first.table.table.clone(), first.kind)));
                    }
                    rows += changes.len();
                }
                off += n;
            }
            Ok(Framed::NeedMore) | Err(_) => break,
        }
    }
    rows
}

/// Recomputes every event's CRC32 so a mutated body passes the framer.
fn fix_checksums(bytes: &mut [u8]) {
    let mut off = 0;
    while off + HEADER_LEN <= bytes.len() {
        let size = u32::from_le_bytes(bytes[off + 9..off + 13].try_into().unwrap()) as usize;
        if size < HEADER_LEN + 4 || off + size > bytes.len() {
            return;
        }
        let is_fde = bytes[off + 4] == 15;
        if !is_fde {
            let crc = crc32fast::hash(&bytes[off..off + size - 4]);
            bytes[off + size - 4..off + size].copy_from_slice(&crc.to_le_bytes());
        }
        off += size;
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, xor: u8 },
    Set { at: usize, value: u8 },
    Truncate { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        2 => (any::<usize>(), prop_oneof![Just(0u8), Just(0xff), Just(0x80), Just(0x7f), Just(1), any::<u8>()])
            .prop_map(|(at, value)| Mutation::Set { at, value }),
        1 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (any::<usize>(), 1usize..16).prop_map(|(at, len)| Mutation::Remove { at, len }),
    ]
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        if b.is_empty() {
            break;
        }
        let n = b.len();
        match m {
            Mutation::Flip { at, xor } => b[at % n] ^= xor,
            Mutation::Set { at, value } => b[at % n] = *value,
            Mutation::Truncate { at } => b.truncate(at % n),
            Mutation::Insert { at, bytes } => {
                let at = at % n;
                b.splice(at..at, bytes.iter().copied());
            }
            Mutation::Remove { at, len } => {
                let at = at % n;
                b.drain(at..(at + len).min(n));
            }
        }
    }
    b
}

fn budget() -> Duration {
    let secs = std::env::var("STACKWATCH_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    Duration::from_secs(secs)
}

fn fuzz(name: &str, fix: bool) {
    let seeds = seeds();
    for s in &seeds {
        assert!(run(s) > 0, "seeds decode");
    }
    let deadline = Instant::now() + budget();
    let mut cases = 0u64;
    while Instant::now() < deadline {
        let mut runner = TestRunner::new(Config {
            cases: 2000,
            failure_persistence: None,
            ..Config::default()
        });
        let strategy = (0..seeds.len(), prop::collection::vec(mutation(), 1..6));
        runner
            .run(&strategy, |(seed, muts)| {
                let mut b = apply(seeds[seed].clone(), &muts);
                if fix {
                    fix_checksums(&mut b);
                }
                run(&b);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        cases += 2000;
    }
    eprintln!("{name}: {cases} inputs without a panic");
}

#[test]
fn the_seeds_decode_and_name_their_tables_before_decoding() {
    for seed in seeds() {
        assert!(run(&seed) > 0, "the seeds hold rows");
    }
}

#[test]
fn mutated_events_with_their_checksums_wrong_never_panic() {
    fuzz("raw mutations", false);
}

#[test]
fn mutated_events_with_valid_checksums_never_panic_the_decoder() {
    fuzz("checksum-fixed mutations", true);
}

/// Inputs the long runs found, kept so they stay fixed.
#[test]
fn inputs_that_once_panicked_now_give_errors() {
    let seeds = seeds();
    // 2026-11-24, 10-minute release run: one flipped byte in the MariaDB table map's
    // ENUM member count made `mysql_common` reserve a vector of ~2^60 names.
    let mut b = apply(
        seeds[1].clone(),
        &[Mutation::Flip {
            at: 7_220_294_493_287_952_990,
            xor: 252,
        }],
    );
    fix_checksums(&mut b);
    run(&b);
}
