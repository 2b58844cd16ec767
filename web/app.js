// stackwatch dashboard: Fleet, Explore, Compare. Vanilla JS, no build step, no CDN.
// Frame names and labels come from workers and are untrusted: they are only ever put
// into the page with textContent or attribute setters, never parsed as HTML.
'use strict';

const view = document.getElementById('view');
const statusLine = document.getElementById('status');

// el('tag', {attr: value, onclick: fn}, child...) builds DOM safely.
function el(tag, attrs, ...children) {
  const ns = ['svg', 'polyline', 'path', 'rect', 'text', 'line', 'g'].includes(tag) ? 'http://www.w3.org/2000/svg' : null;
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

// --- API access (bearer token asked once, kept for the session as a cookie) ---------
async function api(path) {
  let r = await fetch(path, { credentials: 'same-origin' });
  if (r.status === 401) {
    const t = window.prompt('This stackwatch server needs a bearer token:');
    if (t) {
      document.cookie = 'stackwatch_token=' + encodeURIComponent(t) + '; path=/; SameSite=Strict';
      r = await fetch(path, { credentials: 'same-origin' });
    }
  }
  if (!r.ok) {
    let msg = r.status + ' ' + r.statusText;
    try { const j = await r.json(); msg = (j.parameter ? j.parameter + ': ' : '') + j.error; } catch (_) { /* not JSON */ }
    throw new Error(msg);
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
  const [name, query] = h.split('?');
  return { name: name || 'fleet', params: Object.fromEntries(new URLSearchParams(query || '')) };
}
function navigate(name, params, replace) {
  const url = '#/' + name + (Object.keys(params).length ? '?' + qs(params) : '');
  if (replace) history.replaceState(null, '', url); else location.hash = url;
  if (replace) render();
}
function setStatus(text) { statusLine.textContent = text; }

// --- time helpers ------------------------------------------------------------------
const PRESETS = [['15m', 'now-15m'], ['1h', 'now-1h'], ['6h', 'now-6h'], ['24h', 'now-24h'], ['7d', 'now-7d']];
function fmtTime(unix) { return new Date(unix * 1000).toISOString().replace('.000Z', 'Z'); }
function fmtCount(n) { return n >= 1e6 ? (n / 1e6).toFixed(1) + 'M' : n >= 1e3 ? (n / 1e3).toFixed(1) + 'k' : String(n); }
function regexEscape(s) { return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'); }

// --- Fleet -------------------------------------------------------------------------
async function renderFleet() {
  const targets = await apiJson('/api/targets');
  const byService = new Map();
  for (const t of targets) {
    const svc = t.labels.service || '(no service)';
    if (!byService.has(svc)) byService.set(svc, []);
    byService.get(svc).push(t);
  }
  const root = el('div', {}, el('h1', { text: 'Fleet' }));
  if (!targets.length) root.append(el('p', { class: 'muted', text: 'No targets configured yet.' }));
  for (const [svc, list] of [...byService.entries()].sort()) {
    const up = list.filter((t) => t.up).length;
    const tbody = el('tbody');
    const card = el('section', { class: 'card', 'aria-label': 'service ' + svc },
      el('h2', {}, el('a', { href: '#/explore?' + qs({ query: '{service="' + svc + '"}', from: 'now-1h', to: 'now' }), text: svc }),
        el('span', { class: 'muted', text: '  ' + up + ' of ' + list.length + ' up' })),
      el('table', {}, el('thead', {}, el('tr', {}, ['instance', 'version', 'state', 'last scrape', 'samples', 'CPU, last hour', ''].map((h) => el('th', { text: h })))), tbody));
    for (const t of list.sort((a, b) => (a.labels.instance || '').localeCompare(b.labels.instance || ''))) {
      const spark = el('svg', { class: 'spark', viewBox: '0 0 160 28', role: 'img', 'aria-label': 'CPU sparkline' });
      const sel = '{' + Object.entries(t.labels).map(([k, v]) => k + '="' + v.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"').join(',') + '}';
      tbody.append(el('tr', { 'data-instance': t.labels.instance || '' },
        el('td', { text: t.labels.instance || t.url }),
        el('td', { text: t.labels.version || '' }),
        el('td', {}, el('span', { class: t.up ? 'up' : 'down', text: t.up ? 'up' : 'down' }), t.last_error ? el('div', { class: 'err', text: t.last_error }) : null),
        el('td', { text: t.last_scrape_unix_ms ? Math.round((Date.now() - t.last_scrape_unix_ms) / 1000) + ' s ago' : 'never' }),
        el('td', { class: 'num', text: fmtCount(t.samples_ingested_total) }),
        el('td', {}, spark),
        el('td', {}, el('a', { href: '#/explore?' + qs({ query: sel, from: 'now-1h', to: 'now' }), text: 'explore' }))));
      apiJson('/api/timeseries?' + qs({ query: sel, from: 'now-1h', to: 'now', step: '1m' })).then((ts) => {
        const max = Math.max(1, ...ts.points.map((p) => p[1]));
        const pts = ts.points.map((p, i) => (i * 160 / Math.max(1, ts.points.length - 1)).toFixed(1) + ',' + (26 - p[1] / max * 24).toFixed(1));
        spark.append(el('polyline', { points: pts.join(' ') }));
      }).catch(() => {});
    }
    root.append(card);
  }
  return root;
}

// --- shared pieces of Explore and Compare -------------------------------------------
function selectionControls(prefix, params, onChange, labels) {
  const q = params[prefix ? prefix : 'query'] || '{}';
  const fromKey = prefix ? prefix + '_from' : 'from';
  const toKey = prefix ? prefix + '_to' : 'to';
  const selector = el('input', { class: 'selector', value: q, 'aria-label': (prefix || 'query') + ' label selector', name: prefix || 'query' });
  const from = el('input', { value: params[fromKey] || 'now-1h', 'aria-label': 'from', size: 14, name: fromKey });
  const to = el('input', { value: params[toKey] || 'now', 'aria-label': 'to', size: 14, name: toKey });
  const apply = () => onChange({ [prefix || 'query']: selector.value, [fromKey]: from.value, [toKey]: to.value });
  for (const i of [selector, from, to]) i.addEventListener('keydown', (e) => { if (e.key === 'Enter') apply(); });
  const pickers = el('span', { class: 'controls' });
  for (const name of labels) {
    const s = el('select', { 'aria-label': 'label ' + name, 'data-label': name }, el('option', { value: '', text: name + ': any' }));
    const m = q.match(new RegExp('(?:^|[{,])\\s*' + regexEscape(name) + '="([^"]*)"'));
    apiJson('/api/label/' + encodeURIComponent(name) + '/values').then((values) => {
      for (const v of values) s.append(el('option', { value: v, text: name + ': ' + v, selected: m && m[1] === v }));
    }).catch(() => {});
    s.addEventListener('change', () => {
      const parts = (selector.value.replace(/^\s*\{|\}\s*$/g, '').match(/[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"/g) || [])
        .filter((p) => !new RegExp('^' + regexEscape(name) + '\\s*(=~|!~|!=|=)').test(p));
      if (s.value) parts.push(name + '="' + s.value.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"');
      selector.value = '{' + parts.join(',') + '}';
      apply();
    });
    pickers.append(s);
  }
  const presets = el('span', { class: 'presets', role: 'group', 'aria-label': 'time range presets' },
    PRESETS.map(([label, value]) => el('button', { type: 'button', 'aria-pressed': String(from.value === value && to.value === 'now'), onclick: () => { from.value = value; to.value = 'now'; apply(); }, text: label })));
  return el('div', { class: 'controls' },
    el('label', {}, 'label selector', selector), pickers, el('label', {}, 'from', from), el('label', {}, 'to', to), presets,
    el('button', { type: 'button', class: 'primary', onclick: apply, text: 'Apply' }));
}

// The CPU-over-time chart; dragging across it selects a window.
function cpuChart(series, onSelect) {
  const W = 1000, H = 140, pad = 24;
  const svg = el('svg', { class: 'chart', viewBox: '0 0 ' + W + ' ' + H, preserveAspectRatio: 'none', role: 'img', 'aria-label': 'CPU samples over time; drag to select a window', 'data-testid': 'cpu-chart' });
  const pts = series.points;
  const max = Math.max(1, ...pts.map((p) => p[1]));
  const x = (i) => pad + i * (W - 2 * pad) / Math.max(1, pts.length - 1);
  const y = (v) => H - pad - v / max * (H - 2 * pad);
  if (pts.length) {
    const d = 'M' + x(0) + ',' + (H - pad) + pts.map((p, i) => ' L' + x(i).toFixed(1) + ',' + y(p[1]).toFixed(1)).join('') + ' L' + x(pts.length - 1) + ',' + (H - pad) + ' Z';
    svg.append(el('path', { class: 'area', d }));
    svg.append(el('text', { x: pad, y: H - 6, text: fmtTime(series.from) }));
    svg.append(el('text', { x: W - pad, y: H - 6, 'text-anchor': 'end', text: fmtTime(series.to) }));
    svg.append(el('text', { x: pad, y: 14, text: 'max ' + fmtCount(max) + ' samples / ' + series.step + ' s' }));
  }
  const sel = el('rect', { class: 'sel', x: 0, y: 0, width: 0, height: H, visibility: 'hidden' });
  svg.append(sel);
  let start = null;
  const toX = (ev) => { const r = svg.getBoundingClientRect(); return Math.min(W - pad, Math.max(pad, (ev.clientX - r.left) / r.width * W)); };
  const toT = (px) => Math.round(series.from + (px - pad) / (W - 2 * pad) * (series.to - series.from));
  svg.addEventListener('mousedown', (ev) => { start = toX(ev); sel.setAttribute('visibility', 'visible'); sel.setAttribute('x', start); sel.setAttribute('width', 0); ev.preventDefault(); });
  svg.addEventListener('mousemove', (ev) => { if (start === null) return; const cur = toX(ev); sel.setAttribute('x', Math.min(start, cur)); sel.setAttribute('width', Math.abs(cur - start)); });
  window.addEventListener('mouseup', function up(ev) {
    if (start === null) return;
    const a = toT(Math.min(start, toX(ev))), b = toT(Math.max(start, toX(ev)));
    start = null;
    window.removeEventListener('mouseup', up);
    if (b - a >= 1) onSelect(a, b);
  });
  return svg;
}

// Flamegraphs are drawn at the page's width (a fixed width: inferno's fluid layout
// misbehaves in frames that are replaced while loading).
function svgWidth() { return Math.max(600, Math.floor((view.clientWidth || 1200) - 64)); }

function flamegraphFrame(src, label) {
  const f = el('iframe', { class: 'flame', src, title: label, 'data-testid': 'flamegraph' });
  f.addEventListener('load', () => fitFrame(f));
  return f;
}

// Shows the whole flamegraph: the frame takes the SVG's own height.
function fitFrame(frame) {
  const svg = frame.contentDocument && frame.contentDocument.documentElement;
  const h = svg && Number(svg.getAttribute('height'));
  if (h > 0) frame.style.height = (h + 4) + 'px';
}

function downloads(base, params) {
  return el('p', { class: 'downloads' }, 'Download: ',
    ['svg', 'folded', 'pb.gz'].map((f) => el('a', { href: '/api/' + base + '.' + f + '?' + qs(params), download: base + '.' + f, text: f === 'pb.gz' ? 'pprof' : f })));
}

// --- Explore -----------------------------------------------------------------------
async function renderExplore(params) {
  const p = { query: params.query || '{}', from: params.from || 'now-1h', to: params.to || 'now' };
  const icicle = params.icicle === '1';
  const labels = await apiJson('/api/labels');
  const update = (changes) => navigate('explore', Object.assign({}, params, changes));
  const root = el('div', {}, el('h1', { text: 'Explore' }), selectionControls('', params, update, labels));
  const series = await apiJson('/api/timeseries?' + qs(p));
  root.append(el('section', { class: 'card' }, el('h2', { text: 'CPU over time' }),
    cpuChart(series, (a, b) => update({ from: String(a), to: String(b) }))));
  const search = el('input', { type: 'search', placeholder: 'function name', value: params.search || '', 'aria-label': 'search functions', name: 'search' });
  const matched = el('span', { class: 'muted', 'data-testid': 'search-share' });
  const frame = flamegraphFrame('/api/profile.svg?' + qs(Object.assign({ width: svgWidth() }, p, icicle ? { icicle: 'true' } : {})), 'flamegraph');
  const runSearch = (term) => {
    const w = frame.contentWindow;
    if (!w || typeof w.search !== 'function') return;
    if (typeof w.reset_search === 'function') w.reset_search();
    if (!term) { matched.textContent = ''; return; }
    w.search(regexEscape(term));
    const m = w.document.getElementById('matched');
    matched.textContent = m && m.textContent ? m.textContent : 'no match';
  };
  frame.addEventListener('load', () => { fitFrame(frame); runSearch(search.value); });
  search.addEventListener('keydown', (e) => { if (e.key === 'Enter') { navigate('explore', Object.assign({}, params, { search: search.value }), true); } });
  root.append(el('section', { class: 'card' },
    el('div', { class: 'controls' },
      el('label', {}, 'search', search),
      el('button', { type: 'button', onclick: () => navigate('explore', Object.assign({}, params, { search: search.value }), true), text: 'Search' }),
      el('button', { type: 'button', onclick: () => { const w = frame.contentWindow; if (w && w.unzoom) w.unzoom(); runSearch(''); search.value = ''; navigate('explore', Object.assign({}, params, { search: '' }), true); }, text: 'Reset' }),
      el('button', { type: 'button', 'aria-pressed': String(icicle), onclick: () => update({ icicle: icicle ? '' : '1' }), text: icicle ? 'Flame' : 'Icicle' }),
      matched),
    frame, downloads('profile', p)));
  const top = await apiJson('/api/top?' + qs(Object.assign({ limit: 50 }, p)));
  root.append(el('section', { class: 'card' }, el('h2', { text: 'Top functions' }), topTable(top, params.sort || 'total', (name) => {
    search.value = name;
    navigate('explore', Object.assign({}, params, { search: name }), true);
  }, (sort) => navigate('explore', Object.assign({}, params, { sort }), true))));
  return root;
}

function topTable(top, sort, onPick, onSort) {
  const rows = top.functions.slice().sort((a, b) => b[sort] - a[sort] || a.name.localeCompare(b.name));
  const pct = (n) => (top.total ? (100 * n / top.total).toFixed(1) : '0.0') + '%';
  const header = (key, label) => el('th', { class: 'num', 'aria-sort': sort === key ? 'descending' : 'none' },
    el('button', { type: 'button', onclick: () => onSort(key), text: label + (sort === key ? ' ▼' : '') }));
  return el('table', { 'data-testid': 'top-functions' },
    el('thead', {}, el('tr', {}, el('th', { text: 'function' }), header('self', 'self'), header('total', 'total'))),
    el('tbody', {}, rows.map((f) => el('tr', { class: 'fn', tabindex: 0, onclick: () => onPick(f.name), onkeydown: (e) => { if (e.key === 'Enter') onPick(f.name); } },
      el('td', { class: 'name', text: f.name }), el('td', { class: 'num', text: pct(f.self) }), el('td', { class: 'num', text: pct(f.total) })))));
}

// --- Compare -----------------------------------------------------------------------
async function renderCompare(params) {
  const labels = await apiJson('/api/labels');
  const update = (changes) => navigate('compare', Object.assign({}, params, changes));
  const target = { query: params.query || '{}', from: params.from || 'now-1h', to: params.to || 'now' };
  const base = { base: params.base || target.query, base_from: params.base_from || target.from, base_to: params.base_to || target.to };
  const root = el('div', {}, el('h1', { text: 'Compare' }),
    el('p', { class: 'muted', text: 'Widths show B; red grew and blue shrank from A to B (A scaled to B\'s total).' }),
    el('div', { class: 'row' },
      el('section', { class: 'card' }, el('h2', { text: 'A (base)' }), selectionControls('base', Object.assign({}, params, base), update, labels)),
      el('section', { class: 'card' }, el('h2', { text: 'B' }), selectionControls('', Object.assign({}, params, target), update, labels))));
  const all = Object.assign({}, base, target);
  root.append(el('section', { class: 'card' }, flamegraphFrame('/api/diff.svg?' + qs(Object.assign({ width: svgWidth() }, all)), 'differential flamegraph'),
    el('p', { class: 'downloads' }, 'Download: ', el('a', { href: '/api/diff.svg?' + qs(all), download: 'diff.svg', text: 'svg' }), el('a', { href: '/api/diff.folded?' + qs(all), download: 'diff.folded', text: 'folded' }))));
  const [a, b] = await Promise.all([
    apiJson('/api/top?' + qs({ query: base.base, from: base.base_from, to: base.base_to, limit: 500 })),
    apiJson('/api/top?' + qs(Object.assign({ limit: 500 }, target))),
  ]);
  const share = (top) => new Map(top.functions.map((f) => [f.name, top.total ? f.total / top.total : 0]));
  const sa = share(a), sb = share(b);
  const names = new Set([...sa.keys(), ...sb.keys()]);
  const deltas = [...names].map((n) => ({ name: n, a: sa.get(n) || 0, b: sb.get(n) || 0 })).map((d) => Object.assign(d, { delta: d.b - d.a }));
  deltas.sort((x, y) => Math.abs(y.delta) - Math.abs(x.delta) || x.name.localeCompare(y.name));
  const fmt = (v) => (100 * v).toFixed(1) + '%';
  root.append(el('section', { class: 'card' }, el('h2', { text: 'Functions that grew or shrank most (share of total CPU)' }),
    el('table', { 'data-testid': 'compare-table' },
      el('thead', {}, el('tr', {}, ['function', 'A', 'B', 'change'].map((h, i) => el('th', { class: i ? 'num' : '', text: h })))),
      el('tbody', {}, deltas.slice(0, 30).map((d) => el('tr', {},
        el('td', { class: 'name', text: d.name }), el('td', { class: 'num', text: fmt(d.a) }), el('td', { class: 'num', text: fmt(d.b) }),
        el('td', { class: 'num ' + (d.delta > 0 ? 'grew' : d.delta < 0 ? 'shrank' : ''), text: (d.delta > 0 ? '+' : '') + fmt(d.delta) })))))));
  return root;
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
    const node = route.name === 'explore' ? await renderExplore(route.params)
      : route.name === 'compare' ? await renderCompare(route.params)
        : await renderFleet();
    if (seq !== renderSeq) return;
    view.replaceChildren(node);
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
render();
