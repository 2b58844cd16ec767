//! The Prometheus text exposition format (version 0.0.4): families with `# HELP` and
//! `# TYPE`, samples with escaped label values.

use std::fmt::Write;

/// The content type of the text this writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// A metrics page being written.
#[derive(Debug, Default)]
pub struct MetricsText {
    out: String,
}

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (resets with the process).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

impl MetricKind {
    fn name(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

impl MetricsText {
    /// An empty page.
    pub fn new() -> Self {
        MetricsText::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: MetricKind, help: &str) -> &mut Self {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(
            self.out,
            "# HELP {name} {help}\n# TYPE {name} {}",
            kind.name()
        );
        self
    }

    /// One sample of the current family. Label names that are not valid Prometheus
    /// names are left out; values are escaped.
    pub fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl std::fmt::Display,
    ) -> &mut Self {
        self.out.push_str(name);
        let mut first = true;
        for (k, v) in labels {
            if !valid_label_name(k) {
                continue;
            }
            self.out.push(if first { '{' } else { ',' });
            first = false;
            let _ = write!(self.out, "{k}=\"{}\"", escape_label_value(v));
        }
        if !first {
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// A family with one unlabelled sample.
    pub fn single(
        &mut self,
        name: &str,
        kind: MetricKind,
        help: &str,
        value: impl std::fmt::Display,
    ) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// Appends text already in the format (another component's metrics).
    pub fn append_raw(&mut self, text: &str) -> &mut Self {
        self.out.push_str(text);
        if !text.is_empty() && !text.ends_with('\n') {
            self.out.push('\n');
        }
        self
    }

    /// The page.
    pub fn finish(self) -> String {
        self.out
    }
}

fn valid_label_name(k: &str) -> bool {
    let mut chars = k.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn escape_label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaping() {
        let mut m = MetricsText::new();
        m.family("x_total", MetricKind::Counter, "Things.").sample(
            "x_total",
            &[("url", "http://a\"b\\\n"), ("bad-name", "v"), ("k", "v")],
            3,
        );
        m.single("y", MetricKind::Gauge, "Y.", 1.5);
        assert_eq!(
            m.finish(),
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{url=\"http://a\\\"b\\\\\\n\",k=\"v\"} 3\n# HELP y Y.\n# TYPE y gauge\ny 1.5\n"
        );
    }
}
