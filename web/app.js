// stackwatch dashboard: Fleet, Explore, Compare. Vanilla JS, no build step, no CDN.
// Frame names and labels come from workers and are untrusted: they are only ever put
// into the page with textContent or attribute setters, never parsed as HTML.
'use strict';

const view = document.getElementById('view');
const statusLine = document.getElementById('status');
const SVG_TAGS = ['svg', 'polyline', 'path', 'rect', 'text', 'line', 'g', 'circle', 'title'];

// el('tag', {attr: value, onclick: fn}, child...) builds DOM safely.
function el(tag, attrs, ...children) {
  const ns = SVG_TAGS.includes(tag) ? 'http://www.w3.org/2000/svg' : null;
  const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// --- API access (a token asked once; the server keeps it in an HttpOnly cookie) -------
// The page never holds the token past the login: POST /api/login checks it and sets a
// cookie that script cannot read (frames and downloads send it too).
async function login() {
  const t = window.prompt('This stackwatch server needs a token:');
  if (!t) return false;
  const r = await fetch('/api/login', {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ token: t }),
  });
  if (r.ok) logins++;
  return r.ok;
}
// Panels load together: the first 401 asks, the others wait for its answer, and one
// answered 401 after a login since it was sent just asks again.
let loginPending = null;
let logins = 0;
async function api(path) {
  const before = logins;
  let r = await fetch(path, { credentials: 'same-origin' });
  if (r.status === 401) {
    let ok = logins !== before;
    if (!ok) {
      if (!loginPending) loginPending = login().finally(() => { loginPending = null; });
      ok = await loginPending;
    }
    if (ok) r = await fetch(path, { credentials: 'same-origin' });
  }
  if (!r.ok) {
    let msg = r.status + ' ' + r.statusText;
    try { const j = await r.json(); msg = (j.parameter ? j.parameter + ': ' : '') + j.error; } catch (_) { /* not JSON */ }
    throw new Error(path.split('?')[0] + ': ' + msg);
  }
  return r;
}
const apiJson = async (path) => (await api(path)).json();

function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') p.set(k, v);
  return p.toString();
}

