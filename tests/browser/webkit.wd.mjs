// The chat in WebKit, the engine of Safari (every browser on an iPhone): the
// widget on the demo page, a whole chat with an advisor whose console is open
// in WebKit too, the errand number and the satisfaction survey, with axe on
// each state. Playwright cannot drive Debian's WebKit, so this drives
// WebKitGTK's MiniBrowser over classic WebDriver (WebKitWebDriver, Debian's
// webkit2gtk-driver) with selenium-webdriver, under Xvfb when there is no
// display. Run by run.sh for KC_BROWSERS containing `webkit`.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Builder, By, Key, until } from 'selenium-webdriver';
import { startServer, ALWAYS_OPEN, AXE, SHOTS } from './helpers.mjs';

const MINIBROWSER = process.env.KC_MINIBROWSER || '/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser';
const WAIT = 10000;

const children = [];
let server;
let driver;
let consoleWindow;
let chatWindow;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitFor(check, what, timeout = WAIT) {
  const end = Date.now() + timeout;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A display for the browser: the session's own, or a new Xvfb. */
async function display() {
  if (process.env.DISPLAY) return process.env.DISPLAY;
  let n = 90;
  while (existsSync(`/tmp/.X11-unix/X${n}`) || existsSync(`/tmp/.X${n}-lock`)) n += 1;
  const xvfb = spawn('Xvfb', [`:${n}`, '-screen', '0', '1280x1024x24', '-nolisten', 'tcp'], { stdio: 'ignore' });
  children.push(xvfb);
  await waitFor(() => existsSync(`/tmp/.X11-unix/X${n}`), `Xvfb :${n}`);
  return `:${n}`;
}

async function startDriver() {
  const env = { ...process.env, DISPLAY: await display() };
  const port = await freePort();
  const wd = spawn('WebKitWebDriver', [`--port=${port}`], { env, stdio: 'ignore' });
  children.push(wd);
  await waitFor(() => new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => { socket.end(); resolve(true); });
    socket.on('error', () => resolve(false));
  }), 'WebKitWebDriver to listen');
  return new Builder()
    .usingServer(`http://127.0.0.1:${port}`)
    .withCapabilities({
      browserName: 'MiniBrowser',
      'webkitgtk:browserOptions': { binary: MINIBROWSER, args: ['--automation'] },
    })
    .build();
}

/** An element inside the widget launcher's shadow root (on the host page). */
async function inWidget(css) {
  let element = null;
  await waitFor(async () => {
    element = await driver.executeScript(
      `const host = [...document.querySelectorAll('div')].find((d) => d.shadowRoot);
       return host ? host.shadowRoot.querySelector(arguments[0]) : null;`, css);
    return element !== null;
  }, `${css} in the widget`);
  return element;
}

const find = (css) => driver.wait(until.elementLocated(By.css(css)), WAIT, `${css} to be there`);
async function shown(css) {
  const element = await find(css);
  await driver.wait(until.elementIsVisible(element), WAIT, `${css} to be visible`);
  return element;
}
/** Waits until the text of `css` matches `pattern`; returns it. */
async function textMatches(css, pattern) {
  let text = '';
  await waitFor(async () => {
    const found = await driver.findElements(By.css(css));
    text = found.length ? await found[0].getText() : '';
    return pattern.test(text);
  }, `${css} to read ${pattern} (it reads ${JSON.stringify(text)})`);
  return text;
}
const button = (label) => driver.wait(
  until.elementLocated(By.xpath(`//button[not(@hidden) and normalize-space(.)=${JSON.stringify(label)}]`)), WAIT, `the button ${label}`,
);

let axeSource = null;
/** axe-core with the WCAG 2.1 A and AA rules on the current document. */
async function axe(label) {
  axeSource ??= readFileSync(AXE, 'utf8');
  if (!(await driver.executeScript('return typeof window.axe === "object"'))) await driver.executeScript(axeSource);
  const violations = await driver.executeAsyncScript(`
    const done = arguments[arguments.length - 1];
    axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } })
      .then((r) => done(r.violations.map((v) => v.id + ' (' + v.impact + '): ' + v.help + ' ' + v.nodes.map((n) => n.target.join(' ')).join(', '))))
      .catch((e) => done(['axe failed: ' + e]));`);
  assert.deepEqual(violations, [], `axe found WCAG 2.1 A/AA violations on ${label}:\n  ${violations.join('\n  ')}`);
}

async function shot(name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  writeFileSync(path.join(SHOTS, `${name}-webkit.png`), await driver.takeScreenshot(), 'base64');
}

