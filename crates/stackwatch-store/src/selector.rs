//! Label selectors in Prometheus syntax: `{service="api",version=~"canary|main",zone!="b"}`.
//!
//! Supported: `=`, `!=`, `=~`, `!~` (regexes fully anchored, as in Prometheus), string
//! values in double or single quotes with `\"`, `\\`, `\n` escapes, an empty selector `{}`
//! (or an empty string) matching everything. Errors name the byte offset.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;
use thiserror::Error;

/// A target's labels (sorted by name).
pub type Labels = BTreeMap<String, String>;

/// Why a selector did not parse.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("label selector: {msg} at offset {offset}")]
pub struct SelectorError {
    /// What was wrong.
    pub msg: String,
    /// Byte offset into the selector text.
    pub offset: usize,
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
}

impl Matcher {
    /// Whether `labels` satisfies this matcher (a missing label is the empty string).
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::Regex => self.regex.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRegex => !self.regex.as_ref().is_some_and(|r| r.is_match(v)),
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

    /// Whether `labels` satisfies every matcher.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matchers.iter().all(|m| m.matches(labels))
    }

    /// Parses `{name op "value", ...}`.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
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
                MatchOp::Regex | MatchOp::NotRegex => Some(
                    Regex::new(&format!("^(?:{value})$")).map_err(|e| SelectorError {
                        msg: format!("bad regex: {e}"),
                        offset: at,
                    })?,
                ),
                _ => None,
            };
            matchers.push(Matcher {
                name,
                op,
                value,
                regex,
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
