//! Fuzzing (proptest, since cargo-fuzz needs nightly) of every decoder of what peers send:
//! the window protocol (JSON + validation), pprof (gzip + protobuf), folded text, and
//! the count of what decoding a protobuf or OTLP/JSON would build (`wire_scan`), which
//! must never refuse as malformed what the decoder itself reads.
//! Inputs are arbitrary bytes and mutations of real bodies in `fuzz-seeds/`.
//!
//! CI runs a short pass; `STACKWATCH_FUZZ_SECONDS=600 cargo test -p stackwatch-server
//! --release --test it fuzz_decoders::` runs each target for ten minutes.

use std::io::Write;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use stackwatch_profile::protocol::WindowsResponse;

const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz-seeds");

fn seed(name: &str) -> Vec<u8> {
    std::fs::read(format!("{SEEDS}/{name}")).unwrap()
}

#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, v)| Edit::Insert(i, v)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 1usize..256).prop_map(|(i, n)| Edit::Duplicate(i, n)),
    ]
}

fn apply(mut data: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = data.len().max(1);
        match e {
            Edit::Flip(i, b) => {
                if !data.is_empty() {
                    data[i % len] ^= b | 1;
                }
            }
            Edit::Insert(i, v) => {
                let at = i % (data.len() + 1);
                data.splice(at..at, v.iter().copied());
            }
            Edit::Delete(i, n) => {
                let at = i % len;
                let end = (at + n).min(data.len());
                if at < end {
                    data.drain(at..end);
                }
            }
            Edit::Truncate(i) => data.truncate(i % len),
            Edit::Duplicate(i, n) => {
                let at = i % len;
                let end = (at + n).min(data.len());
                let chunk: Vec<u8> = data.get(at..end).unwrap_or(&[]).to_vec();
                data.splice(at..at, chunk);
            }
        }
    }
    data
}

fn input(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048),
        proptest::collection::vec(edit(), 1..8).prop_map(move |e| apply(seed.clone(), &e)),
    ]
}

/// Runs `check` on generated inputs for the configured time (or a short CI pass).
fn fuzz(name: &str, strategy: impl Strategy<Value = Vec<u8>>, check: impl Fn(&[u8])) {
    let seconds: u64 = std::env::var("STACKWATCH_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut cases = 0u64;
    loop {
        let mut runner = TestRunner::new(Config {
            cases: 500,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&strategy, |bytes| {
                check(&bytes);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        cases += 500;
        if Instant::now() >= deadline {
            break;
        }
    }
    eprintln!("fuzz {name}: {cases} inputs, no panic");
}

#[test]
fn window_protocol_decoder_never_panics() {
    fuzz("windows", input(seed("windows.json")), |bytes| {
        if let Ok(r) = serde_json::from_slice::<WindowsResponse>(bytes) {
            let _ = stackwatch_server::scrape::validate_windows(&r, 0);
        }
    });
}

#[test]
fn pprof_decoder_never_panics() {
    // Mutate the protobuf inside the gzip too, so edits reach the protobuf parser.
    let gz = seed("profile.pb.gz");
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
    let inner = proptest::collection::vec(edit(), 1..8).prop_map(move |e| {
        let mut out = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        out.write_all(&apply(raw.clone(), &e)).unwrap();
        out.finish().unwrap()
    });
    fuzz("pprof", prop_oneof![input(gz), inner], |bytes| {
        let _ = stackwatch_profile::pprof::decode(bytes, 16 << 20, &Default::default());
    });
}

#[test]
fn folded_decoder_never_panics() {
    fuzz("folded", input(seed("stacks.folded")), |bytes| {
        if let Ok(stacks) = stackwatch_profile::folded::parse_folded_bytes(bytes) {
            // What parses must also render and encode.
            let p = stackwatch_profile::Profile {
                stacks,
                period_ns: 1,
                ..Default::default()
            };
            let _ = p.to_pprof();
        }
    });
}

/// What `wire_scan` counts before decoding must never be stricter than the decoder: a
/// body prost (or the OTLP/JSON mapping) reads is never refused as malformed by the
/// count (issue 24, item 4), and neither panics.
#[test]
fn the_wire_count_never_refuses_what_the_decoder_reads() {
    use prost::Message;
    use stackwatch_profile::pprof::{proto, shape};
    use stackwatch_profile::wire_scan::scan_protobuf;
    use stackwatch_server::push::otlp::{parse, Encoding};

    let gz = seed("profile.pb.gz");
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
    fuzz("wire count: pprof", input(raw.clone()), |bytes| {
        let counted = scan_protobuf(&shape::PROFILE, bytes, usize::MAX);
        if proto::Profile::decode(bytes).is_ok() {
            assert!(counted.is_ok(), "{counted:?}");
        }
    });
    // The pprof bytes are a protobuf of another shape: enough to reach the OTLP fields.
    fuzz("wire count: OTLP protobuf", input(raw), |bytes| {
        use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
        let parsed = parse(Encoding::Protobuf, bytes, usize::MAX);
        if ExportProfilesServiceRequest::decode(bytes).is_ok() {
            assert!(parsed.is_ok(), "{parsed:?}");
        }
    });
    let json = br#"{"resourceProfiles":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},
        "scopeProfiles":[{"profiles":[{"sampleType":{"typeStrindex":1,"unitStrindex":2},"period":"10000000",
        "samples":[{"stackIndex":1,"values":["5"],"attributeIndices":[1]}]}]}]}],
        "dictionary":{"stringTable":["","samples","count","main"],"functionTable":[{},{"nameStrindex":3}],
        "locationTable":[{},{"lines":[{"functionIndex":1}]}],"stackTable":[{},{"locationIndices":[1]}],
        "attributeTable":[{},{"keyStrindex":1,"value":{"stringValue":"x"}}]}}"#;
    fuzz("wire count: OTLP/JSON", input(json.to_vec()), |bytes| {
        // A request or an error, never a panic, whether the count refuses (a small
        // bound) or not.
        let _ = parse(Encoding::Json, bytes, 4 << 10);
        let _ = parse(Encoding::Json, bytes, usize::MAX);
    });
}
