// A chat's size limits as the citizen meets them: a message beyond what a
// waiting chat may hold is refused with a sentence that says why, marked as
// not sent, and what was sent before stays.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, context, axe, shot, ALWAYS_OPEN } from './helpers.mjs';

let browser;
let server;

before(async () => {
  // Each message counts its text and 256 bytes: 200 + 256 = 456, so one fits in 700, two do not.
  const config = ALWAYS_OPEN.replace('queue_update_interval_ms = 200', 'queue_update_interval_ms = 200\nmax_queued_bytes = 700');
  assert.notEqual(config, ALWAYS_OPEN);
  [browser, server] = await Promise.all([launch(), startServer({ config })]);
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

describe('size limits', () => {
  it('a waiting citizen who has written as much as the queue holds is told so', async () => {
    const page = await (await context(browser)).newPage();
    await page.goto(`${server.url}/chat`);
    await page.getByRole('button', { name: 'Starta chatten' }).click();
    await page.locator('#queue-position', { hasText: 'Du är nummer 1 i kön.' }).waitFor();
    const first = `Första ${'a'.repeat(193)}`;
    const second = `Andra ${'b'.repeat(194)}`;
    await page.locator('#message-input').fill(first);
    await page.locator('#message-input').press('Enter');
    await page.locator('#messages .msg.mine:not([data-pending])').waitFor();

    await page.locator('#message-input').fill(second);
    await page.locator('#message-input').press('Enter');
    const error = page.locator('#send-error');
    await error.waitFor();
    assert.match(await error.textContent(), /Du har skrivit så mycket som går medan du väntar/);
    const texts = await page.locator('#messages .msg.mine .text').allTextContents();
    assert.deepEqual(texts, [first, second]);
    // The refused one is shown as not sent; the first stays sent.
    const notSent = page.locator('#messages .msg.mine', { has: page.locator('.pending') });
    await notSent.filter({ hasText: 'Andra' }).locator('.pending', { hasText: 'Skickades inte' }).waitFor();
    assert.equal(await notSent.count(), 1);
    // The notice under the input takes room from the log; the failed message stays in view.
    const inView = await page.evaluate(() => {
      const log = document.getElementById('log').getBoundingClientRect();
      const mark = [...document.querySelectorAll('#messages .msg.mine .pending')].pop().getBoundingClientRect();
      return mark.top >= log.top && mark.bottom <= log.bottom;
    });
    assert.ok(inView, 'the message marked as not sent is scrolled into view');
    await axe(page, 'the chat, a message refused');
    await shot(page, 'chat-queue-full');
  });
});

describe('chats started from one address', () => {
  let limited;
  before(async () => {
    const config = ALWAYS_OPEN.replace('[security]\n', '[security]\nchat_starts_per_address_per_hour = 1\n');
    assert.notEqual(config, ALWAYS_OPEN);
    limited = await startServer({ config });
  });
  after(async () => {
    await limited?.stop();
  });

  it('a start beyond the address budget is refused with a sentence that says why', async () => {
    const page = await (await context(browser)).newPage();
    await page.goto(`${limited.url}/chat`);
    await page.getByRole('button', { name: 'Starta chatten' }).click();
    await page.locator('#queue-position', { hasText: 'Du är nummer 1 i kön.' }).waitFor();
    await page.getByRole('button', { name: 'Lämna kön' }).click();
    await page.getByRole('heading', { name: 'Chatten är avslutad' }).waitFor();
    await page.getByRole('button', { name: 'Starta en ny chatt' }).click();
    await page.getByRole('button', { name: 'Starta chatten' }).click();
    const error = page.locator('#start-error');
    await error.waitFor();
    assert.match(await error.textContent(), /Många chattar har startats från ditt nätverk/);
    assert.ok(await page.getByRole('button', { name: 'Starta chatten' }).isEnabled(), 'the citizen may try again');
    await axe(page, 'the chat, a start refused for the address');
    await shot(page, 'chat-too-many-chats');
  });
});