before(async () => {
  [server, driver] = await Promise.all([
    startServer({
      config: ALWAYS_OPEN,
      users: [{ username: 'anna', role: 'advisor', display_name: 'Anna', password: 'ett långt lösenord' }],
    }),
    startDriver(),
  ]);
  await driver.manage().setTimeouts({ script: WAIT });
});

after(async () => {
  await driver?.quit().catch(() => {});
  for (const child of children.reverse()) child.kill('SIGTERM');
  await server?.stop();
});

describe('WebKit (Safari\'s engine)', () => {
  it('the advisor signs in to the console and becomes available', async () => {
    consoleWindow = await driver.getWindowHandle();
    await driver.get(`${server.url}/console`);
    await (await shown('#login-user')).sendKeys('anna');
    await (await find('#login-pass')).sendKeys('ett långt lösenord');
    await (await button('Logga in')).click();
    await shown('#console-view');
    await (await find('#status-available')).click();
    await waitFor(() => driver.executeScript('return document.getElementById("status-available").checked'), 'the status to be available');
    await axe('the console, no chats');
  });

  it('a citizen opens the widget on the demo page, starts a chat and writes to the advisor', async () => {
    await driver.switchTo().newWindow('window');
    chatWindow = await driver.getWindowHandle();
    await driver.get(`${server.url}/`);
    const launcher = await inWidget('button');
    assert.match(await launcher.getText(), /Chatta med oss/);
    await launcher.click();
    await driver.switchTo().frame(await inWidget('iframe[title]'));
    await (await shown('#name-input')).sendKeys('Ada');
    await axe('the chat, before start');
    await (await button('Starta chatten')).click();
    await textMatches('#view-chat, body', /Anna/);
    const input = await shown('#message-input');
    await input.sendKeys('Hej från WebKit', Key.ENTER);
    await find('#messages .msg.mine:not([data-pending])');
    await axe('the chat, chatting');

    await driver.switchTo().window(consoleWindow);
    await textMatches('.chat-panel:not([hidden]) .messages', /Hej från WebKit/);
    await (await shown('.chat-panel:not([hidden]) .message-input')).sendKeys('Hej Ada! Vad gäller det?', Key.ENTER);

    await driver.switchTo().window(chatWindow);
    await driver.switchTo().frame(await inWidget('iframe[title]'));
    await textMatches('#messages', /Hej Ada! Vad gäller det\?/);
    await shot('chat-chatting');
  });

  it('a reload of the host page resumes the chat with its history, and the chat goes on', async () => {
    await driver.switchTo().defaultContent();
    await driver.navigate().refresh();
    // The widget remembers that it was open.
    await driver.switchTo().frame(await inWidget('iframe[title]'));
    await textMatches('#messages', /Hej från WebKit[\s\S]*Hej Ada! Vad gäller det\?/);
    await (await shown('#message-input')).sendKeys('Jag är tillbaka', Key.ENTER);
    await driver.switchTo().window(consoleWindow);
    await textMatches('.chat-panel:not([hidden]) .messages', /Jag är tillbaka/);
    // Each message once, in order.
    const texts = await driver.executeScript(
      'return [...document.querySelectorAll(".chat-panel:not([hidden]) .msg .text")].map((t) => t.textContent)');
    assert.deepEqual(texts, ['Hej från WebKit', 'Hej Ada! Vad gäller det?', 'Jag är tillbaka']);
  });

  it('the advisor ends the chat; the citizen gets the errand number and rates the chat', async () => {
    await driver.switchTo().window(consoleWindow);
    const category = await shown('.chat-panel:not([hidden]) select.category');
    await category.sendKeys('Övrigt');
    await (await button('Avsluta ärendet')).click();

    await driver.switchTo().window(chatWindow);
    await driver.switchTo().frame(await inWidget('iframe[title]'));
    await shown('#ended-heading');
    assert.match(await (await find('#errand-number')).getText(), /^\d{4}-\d{6}$/);
    await shown('#survey-form');
    await axe('the chat, ended with the survey');
    await (await find('label[for] input[name=score][value="5"], input[name=score][value="5"]')).click();
    await (await button('Skicka betyg')).click();
    await textMatches('#survey-note', /Tack för ditt svar!.*5 – Mycket nöjd/);
    const checked = await driver.executeScript('return [...document.querySelectorAll("input[name=score]")].filter((r) => r.checked).map((r) => r.value)');
    assert.deepEqual(checked, ['5'], 'the choice stays, so it can be changed');
    await shot('chat-rated');
    await axe('the chat, rated');
  });
});