// --- routing: every view's state lives in the URL hash -----------------------------
function currentRoute() {
  const h = location.hash.replace(/^#\/?/, '');
  const i = h.indexOf('?');
  const name = i < 0 ? h : h.slice(0, i);
  return { name: name || 'fleet', params: Object.fromEntries(new URLSearchParams(i < 0 ? '' : h.slice(i + 1))) };
}
function routeUrl(name, params) {
  const q = qs(params);
  return '#/' + name + (q ? '?' + q : '');
}
function navigate(name, params, replace) {
  const url = routeUrl(name, params);
  if (replace) { history.replaceState(null, '', url); render(); } else location.hash = url;
}
// Records a change made in place (a function picked, a search): the URL reproduces the
// view, nothing is reloaded.
function recordParams(name, params) { history.replaceState(null, '', routeUrl(name, params)); }
function setStatus(text) { statusLine.textContent = text; }

// A panel that failed says so where it would have been (and in the console, where the
// end-to-end test looks), without taking the rest of the page down.
function panelError(where, e) {
  console.error(where + ': ' + e.message);
  return el('p', { class: 'err', role: 'alert', text: 'Could not load ' + where + ': ' + e.message });
}

// --- formatting ----------------------------------------------------------------------
const PRESETS = [['15m', 'now-15m'], ['1h', 'now-1h'], ['6h', 'now-6h'], ['24h', 'now-24h'], ['7d', 'now-7d']];
const pad2 = (n) => String(n).padStart(2, '0');
function tzName() {
  const off = -new Date().getTimezoneOffset();
  return 'UTC' + (off < 0 ? '−' : '+') + pad2(Math.floor(Math.abs(off) / 60)) + ':' + pad2(Math.abs(off) % 60);
}
// Local time: "18:05", "18:05:30" or "11-25 18:05".
function fmtLocal(unix, withSeconds, withDate) {
  const d = new Date(unix * 1000);
  const hm = pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + (withSeconds ? ':' + pad2(d.getSeconds()) : '');
  return withDate ? pad2(d.getMonth() + 1) + '-' + pad2(d.getDate()) + ' ' + hm : hm;
}
function fmtCores(v) {
  if (v === null || v === undefined || !isFinite(v)) return 'no data';
  const a = Math.abs(v);
  return (a === 0 ? '0' : a < 0.01 ? v.toFixed(4) : a < 1 ? v.toFixed(3) : a < 10 ? v.toFixed(2) : v.toFixed(1)) + ' cores';
}
const fmtPct = (v) => (100 * v).toFixed(1) + '%';

// --- profile types and their units -------------------------------------------------
// The types the collector stores (GET /api/profile-types; CPU unless `type=` says so),
// what the picker calls them, and the unit of their /api/timeseries values (the
// response's `unit` is what a chart shows; this one titles a card before it arrives).
const PROFILE_TYPES = [
  ['cpu', 'CPU', 'cores'], ['wall', 'wall-clock time', 'wall_seconds_per_second'],
  ['alloc_objects', 'allocations (objects)', 'count_per_second'], ['alloc_space', 'allocations (bytes)', 'bytes_per_second'],
  ['inuse_objects', 'in-use objects', 'count'], ['inuse_space', 'in-use memory', 'bytes'],
  ['goroutines', 'goroutines', 'count'], ['contentions', 'lock contentions', 'count_per_second'], ['delay', 'lock delay', 'nanoseconds_per_second'],
];
const typeInfo = (t) => PROFILE_TYPES.find((x) => x[0] === t) || [t, t, 'cores'];
const typeName = (t) => typeInfo(t || 'cpu')[1];
// What a count of a type counts: "objects", "goroutines", "contentions".
const COUNT_NOUNS = { alloc_objects: 'objects', inuse_objects: 'objects', goroutines: 'goroutines', contentions: 'contentions' };
let profileTypesP = null;
function profileTypes() {
  if (!profileTypesP) profileTypesP = apiJson('/api/profile-types').catch(() => [{ name: 'cpu', unit: 'cpu_periods', series_unit: 'cores', stored: true }]);
  return profileTypesP;
}

// A number scaled by powers of `base` with the units' names: 1.5 MiB, 12.3k, 250 µs;
// three significant digits, trailing zeros dropped.
function fmtScaled(v, base, units, sep) {
  if (v === null || v === undefined || !isFinite(v)) return 'no data';
  let x = Math.abs(v), i = 0;
  while (x >= base && i < units.length - 1) { x /= base; i++; }
  const digits = x === 0 ? '0' : x < 1 ? x.toPrecision(2) : x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : x.toFixed(0);
  const text = digits.includes('.') ? digits.replace(/0+$/, '').replace(/\.$/, '') : digits;
  return (v < 0 ? '−' : '') + text + (units[i] ? sep + units[i] : '');
}
const fmtBytes = (v) => fmtScaled(v, 1024, ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'], ' ');
const fmtCount = (v) => fmtScaled(v, 1000, ['', 'k', 'M', 'G', 'T'], '');
const fmtNs = (v) => fmtScaled(v, 1000, ['ns', 'µs', 'ms', 's'], ' ');
function fmtPlain(v) {
  if (v === null || v === undefined || !isFinite(v)) return 'no data';
  const a = Math.abs(v);
  return a === 0 ? '0' : a < 0.01 ? v.toFixed(4) : a < 1 ? v.toFixed(3) : a < 10 ? v.toFixed(2) : v.toFixed(1);
}
// How values of a series unit read: the axis title, a value with its unit, a tick.
function unitOf(unit, type) {
  const noun = COUNT_NOUNS[type] || 'count';
  const withUnit = (f, suffix) => (v) => { const t = f(v); return t === 'no data' ? t : t + suffix; };
  switch (unit) {
    case 'wall_seconds_per_second': return { unit, axis: 'wall seconds per second', fmt: withUnit(fmtPlain, ' s/s'), tick: (v) => +v.toFixed(6) };
    case 'bytes_per_second': return { unit, axis: 'bytes per second', fmt: withUnit(fmtBytes, '/s'), tick: fmtBytes, binary: true };
    case 'count_per_second': return { unit, axis: noun + ' per second', fmt: withUnit(fmtCount, ' ' + noun + '/s'), tick: fmtCount };
    case 'nanoseconds_per_second': return { unit, axis: 'delay per second', fmt: withUnit(fmtNs, '/s'), tick: fmtNs };
    case 'bytes': return { unit, axis: 'bytes', fmt: fmtBytes, tick: fmtBytes, binary: true };
    case 'count': return { unit, axis: noun, fmt: withUnit(fmtCount, ' ' + noun), tick: fmtCount };
    default: return { unit: 'cores', axis: 'cores', fmt: fmtCores, tick: (v) => +v.toFixed(6) };
  }
}
// Counts as /api/top and the sandwich give them (`unit` of /api/profile-types).
function fmtCounts(n, unit, type) {
  switch (unit) {
    case 'bytes': return fmtBytes(n);
    case 'nanoseconds': return fmtNs(n);
    case 'count': return fmtCount(n) + ' ' + (COUNT_NOUNS[type] || 'count');
    default: return n.toLocaleString('en') + ' periods';
  }
}
// A gauge (in use at the time of each profile) is not a rate: its values are levels.
const isLevel = (unit) => unit === 'bytes' || unit === 'count';
function typeControl(value, onChange) {
  const current = value || 'cpu';
  const sel = el('select', { name: 'type', 'aria-label': 'profile type', 'data-testid': 'profile-type', onchange: () => onChange(sel.value === 'cpu' ? '' : sel.value) },
    el('option', { value: current, text: typeName(current), selected: true }));
  profileTypes().then((types) => {
    // Only types the store holds can be picked (the current one stays, stored or not).
    sel.replaceChildren(...types.map((t) => el('option', {
      value: t.name, selected: t.name === current, disabled: !t.stored && t.name !== current,
      text: typeName(t.name) + (t.stored ? '' : ' (none stored)'),
    })));
    sel.dataset.ready = '1';
  });
  return el('label', { class: 'type-picker', title: 'What the profiles measure: CPU, or a type pushed by an agent (wall-clock, allocations, memory in use, goroutines, contention)' }, 'profile type', sel);
}
function fmtPp(v) { return (v > 0 ? '+' : v < 0 ? '−' : '') + Math.abs(100 * v).toFixed(2) + ' pp'; }
function fmtDuration(s) {
  if (s < 90) return Math.round(s) + ' s';
  if (s < 5400) return Math.round(s / 60) + ' min';
  return (s / 3600).toFixed(1).replace(/\.0$/, '') + ' h';
}
function fmtP(p) { return p === null || p === undefined ? '–' : p < 1e-16 ? '< 1e-16' : p < 1e-4 ? p.toExponential(1) : p.toFixed(4); }
function regexEscape(s) { return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'); }
function labelSelector(labels) {
  return formatSelector(Object.entries(labels).map(([name, value]) => ({ name, op: '=', value: String(value) })));
}

// --- selectors: {service="x",table=~"o.*"} as a list of matchers and back --------------
// The server's syntax (crates/stackwatch-store/src/selector.rs): label names
// [A-Za-z_][A-Za-z0-9_]*, =, !=, =~, !~, values in double or single quotes with \", \',
// \\, \n and \t escapes. A value is always written back double-quoted and escaped, so a
// label value such as `a"b\c` or `<script>` round-trips as itself.
const SELECTOR_OPS = ['=~', '!~', '!=', '='];
function quoteValue(v) {
  return '"' + String(v).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n').replace(/\t/g, '\\t') + '"';
}
function formatSelector(matchers) {
  return '{' + matchers.map((m) => m.name + m.op + quoteValue(m.value)).join(',') + '}';
}
// [{name, op, value}], or null when the text is not a selector the server would accept.
function parseSelector(text) {
  const s = String(text || '').trim();
  if (s === '') return [];
  if (s[0] !== '{' || s[s.length - 1] !== '}') return null;
  const out = [];
  let i = 1;
  const end = s.length - 1;
  const ws = () => { while (i < end && /\s/.test(s[i])) i++; };
  ws();
  while (i < end) {
    const name = /^[A-Za-z_][A-Za-z0-9_]*/.exec(s.slice(i, end));
    if (!name) return null;
    i += name[0].length;
    ws();
    const op = SELECTOR_OPS.find((o) => s.startsWith(o, i));
    if (!op) return null;
    i += op.length;
    ws();
    const quote = s[i];
    if (quote !== '"' && quote !== "'") return null;
    i++;
    let value = '';
    for (;;) {
      if (i >= end) return null;
      const c = s[i++];
      if (c === quote) break;
      if (c !== '\\') { value += c; continue; }
      const e = s[i++];
      if (e === 'n') value += '\n';
      else if (e === 't') value += '\t';
      else if (e === '\\' || e === '"' || e === "'") value += e;
      else return null;
    }
    out.push({ name: name[0], op, value });
    ws();
    if (i < end) {
      if (s[i] !== ',') return null;
      i++;
      ws();
    }
  }
  return out;
}
// The selector with `name="value"` in place of whatever it said about `name` before;
// null when the text does not parse (the caller says so rather than guess).
function withMatcher(text, name, value) {
  const ms = parseSelector(text);
  if (!ms) return null;
  return formatSelector(ms.filter((m) => m.name !== name).concat([{ name, op: '=', value }]));
}
function withoutMatcher(text, index) {
  const ms = parseSelector(text);
  return ms ? formatSelector(ms.filter((_, i) => i !== index)) : text;
}

// Label names split by what they label: {target: [...], sample: [...]} (an older
// collector without /api/label-keys: every name a target label).
function labelKeys() {
  return apiJson('/api/label-keys').catch(() => apiJson('/api/labels').then((names) => ({ target: names, sample: [] })));
}
function labelKeyOptions(keys, selected) {
  return [['target labels', keys.target || []], ['sample labels', keys.sample || []]]
    .filter(([, names]) => names.length)
    .map(([title, names]) => el('optgroup', { label: title, 'data-kind': title.split(' ')[0] },
      names.map((n) => el('option', { value: n, text: n, selected: n === selected }))));
}

// The matchers of a selector as chips, each with a button that takes it out; sample
// labels are marked (they select samples, not targets).
function filterChips(query, keysP, onChange, testid) {
  const ms = parseSelector(query);
  const box = el('div', { class: 'chips', 'data-testid': testid || 'filters' });
  if (!ms) {
    box.append(el('span', { class: 'err', text: 'The selector does not parse: ' + query }));
    return box;
  }
  if (!ms.length) {
    box.append(el('span', { class: 'muted small', text: 'No filter: every target, every sample.' }));
    return box;
  }
  box.append(el('span', { class: 'muted small', text: 'filters:' }));
  const chips = ms.map((m, i) => {
    const text = m.name + (m.op === '=' ? ' = ' : ' ' + m.op + ' ') + quoteValue(m.value);
    const chip = el('span', { class: 'chip', 'data-testid': 'filter-chip', 'data-label': m.name, 'data-op': m.op, 'data-value': m.value },
      el('span', { class: 'chip-text', text }),
      el('button', { type: 'button', class: 'chip-remove', 'aria-label': 'remove filter ' + m.name + m.op + quoteValue(m.value), title: 'remove this filter', onclick: () => onChange(withoutMatcher(query, i)), text: '×' }));
    box.append(chip);
    return [m, chip];
  });
  keysP.then((keys) => {
    const sample = new Set(keys.sample || []);
    const target = new Set(keys.target || []);
    for (const [m, chip] of chips) {
      if (sample.has(m.name) && !target.has(m.name)) {
        chip.classList.add('sample');
        chip.title = 'a sample label: selects the samples taken with it';
      } else chip.title = 'a target label: selects the targets that carry it';
    }
  }).catch(() => {});
  return box;
}

// Another range of the same length just before [from, to): "now-1h".."now" gives
// "now-2h".."now-1h"; absolute times stay absolute. null when a time is not understood.
function parseAgo(t) {
  if (t === 'now') return 0;
  const m = /^now-((?:\d+(?:ms|s|m|h|d|w))+)$/.exec(t);
  if (!m) return null;
  const unit = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800 };
  let s = 0;
  for (const [, n, u] of m[1].matchAll(/(\d+)(ms|s|m|h|d|w)/g)) s += Number(n) * unit[u];
  return s;
}
function fmtAgo(s) {
  if (s <= 0) return 'now';
  const parts = [];
  for (const [u, n] of [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]]) {
    if (s >= n) { parts.push(Math.floor(s / n) + u); s %= n; }
  }
  return 'now-' + parts.join('');
}
function previousPeriod(from, to) {
  const fa = parseAgo(from), ta = parseAgo(to);
  if (fa !== null && ta !== null && fa > ta) return { from: fmtAgo(fa + (fa - ta)), to: fmtAgo(fa) };
  const abs = (t) => { const a = parseAgo(t); if (a !== null) return Math.floor(Date.now() / 1000) - a; if (/^\d+$/.test(t)) return Number(t); const d = Date.parse(t); return isNaN(d) ? null : Math.floor(d / 1000); };
  const f = abs(from), e = abs(to);
  if (f === null || e === null || e <= f) return null;
  return { from: String(f - (e - f)), to: String(f) };
}

// --- charts of CPU over time -----------------------------------------------------------
const COLORS = ['#c2410c', '#1d4ed8', '#15803d', '#7c3aed', '#b45309', '#0e7490', '#be185d', '#4d7c0f'];
const OTHER_COLOR = '#6b7280';
const NONE_COLOR = '#cbd5e1';
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
function averageCores(points, step, partial) {
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
// lines: [{name, points: [[ts, cores|null]...], color, area}]
// opts.stacked: the lines are parts of opts.total (the series of a group_by), drawn as
// stacked areas, one per bucket step, with each one's share in the legend; opts.onPick
// (name) is called when a series' area or legend entry is clicked (not for opts.unpickable
// names such as "[other]").
function timeChart(data, lines, opts) {
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
        return el('div', {}, el('span', { class: 'swatch', style: 'background:' + (l.color || COLORS[lines.indexOf(l) % COLORS.length]) }), el('span', { text: l.name + ': ' }), el('b', { text: u.fmt(v) }),
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
        el('span', { class: 'name', text: l.name }), el('span', { class: 'muted', text: ' ' + u.fmt(avg.cores) + ' avg' }));
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
      g.append(el('title', { text: l.name + ': click to filter on it' }));
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
      el('span', { class: 'name', text: l.name }),
      el('span', { class: 'share', 'data-share': share.toFixed(4), text: ' ' + fmtPct(share) }),
      el('span', { class: 'muted', text: ' · ' + (opts.unit || unitOf('cores')).fmt(avg.cores) + ' avg' }),
    ];
    return pickable
      ? el('button', { type: 'button', class: 'legend-item', 'data-series': l.name, title: 'filter on ' + l.name, onclick: () => opts.onPick(l.name) }, body)
      : el('span', { class: 'legend-item', 'data-series': l.name, title: l.name === '[other]' ? 'the values past the largest ones, together' : null }, body);
  }));
}

