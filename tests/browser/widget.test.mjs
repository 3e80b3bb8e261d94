// The citizen widget on the demo page: closed and before-start states, English,
// keyboard-only use, narrow screens and zoom, every page's accessibility.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, launch, context, axe, shot, openWidget, noHorizontalScroll, focusVisible,
  FIREFOX, ALWAYS_OPEN, closedNowConfig, PRIVACY_URL,
} from './helpers.mjs';

let browser;
let closed;
let open;

before(async () => {
  [browser, closed, open] = await Promise.all([
    launch(),
    startServer({ config: closedNowConfig() }),
    startServer({ config: ALWAYS_OPEN, users: [{ username: 'chef', role: 'admin', display_name: 'Chefen', password: 'ett långt lösenord' }] }),
  ]);
});
after(async () => {
  await browser?.close();
  await Promise.all([closed?.stop(), open?.stop()]);
});

test('the launcher on the demo page opens the chat in an iframe from kommunchat; closed state shows hours and alternatives', async () => {
  const ctx = await context(browser);
  const page = await ctx.newPage();
  await page.goto(`${closed.url}/`);
  await axe(page, 'the demo page');
  const launcher = page.getByRole('button', { name: 'Chatta med oss' });
  assert.equal(await launcher.getAttribute('aria-expanded'), 'false');
  const frame = await openWidget(page);
  assert.equal(await launcher.getAttribute('aria-expanded'), 'true');
  assert.equal(new URL(frame.url()).pathname, '/chat');
  await frame.getByRole('heading', { name: 'Chatten är stängd just nu' }).waitFor();
  const next = await frame.locator('#closed-next').textContent();
  assert.match(next, /^Vi öppnar igen (i dag|i morgon) \d\d\.\d\d$/);
  assert.match(await frame.locator('#closed-today').textContent(), /\d\d\.\d\d–\d\d\.30|stängt/);
  assert.match(await frame.locator('#closed-deviations').textContent(), /stängt \(Stängt för personalutbildning\)/);
  assert.equal(await frame.locator('#closed-phone').textContent(), '042-10 50 00');
  assert.equal(await frame.locator('#closed-phone').getAttribute('href'), 'tel:042105000');
  assert.match(await frame.locator('#closed-address').textContent(), /Stortorget 17/);
  await shot(page, 'widget-closed');
  await axe(frame, 'the chat, closed');
  await axe(page, 'the demo page with the widget open');
  await ctx.close();
});

test('English follows the host page lang, and the switch changes the language', async () => {
  const ctx = await context(browser);
  const page = await ctx.newPage();
  // An English host page on kommunchat's origin that embeds the widget.
  await page.route(`${closed.url}/english-host`, (route) => route.fulfill({
    contentType: 'text/html',
    body: '<!doctype html><html lang="en"><head><title>Contact us</title><script src="/widget.js" defer></script></head><body><main><h1>Contact us</h1></main></body></html>',
  }));
  await page.goto(`${closed.url}/english-host`);
  const frame = await openWidget(page);
  await page.getByRole('button', { name: 'Chat with us' }).waitFor();
  await frame.getByRole('heading', { name: 'The chat is closed right now' }).waitFor();
  assert.match(await frame.locator('#closed-next').textContent(), /^We open again (today|tomorrow) at \d\d:\d\d$/);
  assert.equal(await frame.evaluate(() => document.documentElement.lang), 'en');
  await axe(frame, 'the chat in English');
  await frame.getByRole('button', { name: 'Byt språk till svenska' }).click();
  await frame.getByRole('heading', { name: 'Chatten är stängd just nu' }).waitFor();
  assert.equal(await frame.evaluate(() => document.documentElement.lang), 'sv');
  await frame.waitForFunction(() => /svenska/.test(document.getElementById('announcer').textContent));
  await frame.getByRole('button', { name: 'Change language to English' }).click();
  await frame.getByRole('heading', { name: 'The chat is closed right now' }).waitFor();
  await ctx.close();
});

