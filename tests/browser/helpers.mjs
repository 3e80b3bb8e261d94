// Shared by the browser scenarios: a real kommunchat server per test file
// (port 0, its own temporary directory and SQLite file), the browser named by
// KC_BROWSER through playwright-core, and axe-core. KC_BROWSER=chromium (the
// default) drives Debian's chromium over CDP; KC_BROWSER=firefox drives Debian's
// firefox-esr over WebDriver BiDi (playwright's `moz-firefox` channel).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync, mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium, firefox } from 'playwright-core';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, '..', '..');
export const AXE = require.resolve('axe-core/axe.min.js');
export const SHOTS = process.env.KC_SCREENSHOTS || '';

// `webkit` is driven over classic WebDriver by `webkit.wd.mjs` (WebKitGTK's
// WebKitWebDriver; playwright cannot drive Debian's WebKit), which uses the
// server and axe helpers here but not `launch`.
export const BROWSER = process.env.KC_BROWSER || 'chromium';
if (!['chromium', 'firefox', 'webkit'].includes(BROWSER)) throw new Error(`KC_BROWSER=${BROWSER}: use chromium, firefox or webkit`);
export const FIREFOX = BROWSER === 'firefox';

/**
 * A step that `browser`'s driver cannot do: true (skip it) in that browser, and
 * the test output says what was skipped. Never skip a step silently.
 */
export function unsupportedStep(t, browser, what) {
  if (BROWSER !== browser) return false;
  t.diagnostic(`${browser}: skipped step: ${what}`);
  return true;
}

export const BIN = process.env.KC_SERVER_BIN
  || path.join(process.env.CARGO_TARGET_DIR ? path.resolve(repo, process.env.CARGO_TARGET_DIR) : path.join(repo, 'target'), 'debug', 'kommunchat');

const ALL_DAYS = ['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday',
  'public_holidays', 'midsommarafton', 'julafton', 'nyarsafton'];

function hoursToml(intervals, extra = '') {
  const list = JSON.stringify(intervals);
  return `[opening_hours]\n${ALL_DAYS.map((d) => `${d} = ${list}`).join('\n')}\nday_before_holiday = []\n${extra}`;
}

export const PRIVACY_URL = 'https://kommun.example/personuppgifter';
export const WIDGET_ORIGIN = 'https://kommun.example';

const COMMON = `
[chat]
max_chats_per_advisor = 3
queue_update_interval_ms = 200

[contact]
organisation = "Helsingborgs stad"
phone = "042-10 50 00"
visiting_address = "Helsingborg Kontaktcenter, Stortorget 17"
privacy_policy_url = "${PRIVACY_URL}"
public_record_notice = "Ditt ärende sparas och blir en allmän handling som kan komma att läsas av andra."

[security]
widget_origins = ["${WIDGET_ORIGIN}"]

[storage]
sqlite_synchronous = "normal"
`;

/** Open around the clock, every day. */
export const ALWAYS_OPEN = `${hoursToml(['00:00-24:00'])}\n${COMMON}`;

/** Closed now; opens for half an hour two hours from now, with a deviating day ahead. */
export function closedNowConfig() {
  const p = {};
  const now = new Date();
  for (const x of new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Stockholm', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', hourCycle: 'h23' }).formatToParts(now)) p[x.type] = x.value;
  const h = String((Number(p.hour) + 2) % 24).padStart(2, '0');
  const later = new Date(Date.UTC(Number(p.year), Number(p.month) - 1, Number(p.day) + 3));
  const date = later.toISOString().slice(0, 10);
  const exception = `\n[[opening_hours.exceptions]]\ndate = ${date}\nlabel = "Stängt för personalutbildning"\n`;
  return `${hoursToml([`${h}:00-${h}:30`], exception)}\n${COMMON}`;
}

