// The advisor console at work: the cue on a new chat (highlight, title,
// announcement, sound), transferring a chat between two signed-in advisors,
// recovering from a dropped connection without a reload, and a status chosen
// before the server has welcomed the console. Each test has its own server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, launch, context, axe, shot, login, wsProxy, audioSpy, waitUntil, ALWAYS_OPEN,
} from './helpers.mjs';

const PW = 'ett långt lösenord';
const ADVISORS = [
  { username: 'anna', role: 'advisor', display_name: 'Anna', password: PW },
  { username: 'bo', role: 'advisor', display_name: 'Bo', password: PW },
];
let browser;
const cleanup = [];

before(async () => { browser = await launch(); });
after(async () => {
  for (const f of cleanup.reverse()) await f().catch(() => {});
  await browser?.close();
});

async function server() {
  const s = await startServer({ config: ALWAYS_OPEN, users: ADVISORS });
  cleanup.push(() => s.stop());
  return s;
}

/** A signed-in console in its own context, its socket through a proxy, its sound recorded; `hold` keeps the welcome back. */
async function advisor(srv, username, { hold = false } = {}) {
  const ctx = await context(browser);
  cleanup.push(() => ctx.close());
  await ctx.addInitScript(audioSpy);
  const net = await wsProxy(ctx, /\/ws\/advisor$/);
  net.hold = hold;
  const page = await ctx.newPage();
  await page.goto(`${srv.url}/console`);
  await login(page, username, PW);
  if (!hold) await page.waitForFunction(() => document.getElementById('max-chats').textContent !== '–');
  const panel = () => page.locator('.chat-panel:not([hidden])');
  const beeps = () => page.evaluate(() => window.beeps);
  return { ctx, page, net, panel, beeps };
}

async function available(a) {
  await a.page.getByLabel('Tillgänglig').check();
  await a.page.waitForFunction(() => document.body.dataset.status === 'available');
}

/** A citizen who starts a chat on /chat and writes `text`. */
async function citizen(srv, name, topic, text) {
  const ctx = await context(browser);
  cleanup.push(() => ctx.close());
  const page = await ctx.newPage();
  await page.goto(`${srv.url}/chat`);
  await page.locator('#name-input').fill(name);
  if (topic) await page.locator('#topic-input').fill(topic);
  await page.getByRole('button', { name: 'Starta chatten' }).click();
  if (text) await say(page, text);
  return page;
}
async function say(page, text) {
  await page.locator('#message-input').fill(text);
  await page.locator('#message-input').press('Enter');
  await page.locator('#messages .msg.mine:not([data-pending])', { hasText: text }).waitFor();
}

const texts = (locator) => locator.locator('.messages .msg .text').allTextContents();
const count = (list, text) => list.filter((t) => t === text).length;

