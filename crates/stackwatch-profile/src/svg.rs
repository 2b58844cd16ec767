//! Flamegraph and differential flamegraph SVGs, laid out by inferno.
//!
//! Frame names are untrusted (they come from workers); inferno writes them through an XML
//! writer that escapes `<`, `>`, `&` and quotes, and the tests here check that.
//!
//! Readability on top of inferno's layout ([`readable`]): a frame too narrow for its full
//! name shows a shorter display name ([`display_name`]: generic arguments and module paths
//! dropped before anything is cut), the full name staying in the frame's `<title>`
//! tooltip; the root frame is labelled (inferno leaves it blank). The same rule runs in
//! the SVG's script when a click zooms, so zoomed frames get the same names.

use std::io::BufReader;

use crate::Profile;

/// How to draw a flamegraph. Plain struct with sensible defaults, as inferno's own options.
#[derive(Debug, Clone)]
pub struct SvgOptions {
    /// Title drawn on top.
    pub title: String,
    /// Optional second line (for instance the time span or label selector).
    pub subtitle: Option<String>,
    /// Name of what the widths count, shown in tooltips.
    pub count_name: String,
    /// Draw top-down (an icicle graph) instead of bottom-up.
    pub icicle: bool,
    /// Hide frames narrower than this many pixels (keeps huge profiles small).
    pub min_width: f64,
    /// Fixed width in pixels; `None` lets the SVG fill its container.
    pub image_width: Option<usize>,
    /// The root frame's label (inferno leaves the root blank); its tooltip adds the
    /// total, e.g. `all (4,222 samples)`.
    pub root_label: String,
}

impl Default for SvgOptions {
    fn default() -> Self {
        SvgOptions {
            title: "CPU flamegraph".to_owned(),
            subtitle: None,
            count_name: "samples".to_owned(),
            icicle: false,
            min_width: 0.1,
            image_width: None,
            root_label: "all".to_owned(),
        }
    }
}

impl SvgOptions {
    fn to_inferno(&self) -> inferno::flamegraph::Options<'static> {
        let mut o = inferno::flamegraph::Options::default();
        o.title = self.title.clone();
        o.subtitle = self.subtitle.clone();
        o.count_name = self.count_name.clone();
        o.min_width = self.min_width;
        o.image_width = self.image_width;
        o.hash = true;
        if self.icicle {
            o.direction = inferno::flamegraph::Direction::Inverted;
        }
        o
    }
}

/// Renders `profile` as an SVG flamegraph. An empty profile gives a valid SVG that says so.
pub fn render(profile: &Profile, opts: &SvgOptions) -> Vec<u8> {
    if profile.total() == 0 {
        return empty_svg(opts);
    }
    let folded = profile.to_folded();
    let mut out = Vec::with_capacity(64 * 1024 + folded.len());
    let mut o = opts.to_inferno();
    // inferno reports "no stack counts" as an error after writing a complete SVG that
    // shows the message; that SVG is what we want for an empty window.
    let _ = inferno::flamegraph::from_lines(&mut o, folded.lines(), &mut out);
    readable(out, opts)
}

/// Renders a differential flamegraph: widths are `target`, colour is the change from
/// `base` (red grew, blue shrank). `base` is scaled to `target`'s total first, so spans of
/// different length or load compare fairly.
pub fn render_diff(base: &Profile, target: &Profile, opts: &SvgOptions) -> Vec<u8> {
    render_diff_with(base, target, opts, true)
}

/// [`render_diff`], choosing whether `base` is scaled to `target`'s total (`normalize`:
/// colours show the change in share) or compared as it is (colours show the change in
/// absolute periods).
pub fn render_diff_with(
    base: &Profile,
    target: &Profile,
    opts: &SvgOptions,
    normalize: bool,
) -> Vec<u8> {
    if target.total() == 0 {
        return empty_svg(opts);
    }
    let folded = diff_folded_with(base, target, normalize);
    let mut out = Vec::with_capacity(64 * 1024 + folded.len());
    let mut o = opts.to_inferno();
    let _ = inferno::flamegraph::from_lines(&mut o, folded.lines(), &mut out);
    readable(out, opts)
}