/** The environment without any KOMMUNCHAT_… override but the test's own. */
function serverEnv(dir) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('KOMMUNCHAT_')));
  return { ...env, KOMMUNCHAT_DATABASE_URL: `sqlite://${dir}/k.db`, KOMMUNCHAT_LOG: 'warn' };
}

function kommunchat(dir, args, input) {
  const env = serverEnv(dir);
  const r = spawnSync(BIN, args, { cwd: dir, input, encoding: 'utf8', env });
  assert.equal(r.status, 0, `kommunchat ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

/**
 * Starts the real binary with `config`; `users` are added through the CLI first.
 * Returns { url, stop() }.
 */
export async function startServer({ config, users = [] }) {
  const dir = mkdtempSync(path.join(tmpdir(), 'kommunchat-browser-'));
  writeFileSync(path.join(dir, 'kommunchat.toml'), config);
  for (const u of users) {
    kommunchat(dir, ['user', 'add', u.username, '--role', u.role, '--display-name', u.display_name], `${u.password}\n`);
  }
  let { child, url } = await serve(dir, '127.0.0.1:0');
  const stopChild = async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    if (child.exitCode === null) child.kill('SIGKILL');
  };
  return {
    url,
    /** A deploy: SIGTERM, then a new server on the same address and database. */
    async restart() {
      await stopChild();
      ({ child } = await serve(dir, new URL(url).host));
    },
    async stop() {
      await stopChild();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Runs `kommunchat serve` in `dir` on `listen`; resolves once it listens. */
async function serve(dir, listen) {
  const child = spawn(BIN, ['serve', '--listen', listen], { cwd: dir, env: serverEnv(dir), stdio: ['ignore', 'pipe', 'inherit'] });
  track(child);
  const url = await new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error('the server did not start within 30 s')), 30000);
    child.stdout.on('data', (chunk) => {
      buf += chunk;
      const m = /kommunchat listening on (http:\/\/\S+)/.exec(buf);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`the server exited with ${code}`)); });
  });
  child.stdout.resume();
  return { child, url };
}

/** The browser; `firefoxUserPrefs` apply to Firefox only. */
export async function launch({ firefoxUserPrefs } = {}) {
  if (BROWSER === 'webkit') throw new Error('WebKit is driven by webkit.wd.mjs over WebDriver, not by playwright');
  if (FIREFOX) {
    return firefox.launch({
      channel: 'moz-firefox',
      executablePath: process.env.FIREFOX || '/usr/bin/firefox-esr',
      headless: true,
      firefoxUserPrefs,
    });
  }
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** A context in which axe can be injected (the pages' CSP forbids inline scripts). */
export async function context(browser, options = {}) {
  const ctx = await browser.newContext({ bypassCSP: true, locale: 'sv-SE', timezoneId: 'Europe/Stockholm', ...options });
  ctx.setDefaultTimeout(10000);
  return ctx;
}

let axeSource = null;
/** axe-core with the WCAG 2.1 A and AA rules; fails with the violations listed. */
export async function axe(target, label) {
  // Evaluated rather than added as a <script>: the pages' CSP forbids inline
  // scripts and Firefox's driver (WebDriver BiDi) cannot bypass CSP.
  axeSource ??= readFileSync(AXE, 'utf8');
  if (!(await target.evaluate(() => typeof window.axe === 'object'))) await target.evaluate(axeSource);
  const result = await target.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } });
    return r.violations.map((v) => `${v.id} (${v.impact}): ${v.help}\n    ${v.nodes.map((n) => `${n.target.join(' ')} — ${n.failureSummary.replace(/\n/g, ' ')}`).join('\n    ')}`);
  });
  assert.deepEqual(result, [], `axe found WCAG 2.1 A/AA violations on ${label}:\n  ${result.join('\n  ')}`);
}

export async function shot(page, name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}${FIREFOX ? '-firefox' : ''}.png`), fullPage: true });
}

