// Charts over time: stacked areas, lines, legends, sparklines, drag to zoom.

import { el, view } from './dom.js';
import { fmtLocal, fmtPct, tzName, unitOf } from './format.js';

export const COLORS = ['#c2410c', '#1d4ed8', '#15803d', '#7c3aed', '#b45309', '#0e7490', '#be185d', '#4d7c0f'];
export const OTHER_COLOR = '#6b7280';
export const NONE_COLOR = '#cbd5e1';
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800];

function niceStep(range, ticks) {
  const raw = range / ticks;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

// niceStep in the binary unit of the range: steps of round KiB, MiB, ...
function binaryStep(range, ticks) {
  let k = 1;
  while (range / k >= 1024 && k < Math.pow(1024, 5)) k *= 1024;
  return niceStep(range / k, ticks) * k;
}

// The average over the buckets that have data (the partial one weighs what it covers),
// and the seconds that had data (`cores`: the average in the series' unit, cores for CPU).
export function averageCores(points, step, partial) {
  let sum = 0, secs = 0;
  for (const [ts, v] of points) {
    if (v === null || v === undefined) continue;
    const w = partial && partial.ts === ts ? Math.min(step, partial.covered_s) : step;
    sum += v * w; secs += w;
  }
  return { cores: secs ? sum / secs : null, seconds: secs };
}

function chartWidth() { return Math.max(600, Math.floor((view.clientWidth || 1200) - 64)); }

// A chart of one or more CPU series in cores over [data.from, data.to): gaps where a
// bucket has no data, the partial last bucket hollow and dashed, labelled axes (cores,
// local time), values on hover, and (with onSelect) drag to zoom.
// lines: [{name, points: [[ts, cores|null]...], color, area, label, title}]: `name` is the
// series' identity (what onPick gets), `label` what the legend shows when it differs.
// opts.stacked: the lines are parts of opts.total (the series of a group_by), drawn as
// stacked areas, one per bucket step, with each one's share in the legend; opts.onPick
// (name) is called when a series' area or legend entry is clicked (not for opts.unpickable
// names such as "[other]").
export function timeChart(data, lines, opts) {
  const u = opts.unit || unitOf(data.unit, data.type);
  opts.unit = u;
  const W = opts.width || chartWidth(), H = opts.height || 200;
  const ml = u.unit === 'cores' ? 58 : 74, mr = 14, mt = 14, mb = 38;
  const pw = W - ml - mr, ph = H - mt - mb;
  const { from, to, step } = data;
  const partial = data.partial || null;
  const span = Math.max(1, to - from);
  const x = (t) => ml + Math.min(1, Math.max(0, (t - from) / span)) * pw;
  const mid = (ts) => ts + (partial && partial.ts === ts ? Math.min(step, partial.covered_s) : step) / 2;
  // Buckets (the total's, or the first line's) and, when stacked, each line's floor.
  const first = opts.total ? { points: opts.total } : lines[0];
  const ts0 = first ? first.points.map((p) => p[0]) : [];
  const val = (l, i) => (l.points[i] && l.points[i][1] !== null && l.points[i][1] !== undefined ? l.points[i][1] : null);
  let stackTop = null;
  let max = 0;
  if (opts.stacked) {
    stackTop = ts0.map(() => 0);
    for (const l of lines) {
      l.floor = stackTop.slice();
      ts0.forEach((_, i) => { stackTop[i] += val(l, i) || 0; });
    }
    for (const v of stackTop) if (v > max) max = v;
  } else {
    for (const l of lines) for (const p of l.points) if (p[1] !== null && p[1] > max) max = p[1];
  }
  // Bytes step in round KiB, MiB, ... (256 KiB, not 244 KiB).
  const yStep = u.binary ? binaryStep(max > 0 ? max : 1, 4) : niceStep(max > 0 ? max : 1, 4);
  const yMax = Math.max(yStep, Math.ceil(max / yStep - 1e-9) * yStep);
  const y = (v) => mt + ph - v / yMax * ph;
  const svg = el('svg', {
    class: 'chart', width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, role: 'img',
    'aria-label': opts.label, 'data-testid': opts.testid, 'data-unit': u.unit,
  });
  // Axes: the values' unit on the left, local time below.
  const axis = el('g', { class: 'axis' });
  for (let v = 0; v <= yMax + 1e-9; v += yStep) {
    axis.append(el('line', { class: 'grid', x1: ml, x2: W - mr, y1: y(v), y2: y(v) }),
      el('text', { class: 'ytick', x: ml - 6, y: y(v) + 4, 'text-anchor': 'end', text: u.tick(v) }));
  }
  axis.append(el('text', { class: 'axis-title', 'data-testid': 'y-axis-title', transform: 'translate(14,' + (mt + ph / 2) + ') rotate(-90)', 'text-anchor': 'middle', text: u.axis }));
  const tStep = TIME_STEPS.find((s) => span / s <= Math.max(3, Math.floor(pw / 110))) || 604800;
  const off = -new Date().getTimezoneOffset() * 60;
  const multiDay = span > 86400 || new Date(from * 1000).getDate() !== new Date(to * 1000).getDate();
  for (let t = Math.ceil((from + off) / tStep) * tStep - off; t <= to; t += tStep) {
    axis.append(el('line', { class: 'tick', x1: x(t), x2: x(t), y1: mt + ph, y2: mt + ph + 4 }),
      el('text', { class: 'xtick', x: x(t), y: mt + ph + 16, 'text-anchor': 'middle', text: fmtLocal(t, tStep < 60, multiDay && tStep < 86400) }));
  }
  axis.append(el('text', { class: 'axis-title', 'data-testid': 'x-axis-title', x: ml + pw / 2, y: H - 4, 'text-anchor': 'middle', text: 'local time (' + tzName() + ')' }));
  axis.append(el('line', { class: 'baseline', x1: ml, x2: W - mr, y1: mt + ph, y2: mt + ph }));
  svg.append(axis);
  // No-data spans of the first line (or the total), shaded: a gap is not a zero.
  let gaps = 0, nulls = 0;
  if (first) {
    let gapStart = null;
    const pts = first.points;
    for (let i = 0; i <= pts.length; i++) {
      const isNull = i < pts.length && (pts[i][1] === null || pts[i][1] === undefined);
      if (isNull) { nulls++; if (gapStart === null) gapStart = Math.max(from, pts[i][0]); }
      if (!isNull && gapStart !== null) {
        const end = i < pts.length ? Math.max(from, pts[i][0]) : to;
        gaps++;
        svg.append(el('rect', { class: 'nodata', x: x(gapStart), y: mt, width: Math.max(0, x(end) - x(gapStart)), height: ph }));
        if (x(end) - x(gapStart) > 60) svg.append(el('text', { class: 'nodata-label', x: (x(gapStart) + x(end)) / 2, y: mt + ph / 2, 'text-anchor': 'middle', text: 'no data' }));
        gapStart = null;
      }
    }
  }
  svg.setAttribute('data-gaps', gaps);
  svg.setAttribute('data-null-buckets', nulls);
  if (opts.stacked) {
    drawStacked(svg, lines, ts0, { x, y, step, first, val, onPick: opts.onPick, unpickable: opts.unpickable || [] });
    svg.setAttribute('data-stacked', '1');
    if (partial && ts0.length && ts0[ts0.length - 1] === partial.ts && first.points[ts0.length - 1][1] !== null) {
      const i = ts0.length - 1;
      svg.append(el('circle', { class: 'partial', cx: x(mid(partial.ts)), cy: y(stackTop[i]), r: 3.5, stroke: 'var(--muted)', 'data-testid': 'partial-bucket' },
        el('title', { text: 'still filling: ' + Math.round(partial.covered_s) + ' of ' + step + ' s so far' })));
    }
  }
  // The lines: one path per run of buckets with data.
  if (!opts.stacked) lines.forEach((l, li) => {
    const g = el('g', { class: 'series', 'data-series': l.name });
    const color = l.color || COLORS[li % COLORS.length];
    let run = [];
    const flush = () => {
      if (run.length === 1) g.append(el('circle', { class: 'dot', cx: run[0][0], cy: run[0][1], r: 2.5, fill: color }));
      else if (run.length > 1) {
        const d = run.map((p, i) => (i ? 'L' : 'M') + p[0].toFixed(1) + ',' + p[1].toFixed(1)).join(' ');
        if (l.area) g.append(el('path', { class: 'area', d: d + ' L' + run[run.length - 1][0].toFixed(1) + ',' + (mt + ph) + ' L' + run[0][0].toFixed(1) + ',' + (mt + ph) + ' Z', fill: color }));
        g.append(el('path', { class: 'line', d, stroke: color }));
      }
      run = [];
    };
    l.points.forEach(([ts, v], i) => {
      if (v === null || v === undefined) { flush(); return; }
      const pt = [x(mid(ts)), y(v)];
      if (partial && partial.ts === ts) {
        // The partial bucket: its value is scaled to the seconds covered; drawn hollow,
        // joined by a dashed segment.
        const prev = i > 0 ? l.points[i - 1] : null;
        flush();
        if (prev && prev[1] !== null && prev[1] !== undefined) {
          g.append(el('path', { class: 'partial-seg', d: 'M' + x(mid(prev[0])).toFixed(1) + ',' + y(prev[1]).toFixed(1) + ' L' + pt[0].toFixed(1) + ',' + pt[1].toFixed(1), stroke: color }));
        }
        g.append(el('circle', { class: 'partial', cx: pt[0], cy: pt[1], r: 3.5, stroke: color, 'data-testid': 'partial-bucket' }));
        return;
      }
      run.push(pt);
    });
    flush();
    svg.append(g);
  });
  if (!lines.some((l) => l.points.some((p) => p[1] !== null && p[1] !== undefined))) {
    svg.append(el('text', { class: 'nodata-label', x: ml + pw / 2, y: mt + ph / 2 + 16, 'text-anchor': 'middle', text: 'no data in this range' }));
  }
  // Hover: the bucket under the pointer and every line's value there.
  const cursor = el('line', { class: 'cursor', x1: 0, x2: 0, y1: mt, y2: mt + ph, visibility: 'hidden' });
  const sel = el('rect', { class: 'sel', x: 0, y: mt, width: 0, height: ph, visibility: 'hidden' });
  svg.append(cursor, sel);
  const tip = el('div', { class: 'tip', 'data-testid': 'chart-tooltip', hidden: true });
  const wrap = el('div', { class: 'chart-wrap' });
  const toX = (ev) => { const r = svg.getBoundingClientRect(); return Math.min(ml + pw, Math.max(ml, (ev.clientX - r.left) / r.width * W)); };
  const toT = (px) => Math.round(from + (px - ml) / pw * span);
  const showTip = (px) => {
    if (!ts0.length) return;
    const t = toT(px);
    let i = ts0.findIndex((ts) => t < ts + step);
    if (i < 0) i = ts0.length - 1;
    const ts = ts0[i];
    const isPartial = partial && partial.ts === ts;
    tip.replaceChildren(...[el('div', { class: 'tip-time', text: fmtLocal(Math.max(ts, from), step < 60, multiDay) + '–' + fmtLocal(Math.min(ts + step, to), step < 60, multiDay) + (isPartial ? ' (partial: ' + Math.round(partial.covered_s) + ' of ' + step + ' s so far)' : '') }),
      opts.total ? el('div', {}, el('span', { text: 'total: ' }), el('b', { text: u.fmt(opts.total[i] ? opts.total[i][1] : null) })) : null,
      // Stacked: listed top to bottom, as drawn.
      ...(opts.stacked ? lines.slice().reverse() : lines).map((l) => {
        const v = l.points[i] ? l.points[i][1] : null;
        const tot = opts.total && opts.total[i] ? opts.total[i][1] : null;
        return el('div', {}, el('span', { class: 'swatch', style: 'background:' + (l.color || COLORS[lines.indexOf(l) % COLORS.length]) }), el('span', { text: (l.label || l.name) + ': ' }), el('b', { text: u.fmt(v) }),
          opts.stacked && tot > 0 && v !== null ? el('span', { class: 'muted', text: ' (' + fmtPct(v / tot) + ')' }) : null);
      })].filter(Boolean));
    tip.hidden = false;
    const r = svg.getBoundingClientRect();
    const left = px / W * r.width;
    tip.style.left = Math.min(left + 12, r.width - 260) + 'px';
    tip.style.top = '4px';
    cursor.setAttribute('x1', px); cursor.setAttribute('x2', px); cursor.setAttribute('visibility', 'visible');
  };
  let start = null;
  svg.addEventListener('mousemove', (ev) => {
    const cur = toX(ev);
    if (start !== null) { sel.setAttribute('x', Math.min(start, cur)); sel.setAttribute('width', Math.abs(cur - start)); }
    showTip(cur);
  });
  svg.addEventListener('mouseleave', () => { tip.hidden = true; cursor.setAttribute('visibility', 'hidden'); });
  if (opts.onSelect) {
    svg.classList.add('zoomable');
    svg.addEventListener('mousedown', (ev) => { start = toX(ev); sel.setAttribute('visibility', 'visible'); sel.setAttribute('x', start); sel.setAttribute('width', 0); ev.preventDefault(); });
    window.addEventListener('mouseup', function up(ev) {
      if (start === null) return;
      if (!svg.isConnected) { window.removeEventListener('mouseup', up); return; }
      const endX = toX(ev);
      const a = toT(Math.min(start, endX)), b = toT(Math.max(start, endX));
      const wide = Math.abs(endX - start) > 3;
      start = null;
      sel.setAttribute('visibility', 'hidden');
      if (wide && b - a >= 1) { window.removeEventListener('mouseup', up); opts.onSelect(a, b); }
    });
  }
  wrap.append(svg, tip);
  if (opts.stacked) {
    wrap.append(stackLegend(lines, step, partial, opts));
  } else if (lines.length > 1) {
    wrap.append(el('div', { class: 'legend', 'data-testid': 'chart-legend' }, lines.map((l, li) => {
      const avg = averageCores(l.points, step, partial);
      return el('span', { class: 'legend-item', 'data-series': l.name },
        el('span', { class: 'swatch', style: 'background:' + (l.color || COLORS[li % COLORS.length]) }),
        el('span', { class: 'name', text: l.label || l.name }), el('span', { class: 'muted', text: ' ' + u.fmt(avg.cores) + ' avg' }));
    })));
  }
  return wrap;
}

// Stacked areas, one per line, drawn per bucket (a bucket is a step: its value holds over
// its whole width), from each line's floor (the lines below it) to floor + value; a
// bucket with no data at all is a gap. A line without data in a bucket the others have
// is zero there. Each area's top edge is its line.
function drawStacked(svg, lines, ts0, c) {
  const present = ts0.map((_, i) => c.first.points[i] && c.first.points[i][1] !== null && c.first.points[i][1] !== undefined || lines.some((l) => c.val(l, i) !== null));
  lines.forEach((l, li) => {
    const color = l.color || COLORS[li % COLORS.length];
    const pickable = c.onPick && !c.unpickable.includes(l.name);
    const g = el('g', { class: 'series stacked' + (pickable ? ' pickable' : ''), 'data-series': l.name });
    if (pickable) {
      g.addEventListener('click', () => c.onPick(l.name));
      g.append(el('title', { text: (l.label || l.name) + ': click to filter on it' }));
    }
    let run = [];
    const flush = () => {
      if (!run.length) return;
      const top = [], bottom = [];
      for (const i of run) {
        const x0 = c.x(ts0[i]).toFixed(1), x1 = c.x(ts0[i] + c.step).toFixed(1);
        const hi = c.y(l.floor[i] + (c.val(l, i) || 0)).toFixed(1), lo = c.y(l.floor[i]).toFixed(1);
        top.push(x0 + ',' + hi, x1 + ',' + hi);
        bottom.unshift(x1 + ',' + lo, x0 + ',' + lo);
      }
      g.append(el('path', { class: 'stack-area', d: 'M' + top.concat(bottom).join(' L') + ' Z', fill: color }),
        el('path', { class: 'line', d: 'M' + top.join(' L'), stroke: color }));
      run = [];
    };
    ts0.forEach((_, i) => { if (present[i]) run.push(i); else flush(); });
    flush();
    svg.append(g);
  });
}

// The legend of a stacked chart: each series' share of the total over the range and its
// average cores; a click on a series (or Enter on it) calls opts.onPick.
function stackLegend(lines, step, partial, opts) {
  const sums = lines.map((l) => { const a = averageCores(l.points, step, partial); return (a.cores || 0) * a.seconds; });
  const all = sums.reduce((a, b) => a + b, 0);
  return el('div', { class: 'legend stacked', 'data-testid': 'chart-legend' }, lines.map((l, li) => {
    const avg = averageCores(l.points, step, partial);
    const share = all > 0 ? sums[li] / all : 0;
    const pickable = opts.onPick && !(opts.unpickable || []).includes(l.name);
    const body = [
      el('span', { class: 'swatch', style: 'background:' + (l.color || COLORS[li % COLORS.length]) }),
      el('span', { class: 'name', text: l.label || l.name }),
      el('span', { class: 'share', 'data-share': share.toFixed(4), text: ' ' + fmtPct(share) }),
      el('span', { class: 'muted', text: ' · ' + (opts.unit || unitOf('cores')).fmt(avg.cores) + ' avg' }),
    ];
    return pickable
      ? el('button', { type: 'button', class: 'legend-item', 'data-series': l.name, title: 'filter on ' + (l.label || l.name), onclick: () => opts.onPick(l.name) }, body)
      : el('span', { class: 'legend-item', 'data-series': l.name, title: l.name === '[other]' ? 'the values past the largest ones, together' : l.title || null }, body);
  }));
}

// A small chart for the Fleet table: cores over the last hour, with gaps.
export function sparkline(points, partial) {
  const W = 160, H = 28;
  const svg = el('svg', { class: 'spark', viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': 'CPU in cores over the last hour' });
  const max = Math.max(1e-9, ...points.map((p) => p[1] || 0));
  const x = (i) => i * W / Math.max(1, points.length - 1);
  let run = [];
  const flush = () => {
    if (run.length === 1) svg.append(el('circle', { cx: run[0][0], cy: run[0][1], r: 1.5 }));
    if (run.length > 1) svg.append(el('polyline', { points: run.map((p) => p[0].toFixed(1) + ',' + p[1].toFixed(1)).join(' ') }));
    run = [];
  };
  points.forEach(([ts, v], i) => {
    if (v === null || v === undefined) { flush(); return; }
    run.push([x(i), H - 2 - v / max * (H - 4)]);
    if (partial && partial.ts === ts) svg.setAttribute('data-partial', '1');
  });
  flush();
  return svg;
}
