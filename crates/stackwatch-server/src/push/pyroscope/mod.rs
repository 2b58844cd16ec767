//! Pyroscope's ingest API, as Grafana's Pyroscope SDKs speak it (docs/ingest.md,
//! "Pyroscope SDKs"):
//!
//! - `POST /ingest?name=<app>[.<type>]{k=v,...}&from=&until=&format=&sampleRate=&...`:
//!   the original HTTP API. The Go and Node SDKs send a `multipart/form-data` body with a
//!   `profile` part (pprof) and a `sample_type_config` part; other agents send folded
//!   text (`format=folded`, `lines`) or a raw pprof body (`format=pprof`).
//! - `POST /push.v1.PusherService/Push`: the Connect endpoint (protobuf or JSON) the
//!   Rust-based SDKs (Python, Ruby, Rust) and Grafana Alloy send: series of labels, each
//!   with raw pprof profiles.
//!
//! Both decode into [`PushedSeries`](super::PushedSeries) (one per profile type a pprof
//! body carries) and hand them to [`accept`](super::accept()). The cost of a request is bounded by the request: its body
//! by `push.max_body_bytes` and `push.max_decompressed_bytes` (the profiles inside a
//! Connect request share that decompression cap), the stacks of all its profiles
//! together by the scrape [`StackBudget`](stackwatch_profile::StackBudget), at most
//! [`MAX_PROFILES_PER_REQUEST`] profile types per request. What decoding the
//! `PushRequest` and its pprof profiles builds is counted on the wire before it is
//! built ([`wire_scan`](stackwatch_profile::wire_scan)) and bounded together by
//! [`max_message_bytes`](stackwatch_profile::pprof::max_message_bytes); requests
//! inflate and decode in a bounded number of slots
//! ([`DecodeSlots`](super::decode_slots::DecodeSlots)), off the async threads.

use axum::routing::post;
use axum::Router;

use super::accept::PushState;

mod connect;
mod ingest;
mod multipart;
mod names;
mod profiles;

use connect::connect_push;
pub use connect::proto;
use ingest::ingest;
pub use ingest::DEFAULT_SAMPLE_RATE;
pub use multipart::MAX_MULTIPART_PARTS;
pub use profiles::MAX_PROFILES_PER_REQUEST;

/// The Pyroscope routes (`/ingest`, `/push.v1.PusherService/Push`).
pub fn routes() -> Router<PushState> {
    Router::new()
        .route("/ingest", post(ingest))
        .route("/push.v1.PusherService/Push", post(connect_push))
}

#[cfg(test)]
mod tests {
    use stackwatch_profile::pprof::SampleType;

    use super::multipart::*;
    use super::names::*;
    use super::profiles::*;
    use crate::profile_type::ProfileType;

