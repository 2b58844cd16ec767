//! ClickHouse's HTTP interface: one statement per POST, results as TabSeparated text.
//!
//! Only what every ClickHouse since 18.16 answers is used: the statement in the body,
//! settings as URL parameters, credentials in the `X-ClickHouse-User`/`X-ClickHouse-Key`
//! headers, errors as a non-2xx status with `Code: N, ...` text. Values are inlined as
//! escaped literals (query parameters arrived only in 19.x).

use std::fmt::Write as _;
use std::time::Duration;

use crate::StoreError;

/// A connection to one ClickHouse node's HTTP interface.
#[derive(Clone)]
pub(crate) struct Client {
    agent: ureq::Agent,
    /// `http://host:port`, no trailing slash.
    url: String,
    user: String,
    password: String,
    timeout: Duration,
}

/// Largest statement text sent (target lists are inlined); ClickHouse's own default
/// `max_query_size` is 256 KiB, so each statement raises it to this.
const MAX_QUERY_BYTES: usize = 64 << 20;
/// Largest answer read (answers are bounded by the reader's budgets long before).
const MAX_ANSWER_BYTES: u64 = 1 << 30;

impl Client {
    /// A client for the node at `url` (`http://host:8123`).
    pub(crate) fn new(
        url: &str,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<Client, StoreError> {
        let uri: ureq::http::Uri = url.parse().map_err(|e| StoreError::Config {
            key: "url",
            why: format!("{url:?} is not a URL: {e}"),
        })?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(StoreError::Config {
                key: "url",
                why: format!("{url:?} is not an http:// URL of ClickHouse's HTTP interface"),
            });
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .max_idle_connections_per_host(8)
            .build()
            .into();
        Ok(Client {
            agent,
            url: url.trim_end_matches('/').to_string(),
            user: user.to_string(),
            password: password.to_string(),
            timeout,
        })
    }

    /// Runs `sql` and returns its TabSeparated output. `timeout` bounds the request
    /// and, as `max_execution_time`, the statement inside ClickHouse.
    pub(crate) fn query(&self, sql: &str, timeout: Option<Duration>) -> Result<String, StoreError> {
        let limit = timeout.unwrap_or(self.timeout);
        let url = format!(
            "{}/?max_query_size={MAX_QUERY_BYTES}&insert_distributed_sync=1&max_execution_time={}",
            self.url,
            limit.as_secs().max(1)
        );
        self.send(&url, sql.as_bytes(), limit)
    }

    /// Inserts `body` (rows in `format`) into `table` (`db.name (cols)`).
    pub(crate) fn insert(
        &self,
        table: &str,
        format: &str,
        body: Vec<u8>,
    ) -> Result<(), StoreError> {
        let query = format!("INSERT INTO {table} FORMAT {format}");
        let url = format!(
            "{}/?insert_distributed_sync=1&query={}",
            self.url,
            percent_encode(&query)
        );
        self.send(&url, &body, self.timeout).map(drop)
    }

    fn send(&self, url: &str, body: &[u8], timeout: Duration) -> Result<String, StoreError> {
        let result = self
            .agent
            .post(url)
            .header("X-ClickHouse-User", &self.user)
            .header("X-ClickHouse-Key", &self.password)
            .config()
            .timeout_global(Some(timeout + Duration::from_secs(1)))
            .build()
            .send(body);
        let mut resp = result.map_err(|e| unavailable(&self.url, e))?;
        let status = resp.status();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(|e| unavailable(&self.url, e))?;
        if status.is_success() {
            return Ok(text);
        }
        Err(server_error(&text, status.as_u16()))
    }
}

/// `application/x-www-form-urlencoded`-safe text for a URL parameter.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unavailable(url: &str, e: ureq::Error) -> StoreError {
    let what = match &e {
        ureq::Error::Timeout(_) => "timed out".to_string(),
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => "cannot connect".to_string(),
        ureq::Error::Io(io) => format!("cannot connect: {io}"),
        e => format!("request failed: {e}"),
    };
    StoreError::Unavailable(format!("ClickHouse at {url} {what}"))
}

