// The URL hash holds every view's state: reading it, writing it, navigating.

import { qs } from './api.js';

export function currentRoute() {
  const h = location.hash.replace(/^#\/?/, '');
  const i = h.indexOf('?');
  const name = i < 0 ? h : h.slice(0, i);
  return { name: name || 'fleet', params: Object.fromEntries(new URLSearchParams(i < 0 ? '' : h.slice(i + 1))) };
}
export function routeUrl(name, params) {
  const q = qs(params);
  return '#/' + name + (q ? '?' + q : '');
}
// What re-renders the page in place (main.js's render, set once at start).
let rerender = () => {};
export function setRenderer(f) { rerender = f; }
export function navigate(name, params, replace) {
  const url = routeUrl(name, params);
  if (replace) { history.replaceState(null, '', url); rerender(); } else location.hash = url;
}
// Records a change made in place (a function picked, a search): the URL reproduces the
// view, nothing is reloaded.
export function recordParams(name, params) { history.replaceState(null, '', routeUrl(name, params)); }