/// A small SVG saying there is nothing to draw. (inferno's own error SVG keeps an
/// `onload` handler without its script, which raises an error in a browser.)
fn empty_svg(opts: &SvgOptions) -> Vec<u8> {
    let esc = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;")
    };
    let subtitle = opts.subtitle.as_deref().map(esc).unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg version=\"1.1\" width=\"1200\" height=\"120\" viewBox=\"0 0 1200 120\" xmlns=\"http://www.w3.org/2000/svg\">\
         <rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#f8f8f8\"/>\
         <text id=\"title\" x=\"600\" y=\"30\" text-anchor=\"middle\" font-family=\"monospace\" font-size=\"17\">{}</text>\
         <text x=\"600\" y=\"55\" text-anchor=\"middle\" font-family=\"monospace\" font-size=\"12\">{}</text>\
         <text id=\"empty\" x=\"600\" y=\"90\" text-anchor=\"middle\" font-family=\"monospace\" font-size=\"14\">No samples in this selection</text>\
         </svg>\n",
        esc(&opts.title),
        subtitle
    )
    .into_bytes()
}

/// The two-column folded text (`stack base_count target_count`) behind
/// [`render_diff`], with `base` normalised to `target`'s total.
pub fn diff_folded(base: &Profile, target: &Profile) -> String {
    diff_folded_with(base, target, true)
}

/// [`diff_folded`], with `base` scaled to `target`'s total only when `normalize`.
pub fn diff_folded_with(base: &Profile, target: &Profile, normalize: bool) -> String {
    let before = base.to_folded();
    let after = target.to_folded();
    let mut out = Vec::with_capacity(before.len() + after.len());
    let opts = inferno::differential::Options {
        normalize,
        strip_hex: false,
    };
    inferno::differential::from_readers(
        opts,
        BufReader::new(before.as_bytes()),
        BufReader::new(after.as_bytes()),
        &mut out,
    )
    .expect("folded text written by Profile::to_folded is well formed and Vec writes cannot fail");
    String::from_utf8(out).expect("inferno writes back the UTF-8 it was given")
}

/// inferno's padding left and right of the frames, in pixels.
const XPAD: f64 = 10.0;
/// Average character width of inferno's monospace font, in font sizes (a little above
/// the 0.6 of DejaVu Sans Mono and Liberation Mono, so a name said to fit does).
const CHAR_WIDTH: f64 = 0.61;
/// Font size of frame names (inferno's default).
const FONT_SIZE: f64 = 12.0;

/// The name shown in a frame `fit` characters wide: the full name when it fits, else the
/// first that fits of: without generic arguments, the last two path segments, the last
/// one; else the shortest of those cut with `..`; nothing below 3 characters. The SVG's
/// script ([`READABLE_JS`]) applies the same rule when a click zooms.
pub fn display_name(name: &str, fit: usize) -> String {
    if fit < 3 {
        return String::new();
    }
    let fits = |s: &str| s.chars().count() <= fit;
    if fits(name) {
        return name.to_owned();
    }
    let plain = strip_generics(name);
    let candidates = [short_path(&plain, 2), short_path(&plain, 1)];
    if fits(&plain) {
        return plain;
    }
    for c in &candidates {
        if fits(c) {
            return c.clone();
        }
    }
    let mut cut: String = candidates[1].chars().take(fit - 2).collect();
    cut.push_str("..");
    cut
}

/// `alloc::raw_vec::RawVec<T,A>::grow_one` -> `alloc::raw_vec::RawVec::grow_one`: drops
/// every `<...>` that follows a name (a leading `<Type as Trait>` stays).
fn strip_generics(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut depth = 0usize;
    let mut prev: Option<char> = None;
    for c in name.chars() {
        if depth > 0 {
            match c {
                '<' => depth += 1,
                '>' => depth -= 1,
                _ => {}
            }
            continue;
        }
        if c == '<' && prev.is_some_and(|p| p.is_alphanumeric() || p == '_') {
            depth = 1;
            continue;
        }
        out.push(c);
        prev = Some(c);
    }
    out
}

