// End-to-end test of the dashboard in a real headless Chromium (playwright-core).
// Usage: node dashboard.mjs <base-url> <screenshot-dir>
// Started by crates/stackwatch-cli/tests/it/dashboard_e2e.rs, which runs the server and the
// workers (a, b: version="main"; c: version="canary", Avro). Exits non-zero on the first
// failed expectation; prints what it measured. With STACKWATCH_E2E_RELEASE=1 (a release
// build of the server) Explore on a 10 000-stack profile must be ready within 1 s.
import { openPage, expect } from './browser.mjs';
import { mkdirSync } from 'node:fs';

const [base, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const problems = [];
const started = Date.now();

const { browser, page } = await openPage(problems, { width: 1440, height: 900 });
const step = (name) => console.log('step: ' + name);
const ready = (name) => page.waitForSelector(`body[data-ready="${name}"]`, { timeout: 120000 });
const text = async (sel) => (await page.locator(sel).first().textContent()) || '';
const hash = () => page.evaluate(() => decodeURIComponent(location.hash));
const explore = (params) => page.goto(base + '/#/explore?' + new URLSearchParams(params));
const SVC = '{service="binlog-streamer"}';
// Thread roots and runtime plumbing: never a verdict's finding.
const THREAD_ROOT = /^(thread-\d+|binlog-reader|stackwatch-[\w-]+|_start|main|clone3?|start_thread|thread_start|__rust_begin_short_backtrace)$/;

try {
  step('fleet');
  // Fleet: services, their instances, up/down, average cores over the last hour from the
  // store (the period is in the header), sparklines, and "compare versions".
  await page.goto(base + '/#/fleet');
  await ready('fleet');
  const svc = 'section[aria-label="service binlog-streamer"]';
  const upCount = await page.locator(svc + ' .up').count();
  expect(upCount === 3, `3 instances up, saw ${upCount}`);
  expect(/CPU, avg of last 1 h/.test(await text(svc + ' thead')), 'the CPU column says its period');
  for (const inst of ['a', 'b', 'c']) {
    const cell = await text(`${svc} tr[data-instance="${inst}"] [data-testid="cpu-avg"]`);
    expect(/^\d+(\.\d+)? cores/.test(cell), `instance ${inst}: average cores, saw ${JSON.stringify(cell)}`);
  }
  await page.waitForSelector(svc + ' .spark polyline, ' + svc + ' .spark circle', { timeout: 120000 });
  const cmp = page.locator(svc + ' a[data-testid="compare-versions"]');
  expect((await cmp.count()) === 1 && /canary vs main/.test(await cmp.textContent()), 'one compare-versions link: canary vs main');
  const cmpHref = decodeURIComponent(await cmp.getAttribute('href'));
  expect(cmpHref.includes('base={service="binlog-streamer",version="main"}') && cmpHref.includes('query={service="binlog-streamer",version="canary"}'), 'compare link selects the versions: ' + cmpHref);
  await page.screenshot({ path: shots + '/fleet.png', fullPage: true });

  step('explore');
  // Explore: from the fleet link; the flamegraph names the workers' functions.
  await page.click(svc + ' h2 > a');
  await ready('explore');
  const flame = page.frameLocator('iframe[data-testid="flamegraph"]');
  // Every frame has a <title> tooltip with its full name.
  await flame.locator('title', { hasText: 'RowDecoder' }).first().waitFor({ state: 'attached', timeout: 120000 });
  for (const d of ['profile.svg', 'profile.folded', 'profile.pb.gz']) expect(await page.locator(`a[download="${d}"]`).count() === 1, 'download ' + d);

  step('flamegraph readable');
  // A labelled root, shorter display names with the full name in the tooltip, and one
  // search box (inferno's own is hidden).
  const flameFrame = page.frames().find((f) => f.url().includes('/api/profile.svg'));
  const readable = await flameFrame.evaluate(() => {
    const groups = [...document.querySelectorAll('#frames > g')];
    const root = groups.find((g) => /^all \(.*, 100%\)$/.test(g.querySelector('title').textContent));
    const shortened = groups.filter((g) => {
      const full = g.querySelector('title').textContent.replace(/ \([^(]*\)$/, '');
      const shown = g.querySelector('text').textContent;
      return shown && !shown.endsWith('..') && shown !== full && full.endsWith(shown);
    }).length;
    const btn = document.getElementById('search');
    return { root: root && root.querySelector('text').textContent, shortened, searchHidden: !btn || getComputedStyle(btn).display === 'none' };
  });
  expect(/^all \([\d,]+ samples\)$/.test(readable.root || ''), 'the root frame is labelled: ' + readable.root);
  expect(readable.shortened > 0, 'some frames show a shorter name than their full one');
  expect(readable.searchHidden, "inferno's own search button is hidden");
  expect(await page.locator('input[type="search"]').count() === 1, 'one search box on the page');

  step('cpu chart');
  // CPU in cores over an hour of which only the last seconds have data: the empty part
  // is a gap (not zero), the axes are labelled, a hint says how to zoom, hover shows values.
  const chart = page.locator('[data-testid="cpu-chart"]');
  expect(await chart.getAttribute('data-unit') === 'cores', 'chart unit cores');
  expect((await text('[data-testid="cpu-chart"] [data-testid="y-axis-title"]')) === 'cores', 'y axis titled cores');
  expect(/^local time \(UTC/.test(await text('[data-testid="cpu-chart"] [data-testid="x-axis-title"]')), 'x axis titled local time');
  expect(Number(await chart.getAttribute('data-gaps')) >= 1 && Number(await chart.getAttribute('data-null-buckets')) > 10, 'the hour before the workers started is a gap');
  expect(await page.locator('[data-testid="cpu-chart"] rect.nodata').count() >= 1, 'the gap is drawn as no data');
  // The last bucket is still filling: marked (unless no window of it is stored yet).
  for (let i = 0; (await page.locator('[data-testid="cpu-chart"] [data-testid="partial-bucket"]').count()) === 0; i++) {
    expect(i < 3, 'the partial last bucket is marked');
    await page.waitForTimeout(2000);
    await page.reload();
    await ready('explore');
  }
  expect(await page.locator('[data-testid="zoom-hint"]').isVisible() && /drag/.test(await text('[data-testid="zoom-hint"]')), 'a visible zoom hint');
  const yTicks = await page.locator('[data-testid="cpu-chart"] text.ytick').allTextContents();
  expect(yTicks.length >= 2 && yTicks.every((t) => /^\d+(\.\d+)?$/.test(t)), 'y ticks are numbers of cores: ' + yTicks);
  // Hover over the last bucket (the partial one: the only data is in the last seconds).
  const last = await page.locator('[data-testid="cpu-chart"] [data-testid="partial-bucket"]').boundingBox();
  await page.mouse.move(last.x + last.width / 2, last.y + last.height / 2);
  await page.waitForSelector('[data-testid="chart-tooltip"]:not([hidden])', { timeout: 120000 });
  const tip = await text('[data-testid="chart-tooltip"]');
  expect(/\d+(\.\d+)? cores/.test(tip), 'hover shows the value in cores: ' + tip);
  console.log('hover: ' + tip);
  await page.screenshot({ path: shots + '/explore.png', fullPage: true });

  step('group by');
  // One line per value of a chosen label.
  await page.selectOption('[data-testid="group-by"]', 'version');
  await page.waitForFunction(() => location.hash.includes('group_by=version'));
  await ready('explore');
  const legend = await page.locator('[data-testid="cpu-chart"] ~ [data-testid="chart-legend"] .legend-item').evaluateAll((els) => els.map((e) => e.dataset.series));
  expect(legend.includes('main') && legend.includes('canary'), 'a line per version: ' + legend);
  expect(await page.locator('[data-testid="cpu-chart"] g.series[data-series="canary"] path.line, [data-testid="cpu-chart"] g.series[data-series="canary"] circle').count() > 0, 'the canary has its own line');

  step('drag');
  // Dragging across the CPU chart selects a window: the URL gets absolute from/to.
  const box = await chart.boundingBox();
  await page.mouse.move(box.x + box.width * 0.3, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.6, box.y + box.height / 2, { steps: 5 });
  await page.mouse.up();
  await page.waitForFunction(() => /from=\d+&to=\d+/.test(location.hash), null, { timeout: 120000 });
  await ready('explore');
  const dragged = await page.evaluate(() => location.hash);
  const m = dragged.match(/from=(\d+)&to=(\d+)/);
  expect(m && Number(m[2]) > Number(m[1]), 'a dragged window in the URL: ' + dragged);

  step('reload');
  // A link reproduces the view: reload and the same selection is there.
  await page.reload();
  await ready('explore');
  expect((await page.evaluate(() => location.hash)) === dragged, 'state survives reload');

  step('search');
  // Search highlights matches and shows their share.
  await explore({ query: SVC, from: 'now-10m', to: 'now' });
  await ready('explore');
  await page.fill('input[name="search"]', 'MessageEncoder');
  await page.press('input[name="search"]', 'Enter');
  await page.waitForFunction(() => /Matched/.test(document.querySelector('[data-testid="search-share"]')?.textContent || ''), null, { timeout: 120000 });
  console.log('search share: ' + await text('[data-testid="search-share"]'));
  expect((await hash()).includes('search=MessageEncoder'), 'the search is in the URL');

  step('top');
  // Top functions by self by default; sorted by total, thread roots and runtime plumbing
  // are marked and hidden until asked for.
  const rows = page.locator('[data-testid="top-functions"] tbody tr');
  expect((await rows.count()) > 3, 'top functions listed');
  expect(/self ▼/.test(await text('[data-testid="top-functions"] th[aria-sort="descending"]')), 'sorted by self by default');
  await page.click('[data-testid="top-functions"] th >> text=total');
  await page.waitForFunction(() => location.hash.includes('sort=total'));
  await ready('explore');
  // The table is rebuilt from /api/top?order=total: wait for that one (thread roots and
  // runtime entry points have little self time, so only the total order lists them).
  await page.waitForFunction(() => /total/.test(
    document.querySelector('[data-testid="top-functions"] th[aria-sort="descending"]')?.textContent || ''));
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="top-functions"] tr.plumbing').length > 0,
    null, { timeout: 120000 }).catch(() => {});
  const plumbing = page.locator('[data-testid="top-functions"] tr.plumbing');
  expect((await plumbing.count()) > 0, 'plumbing frames are marked');
  expect(!(await plumbing.first().isVisible()), 'plumbing is hidden by default');
  const firstVisible = await page.locator('[data-testid="top-functions"] tbody tr:not(.plumbing)').first().getAttribute('data-function');
  expect(!THREAD_ROOT.test(firstVisible), 'the first row by total is a function, not plumbing: ' + firstVisible);
  await page.check('[data-testid="show-plumbing"]');
  expect(await plumbing.first().isVisible(), 'plumbing shown on request');
  expect((await plumbing.first().locator('.badge').textContent()) === 'plumbing', 'plumbing badge');
  const plumbingNames = await plumbing.evaluateAll((els) => els.map((e) => e.dataset.function));
  console.log('plumbing: ' + plumbingNames.slice(0, 8).join(', '));
  expect((await hash()).includes('plumbing=1'), 'the choice is in the URL');

  step('function');
  // A click on a function in the table: its callers, callees and CPU over time. (The
  // encoder is in the profile of a debug and of a release build; the reader loop that
  // calls it is inlined in a release build.)
  const ENCODE = 'binlog_streamer::encode::MessageEncoder::encode';
  await page.locator(`[data-testid="top-functions"] tbody tr[data-function="${ENCODE}"]`).click();
  await page.waitForFunction((f) => decodeURIComponent(location.hash).includes('fn=' + f), ENCODE);
  await page.waitForSelector(`[data-testid="function-slot"][data-ready="${ENCODE}"]`, { timeout: 120000 });
  expect((await text('[data-testid="function-name"]')) === ENCODE, 'the function panel names it');
  expect(/self \d+(\.\d+)?% · total \d+(\.\d+)?%/.test(await text('[data-testid="function-totals"]')), 'self and total shares: ' + await text('[data-testid="function-totals"]'));
  const fnLegend = await page.locator('[data-testid="function-chart"] ~ [data-testid="chart-legend"] .legend-item').evaluateAll((els) => els.map((e) => e.dataset.series));
  expect(fnLegend.join() === 'total,self', 'the function chart has total and self: ' + fnLegend);
  expect(await page.locator('[data-testid="function-chart"]').getAttribute('data-unit') === 'cores', 'function chart in cores');
  const callers = await page.locator('[data-testid="sandwich-callers"] tr[data-function]').evaluateAll((els) => els.map((e) => e.dataset.function));
  const callees = await page.locator('[data-testid="sandwich-callees"] tr[data-function]').evaluateAll((els) => els.map((e) => e.dataset.function));
  console.log('callers: ' + callers.join(', ') + ' | callees: ' + callees.slice(0, 5).join(', '));
  expect(callers.some((c) => /^(binlog_streamer::pipeline::read_loop|std::sys::backtrace::__rust_begin_short_backtrace)$/.test(c)), 'the encoder is called by the reader loop');
  expect(callees.some((c) => /^binlog_streamer::encode::(avro_image|write_image|write_json)$/.test(c)), 'the encoder calls the JSON and Avro writers');
  // The callers' flamegraph goes all the way up to the reader thread; the callees' one
  // has the encoder at its root.
  await page.frameLocator('iframe[data-testid="sandwich-callers-flamegraph"]').locator('title', { hasText: /^binlog-reader \(/ }).first().waitFor({ state: 'attached', timeout: 120000 });
  await page.frameLocator('iframe[data-testid="sandwich-callees-flamegraph"]').locator('title', { hasText: ENCODE }).first().waitFor({ state: 'attached', timeout: 120000 });
  await page.locator('[data-testid="function-panel"]').screenshot({ path: shots + '/explore-function.png' });
  // A click on a frame of the flamegraph picks that function.
  await flame.locator('#frames > g').filter({ hasText: /^binlog_streamer::decode::RowDecoder::decode \(/ }).first().click();
  await page.waitForSelector('[data-testid="function-slot"][data-ready="binlog_streamer::decode::RowDecoder::decode"]', { timeout: 120000 });
  expect((await text('[data-testid="function-name"]')) === 'binlog_streamer::decode::RowDecoder::decode', 'a flamegraph click picks the function');
  const picked = await hash();
  await page.reload();
  await ready('explore');
  expect((await hash()) === picked && (await text('[data-testid="function-name"]')) === 'binlog_streamer::decode::RowDecoder::decode', 'the picked function survives reload');

  step('hide');
  // The hide-frames regex applies to the flamegraph, the table and the downloads.
  await page.fill('[data-testid="hide-frames"]', 'RowDecoder');
  await page.press('[data-testid="hide-frames"]', 'Enter');
  await page.waitForFunction(() => location.hash.includes('hide=RowDecoder'));
  await ready('explore');
  await flame.locator('#frames').waitFor({ state: 'attached', timeout: 120000 });
  const hiddenLeft = await page.frames().find((f) => f.url().includes('/api/profile.svg')).evaluate(() => [...document.querySelectorAll('#frames title')].filter((t) => t.textContent.includes('RowDecoder')).length);
  expect(hiddenLeft === 0, `no RowDecoder frame left in the flamegraph (${hiddenLeft})`);
  expect(await page.locator('[data-testid="top-functions"] tr[data-function*="RowDecoder"]').count() === 0, 'no RowDecoder row in the table');
  for (const d of ['profile.svg', 'profile.folded', 'profile.pb.gz']) {
    const href = await page.locator(`a[download="${d}"]`).getAttribute('href');
    expect(href.includes('hide=RowDecoder'), 'download ' + d + ' hides the frames too');
    // Issue 26, item 4: the range it shows, pinned (not from=now-15m, which moves).
    const u = new URL(href, base);
    expect(/^\d+$/.test(u.searchParams.get('from')) && /^\d+$/.test(u.searchParams.get('to')), 'download ' + d + ' pins its range: ' + href);
  }

  step('icicle');
  await page.click('button:has-text("Icicle")');
  await page.waitForFunction(() => location.hash.includes('icicle=1'));
  await ready('explore');

  step('keyboard');
  // Keyboard: the table rows are reachable and usable by keyboard.
  await page.focus('[data-testid="top-functions"] tbody tr:not(.plumbing)');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => location.hash.includes('fn=') && location.hash.includes('search='));

  step('compare');
  // Compare canary vs main over the workers' windows: totals per side in cores and per
  // instance, the verdict (the Avro encoder grew significantly, no thread root listed),
  // the differential flamegraph, share or absolute widths.
  const compareParams = { base: '{version="main"}', query: '{version="canary"}', from: 'now-40s', to: 'now' };
  let significant = [];
  await page.goto(base + '/#/compare?' + new URLSearchParams(compareParams));
  for (let attempt = 0; ; attempt++) {
    // Until the windows of the last 40 s show it (the same URL again needs a reload).
    if (attempt > 0) await page.reload();
    await ready('compare');
    significant = await page.locator('[data-testid="changes-significant"] tbody tr').evaluateAll((els) => els.map((e) => ({ f: e.dataset.function, badge: e.querySelector('.badge').textContent })));
    if (significant.some((s) => s.f.includes('apache_avro')) || attempt >= 12) break;
    await page.waitForTimeout(5000);
  }
  console.log('verdict: ' + await text('[data-testid="verdict-line"]') + ' ' + significant.slice(0, 5).map((s) => s.badge + ' ' + s.f).join('; '));
  expect(significant.some((s) => s.f.includes('apache_avro') && s.badge === 'grew'), 'the Avro encoder grew significantly');
  expect(!significant.some((s) => THREAD_ROOT.test(s.f)), 'no thread root among the significant changes');
  const baseInstances = await page.locator('[data-testid="totals-base"] tr[data-instance]').evaluateAll((els) => els.map((e) => e.dataset.instance).sort());
  const targetInstances = await page.locator('[data-testid="totals-target"] tr[data-instance]').evaluateAll((els) => els.map((e) => e.dataset.instance));
  expect(baseInstances.join() === 'a,b' && targetInstances.join() === 'c', `instances per side: ${baseInstances} / ${targetInstances}`);
  const coresA = await text('[data-testid="cores-base"]'), coresB = await text('[data-testid="cores-target"]');
  expect(/^\d+(\.\d+)? cores$/.test(coresA) && /^\d+(\.\d+)? cores$/.test(coresB), `totals per side in cores: ${coresA} / ${coresB}`);
  console.log('totals: A ' + coresA + ', B ' + coresB + '; ' + await text('[data-testid="cores-ratio"]'));
  const diff = page.frameLocator('iframe[data-testid="flamegraph"]');
  await diff.locator('#title', { hasText: 'Differential' }).waitFor({ state: 'attached', timeout: 120000 });
  for (const d of ['diff.svg', 'diff.folded']) expect(await page.locator(`a[download="${d}"]`).count() === 1, 'download ' + d);
  expect(await page.locator('[data-testid="widths-share"]').getAttribute('aria-pressed') === 'true', 'share of total by default');
  await page.screenshot({ path: shots + '/compare.png', fullPage: true });
  await page.click('[data-testid="widths-absolute"]');
  await page.waitForFunction(() => location.hash.includes('normalize=false'));
  await ready('compare');
  expect((await page.locator('iframe[data-testid="flamegraph"]').getAttribute('src')).includes('normalize=false'), 'absolute widths asked of the server');
  expect((await page.locator('a[download="diff.svg"]').getAttribute('href')).includes('normalize=false'), 'and in the download');
  await diff.locator('#title', { hasText: 'Differential' }).waitFor({ state: 'attached', timeout: 120000 });

  step('compare over an hour');
  // Issue 26, item 1: the verdict comes from the data, not the range. The same comparison
  // over the last hour (the workers are minutes old: most of the hour has no data) still
  // tests the span with data, in as many buckets, and finds the Avro encoder.
  await page.goto(base + '/#/compare?' + new URLSearchParams(Object.assign({}, compareParams, { from: 'now-1h' })));
  await ready('compare');
  const hourly = await page.locator('[data-testid="changes-significant"] tbody tr').evaluateAll((els) => els.map((e) => ({ f: e.dataset.function, badge: e.querySelector('.badge').textContent })));
  const hourBuckets = await text('[data-testid="buckets-target"]');
  console.log('over 1 h: ' + await text('[data-testid="verdict-line"]') + ' (' + hourBuckets.trim() + ')');
  expect(hourly.some((s) => s.f.includes('apache_avro') && s.badge === 'grew'), 'over 1 h too, the Avro encoder grew significantly');
  const tested = Number((/(\d+) time buckets/.exec(hourBuckets) || [])[1]);
  expect(tested >= 10, 'over 1 h the span with data is cut into buckets, not the hour: ' + hourBuckets);

  step('noise');
  // Main against itself (two halves of the same 20 s, well after the workers' start-up,
  // whose symbolization is a real change): nothing significant, the differences
  // labelled as noise.
  const settled = started + 35000 - Date.now();
  if (settled > 0) await page.waitForTimeout(settled);
  const now = Math.floor(Date.now() / 1000) - 2;
  await page.goto(base + '/#/compare?' + new URLSearchParams({ base: '{version="main"}', base_from: String(now - 20), base_to: String(now - 10), query: '{version="main"}', from: String(now - 10), to: String(now) }));
  await ready('compare');
  const verdictLine = await text('[data-testid="verdict-line"]');
  console.log('main vs main: ' + verdictLine);
  expect(/^No function's share of CPU changed significantly/.test(verdictLine), 'main against itself: nothing significant');
  expect(await page.locator('[data-testid="changes-significant"]').count() === 0, 'no significant list');
  expect(/noise/.test(await text('[data-testid="noise"] summary')), 'the differences are labelled noise');

  step('hostile');
  // Hostile frame names are shown as text and never run, in the table, the flamegraph and
  // the function panel.
  const evil = '<script>window.__pwned=1</script>';
  await explore({ query: '{service="evil"}', from: 'now-1h', to: 'now', fn: evil });
  await ready('explore');
  await page.locator('[data-testid="top-functions"] td', { hasText: evil }).first().waitFor({ timeout: 120000 });
  expect((await text('[data-testid="function-name"]')) === evil, 'the function panel shows the name as text');
  await page.waitForTimeout(500);
  const pwned = await page.evaluate(() => window.__pwned);
  const framePwned = await page.frames().map((f) => f.evaluate(() => window.__pwned).catch(() => undefined)).reduce(async (a, b) => (await a) || (await b), undefined);
  expect(pwned === undefined && framePwned === undefined, 'no injected script ran');
  await page.screenshot({ path: shots + '/hostile.png', fullPage: true });

  step('big');
  // How long Explore takes to be ready with a 10 000-stack profile (asserted <= 1 s for a
  // release build of the server, reported otherwise).
  const t0 = Date.now();
  await explore({ query: '{service="big"}', from: 'now-1h', to: 'now' });
  await ready('explore');
  await page.frameLocator('iframe[data-testid="flamegraph"]').locator('#frames').waitFor({ state: 'attached', timeout: 120000 });
  const readyMs = Date.now() - t0;
  console.log('explore-ready-ms-10k-stacks ' + readyMs);
  if (process.env.STACKWATCH_E2E_RELEASE === '1') expect(readyMs <= 1000, `Explore ready within 1 s on a 10 000-stack profile (${readyMs} ms)`);

  step('screenshots');
  // The README's pictures: Explore (the page down to a few rows below the flamegraph,
  // however tall the deepest stack makes it) stacked by version over complete buckets,
  // the flamegraph and the first rows of the table; Compare (the whole page) with its
  // verdict and the differential flamegraph.
  await page.setViewportSize({ width: 1440, height: 1350 });
  const end = Math.floor((Date.now() / 1000 - 5) / 10) * 10;
  await explore({ query: SVC, from: String(end - 120), to: String(end), group_by: 'version' });
  await ready('explore');
  await page.frameLocator('iframe[data-testid="flamegraph"]').locator('#frames').waitFor({ state: 'attached', timeout: 120000 });
  await page.mouse.move(1, 1);
  const graph = await page.locator('iframe[data-testid="flamegraph"]').boundingBox();
  const pageHeight = await page.evaluate(() => document.documentElement.scrollHeight);
  const height = Math.min(pageHeight, Math.ceil(graph.y + graph.height + 420));
  await page.screenshot({ path: shots + '/dashboard-explore.png', fullPage: true, clip: { x: 0, y: 0, width: 1440, height } });
  await page.goto(base + '/#/compare?' + new URLSearchParams(compareParams));
  await ready('compare');
  await page.frameLocator('iframe[data-testid="flamegraph"]').locator('#frames').waitFor({ state: 'attached', timeout: 120000 });
  await page.mouse.move(1, 1);
  await page.screenshot({ path: shots + '/dashboard-compare.png', fullPage: true });
} catch (e) {
  problems.push(e.message);
  await page.screenshot({ path: shots + '/failure.png', fullPage: true }).catch(() => {});
}
await browser.close();
if (problems.length) {
  console.error(problems.join('\n'));
  process.exit(1);
}
console.log('dashboard e2e: ok');
