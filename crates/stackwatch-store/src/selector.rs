//! Label selectors in Prometheus syntax: `{service="api",version=~"canary|main",zone!="b"}`.
//!
//! Supported: `=`, `!=`, `=~`, `!~` (regexes fully anchored, as in Prometheus), string
//! values in double or single quotes with `\"`, `\\`, `\n` escapes, an empty selector `{}`
//! (or an empty string) matching everything. Errors name the byte offset.
//!
//! A selector comes from a URL, so what it may cost is bounded ([`SelectorLimits`]):
//! the number of matchers, the length of a regex and the size of its compiled program.

use std::collections::BTreeMap;
use std::fmt;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A target's labels, sorted by name (`service`, `instance`, `version`, ...): what names a
/// series. A type of its own, not another name for the map, so that a sample's labels
/// ([`stackwatch_profile::SampleLabels`], `table="orders"`), the same shape with another
/// meaning, cannot be passed where a target's are meant: converting is always written
/// out (`Labels::from(map)`, [`Labels::into_inner`]). Reads as the map it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// No labels.
    pub fn new() -> Self {
        Labels(BTreeMap::new())
    }

    /// The map of name to value.
    pub fn into_inner(self) -> BTreeMap<String, String> {
        self.0
    }
}

impl std::ops::Deref for Labels {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Labels {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Self {
        Labels(map)
    }
}

impl<const N: usize> From<[(String, String); N]> for Labels {
    fn from(pairs: [(String, String); N]) -> Self {
        Labels(BTreeMap::from(pairs))
    }
}

impl FromIterator<(String, String)> for Labels {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Labels(iter.into_iter().collect())
    }
}

impl IntoIterator for Labels {
    type Item = (String, String);
    type IntoIter = std::collections::btree_map::IntoIter<String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Extend<(String, String)> for Labels {
    fn extend<I: IntoIterator<Item = (String, String)>>(&mut self, iter: I) {
        self.0.extend(iter)
    }
}

/// Why a selector did not parse.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("label selector: {msg} at offset {offset}")]
pub struct SelectorError {
    /// What was wrong.
    pub msg: String,
    /// Byte offset into the selector text.
    pub offset: usize,
    /// Whether it was refused for a budget of [`SelectorLimits`] (`query.max_*`), not for
    /// its syntax: the server counts those apart.
    pub over_budget: bool,
}

/// How one matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Regex,
    /// `!~`
    NotRegex,
}

/// One `name op "value"` matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Comparison.
    pub op: MatchOp,
    /// Value as written.
    pub value: String,
    regex: Option<Regex>,
    /// Selects targets only, whatever target labels are stored (see
    /// [`Matcher::target_label_in`]).
    target_only: bool,
}

impl Matcher {
    /// A matcher that keeps the targets whose label `name` is one of `values` (none when
    /// `values` is empty). Unlike a parsed matcher it always selects targets, even when
    /// no stored target has the label (a parsed one would then select samples by a
    /// sample label of that name): a target without the label has the empty value,
    /// which it never keeps. The collector restricts a read to its tenants with it.
    pub fn target_label_in(name: &str, values: &[String]) -> Matcher {
        let pattern = if values.is_empty() {
            // A class that no character is in: matches nothing, not even "".
            r"[^\s\S]".to_owned()
        } else {
            let alternatives: Vec<String> = values.iter().map(|v| regex::escape(v)).collect();
            alternatives.join("|")
        };
        let regex = Regex::new(&format!("^(?:{pattern})$")).ok();
        Matcher {
            name: name.to_owned(),
            op: MatchOp::Regex,
            value: pattern,
            // Escaped literals always compile; were one not to, `regex: None` matches
            // nothing (see `matches`), which keeps a restriction closed.
            regex,
            target_only: true,
        }
    }

    /// Whether this matcher selects targets only ([`Matcher::target_label_in`]).
    pub fn is_target_only(&self) -> bool {
        self.target_only
    }

    /// Whether `labels` (a target's [`Labels`] or a sample's label set: both read as
    /// this map) satisfies this matcher (a missing label is the empty string).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::Regex => self.regex.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRegex => !self.regex.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

/// What one selector may cost. Each has a default and a `[query]` key in the
/// collector's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectorLimits {
    /// Matchers per selector (default 16).
    pub max_matchers: usize,
    /// Bytes of one regex as written (default 1 024).
    pub max_regex_bytes: usize,
    /// Bytes one compiled regex may take (default 1 MiB): `\w{0,200}` is 9 bytes of
    /// text but megabytes of program.
    pub max_regex_program_bytes: usize,
}

impl Default for SelectorLimits {
    fn default() -> Self {
        SelectorLimits {
            max_matchers: 16,
            max_regex_bytes: 1024,
            max_regex_program_bytes: 1 << 20,
        }
    }
}

/// A parsed selector: all matchers must hold.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// The matchers.
    pub matchers: Vec<Matcher>,
}