// A small chart for the Fleet table: cores over the last hour, with gaps.
function sparkline(points, partial) {
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

// --- Fleet -------------------------------------------------------------------------
async function renderFleet() {
  const [all, pushes] = await Promise.all([
    apiJson('/api/targets'),
    // A collector without push (or before it existed) answers [] (or 404): no section.
    apiJson('/api/push-sources').catch((e) => ({ error: e })),
  ]);
  // Pushed series of other types a query node lists as stored targets are not scraped
  // targets: they are under Push sources.
  const targets = all.filter((t) => !(t.labels && t.labels.__profile_type__));
  const byService = new Map();
  for (const t of targets) {
    const svc = t.labels.service || '(no service)';
    if (!byService.has(svc)) byService.set(svc, []);
    byService.get(svc).push(t);
  }
  const root = el('div', {}, el('h1', { text: 'Fleet' }));
  if (!targets.length) root.append(el('p', { class: 'muted', text: 'No targets configured yet.' }));
  const loads = [];
  for (const [svc, list] of [...byService.entries()].sort()) {
    const up = list.filter((t) => t.up).length;
    const tbody = el('tbody');
    const svcSel = labelSelector({ service: svc });
    // "compare versions": main (or the most common version) as the base, each other
    // version against it.
    const versions = new Map();
    for (const t of list) if (t.labels.version !== undefined) versions.set(t.labels.version, (versions.get(t.labels.version) || 0) + 1);
    const vs = [...versions.keys()].sort();
    const baseVersion = versions.has('main') ? 'main' : vs.slice().sort((a, b) => versions.get(b) - versions.get(a) || a.localeCompare(b))[0];
    const compareLinks = vs.length > 1 ? el('span', { class: 'compare-links' }, vs.filter((v) => v !== baseVersion).map((v) =>
      el('a', {
        class: 'button-link', 'data-testid': 'compare-versions',
        href: routeUrl('compare', { base: labelSelector({ service: svc, version: baseVersion }), query: labelSelector({ service: svc, version: v }), from: 'now-1h', to: 'now' }),
        text: 'compare versions: ' + v + ' vs ' + baseVersion,
      }))) : null;
    const card = el('section', { class: 'card', 'aria-label': 'service ' + svc },
      el('h2', {}, el('a', { href: routeUrl('explore', { query: svcSel, from: 'now-1h', to: 'now' }), text: svc }),
        el('span', { class: 'muted', text: '  ' + up + ' of ' + list.length + ' up' }), compareLinks),
      el('table', {}, el('thead', {}, el('tr', {},
        el('th', { text: 'instance' }), el('th', { text: 'version' }), el('th', { text: 'state' }), el('th', { text: 'last scrape' }),
        el('th', { class: 'num', title: 'Average CPU in cores over the last hour\'s buckets that have data, read from the store (not reset when the collector restarts)', text: 'CPU, avg of last 1 h' }),
        el('th', { text: 'CPU, last 1 h' }), el('th', { text: '' }))), tbody));
    const rows = new Map();
    for (const t of list.sort((a, b) => (a.labels.instance || '').localeCompare(b.labels.instance || ''))) {
      const cpu = el('td', { class: 'num cpu-avg', 'data-testid': 'cpu-avg', text: '…' });
      const spark = el('td', {});
      rows.set(t.labels.instance || '', { cpu, spark, labels: t.labels });
      tbody.append(el('tr', { 'data-instance': t.labels.instance || '' },
        el('td', { text: t.labels.instance || t.url }),
        el('td', { text: t.labels.version || '' }),
        t.scraped_here === false
          // Another collector sharing the store scrapes it: its health is over there.
          ? el('td', { 'data-testid': 'scraped-by' }, el('span', { class: 'muted', text: t.collector ? 'scraped by ' + t.collector : 'scraped by another collector' }))
          : el('td', {}, el('span', { class: t.up ? 'up' : 'down', text: t.up ? 'up' : 'down' }), t.last_error ? el('div', { class: 'err', text: t.last_error }) : null,
            t.store_backlog_rows ? el('div', { class: 'err', 'data-testid': 'backlog', text: t.store_backlog_rows + ' rows waiting for the store' }) : null,
            t.collector && targets.some((o) => o.collector !== t.collector) ? el('div', { class: 'muted small', text: 'by ' + t.collector }) : null),
        el('td', { text: t.last_scrape_unix_ms ? Math.round((Date.now() - t.last_scrape_unix_ms) / 1000) + ' s ago' : 'never' }),
        cpu, spark,
        el('td', {}, el('a', { href: routeUrl('explore', { query: labelSelector(t.labels), from: 'now-1h', to: 'now' }), text: 'explore' }))));
    }
    // One query per service, a series per instance: from the store, so it survives
    // collector restarts and says over what period.
    loads.push(apiJson('/api/timeseries?' + qs({ query: svcSel, from: 'now-1h', to: 'now', step: '1m', group_by: 'instance', limit: Math.min(100, Math.max(8, list.length)) })).then((ts) => {
      // Targets without an instance label are the series "(none)".
      const byName = new Map((ts.series || []).map((s) => [s.name === '(none)' ? '' : s.name, s]));
      for (const [inst, r] of rows) {
        const s = byName.get(inst);
        if (!s) { r.cpu.textContent = 'no data'; continue; }
        const avg = averageCores(s.points, ts.step, ts.partial);
        r.cpu.replaceChildren(el('span', { text: fmtCores(avg.cores) }),
          avg.seconds < 3300 ? el('div', { class: 'muted small', text: 'over ' + fmtDuration(avg.seconds) + ' of data' }) : null);
        r.spark.append(sparkline(s.points, ts.partial));
      }
    }).catch((e) => { for (const r of rows.values()) r.cpu.textContent = '–'; card.append(panelError('CPU of ' + svc, e)); }));
    root.append(card);
  }
  root.append(pushSources(pushes));
  return { node: root, done: Promise.all(loads) };
}

// "3 s ago", "5 min ago" from Unix ms; "never" for 0.
function fmtSeen(ms) {
  if (!ms) return 'never';
  return fmtDuration(Math.max(0, (Date.now() - ms) / 1000)) + ' ago';
}

// The Fleet's push sources (GET /api/push-sources): per source (tenant, service) its
// refusals and last error, and each series it pushes: labels, protocol, profile type,
// last seen, pushes and repeats (acknowledged, not stored again). Every name, value and
// error comes from the agents: text only.
function pushSources(pushes) {
  const section = el('section', { class: 'card', 'data-testid': 'push-sources', 'aria-label': 'push sources' }, el('h2', { text: 'Push sources' }));
  if (pushes && pushes.error) {
    section.append(el('p', { class: 'muted', text: 'Push sources are not available from this collector (' + pushes.error.message + ').' }));
    return section;
  }
  const list = Array.isArray(pushes) ? pushes : [];
  if (!list.length) {
    section.append(el('p', { class: 'muted', 'data-testid': 'push-none', text: 'No push sources: push ingest is off ([push] enabled), or nothing was pushed lately (push.source_idle).' }));
    return section;
  }
  for (const src of list) {
    const series = Array.isArray(src.series) ? src.series : [];
    const pushesTotal = series.reduce((a, x) => a + (x.pushes || 0), 0);
    const repeats = series.reduce((a, x) => a + (x.duplicates || 0), 0);
    const tbody = el('tbody', {}, series.map((x) => {
      const labels = Object.assign({}, x.labels || {});
      delete labels.__profile_type__;
      const type = x.profile_type || 'cpu';
      return el('tr', { 'data-testid': 'push-series', 'data-type': type, 'data-protocol': x.protocol || '' },
        el('td', { class: 'name', 'data-testid': 'push-labels', text: labelSelector(labels) }),
        el('td', { text: x.protocol || '' }),
        el('td', { 'data-testid': 'push-type', title: type, text: typeName(type) }),
        el('td', { 'data-testid': 'push-seen', title: x.last_seen_unix_ms ? new Date(x.last_seen_unix_ms).toISOString() : '', text: fmtSeen(x.last_seen_unix_ms) }),
        el('td', { class: 'num', 'data-testid': 'push-pushes', text: String(x.pushes || 0) }),
        el('td', { class: 'num', 'data-testid': 'push-repeats', text: String(x.duplicates || 0) }),
        el('td', {}, el('a', { 'data-testid': 'push-explore', href: routeUrl('explore', { query: labelSelector(labels), type: type === 'cpu' ? '' : type, from: 'now-1h', to: 'now' }), text: 'explore' })));
    }));
    section.append(el('div', { class: 'push-source', 'data-testid': 'push-source', 'data-tenant': src.tenant || '', 'data-service': src.service || '' },
      el('h3', {}, el('span', { class: 'name', 'data-testid': 'push-service', text: src.service || '(no service)' }),
        el('span', { class: 'muted', 'data-testid': 'push-tenant', text: src.tenant ? '  tenant ' + src.tenant : '  anonymous' })),
      el('p', { class: 'small' },
        el('span', { text: series.length + ' series · ' + pushesTotal + ' pushes · ' + repeats + ' repeats · ' }),
        el('span', { class: src.rejected ? 'down' : '', 'data-testid': 'push-refusals', text: (src.rejected || 0) + ' refused' })),
      src.last_error ? el('div', { class: 'err', 'data-testid': 'push-last-error' }, el('span', { class: 'muted', text: 'last error: ' }), el('span', { text: src.last_error })) : null,
      series.length ? el('table', { class: 'compact' },
        el('thead', {}, el('tr', {}, ['labels', 'protocol', 'profile type', 'last seen', 'pushes', 'repeats', ''].map((h, i) => el('th', { class: i === 4 || i === 5 ? 'num' : '', text: h })))),
        tbody) : null));
  }
  return section;
}

// --- shared pieces of Explore and Compare -------------------------------------------
function selectionControls(prefix, params, onChange, keysP) {
  const key = prefix || 'query';
  const q = params[key] || '{}';
  const fromKey = prefix ? prefix + '_from' : 'from';
  const toKey = prefix ? prefix + '_to' : 'to';
  const selector = el('input', { class: 'selector', value: q, 'aria-label': key + ' label selector', name: key, spellcheck: 'false' });
  const from = el('input', { value: params[fromKey] || 'now-1h', 'aria-label': 'from', size: 14, name: fromKey });
  const to = el('input', { value: params[toKey] || 'now', 'aria-label': 'to', size: 14, name: toKey });
  const apply = () => onChange({ [key]: selector.value, [fromKey]: from.value, [toKey]: to.value });
  for (const i of [selector, from, to]) i.addEventListener('keydown', (e) => { if (e.key === 'Enter') apply(); });
  const presets = el('span', { class: 'presets', role: 'group', 'aria-label': 'time range presets' },
    PRESETS.map(([label, value]) => el('button', { type: 'button', 'aria-pressed': String(from.value === value && to.value === 'now'), onclick: () => { from.value = value; to.value = 'now'; apply(); }, text: label })));
  const chips = filterChips(q, keysP, (sel) => onChange({ [key]: sel, [fromKey]: from.value, [toKey]: to.value }), prefix ? prefix + '-filters' : 'filters');
  return el('div', { class: 'selection' },
    el('div', { class: 'controls' },
      el('label', {}, 'label selector (target and sample labels)', selector),
      labelValuePicker(key, keysP, (name, value) => {
        const next = withMatcher(selector.value, name, value);
        if (next === null) { setStatus('the selector does not parse: fix it first'); selector.focus(); return; }
        selector.value = next;
        apply();
      }),
      el('label', {}, 'from', from), el('label', {}, 'to', to), presets,
      el('button', { type: 'button', class: 'primary', onclick: apply, text: 'Apply' })),
    chips);
}

// A quick "label = value" picker: a label name (target or sample label), then one of its
// values; picking the value calls onPick(name, value), which puts `name="value"` into the
// selector (in place of what it said about that label).
function labelValuePicker(key, keysP, onPick) {
  const name = el('select', { 'aria-label': key + ': label to filter on', 'data-testid': 'pick-label-' + key },
    el('option', { value: '', text: 'label…' }));
  const value = el('select', { 'aria-label': key + ': value of the label', 'data-testid': 'pick-value-' + key, disabled: true },
    el('option', { value: '', text: '= value…' }));
  keysP.then((keys) => name.append(...labelKeyOptions(keys, null))).catch(() => {});
  let seq = 0;
  name.addEventListener('change', () => {
    const s = ++seq;
    value.replaceChildren(el('option', { value: '', text: name.value ? 'loading…' : '= value…' }));
    value.disabled = true;
    if (!name.value) return;
    apiJson('/api/label/' + encodeURIComponent(name.value) + '/values').then((values) => {
      if (s !== seq) return;
      value.replaceChildren(el('option', { value: '', text: '= value… (' + values.length + ')' }),
        ...values.map((v) => el('option', { value: v, text: '= ' + v })));
      value.disabled = false;
      value.dataset.ready = name.value;
    }).catch((e) => { value.replaceChildren(el('option', { value: '', text: 'could not load values' })); console.error('label values: ' + e.message); });
  });
  value.addEventListener('change', () => { if (name.value && value.value !== '') onPick(name.value, value.value); });
  return el('label', { class: 'picker' }, 'add a filter', el('span', { class: 'inline' }, name, value));
}

// The hide-frames regex (like `go tool pprof -hide`): matching frames are taken out of
// every stack, in the flamegraph, the tables and the downloads.
function hideControl(value, onChange) {
  const input = el('input', { class: 'regex', name: 'hide', value: value || '', placeholder: 'e.g. ^std::|thread_start', 'aria-label': 'hide frames matching this regex', 'data-testid': 'hide-frames' });
  const apply = () => onChange(input.value);
  input.addEventListener('keydown', (e) => { if (e.key === 'Enter') apply(); });
  return el('label', { title: 'Frames matching this regular expression are removed from every stack (like go tool pprof -hide): flamegraph, tables and downloads' },
    'hide frames (regex)', el('span', { class: 'inline' }, input, el('button', { type: 'button', onclick: apply, text: 'Hide' })));
}

// Flamegraphs are drawn at the page's width (a fixed width: inferno's fluid layout
// misbehaves in frames that are replaced while loading).
function svgWidth() { return Math.max(600, Math.floor((view.clientWidth || 1200) - 64)); }

// The name a flamegraph frame stands for, from its tooltip ("name (N samples, x%)");
// null for the root.
function frameFunction(title) {
  if (/^all \(.*, 100%\)$/.test(title)) return null;
  return title.replace(/ \([^(]*\)$/, '');
}

// An inferno SVG in a frame: it takes the SVG's own height, inferno's search button is
// hidden (the page has one search box), and a click on a frame calls onPick(name).
function flamegraphFrame(src, label, testid, onPick) {
  const f = el('iframe', { class: 'flame', src, title: label, 'data-testid': testid || 'flamegraph' });
  f.addEventListener('load', () => {
    fitFrame(f);
    const doc = f.contentDocument;
    if (!doc) return;
    const btn = doc.getElementById('search');
    if (btn) btn.style.display = 'none';
    // Ctrl-F inside the frame focuses the page's search box instead of a prompt.
    try { f.contentWindow.search_prompt = () => { const s = document.querySelector('input[name="search"]'); if (s) s.focus(); }; } catch (_) { /* not ours */ }
    if (onPick) {
      doc.addEventListener('click', (e) => {
        const g = e.target && e.target.closest ? e.target.closest('#frames > g') : null;
        const t = g && g.querySelector('title');
        const name = t ? frameFunction(t.textContent) : null;
        if (name) onPick(name);
      });
    }
  });
  return f;
}

// Shows the whole flamegraph: the frame takes the SVG's own height.
function fitFrame(frame) {
  const svg = frame.contentDocument && frame.contentDocument.documentElement;
  const h = svg && Number(svg.getAttribute('height'));
  if (h > 0) frame.style.height = (h + 4) + 'px';
}

function downloads(base, params, formats) {
  return el('p', { class: 'downloads' }, 'Download: ',
    (formats || ['svg', 'folded', 'pb.gz']).map((f) => el('a', { href: '/api/' + base + '.' + f + '?' + qs(params), download: base + '.' + f, text: f === 'pb.gz' ? 'pprof' : f })));
}

// --- Explore -----------------------------------------------------------------------
function renderExplore(params) {
  // `type` rides along with every request (absent: CPU).
  const type = params.type || 'cpu';
  const p = { query: params.query || '{}', from: params.from || 'now-1h', to: params.to || 'now', type: type === 'cpu' ? '' : type };
  const hide = params.hide || '';
  const sort = params.sort === 'total' ? 'total' : 'self';
  const icicle = params.icicle === '1';
  const state = Object.assign({}, params);
  const update = (changes) => navigate('explore', Object.assign({}, params, changes));
  const keysP = labelKeys();
  const topP = apiJson('/api/top?' + qs(Object.assign({ limit: 50, order: sort, hide }, p)));
  const groupLabel = params.group_by || '';
  const seriesP = apiJson('/api/timeseries?' + qs(Object.assign({ group_by: groupLabel }, p)));
  const prev = previousPeriod(p.from, p.to);
  const compareLink = prev ? el('a', {
    class: 'button-link', 'data-testid': 'compare-previous', title: 'Compare this selection with the same selection over the period before',
    href: routeUrl('compare', { base: p.query, base_from: prev.from, base_to: prev.to, query: p.query, from: p.from, to: p.to, type: p.type }),
    text: 'compare with the period before',
  }) : null;
  const root = el('div', {}, el('h1', { text: 'Explore' }),
    el('div', { class: 'controls' }, typeControl(type, (t) => update({ type: t }))),
    selectionControls('', params, update, keysP), compareLink);
  const seriesUnit = unitOf(typeInfo(type)[2], type);

  // CPU over time, stacked by the values of the chosen label (a target label such as
  // version, or a sample label such as table); a click on a value filters on it.
  const groupBy = el('select', { name: 'group_by', 'aria-label': 'stack by the values of', 'data-testid': 'group-by', onchange: () => update({ group_by: groupBy.value }) },
    el('option', { value: '', text: 'nothing: the total' }));
  keysP.then((keys) => {
    groupBy.append(...labelKeyOptions(keys, groupLabel));
    if (groupLabel && groupBy.value !== groupLabel) groupBy.append(el('option', { value: groupLabel, text: groupLabel, selected: true }));
  }).catch(() => {});
  const filterOn = (value) => {
    const next = withMatcher(p.query, groupLabel, value === '(none)' ? '' : value);
    if (next === null) { setStatus('the selector does not parse: fix it first'); return; }
    update({ query: next });
  };
  const cpuBody = el('div', { class: 'loading', text: 'loading…' });
  const cardTitle = el('h2', { 'data-testid': 'series-title', text: typeName(type) + ' over time, in ' + seriesUnit.axis });
  root.append(el('section', { class: 'card', 'data-testid': 'cpu-card', 'data-type': type },
    el('div', { class: 'card-head' }, cardTitle,
      el('label', { class: 'inline-label' }, 'stacked by ', groupBy),
      el('span', { class: 'hint', 'data-testid': 'zoom-hint', text: '↔ drag across the chart to zoom into a time window' + (groupLabel ? '; click a value to filter on it' : '') })),
    cpuBody));
  const cpuDone = seriesP.then((ts) => {
    const u = unitOf(ts.unit, type);
    const what = typeName(type) + ' in ' + u.axis;
    cardTitle.textContent = typeName(type) + ' over time, in ' + u.axis;
    const chartOpts = { label: what + ' over time; drag to select a window', testid: 'cpu-chart', unit: u, onSelect: (a, b) => update({ from: String(a), to: String(b) }) };
    if (!groupLabel || !Array.isArray(ts.series)) {
      cpuBody.replaceWith(timeChart(ts, [{ name: typeName(type), points: ts.points, color: COLORS[0], area: true }], chartOpts));
      return;
    }
    let ci = 0;
    const lines = (ts.series || []).map((s) => ({ name: s.name, points: s.points, color: s.name === '[other]' ? OTHER_COLOR : s.name === '(none)' ? NONE_COLOR : COLORS[ci++ % COLORS.length] }));
    cpuBody.replaceWith(timeChart(ts, lines, Object.assign(chartOpts, {
      label: what + ' over time, stacked by ' + groupLabel + '; click a value to filter on it, drag to select a window',
      stacked: true, total: ts.points, onPick: filterOn, unpickable: ['[other]'],
    })));
  }).catch((e) => cpuBody.replaceWith(panelError(typeName(type) + ' over time', e)));

  // The flamegraph, its one search box and the hide-frames regex.
  const search = el('input', { type: 'search', placeholder: 'function name', value: params.search || '', 'aria-label': 'search functions', name: 'search' });
  const matched = el('span', { class: 'muted', 'data-testid': 'search-share' });
  const fnPanel = el('div', { 'data-testid': 'function-slot' });
  const pick = (name) => selectFunction(name);
  const frame = flamegraphFrame('/api/profile.svg?' + qs(Object.assign({ width: svgWidth(), hide }, p, icicle ? { icicle: 'true' } : {})), 'flamegraph', 'flamegraph', pick);
  // inferno's search() works once its init() ran, on the SVG's load event (before that
  // its global `frames` is still the window, and search() throws): until the frame has
  // loaded, a search waits for the load handler below.
  let frameLoaded = false;
  const runSearch = (term) => {
    const w = frame.contentWindow;
    if (!frameLoaded || !w || typeof w.search !== 'function' || w.frames === w) return;
    if (typeof w.reset_search === 'function') w.reset_search();
    if (!term) { matched.textContent = ''; return; }
    w.search(regexEscape(term));
    const m = w.document.getElementById('matched');
    matched.textContent = m && m.textContent.trim() ? m.textContent : 'no match';
  };
  const doSearch = (term) => { search.value = term; state.search = term; recordParams('explore', state); runSearch(term); };
  frame.addEventListener('load', () => { frameLoaded = true; runSearch(search.value); });
  search.addEventListener('keydown', (e) => { if (e.key === 'Enter') doSearch(search.value); });
  root.append(el('section', { class: 'card' },
    el('div', { class: 'controls' },
      el('label', {}, 'search', el('span', { class: 'inline' }, search,
        el('button', { type: 'button', onclick: () => doSearch(search.value), text: 'Search' }),
        el('button', { type: 'button', onclick: () => { const w = frame.contentWindow; if (w && w.unzoom) w.unzoom(); doSearch(''); }, text: 'Reset' }))),
      hideControl(hide, (v) => update({ hide: v })),
      el('button', { type: 'button', 'aria-pressed': String(icicle), onclick: () => update({ icicle: icicle ? '' : '1' }), text: icicle ? 'Flame' : 'Icicle' }),
      matched),
    el('p', { class: 'hint', text: 'Click a frame to zoom in and to see its function\'s callers, callees and ' + typeName(type) + ' over time below.' }),
    frame, downloads('profile', Object.assign({ hide }, p))));
  root.append(fnPanel);

  // Top functions: by self time unless asked otherwise; plumbing marked and hidden.
  const topBody = el('div', { class: 'loading', text: 'loading…' });
  root.append(el('section', { class: 'card' }, el('h2', { text: 'Top functions' }), topBody));
  const topDone = topP.then((top) => {
    topBody.replaceWith(topTable(top, type, sort, params.plumbing === '1', (name) => { doSearch(name); selectFunction(name, true); },
      (s) => update({ sort: s === 'self' ? '' : s }),
      (show) => { state.plumbing = show ? '1' : ''; recordParams('explore', state); }));
  }).catch((e) => topBody.replaceWith(panelError('top functions', e)));

  // A function's sandwich: callers and callees, and its CPU over time.
  let fnSeq = 0;
  function selectFunction(name, scroll) {
    const seq = ++fnSeq;
    state.fn = name;
    recordParams('explore', state);
    const panel = functionPanel(name, p, type, hide, topP, () => { state.fn = ''; recordParams('explore', state); fnPanel.replaceChildren(); }, pick,
      (a, b) => update({ from: String(a), to: String(b) }));
    fnPanel.replaceChildren(panel.node);
    if (scroll) panel.node.scrollIntoView({ block: 'start' });
    return panel.done.then(() => { if (seq === fnSeq) fnPanel.dataset.ready = name; });
  }
  const fnDone = params.fn ? selectFunction(params.fn) : Promise.resolve();
  return { node: root, done: Promise.all([cpuDone, topDone, fnDone, keysP.catch(() => null)]) };
}

function topTable(top, type, sort, showPlumbing, onPick, onSort, onPlumbing) {
  const rows = top.functions.slice().sort((a, b) => b[sort] - a[sort] || a.name.localeCompare(b.name));
  // Each function's part of the selection's average, in the series' unit (cores for CPU).
  const average = top.average !== undefined ? top.average : top.total_cores;
  const u = unitOf(top.average_unit || 'cores', type);
  const cores = (n) => top.total && average !== undefined ? u.fmt(n / top.total * average) : '';
  const pct = (n) => (top.total ? (100 * n / top.total).toFixed(1) : '0.0') + '%';
  const header = (key, label) => el('th', { class: 'num', colspan: 2, 'aria-sort': sort === key ? 'descending' : 'none' },
    el('button', { type: 'button', onclick: () => onSort(key), text: label + (sort === key ? ' ▼' : '') }));
  const plumbingCount = rows.filter((f) => f.plumbing).length;
  const table = el('table', { 'data-testid': 'top-functions', class: showPlumbing ? '' : 'hide-plumbing' },
    el('thead', {}, el('tr', {}, el('th', { text: 'function' }), header('self', 'self'), header('total', 'total'))),
    el('tbody', {}, rows.map((f) => el('tr', {
      class: 'fn' + (f.plumbing ? ' plumbing' : ''), tabindex: 0, 'data-function': f.name,
      onclick: () => onPick(f.name), onkeydown: (e) => { if (e.key === 'Enter') onPick(f.name); },
    },
    el('td', { class: 'name' }, el('span', { text: f.name }), f.plumbing ? el('span', { class: 'badge', title: 'A thread root or runtime plumbing frame, not work of its own', text: 'plumbing' }) : null),
    el('td', { class: 'num', text: pct(f.self) }), el('td', { class: 'num muted', text: cores(f.self) }),
    el('td', { class: 'num', text: pct(f.total) }), el('td', { class: 'num muted', text: cores(f.total) })))));
  const toggle = el('input', { type: 'checkbox', name: 'plumbing', checked: showPlumbing, 'data-testid': 'show-plumbing' });
  toggle.addEventListener('change', () => { table.classList.toggle('hide-plumbing', !toggle.checked); onPlumbing(toggle.checked); });
  return el('div', {},
    el('p', { class: 'muted' },
      'Shares of the selection\'s ' + typeName(type) + ': ' + (isLevel(u.unit)
        // A level (in use at each profile): the counts summed over profiles mean nothing.
        ? u.fmt(average) + ' on average (each target\'s mean per profile, summed)'
        : fmtCounts(top.total, top.unit || 'cpu_periods', type) + (average !== undefined ? ', ' + u.fmt(average) + ' averaged over the whole range' : '')) + '. ',
      el('label', { class: 'check' }, toggle, ' show thread roots and runtime plumbing (' + plumbingCount + ')')),
    table);
}

// Direct callers (or callees) of a function from sandwich folded text: the frame next to
// the function in each stack, with its periods.
function nextFrames(folded, emptyName) {
  const m = new Map();
  let total = 0;
  for (const line of (folded || '').split('\n')) {
    const i = line.lastIndexOf(' ');
    if (i < 0) continue;
    const n = Number(line.slice(i + 1));
    if (!isFinite(n)) continue;
    const frames = line.slice(0, i).split(';');
    const k = frames.length > 1 ? frames[1] : emptyName;
    m.set(k, (m.get(k) || 0) + n);
    total += n;
  }
  return { total, rows: [...m.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])) };
}

