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
