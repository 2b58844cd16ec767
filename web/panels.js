// What Explore and Compare share: selection controls, the flamegraph frame, downloads.

import { el, setStatus, view } from './dom.js';
import { apiJson, qs } from './api.js';
import { PRESETS } from './format.js';
import { filterChips, labelKeyOptions, pinTimes, withMatcher } from './selector.js';

export function selectionControls(prefix, params, onChange, keysP) {
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
export function hideControl(value, onChange) {
  const input = el('input', { class: 'regex', name: 'hide', value: value || '', placeholder: 'e.g. ^std::|thread_start', 'aria-label': 'hide frames matching this regex', 'data-testid': 'hide-frames' });
  const apply = () => onChange(input.value);
  input.addEventListener('keydown', (e) => { if (e.key === 'Enter') apply(); });
  return el('label', { title: 'Frames matching this regular expression are removed from every stack (like go tool pprof -hide): flamegraph, tables and downloads' },
    'hide frames (regex)', el('span', { class: 'inline' }, input, el('button', { type: 'button', onclick: apply, text: 'Hide' })));
}

// Flamegraphs are drawn at the page's width (a fixed width: inferno's fluid layout
// misbehaves in frames that are replaced while loading).
export function svgWidth() { return Math.max(600, Math.floor((view.clientWidth || 1200) - 64)); }

// The name a flamegraph frame stands for, from its tooltip ("name (N samples, x%)");
// null for the root.
function frameFunction(title) {
  if (/^all \(.*, 100%\)$/.test(title)) return null;
  return title.replace(/ \([^(]*\)$/, '');
}

// An inferno SVG in a frame: it takes the SVG's own height, inferno's search button is
// hidden (the page has one search box), and a click on a frame calls onPick(name).
export function flamegraphFrame(src, label, testid, onPick) {
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

// Download links of what the page shows: its range pinned (relative times made absolute
// as of now), so a file saved later holds the same window.
export function downloads(base, params, formats) {
  const pinned = pinTimes(params, Math.floor(Date.now() / 1000));
  return el('p', { class: 'downloads' }, 'Download: ',
    (formats || ['svg', 'folded', 'pb.gz']).map((f) => el('a', { href: '/api/' + base + '.' + f + '?' + qs(pinned), download: base + '.' + f, text: f === 'pb.gz' ? 'pprof' : f })));
}