/** The chat iframe that the widget opened on a host page. */
export async function openWidget(page) {
  const launcher = page.getByRole('button', { name: /Chatta med oss|Chat with us/ });
  await launcher.click();
  await page.locator('iframe[title]').waitFor();
  const handle = await page.locator('iframe[title]').elementHandle();
  const frame = await handle.contentFrame();
  await frame.waitForLoadState();
  return frame;
}

/** True when nothing makes the page scroll sideways. */
export async function noHorizontalScroll(target) {
  return target.evaluate(() => document.documentElement.scrollWidth <= document.documentElement.clientWidth + 1);
}

/** The focused element has a visible focus indicator. */
export async function focusVisible(target) {
  return target.evaluate(() => {
    let el = document.activeElement;
    while (el && el.shadowRoot && el.shadowRoot.activeElement) el = el.shadowRoot.activeElement;
    if (!el || el === document.body) return { ok: false, what: 'nothing focused' };
    const s = getComputedStyle(el);
    const outline = s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2;
    const shadow = s.boxShadow && s.boxShadow !== 'none';
    return { ok: outline || shadow, what: `${el.tagName.toLowerCase()}#${el.id}.${el.className}` };
  });
}

export async function login(page, username, password) {
  await page.locator('#login-user').fill(username);
  await page.locator('#login-pass').fill(password);
  await page.getByRole('button', { name: 'Logga in' }).click();
}

/** Polls `fn` (sync or async) until it returns something truthy; fails with `what` after `timeout` ms. */
export async function waitUntil(fn, what, timeout = 10000) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Sends the context's WebSockets to URLs matching `pattern` through a proxy the
 * test controls (this works in Firefox too, which has no WebSocket frame
 * events). `frames` holds every JSON frame the page received; `hold = true`
 * keeps the server's frames back until `release()`; `refuse = true` turns new
 * connections away (`refused` counts them); `cut()` drops the open ones.
 */
export async function wsProxy(ctx, pattern) {
  // frames: what the server sent (JSON); sent: what the page sent.
  const net = { frames: [], sent: [], held: [], hold: false, refuse: false, refused: 0, connections: 0, links: new Set() };
  await ctx.routeWebSocket(pattern, (ws) => {
    if (net.refuse) { net.refused++; ws.close({ code: 4000, reason: 'offline' }); return; }
    net.connections++;
    const upstream = ws.connectToServer();
    const link = { ws, upstream };
    net.links.add(link);
    ws.onMessage((m) => {
      try { net.sent.push(JSON.parse(String(m))); } catch { /* not JSON */ }
      upstream.send(m);
    });
    upstream.onMessage((m) => {
      const deliver = () => {
        if (!net.links.has(link)) return;
        try { net.frames.push(JSON.parse(String(m))); } catch { /* not JSON */ }
        ws.send(m);
      };
      if (net.hold) net.held.push(deliver); else deliver();
    });
    ws.onClose(() => { net.links.delete(link); upstream.close(); });
    upstream.onClose(() => { net.links.delete(link); ws.close(); });
  });
  net.release = () => { net.hold = false; for (const deliver of net.held.splice(0)) deliver(); };
  net.cut = () => {
    for (const link of [...net.links]) {
      net.links.delete(link);
      link.ws.close({ code: 4000, reason: 'network down' });
      link.upstream.close();
    }
  };
  return net;
}

/** An init script: records the frequency of every oscillator the page starts in `window.beeps`. */
export function audioSpy() {
  window.beeps = [];
  const Real = window.AudioContext;
  if (!Real) return;
  window.AudioContext = class extends Real {
    createOscillator() {
      const osc = super.createOscillator();
      const start = osc.start.bind(osc);
      osc.start = (...args) => { window.beeps.push(osc.frequency.value); return start(...args); };
      return osc;
    }
  };
}

// Servers still running when the test process ends are stopped with it.
const children = new Set();
export function track(child) {
  children.add(child);
  child.once('exit', () => children.delete(child));
}
process.on('exit', () => { for (const c of children) c.kill('SIGKILL'); });