function functionPanel(name, p, type, hide, topP, onClose, onPick, onSelect) {
  const sel = Object.assign({ function: name }, p);
  const totals = el('p', { 'data-testid': 'function-totals', class: 'muted', text: 'loading…' });
  const chartSlot = el('div', { class: 'loading', text: 'loading…' });
  const side = (which, title, emptyName) => {
    const list = el('div', { 'data-testid': 'sandwich-' + which, class: 'loading', text: 'loading…' });
    const frame = flamegraphFrame('/api/sandwich.svg?' + qs(Object.assign({ side: which, width: Math.floor(svgWidth() / 2) - 12, hide }, sel)), title + ' of ' + name, 'sandwich-' + which + '-flamegraph', onPick);
    return { list, frame, emptyName, node: el('div', {}, el('h3', { text: title }), list, frame) };
  };
  const callers = side('callers', 'Callers', '(none: a thread root)');
  const callees = side('callees', 'Callees', '(self)');
  const node = el('section', { class: 'card', 'data-testid': 'function-panel', 'aria-label': 'function ' + name },
    el('div', { class: 'card-head' }, el('h2', {}, 'Function ', el('span', { class: 'name fn-name', 'data-testid': 'function-name', text: name })),
      el('button', { type: 'button', onclick: onClose, text: 'Close' })),
    totals,
    el('h3', { text: 'Its ' + typeName(type) + ' over time, in ' + unitOf(typeInfo(type)[2], type).axis + ' (self: in the function itself; total: with what it calls)' }), chartSlot,
    el('div', { class: 'row' }, callers.node, callees.node));
  const chartDone = apiJson('/api/timeseries?' + qs(sel)).then((ts) => {
    const f = ts.function || { self: [], total: [] };
    chartSlot.replaceWith(timeChart(ts, [
      { name: 'total', points: f.total, color: COLORS[0], area: true },
      { name: 'self', points: f.self, color: COLORS[1] },
    ], { label: typeName(type) + ' of ' + name + ' in ' + unitOf(ts.unit, type).axis + ' over time', testid: 'function-chart', height: 160, onSelect }));
  }).catch((e) => chartSlot.replaceWith(panelError('the function\'s ' + typeName(type) + ' over time', e)));
  const sandwichDone = Promise.all([apiJson('/api/sandwich?' + qs(Object.assign({ hide }, sel))), topP.catch(() => null)]).then(([s, top]) => {
    const all = s.profile_total || (top && top.total) || 0;
    const countUnit = (top && top.unit) || 'cpu_periods';
    const counts = (n) => fmtCounts(n, countUnit, type);
    const share = (n) => all ? fmtPct(n / all) : counts(n);
    totals.textContent = 'self ' + share(s.self) + ' · total ' + share(s.total) + ' of the selection\'s ' + typeName(type) + (countUnit === 'cpu_periods' || countUnit === 'wall_periods'
      ? ' (' + s.self.toLocaleString('en') + ' and ' + s.total.toLocaleString('en') + (all ? ' of ' + all.toLocaleString('en') : '') + ' periods)'
      : ' (' + counts(s.self) + ' and ' + counts(s.total) + (all ? ' of ' + counts(all) : '') + (isLevel(unitOf(typeInfo(type)[2]).unit) ? ', summed over the profiles' : '') + ')');
    for (const [sideObj, folded] of [[callers, s.callers], [callees, s.callees]]) {
      const { total, rows } = nextFrames(folded, sideObj.emptyName);
      sideObj.list.classList.remove('loading');
      sideObj.list.replaceChildren(rows.length ? el('table', { class: 'compact' },
        el('thead', {}, el('tr', {}, el('th', { text: sideObj === callers ? 'direct caller' : 'direct callee' }), el('th', { class: 'num', text: 'share' }))),
        el('tbody', {}, rows.slice(0, 8).map(([n, c]) => el('tr', { class: 'fn', tabindex: 0, 'data-function': n, onclick: () => { if (!n.startsWith('(')) onPick(n); }, onkeydown: (e) => { if (e.key === 'Enter' && !n.startsWith('(')) onPick(n); } },
          el('td', { class: 'name', text: n }), el('td', { class: 'num', text: fmtPct(total ? c / total : 0) }))))) : el('p', { class: 'muted', text: 'none' }));
    }
  }).catch((e) => { totals.replaceWith(panelError('callers and callees', e)); callers.list.textContent = ''; callees.list.textContent = ''; });
  return { node, done: Promise.all([chartDone, sandwichDone]) };
}