/// Turns ClickHouse's error text (`Code: 60, e.displayText() = DB::Exception: ...` in
/// 18.16, `Code: 60. DB::Exception: ...` later) into a typed error.
fn server_error(text: &str, status: u16) -> StoreError {
    let line = text.lines().next().unwrap_or("").trim();
    let code = line
        .strip_prefix("Code: ")
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u32>().ok());
    let mut message = line
        .split("DB::Exception: ")
        .nth(1)
        .unwrap_or(line)
        .trim_end_matches(", e.what() = DB::Exception")
        .to_string();
    if message.is_empty() {
        message = format!("HTTP {status}");
    }
    if message.len() > 500 {
        let mut cut = 500;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    // Overload and timeouts on the server side may pass; everything else is a refusal.
    match code {
        Some(159 | 160 | 202 | 209 | 210 | 241 | 279) => {
            StoreError::Unavailable(format!("ClickHouse: {message}"))
        }
        _ => StoreError::ClickHouse { code, message },
    }
}

/// A string as a quoted SQL literal.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A string as a TabSeparated field.
pub(crate) fn tsv_field(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
}

/// A TabSeparated field back to its string.
pub(crate) fn tsv_unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The rows of TabSeparated output, each split into fields (still escaped). A
/// `WITH TOTALS` answer's totals row follows an empty line: it is returned second.
pub(crate) fn rows(text: &str) -> (Vec<Vec<&str>>, Option<Vec<&str>>) {
    let mut body = Vec::new();
    let mut totals = None;
    let mut after_blank = false;
    for line in text.lines() {
        if line.is_empty() {
            after_blank = true;
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if after_blank {
            totals = Some(fields);
        } else {
            body.push(fields);
        }
    }
    (body, totals)
}

/// A numeric field, or a corrupt-row error naming `what`.
pub(crate) fn num<T: std::str::FromStr>(field: Option<&&str>, what: &str) -> Result<T, StoreError> {
    field
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("ClickHouse answered a bad {what}: {field:?}")))
}

/// `a,b,c` of unsigned integers, for `IN (...)`.
pub(crate) fn id_list(ids: impl IntoIterator<Item = u64>) -> String {
    let mut s = String::new();
    for (i, id) in ids.into_iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{id}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_fields_escape_what_clickhouse_reads_specially() {
        assert_eq!(quote("a'b\\c\nd"), "'a\\'b\\\\c\\nd'");
        let mut f = String::new();
        tsv_field(&mut f, "x\ty\\z\n");
        assert_eq!(f, "x\\ty\\\\z\\n");
        assert_eq!(tsv_unescape(&f), "x\ty\\z\n");
    }

    #[test]
    fn errors_of_old_and_new_clickhouse_parse() {
        let old = "Code: 60, e.displayText() = DB::Exception: Table sw.x doesn't exist., e.what() = DB::Exception\n";
        match server_error(old, 404) {
            StoreError::ClickHouse { code, message } => {
                assert_eq!(code, Some(60));
                assert_eq!(message, "Table sw.x doesn't exist.");
            }
            e => panic!("{e:?}"),
        }
        let new =
            "Code: 516. DB::Exception: default: Authentication failed. (AUTHENTICATION_FAILED)";
        assert!(matches!(
            server_error(new, 401),
            StoreError::ClickHouse {
                code: Some(516),
                ..
            }
        ));
        assert!(server_error(
            "Code: 159, e.displayText() = DB::Exception: Timeout exceeded",
            500
        )
        .is_transient());
    }

    #[test]
    fn totals_follow_a_blank_line() {
        let (rows, totals) = rows("5\t10\n6\t3\n\n0\t13\n");
        assert_eq!(rows, vec![vec!["5", "10"], vec!["6", "3"]]);
        assert_eq!(totals, Some(vec!["0", "13"]));
    }
}