test('console: a new chat pulses its tab, marks the title, is announced and beeps; restored chats do not', async () => {
  const srv = await server();
  const anna = await advisor(srv, 'anna');
  await available(anna);
  assert.deepEqual(await anna.beeps(), [], 'no sound before a chat');

  await citizen(srv, 'Ada', 'Bygglov', 'Hej, en fråga om bygglov.');
  const ada = anna.page.getByRole('tab', { name: /Ada/ });
  await ada.waitFor();
  // The chat that is shown at once still gets the cue.
  assert.match(await ada.getAttribute('class'), /\bnew\b/);
  assert.equal(await ada.evaluate((el) => getComputedStyle(el).animationName), 'pulse');
  assert.match(await anna.page.title(), /^Ny chatt! /);
  await anna.page.locator('#alert', { hasText: 'Ny chatt: Ada, Bygglov.' }).waitFor({ state: 'attached' });
  await waitUntil(async () => (await anna.beeps()).length === 2, 'the first chat beeps');
  assert.deepEqual(await anna.beeps(), [660, 880]);
  await shot(anna.page, 'console-new-chat');
  // The pulse and the title go by themselves on the chat that is shown.
  await anna.page.waitForFunction(() => !document.title.startsWith('Ny chatt!'), null, { timeout: 8000 });
  assert.equal(await anna.page.title(), 'Chattkonsol – kommunchat');
  await anna.page.waitForFunction(() => !document.querySelector('[role=tab]').classList.contains('new'), null, { timeout: 8000 });

  // A second chat, behind the one shown: highlight until looked at, an unread badge, the title, a beep.
  await citizen(srv, 'Bertil', null, 'Hej från Bertil');
  const bertil = anna.page.getByRole('tab', { name: /Bertil/ });
  await bertil.waitFor();
  assert.match(await bertil.getAttribute('class'), /\bnew\b/);
  assert.equal(await bertil.getAttribute('aria-selected'), 'false');
  assert.match(await bertil.textContent(), /1 oläst meddelande/);
  assert.match(await anna.page.title(), /^Ny chatt! \(1\) Chattkonsol/);
  await anna.page.locator('#alert', { hasText: 'Ny chatt: Bertil.' }).waitFor({ state: 'attached' });
  await waitUntil(async () => (await anna.beeps()).length === 4, 'the second chat beeps');
  await axe(anna.page, 'the console with a new chat highlighted');
  await anna.page.waitForFunction(() => document.title === '(1) Chattkonsol – kommunchat', null, { timeout: 8000 });
  assert.match(await bertil.getAttribute('class'), /\bnew\b/, 'the highlight stays until the chat is looked at');
  await bertil.click();
  assert.doesNotMatch(await bertil.getAttribute('class'), /\bnew\b/);
  assert.equal(await anna.page.title(), 'Chattkonsol – kommunchat');

  // Chats handed back on a new connection are no news: no sound, no highlight.
  anna.net.cut();
  await waitUntil(() => anna.net.connections === 2, 'the console connects again');
  await anna.page.locator('#announcer', { hasText: 'Anslutningen är återställd.' }).waitFor({ state: 'attached' });
  await anna.page.getByRole('tab', { name: /Ada/ }).waitFor();
  assert.equal(await anna.page.getByRole('tab').count(), 2);
  assert.equal(await anna.page.locator('[role=tab].new').count(), 0);
  assert.equal((await anna.beeps()).length, 4);
  assert.doesNotMatch(await anna.page.title(), /Ny chatt/);
});

