// The page's fixed places (the view, the status line) and `el`, the one way this app
// builds DOM: text and attributes only, so untrusted names are never parsed as HTML.

export const view = document.getElementById('view');
const statusLine = document.getElementById('status');
const SVG_TAGS = ['svg', 'polyline', 'path', 'rect', 'text', 'line', 'g', 'circle', 'title'];

// el('tag', {attr: value, onclick: fn}, child...) builds DOM safely.
export function el(tag, attrs, ...children) {
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

export function setStatus(text) { statusLine.textContent = text; }

// A panel that failed says so where it would have been (and in the console, where the
// end-to-end test looks), without taking the rest of the page down.
export function panelError(where, e) {
  console.error(where + ': ' + e.message);
  return el('p', { class: 'err', role: 'alert', text: 'Could not load ' + where + ': ' + e.message });
}
