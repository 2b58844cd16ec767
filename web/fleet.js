// The Fleet view: every target's health and CPU, and the push sources.

import { el, panelError } from './dom.js';
import { apiJson, qs } from './api.js';
import { routeUrl } from './route.js';
import { fmtCores, fmtDuration, typeName } from './format.js';
import { labelSelector } from './selector.js';
import { averageCores, sparkline } from './chart.js';

export async function renderFleet() {
  const [all, pushes] = await Promise.all([
    apiJson('/api/targets'),
    // A collector without push (or before it existed) answers [] (or 404): no section.
    apiJson('/api/push-sources').catch((e) => ({ error: e })),
  ]);
  // Pushed series of other types a query node lists as stored targets are not scraped
  // targets: they are under Push sources.
  const targets = all.filter((t) => !(t.labels && t.labels.__profile_type__));
  const byService = new Map();
  for (const t of targets) {
    const svc = t.labels.service || '(no service)';
    if (!byService.has(svc)) byService.set(svc, []);
    byService.get(svc).push(t);
  }
  const root = el('div', {}, el('h1', { text: 'Fleet' }));
  if (!targets.length) root.append(el('p', { class: 'muted', text: 'No targets configured yet.' }));
  const loads = [];
  for (const [svc, list] of [...byService.entries()].sort()) {
    const up = list.filter((t) => t.up).length;
    const tbody = el('tbody');
    const svcSel = labelSelector({ service: svc });
    // "compare versions": main (or the most common version) as the base, each other
    // version against it.
    const versions = new Map();
    for (const t of list) if (t.labels.version !== undefined) versions.set(t.labels.version, (versions.get(t.labels.version) || 0) + 1);
    const vs = [...versions.keys()].sort();
    const baseVersion = versions.has('main') ? 'main' : vs.slice().sort((a, b) => versions.get(b) - versions.get(a) || a.localeCompare(b))[0];
    const compareLinks = vs.length > 1 ? el('span', { class: 'compare-links' }, vs.filter((v) => v !== baseVersion).map((v) =>
      el('a', {
        class: 'button-link', 'data-testid': 'compare-versions',
        href: routeUrl('compare', { base: labelSelector({ service: svc, version: baseVersion }), query: labelSelector({ service: svc, version: v }), from: 'now-1h', to: 'now' }),
        text: 'compare versions: ' + v + ' vs ' + baseVersion,
      }))) : null;
    const card = el('section', { class: 'card', 'aria-label': 'service ' + svc },
      el('h2', {}, el('a', { href: routeUrl('explore', { query: svcSel, from: 'now-1h', to: 'now' }), text: svc }),
        el('span', { class: 'muted', text: '  ' + up + ' of ' + list.length + ' up' }), compareLinks),
      el('table', {}, el('thead', {}, el('tr', {},
        el('th', { text: 'instance' }), el('th', { text: 'version' }), el('th', { text: 'state' }), el('th', { text: 'last scrape' }),
        el('th', { class: 'num', title: 'Average CPU in cores over the last hour\'s buckets that have data, read from the store (not reset when the collector restarts)', text: 'CPU, avg of last 1 h' }),
        el('th', { text: 'CPU, last 1 h' }), el('th', { text: '' }))), tbody));
    const rows = new Map();
    for (const t of list.sort((a, b) => (a.labels.instance || '').localeCompare(b.labels.instance || ''))) {
      const cpu = el('td', { class: 'num cpu-avg', 'data-testid': 'cpu-avg', text: '…' });
      const spark = el('td', {});
      rows.set(t.labels.instance || '', { cpu, spark, labels: t.labels });
      tbody.append(el('tr', { 'data-instance': t.labels.instance || '' },
        el('td', { text: t.labels.instance || t.url }),
        el('td', { text: t.labels.version || '' }),
        t.scraped_here === false
          // Another collector sharing the store scrapes it: its health is over there.
          ? el('td', { 'data-testid': 'scraped-by' }, el('span', { class: 'muted', text: t.collector ? 'scraped by ' + t.collector : 'scraped by another collector' }))
          : el('td', {}, el('span', { class: t.up ? 'up' : 'down', text: t.up ? 'up' : 'down' }), t.last_error ? el('div', { class: 'err', text: t.last_error }) : null,
            t.store_backlog_rows ? el('div', { class: 'err', 'data-testid': 'backlog', text: t.store_backlog_rows + ' rows waiting for the store' }) : null,
            t.collector && targets.some((o) => o.collector !== t.collector) ? el('div', { class: 'muted small', text: 'by ' + t.collector }) : null),
        el('td', { text: t.last_scrape_unix_ms ? Math.round((Date.now() - t.last_scrape_unix_ms) / 1000) + ' s ago' : 'never' }),
        cpu, spark,
        el('td', {}, el('a', { href: routeUrl('explore', { query: labelSelector(t.labels), from: 'now-1h', to: 'now' }), text: 'explore' }))));
    }
    // One query per service, a series per instance: from the store, so it survives
    // collector restarts and says over what period.
    loads.push(apiJson('/api/timeseries?' + qs({ query: svcSel, from: 'now-1h', to: 'now', step: '1m', group_by: 'instance', limit: Math.min(100, Math.max(8, list.length)) })).then((ts) => {
      // Targets without an instance label are the series "(none)".
      const byName = new Map((ts.series || []).map((s) => [s.name === '(none)' ? '' : s.name, s]));
      for (const [inst, r] of rows) {
        const s = byName.get(inst);
        if (!s) { r.cpu.textContent = 'no data'; continue; }
        const avg = averageCores(s.points, ts.step, ts.partial);
        r.cpu.replaceChildren(el('span', { text: fmtCores(avg.cores) }),
          avg.seconds < 3300 ? el('div', { class: 'muted small', text: 'over ' + fmtDuration(avg.seconds) + ' of data' }) : null);
        r.spark.append(sparkline(s.points, ts.partial));
      }
    }).catch((e) => { for (const r of rows.values()) r.cpu.textContent = '–'; card.append(panelError('CPU of ' + svc, e)); }));
    root.append(card);
  }
  root.append(pushSources(pushes));
  return { node: root, done: Promise.all(loads) };
}

