//! No module of any crate in the workspace uses, directly or through others, a module
//! that uses it: inside every crate the imports form a one-way chain (issue 27).
//!
//! The graph is read from the sources, not from the compiler: an edge A -> B is any path
//! in A's file (outside its `#[cfg(test)] mod tests`, `#[cfg(all(test, ..))]` too) that names an item of B, written as
//! a `use` tree (`use crate::{a, b::{c, d}}`), inline (`crate::analysis::series_unit(..)`),
//! relative (`super::x`, `self::child::y`) or by a child module's bare name (`gate::X` in
//! the file that declares `mod gate`). Declaring `mod child;` is not an edge; a crate's root
//! file (lib.rs, main.rs: the facade that re-exports) is left out. The failure names every
//! cycle and, for each of its edges, the line that makes it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

/// One module: its path in the crate (`push::gate`) and its source without comments or
/// unit tests.
struct Module {
    file: PathBuf,
    text: String,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every crate's `src/` in the workspace.
fn crate_sources() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for parent in ["crates", "examples"] {
        let Ok(dir) = std::fs::read_dir(workspace().join(parent)) else {
            continue;
        };
        for e in dir.flatten() {
            let src = e.path().join("src");
            if src.is_dir() {
                out.push(src);
            }
        }
    }
    out.sort();
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            // src/bin holds binaries, each a crate of its own.
            if p.file_name().is_some_and(|n| n != "bin") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file under `src` ("" for the crate root).
fn module_path(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("lib" | "main" | "mod")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The source without `//` comments, block comments and the unit tests at its end.
fn code_of(text: &str) -> String {
    // `#[cfg(test)]`, or `#[cfg(all(test, ...))]`, before `mod tests`.
    let tests = Regex::new(r"#\[cfg\([^\]]*\btest\b[^\]]*\)\]\s*mod tests\b").unwrap();
    let cut = tests.find(text).map_or(text, |m| &text[..m.start()]);
    let no_blocks = Regex::new(r"(?s)/\*.*?\*/").unwrap().replace_all(cut, "");
    no_blocks
        .lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `use` trees flattened: `crate::{a, b::{c, d}}` -> `crate::a`, `crate::b::c`,
/// `crate::b::d`, each with the offset of its `use` in `code`.
fn flatten_use_trees(code: &str) -> Vec<(usize, String)> {
    fn walk(prefix: &str, body: &str, out: &mut Vec<String>) {
        let (mut depth, mut start) = (0usize, 0usize);
        let mut parts = Vec::new();
        for (i, ch) in body.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    parts.push(&body[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&body[start..]);
        for part in parts {
            let part = part.split(" as ").next().unwrap_or(part);
            let part: String = part.split_whitespace().collect();
            if part.is_empty() {
                continue;
            }
            match (part.find("::{"), part.ends_with('}')) {
                (Some(i), true) => walk(
                    &format!("{prefix}{}::", &part[..i]),
                    &part[i + 3..part.len() - 1],
                    out,
                ),
                _ => out.push(format!("{prefix}{part}")),
            }
        }
    }
    let uses = Regex::new(r"(?s)\buse\s+([^;]*);").unwrap();
    let mut out = Vec::new();
    for c in uses.captures_iter(code) {
        let at = c.get(0).unwrap().start();
        let tree = c[1].trim();
        let mut paths = Vec::new();
        match tree.strip_prefix('{') {
            Some(inner) => walk("", inner.strip_suffix('}').unwrap_or(inner), &mut paths),
            None => walk("", tree, &mut paths),
        }
        out.extend(paths.into_iter().map(|p| (at, p)));
    }
    out
}

/// The inline modules of a file (`mod json { .. }`): name and byte range, in order.
fn inline_modules(code: &str) -> Vec<(String, std::ops::Range<usize>)> {
    let open = Regex::new(r"\bmod\s+(\w+)\s*\{").unwrap();
    let mut out = Vec::new();
    for c in open.captures_iter(code) {
        let start = c.get(0).unwrap().end();
        let mut depth = 1usize;
        let mut end = code.len();
        for (i, ch) in code[start..].char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = start + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.push((c[1].to_string(), start..end));
    }
    out
}

/// The modules of one crate and the edges between them, each with the line that makes it.
type Edges = BTreeMap<String, BTreeMap<String, String>>;

fn graph(src: &Path) -> (BTreeMap<String, Module>, Edges) {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<String, Module> = files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            (
                module_path(src, &f),
                Module {
                    file: f,
                    text: code_of(&text),
                },
            )
        })
        .collect();
    let path_re = Regex::new(r"\b(crate|super|self)((?:::\w+)+)").unwrap();
    let mut edges: Edges = BTreeMap::new();
    for (name, m) in &modules {
        if name.is_empty() {
            continue;
        }
        let here: Vec<&str> = name.split("::").collect();
        let inline = inline_modules(&m.text);
        let children: Vec<&String> = modules
            .keys()
            .filter(|k| {
                k.strip_prefix(&format!("{name}::"))
                    .is_some_and(|rest| !rest.contains("::"))
            })
            .collect();
        // (offset, path) of every reference.
        let mut paths: Vec<(usize, String)> = flatten_use_trees(&m.text);
        paths.extend(
            path_re
                .find_iter(&m.text)
                .map(|x| (x.start(), x.as_str().to_string())),
        );
        for child in &children {
            let bare = child.rsplit("::").next().unwrap();
            let re = Regex::new(&format!(r"(?:^|[^:\w])({bare}::\w)")).unwrap();
            if let Some(c) = re.captures(&m.text) {
                paths.push((c.get(1).unwrap().start(), format!("self::{bare}::x")));
            }
        }
        for (at, p) in paths {
            // The module the reference is written in: the file's, or an inline one in it.
            let mut scope = here.clone();
            scope.extend(
                inline
                    .iter()
                    .filter(|(_, r)| r.contains(&at))
                    .map(|(n, _)| n.as_str()),
            );
            let segs: Vec<&str> = p.split("::").collect();
            let mut base: Vec<&str> = match segs[0] {
                "crate" => vec![],
                "self" => scope.clone(),
                "super" => scope[..scope.len() - 1].to_vec(),
                _ => continue,
            };
            let mut rest = &segs[1..];
            while rest.first() == Some(&"super") {
                base.pop();
                rest = &rest[1..];
            }
            // The longest prefix that names a module.
            let target = (0..=rest.len()).rev().find_map(|k| {
                let mut cand = base.clone();
                cand.extend_from_slice(&rest[..k]);
                let cand = cand.join("::");
                modules.contains_key(&cand).then_some(cand)
            });
            let Some(target) = target else { continue };
            if target.is_empty() || target == *name {
                continue;
            }
            let line_start = m.text[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = m.text[at..].find('\n').map_or(m.text.len(), |i| at + i);
            let line = m.text[line_start..line_end].trim().to_string();
            edges
                .entry(name.clone())
                .or_default()
                .entry(target)
                .or_insert(line);
        }
    }
    (modules, edges)
}

/// Strongly connected components of more than one module (Tarjan).
fn cycles(nodes: &BTreeSet<String>, edges: &Edges) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        edges: &'a Edges,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            if let Some(next) = self.edges.get(v) {
                for w in next.keys() {
                    if !self.index.contains_key(w.as_str()) {
                        self.visit(w);
                        let lw = self.low[w.as_str()];
                        let lv = self.low.get_mut(v).unwrap();
                        *lv = (*lv).min(lw);
                    } else if self.on_stack.contains(w.as_str()) {
                        let iw = self.index[w.as_str()];
                        let lv = self.low.get_mut(v).unwrap();
                        *lv = (*lv).min(iw);
                    }
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    comp.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for n in nodes {
        if !t.index.contains_key(n.as_str()) {
            t.visit(n);
        }
    }
    t.out
}

#[test]
fn no_module_of_any_crate_is_in_an_import_cycle() {
    let mut report = String::new();
    let mut crates = 0;
    for src in crate_sources() {
        crates += 1;
        let (modules, edges) = graph(&src);
        let nodes: BTreeSet<String> = modules.keys().filter(|k| !k.is_empty()).cloned().collect();
        for comp in cycles(&nodes, &edges) {
            report.push_str(&format!("\n{}: cycle {comp:?}\n", src.display()));
            for a in &comp {
                for (b, line) in edges.get(a).into_iter().flatten() {
                    if comp.contains(b) {
                        report.push_str(&format!(
                            "  {a} -> {b}   ({}: {line})\n",
                            modules[a].file.file_name().unwrap().to_string_lossy()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        crates >= 6,
        "found only {crates} crates under crates/ and examples/"
    );
    assert!(report.is_empty(), "modules that import each other:{report}");
}

/// Every source file opens with what it owns: a `//!` comment in Rust (a module's or a
/// binary's documentation), a `//` comment in the dashboard's scripts.
#[test]
fn every_source_file_says_its_job_first() {
    let mut files = Vec::new();
    for src in crate_sources() {
        rust_files(&src, &mut files);
        if let Ok(bins) = std::fs::read_dir(src.join("bin")) {
            files.extend(bins.flatten().map(|e| e.path()));
        }
    }
    let web = workspace().join("web");
    files.extend(
        std::fs::read_dir(&web)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs" || x == "js")),
    );
    assert!(files.len() > 100, "found only {} source files", files.len());
    let silent: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let first = text.lines().next().unwrap_or("");
            let opener = if f.extension().is_some_and(|x| x == "js") {
                "// "
            } else {
                "//! "
            };
            !first.starts_with(opener) || first.len() < opener.len() + 10
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        silent.is_empty(),
        "files that do not open with a comment saying what they own: {silent:#?}"
    );
}

#[test]
fn the_checker_sees_each_way_of_naming_a_module() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("push")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a; mod b; mod push;\n").unwrap();
    // a -> b through a use tree; b -> a inline.
    std::fs::write(src.join("a.rs"), "use crate::{b::{Thing}, push};\n").unwrap();
    std::fs::write(
        src.join("b.rs"),
        "pub fn f() { crate::a::g() } // crate::push::x is a comment\n",
    )
    .unwrap();
    // push -> push::gate by a bare child name; push::gate -> push by super.
    std::fs::write(
        src.join("push/mod.rs"),
        "mod gate;\nmod otlp;\nfn f() { gate::admit() }\n",
    )
    .unwrap();
    std::fs::write(
        src.join("push/gate.rs"),
        "use super::Budget;\n#[cfg(all(test, unix))]\nmod tests {\n    use crate::a::X;\n}\n",
    )
    .unwrap();
    // An inline module's `super` is the file's module: no edge from push::otlp to push.
    std::fs::write(
        src.join("push/otlp.rs"),
        "mod json {\n    use super::Thing;\n}\n",
    )
    .unwrap();
    let (modules, edges) = graph(&src);
    let nodes: BTreeSet<String> = modules.keys().filter(|k| !k.is_empty()).cloned().collect();
    let mut found = cycles(&nodes, &edges);
    found.sort();
    assert_eq!(
        found,
        vec![
            vec!["a".to_string(), "b".to_string()],
            vec!["push".to_string(), "push::gate".to_string()]
        ]
    );
    // The comment in b.rs made no edge to push.
    assert!(!edges["b"].contains_key("push"));
    assert!(!edges.contains_key("push::otlp"), "{edges:?}");
    // Unit tests may use anything: push::gate's made no edge to a.
    assert!(!edges["push::gate"].contains_key("a"), "{edges:?}");
}