test('console: transfer a chat to a signed-in colleague, then back to the front of the queue', async () => {
  const srv = await server();
  const anna = await advisor(srv, 'anna');
  const bo = await advisor(srv, 'bo');
  await available(anna);
  const ada = await citizen(srv, 'Ada', 'Parkering', 'Hej, jag har en fråga om boendeparkering.');
  await anna.page.getByRole('tab', { name: /Ada/ }).waitFor();
  await anna.panel().locator('.message-input').fill('Jag kollar med en kollega.');
  await anna.panel().locator('.message-input').press('Enter');
  await ada.getByText('Jag kollar med en kollega.').waitFor();

  // Bo is away: the transfer is refused and Anna keeps the chat.
  await anna.panel().getByText('Överför chatten').click();
  await anna.panel().getByLabel('Till kollega (användarnamn)').fill('bo');
  await anna.panel().getByRole('button', { name: 'Överför', exact: true }).click();
  await anna.panel().getByText('Kollegan är inte inloggad, inte tillgänglig eller har inga lediga platser.').waitFor();
  assert.equal(await anna.page.getByRole('tab').count(), 1);
  await axe(anna.page, 'the console with a refused transfer');
  await shot(anna.page, 'console-transfer-refused');

  // Not offered while away; offered (not Anna herself) once available.
  const offered = () => anna.page.locator('#colleagues option').evaluateAll((os) => os.map((o) => [o.value, o.label]));
  assert.deepEqual(await offered(), []);
  await available(bo);
  await waitUntil(async () => (await offered()).length === 1, 'Bo is offered in the transfer field');
  assert.deepEqual(await offered(), [['bo', 'Bo (3 lediga platser)']]);
  await anna.panel().getByRole('button', { name: 'Överför', exact: true }).click();
  // Gone from Anna, with word why.
  await anna.page.getByRole('tab', { name: /Ada/ }).waitFor({ state: 'detached' });
  await anna.page.locator('#announcer', { hasText: 'Chatten med Ada har överförts till en kollega.' }).waitFor({ state: 'attached' });
  assert.ok(await anna.page.getByText('Inga pågående chattar').isVisible());
  assert.equal(await anna.page.locator('#chat-count').textContent(), '0');
  // Bo gets it as a new chat with the whole history, Anna's line under her name.
  const boTab = bo.page.getByRole('tab', { name: /Ada/ });
  await boTab.waitFor();
  assert.equal(await boTab.getAttribute('aria-selected'), 'true');
  await bo.page.locator('#alert', { hasText: 'Ny chatt: Ada, Parkering.' }).waitFor({ state: 'attached' });
  await waitUntil(async () => (await bo.beeps()).length === 2, 'the transferred chat beeps for Bo');
  assert.deepEqual(await texts(bo.panel()), ['Hej, jag har en fråga om boendeparkering.', 'Jag kollar med en kollega.']);
  assert.match(await bo.panel().locator('.msg.mine .meta').textContent(), /^Anna, /);
  assert.match(await bo.panel().locator('.panel-title').textContent(), /Ada – Parkering/);
  // The citizen is told who took over.
  await ada.locator('#messages').getByText('Bo har anslutit till chatten.').waitFor();
  await ada.locator('#advisor-line', { hasText: 'Du chattar med Bo, kommunvägledare.' }).waitFor();
  await shot(bo.page, 'console-transferred');

  // The chat goes on between Ada and Bo only.
  await bo.panel().locator('.message-input').fill('Hej Ada, Bo här. Jag tar över.');
  await bo.panel().locator('.message-input').press('Enter');
  await ada.getByText('Hej Ada, Bo här. Jag tar över.').waitFor();
  await say(ada, 'Tack, Bo!');
  await bo.panel().locator('.msg .text', { hasText: 'Tack, Bo!' }).waitFor();
  assert.equal(await anna.page.getByRole('tab').count(), 0);

  // Back to the front of the queue: it goes to someone other than Bo, here Anna.
  await bo.panel().getByText('Överför chatten').click();
  await bo.panel().getByRole('button', { name: 'Lägg tillbaka först i kön' }).click();
  await bo.page.getByRole('tab', { name: /Ada/ }).waitFor({ state: 'detached' });
  await bo.page.locator('#announcer', { hasText: 'Chatten med Ada har lagts tillbaka i kön.' }).waitFor({ state: 'attached' });
  await anna.page.getByRole('tab', { name: /Ada/ }).waitFor();
  await anna.panel().locator('.msg .text', { hasText: 'Tack, Bo!' }).waitFor();
  assert.equal(count(await texts(anna.panel()), 'Hej Ada, Bo här. Jag tar över.'), 1);
  await waitUntil(async () => (await ada.locator('#messages').getByText('Anna har anslutit till chatten.').count()) === 2, 'Ada is told Anna took the chat again');
  await ada.locator('#advisor-line', { hasText: 'Du chattar med Anna, kommunvägledare.' }).waitFor();
  assert.equal(await bo.page.getByRole('tab').count(), 0);
});

