//! Flamegraph and differential flamegraph SVGs, laid out by inferno.
//!
//! Frame names are untrusted (they come from workers); inferno writes them through an XML
//! writer that escapes `<`, `>`, `&` and quotes, and the tests here check that.

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
    out
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
    out
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
}
