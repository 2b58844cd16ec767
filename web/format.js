// How numbers, times and units read, and the profile types with their units.

import { el } from './dom.js';
import { apiJson } from './api.js';

export const PRESETS = [['15m', 'now-15m'], ['1h', 'now-1h'], ['6h', 'now-6h'], ['24h', 'now-24h'], ['7d', 'now-7d']];
const pad2 = (n) => String(n).padStart(2, '0');
export function tzName() {
  const off = -new Date().getTimezoneOffset();
  return 'UTC' + (off < 0 ? '−' : '+') + pad2(Math.floor(Math.abs(off) / 60)) + ':' + pad2(Math.abs(off) % 60);
}
// Local time: "18:05", "18:05:30" or "11-25 18:05".
export function fmtLocal(unix, withSeconds, withDate) {
  const d = new Date(unix * 1000);
  const hm = pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + (withSeconds ? ':' + pad2(d.getSeconds()) : '');
  return withDate ? pad2(d.getMonth() + 1) + '-' + pad2(d.getDate()) + ' ' + hm : hm;
}
export function fmtCores(v) {
  if (v === null || v === undefined || !isFinite(v)) return 'no data';
  const a = Math.abs(v);
  return (a === 0 ? '0' : a < 0.01 ? v.toFixed(4) : a < 1 ? v.toFixed(3) : a < 10 ? v.toFixed(2) : v.toFixed(1)) + ' cores';
}
export const fmtPct = (v) => (100 * v).toFixed(1) + '%';

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
export const typeInfo = (t) => PROFILE_TYPES.find((x) => x[0] === t) || [t, t, 'cores'];
export const typeName = (t) => typeInfo(t || 'cpu')[1];
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
export function unitOf(unit, type) {
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
export function fmtCounts(n, unit, type) {
  switch (unit) {
    case 'bytes': return fmtBytes(n);
    case 'nanoseconds': return fmtNs(n);
    case 'count': return fmtCount(n) + ' ' + (COUNT_NOUNS[type] || 'count');
    default: return n.toLocaleString('en') + ' periods';
  }
}
// A gauge (in use at the time of each profile) is not a rate: its values are levels.
export const isLevel = (unit) => unit === 'bytes' || unit === 'count';
export function typeControl(value, onChange) {
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
export function fmtPp(v) { return (v > 0 ? '+' : v < 0 ? '−' : '') + Math.abs(100 * v).toFixed(2) + ' pp'; }
export function fmtDuration(s) {
  if (s < 90) return Math.round(s) + ' s';
  if (s < 5400) return Math.round(s / 60) + ' min';
  return (s / 3600).toFixed(1).replace(/\.0$/, '') + ' h';
}
export function fmtP(p) { return p === null || p === undefined ? '–' : p < 1e-16 ? '< 1e-16' : p < 1e-4 ? p.toExponential(1) : p.toFixed(4); }
