// End-to-end test of the dashboard in a real headless Chromium (playwright-core).
// Usage: node dashboard.mjs <base-url> <screenshot-dir>
// Started by crates/stackwatch-cli/tests/dashboard_e2e.rs, which runs the server and the
// workers. Exits non-zero on the first failed expectation; prints what it measured.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const [base, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const problems = [];
const expect = (cond, what) => { if (!cond) throw new Error('expectation failed: ' + what); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
page.on('console', (m) => { if (m.type() === 'error') problems.push('console error: ' + m.text()); });
page.on('pageerror', (e) => { problems.push('page error: ' + e.message); console.log('page error during the step above: ' + e.message); });
page.on('dialog', async (d) => { problems.push('unexpected dialog: ' + d.message()); await d.dismiss(); });
const step = (name) => console.log('step: ' + name);
const ready = (name) => page.waitForSelector(`body[data-ready="${name}"]`, { timeout: 15000 });

try {
  step('fleet');
  // Fleet: services, their instances, up/down, sparklines.
  await page.goto(base + '/#/fleet');
  await ready('fleet');
  await page.waitForSelector('text=binlog-streamer');
  const upCount = await page.locator('section[aria-label="service binlog-streamer"] .up').count();
  expect(upCount === 3, `3 instances up, saw ${upCount}`);
  await page.waitForSelector('section[aria-label="service binlog-streamer"] .spark polyline', { timeout: 10000 });
  await page.screenshot({ path: shots + '/fleet.png', fullPage: true });

  step('explore');
  // Explore: from the fleet link; the flamegraph names the workers' functions.
  await page.click('section[aria-label="service binlog-streamer"] h2 a');
  await ready('explore');
  const flame = page.frameLocator('iframe[data-testid="flamegraph"]');
  // Every frame has a <title> tooltip with its full name.
  await flame.locator('title', { hasText: 'RowDecoder' }).first().waitFor({ state: 'attached', timeout: 15000 });
  await page.screenshot({ path: shots + '/explore.png', fullPage: true });
  for (const d of ['profile.svg', 'profile.folded', 'profile.pb.gz']) expect(await page.locator(`a[download="${d}"]`).count() === 1, 'download ' + d);

  step('drag');
  // Dragging across the CPU chart selects a window: the URL gets absolute from/to.
  const chart = page.locator('[data-testid="cpu-chart"]');
  const box = await chart.boundingBox();
  await page.mouse.move(box.x + box.width * 0.3, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.6, box.y + box.height / 2, { steps: 5 });
  await page.mouse.up();
  await page.waitForFunction(() => /from=\d+&to=\d+/.test(location.hash), null, { timeout: 10000 });
  await ready('explore');
  const hash = await page.evaluate(() => location.hash);
  const m = hash.match(/from=(\d+)&to=(\d+)/);
  expect(m && Number(m[2]) > Number(m[1]), 'a dragged window in the URL: ' + hash);

  step('reload');
  // A link reproduces the view: reload and the same selection is there.
  await page.reload();
  await ready('explore');
  expect((await page.evaluate(() => location.hash)) === hash, 'state survives reload');

  step('search');
  // Search highlights matches and shows their share.
  await page.goto(base + '/#/explore?query=' + encodeURIComponent('{service="binlog-streamer"}') + '&from=now-10m&to=now');
  await ready('explore');
  await page.fill('input[name="search"]', 'MessageEncoder');
  await page.press('input[name="search"]', 'Enter');
  await page.waitForFunction(() => /Matched/.test(document.querySelector('[data-testid="search-share"]')?.textContent || ''), null, { timeout: 15000 });
  const share = await page.textContent('[data-testid="search-share"]');
  console.log('search share: ' + share);

  step('top');
  // The top-functions table sorts, and a click focuses the function in the flamegraph.
  const rows = page.locator('[data-testid="top-functions"] tbody tr');
  expect((await rows.count()) > 3, 'top functions listed');
  await page.click('[data-testid="top-functions"] th >> text=self');
  await page.waitForFunction(() => location.hash.includes('sort=self'));
  await ready('explore');
  // The table holds the top 50 by total; the reader thread's loop is always among them
  // (in a debug build the profiler's own DWARF parsing can push the decoder out).
  await page.locator('[data-testid="top-functions"] tbody tr', { hasText: 'binlog_streamer::pipeline::read_loop' }).first().click();
  await page.waitForFunction(() => location.hash.includes('search=') && /read_loop/.test(decodeURIComponent(location.hash)));
  await ready('explore');
  await page.waitForFunction(() => /Matched/.test(document.querySelector('[data-testid="search-share"]')?.textContent || ''), null, { timeout: 15000 });

  step('icicle');
  // Icicle toggle.
  await page.click('button:has-text("Icicle")');
  await page.waitForFunction(() => location.hash.includes('icicle=1'));
  await ready('explore');

  step('keyboard');
  // Keyboard: the nav and the table rows are reachable and usable by keyboard.
  await page.focus('[data-testid="top-functions"] tbody tr');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => location.hash.includes('search='));

  step('compare');
  // Compare canary vs main: the differential flamegraph and the table of changes.
  await page.goto(base + '/#/compare?' + new URLSearchParams({ base: '{version="main"}', query: '{version="canary"}', from: 'now-10m', to: 'now' }));
  await ready('compare');
  const diff = page.frameLocator('iframe[data-testid="flamegraph"]');
  await diff.locator('#title', { hasText: 'Differential' }).waitFor({ state: 'attached', timeout: 15000 });
  const changes = await page.locator('[data-testid="compare-table"] tbody tr').count();
  expect(changes > 0, 'functions that grew or shrank are listed');
  await page.screenshot({ path: shots + '/compare.png', fullPage: true });

  // Downloads: SVG and folded for the comparison (and SVG, folded, pprof on Explore).
  for (const d of ['diff.svg', 'diff.folded']) expect(await page.locator(`a[download="${d}"]`).count() === 1, 'download ' + d);

  step('hostile');
  // Hostile frame names are shown as text and never run.
  await page.goto(base + '/#/explore?query=' + encodeURIComponent('{service="evil"}') + '&from=now-1h&to=now');
  await ready('explore');
  await page.locator('[data-testid="top-functions"] td', { hasText: '<script>window.__pwned=1</script>' }).first().waitFor({ timeout: 10000 });
  await page.waitForTimeout(500);
  const pwned = await page.evaluate(() => window.__pwned);
  const framePwned = await page.frames().map((f) => f.evaluate(() => window.__pwned).catch(() => undefined)).reduce(async (a, b) => (await a) || (await b), undefined);
  expect(pwned === undefined && framePwned === undefined, 'no injected script ran');
  await page.screenshot({ path: shots + '/hostile.png', fullPage: true });

  step('big');
  // How long Explore takes to be ready with a 10 000-stack profile (reported, not asserted).
  const t0 = Date.now();
  await page.goto(base + '/#/explore?query=' + encodeURIComponent('{service="big"}') + '&from=now-1h&to=now');
  await ready('explore');
  await page.frameLocator('iframe[data-testid="flamegraph"]').locator('#frames').waitFor({ state: 'attached', timeout: 30000 });
  console.log('explore-ready-ms-10k-stacks ' + (Date.now() - t0));
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