// --- Compare -----------------------------------------------------------------------
function renderCompare(params) {
  const keysP = labelKeys();
  const update = (changes) => navigate('compare', Object.assign({}, params, changes));
  const target = { query: params.query || '{}', from: params.from || 'now-1h', to: params.to || 'now' };
  const base = { base: params.base || target.query, base_from: params.base_from || target.from, base_to: params.base_to || target.to };
  const hide = params.hide || '';
  const absolute = params.normalize === 'false';
  // One profile type for both sides (the base follows `type`).
  const type = params.type || 'cpu';
  const all = Object.assign({ hide, type: type === 'cpu' ? '' : type }, base, target);
  const changesP = apiJson('/api/changes?' + qs(all));
  const widthButton = (abs, text) => el('button', { type: 'button', 'aria-pressed': String(abs === absolute), 'data-testid': abs ? 'widths-absolute' : 'widths-share', onclick: () => update({ normalize: abs ? 'false' : '' }), text });
  const root = el('div', {}, el('h1', { text: 'Compare' }),
    el('div', { class: 'controls' }, typeControl(type, (t) => update({ type: t, base_type: '' }))),
    el('div', { class: 'row' },
      el('section', { class: 'card', 'data-testid': 'side-base' }, el('div', { class: 'card-head' }, el('h2', { text: 'A (base)' }), baseShortcuts(target, update)),
        selectionControls('base', Object.assign({}, params, base), update, keysP)),
      el('section', { class: 'card', 'data-testid': 'side-target' }, el('h2', { text: 'B' }), selectionControls('', Object.assign({}, params, target), update, keysP))));

  // What each side costs, in the type's unit (cores for CPU) and per instance.
  const totalsBody = el('div', { class: 'loading', text: 'loading…' });
  const totalsTitle = el('h2', { text: typeName(type) + ' of each side, in ' + unitOf(typeInfo(type)[2], type).axis });
  root.append(el('section', { class: 'card', 'data-testid': 'compare-totals', 'data-type': type }, totalsTitle, totalsBody));
  // The verdict: what changed beyond the windows' own variation.
  const verdictBody = el('div', { class: 'loading', text: 'loading…' });
  root.append(el('section', { class: 'card', 'data-testid': 'verdict' }, el('h2', { text: 'What changed from A to B' }), verdictBody));
  const changesDone = changesP.then((c) => {
    const u = unitOf((c.target && c.target.unit) || 'cores', type);
    totalsTitle.textContent = typeName(type) + ' of each side, in ' + u.axis;
    totalsBody.replaceWith(sideTotals(c, u, type));
    verdictBody.replaceWith(verdict(c, type));
  }).catch((e) => { totalsBody.replaceWith(panelError('the totals', e)); verdictBody.replaceWith(panelError('the changes', e)); });

  const diffParams = Object.assign({}, all, absolute ? { normalize: 'false' } : {});
  root.append(el('section', { class: 'card' },
    el('div', { class: 'controls' },
      hideControl(hide, (v) => update({ hide: v })),
      el('span', { class: 'presets', role: 'group', 'aria-label': 'flamegraph widths' }, 'widths: ', widthButton(false, 'share of total'), widthButton(true, 'absolute'))),
    el('p', { class: 'muted', text: absolute
      ? 'Widths show B; colour is the change in ' + (type === 'cpu' || type === 'wall' ? 'periods' : typeName(type)) + ' from A to B, as they are (A not scaled): red grew, blue shrank.'
      : 'Widths show B; colour is the change in share of total ' + typeName(type) + ' from A to B (A scaled to B\'s total): red grew, blue shrank.' }),
    flamegraphFrame('/api/diff.svg?' + qs(Object.assign({ width: svgWidth() }, diffParams)), 'differential flamegraph'),
    downloads('diff', diffParams, ['svg', 'folded'])));
  return { node: root, done: changesDone };
}

