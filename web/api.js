// Requests to the collector's API; a 401 asks for a token once and logs in.

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
export const apiJson = async (path) => (await api(path)).json();

export function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') p.set(k, v);
  return p.toString();
}
