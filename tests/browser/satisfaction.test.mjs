// The satisfaction survey: a chat ended in the queue asks nothing; a citizen
// whose chat had an advisor rates it in the ended view, changes their mind with
// the keyboard and sends again; a reload or a dropped connection brings the
// survey back while the server still knows the chat, and drops the form once it
// does not; the admin dashboard shows the ratings. The steps run in order.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, context, axe, shot, login, wsProxy, focusVisible, waitUntil, ALWAYS_OPEN } from './helpers.mjs';

const PW = 'ett långt lösenord';
const QUESTION = 'Hur nöjd är du med hjälpen du fick?';
const LABELS = ['1 – Mycket missnöjd', '2 – Missnöjd', '3 – Varken nöjd eller missnöjd', '4 – Nöjd', '5 – Mycket nöjd'];
let browser;
let server;
let citizen;
let advisor; // Anna's console, kept open from chat to chat
let net; // the citizen's socket, seen through a proxy

const framesOf = (type) => net.frames.filter((f) => f.type === type);
const announced = (page, re) => page.waitForFunction((src) => new RegExp(src).test(document.getElementById('announcer').textContent), re.source);

before(async () => {
  [browser, server] = await Promise.all([launch(), startServer({
    config: ALWAYS_OPEN,
    users: [
      { username: 'anna', role: 'advisor', display_name: 'Anna', password: PW },
      { username: 'chef', role: 'admin', display_name: 'Chefen', password: PW },
    ],
  })]);
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

describe('the satisfaction survey', () => {
  it('a chat ended while still queued (no advisor) shows no survey', async () => {
    const ctx = await context(browser);
    const queued = await wsProxy(ctx, /\/ws\/citizen$/);
    const page = await ctx.newPage();
    await page.goto(`${server.url}/chat`);
    await page.getByRole('button', { name: 'Starta chatten' }).click();
    await page.locator('#queue-position', { hasText: 'Du är nummer 1 i kön.' }).waitFor();
    await page.getByRole('button', { name: 'Lämna kön' }).click();
    await page.getByRole('heading', { name: 'Chatten är avslutad' }).waitFor();
    await page.getByText('Du har lämnat kön.').first().waitFor();
    const ended = queued.frames.find((f) => f.type === 'ended');
    assert.equal(ended.errand_number, null);
    assert.equal(ended.can_rate, false, `ended: ${JSON.stringify(ended)}`);
    assert.ok(await page.locator('#survey').isHidden());
    assert.equal(await page.getByRole('group', { name: QUESTION }).count(), 0);
    assert.equal(await page.getByRole('radio').count(), 0);
    await ctx.close();
  });

  it('the advisor ends the chat; the citizen rates it 4, then changes it to 5', async () => {
    const citizenCtx = await context(browser);
    net = await wsProxy(citizenCtx, /\/ws\/citizen$/);
    citizen = await citizenCtx.newPage();
    await citizen.goto(`${server.url}/chat`);
    await citizen.locator('#name-input').fill('Ada');
    await citizen.getByRole('button', { name: 'Starta chatten' }).click();
    await citizen.locator('#queue-position', { hasText: 'Du är nummer 1 i kön.' }).waitFor();
    await citizen.locator('#message-input').fill('Hej, när töms soporna på Storgatan?');
    await citizen.locator('#message-input').press('Enter');
    await citizen.locator('#messages .msg.mine:not([data-pending])').waitFor();

    advisor = await (await context(browser)).newPage();
    await advisor.goto(`${server.url}/console`);
    await login(advisor, 'anna', PW);
    // The status can change once the console's socket is welcomed.
    await advisor.waitForFunction(() => document.getElementById('max-chats').textContent !== '–');
    await advisor.getByLabel('Tillgänglig').check();
    await advisor.getByRole('tab', { name: /Ada/ }).waitFor();
    const panel = advisor.locator('.chat-panel:not([hidden])');
    await panel.getByText('Hej, när töms soporna på Storgatan?').waitFor();
    await citizen.getByText('Du chattar med Anna, kommunvägledare.').first().waitFor();
    await panel.locator('.message-input').fill('Hej Ada! Soporna töms på tisdagar.');
    await panel.locator('.message-input').press('Enter');
    await citizen.locator('#messages .msg.theirs .text', { hasText: 'tisdagar' }).waitFor();
    await panel.getByLabel('Kategori').selectOption('Vatten och avfall');
    await panel.getByLabel(/Sammanfattning/).fill('Sophämtning.');
    await panel.getByRole('button', { name: 'Avsluta ärendet' }).click();
    await citizen.getByRole('heading', { name: 'Chatten är avslutad' }).waitFor();
    await panel.getByRole('button', { name: 'Stäng fliken' }).click();

    const ended = framesOf('ended');
    assert.equal(ended.length, 1);
    assert.match(ended[0].errand_number, /^\d{4}-\d{6}$/);
    assert.equal(ended[0].can_rate, true, `ended: ${JSON.stringify(ended[0])}`);

    // The survey: a group named by its question, five labelled radios, nothing chosen.
    const survey = citizen.getByRole('group', { name: QUESTION });
    await survey.waitFor();
    assert.equal(await survey.getByRole('radio').count(), 5);
    for (const label of LABELS) {
      const radio = survey.getByRole('radio', { name: label, exact: true });
      assert.ok(await radio.isVisible(), label);
      assert.equal(await radio.isChecked(), false, label);
    }
    // It is optional: the other actions of the ended view are all there.
    for (const name of ['Skriv ut', 'Spara som textfil', 'Starta en ny chatt']) {
      assert.ok(await citizen.getByRole('button', { name }).isVisible(), name);
    }
    await axe(citizen, 'the chat, ended, with the survey');

    // Sending with nothing chosen says so in words; nothing goes to the server.
    const send = citizen.getByRole('button', { name: 'Skicka betyg' });
    await send.click();
    const note = citizen.locator('#survey-note');
    await note.getByText('Välj ett av alternativen 1–5 innan du skickar.').waitFor();
    await announced(citizen, /Välj ett av alternativen/);
    assert.equal(await survey.getAttribute('aria-describedby'), 'survey-note');
    await axe(citizen, 'the chat, ended, survey sent with nothing chosen');
    assert.equal(framesOf('rated').length + framesOf('error').length, 0);

    // 4, sent with the mouse.
    await survey.getByRole('radio', { name: LABELS[3] }).check();
    assert.ok(await note.isHidden(), 'choosing clears the "choose one" message');
    await send.click();
    await waitUntil(() => framesOf('rated').length === 1, 'the server answers rated');
    assert.deepEqual(framesOf('rated').map((f) => f.score), [4]);
    await note.getByText('Tack för ditt svar! Ditt betyg: 4 – Nöjd. Du kan ändra ditt betyg och skicka igen.').waitFor();
    await announced(citizen, /Tack för ditt svar! Ditt betyg: 4 – Nöjd\./);
    assert.match(await note.getAttribute('class'), /\bok\b/);
    // The choice and the form stay, so the citizen can change their mind.
    assert.ok(await survey.getByRole('radio', { name: LABELS[3] }).isChecked());
    assert.ok(await send.isVisible());

    // 5, with the keyboard: Shift+Tab back to the chosen option, arrow to the
    // next one, Tab to the button, Enter. (The console's window, opened later,
    // has the focus in Firefox.)
    await citizen.bringToFront();
    await send.focus();
    await citizen.keyboard.press('Shift+Tab');
    assert.equal(await citizen.evaluate(() => document.activeElement.id), 'score-4');
    await citizen.keyboard.press('ArrowDown');
    assert.ok(await survey.getByRole('radio', { name: LABELS[4] }).isChecked());
    let focus = await focusVisible(citizen);
    assert.ok(focus.ok, `a visible focus on the radio: ${focus.what}`);
    await citizen.keyboard.press('Tab');
    assert.equal(await citizen.evaluate(() => document.activeElement.id), 'rate-button');
    focus = await focusVisible(citizen);
    assert.ok(focus.ok, `a visible focus on the button: ${focus.what}`);
    await citizen.keyboard.press('Enter');
    await waitUntil(() => framesOf('rated').length === 2, 'the server answers the second rating');
    assert.deepEqual(framesOf('rated').map((f) => f.score), [4, 5]);
    await note.getByText('Tack för ditt svar! Ditt betyg: 5 – Mycket nöjd. Du kan ändra ditt betyg och skicka igen.').waitFor();
    await announced(citizen, /Ditt betyg: 5 – Mycket nöjd\./);
    assert.equal(framesOf('error').length, 0, JSON.stringify(framesOf('error')));
    await axe(citizen, 'the chat, ended, rated');
    await shot(citizen, 'chat-satisfaction');

    // In English too.
    await citizen.getByRole('button', { name: 'Change language to English' }).click();
    await citizen.getByRole('group', { name: 'How satisfied are you with the help you got?' }).waitFor();
    assert.ok(await citizen.getByRole('radio', { name: '5 – Very satisfied' }).isChecked());
    assert.ok(await citizen.getByRole('button', { name: 'Send rating' }).isVisible());
    assert.equal(await note.textContent(), 'Thank you for your answer! Your rating: 5 – Very satisfied. You can change your rating and send it again.');
    await citizen.getByRole('button', { name: 'Byt språk till svenska' }).click();
    await survey.waitFor();
  });

  it('after a reload the survey comes back with the rating given, and can be sent again', async () => {
    const endedBefore = framesOf('ended').length;
    await citizen.reload();
    await citizen.getByRole('heading', { name: 'Chatten är avslutad' }).waitFor();
    // The reloaded page asks again with the ended chat's token; the answer lets this connection rate.
    await waitUntil(() => framesOf('ended').length === endedBefore + 1, 'the resume for the survey is answered');
    assert.equal(framesOf('ended').at(-1).can_rate, true);
    const resume = net.sent.filter((f) => f.type === 'resume').at(-1);
    assert.equal(typeof resume?.token, 'string', 'the page resumes with the ended chat\'s token');
    const survey = citizen.getByRole('group', { name: QUESTION });
    await survey.waitFor();
    assert.ok(await survey.getByRole('radio', { name: LABELS[4] }).isChecked(), 'the choice made before the reload');
    const note = citizen.locator('#survey-note');
    await note.getByText('Tack för ditt svar! Ditt betyg: 5 – Mycket nöjd. Du kan ändra ditt betyg och skicka igen.').waitFor();
    await axe(citizen, 'the chat, ended and rated, after a reload');
    // Sent again from the new connection (the same score: the dashboard below counts one rating of 5).
    await citizen.getByRole('button', { name: 'Skicka betyg' }).click();
    await waitUntil(() => framesOf('rated').length === 3, 'the server answers the rating from the reloaded page');
    assert.deepEqual(framesOf('rated').map((f) => f.score), [4, 5, 5]);
    assert.equal(framesOf('error').length, 0, JSON.stringify(framesOf('error')));
  });

  it('once the server no longer knows the chat, a reload keeps the thanks and drops the form', async () => {
    // As after the rating window: the server answers the page's resume with not_found.
    await citizen.evaluate(() => {
      const st = JSON.parse(sessionStorage.getItem('kommunchat-chat'));
      st.ratingToken = '0'.repeat(32);
      sessionStorage.setItem('kommunchat-chat', JSON.stringify(st));
    });
    await citizen.reload();
    await waitUntil(() => framesOf('error').length === 1, 'the resume is refused');
    assert.equal(framesOf('error')[0].code, 'not_found');
    await citizen.getByRole('heading', { name: 'Chatten är avslutad' }).waitFor();
    const note = citizen.locator('#survey-note');
    await note.getByText('Tack för ditt svar! Ditt betyg: 5 – Mycket nöjd.').waitFor();
    assert.doesNotMatch(await note.textContent(), /ändra/);
    assert.ok(await citizen.locator('#survey-form').isHidden());
    assert.equal(await citizen.getByRole('radio').count(), 0);
    assert.ok(await citizen.getByRole('button', { name: 'Starta en ny chatt' }).isVisible());
    await axe(citizen, 'the chat, ended and rated, no longer rateable');
    // The page has given up: a further reload asks nothing.
    const resumes = net.sent.filter((f) => f.type === 'resume').length;
    const welcomes = framesOf('welcome').length;
    await citizen.reload();
    await waitUntil(() => framesOf('welcome').length === welcomes + 1, 'the reloaded page is welcomed');
    await citizen.waitForTimeout(200);
    assert.equal(net.sent.filter((f) => f.type === 'resume').length, resumes);
    assert.ok(await citizen.locator('#survey-form').isHidden());
    await citizen.context().close();
  });

  it('the admin dashboard shows one rating, mean 5, and the distribution', async () => {
    const page = await (await context(browser)).newPage();
    await page.goto(`${server.url}/admin`);
    await login(page, 'chef', PW);
    await page.getByRole('heading', { name: 'Nöjdhet' }).waitFor();
    const value = (label) => page.locator('#satisfaction-figures .figure', { hasText: label }).locator('.value').textContent();
    assert.equal(await value('Antal betyg'), '1');
    assert.equal(await value('Medelbetyg'), '5,0');
    assert.equal(await value('Svarsfrekvens'), '100 %');

    const table = page.getByRole('table', { name: 'Fördelning av betygen' });
    assert.equal(await table.getByRole('rowheader').count(), 5);
    for (const [i, label] of LABELS.entries()) {
      const row = table.getByRole('row', { name: new RegExp(`^${label}`) });
      const cells = await row.getByRole('cell').allTextContents();
      assert.deepEqual(cells.map((c) => c.trim()), i === 4 ? ['1', '100 %'] : ['0', '0 %'], label);
    }

    const advisors = page.getByRole('table', { name: 'Statistik per kommunvägledare' });
    const anna = advisors.getByRole('row', { name: /^Anna/ });
    const cells = await anna.getByRole('cell').allTextContents();
    assert.equal(cells[0], '1', 'Anna served one chat');
    assert.equal(cells.at(-1), '5,0 (1 betyg)');
    await axe(page, 'the admin dashboard with satisfaction figures');
    await shot(page, 'admin-satisfaction');
    await page.context().close();
  });

  it('a chat that ended while the connection was down is rated after the resume that learns of it', async () => {
    const ctx = await context(browser);
    net = await wsProxy(ctx, /\/ws\/citizen$/);
    citizen = await ctx.newPage();
    await citizen.goto(`${server.url}/chat`);
    await citizen.locator('#name-input').fill('Bo');
    await citizen.getByRole('button', { name: 'Starta chatten' }).click();
    await advisor.getByRole('tab', { name: /Bo/ }).waitFor();
    await citizen.getByText('Du chattar med Anna, kommunvägledare.').first().waitFor();
    // The line goes down; the advisor ends the chat meanwhile.
    net.refuse = true;
    net.cut();
    await citizen.locator('#conn-banner').waitFor({ state: 'visible' });
    const panel = advisor.locator('.chat-panel:not([hidden])');
    await panel.getByLabel('Kategori').selectOption('Vatten och avfall');
    await panel.getByLabel(/Sammanfattning/).fill('Avbruten fråga.');
    await panel.getByRole('button', { name: 'Avsluta ärendet' }).click();
    await panel.locator('.ended-text').getByText(/Ärendenummer \d{4}-\d{6}/).waitFor();
    // Back online: the resume is answered with `ended`, and that connection may rate.
    net.refuse = false;
    await citizen.getByRole('button', { name: 'Försök nu' }).click({ timeout: 3000 }).catch(() => {});
    await citizen.getByRole('heading', { name: 'Chatten är avslutad' }).waitFor();
    const ended = framesOf('ended');
    assert.equal(ended.length, 1);
    assert.equal(ended[0].can_rate, true, `ended after resume: ${JSON.stringify(ended[0])}`);
    assert.ok(await citizen.locator('#conn-banner').isHidden(), 'the connection banner goes once the resume is answered');
    const survey = citizen.getByRole('group', { name: QUESTION });
    await survey.getByRole('radio', { name: LABELS[1] }).check();
    await citizen.getByRole('button', { name: 'Skicka betyg' }).click();
    await waitUntil(() => framesOf('rated').length === 1, 'the server answers rated after the resume');
    assert.deepEqual(framesOf('rated').map((f) => f.score), [2]);
    await citizen.locator('#survey-note').getByText(/Tack för ditt svar! Ditt betyg: 2 – Missnöjd\./).waitFor();
    assert.equal(framesOf('error').length, 0, JSON.stringify(framesOf('error')));
    // That connection drops with the focus on the form: the form stays, and the
    // page's next connection may rate again (the chat is still in its rating window).
    await citizen.bringToFront();
    await citizen.locator('#rate-button').focus();
    const endedBefore = framesOf('ended').length;
    net.refuse = true;
    net.cut();
    await citizen.waitForTimeout(100);
    assert.ok(await citizen.locator('#survey-form').isVisible(), 'the form stays while the connection is down');
    // Sending now says why it cannot, in words.
    await survey.getByRole('radio', { name: LABELS[2] }).check();
    await citizen.getByRole('button', { name: 'Skicka betyg' }).click();
    await citizen.locator('#survey-note').getByText('Betyget kunde inte skickas eftersom anslutningen till chatten är bruten. Försök igen om en stund.').waitFor();
    await axe(citizen, 'the chat, ended, survey sent with the connection down');
    net.refuse = false;
    await waitUntil(() => framesOf('ended').length === endedBefore + 1, 'the reconnected page asks for the survey again', 15000);
    // The error goes with the new connection; the rating given before is thanked for again.
    await citizen.locator('#survey-note', { hasText: 'Tack för ditt svar! Ditt betyg: 2 – Missnöjd.' }).waitFor();
    await citizen.getByRole('button', { name: 'Skicka betyg' }).click();
    await waitUntil(() => framesOf('rated').length === 2, 'the server answers the rating from the new connection');
    assert.deepEqual(framesOf('rated').map((f) => f.score), [2, 3]);
    await citizen.locator('#survey-note').getByText(/Tack för ditt svar! Ditt betyg: 3 – Varken nöjd eller missnöjd\./).waitFor();
    assert.equal(framesOf('error').length, 0, JSON.stringify(framesOf('error')));
    await ctx.close();
  });
});
