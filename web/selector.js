// Label selectors as the server parses them, as lists of matchers, and the filter chips.

import { el } from './dom.js';
import { apiJson } from './api.js';

export function regexEscape(s) { return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'); }
export function labelSelector(labels) {
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
export function withMatcher(text, name, value) {
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
export function labelKeys() {
  return apiJson('/api/label-keys').catch(() => apiJson('/api/labels').then((names) => ({ target: names, sample: [] })));
}
export function labelKeyOptions(keys, selected) {
  return [['target labels', keys.target || []], ['sample labels', keys.sample || []]]
    .filter(([, names]) => names.length)
    .map(([title, names]) => el('optgroup', { label: title, 'data-kind': title.split(' ')[0] },
      names.map((n) => el('option', { value: n, text: n, selected: n === selected }))));
}

// The matchers of a selector as chips, each with a button that takes it out; sample
// labels are marked (they select samples, not targets).
export function filterChips(query, keysP, onChange, testid) {
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
// The range keys of `params` with relative times ("now-15m", "now") pinned to Unix
// seconds as of `nowS`: a download or a shared link then holds the range the page showed,
// not one that moves with the clock. Absolute times stay as they are.
export function pinTimes(params, nowS) {
  const out = Object.assign({}, params);
  for (const k of ['from', 'to', 'base_from', 'base_to']) {
    const ago = typeof out[k] === 'string' ? parseAgo(out[k]) : null;
    if (ago !== null) out[k] = String(nowS - Math.round(ago));
  }
  return out;
}
export function previousPeriod(from, to) {
  const fa = parseAgo(from), ta = parseAgo(to);
  if (fa !== null && ta !== null && fa > ta) return { from: fmtAgo(fa + (fa - ta)), to: fmtAgo(fa) };
  const abs = (t) => { const a = parseAgo(t); if (a !== null) return Math.floor(Date.now() / 1000) - a; if (/^\d+$/.test(t)) return Number(t); const d = Date.parse(t); return isNaN(d) ? null : Math.floor(d / 1000); };
  const f = abs(from), e = abs(to);
  if (f === null || e === null || e <= f) return null;
  return { from: String(f - (e - f)), to: String(f) };
}