// Shortcuts for A: B's selection over the period before B's (this hour against the last
// one), or B's range (another label value over the same time).
function baseShortcuts(target, update) {
  const prev = previousPeriod(target.from, target.to);
  return el('span', { class: 'shortcuts' },
    prev ? el('button', { type: 'button', 'data-testid': 'base-previous-period', title: 'A: B\'s selector over the period of the same length before B\'s', onclick: () => update({ base: target.query, base_from: prev.from, base_to: prev.to }), text: 'B\'s selection, the period before' }) : null,
    el('button', { type: 'button', 'data-testid': 'base-same-range', title: 'A: over B\'s time range', onclick: () => update({ base_from: target.from, base_to: target.to }), text: 'B\'s time range' }));
}

function sideTotals(c, u, type) {
  const val = (s) => (s && s.value !== undefined ? s.value : s && s.cores);
  const side = (key, title) => {
    const s = c[key] || {};
    const inst = Object.entries(s.instances || {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    return el('div', { class: 'side', 'data-testid': 'totals-' + key },
      el('h3', { text: title }),
      el('p', {}, el('b', { class: 'big', 'data-testid': 'cores-' + key, 'data-unit': u.unit, text: u.fmt(val(s)) }),
        el('span', { class: 'muted', text: ' on average over the range; ' + (s.windows || 0) + ' time buckets tested' })),
      inst.length ? el('table', { class: 'compact' }, el('tbody', {}, inst.map(([n, v]) => el('tr', { 'data-instance': n }, el('td', { class: 'name', text: n }), el('td', { class: 'num', text: u.fmt(v) }))))) : null);
  };
  // Sides of different sizes compare per instance too (one canary against two mains).
  const a = val(c.base), b = val(c.target);
  const na = Object.keys((c.base && c.base.instances) || {}).length, nb = Object.keys((c.target && c.target.instances) || {}).length;
  let ratioText = a > 0 && b !== undefined ? 'B ' + (type === 'cpu' ? 'uses' : 'has') + ' ' + (b / a).toFixed(2) + '× the ' + typeName(type) + ' of A' : null;
  if (ratioText && na && nb && na !== nb) {
    ratioText += ' in total; per instance ' + u.fmt(b / nb) + ' against ' + u.fmt(a / na) + ' = ' + ((b / nb) / (a / na)).toFixed(2) + '× (' + nb + ' instance' + (nb > 1 ? 's' : '') + ' against ' + na + ')';
  }
  const ratio = ratioText ? el('p', { class: 'ratio', 'data-testid': 'cores-ratio', text: ratioText }) : null;
  return el('div', {}, el('div', { class: 'row' }, side('base', 'A (base)'), side('target', 'B')), ratio);
}

function verdict(c, type) {
  const changes = c.changes || [];
  const sig = changes.filter((x) => x.significant);
  const noise = changes.filter((x) => !x.significant);
  const alpha = c.alpha !== undefined ? c.alpha : 0.01;
  const table = (rows, testid, isNoise) => el('table', { 'data-testid': testid },
    el('thead', {}, el('tr', {}, ['function', 'A share', 'B share', 'change', (100 * (1 - alpha)).toFixed(0) + '% interval', 'p-value', ''].map((h, i) => el('th', { class: i && i < 6 ? 'num' : '', text: h })))),
    el('tbody', {}, rows.map((d) => el('tr', { 'data-function': d.function, class: isNoise ? 'noise' : '' },
      el('td', { class: 'name', text: d.function }),
      el('td', { class: 'num', text: fmtPct(d.base_share) }), el('td', { class: 'num', text: fmtPct(d.target_share) }),
      el('td', { class: 'num ' + (isNoise ? 'muted' : d.delta > 0 ? 'grew' : 'shrank'), text: fmtPp(d.delta) }),
      el('td', { class: 'num muted', text: fmtPp(d.ci_low) + ' … ' + fmtPp(d.ci_high) }),
      el('td', { class: 'num muted', text: fmtP(d.p_value) }),
      el('td', {}, isNoise ? el('span', { class: 'badge noise-badge', text: 'noise' }) : el('span', { class: 'badge ' + (d.delta > 0 ? 'grew-badge' : 'shrank-badge'), text: d.delta > 0 ? 'grew' : 'shrank' }))))));
  return el('div', {},
    sig.length
      ? el('div', {}, el('p', { class: 'verdict-line', 'data-testid': 'verdict-line', text: sig.length + ' function' + (sig.length > 1 ? 's' : '') + ' changed share significantly (p < ' + alpha + '), most significant first:' }),
        table(sig.slice(0, 12), 'changes-significant', false),
        sig.length > 12 ? el('details', { class: 'noise' }, el('summary', { text: (sig.length - 12) + ' more significant change' + (sig.length > 13 ? 's' : '') }), table(sig.slice(12), 'changes-significant-more', false)) : null)
      : el('p', { class: 'verdict-line', 'data-testid': 'verdict-line', text: 'No function\'s share of ' + typeName(type) + ' changed significantly (p < ' + alpha + '): the differences below are within the windows\' own variation.' }),
    noise.length ? el('details', { class: 'noise', 'data-testid': 'noise' }, el('summary', { text: noise.length + ' other difference' + (noise.length > 1 ? 's' : '') + ': noise, within the windows\' own variation' }), table(noise.slice(0, 50), 'changes-noise', true)) : null,
    c.method ? el('p', { class: 'muted small', 'data-testid': 'method', text: 'Method: ' + c.method }) : null);
}

// --- render loop -------------------------------------------------------------------
let renderSeq = 0;
async function render() {
  const seq = ++renderSeq;
  const route = currentRoute();
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.view === route.name);
  setStatus('loading…');
  document.body.dataset.ready = 'loading';
  try {
    const page = route.name === 'explore' ? renderExplore(route.params)
      : route.name === 'compare' ? renderCompare(route.params)
        : await renderFleet();
    if (seq !== renderSeq) return;
    view.replaceChildren(page.node);
    await page.done;
    if (seq !== renderSeq) return;
    document.body.dataset.ready = route.name;
    setStatus('');
  } catch (e) {
    if (seq !== renderSeq) return;
    view.replaceChildren(el('div', { class: 'card' }, el('h1', { text: 'Could not load' }), el('p', { class: 'err', role: 'alert', text: e.message })));
    document.body.dataset.ready = 'error';
    setStatus('');
  }
}
window.addEventListener('hashchange', render);
// Log out: the server clears its cookie; the next request asks for a token again.
document.getElementById('logout').addEventListener('click', async () => {
  await fetch('/api/logout', { method: 'POST', credentials: 'same-origin' });
  location.reload();
});
render();