test('console: a dropped connection recovers by itself, without a reload, with every open chat', async () => {
  const srv = await server();
  const anna = await advisor(srv, 'anna');
  await available(anna);
  const ada = await citizen(srv, 'Ada', null, 'Hej från Ada');
  await anna.page.getByRole('tab', { name: /Ada/ }).waitFor();
  const bertil = await citizen(srv, 'Bertil', null, 'Hej från Bertil');
  await anna.page.getByRole('tab', { name: /Bertil/ }).waitFor();
  await anna.page.getByRole('tab', { name: /Ada/ }).click();
  await anna.panel().locator('.message-input').fill('Ett utkast till Ada');
  await anna.page.evaluate(() => { window.sameDocument = true; });
  const beeps = (await anna.beeps()).length;

  // The line goes down, and the first attempts to reconnect are turned away.
  anna.net.refuse = true;
  anna.net.cut();
  const banner = anna.page.locator('#conn-banner');
  await banner.waitFor({ state: 'visible' });
  assert.match(await anna.page.locator('#conn-text').textContent(), /Anslutningen till servern bröts/);
  await anna.page.locator('#alert', { hasText: 'Anslutningen bröts. Ansluter igen.' }).waitFor({ state: 'attached' });
  await axe(anna.page, 'the console, connection lost');
  await shot(anna.page, 'console-connection-lost');
  // Meanwhile: Ada writes (stored by the server), Anna answers Bertil (kept until sent).
  await say(ada, 'Är du kvar?');
  await anna.page.getByRole('tab', { name: /Bertil/ }).click();
  await anna.panel().locator('.message-input').fill('Jag är strax tillbaka.');
  await anna.panel().locator('.message-input').press('Enter');
  await anna.panel().locator('.msg[data-pending="1"]', { hasText: 'Jag är strax tillbaka.' }).waitFor();
  await waitUntil(() => anna.net.refused >= 1, 'the console tries to reconnect');

  // The line is back; nobody touches the console.
  anna.net.refuse = false;
  await banner.waitFor({ state: 'hidden', timeout: 15000 });
  await anna.page.locator('#announcer', { hasText: 'Anslutningen är återställd.' }).waitFor({ state: 'attached' });
  assert.equal(await anna.page.evaluate(() => window.sameDocument), true, 'the page was not reloaded');
  assert.equal(await anna.page.getByRole('tab').count(), 2);
  assert.ok(await anna.page.locator('#status-available').isChecked());
  assert.equal(await anna.page.evaluate(() => document.body.dataset.status), 'available');
  // Bertil's chat: the message written offline went out once.
  await bertil.getByText('Jag är strax tillbaka.').waitFor();
  await anna.panel().locator('.msg[data-pending="1"]').waitFor({ state: 'detached' });
  // Ada's chat: what she wrote meanwhile is there, the draft is kept.
  await anna.page.getByRole('tab', { name: /Ada/ }).click();
  await anna.panel().locator('.msg .text', { hasText: 'Är du kvar?' }).waitFor();
  assert.equal(await anna.panel().locator('.message-input').inputValue(), 'Ett utkast till Ada');
  assert.deepEqual(await texts(anna.panel()), ['Hej från Ada', 'Är du kvar?']);
  // And the chats go on.
  await anna.panel().locator('.message-input').fill('Ja, nu är jag här igen.');
  await anna.panel().locator('.message-input').press('Enter');
  await ada.getByText('Ja, nu är jag här igen.').waitFor();
  await say(bertil, 'Bra!');
  await anna.page.getByRole('tab', { name: /Bertil/ }).click();
  await anna.panel().locator('.msg .text', { hasText: 'Bra!' }).waitFor();
  const bertilTexts = await texts(anna.panel());
  assert.equal(count(bertilTexts, 'Jag är strax tillbaka.'), 1, bertilTexts.join(' | '));
  assert.equal(count((await bertil.locator('#messages .msg .text').allTextContents()), 'Jag är strax tillbaka.'), 1);
  assert.equal((await anna.beeps()).length, beeps, 'no cue for chats that were already open');
});