    #[test]
    fn names_parse_as_pyroscope_writes_them() {
        let n = parse_app_name("app.cpu{env=prod, region = eu}").unwrap();
        assert_eq!(n.app, "app");
        assert_eq!(n.hint.ty, Some(ProfileType::Cpu));
        assert_eq!(
            n.tags,
            [
                ("env".into(), "prod".into()),
                ("region".into(), "eu".into())
            ]
        );
        // A dotted name that is no type keeps its dots.
        let n = parse_app_name("backend.purchases{}").unwrap();
        assert_eq!((n.app.as_str(), n.hint.ty), ("backend.purchases", None));
        let n = parse_app_name("svc.inuse_space").unwrap();
        assert_eq!(n.hint.ty, Some(ProfileType::InuseSpace));
        let n = parse_app_name("svc.mutex_count{}").unwrap();
        assert_eq!(n.hint.contention, Some("mutex"));
        // pyroscope-go: no suffix, dotted and reserved tags.
        let n = parse_app_name(
            "go-app{__session_id__=0102,otel.scope.name=com.grafana.pyroscope/go,process.runtime.name=go}",
        )
        .unwrap();
        let labels = target_labels(
            Some(&n.app),
            n.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            None,
        );
        assert_eq!(labels["service"], "go-app");
        assert_eq!(labels["otel_scope_name"], "com.grafana.pyroscope/go");
        assert_eq!(labels["process_runtime_name"], "go");
        assert!(!labels.keys().any(|k| k.contains("session")));
        // service_name wins over the app name.
        let n = parse_app_name("x.cpu{service_name=real}").unwrap();
        let labels = target_labels(
            Some(&n.app),
            n.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            None,
        );
        assert_eq!(labels["service"], "real");
        assert!(!labels.contains_key("service_name"));
        for bad in [
            "",
            ".cpu",
            "app{env=prod",
            "app{env}",
            "app}",
            "{env=x}",
            "app\u{1}",
        ] {
            assert!(parse_app_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times_parse_as_pyroscope_reads_them() {
        let now = 1_700_000_000_000_000_000;
        assert_eq!(parse_time("1700000000", now), Ok(now));
        assert_eq!(parse_time("1700000000000", now), Ok(now));
        assert_eq!(parse_time("1700000000000000", now), Ok(now));
        assert_eq!(parse_time("1700000000000000000", now), Ok(now));
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("now-1h", now), Ok(now - 3_600_000_000_000));
        assert_eq!(parse_time("-10s", now), Ok(now - 10_000_000_000));
        assert_eq!(parse_time("now-1m30s", now), Ok(now - 90_000_000_000));
        for bad in [
            "yesterday",
            "now-",
            "now-5",
            "now-5parsecs",
            "99999999999999999999999",
            "12abc",
        ] {
            assert!(parse_time(bad, now).is_err(), "{bad:?}");
        }
        assert!(parse_time("now-100000w", 1).is_err());
    }

    #[test]
    fn multipart_bodies_split_into_named_parts() {
        let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"profile.pprof\"\r\nContent-Type: application/octet-stream\r\n\r\n\x1f\x8b\r\n--X\r\n--XyZ\r\nContent-Disposition: form-data; name=\"sample_type_config\"\r\n\r\n{}\r\n--XyZ--\r\n";
        let parts = multipart_parts(body, "XyZ").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0, "profile");
        assert_eq!(parts[0].1, b"\x1f\x8b\r\n--X");
        assert_eq!(parts[1], ("sample_type_config".to_string(), &b"{}"[..]));
        assert_eq!(
            multipart_boundary("multipart/form-data; boundary=\"XyZ\"").unwrap(),
            "XyZ"
        );
        assert!(multipart_boundary("multipart/form-data").is_err());
        for bad in [
            &b"no boundary at all"[..],
            b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nx\r\n--XyZ--",
            b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nnever closed",
            b"--XyZ garbage",
        ] {
            assert!(multipart_parts(bad, "XyZ").is_err(), "{bad:?}");
        }
        let many: Vec<u8> = (0..40)
            .flat_map(|i| {
                format!("--b\r\nContent-Disposition: form-data; name=p{i}\r\n\r\nx\r\n")
                    .into_bytes()
            })
            .chain(b"--b--".iter().copied())
            .collect();
        assert!(multipart_parts(&many, "b").is_err());
    }

    #[test]
    fn sample_types_map_to_profile_types() {
        let st = |t: &str, u: &str| SampleType {
            ty: t.into(),
            unit: u.into(),
        };
        assert_eq!(
            classify(&st("cpu", "nanoseconds"), None, "cpu"),
            Some((ProfileType::Cpu, None))
        );
        assert_eq!(
            classify(&st("samples", "count"), None, "wall"),
            Some((ProfileType::Wall, None))
        );
        let mutex = SampleTypeConfig {
            display_name: "mutex_duration".into(),
            ..Default::default()
        };
        assert_eq!(
            classify(&st("delay", "nanoseconds"), Some(&mutex), "contentions"),
            Some((ProfileType::Delay, Some("mutex")))
        );
        let odd = SampleTypeConfig {
            units: "bytes".into(),
            aggregation: "average".into(),
            ..Default::default()
        };
        assert_eq!(
            classify(&st("space", "bytes"), Some(&odd), ""),
            Some((ProfileType::InuseSpace, None))
        );
        assert_eq!(classify(&st("weird", "furlongs"), None, ""), None);
    }
}
