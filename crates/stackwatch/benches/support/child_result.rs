// The protocol between a bench and the child processes it runs (`overhead.rs`,
// `debuginfo_rss.rs`): the child prints one line `RESULT <field> <field> ...` on stdout.

/// The fields of the `RESULT` line `out` printed; a child that printed none failed, and
/// the panic names `what` and shows its stderr.
fn result_fields(out: &std::process::Output, what: &str) -> Vec<String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("{what} failed: {}", String::from_utf8_lossy(&out.stderr)));
    line.split_whitespace().skip(1).map(str::to_owned).collect()
}