test('console: "Tillgänglig" chosen before the server has welcomed the console is kept and sent', async () => {
  const srv = await server();
  await citizen(srv, 'Ada', null, 'Hej, är det någon där?');
  const anna = await advisor(srv, 'anna', { hold: true });
  await waitUntil(() => anna.net.held.length >= 1, 'the welcome frame is on its way');
  assert.equal(await anna.page.locator('#max-chats').textContent(), '–', 'not welcomed yet');
  await anna.page.getByLabel('Tillgänglig').click();
  assert.equal(await anna.page.locator('#status-available').isChecked(), true, 'the choice stays');
  assert.equal(await anna.page.locator('#status-away').isChecked(), false);

  anna.net.release();
  await anna.page.waitForFunction(() => document.getElementById('max-chats').textContent !== '–');
  // The server takes it: Anna is available and gets the waiting chat.
  await anna.page.getByRole('tab', { name: /Ada/ }).waitFor();
  await anna.panel().getByText('Hej, är det någon där?').waitFor();
  assert.ok(anna.net.frames.some((f) => f.type === 'status' && f.status === 'available'));
  assert.equal(await anna.page.locator('#status-available').isChecked(), true);
  assert.equal(await anna.page.evaluate(() => document.body.dataset.status), 'available');
});

test('a server restart: the citizen\'s chat, the queue and the console go on by themselves', async () => {
  const srv = await server();
  const anna = await advisor(srv, 'anna');
  await available(anna);
  const ada = await citizen(srv, 'Ada', null, 'Hej från Ada');
  await anna.page.getByRole('tab', { name: /Ada/ }).waitFor();
  await anna.panel().locator('.message-input').fill('Hej Ada, vad gäller det?');
  await anna.panel().locator('.message-input').press('Enter');
  await ada.getByText('Hej Ada, vad gäller det?').waitFor();
  const bertil = await citizen(srv, 'Bertil', null, 'Hej från Bertil');
  await anna.page.getByRole('tab', { name: /Bertil/ }).waitFor();
  await anna.page.evaluate(() => { window.sameDocument = true; });
  await ada.evaluate(() => { window.sameDocument = true; });

  await srv.restart();

  // Nobody touches anything: the banners go, the chats are where they were.
  await ada.locator('#conn-banner').waitFor({ state: 'hidden', timeout: 15000 });
  await anna.page.locator('#conn-banner').waitFor({ state: 'hidden', timeout: 15000 });
  assert.equal(await ada.evaluate(() => window.sameDocument), true, 'the citizen page was not reloaded');
  assert.equal(await anna.page.evaluate(() => window.sameDocument), true, 'the console was not reloaded');
  assert.equal(await anna.page.getByRole('tab').count(), 2);
  await anna.page.waitForFunction(() => document.body.dataset.status === 'available');
  assert.ok(await anna.page.locator('#status-available').isChecked(), 'the status is kept');
  await say(ada, 'Är servern tillbaka?');
  await anna.page.getByRole('tab', { name: /Ada/ }).click();
  await anna.panel().locator('.msg .text', { hasText: 'Är servern tillbaka?' }).waitFor();
  assert.deepEqual(await texts(anna.panel()), ['Hej från Ada', 'Hej Ada, vad gäller det?', 'Är servern tillbaka?']);
  const adaTexts = await ada.locator('#messages .msg .text').allTextContents();
  assert.equal(count(adaTexts, 'Hej från Ada'), 1, adaTexts.join(' | '));
  assert.equal(count(adaTexts, 'Hej Ada, vad gäller det?'), 1, adaTexts.join(' | '));
  await anna.panel().locator('.message-input').fill('Ja, allt är sparat.');
  await anna.panel().locator('.message-input').press('Enter');
  await ada.getByText('Ja, allt är sparat.').waitFor();
  await shot(ada, 'chat-after-restart');
  // Bertil's chat too; and the next citizen still reaches Anna, who is still available.
  await say(bertil, 'Och jag?');
  await anna.page.getByRole('tab', { name: /Bertil/ }).click();
  await anna.panel().locator('.msg .text', { hasText: 'Och jag?' }).waitFor();
  await citizen(srv, 'Cecilia', null, null);
  await anna.page.getByRole('tab', { name: /Cecilia/ }).waitFor();
});
