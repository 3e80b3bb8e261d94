// The admin dashboard (live figures, user management) and the security headers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, context, axe, shot, login, ALWAYS_OPEN, WIDGET_ORIGIN } from './helpers.mjs';

let browser;
let server;
const PW = 'ett långt lösenord';

before(async () => {
  [browser, server] = await Promise.all([launch(), startServer({
    config: ALWAYS_OPEN,
    users: [
      { username: 'chef', role: 'admin', display_name: 'Chefen', password: PW },
      { username: 'anna', role: 'advisor', display_name: 'Anna', password: PW },
    ],
  })]);
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

async function canLogin(username, password) {
  const r = await fetch(`${server.url}/api/v1/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password }) });
  return r.status === 200;
}

test('admin: live figures, add an advisor, reset a password, remove', async () => {
  const advisor = await (await context(browser)).newPage();
  await advisor.goto(`${server.url}/console`);
  await login(advisor, 'anna', PW);
  // The status can change once the console's socket is welcomed.
  await advisor.waitForFunction(() => document.getElementById('max-chats').textContent !== '–');
  await advisor.getByLabel('Tillgänglig').check();

  const page = await (await context(browser)).newPage();
  await page.goto(`${server.url}/admin`);
  await login(page, 'chef', PW);
  await page.getByRole('heading', { name: 'Översikt' }).waitFor();
  await page.waitForFunction(() => document.getElementById('f-available').textContent === '1');
  await page.getByRole('cell', { name: 'Anna (anna)' }).waitFor();
  assert.equal(await page.locator('#f-waiting').textContent(), '0');
  await page.locator('#chart-hour svg').waitFor();
  await page.locator('#chart-wait svg').waitFor();
  await axe(page, 'the admin page');

  await page.getByLabel('Användarnamn', { exact: true }).last().fill('bertil');
  await page.getByLabel('Namn som invånare ser').fill('Bertil');
  await page.getByLabel(/^Lösenord/).last().fill('bertils första lösenord');
  await page.getByRole('button', { name: 'Lägg till' }).click();
  await page.locator('#users-message', { hasText: 'bertil är tillagd som kommunvägledare.' }).waitFor();
  assert.ok(await canLogin('bertil', 'bertils första lösenord'));

  await page.getByRole('button', { name: 'Nytt lösenord för bertil' }).click();
  await page.locator('#pw-bertil').fill('bertils andra lösenord');
  await page.getByRole('button', { name: 'Spara lösenord' }).click();
  await page.locator('#users-message', { hasText: 'Lösenordet för bertil är bytt' }).waitFor();
  assert.ok(!(await canLogin('bertil', 'bertils första lösenord')));
  assert.ok(await canLogin('bertil', 'bertils andra lösenord'));
  await axe(page, 'the admin page after changes');

  await page.getByRole('button', { name: 'Ta bort bertil' }).click();
  await page.getByRole('button', { name: 'Ja, ta bort bertil' }).click();
  await page.locator('#users-message', { hasText: 'bertil är borttagen.' }).waitFor();
  assert.equal(await page.locator('tr[data-username=bertil]').count(), 0);
  assert.ok(!(await canLogin('bertil', 'bertils andra lösenord')));
  await shot(page, 'admin');
  await advisor.context().close();
  await page.context().close();
});

test('console and admin send a CSP without inline scripts and cannot be framed; the chat only by the widget origins', async () => {
  for (const path of ['/console', '/admin', '/chat', '/']) {
    const r = await fetch(`${server.url}${path}`);
    const csp = r.headers.get('content-security-policy') || '';
    assert.match(csp, /script-src 'self'(;|$)/, `${path}: ${csp}`);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, path);
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(r.headers.get('referrer-policy'), 'no-referrer');
    if (path === '/console' || path === '/admin') {
      assert.match(csp, /frame-ancestors 'none'/);
      assert.equal(r.headers.get('x-frame-options'), 'DENY');
    }
    if (path === '/chat') assert.match(csp, new RegExp(`frame-ancestors 'self' ${WIDGET_ORIGIN}`));
  }
  const w = await fetch(`${server.url}/widget.js`);
  assert.match(w.headers.get('content-type'), /javascript/);
  const size = (await w.arrayBuffer()).byteLength;
  assert.ok(size < 6 * 1024, `widget.js is ${size} bytes`);
  console.log(`widget.js is ${size} bytes`);

  // The pages work under their own policy (no bypass here): nothing is blocked.
  const ctx = await browser.newContext();
  await ctx.addInitScript(() => {
    window.__violations = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  const page = await ctx.newPage();
  for (const path of ['/console', '/admin', '/chat', '/', '/tillganglighet']) {
    await page.goto(`${server.url}${path}`);
    await page.waitForLoadState('networkidle');
    if (path === '/console' || path === '/admin') await page.locator('#login-form').waitFor();
    if (path === '/chat') await page.getByText('Innan du börjar').waitFor();
    assert.deepEqual(await page.evaluate(() => window.__violations), [], path);
  }
  await ctx.close();
});

/** One chat through the real pages, ended by the advisor; returns the errand number. */
async function errandThroughTheUi(advisor, { name, topic, messages, category, summary }) {
  const citizen = await (await context(browser)).newPage();
  await citizen.goto(`${server.url}/chat`);
  await citizen.locator('#name-input').fill(name);
  if (topic) await citizen.locator('#topic-input').fill(topic);
  await citizen.getByRole('button', { name: 'Starta chatten' }).click();
  for (const text of messages) {
    await citizen.locator('#message-input').fill(text);
    await citizen.locator('#message-input').press('Enter');
  }
  const panel = advisor.locator('.chat-panel:not([hidden])');
  await advisor.getByRole('tab', { name: new RegExp(name) }).click();
  for (const text of messages) await panel.locator('.msg .text', { hasText: text }).waitFor();
  await panel.getByLabel('Kategori').selectOption(category);
  await panel.getByLabel(/Sammanfattning/).fill(summary);
  await panel.getByRole('button', { name: 'Avsluta ärendet' }).click();
  const ended = panel.locator('.ended-text');
  await ended.getByText(/Ärendenummer \d{4}-\d{6}/).waitFor();
  const number = /(\d{4}-\d{6})/.exec(await ended.textContent())[1];
  await panel.getByRole('button', { name: 'Stäng fliken' }).click();
  await citizen.context().close();
  return number;
}

test('admin: errands — search, secrecy marker, an errand with its transcript, release copy, export', async () => {
  const advisor = await (await context(browser)).newPage();
  await advisor.goto(`${server.url}/console`);
  await login(advisor, 'anna', PW);
  // The status can change once the console's socket is welcomed.
  await advisor.waitForFunction(() => document.getElementById('max-chats').textContent !== '–');
  await advisor.getByLabel('Tillgänglig').check();
  const PN = 'Mitt personnummer är 811218-9876, mejla ada@example.se eller ring 070-123 45 67.';
  const flagged = await errandThroughTheUi(advisor, {
    name: 'Ada', topic: 'Bygglov', messages: ['Hej, jag undrar över bygglov.', PN],
    category: 'Bygga och bo', summary: 'Bygglov för altan.',
  });
  const plain = await errandThroughTheUi(advisor, {
    name: 'Bo', messages: ['När töms soporna på Storgatan?'], category: 'Vatten och avfall', summary: 'Sophämtning.',
  });
  await advisor.context().close();

  const page = await (await context(browser)).newPage();
  await page.goto(`${server.url}/admin`);
  await login(page, 'chef', PW);
  await page.getByRole('heading', { name: 'Ärenden', exact: true }).waitFor();
  const count = page.locator('#errands-count');
  assert.equal(await count.getAttribute('role'), 'status');
  assert.equal(await count.getAttribute('aria-live'), 'polite');
  await count.getByText('2 ärenden hittades.').waitFor();
  assert.ok(await page.getByRole('table', { name: /Sökresultat/ }).isVisible());
  const flaggedRow = page.locator(`#errand-rows tr[data-number="${flagged}"]`);
  await flaggedRow.getByText('Behöver sekretessprövas').waitFor();
  assert.match(await flaggedRow.textContent(), /Bygga och bo.*Anna.*Bygglov för altan\./);
  assert.equal(await page.locator(`#errand-rows tr[data-number="${plain}"] .pn-flag`).count(), 0);
  assert.equal(await page.locator('#e-page').textContent(), 'Sida 1 av 1');
  assert.ok(await page.locator('#e-next').isDisabled());
  await axe(page, 'the admin page with errands');

  // Only those that need a secrecy review.
  await page.getByLabel('Endast ärenden som behöver sekretessprövning').check();
  await page.getByRole('button', { name: 'Sök', exact: true }).click();
  await count.getByText('1 ärende hittades.').waitFor();
  assert.deepEqual(await page.locator('#errand-rows tr').evaluateAll((rows) => rows.map((r) => r.dataset.number)), [flagged]);
  // Free text, advisor and category.
  await page.getByLabel('Endast ärenden som behöver sekretessprövning').uncheck();
  await page.getByLabel(/^Fritext/).fill('soporna');
  await page.getByLabel(/^Fritext/).press('Enter');
  await page.locator(`#errand-rows tr[data-number="${plain}"]`).waitFor();
  assert.equal(await page.locator('#errand-rows tr').count(), 1);
  await page.getByLabel(/^Fritext/).fill('');
  await page.getByLabel(/^Kommunvägledare/).fill('Anna');
  await page.getByLabel('Kategori', { exact: true }).fill('Bygga och bo');
  await page.getByRole('button', { name: 'Sök', exact: true }).click();
  await page.locator(`#errand-rows tr[data-number="${plain}"]`).waitFor({ state: 'detached' });
  await count.getByText('1 ärende hittades.').waitFor();
  await page.getByLabel(/^Kommunvägledare/).fill('Nobody');
  await page.getByRole('button', { name: 'Sök', exact: true }).click();
  await count.getByText('0 ärenden hittades.').waitFor();
  await page.getByText('Inga ärenden matchar sökningen.').waitFor();
  await page.getByRole('button', { name: 'Rensa' }).click();
  await count.getByText('2 ärenden hittades.').waitFor();

  // The errand, opened with the keyboard.
  const open = page.getByRole('button', { name: `Visa ärende ${flagged}` });
  await open.focus();
  await page.keyboard.press('Enter');
  const detail = page.getByRole('region', { name: `Ärende ${flagged}` });
  await detail.waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.id), 'errand-detail-heading');
  await detail.getByText(/behöver sekretessprövas innan det lämnas ut/).waitFor();
  const line = detail.locator('#errand-transcript li', { hasText: PN });
  await line.getByText('Innehåller personnummer').waitFor();
  assert.equal(await line.locator('.text').textContent(), PN);
  assert.equal(await detail.locator('#errand-transcript li', { hasText: 'Hej, jag undrar över bygglov.' }).locator('.pn-flag').count(), 0);

  // The release copy: personnummer always masked, e-mail and phone on request.
  const release = async () => {
    const href = await page.locator('#release-text').getAttribute('href');
    return { href, text: await page.evaluate(async (h) => (await fetch(h)).text(), href) };
  };
  let r = await release();
  assert.equal(r.href, `/api/v1/errands/${flagged}/release`);
  assert.ok(r.text.includes('[personnummer maskerat]'), r.text);
  assert.ok(!r.text.includes('811218-9876'), r.text);
  assert.ok(r.text.includes('ada@example.se'), r.text);
  await page.getByLabel('E-postadresser').check();
  await page.getByLabel('Telefonnummer').check();
  r = await release();
  assert.equal(r.href, `/api/v1/errands/${flagged}/release?mask_email=true&mask_phone=true`);
  for (const secret of ['811218-9876', 'ada@example.se', '070-123 45 67']) assert.ok(!r.text.includes(secret), `${secret} in ${r.text}`);
  const json = await page.evaluate(async (h) => (await fetch(h)).json(), await page.locator('#release-json').getAttribute('href'));
  assert.equal(json.number, flagged);
  assert.ok(json.transcript.every((l) => !l.text.includes('811218-9876')));
  await axe(page, 'the admin page with an errand open');
  await shot(page, 'admin-errand');
  await page.getByRole('button', { name: 'Stäng ärendet' }).click();
  assert.ok(await page.locator('#errand-detail').isHidden());
  assert.equal(await page.evaluate(() => document.activeElement.getAttribute('aria-label')), `Visa ärende ${flagged}`);

  // Export: a plain download link built from the form.
  const today = await page.locator('#x-from').inputValue();
  assert.match(today, /^\d{4}-\d{2}-\d{2}$/);
  const link = page.getByRole('link', { name: 'Ladda ner export' });
  assert.equal(await link.getAttribute('href'), `/api/v1/errands/export?from=${today}&to=${today}&format=csv`);
  const csv = await page.evaluate(async (h) => (await fetch(h)).text(), await link.getAttribute('href'));
  assert.ok(csv.startsWith('errand_number,date,queued_at,'), csv.slice(0, 80));
  assert.ok(csv.includes(flagged) && csv.includes(plain));
  await page.getByLabel('Format').selectOption('json');
  assert.equal(await link.getAttribute('href'), `/api/v1/errands/export?from=${today}&to=${today}&format=json`);
  const download = page.waitForEvent('download');
  await link.click();
  assert.match((await download).suggestedFilename(), /\.jsonl$/);
  await page.context().close();
});
