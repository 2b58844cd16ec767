//! The app name, tags and times of a Pyroscope push: `name=<app>[.<type>]{k=v,...}`,
//! the profile type it hints, the target labels it becomes, `from`/`until` in any of the
//! units agents send.

use stackwatch_store::Labels;

use crate::profile_type::ProfileType;

/// Profile times before this (1973) are not Unix nanoseconds (old agents sent
/// microseconds): the request's time is used instead, as Pyroscope does.
pub(super) const PLAUSIBLE_TIME_NS: u64 = 100_000_000_000_000_000;
/// How far in the future a profile may start (clock skew), ns.
pub(super) const MAX_FUTURE_NS: u64 = 3600 * 1_000_000_000;

/// What the app name's suffix, `__name__` or the `units` parameter say of the type:
/// used for folded bodies, and to settle what a pprof's sample types leave open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct TypeHint {
    pub(super) ty: Option<ProfileType>,
    /// `mutex` or `block` for contention profiles.
    pub(super) contention: Option<&'static str>,
}

/// The type named by an app name suffix (`.cpu`), a `__name__` (`process_cpu`) or a
/// `display-name` of a sample type config.
pub(super) fn hint_of_name(name: &str) -> Option<TypeHint> {
    let (ty, contention) = match name {
        "cpu" | "itimer" | "process_cpu" | "samples" => (ProfileType::Cpu, None),
        "wall" => (ProfileType::Wall, None),
        "alloc_objects" => (ProfileType::AllocObjects, None),
        "alloc_space" => (ProfileType::AllocSpace, None),
        "inuse_objects" => (ProfileType::InuseObjects, None),
        "inuse_space" => (ProfileType::InuseSpace, None),
        "goroutine" | "goroutines" => (ProfileType::Goroutines, None),
        "contentions" => (ProfileType::Contentions, None),
        "delay" => (ProfileType::Delay, None),
        "mutex_count" => (ProfileType::Contentions, Some("mutex")),
        "mutex_duration" => (ProfileType::Delay, Some("mutex")),
        "block_count" => (ProfileType::Contentions, Some("block")),
        "block_duration" => (ProfileType::Delay, Some("block")),
        // `__name__` of the Connect endpoint: the family, the body says which type.
        "mutex" => {
            return Some(TypeHint {
                ty: None,
                contention: Some("mutex"),
            })
        }
        "block" => {
            return Some(TypeHint {
                ty: None,
                contention: Some("block"),
            })
        }
        _ => return None,
    };
    Some(TypeHint {
        ty: Some(ty),
        contention,
    })
}

/// The type of Pyroscope's `units` (with `aggregationType`), for a folded body whose
/// name has no type suffix.
pub(super) fn type_of_units(units: &str, aggregation: &str) -> Option<ProfileType> {
    let average = aggregation == "average";
    Some(match units {
        "samples" | "" => ProfileType::Cpu,
        "objects" if average => ProfileType::InuseObjects,
        "objects" => ProfileType::AllocObjects,
        "bytes" if average => ProfileType::InuseSpace,
        "bytes" => ProfileType::AllocSpace,
        "goroutines" => ProfileType::Goroutines,
        "lock_samples" => ProfileType::Contentions,
        "lock_nanoseconds" => ProfileType::Delay,
        _ => return None,
    })
}

/// A parsed `name`: `app[.type]{k=v,...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AppName {
    pub(super) app: String,
    pub(super) hint: TypeHint,
    /// Tags in order (raw names).
    pub(super) tags: Vec<(String, String)>,
}

