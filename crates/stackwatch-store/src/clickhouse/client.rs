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
    http: reqwest::blocking::Client,
    url: reqwest::Url,
    user: String,
    password: String,
}

/// Largest statement text sent (target lists are inlined); ClickHouse's own default
/// `max_query_size` is 256 KiB, so each statement raises it to this.
const MAX_QUERY_BYTES: usize = 64 << 20;

impl Client {
    /// A client for the node at `url` (`http://host:8123`).
    pub(crate) fn new(
        url: &str,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<Client, StoreError> {
        let url = reqwest::Url::parse(url).map_err(|e| StoreError::Config {
            key: "url",
            why: format!("{url:?} is not a URL: {e}"),
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(StoreError::Config {
                key: "url",
                why: format!("{url} is not an http:// URL of ClickHouse's HTTP interface"),
            });
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(8)
            .build()
            .map_err(|e| StoreError::Unavailable(format!("HTTP client: {e}")))?;
        Ok(Client {
            http,
            url,
            user: user.to_string(),
            password: password.to_string(),
        })
    }

    /// Runs `sql` and returns its TabSeparated output. `timeout` bounds the request
    /// and, as `max_execution_time`, the statement inside ClickHouse.
    pub(crate) fn query(&self, sql: &str, timeout: Option<Duration>) -> Result<String, StoreError> {
        let mut url = self.url.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("max_query_size", &MAX_QUERY_BYTES.to_string());
            q.append_pair("insert_distributed_sync", "1");
            if let Some(t) = timeout {
                q.append_pair("max_execution_time", &t.as_secs().max(1).to_string());
            }
        }
        self.send(url, sql.as_bytes().to_vec(), timeout)
    }

    /// Inserts `body` (rows in `format`) into `table` (`db.name (cols)`).
    pub(crate) fn insert(
        &self,
        table: &str,
        format: &str,
        body: Vec<u8>,
    ) -> Result<(), StoreError> {
        let mut url = self.url.clone();
        url.query_pairs_mut()
            .append_pair("query", &format!("INSERT INTO {table} FORMAT {format}"))
            .append_pair("insert_distributed_sync", "1");
        self.send(url, body, None).map(drop)
    }

    fn send(
        &self,
        url: reqwest::Url,
        body: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<String, StoreError> {
        let mut req = self
            .http
            .post(url)
            .header("X-ClickHouse-User", &self.user)
            .header("X-ClickHouse-Key", &self.password)
            .body(body);
        if let Some(t) = timeout {
            req = req.timeout(t + Duration::from_secs(1));
        }
        let resp = req.send().map_err(|e| unavailable(&self.url, e))?;
        let status = resp.status();
        let text = resp.text().map_err(|e| unavailable(&self.url, e))?;
        if status.is_success() {
            return Ok(text);
        }
        Err(server_error(&text, status))
    }
}

fn unavailable(url: &reqwest::Url, e: reqwest::Error) -> StoreError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // The error's own text repeats the URL; the source says why.
    let mut why = String::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(s) = src {
        why = s.to_string();
        src = s.source();
    }
    StoreError::Unavailable(format!("ClickHouse at {url} {what}: {why}"))
}

/// Turns ClickHouse's error text (`Code: 60, e.displayText() = DB::Exception: ...` in
/// 18.16, `Code: 60. DB::Exception: ...` later) into a typed error.
fn server_error(text: &str, status: reqwest::StatusCode) -> StoreError {
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
        match server_error(old, reqwest::StatusCode::NOT_FOUND) {
            StoreError::ClickHouse { code, message } => {
                assert_eq!(code, Some(60));
                assert_eq!(message, "Table sw.x doesn't exist.");
            }
            e => panic!("{e:?}"),
        }
        let new =
            "Code: 516. DB::Exception: default: Authentication failed. (AUTHENTICATION_FAILED)";
        assert!(matches!(
            server_error(new, reqwest::StatusCode::UNAUTHORIZED),
            StoreError::ClickHouse {
                code: Some(516),
                ..
            }
        ));
        assert!(server_error(
            "Code: 159, e.displayText() = DB::Exception: Timeout exceeded",
            reqwest::StatusCode::INTERNAL_SERVER_ERROR
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
