// Personnummer in the advisor console: the detector module (a port of
// src/domain/personnummer.rs), the marker on received messages and the warning
// while the advisor types.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { startServer, launch, context, axe, shot, login, wsProxy, repo, ALWAYS_OPEN } from './helpers.mjs';

const PW = 'ett långt lösenord';
const WARNING = 'Texten innehåller ett personnummer – ärendet markeras för sekretessprövning';
let browser;
let server;

before(async () => {
  [browser, server] = await Promise.all([launch(), startServer({
    config: ALWAYS_OPEN,
    users: [{ username: 'anna', role: 'advisor', display_name: 'Anna', password: PW }],
  })]);
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

test('personnummer.js finds the same numbers as the server', async () => {
  const { findPersonnummer: find, luhnOk } = await import(pathToFileURL(path.join(repo, 'web', 'assets', 'personnummer.js')).href);
  const YEAR = 2026;
  const withCheck = (nine) => { for (let c = 0; c < 10; c++) if (luhnOk(`${nine}${c}`)) return `${nine}${c}`; return null; };
  assert.ok(luhnOk('8112189876'));
  assert.ok(!luhnOk('8112189875'));
  for (const [text, canonical] of [
    ['Mitt personnummer är 811218-9876.', '198112189876'],
    ['811218+9876 (över hundra)', '188112189876'],
    ['8112189876', '198112189876'],
    ['19811218-9876', '198112189876'],
    ['198112189876', '198112189876'],
    ['(8112189876)', '198112189876'],
  ]) {
    const found = find(text, YEAR);
    assert.equal(found.length, 1, text);
    assert.equal(found[0].canonical, canonical, text);
    assert.equal(found[0].kind, 'personnummer', text);
  }
  const samordning = withCheck('811278123');
  const s = find(`samordningsnummer ${samordning.slice(0, 6)}-${samordning.slice(6)}`, YEAR);
  assert.equal(s[0].kind, 'samordningsnummer');
  assert.equal(s[0].canonical, `19${samordning}`);
  const old = withCheck('250101123');
  assert.equal(find(`${old.slice(0, 6)}+${old.slice(6)}`, YEAR)[0].canonical, `1925${old.slice(2)}`);
  assert.equal(find(`${old.slice(0, 6)}-${old.slice(6)}`, YEAR)[0].canonical, `2025${old.slice(2)}`);
  assert.equal(find(`20${withCheck('000229123')}`, YEAR).length, 1, 'leap day 2000');
  assert.equal(find(`20${withCheck('010229123')}`, YEAR).length, 0, 'no leap day 2001');
  assert.equal(find('070123-4567'.replace('4567', withCheck('070123456').slice(6)), YEAR).length, 1, '07… with a dash is found');
  for (const text of [
    '811218-9875', '811318-9876', '811232-9876', '19811218+9876', '8112-18-9876', '81121-89876', withCheck('811192123'),
    'Ring 042-10 50 00', 'min mobil är 070-123 45 67', '0701234567', '0731234567', '+46 70 123 45 67', '+46701234567',
    'ärende 2026-000123', 'den 2026-11-30 kl 08.00', '2026-11-30T08:00:00', 'kontonummer 1234567890123456', '123',
    '12-8112189876', '98112189876', '81121898761',
  ]) assert.deepEqual(find(text, YEAR), [], text);
  const text = 'Åsa: 811218-9876 – tack! 😀';
  const f = find(text, YEAR);
  assert.equal(text.slice(f[0].start, f[0].end), '811218-9876');
});

test('console: a received personnummer is marked; typing one shows a polite warning, a phone number does not', async () => {
  const advisorCtx = await context(browser);
  // The frames the console receives, read on the way through a proxy.
  const net = await wsProxy(advisorCtx, /\/ws\/advisor$/);
  const flags = () => net.frames.filter((f) => f.type === 'message').map((f) => [f.text, f.personnummer === true]);
  const advisor = await advisorCtx.newPage();
  await advisor.goto(`${server.url}/console`);
  await login(advisor, 'anna', PW);
  // The status can change once the console's socket is welcomed.
  await advisor.waitForFunction(() => document.getElementById('max-chats').textContent !== '–');
  await advisor.getByLabel('Tillgänglig').check();

  const citizen = await (await context(browser)).newPage();
  await citizen.goto(`${server.url}/chat`);
  await citizen.locator('#name-input').fill('Ada');
  await citizen.getByRole('button', { name: 'Starta chatten' }).click();
  await citizen.locator('#message-input').fill('Hej! Ring mig på 070-123 45 67.');
  await citizen.locator('#message-input').press('Enter');
  await citizen.locator('#message-input').fill('Mitt personnummer är 811218-9876.');
  await citizen.locator('#message-input').press('Enter');

  const panel = advisor.locator('.chat-panel:not([hidden])');
  const flagged = panel.locator('.msg', { hasText: 'Mitt personnummer är 811218-9876.' });
  await flagged.waitFor();
  await flagged.getByText('Innehåller personnummer').waitFor();
  assert.ok(await flagged.locator('.pn-flag').isVisible());
  assert.equal(await flagged.locator('.pn-icon').getAttribute('aria-hidden'), 'true');
  // The server flags the frame itself (docs/protocol.md).
  assert.deepEqual(flags(), [['Hej! Ring mig på 070-123 45 67.', false], ['Mitt personnummer är 811218-9876.', true]]);
  const plain = panel.locator('.msg', { hasText: 'Ring mig på 070-123 45 67' });
  assert.equal(await plain.locator('.pn-flag').count(), 0, 'a phone number is not a personnummer');

  const input = panel.locator('.message-input');
  const warning = panel.locator('.pn-warning');
  assert.equal(await warning.getAttribute('role'), 'status');
  assert.equal(await warning.textContent(), '');
  await input.pressSequentially('Ditt nummer 811218-9876', { delay: 5 });
  await warning.getByText(WARNING).waitFor();
  assert.ok(await warning.isVisible());
  assert.match(await input.getAttribute('aria-describedby'), /pn-warning-/);
  await axe(advisor, 'the console with a personnummer marker and warning');
  await shot(advisor, 'console-personnummer');

  await input.fill('');
  await input.pressSequentially('Ring 070-123 45 67', { delay: 5 });
  assert.equal(await warning.textContent(), '');
  await input.fill('811218-9875');
  assert.equal(await warning.textContent(), '', 'a wrong check digit is no personnummer');
  await input.fill('811218-9876');
  await warning.getByText(WARNING).waitFor();
  await input.press('Enter');
  await panel.locator('.msg.mine', { hasText: '811218-9876' }).getByText('Innehåller personnummer').waitFor();
  assert.equal(await warning.textContent(), '', 'the warning goes with the sent draft');

  // The history sent on a new connection keeps the markers.
  await advisor.reload();
  await panel.locator('.msg', { hasText: 'Mitt personnummer är 811218-9876.' }).getByText('Innehåller personnummer').waitFor();
  assert.equal(await panel.locator('.msg', { hasText: 'Ring mig på 070-123 45 67' }).locator('.pn-flag').count(), 0);
  await citizen.context().close();
  await advisor.context().close();
});
