// The Explore view: a selection's flamegraph, CPU over time, top functions, a function's panel.

import { el, panelError, setStatus } from './dom.js';
import { apiJson, qs } from './api.js';
import { navigate, recordParams, routeUrl } from './route.js';
import { fmtCounts, fmtPct, isLevel, typeControl, typeInfo, typeName, unitOf } from './format.js';
import { labelKeyOptions, labelKeys, previousPeriod, regexEscape, withMatcher } from './selector.js';
import { COLORS, NONE_COLOR, OTHER_COLOR, timeChart } from './chart.js';
import { downloads, flamegraphFrame, hideControl, selectionControls, svgWidth } from './panels.js';

export function renderExplore(params) {
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
    // "(none)" is the samples (or targets) that carry no such label: say so.
    const noneLabel = 'no ' + groupLabel + ' label';
    const lines = (ts.series || []).map((s) => ({
      name: s.name, points: s.points,
      label: s.name === '(none)' ? noneLabel : undefined,
      title: s.name === '(none)' ? 'what was sampled outside any ' + groupLabel + ' label (click: only that)' : undefined,
      color: s.name === '[other]' ? OTHER_COLOR : s.name === '(none)' ? NONE_COLOR : COLORS[ci++ % COLORS.length],
    }));
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
