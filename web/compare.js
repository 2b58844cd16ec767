// The Compare view: a base and a target, their diff flamegraph and the verdict.

import { el, panelError } from './dom.js';
import { apiJson, qs } from './api.js';
import { navigate } from './route.js';
import { fmtDuration, fmtLocal, fmtP, fmtPct, fmtPp, typeControl, typeInfo, typeName, tzName, unitOf } from './format.js';
import { labelKeys, previousPeriod } from './selector.js';
import { downloads, flamegraphFrame, hideControl, selectionControls, svgWidth } from './panels.js';

export function renderCompare(params) {
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
        el('span', { class: 'muted', 'data-testid': 'buckets-' + key, text: s.data_from === null || s.data_from === undefined
          ? ' on average over the range; no data in this range'
          : ' on average over the range; ' + (s.windows || 0) + ' time buckets of ' + fmtDuration(s.step) + ' with data tested, ' + fmtLocal(s.data_from, true, true) + ' to ' + fmtLocal(s.data_to, true, true) + ' ' + tzName() })),
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
  if (c.verdict === 'insufficient_data') {
    return el('div', {},
      el('p', { class: 'verdict-line', 'data-testid': 'verdict-line', 'data-verdict': 'insufficient_data', text: 'Not tested: ' + c.reason + '. Widen the range or wait for more data; the flamegraph below still shows the difference.' }),
      c.method ? el('p', { class: 'muted small', 'data-testid': 'method', text: 'Method: ' + c.method }) : null);
  }
  return el('div', {},
    sig.length
      ? el('div', {}, el('p', { class: 'verdict-line', 'data-testid': 'verdict-line', text: sig.length + ' function' + (sig.length > 1 ? 's' : '') + ' changed share significantly (p < ' + alpha + '), most significant first:' }),
        table(sig.slice(0, 12), 'changes-significant', false),
        sig.length > 12 ? el('details', { class: 'noise' }, el('summary', { text: (sig.length - 12) + ' more significant change' + (sig.length > 13 ? 's' : '') }), table(sig.slice(12), 'changes-significant-more', false)) : null)
      : el('p', { class: 'verdict-line', 'data-testid': 'verdict-line', text: 'No function\'s share of ' + typeName(type) + ' changed significantly (p < ' + alpha + '): the differences below are within the windows\' own variation.' }),
    noise.length ? el('details', { class: 'noise', 'data-testid': 'noise' }, el('summary', { text: noise.length + ' other difference' + (noise.length > 1 ? 's' : '') + ': noise, within the windows\' own variation' }), table(noise.slice(0, 50), 'changes-noise', true)) : null,
    c.method ? el('p', { class: 'muted small', 'data-testid': 'method', text: 'Method: ' + c.method }) : null);
}