impl Selector {
    /// Selects every target.
    pub fn all() -> Self {
        Selector::default()
    }

    /// Whether `labels` (a target's or a sample's) satisfies every matcher.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matchers.iter().all(|m| m.matches(labels))
    }

    /// Splits the matchers in two, keeping their order: those whose name `is_target`
    /// says is a target label name, and those made by [`Matcher::target_label_in`]
    /// (they select targets), then the rest (they select samples by their sample
    /// labels, a missing label being the empty value). Every store splits a selector
    /// this way, with the target label names it has stored.
    pub fn split(&self, is_target: impl Fn(&str) -> bool) -> (Selector, Selector) {
        let (target, sample) = self
            .matchers
            .iter()
            .cloned()
            .partition(|m| m.target_only || is_target(&m.name));
        (Selector { matchers: target }, Selector { matchers: sample })
    }

    /// True when the selector has no matchers (it selects everything).
    pub fn is_empty(&self) -> bool {
        self.matchers.is_empty()
    }

    /// Parses `{name op "value", ...}` within the default [`SelectorLimits`].
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        Self::parse_with(text, &SelectorLimits::default())
    }

    /// Parses `{name op "value", ...}` within `limits`.
    pub fn parse_with(text: &str, limits: &SelectorLimits) -> Result<Selector, SelectorError> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        p.ws();
        if p.i == p.s.len() {
            return Ok(Selector::all());
        }
        p.expect(b'{')?;
        let mut matchers = Vec::new();
        loop {
            p.ws();
            if p.eat(b'}') {
                break;
            }
            if matchers.len() == limits.max_matchers {
                return Err(SelectorError {
                    over_budget: true,
                    ..p.err(&format!(
                        "more than {} matchers (query.max_matchers)",
                        limits.max_matchers
                    ))
                });
            }
            let name = p.ident()?;
            p.ws();
            let op = if p.eat(b'=') {
                if p.eat(b'~') {
                    MatchOp::Regex
                } else {
                    MatchOp::Equal
                }
            } else if p.eat(b'!') {
                if p.eat(b'=') {
                    MatchOp::NotEqual
                } else if p.eat(b'~') {
                    MatchOp::NotRegex
                } else {
                    return Err(p.err("expected != or !~"));
                }
            } else {
                return Err(p.err("expected =, !=, =~ or !~"));
            };
            p.ws();
            let at = p.i;
            let value = p.string()?;
            let regex = match op {
                MatchOp::Regex | MatchOp::NotRegex => {
                    if value.len() > limits.max_regex_bytes {
                        return Err(SelectorError {
                            msg: format!(
                                "regex longer than {} bytes (query.max_regex_bytes)",
                                limits.max_regex_bytes
                            ),
                            offset: at,
                            over_budget: true,
                        });
                    }
                    let compiled = RegexBuilder::new(&format!("^(?:{value})$"))
                        .size_limit(limits.max_regex_program_bytes)
                        .dfa_size_limit(limits.max_regex_program_bytes)
                        .build()
                        .map_err(|e| SelectorError {
                            over_budget: matches!(e, regex::Error::CompiledTooBig(_)),
                            msg: match e {
                                regex::Error::CompiledTooBig(_) => format!(
                                    "regex compiles to more than {} bytes (query.max_regex_program_bytes)",
                                    limits.max_regex_program_bytes
                                ),
                                e => format!("bad regex: {e}"),
                            },
                            offset: at,
                        })?;
                    Some(compiled)
                }
                _ => None,
            };
            matchers.push(Matcher {
                name,
                op,
                value,
                regex,
                target_only: false,
            });
            p.ws();
            if p.eat(b',') {
                continue;
            }
            p.ws();
            p.expect(b'}')?;
            break;
        }
        p.ws();
        if p.i != p.s.len() {
            return Err(p.err("unexpected text after }"));
        }
        Ok(Selector { matchers })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, m) in self.matchers.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match m.op {
                MatchOp::Equal => "=",
                MatchOp::NotEqual => "!=",
                MatchOp::Regex => "=~",
                MatchOp::NotRegex => "!~",
            };
            write!(f, "{}{}{:?}", m.name, op, m.value)?;
        }
        f.write_str("}")
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err(&self, msg: &str) -> SelectorError {
        SelectorError {
            msg: msg.to_owned(),
            offset: self.i,
            over_budget: false,
        }
    }
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: u8) -> Result<(), SelectorError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.err(&format!("expected '{}'", c as char)))
        }
    }
    fn ident(&mut self) -> Result<String, SelectorError> {
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_')
        {
            self.i += 1;
        }
        if start == self.i || self.s[start].is_ascii_digit() {
            self.i = start;
            return Err(self.err("expected a label name"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }
    fn string(&mut self) -> Result<String, SelectorError> {
        let quote = match self.s.get(self.i) {
            Some(b'"') => b'"',
            Some(b'\'') => b'\'',
            _ => return Err(self.err("expected a quoted value")),
        };
        self.i += 1;
        let mut out = Vec::new();
        while let Some(&c) = self.s.get(self.i) {
            self.i += 1;
            if c == quote {
                return String::from_utf8(out).map_err(|_| self.err("value is not UTF-8"));
            }
            if c == b'\\' {
                let e = *self
                    .s
                    .get(self.i)
                    .ok_or_else(|| self.err("unfinished escape"))?;
                self.i += 1;
                out.push(match e {
                    b'n' => b'\n',
                    b't' => b'\t',
                    b'\\' | b'"' | b'\'' => e,
                    _ => return Err(self.err("unknown escape")),
                });
            } else {
                out.push(c);
            }
        }
        Err(self.err("unterminated string"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_matches_all_four_operators() {
        let s = Selector::parse(
            r#"{service="binlog-streamer", version=~"canary|main", zone!="b", host!~"test-.*"}"#,
        )
        .unwrap();
        assert!(s.matches(&labels(&[
            ("service", "binlog-streamer"),
            ("version", "main"),
            ("host", "prod-1")
        ])));
        assert!(
            !s.matches(&labels(&[
                ("service", "binlog-streamer"),
                ("version", "mainline")
            ])),
            "regex is anchored"
        );
        assert!(!s.matches(&labels(&[
            ("service", "binlog-streamer"),
            ("version", "main"),
            ("zone", "b")
        ])));
        assert!(!s.matches(&labels(&[
            ("service", "binlog-streamer"),
            ("version", "main"),
            ("host", "test-3")
        ])));
        assert!(Selector::parse("").unwrap().matches(&labels(&[])));
        assert!(Selector::parse("{}")
            .unwrap()
            .matches(&labels(&[("a", "b")])));
    }

    /// Issue #10, item 5: 100 matchers like `a1=~"\\w{0,200}"` took 8.2 s and 1.3 GB.
    #[test]
    fn matchers_and_regex_programs_are_bounded() {
        let many: Vec<String> = (0..100)
            .map(|i| format!("a{i}=~\"\\\\w{{0,200}}\""))
            .collect();
        let text = format!("{{{}}}", many.join(","));
        let started = std::time::Instant::now();
        let e = Selector::parse(&text).unwrap_err();
        assert!(e.msg.contains("query.max_regex_program_bytes"), "{e}");
        let few = format!("{{{}}}", many[..1].join(","));
        let e = Selector::parse(&few).unwrap_err();
        assert!(e.msg.contains("query.max_regex_program_bytes"), "{e}");
        assert!(e.over_budget, "{e:?}");
        // A syntax error is not a budget's.
        assert!(!Selector::parse("{a=~\"(\"}").unwrap_err().over_budget);
        assert!(!Selector::parse("{a=}").unwrap_err().over_budget);
        let plain: Vec<String> = (0..17).map(|i| format!("a{i}=\"x\"")).collect();
        let e = Selector::parse(&format!("{{{}}}", plain.join(","))).unwrap_err();
        assert!(e.msg.contains("query.max_matchers"), "{e}");
        assert!(e.over_budget, "{e:?}");
        let long = format!("{{a=~\"{}\"}}", "x".repeat(2000));
        assert!(Selector::parse(&long)
            .unwrap_err()
            .msg
            .contains("max_regex_bytes"));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Ordinary regexes still work.
        assert!(Selector::parse(r#"{version=~"canary|main.*", zone!~"b|c"}"#).is_ok());
    }

    #[test]
    fn split_separates_target_and_sample_matchers() {
        let s = Selector::parse(r#"{service="api", table=~"ord.*", op!="x", zone="b"}"#).unwrap();
        let (t, m) = s.split(|n| n == "service" || n == "zone");
        let names = |s: &Selector| {
            s.matchers
                .iter()
                .map(|m| m.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&t), ["service", "zone"]);
        assert_eq!(names(&m), ["table", "op"]);
        assert!(m.matches(&labels(&[("table", "orders")])));
        assert!(
            !m.matches(&labels(&[])),
            "a missing label is empty: =~ fails"
        );
        assert!(Selector::all().split(|_| true).0.is_empty());
    }

    #[test]
    fn escapes_and_single_quotes() {
        let s = Selector::parse(r#"{a='x"y', b="q\"\\"}"#).unwrap();
        assert_eq!(s.matchers[0].value, "x\"y");
        assert_eq!(s.matchers[1].value, "q\"\\");
    }

    #[test]
    fn errors_name_the_offset() {
        for (text, offset) in [
            ("{service=", 9),
            ("{service}", 8),
            ("{=\"x\"}", 1),
            ("{a=\"x\"", 6),
            ("{a=~\"(\"}", 4),
            ("{a=\"x\"} junk", 8),
            ("service=\"x\"", 0),
        ] {
            let e = Selector::parse(text).unwrap_err();
            assert_eq!(e.offset, offset, "{text}: {e}");
        }
    }
}
