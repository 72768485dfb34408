// Browser scenarios for the dashboard, run by tests/tests/dashboard.rs against a real
// controller with simulated devices. Debian's chromium, driven by playwright-core.
// Env: DASHBOARD_URL (https:// when the API serves TLS), ADMIN_TOKEN, SCREENSHOT_DIR, CHROMIUM.
// Protocol with the Rust test: a `need:<what>` line on stdout, answered by `ok` on stdin.

import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { chromium } from 'playwright-core';

const url = process.env.DASHBOARD_URL;
const token = process.env.ADMIN_TOKEN;
const shots = process.env.SCREENSHOT_DIR;
const TIMEOUT = 20_000;
// The API's certificate is signed by the controller CA, which this throwaway browser
// profile does not hold; the CLI, skopeo and agents verify it in the other tests.
const https = url.startsWith('https:');
const contextOptions = { ignoreHTTPSErrors: https };
const APP_V1 = 'services:\n  web:\n    image: hello:1\n';
const APP_V2 = 'services:\n  web:\n    image: hello:2\n    healthcheck:\n      test: ["HTTP", "8080", "/"]\n  worker:\n    image: hello:2\n';
// The simulator fails the health gate of a state whose service has SIM_FAIL=1.
const APP_BROKEN = 'services:\n  web:\n    image: hello:2\n    environment:\n      SIM_FAIL: "1"\n';

const stdin = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function need(what) {
  console.log(`need:${what}`);
  const { value } = await stdin.next();
  if (value !== 'ok') throw new Error(`the test did not do ${what}: ${value}`);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function step(name, fn) {
  console.log(`step: ${name}`);
  await fn();
}

async function shot(page, name) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
  console.log(`screenshot: ${name}.png`);
}