/// The last `keep` segments of a `::` path (outside any `<...>`).
fn path_tail(path: &str, keep: usize) -> &str {
    let mut depth = 0i32;
    let mut cuts = Vec::new();
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'<' => depth += 1,
            b'>' => depth -= 1,
            b':' if depth == 0 && b.get(i + 1) == Some(&b':') => {
                cuts.push(i + 2);
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    if cuts.len() < keep {
        path
    } else {
        &path[cuts[cuts.len() - keep]..]
    }
}

/// `<a::b::Type as c::Trait>::method` keeps `keep` segments of each path:
/// `<b::Type as c::Trait>::method` (2), `Type::method` (1); a plain path keeps its last
/// `keep` segments.
fn short_path(name: &str, keep: usize) -> String {
    if let Some(inner_start) = name.strip_prefix('<') {
        let mut depth = 1i32;
        for (i, c) in inner_start.char_indices() {
            match c {
                '<' => depth += 1,
                '>' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                let inner = &inner_start[..i];
                let rest = &inner_start[i + 1..];
                let (ty, tr) = match inner.split_once(" as ") {
                    Some((ty, tr)) => (ty, Some(tr)),
                    None => (inner, None),
                };
                return match tr {
                    Some(tr) if keep >= 2 => format!(
                        "<{} as {}>{}",
                        path_tail(ty, keep),
                        path_tail(tr, keep),
                        rest
                    ),
                    _ => format!("{}{}", path_tail(ty, 1), rest),
                };
            }
        }
    }
    path_tail(name, keep).to_owned()
}

/// The script that makes zoomed frames use [`display_name`] (it replaces inferno's
/// text fitting; a later script's functions take the place of the earlier ones), and
/// keeps events away from inferno's handlers until its `init` has run.
const READABLE_JS: &str = r#"
// inferno's handlers use what init() sets up when the SVG has loaded: a pointer moving
// over a frame that is still loading must not reach them (it threw on `details`).
["click", "mouseover", "mouseout"].forEach(function(type) {
    window.addEventListener(type, function(e) {
        if (typeof details === "undefined" || !details) e.stopImmediatePropagation();
    }, true);
});
function sw_strip_generics(s) {
    var out = "", depth = 0, prev = "";
    for (var i = 0; i < s.length; i++) {
        var c = s[i];
        if (depth > 0) { if (c == "<") depth++; else if (c == ">") depth--; continue; }
        if (c == "<" && /[\p{L}\p{N}_]/u.test(prev)) { depth = 1; continue; }
        out += c; prev = c;
    }
    return out;
}
function sw_path_tail(p, keep) {
    var depth = 0, cuts = [];
    for (var i = 0; i < p.length; i++) {
        var c = p[i];
        if (c == "<") depth++;
        else if (c == ">") depth--;
        else if (c == ":" && depth == 0 && p[i + 1] == ":") { cuts.push(i + 2); i++; }
    }
    return cuts.length < keep ? p : p.substring(cuts[cuts.length - keep]);
}
function sw_short_path(s, keep) {
    if (s[0] == "<") {
        var depth = 1;
        for (var i = 1; i < s.length; i++) {
            if (s[i] == "<") depth++; else if (s[i] == ">") depth--;
            if (depth == 0) {
                var inner = s.substring(1, i), rest = s.substring(i + 1);
                var k = inner.indexOf(" as ");
                var ty = k < 0 ? inner : inner.substring(0, k);
                if (k >= 0 && keep >= 2) return "<" + sw_path_tail(ty, keep) + " as " + sw_path_tail(inner.substring(k + 4), keep) + ">" + rest;
                return sw_path_tail(ty, 1) + rest;
            }
        }
    }
    return sw_path_tail(s, keep);
}
function sw_display_name(name, fit) {
    if (fit < 3) return "";
    var fits = function(t) { return Array.from(t).length <= fit; };
    if (fits(name)) return name;
    var plain = sw_strip_generics(name);
    if (fits(plain)) return plain;
    var c = [sw_short_path(plain, 2), sw_short_path(plain, 1)];
    for (var i = 0; i < c.length; i++) if (fits(c[i])) return c[i];
    return Array.from(c[1]).slice(0, fit - 2).join("") + "..";
}
function sw_frame_name(title) {
    var m = /^all \((.*), 100%\)$/.exec(title);
    if (m) return sw_root_label + " (" + m[1] + ")";
    return title.replace(/ \([^(]*\)$/, "");
}
function update_text_for_elements(elements) {
    var cw = known_font_width || fontsize * fontwidth;
    var fw = frames.attributes.width.value;
    var out = [];
    for (var i = 0; i < elements.length; i++) {
        var e = elements[i];
        var r = find_child(e, "rect");
        var w = parseFloat(r.attributes.width.value) * fw / 100 - 3;
        var x = format_percent(parseFloat(r.attributes.x.value) + (100 * 3 / fw));
        var name = sw_frame_name(find_child(e, "title").textContent);
        out.push([x, w < 2 * cw ? "" : sw_display_name(name, Math.floor(w / cw))]);
    }
    for (var i = 0; i < elements.length; i++) {
        var t = find_child(elements[i], "text");
        t.attributes.x.value = out[i][0];
        t.textContent = out[i][1];
    }
}
function update_text(e) { update_text_for_elements([e]); }
"#;

/// inferno's SVG made readable: every frame's text is its [`display_name`] for its
/// width, the root is labelled with `opts.root_label` and its total, and the script
/// that zooms uses the same rule ([`READABLE_JS`]).
fn readable(svg: Vec<u8>, opts: &SvgOptions) -> Vec<u8> {
    let Ok(svg) = String::from_utf8(svg) else {
        return Vec::new();
    };
    let image_width = opts.image_width.unwrap_or(1200) as f64;
    let frames_width = image_width - 2.0 * XPAD;
    let cw = FONT_SIZE * CHAR_WIDTH;
    let mut out = String::with_capacity(svg.len() + READABLE_JS.len() + 256);
    // The script, after inferno's own (so its functions replace inferno's).
    let mut rest = svg.as_str();
    if let Some(i) = rest.find("]]></script>") {
        let end = i + "]]></script>".len();
        out.push_str(&rest[..end]);
        out.push_str("<script type=\"text/ecmascript\"><![CDATA[\nvar sw_root_label = ");
        out.push_str(&js_string(&opts.root_label));
        out.push_str(";\nfontwidth = ");
        out.push_str(&CHAR_WIDTH.to_string());
        out.push_str(";\n");
        out.push_str(READABLE_JS);
        out.push_str("]]></script>");
        rest = &rest[end..];
    }
    // Each frame: <g><title>T</title><rect x=".." y=".." width="W%" .../><text ...>N</text></g>
    while let Some(g) = rest.find("<g><title>") {
        let title_start = g + "<g><title>".len();
        let Some(title_len) = rest[title_start..].find("</title>") else {
            break;
        };
        let title = xml_unescape(&rest[title_start..title_start + title_len]);
        let after_title = title_start + title_len;
        let width_pct = rest[after_title..]
            .find(" width=\"")
            .map(|i| after_title + i + " width=\"".len())
            .and_then(|i| {
                rest[i..]
                    .find('%')
                    .and_then(|j| rest[i..i + j].parse::<f64>().ok())
            });
        let text_open = rest[after_title..]
            .find("<text ")
            .map(|i| after_title + i)
            .and_then(|i| rest[i..].find('>').map(|j| i + j + 1));
        let (Some(width_pct), Some(text_start)) = (width_pct, text_open) else {
            out.push_str(&rest[..title_start]);
            rest = &rest[title_start..];
            continue;
        };
        let Some(text_len) = rest[text_start..].find("</text>") else {
            break;
        };
        let w = width_pct * frames_width / 100.0 - 3.0;
        let name = frame_name(&title, &opts.root_label);
        let shown = if w < 2.0 * cw {
            String::new()
        } else {
            display_name(&name, (w / cw).floor() as usize)
        };
        out.push_str(&rest[..text_start]);
        out.push_str(&xml_escape(&shown));
        rest = &rest[text_start + text_len..];
    }
    out.push_str(rest);
    out.into_bytes()
}

/// The name a frame shows, from its tooltip: `name (N samples, x%)` -> `name`; the
/// root's `all (N samples, 100%)` -> `<root_label> (N samples)`.
fn frame_name(title: &str, root_label: &str) -> String {
    if let Some(total) = title
        .strip_prefix("all (")
        .and_then(|t| t.strip_suffix(", 100%)"))
    {
        return format!("{root_label} ({total})");
    }
    match title.rfind(" (") {
        Some(i) if title.ends_with(')') && !title[i + 2..].contains('(') => title[..i].to_owned(),
        _ => title.to_owned(),
    }
}

fn xml_escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn xml_unescape(t: &str) -> String {
    if !t.contains('&') {
        return t.to_owned();
    }
    t.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// A JavaScript string literal safe inside CDATA and an SVG: only ASCII letters, digits
/// and a few marks are written as they are, everything else as `\uXXXX`.
fn js_string(s: &str) -> String {
    let mut out = String::from("\"");
    for u in s.encode_utf16() {
        match u {
            0x30..=0x39 | 0x41..=0x5a | 0x61..=0x7a | 0x20 | 0x2c | 0x2e | 0x3a | 0x5f | 0x2d => {
                out.push(u as u8 as char)
            }
            _ => out.push_str(&format!("\\u{u:04x}")),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_frames_and_escapes_hostile_names() {
        let p = Profile::from_folded(
            "main;<script>alert(1)</script>;a&b 5\nmain;\"quoted\" 3\n",
            1,
        )
        .unwrap();
        let svg = String::from_utf8(render(&p, &SvgOptions::default())).unwrap();
        assert!(svg.starts_with("<?xml"));
        assert!(
            !svg.contains("<script>alert"),
            "unescaped frame name in SVG"
        );
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(svg.contains("a&amp;b"));
    }

    #[test]
    fn empty_profile_is_a_valid_svg_without_script_and_escapes_its_subtitle() {
        let opts = SvgOptions {
            subtitle: Some("{a=\"<script>\"}".into()),
            ..SvgOptions::default()
        };
        let svg = String::from_utf8(render(&Profile::new(1), &opts)).unwrap();
        assert!(svg.contains("</svg>"));
        assert!(svg.contains("No samples in this selection"));
        assert!(!svg.contains("onload") && !svg.contains("<script"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"));
    }

    #[test]
    fn diff_normalises_base_to_target_total() {
        let base = Profile::from_folded("t;a 10\nt;b 10\n", 1).unwrap();
        let target = Profile::from_folded("t;a 20\nt;b 60\n", 1).unwrap();
        let d = diff_folded(&base, &target);
        // base scaled by 80/20 = 4.
        assert!(d.contains("t;a 40 20"), "{d}");
        assert!(d.contains("t;b 40 60"), "{d}");
        let svg = String::from_utf8(render_diff(&base, &target, &SvgOptions::default())).unwrap();
        assert!(svg.contains("</svg>"));
    }
    #[test]
    fn display_names_shorten_paths_before_cutting() {
        let n = "binlog_streamer::pipeline::read_loop";
        assert_eq!(display_name(n, 40), n);
        assert_eq!(display_name(n, 20), "pipeline::read_loop");
        assert_eq!(display_name(n, 12), "read_loop");
        assert_eq!(display_name(n, 7), "read_..");
        assert_eq!(display_name(n, 2), "");
        let g = "alloc::raw_vec::RawVec<T,A>::grow_one";
        assert_eq!(display_name(g, 33), "alloc::raw_vec::RawVec::grow_one");
        assert_eq!(display_name(g, 20), "RawVec::grow_one");
        let q = "<binlog_streamer::encode::avro::AvroEncoder as binlog_streamer::encode::Encoder>::encode";
        assert_eq!(
            display_name(q, 50),
            "<avro::AvroEncoder as encode::Encoder>::encode"
        );
        assert_eq!(display_name(q, 30), "AvroEncoder::encode");
        assert_eq!(display_name("thread-24021", 8), "thread..");
        // Hostile names are only text: shortened like any other, escaped when written.
        assert_eq!(
            display_name("<script>window.__pwned=1</script>", 12),
            "scriptwind.."
        );
    }

    #[test]
    fn frames_show_display_names_the_root_is_labelled_and_tooltips_keep_full_names() {
        let long = "binlog_streamer::pipeline::read_loop";
        let folded = format!(
            "main;{long};binlog_streamer::encode::json::write_row 90\nmain;<script>x</script> 10\n"
        );
        let p = Profile::from_folded(&folded, 1).unwrap();
        let opts = SvgOptions {
            image_width: Some(200),
            ..SvgOptions::default()
        };
        let svg = String::from_utf8(render(&p, &opts)).unwrap();
        // The root's text: its label and total.
        assert!(svg.contains(">all (100 samples)</text>"), "{svg}");
        // The full name stays in the tooltip; the frame shows a shorter one.
        assert!(svg.contains(&format!("<title>{long} (90 samples, 90.00%)</title>")));
        assert!(svg.contains(">pipeline::read_loop</text>"), "{svg}");
        assert!(svg.contains(">json::write_row</text>"), "{svg}");
        assert!(!svg.contains("<script>x"), "{svg}");
        // The zoom script uses the same rule; the label is a safe JS string.
        assert!(svg.contains("function sw_display_name"));
        assert!(svg.contains("stopImmediatePropagation"));
        assert!(svg.contains("var sw_root_label = \"all\";"));
        let hostile = SvgOptions {
            root_label: "]]></script><script>alert(1)</script>".into(),
            ..opts
        };
        let plain = svg.matches("]]>").count();
        let svg = String::from_utf8(render(&p, &hostile)).unwrap();
        assert!(!svg.contains("<script>alert"), "{svg}");
        assert_eq!(svg.matches("]]>").count(), plain);
    }
}