/// Parses Pyroscope's `name` parameter: the application name, an optional type suffix
/// (`.cpu`, `.alloc_space`, ...: stripped when known), then `{k=v,...}` tags (values
/// cannot hold `,` or `}`; surrounding spaces trimmed; empty values dropped).
pub(super) fn parse_app_name(name: &str) -> Result<AppName, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("name is missing (name=<app>.<type>{tag=value,...})".into());
    }
    if name.len() > 4096 {
        return Err("name is longer than 4096 bytes".into());
    }
    let (head, tags_text) = match name.find('{') {
        Some(i) => {
            let rest = &name[i + 1..];
            let Some(inner) = rest.trim_end().strip_suffix('}') else {
                return Err(format!("name {name:?}: the tags do not end in }}"));
            };
            (&name[..i], Some(inner))
        }
        None => (name, None),
    };
    let head = head.trim();
    if head.contains('}') {
        return Err(format!("name {name:?}: '}}' without '{{'"));
    }
    let (app, hint) = match head.rsplit_once('.') {
        Some((app, suffix)) => match hint_of_name(suffix) {
            Some(hint) if hint.ty.is_some() => (app.trim(), hint),
            _ => (head, TypeHint::default()),
        },
        None => (head, TypeHint::default()),
    };
    if app.is_empty() {
        return Err(format!("name {name:?}: no application name"));
    }
    if app.chars().any(|c| c.is_control() || c == '{' || c == '"') {
        return Err(format!(
            "name {name:?}: the application name has characters not allowed"
        ));
    }
    let mut tags = Vec::new();
    if let Some(inner) = tags_text {
        for pair in inner.split(',') {
            if pair.trim().is_empty() {
                continue;
            }
            let Some((k, v)) = pair.split_once('=') else {
                return Err(format!("name {name:?}: tag {:?} has no '='", pair.trim()));
            };
            if v.contains('{') || v.contains('}') {
                return Err(format!(
                    "name {name:?}: tag {:?}: braces in a value",
                    k.trim()
                ));
            }
            tags.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    Ok(AppName {
        app: app.to_owned(),
        hint,
        tags,
    })
}

/// Target labels from Pyroscope tags: `service` from `service_name` (or `service`)
/// when present, else `app`; `__`-prefixed names skipped (`__session_id__`,
/// `__name__`); dots in names become underscores (`process.runtime.name` →
/// `process_runtime_name`, the OpenTelemetry-to-Prometheus convention); empty values
/// dropped. Names that are still not identifiers are refused by [`accept`].
pub(super) fn target_labels<'a>(
    app: Option<&str>,
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
    contention: Option<&'static str>,
) -> Labels {
    let mut labels = Labels::new();
    let mut service_name = None;
    let mut service = None;
    for (k, v) in tags {
        if k.starts_with("__") || v.is_empty() {
            continue;
        }
        match k {
            "service_name" => service_name = Some(v),
            "service" => service = Some(v),
            _ => {
                labels.insert(k.replace('.', "_"), v.to_owned());
            }
        }
    }
    if let Some(s) = service_name.or(service).or(app) {
        labels.insert("service".into(), s.to_owned());
    }
    if let Some(c) = contention {
        labels.insert("contention".into(), c.to_owned());
    }
    labels
}

/// Parses `from` / `until` as Pyroscope does: Unix seconds (13 digits: ms, 16: µs, 19:
/// ns), `now`, or `now-<n><unit>` / `-<n><unit>` (s, m/min, h, d, w). Unix ns.
pub(super) fn parse_time(s: &str, now_ns: u64) -> Result<u64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let v: u64 = s.parse().map_err(|_| format!("{s:?}: out of range"))?;
        let scale: u64 = match s.len() {
            13 => 1_000_000,
            16 => 1_000,
            19 => 1,
            _ => 1_000_000_000,
        };
        return v
            .checked_mul(scale)
            .ok_or_else(|| format!("{s:?}: out of range"));
    }
    let rest = s.strip_prefix("now").unwrap_or(s);
    if rest.is_empty() {
        return if s == "now" {
            Ok(now_ns)
        } else {
            Err("empty time".into())
        };
    }
    let (sign, mut rest) = match rest.as_bytes()[0] {
        b'-' => (-1i128, &rest[1..]),
        b'+' => (1, &rest[1..]),
        _ => return Err(format!("{s:?}: not Unix time, now or now-<duration>")),
    };
    if rest.is_empty() {
        return Err(format!("{s:?}: no duration after the sign"));
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit_len = rest[digits..]
            .bytes()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        if digits == 0 || digits > 12 || unit_len == 0 {
            return Err(format!("{s:?}: not now-<number><unit>"));
        }
        let n: i128 = rest[..digits]
            .parse()
            .map_err(|_| format!("{s:?}: bad number"))?;
        let unit = &rest[digits..digits + unit_len];
        let secs: i128 = match unit {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 7 * 86_400,
            _ => return Err(format!("{s:?}: unknown unit {unit:?} (s, m, h, d, w)")),
        };
        total += n * secs * 1_000_000_000;
        rest = &rest[digits + unit_len..];
    }
    let t = i128::from(now_ns) + sign * total;
    u64::try_from(t).map_err(|_| format!("{s:?}: before 1970"))
}
