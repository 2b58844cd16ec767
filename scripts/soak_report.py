#!/usr/bin/env python3
"""Report of a soak run (scripts/soak.sh): per process, RSS at the start, middle and end,
its peak, and the least-squares slope of RSS over the second half of the run (KiB/min,
so start-up does not dominate); the store's size likewise; and a small SVG plot of RSS
per process over time. Standard library only.

    python3 scripts/soak_report.py /tmp/soak/rss.csv /tmp/soak/rss.svg
"""

import csv
import sys


def slope(xs, ys):
    """Least-squares slope of ys over xs (None with fewer than two points)."""
    n = len(xs)
    if n < 2:
        return None
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def read(path):
    title = ""
    lines = []
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                title = line[1:].strip()
            elif line.strip():
                lines.append(line)
    rows = list(csv.DictReader(lines))
    return title, rows


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def series(rows, col):
    out = []
    for r in rows:
        t, v = num(r.get("elapsed_s")), num(r.get(col))
        if t is not None and v is not None:
            out.append((t / 60.0, v))
    return out


COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


def svg_plot(title, curves, path, width=720, height=360):
    """curves: [(name, [(minute, MiB)])]; a line chart with axes, ticks and a legend."""
    left, right, top, bottom = 60, 150, 30, 40
    pts = [p for _, c in curves for p in c]
    if not pts:
        return
    x1 = max(1.0, max(p[0] for p in pts))
    y1 = max(p[1] for p in pts) * 1.1 or 1.0
    pw, ph = width - left - right, height - top - bottom

    def sx(x):
        return left + x / x1 * pw

    def sy(y):
        return top + ph - y / y1 * ph

    def nice_step(span, n):
        raw = span / n
        mag = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 0.1
        for m in (1, 2, 5, 10):
            if m * mag >= raw:
                return m * mag
        return raw

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="18" font-size="12">{esc(title)}</text>',
    ]
    ystep = nice_step(y1, 5)
    y = 0.0
    while y <= y1:
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:g}</text>'
        )
        y += ystep
    xstep = nice_step(x1, 6)
    x = 0.0
    while x <= x1 + 1e-9:
        out.append(
            f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{top + ph}" y2="{top + ph + 4}" stroke="#333"/>'
            f'<text x="{sx(x):.1f}" y="{top + ph + 16}" text-anchor="middle">{x:g}</text>'
        )
        x += xstep
    out.append(
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}" stroke="#333"/>'
        f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="#333"/>'
        f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle">minutes</text>'
        f'<text transform="translate(14 {top + ph / 2}) rotate(-90)" text-anchor="middle">RSS, MiB</text>'
    )
    for i, (name, c) in enumerate(curves):
        color = COLORS[i % len(COLORS)]
        d = " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in c)
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{d}"/>')
        ly = top + 10 + i * 16
        out.append(
            f'<line x1="{left + pw + 10}" x2="{left + pw + 30}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"/>'
            f'<text x="{left + pw + 36}" y="{ly + 4}">{esc(name)}</text>'
        )
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    csv_path = sys.argv[1]
    svg_path = sys.argv[2] if len(sys.argv) > 2 else csv_path.rsplit(".", 1)[0] + ".svg"
    title, rows = read(csv_path)
    if not rows:
        print(f"{csv_path}: no samples")
        sys.exit(1)
    procs = [c[: -len("_rss_kib")] for c in rows[0].keys() if c.endswith("_rss_kib")]
    duration = max(num(r["elapsed_s"]) or 0 for r in rows) / 60.0
    half = duration / 2
    print(title)
    print(f"{len(rows)} samples over {duration:.1f} min; slope = least squares over minutes >= {half:.1f}")
    print()
    print("| process | RSS start MiB | RSS middle MiB | RSS end MiB | peak VmHWM MiB | slope, second half, KiB/min |")
    print("|---|---:|---:|---:|---:|---:|")
    curves = []
    for p in procs:
        s = series(rows, p + "_rss_kib")
        if not s:
            print(f"| {p} | n/a | n/a | n/a | n/a | n/a |")
            continue
        second = [(x, y) for x, y in s if x >= half]
        k = slope([x for x, _ in second], [y for _, y in second])
        mid = min(s, key=lambda q: abs(q[0] - half))[1]
        hwm = max((v for _, v in series(rows, p + "_hwm_kib")), default=float("nan"))
        print(
            f"| {p} | {s[0][1] / 1024:.1f} | {mid / 1024:.1f} | {s[-1][1] / 1024:.1f} | "
            f"{hwm / 1024:.1f} | {'n/a' if k is None else f'{k:+.1f}'} |"
        )
        curves.append((p, [(x, y / 1024) for x, y in s]))
    store = series(rows, "store_bytes")
    if store:
        second = [(x, y) for x, y in store if x >= half]
        k = slope([x for x, _ in second], [y for _, y in second])
        print()
        print(
            f"store (data dir) size: start {store[0][1] / 1e6:.1f} MB, end {store[-1][1] / 1e6:.1f} MB, "
            f"slope over the second half {'n/a' if k is None else f'{k / 1e6:+.2f}'} MB/min "
            "(raw windows are kept 2 days, rollups 14: it grows until the retention applies)"
        )
    sqlite = series(rows, "collector_sqlite_kib")
    store_caches = dict(series(rows, "collector_store_cache_kib"))
    collector = dict(series(rows, "collector_rss_kib"))
    if sqlite and collector:
        # The floor (least RSS of each five minutes: the spikes are requests in flight),
        # of RSS and of RSS less SQLite's own memory (page caches that grow with the store
        # up to their cache sizes), over the second half.
        # SQLite's page caches and, where recorded, the store's own caches.
        caches = [(x, y + store_caches.get(x, 0.0)) for x, y in sqlite]
        less = [(x, collector[x] - y) for x, y in caches if x in collector]
        whole = duration // 5 * 5

        def floor(points):
            buckets = {}
            for x, y in points:
                # Whole five minutes of the second half: a last, partial one may hold
                # a single spike.
                if half <= x < whole:
                    b = int(x // 5)
                    buckets[b] = min(buckets.get(b, y), y)
            return sorted((b * 5 + 2.5, y) for b, y in buckets.items())

        print()
        for name, pts in (("collector RSS", list(collector.items())), ("collector RSS less the bounded caches", less), ("the bounded caches (SQLite's and the store's)", caches)):
            f = floor(pts)
            k = slope([x for x, _ in f], [y for _, y in f])
            if f:
                print(
                    f"{name}, least of each 5 min over the second half: {f[0][1] / 1024:.1f} -> "
                    f"{f[-1][1] / 1024:.1f} MiB, trend {'n/a' if k is None else f'{k * 60 / 1024:+.1f}'} MiB/h"
                )
        curves.append(("collector less caches", [(x, y / 1024) for x, y in less]))
        curves.append(("caches (collector)", [(x, y / 1024) for x, y in caches]))
    for name in ("top", "svg"):
        st = [r.get(f"{name}_status") for r in rows if r.get(f"{name}_status")]
        ms = [num(r.get(f"{name}_ms")) for r in rows if num(r.get(f"{name}_ms")) is not None]
        if st:
            ok = sum(1 for v in st if v == "200")
            print(
                f"query {name}: {ok}/{len(st)} answered 200; ms min/median/max "
                f"{min(ms):.0f}/{sorted(ms)[len(ms) // 2]:.0f}/{max(ms):.0f}"
            )
    svg_plot("RSS per process: " + (title.split(",")[0] if title else "soak"), curves, svg_path)
    print()
    print(f"plot: {svg_path}")


if __name__ == "__main__":
    main()