// "3 s ago", "5 min ago" from Unix ms; "never" for 0.
function fmtSeen(ms) {
  if (!ms) return 'never';
  return fmtDuration(Math.max(0, (Date.now() - ms) / 1000)) + ' ago';
}

// The Fleet's push sources (GET /api/push-sources): per source (tenant, service) its
// refusals and last error, and each series it pushes: labels, protocol, profile type,
// last seen, pushes and repeats (acknowledged, not stored again). Every name, value and
// error comes from the agents: text only.
function pushSources(pushes) {
  const section = el('section', { class: 'card', 'data-testid': 'push-sources', 'aria-label': 'push sources' }, el('h2', { text: 'Push sources' }));
  if (pushes && pushes.error) {
    section.append(el('p', { class: 'muted', text: 'Push sources are not available from this collector (' + pushes.error.message + ').' }));
    return section;
  }
  const list = Array.isArray(pushes) ? pushes : [];
  if (!list.length) {
    section.append(el('p', { class: 'muted', 'data-testid': 'push-none', text: 'No push sources: push ingest is off ([push] enabled), or nothing was pushed lately (push.source_idle).' }));
    return section;
  }
  for (const src of list) {
    const series = Array.isArray(src.series) ? src.series : [];
    const pushesTotal = series.reduce((a, x) => a + (x.pushes || 0), 0);
    const repeats = series.reduce((a, x) => a + (x.duplicates || 0), 0);
    const tbody = el('tbody', {}, series.map((x) => {
      const labels = Object.assign({}, x.labels || {});
      delete labels.__profile_type__;
      const type = x.profile_type || 'cpu';
      return el('tr', { 'data-testid': 'push-series', 'data-type': type, 'data-protocol': x.protocol || '' },
        el('td', { class: 'name', 'data-testid': 'push-labels', text: labelSelector(labels) }),
        el('td', { text: x.protocol || '' }),
        el('td', { 'data-testid': 'push-type', title: type, text: typeName(type) }),
        el('td', { 'data-testid': 'push-seen', title: x.last_seen_unix_ms ? new Date(x.last_seen_unix_ms).toISOString() : '', text: fmtSeen(x.last_seen_unix_ms) }),
        el('td', { class: 'num', 'data-testid': 'push-pushes', text: String(x.pushes || 0) }),
        el('td', { class: 'num', 'data-testid': 'push-repeats', text: String(x.duplicates || 0) }),
        el('td', {}, el('a', { 'data-testid': 'push-explore', href: routeUrl('explore', { query: labelSelector(labels), type: type === 'cpu' ? '' : type, from: 'now-1h', to: 'now' }), text: 'explore' })));
    }));
    section.append(el('div', { class: 'push-source', 'data-testid': 'push-source', 'data-tenant': src.tenant || '', 'data-service': src.service || '' },
      el('h3', {}, el('span', { class: 'name', 'data-testid': 'push-service', text: src.service || '(no service)' }),
        el('span', { class: 'muted', 'data-testid': 'push-tenant', text: src.tenant ? '  tenant ' + src.tenant : '  anonymous' })),
      el('p', { class: 'small' },
        el('span', { text: series.length + ' series · ' + pushesTotal + ' pushes · ' + repeats + ' repeats · ' }),
        el('span', { class: src.rejected ? 'down' : '', 'data-testid': 'push-refusals', text: (src.rejected || 0) + ' refused' })),
      src.last_error ? el('div', { class: 'err', 'data-testid': 'push-last-error' }, el('span', { class: 'muted', text: 'last error: ' }), el('span', { text: src.last_error })) : null,
      series.length ? el('table', { class: 'compact' },
        el('thead', {}, el('tr', {}, ['labels', 'protocol', 'profile type', 'last seen', 'pushes', 'repeats', ''].map((h, i) => el('th', { class: i === 4 || i === 5 ? 'num' : '', text: h })))),
        tbody) : null));
  }
  return section;
}
