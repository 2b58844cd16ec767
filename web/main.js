// stackwatch dashboard: Fleet, Explore, Compare. Vanilla JS, no build step, no CDN.
// Frame names and labels come from workers and are untrusted: they are only ever put
// into the page with textContent or attribute setters, never parsed as HTML.
//
// This is the entry point (index.html loads it as a module); each view and each shared
// piece is a module of its own beside it, importing only what it uses.

import { el, setStatus, view } from './dom.js';
import { currentRoute, setRenderer } from './route.js';
import { renderFleet } from './fleet.js';
import { renderExplore } from './explore.js';
import { renderCompare } from './compare.js';

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
setRenderer(render);
window.addEventListener('hashchange', render);
// Log out: the server clears its cookie; the next request asks for a token again.
document.getElementById('logout').addEventListener('click', async () => {
  await fetch('/api/logout', { method: 'POST', credentials: 'same-origin' });
  location.reload();
});
render();
