// The browser every dashboard e2e script drives: Debian's chromium under playwright-core,
// started with the flags this machine's closed network needs, and a page that records
// console errors, page errors and dialogs as problems (each script fails on any).
// Imported by dashboard.mjs and by the scripts inlined in
// crates/stackwatch-cli/tests/it/dashboard_e2e.rs (run with this directory as cwd).
import { chromium } from 'playwright-core';

/** How long any wait of a script may take before the script fails (2 min). */
export const WAIT_MS = 120000;

/** Throws with `what` unless `cond` holds. */
export const expect = (cond, what) => { if (!cond) throw new Error('expectation failed: ' + what); };

/** Launches chromium and opens a page of `viewport` whose errors go to `problems`. */
export async function openPage(problems, viewport) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport });
  // Every wait is for a condition and returns as soon as it holds; its deadline is for a
  // machine whose cores are busy (the suite must pass beside a CPU hog), not a measure.
  page.setDefaultTimeout(WAIT_MS);
  page.on('console', (m) => { if (m.type() === 'error') problems.push('console error: ' + m.text()); });
  page.on('pageerror', (e) => { problems.push('page error: ' + e.message); console.log('page error during the step above: ' + e.message); });
  page.on('dialog', async (d) => { problems.push('unexpected dialog: ' + d.message()); await d.dismiss(); });
  return { browser, page };
}
