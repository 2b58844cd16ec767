//! A one-off capture: profile a piece of work for a few seconds and write the flamegraph,
//! no server and no collector. The same `Profile` also gives folded text and pprof.
//!
//! ```text
//! cargo run --release -p stackwatch --example capture_svg -- out.svg
//! ```

use std::time::{Duration, Instant};

#[inline(never)]
fn checksum(data: &[u8]) -> u32 {
    data.iter()
        .fold(0u32, |a, b| a.rotate_left(5) ^ u32::from(*b))
}

#[inline(never)]
fn work(until: Instant) -> u32 {
    let data: Vec<u8> = (0..64 * 1024).map(|i| i as u8).collect();
    let mut acc = 0;
    while Instant::now() < until {
        acc ^= std::hint::black_box(checksum(&data));
    }
    acc
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "capture.svg".into());
    let profiler = stackwatch::Profiler::builder().frequency_hz(999).start()?;
    let capture = profiler.start_capture();
    work(Instant::now() + Duration::from_secs(2));
    let profile = capture.finish();
    profiler.stop();
    let svg = profile.to_svg(&stackwatch::SvgOptions {
        title: "capture_svg example".into(),
        subtitle: Some(format!("{} samples at 999 Hz", profile.total())),
        ..Default::default()
    });
    std::fs::write(&out, svg)?;
    println!("{} samples, flamegraph in {out}", profile.total());
    Ok(())
}