test('before start: the public-record notice, the policy link, name and topic; keyboard only with visible focus', async () => {
  const ctx = await context(browser);
  const page = await ctx.newPage();
  await page.goto(`${open.url}/`);
  // Tab from the top of the page until the launcher has focus.
  let onLauncher = false;
  for (let i = 0; i < 20 && !onLauncher; i++) {
    await page.keyboard.press('Tab');
    const f = await focusVisible(page);
    assert.ok(f.ok, `no visible focus on ${f.what}`);
    onLauncher = await page.evaluate(() => document.activeElement?.tagName === 'DIV' && !!document.activeElement.shadowRoot?.activeElement);
  }
  assert.ok(onLauncher, 'the launcher is reachable with Tab');
  await page.keyboard.press('Enter');
  const handle = await page.locator('iframe[title]').elementHandle();
  const frame = await handle.contentFrame();
  await frame.getByText('Innan du börjar').waitFor();
  await frame.waitForFunction(() => document.activeElement?.id === 'title');
  assert.equal(await frame.locator('#public-record-text').textContent(), 'Ditt ärende sparas och blir en allmän handling som kan komma att läsas av andra.');
  const link = frame.getByRole('link', { name: /Så behandlar vi dina personuppgifter/ });
  assert.equal(await link.getAttribute('href'), PRIVACY_URL);
  await shot(page, 'widget-before-start');
  await axe(frame, 'the chat, before start');

  // Tab through the chat: every stop shows focus; the name field takes typing.
  const stops = [];
  for (let i = 0; i < 7; i++) {
    await page.keyboard.press('Tab');
    const f = await focusVisible(frame);
    assert.ok(f.ok, `no visible focus on ${f.what}`);
    stops.push(await frame.evaluate(() => document.activeElement.id || document.activeElement.tagName));
    if (stops.at(-1) === 'name-input') await page.keyboard.type('Ada');
  }
  for (const id of ['lang-switch', 'close-widget', 'privacy-link', 'name-input', 'topic-input', 'start-button']) {
    assert.ok(stops.includes(id), `Tab reaches #${id} (got ${stops.join(', ')})`);
  }
  assert.equal(await frame.locator('#name-input').inputValue(), 'Ada');
  // Escape closes the chat and gives focus back to the launcher.
  await page.keyboard.press('Escape');
  await page.waitForFunction(() => [...document.querySelectorAll('body > div')].some((d) => d.shadowRoot?.querySelector('iframe')?.hidden));
  assert.equal(await page.getByRole('button', { name: 'Chatta med oss' }).getAttribute('aria-expanded'), 'false');
  assert.ok(await page.evaluate(() => [...document.querySelectorAll('body > div')].some((d) => d.shadowRoot?.activeElement?.tagName === 'BUTTON')));
  await ctx.close();
});

test('360 px wide screen and 200% zoom: no sideways scrolling on any page', async (t) => {
  if (FIREFOX) t.diagnostic('firefox: isMobile and hasTouch are not emulated (playwright supports them in Chromium only); the 360 px run is a narrow window');
  for (const [label, options] of [
    ['360 px', { viewport: { width: 360, height: 740 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true }],
    ['200% zoom of a 1280 px window', { viewport: { width: 640, height: 400 }, deviceScaleFactor: 2 }],
  ]) {
    const ctx = await context(browser, options);
    const page = await ctx.newPage();
    for (const path of ['/', '/tillganglighet', '/console', '/admin', '/chat']) {
      await page.goto(`${open.url}${path}`);
      await page.waitForLoadState('networkidle');
      assert.ok(await noHorizontalScroll(page), `${path} scrolls sideways at ${label}`);
    }
    await page.goto(`${open.url}/`);
    const frame = await openWidget(page);
    await frame.getByText('Innan du börjar').waitFor();
    assert.ok(await noHorizontalScroll(frame), `the chat scrolls sideways at ${label}`);
    const box = await page.locator('iframe[title]').boundingBox();
    assert.ok(box.x >= 0 && box.x + box.width <= options.viewport.width + 1, `the chat fits the screen at ${label}`);
    if (label === '360 px') {
      // The layout width: Firefox keeps a classic scrollbar beside it even in a phone-sized window.
      const width = await page.evaluate(() => document.documentElement.clientWidth);
      assert.ok(width >= 340, `the layout is ${width} px wide`);
      assert.ok(box.x <= 1 && box.width >= width - 1, `the chat fills a phone screen (${box.width} of ${width} px)`);
      await shot(page, 'widget-360px');
    }
    await ctx.close();
  }
});

test('the accessibility statement and the sign-in pages have no axe violations', async () => {
  const ctx = await context(browser);
  const page = await ctx.newPage();
  await page.goto(`${open.url}/tillganglighet`);
  await page.getByRole('heading', { level: 1, name: 'Tillgänglighetsredogörelse för chatten' }).waitFor();
  await axe(page, 'the accessibility statement');
  for (const path of ['/console', '/admin']) {
    await page.goto(`${open.url}${path}`);
    await page.locator('#login-form').waitFor();
    await axe(page, `${path}, sign-in`);
  }
  await page.locator('#login-user').fill('chef');
  await page.locator('#login-pass').fill('fel lösenord');
  await page.getByRole('button', { name: 'Logga in' }).click();
  await page.getByText('Fel användarnamn eller lösenord.').waitFor();
  await axe(page, '/admin, failed sign-in');
  await ctx.close();
});

test('reduced motion is honoured', async () => {
  // Firefox's driver cannot emulate the media feature; a browser with the
  // preference set to "reduce" stands in for it.
  const b = FIREFOX ? await launch({ firefoxUserPrefs: { 'ui.prefersReducedMotion': 1 } }) : browser;
  const ctx = await context(b, { reducedMotion: 'reduce' });
  const page = await ctx.newPage();
  await page.goto(`${open.url}/console`);
  assert.ok(await page.evaluate(() => matchMedia('(prefers-reduced-motion: reduce)').matches));
  const duration = await page.evaluate(() => {
    const el = document.createElement('button');
    el.className = 'tab new';
    document.body.append(el);
    return getComputedStyle(el).animationDuration;
  });
  assert.ok(parseFloat(duration) < 0.01, `animations are switched off (got ${duration})`);
  await ctx.close();
  if (b !== browser) await b.close();
});