async function login(page) {
  await page.goto(url + '/');
  await page.waitForURL(/#\/login$/);
  await page.fill('#token', token);
  await page.click('button[type=submit]');
  await page.waitForSelector('#fleet-rows tr[data-device]');
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // Root in CI: chromium's sandbox needs user namespaces it cannot have there.
  args: ['--no-sandbox'],
});
let failed = false;
try {
  const desktop = await browser.newContext({ ...contextOptions, viewport: { width: 1366, height: 860 } });
  desktop.setDefaultTimeout(TIMEOUT);
  const page = await desktop.newPage();
  page.on('dialog', (dialog) => dialog.accept());
  page.on('pageerror', (err) => { console.log(`page error: ${err.message}`); failed = true; });

  await step('a wrong token is refused with a message', async () => {
    await page.goto(url + '/');
    await page.waitForURL(/#\/login$/);
    await page.fill('#token', 'not-the-token');
    await page.click('button[type=submit]');
    const message = await page.waitForSelector('#login-error:not([hidden])');
    check((await message.textContent()).includes('not the admin token'), 'login error message');
    await shot(page, 'login-desktop');
  });

  await step('the admin token opens the fleet', async () => {
    await page.fill('#token', token);
    await page.click('button[type=submit]');
    await page.waitForSelector('#fleet-rows tr[data-device="pi-berlin-1"] .presence.on');
    const status = await page.textContent('#fleet-rows tr[data-device="pi-berlin-1"] .badge');
    check(status.trim() === 'healthy', `pi-berlin-1 status: ${status}`);
    const app = await page.textContent('#fleet-rows tr[data-device="pi-berlin-1"]');
    check(app.includes('hello:1'), `app column shows the image tag: ${app}`);
  });

  await step('the session cookie is HttpOnly and SameSite=Strict, and Secure over HTTPS', async () => {
    const cookie = (await desktop.cookies()).find((c) => c.name === 'coracle_session');
    check(cookie, 'no session cookie after login');
    check(cookie.httpOnly && cookie.sameSite === 'Strict', `cookie flags: ${JSON.stringify({ ...cookie, value: '…' })}`);
    check(cookie.secure === https, `cookie Secure is ${cookie.secure} on ${url}`);
  });

  await step('a device comes online while the page is open (live, no reload)', async () => {
    await page.evaluate(() => { window.stillThisPage = true; });
    await page.waitForSelector('#fleet-rows tr[data-device="pi-late"] .presence.off');
    await need('start pi-late');
    await page.waitForSelector('#fleet-rows tr[data-device="pi-late"] .presence.on');
    check(await page.evaluate(() => window.stillThisPage === true), 'the page reloaded');
  });

  await step('filters by tag and state', async () => {
    await page.selectOption('#filter-tag', 'site=berlin');
    const berlin = await page.$$eval('#fleet-rows tr[data-device]', (rows) => rows.map((r) => r.dataset.device));
    check(berlin.join(',') === 'pi-berlin-1,pi-berlin-2', `site=berlin rows: ${berlin}`);
    await page.selectOption('#filter-tag', '');
    await page.selectOption('#filter-state', 'healthy');
    const healthy = await page.$$eval('#fleet-rows tr[data-device]', (rows) => rows.map((r) => r.dataset.device));
    check(!healthy.includes('pi-paris-1'), `healthy filter: ${healthy}`);
    await page.selectOption('#filter-state', 'all');
    // Health samples arrive every 2 s; wait for vitals before the picture.
    await page.waitForFunction(() => !document.querySelector('#fleet-rows tr[data-device="pi-late"] td[data-label="CPU"]').textContent.includes('—'));
    await shot(page, 'fleet-desktop');
  });

  await step('a device is enrolled from the fleet page and its bootstrap file downloaded', async () => {
    await page.click('#enrol-device');
    await page.fill('#enrol-name', 'Not A Name!');
    await page.click('#enrol-form button[type=submit]');
    const refused = await page.waitForSelector('#enrol-form .error');
    check((await refused.textContent()).length > 0, 'a bad device name is refused with a message');
    await page.fill('#enrol-name', 'pi-oslo-1');
    await page.fill('#enrol-tags', 'site=oslo ring=canary');
    await page.click('#enrol-form button[type=submit]');
    await page.waitForSelector('#bootstrap-download');
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#bootstrap-download')]);
    check(download.suggestedFilename() === 'pi-oslo-1.bootstrap.toml', `download name: ${download.suggestedFilename()}`);
    const file = await readFile(await download.path(), 'utf8');
    check(file.includes('device = "pi-oslo-1"') && file.includes('password'), `bootstrap file: ${file.slice(0, 80)}`);
    await page.waitForSelector('#fleet-rows tr[data-device="pi-oslo-1"] .tag:has-text("ring=canary")');
    await shot(page, 'enrolled-desktop');
    await page.click('#enrolled button:has-text("Done")');
  });

  await step('a device page shows services, charts and events', async () => {
    await page.click('a[href="#/device/pi-berlin-1"]');
    await page.waitForSelector('#services tr[data-service="web"]');
    const charts = await page.$$('#charts svg.chart');
    check(charts.length === 4, `charts: ${charts.length}`);
    await page.waitForSelector('#charts circle.dot');
    const events = await page.textContent('#events');
    check(events.includes('applied'), `events: ${events}`);
  });

  await step('each service has its own CPU, memory, restarts and network charts, by name', async () => {
    for (const service of ['web', 'worker']) {
      const row = `#service-charts .service-charts[data-service="${service}"]`;
      await page.waitForSelector(`${row} [data-chart="cpu"] circle.dot`);
      for (const chart of ['cpu', 'memory', 'restarts', 'network']) {
        check(await page.$(`${row} [data-chart="${chart}"] svg.chart`), `${service} has no ${chart} chart`);
      }
      const memory = await page.textContent(`${row} [data-chart="memory"] .now`);
      check(/\d+(\.\d)? MB/.test(memory), `${service} memory now: ${memory}`);
    }
    check(!(await page.$('#service-charts [data-service^="#"]')), 'a service shown by index instead of name');
  });

  await step('tags are edited on the device page', async () => {
    await page.click('#edit-tags');
    await page.fill('#tags-input', 'site=berlin ring=canary');
    await page.click('#tags-form button[type=submit]');
    await page.waitForSelector('.facts .tag:has-text("ring=canary")');
    await page.click('#edit-tags');
    await page.fill('#tags-input', 'site=berlin broken');
    await page.click('#tags-form button[type=submit]');
    const refused = await page.waitForSelector('#tags-form .error');
    check((await refused.textContent()).includes('"broken" is not a tag'), 'a malformed tag is named');
    await page.click('#tags-form button:has-text("Cancel")');
    check((await page.textContent('.facts')).includes('ring=canary'), 'a refused edit changed nothing');
  });

  await step('logs of a service come from the device on demand', async () => {
    await page.click('#services tr[data-service="web"] button:has-text("Logs")');
    const logs = await page.waitForSelector('#log-lines');
    check((await logs.textContent()).includes('web: simulated log line'), 'log lines');
  });

  await step('remote access: a terminal and a followed log', async () => {
    // The simulated device's exec is an echoing shell (tests/src/sim/session.rs).
    await page.click('#services tr[data-service="web"] button[data-action="terminal"]');
    await page.waitForFunction(() => (document.querySelector('#terminal')?.textContent || '').includes('sim$'));
    await page.focus('#terminal');
    await page.keyboard.type('echo hi');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => /sim\$ echo hi\s*\n\s*sim\$/.test(document.querySelector('#terminal').textContent));
    await page.click('#services tr[data-service="web"] button[data-action="follow"]');
    await page.waitForFunction(() => (document.querySelector('#log-follow')?.textContent || '').includes('simulated log line 2'));
    await page.click('#services tr[data-service="web"] button[data-action="terminal"]');
    await page.waitForFunction(() => (document.querySelector('#terminal')?.textContent || '').includes('sim$'));
    await shot(page, 'terminal-desktop');
    await page.click('#remote button:has-text("Close")');
  });

  await step('restarting a service', async () => {
    await page.click('#services tr[data-service="worker"] button:has-text("Restart")');
    await page.waitForSelector('#toast:has-text("worker restarted")');
    await page.waitForSelector('#services tr[data-service="worker"] td.restarts:has-text("1")');
    await page.waitForSelector('#events li:has-text("worker restarted")');
    await shot(page, 'device-desktop');
  });

  await step('a device pulling an image shows its progress live', async () => {
    await need('progress pi-berlin-1 2000000');
    const bar = await page.waitForSelector('#pull-progress[data-percent="40"]');
    const text = await bar.textContent();
    check(text.includes('web layer 2/2 (delta)') && text.includes('2.0 MB of 5.0 MB (40 %)'), `pull progress: ${text}`);
    // The next report redraws the bar in place, without reloading the page.
    await need('progress pi-berlin-1 4500000');
    await page.waitForSelector('#pull-progress[data-percent="90"]');
    await shot(page, 'device-pulling-desktop');
  });

  await step('an app is deployed to this one device from its page', async () => {
    await page.click('#deploy-app');
    await page.fill('#deploy-compose', 'services: [not, a, map');
    await page.click('#deploy-form button[type=submit]');
    await page.waitForSelector('#deploy-form .error');
    await page.fill('#deploy-compose', APP_V1);
    await page.click('#deploy-form button[type=submit]');
    await page.waitForSelector('#toast:has-text("sent to pi-berlin-1")');
    // APP_V1 has web alone: the simulated device applies it and reports.
    await page.waitForSelector('#services tr[data-service="web"]');
    await page.waitForFunction(() => !document.querySelector('#services tr[data-service="worker"]'), null, { timeout: 30_000 });
    await shot(page, 'device-deployed-desktop');
  });

  await step('the images page lists the pushed versions', async () => {
    await page.click('nav a[href="#/images"]');
    await page.waitForSelector('section[data-repo="hello"] tr[data-tag="2"]');
    // The background worker encodes 1 → 2 without any device asking; the page refetches
    // while it is queued or computing.
    await page.waitForSelector('section[data-repo="hello"] tr[data-tag="2"] .delta[data-state="ready"]');
    const delta = await page.textContent('section[data-repo="hello"] tr[data-tag="2"] .delta[data-state="ready"]');
    const m = delta.match(/delta\s*([\d.]+ (?:B|KB|KiB|MB|MiB)) of ([\d.]+ (?:B|KB|KiB|MB|MiB))/);
    check(m, `tag 2 shows a delta size against the full layer: ${delta}`);
    check(m && m[1] !== m[2], `the delta is smaller than the layer: ${delta}`);
    const row = await page.textContent('section[data-repo="hello"] tr[data-tag="2"]');
    check(row.includes('from 1:'), `tag 2 compared with 1: ${row}`);
    console.error(`images page: ${row}`);
    await shot(page, 'images-desktop');
  });

  await step('a rollout to site=berlin runs wave by wave to the end', async () => {
    await page.click('nav a[href="#/rollouts"]');
    await page.waitForSelector('#rollout-form');
    await page.fill('#compose', APP_V2);
    await page.fill('#selector', 'site=berlin');
    await page.fill('#waves', '1,100%');
    await page.fill('#max-failures', '0');
    await page.fill('#health-window', '2');
    await shot(page, 'rollouts-desktop');
    await page.click('#start-rollout');
    await page.waitForURL(/#\/rollouts\/\d+$/);
    await page.waitForSelector('#rollout-phase .badge:has-text("completed")', { timeout: 90_000 });
    const statuses = await page.$$eval('section.wave tr[data-device] .badge', (b) => b.map((x) => x.textContent));
    check(statuses.length === 2 && statuses.every((s) => s === 'healthy'), `device progress: ${statuses}`);
    await shot(page, 'rollout-completed-desktop');
  });

  await step('a failing rollout pauses, and can be rolled back by hand', async () => {
    await page.click('a.back');
    await page.waitForSelector('#rollout-form');
    await page.fill('#compose', APP_BROKEN);
    await page.fill('#selector', 'site=paris');
    await page.fill('#waves', '1,100%');
    await page.fill('#max-failures', '0');
    await page.fill('#health-window', '2');
    await page.click('#start-rollout');
    await page.waitForURL(/#\/rollouts\/\d+$/);
    await page.waitForSelector('#rollout-phase .badge:has-text("paused")', { timeout: 90_000 });
    await page.waitForSelector('#rollout-reason');
    const waiting = await page.$$eval('section.wave[data-wave="1"] tr[data-device] .badge', (b) => b.map((x) => x.textContent));
    check(waiting.every((s) => s === 'not started'), `the second wave did not start: ${waiting}`);
    await shot(page, 'rollout-paused-desktop');
    await page.click('#rollout-rollback');
    await page.waitForSelector('#rollout-phase .badge:has-text("rolled back")', { timeout: 60_000 });
  });

  await step('a running rollout can be paused, resumed and aborted by hand', async () => {
    await page.click('a.back');
    await page.waitForSelector('#rollout-form');
    await page.fill('#compose', APP_V1);
    await page.fill('#selector', 'site=berlin');
    await page.fill('#waves', '1,100%');
    await page.fill('#max-failures', '0');
    // A long window keeps the rollout running in its first wave while the buttons are tried.
    await page.fill('#health-window', '600');
    await page.click('#start-rollout');
    await page.waitForURL(/#\/rollouts\/\d+$/);
    await page.waitForSelector('#rollout-phase .badge:has-text("running")');
    for (const [button, phase] of [['pause', 'paused'], ['resume', 'running'], ['abort', 'aborted']]) {
      await page.click(`#rollout-${button}:not([disabled])`);
      await page.waitForSelector(`#rollout-phase .badge:has-text("${phase}")`);
    }
    await page.click('a.back');
    await page.waitForSelector('#rollout-rows tr[data-rollout]');
    await shot(page, 'rollouts-list-desktop');
  });

  await step('logging out leads back to the login page, and so does any page after it', async () => {
    await page.click('#logout');
    await page.waitForURL(/#\/login$/);
    await page.goto(url + '/#/images');
    await page.waitForURL(/#\/login$/);
  });

  await step('phone layout', async () => {
    const phone = await browser.newContext({ ...contextOptions, viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    phone.setDefaultTimeout(TIMEOUT);
    const p = await phone.newPage();
    p.on('dialog', (dialog) => dialog.accept());
    await p.goto(url + '/');
    await p.waitForURL(/#\/login$/);
    await shot(p, 'login-phone');
    await login(p);
    await shot(p, 'fleet-phone');
    await p.goto(url + '/#/device/pi-berlin-1');
    await p.waitForSelector('#services tr[data-service="web"]');
    await p.click('#services tr[data-service="web"] button:has-text("Logs")');
    await p.waitForSelector('#log-lines');
    await shot(p, 'device-phone');
    await p.goto(url + '/#/images');
    await p.waitForSelector('section[data-repo="hello"]');
    await shot(p, 'images-phone');
    await p.goto(url + '/#/rollouts');
    await p.waitForSelector('#rollout-rows tr[data-rollout]');
    await shot(p, 'rollouts-phone');
    await p.click('#rollout-rows tr[data-rollout] a');
    await p.waitForSelector('section.wave');
    await shot(p, 'rollout-phone');
    await phone.close();
  });
} catch (err) {
  console.log(`FAILED: ${err.stack || err}`);
  failed = true;
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
