//! The stackwatch dashboard's files, embedded at build time: `index.html`, `style.css`
//! and the JavaScript modules beside this file (native ES modules, loaded by the browser
//! as they are: no bundler, no build step, no CDN). The collector serves them; this
//! crate only holds them, so the page can be packaged and changed apart from the server.
//!
//! `main.js` is the entry point; each view (Fleet, Explore, Compare) and each shared
//! piece (DOM building, API access, routing, formatting, selectors, charts) is a module
//! of its own that imports only what it uses.

/// One file of the dashboard.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The URL path it is served at (`/`, `/assets/main.js`).
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its text.
    pub body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

macro_rules! assets {
    ($(($path:literal, $file:literal, $ty:expr)),* $(,)?) => {
        /// Every file of the dashboard, the page first.
        pub const ASSETS: &[Asset] = &[
            $(Asset { path: $path, content_type: $ty, body: include_str!($file) },)*
        ];
        /// The paths of [`ASSETS`]: the page and its code, which load without a token
        /// (they hold no data; the page asks for a token when the API answers 401).
        pub const PATHS: &[&str] = &[$($path,)*];
    };
}

assets![
    ("/", "index.html", HTML),
    ("/assets/style.css", "style.css", CSS),
    ("/assets/main.js", "main.js", JS),
    ("/assets/dom.js", "dom.js", JS),
    ("/assets/api.js", "api.js", JS),
    ("/assets/route.js", "route.js", JS),
    ("/assets/format.js", "format.js", JS),
    ("/assets/selector.js", "selector.js", JS),
    ("/assets/chart.js", "chart.js", JS),
    ("/assets/panels.js", "panels.js", JS),
    ("/assets/fleet.js", "fleet.js", JS),
    ("/assets/explore.js", "explore.js", JS),
    ("/assets/compare.js", "compare.js", JS),
];

/// The file served at `path`, if the dashboard has one.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn file_name(a: &Asset) -> &str {
        match a.path {
            "/" => "index.html",
            p => p.strip_prefix("/assets/").unwrap(),
        }
    }

    #[test]
    fn every_file_beside_the_manifest_is_served_and_nothing_else() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".js") || n.ends_with(".css") || n.ends_with(".html"))
            .collect();
        let served: BTreeSet<String> = ASSETS.iter().map(|a| file_name(a).to_owned()).collect();
        assert_eq!(on_disk, served);
        for a in ASSETS {
            let text = std::fs::read_to_string(dir.join(file_name(a))).unwrap();
            assert_eq!(text, a.body, "{}", a.path);
        }
    }

    #[test]
    fn every_module_import_names_a_served_module() {
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            for line in a.body.lines().filter(|l| l.starts_with("import ")) {
                let from = line
                    .split(" from ")
                    .nth(1)
                    .and_then(|s| s.trim().trim_end_matches(';').strip_prefix("'./"))
                    .and_then(|s| s.strip_suffix('\''))
                    .unwrap_or_else(|| panic!("{}: an import not of './x.js': {line}", a.path));
                assert!(
                    asset(&format!("/assets/{from}")).is_some(),
                    "{} imports {from}, which is not served",
                    a.path
                );
            }
        }
        // And they import one way: no module imports, through others, one that imports it.
        let imports = |path: &str| -> Vec<String> {
            asset(path)
                .unwrap()
                .body
                .lines()
                .filter(|l| l.starts_with("import "))
                .filter_map(|l| l.split("'./").nth(1))
                .map(|s| format!("/assets/{}", s.trim_end_matches("';")))
                .collect()
        };
        fn visit(
            path: &str,
            imports: &dyn Fn(&str) -> Vec<String>,
            stack: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) {
            if done.contains(path) {
                return;
            }
            assert!(
                !stack.iter().any(|p| p == path),
                "import cycle: {stack:?} -> {path}"
            );
            stack.push(path.to_owned());
            for next in imports(path) {
                visit(&next, imports, stack, done);
            }
            stack.pop();
            done.insert(path.to_owned());
        }
        let mut done = BTreeSet::new();
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            visit(a.path, &imports, &mut Vec::new(), &mut done);
        }
        let page = asset("/").unwrap().body;
        assert!(page.contains(r#"<script type="module" src="/assets/main.js">"#));
    }

    #[test]
    fn paths_and_types_agree() {
        assert_eq!(PATHS.len(), ASSETS.len());
        for (p, a) in PATHS.iter().zip(ASSETS) {
            assert_eq!(*p, a.path);
            let ext = file_name(a).rsplit('.').next().unwrap();
            let want = match ext {
                "html" => HTML,
                "css" => CSS,
                _ => JS,
            };
            assert_eq!(a.content_type, want, "{}", a.path);
        }
        assert!(asset("/assets/app.js").is_none());
        assert!(asset("/assets/../lib.rs").is_none());
    }
}
