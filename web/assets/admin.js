// kommunchat: the admin dashboard. Endpoints: docs/api.md. Every section says
// plainly when the server does not offer its endpoint (404) instead of failing.
import { $, api, announce, duration, session } from './staff.js';

const SVG = 'http://www.w3.org/2000/svg';
let liveSocket = null;
let livePoll = null;
let liveRetry = 0;
let stopped = true;
let me = null;

session({
  roles: ['admin'],
  onUser(user) {
    me = user;
    stopped = false;
    $('#admin-view').hidden = false;
    $('#admin-heading').focus();
    startLive();
    const today = todayIso();
    $('#stats-from').value = today;
    $('#stats-to').value = today;
    loadStats();
    loadUsers();
    $('#x-from').value = today;
    $('#x-to').value = today;
    updateExportLink();
    searchErrands(0);
  },
  onSignOut() {
    stopped = true;
    stopLive();
    $('#admin-view').hidden = true;
  },
});

function todayIso() {
  const p = {};
  for (const x of new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Stockholm', year: 'numeric', month: '2-digit', day: '2-digit' }).formatToParts(new Date())) p[x.type] = x.value;
  return `${p.year}-${p.month}-${p.day}`;
}
function message(id, text, kind = '') {
  const el = $(id);
  el.textContent = text || '';
  el.className = `notice ${kind}`;
  el.hidden = !text;
}
function missing(err) { return err && err.status === 404; }

// ---------------------------------------------------------------- live figures

const STATUS = { available: 'Tillgänglig', away: 'Borta', busy: 'Upptagen', offline: 'Frånkopplad' };

function drawLive(v) {
  $('#f-waiting').textContent = String(v.waiting ?? '–');
  $('#f-longest').textContent = v.waiting ? duration(v.longest_wait_seconds) : '–';
  $('#f-available').textContent = String(v.advisors_available ?? '–');
  $('#f-busy').textContent = String(v.advisors_busy ?? '–');
  $('#f-away').textContent = String(v.advisors_away ?? '–');
  $('#f-active').textContent = String(v.active_chats ?? '–');
  const a = v.admission;
  if (a) {
    $('#admission').textContent = a.open
      ? (a.accepting ? 'Chatten är öppen och tar emot nya chattar.' : 'Chatten är öppen men tar inte emot fler chattar just nu.')
      : `Chatten är stängd (${a.reason}).`;
  }
  const rows = (v.advisors || []).map((adv) => {
    const tr = document.createElement('tr');
    const name = document.createElement('td');
    name.textContent = `${adv.display_name} (${adv.username})`;
    const st = document.createElement('td');
    const pill = document.createElement('span');
    pill.className = `status-pill ${adv.status}`;
    pill.textContent = STATUS[adv.status] || adv.status;
    st.append(pill);
    const n = document.createElement('td');
    n.textContent = String(adv.active_chats);
    const conn = document.createElement('td');
    conn.textContent = adv.connected ? 'Ja' : 'Nej, väntar på återanslutning';
    tr.append(name, st, n, conn);
    return tr;
  });
  if (!rows.length) {
    const tr = document.createElement('tr');
    const td = document.createElement('td');
    td.colSpan = 4;
    td.textContent = 'Ingen är inloggad.';
    tr.append(td);
    rows.push(tr);
  }
  $('#advisor-rows').replaceChildren(...rows);
}

function startLive() {
  stopLive();
  const sock = new WebSocket(`${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws/admin`);
  liveSocket = sock;
  let got = false;
  sock.onmessage = (e) => {
    let f;
    try { f = JSON.parse(e.data); } catch { return; }
    if (f.type === 'live') {
      got = true;
      liveRetry = 0;
      message('#live-message', '');
      drawLive(f);
    }
  };
  sock.onclose = () => {
    if (liveSocket !== sock || stopped) return;
    liveSocket = null;
    // Without the socket (not there yet, or a dropped connection) poll the figures.
    pollLive();
    if (!got) return;
    const delay = Math.min(15000, 1000 * 2 ** liveRetry++);
    setTimeout(() => { if (!stopped && !liveSocket) startLive(); }, delay);
  };
  // The socket sends the figures when they change; fetch them once right away.
  fetchLive();
}
function stopLive() {
  clearInterval(livePoll);
  livePoll = null;
  if (liveSocket) { const s = liveSocket; liveSocket = null; s.close(1000); }
}
function pollLive() {
  if (livePoll) return;
  livePoll = setInterval(() => { if (!stopped) fetchLive(); }, 5000);
}
async function fetchLive() {
  try {
    drawLive(await api('GET', '/api/v1/stats/live'));
    if (!liveSocket) message('#live-message', '');
  } catch (err) {
    if (missing(err)) {
      clearInterval(livePoll);
      message('#live-message', 'Servern har inga livesiffror än (GET /api/v1/stats/live saknas). Siffrorna visas här när funktionen finns.', 'warn');
    } else if (err.status === 401) {
      message('#live-message', 'Din inloggning har upphört. Ladda om sidan och logga in igen.', 'error');
    } else {
      message('#live-message', 'Livesiffrorna kunde inte hämtas just nu. Vi försöker igen.', 'warn');
    }
  }
}

// ---------------------------------------------------------------- statistics

function figure(label, value) {
  const li = document.createElement('li');
  li.className = 'figure';
  const l = document.createElement('span');
  l.className = 'label';
  l.textContent = label;
  const v = document.createElement('span');
  v.className = 'value';
  v.textContent = value;
  li.append(l, v);
  return li;
}
/** A number the Swedish way: decimal comma, `digits` decimals. */
function decimal(x, digits) { return x.toLocaleString('sv-SE', { minimumFractionDigits: digits, maximumFractionDigits: digits }); }
function pct(x) { return x == null ? '–' : `${(Math.round(x * 1000) / 10).toLocaleString('sv-SE', { maximumFractionDigits: 1 })} %`; }
/** A mean score 1–5 with one decimal ("4,5"), or "–" when there is none. */
function score(mean) { return mean == null ? '–' : decimal(mean, 1); }
const SCORE = { 1: 'Mycket missnöjd', 2: 'Missnöjd', 3: 'Varken nöjd eller missnöjd', 4: 'Nöjd', 5: 'Mycket nöjd' };

async function loadStats() {
  const from = $('#stats-from').value || todayIso();
  const to = $('#stats-to').value || from;
  if (to < from) { message('#stats-message', 'Slutdatumet måste vara samma dag eller senare än startdatumet.', 'error'); return; }
  try {
    const s = await api('GET', `/api/v1/stats?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`);
    message('#stats-message', '');
    const w = s.wait_seconds || {};
    $('#stats-figures').replaceChildren(
      figure('Inkomna chattar', String(s.offered ?? '–')),
      figure('Besvarade', String(s.served ?? '–')),
      figure('Lämnade kön', String(s.abandoned ?? '–')),
      figure('Andel som lämnade', pct(s.abandon_rate)),
      figure('Nekade (stängt)', String(s.refused_closed ?? (s.refused && s.refused.closed) ?? '–')),
      figure('Väntetid, median', duration(w.median)),
      figure('Väntetid, 90 %', duration(w.p90)),
      figure('Chattlängd, median', duration(s.handle_seconds && s.handle_seconds.median)),
    );
    const hours = (s.per_hour || []).map((h, i) => ({ label: String(h.hour ?? i).padStart(2, '0'), value: h.offered ?? h.count ?? 0, extra: h }));
    drawChart('#chart-hour', '#table-hour', '#chart-hour-wrap', hours, 'Timme', 'Chattar', 'Chattar per timme');
    let prev = 0;
    const buckets = (s.wait_histogram || []).map((b) => {
      const label = b.le_seconds == null ? `över ${duration(prev)}` : `upp till ${duration(b.le_seconds)}`;
      if (b.le_seconds != null) prev = b.le_seconds;
      return { label, value: b.count };
    });
    drawChart('#chart-wait', '#table-wait', '#chart-wait-wrap', buckets, 'Väntetid', 'Antal chattar', 'Väntetider');
    drawSatisfaction(s.satisfaction);
    drawAdvisorStats(s.per_advisor);
  } catch (err) {
    $('#stats-figures').replaceChildren();
    $('#satisfaction').hidden = true;
    $('#advisor-stats').hidden = true;
    $('#chart-hour-wrap').hidden = true;
    $('#chart-wait-wrap').hidden = true;
    message('#stats-message', missing(err)
      ? 'Servern har ingen statistik än (GET /api/v1/stats saknas). Den visas här när funktionen finns.'
      : `Statistiken kunde inte hämtas: ${err.message}`, missing(err) ? 'warn' : 'error');
  }
}

function cell(tag, text) {
  const c = document.createElement(tag);
  c.textContent = text;
  return c;
}

/** The satisfaction survey: figures and the distribution 1–5 (a server without it sends no `satisfaction`). */
function drawSatisfaction(sat) {
  $('#satisfaction').hidden = !sat;
  if (!sat) return;
  const count = sat.count ?? 0;
  $('#satisfaction-figures').replaceChildren(
    figure('Antal betyg', String(count)),
    figure('Medelbetyg (1–5)', score(count ? sat.mean : null)),
    figure('Svarsfrekvens', pct(sat.response_rate)),
  );
  const by = new Map((sat.distribution || []).map((d) => [d.score, d.count]));
  const rows = [1, 2, 3, 4, 5].map((n) => {
    const tr = document.createElement('tr');
    tr.dataset.score = String(n);
    const th = cell('th', `${n} – ${SCORE[n]}`);
    th.scope = 'row';
    const c = by.get(n) ?? 0;
    const share = document.createElement('td');
    share.className = 'share';
    // The bar only repeats the percentage beside it.
    const bar = document.createElement('span');
    bar.className = 'dist-bar';
    bar.setAttribute('aria-hidden', 'true');
    const fill = document.createElement('span');
    fill.style.width = `${count ? Math.round((c / count) * 100) : 0}%`;
    bar.append(fill);
    share.append(bar, count ? pct(c / count) : '–');
    tr.append(th, cell('td', String(c)), share);
    return tr;
  });
  $('#satisfaction-rows').replaceChildren(...rows);
}

function drawAdvisorStats(list) {
  $('#advisor-stats').hidden = !list;
  if (!list) return;
  const rows = list.map((a) => {
    const tr = document.createElement('tr');
    tr.dataset.advisor = a.display_name;
    const sat = a.satisfaction;
    const satText = sat && sat.count && sat.mean != null ? `${score(sat.mean)} (${sat.count} betyg)` : '–';
    tr.append(
      cell('th', a.display_name),
      cell('td', String(a.served ?? '–')),
      cell('td', duration(a.handle_seconds && a.handle_seconds.median)),
      cell('td', duration(a.first_response_seconds && a.first_response_seconds.median)),
      cell('td', satText),
    );
    tr.firstChild.scope = 'row';
    return tr;
  });
  if (!rows.length) {
    const tr = document.createElement('tr');
    const td = cell('td', 'Ingen kommunvägledare hade chattar under perioden.');
    td.colSpan = 5;
    tr.append(td);
    rows.push(tr);
  }
  $('#advisor-stats-rows').replaceChildren(...rows);
}

function svg(name, attrs) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}
function drawChart(chartSel, tableSel, wrapSel, data, xName, yName, title) {
  $(wrapSel).hidden = data.length === 0;
  if (!data.length) return;
  const W = 480, H = 220, left = 34, bottom = 40, top = 10;
  const max = Math.max(1, ...data.map((d) => d.value));
  const bw = (W - left - 4) / data.length;
  const chart = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img' });
  const total = data.reduce((a, d) => a + d.value, 0);
  chart.setAttribute('aria-label', `${title}: stapeldiagram, totalt ${total}. Samma siffror finns i tabellen nedanför.`);
  chart.append(svg('line', { x1: left, y1: H - bottom, x2: W, y2: H - bottom, class: 'axis' }));
  chart.append(svg('line', { x1: left, y1: top, x2: left, y2: H - bottom, class: 'axis' }));
  for (const tick of [0, max]) {
    const y = H - bottom - (tick / max) * (H - bottom - top);
    const t = svg('text', { x: left - 4, y: y + 4, 'text-anchor': 'end' });
    t.textContent = String(tick);
    chart.append(t);
  }
  const every = Math.ceil(data.length / 12);
  data.forEach((d, i) => {
    const h = (d.value / max) * (H - bottom - top);
    const x = left + 2 + i * bw;
    const rect = svg('rect', { x: x + 1, y: H - bottom - h, width: Math.max(1, bw - 2), height: h, class: 'bar' });
    const tip = svg('title', {});
    tip.textContent = `${d.label}: ${d.value}`;
    rect.append(tip);
    chart.append(rect);
    if (i % every === 0) {
      const t = svg('text', { x: x + bw / 2, y: H - bottom + 14, 'text-anchor': 'middle' });
      t.textContent = d.label.replace('upp till ', '≤').replace('över ', '>');
      chart.append(t);
    }
  });
  $(chartSel).replaceChildren(chart);
  const table = document.createElement('table');
  const head = document.createElement('tr');
  for (const h of [xName, yName]) {
    const th = document.createElement('th');
    th.scope = 'col';
    th.textContent = h;
    head.append(th);
  }
  const thead = document.createElement('thead');
  thead.append(head);
  const tbody = document.createElement('tbody');
  for (const d of data) {
    const tr = document.createElement('tr');
    const a = document.createElement('td');
    a.textContent = d.label;
    const b = document.createElement('td');
    b.textContent = String(d.value);
    tr.append(a, b);
    tbody.append(tr);
  }
  table.append(thead, tbody);
  $(tableSel).replaceChildren(table);
}

$('#stats-form').addEventListener('submit', (e) => { e.preventDefault(); loadStats(); });

// ---------------------------------------------------------------- users

const ROLE = { advisor: 'Kommunvägledare', admin: 'Administratör' };

async function loadUsers() {
  try {
    const users = await api('GET', '/api/v1/users');
    $('#users-area').hidden = false;
    message('#users-message', '');
    $('#user-rows').replaceChildren(...users.map(userRow));
  } catch (err) {
    if (missing(err)) {
      $('#users-area').hidden = true;
      message('#users-message', 'Servern har ingen användarhantering än (GET /api/v1/users saknas). Använd kommandot kommunchat user så länge.', 'warn');
    } else {
      message('#users-message', `Användarna kunde inte hämtas: ${err.message}`, 'error');
    }
  }
}

function userRow(u) {
  const tr = document.createElement('tr');
  tr.dataset.username = u.username;
  const cells = [u.username, u.display_name, ROLE[u.role] || u.role, u.created_at ? u.created_at.slice(0, 10) : ''];
  for (const text of cells) {
    const td = document.createElement('td');
    td.textContent = text;
    tr.append(td);
  }
  const actions = document.createElement('td');
  const row = document.createElement('div');
  row.className = 'row-actions';
  const reset = button(`Nytt lösenord`, 'secondary', `Nytt lösenord för ${u.username}`);
  const remove = button('Ta bort', 'secondary', `Ta bort ${u.username}`);
  if (me && u.username === me.username) remove.disabled = true;
  row.append(reset, remove);
  actions.append(row);
  tr.append(actions);

  reset.addEventListener('click', () => {
    const existing = actions.querySelector('form');
    if (existing) { existing.remove(); return; }
    const form = document.createElement('form');
    form.className = 'inline-form';
    form.noValidate = true;
    const id = `pw-${u.username}`;
    const label = document.createElement('label');
    label.htmlFor = id;
    label.textContent = `Nytt lösenord för ${u.username}`;
    label.style.width = '100%';
    const input = document.createElement('input');
    input.type = 'password';
    input.id = id;
    input.autocomplete = 'new-password';
    const save = button('Spara lösenord', '', null);
    save.type = 'submit';
    form.append(label, input, save);
    actions.append(form);
    input.focus();
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      try {
        await api('POST', `/api/v1/users/${encodeURIComponent(u.username)}/password`, { password: input.value });
        form.remove();
        message('#users-message', `Lösenordet för ${u.username} är bytt. Kontot har loggats ut överallt.`, 'ok');
        announce(`Lösenordet för ${u.username} är bytt.`);
        reset.focus();
      } catch (err) {
        message('#users-message', err.status === 400 ? `Lösenordet duger inte: ${err.message}` : `Lösenordet kunde inte bytas: ${err.message}`, 'error');
        announce('Lösenordet kunde inte bytas.', true);
        input.focus();
      }
    });
  });

  remove.addEventListener('click', () => {
    if (actions.querySelector('.confirm')) return;
    const box = document.createElement('div');
    box.className = 'inline-form confirm';
    const q = document.createElement('p');
    q.textContent = `Ta bort ${u.username}? Kontot loggas ut direkt.`;
    q.style.width = '100%';
    q.style.margin = '0';
    const yes = button('Ja, ta bort', 'danger', `Ja, ta bort ${u.username}`);
    const no = button('Avbryt', 'secondary', null);
    box.append(q, yes, no);
    actions.append(box);
    no.focus();
    no.addEventListener('click', () => { box.remove(); remove.focus(); });
    yes.addEventListener('click', async () => {
      try {
        await api('DELETE', `/api/v1/users/${encodeURIComponent(u.username)}`);
        tr.remove();
        message('#users-message', `${u.username} är borttagen.`, 'ok');
        announce(`${u.username} är borttagen.`);
        $('#users-heading').setAttribute('tabindex', '-1');
        $('#users-heading').focus();
      } catch (err) {
        message('#users-message', `${u.username} kunde inte tas bort: ${err.message}`, 'error');
      }
    });
  });
  return tr;
}

function button(text, cls, label) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  if (cls) b.className = cls;
  if (label) b.setAttribute('aria-label', label);
  return b;
}

$('#add-user').addEventListener('submit', async (e) => {
  e.preventDefault();
  const err = $('#add-error');
  err.hidden = true;
  const body = {
    username: $('#new-username').value.trim(),
    display_name: $('#new-display').value.trim(),
    role: $('#new-role').value,
    password: $('#new-password').value,
  };
  if (!body.username || !body.display_name || !body.password) {
    err.textContent = 'Fyll i användarnamn, namn och lösenord.';
    err.hidden = false;
    return;
  }
  try {
    const u = await api('POST', '/api/v1/users', body);
    $('#user-rows').append(userRow(u));
    for (const id of ['#new-username', '#new-display', '#new-password']) $(id).value = '';
    message('#users-message', `${u.username} är tillagd som ${(ROLE[u.role] || u.role).toLowerCase()}.`, 'ok');
    announce(`${u.username} är tillagd.`);
  } catch (x) {
    err.textContent = x.status === 409 ? 'Det användarnamnet finns redan.' : x.status === 400 ? `Kontrollera uppgifterna: ${x.message}` : `Kontot kunde inte skapas: ${x.message}`;
    err.hidden = false;
    announce(err.textContent, true);
  }
});


// ---------------------------------------------------------------- errands

const enc = encodeURIComponent;
let errandQuery = null; // the search shown: { params, limit, offset }
let openedFrom = null; // the button that opened the errand shown

function errandParams() {
  const p = new URLSearchParams();
  for (const [id, name] of [['#e-number', 'number'], ['#e-from', 'from'], ['#e-to', 'to'], ['#e-category', 'category'], ['#e-advisor', 'advisor'], ['#e-q', 'q']]) {
    const v = $(id).value.trim();
    if (v) p.set(name, v);
  }
  if ($('#e-flagged').checked) p.set('flagged', 'true');
  return p;
}

async function searchErrands(offset, params = null) {
  const base = params || errandParams();
  if (base.get('from') && base.get('to') && base.get('to') < base.get('from')) {
    message('#errands-message', 'Till-datumet måste vara samma dag eller senare än från-datumet.', 'error');
    $('#e-to').focus();
    return;
  }
  const limit = Number($('#e-limit').value) || 20;
  const p = new URLSearchParams(base);
  p.set('limit', String(limit));
  p.set('offset', String(Math.max(0, offset)));
  try {
    const r = await api('GET', `/api/v1/errands?${p}`);
    message('#errands-message', '');
    errandQuery = { params: base, limit: r.limit ?? limit, offset: r.offset ?? offset, total: r.total };
    drawErrands(r);
  } catch (err) {
    $('#errands-results').hidden = true;
    if (missing(err)) message('#errands-message', 'Servern har inget ärenderegister (GET /api/v1/errands saknas).', 'warn');
    else if (err.status === 400) message('#errands-message', `Kontrollera sökfälten: ${err.message}`, 'error');
    else message('#errands-message', `Ärendena kunde inte hämtas: ${err.message}`, 'error');
    $('#errands-count').textContent = 'Sökningen misslyckades.';
  }
}

function secrecyMarker(text) {
  const flag = document.createElement('span');
  flag.className = 'pn-flag';
  const icon = document.createElement('span');
  icon.className = 'pn-icon';
  icon.setAttribute('aria-hidden', 'true');
  icon.textContent = '⚠';
  flag.append(icon, ` ${text}`);
  return flag;
}

function drawErrands(r) {
  const { total, limit, offset } = errandQuery;
  const list = r.errands || [];
  const rows = list.map((e) => {
    const tr = document.createElement('tr');
    tr.dataset.number = e.number;
    const first = document.createElement('td');
    const open = button(e.number, 'link', null);
    open.setAttribute('aria-label', `Visa ärende ${e.number}`);
    open.addEventListener('click', () => openErrand(e.number, open));
    first.append(open);
    tr.append(first);
    for (const text of [e.date, e.category || '–', e.advisor_name || '–', e.summary || '–']) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    const flag = document.createElement('td');
    if (e.secrecy_review) flag.append(secrecyMarker('Behöver sekretessprövas'));
    else flag.textContent = 'Nej';
    tr.append(flag);
    return tr;
  });
  if (!rows.length) {
    const tr = document.createElement('tr');
    const td = document.createElement('td');
    td.colSpan = 6;
    td.textContent = 'Inga ärenden matchar sökningen.';
    tr.append(td);
    rows.push(tr);
  }
  $('#errand-rows').replaceChildren(...rows);
  $('#errands-results').hidden = false;
  const firstShown = list.length ? offset + 1 : 0;
  const lastShown = offset + list.length;
  const pages = Math.max(1, Math.ceil(total / limit));
  const page = Math.floor(offset / limit) + 1;
  $('#e-page').textContent = `Sida ${page} av ${pages}`;
  $('#e-prev').disabled = offset <= 0;
  $('#e-next').disabled = lastShown >= total;
  const found = total === 1 ? '1 ärende hittades.' : `${total} ärenden hittades.`;
  $('#errands-count').textContent = total > list.length && list.length ? `${found} Visar ${firstShown}–${lastShown}.` : found;
  $('#errand-table caption').textContent = total ? `Sökresultat: ärende ${firstShown}–${lastShown} av ${total}` : 'Sökresultat';
}

function fact(dl, term, value) {
  if (value == null || value === '') return;
  const dt = document.createElement('dt');
  dt.textContent = term;
  const dd = document.createElement('dd');
  dd.textContent = value;
  dl.append(dt, dd);
}
function stamp(iso) {
  if (!iso) return '';
  return new Intl.DateTimeFormat('sv-SE', { timeZone: 'Europe/Stockholm', dateStyle: 'short', timeStyle: 'short' }).format(new Date(iso));
}
const END = { advisor_ended: 'Kommunvägledaren avslutade', citizen_left: 'Invånaren lämnade chatten', citizen_disconnected: 'Invånarens anslutning bröts', inactivity: 'Ingen aktivitet', interrupted: 'Avbruten (servern stoppades)', abandoned: 'Lämnade kön' };

async function openErrand(number, from) {
  openedFrom = from || null;
  let e;
  try {
    e = await api('GET', `/api/v1/errands/${enc(number)}`);
  } catch (err) {
    message('#errands-message', err.status === 404 ? `Ärende ${number} finns inte (eller är gallrat).` : `Ärendet kunde inte hämtas: ${err.message}`, 'error');
    announce('Ärendet kunde inte hämtas.', true);
    return;
  }
  const detail = $('#errand-detail');
  detail.dataset.number = e.number;
  $('#errand-detail-heading').textContent = `Ärende ${e.number}`;
  $('#errand-secrecy').hidden = !e.secrecy_review;
  const dl = $('#errand-facts');
  dl.replaceChildren();
  fact(dl, 'Datum', e.date);
  fact(dl, 'I kö', stamp(e.queued_at));
  fact(dl, 'Avslutad', stamp(e.ended_at));
  fact(dl, 'Kommunvägledare', e.advisor_name);
  fact(dl, 'Invånare', e.citizen_name);
  fact(dl, 'Ämne', e.topic);
  fact(dl, 'Kategori', e.category);
  fact(dl, 'Sammanfattning', e.summary);
  fact(dl, 'Hur det slutade', e.end_reason ? END[e.end_reason] || e.end_reason : '');
  fact(dl, 'Sekretessprövning', e.secrecy_review ? 'Behövs' : 'Behövs inte');
  const lines = (e.transcript || []).map((l) => {
    const li = document.createElement('li');
    li.className = `line ${l.sender}`;
    const meta = document.createElement('span');
    meta.className = 'meta';
    const who = l.sender === 'citizen' ? 'Invånaren' : l.sender === 'advisor' ? 'Kommunvägledaren' : 'System';
    meta.textContent = `${l.sender_name ? `${who} (${l.sender_name})` : who}, ${stamp(l.sent_at)}`;
    const text = document.createElement('p');
    text.className = 'text';
    text.textContent = l.text;
    li.append(meta, text);
    if (l.personnummer) {
      li.classList.add('has-pn');
      li.append(secrecyMarker('Innehåller personnummer'));
    }
    return li;
  });
  if (!lines.length) {
    const li = document.createElement('li');
    li.textContent = 'Inga meddelanden.';
    lines.push(li);
  }
  $('#errand-transcript').replaceChildren(...lines);
  $('#r-email').checked = false;
  $('#r-phone').checked = false;
  updateReleaseLinks();
  detail.hidden = false;
  $('#errand-detail-heading').focus();
}

function updateReleaseLinks() {
  const number = $('#errand-detail').dataset.number;
  if (!number) return;
  const p = new URLSearchParams();
  if ($('#r-email').checked) p.set('mask_email', 'true');
  if ($('#r-phone').checked) p.set('mask_phone', 'true');
  const base = `/api/v1/errands/${enc(number)}/release`;
  const q = p.toString();
  $('#release-text').href = q ? `${base}?${q}` : base;
  p.set('format', 'json');
  $('#release-json').href = `${base}?${p}`;
}

function updateExportLink() {
  const p = new URLSearchParams({ from: $('#x-from').value, to: $('#x-to').value, format: $('#x-format').value });
  const link = $('#export-link');
  link.href = `/api/v1/errands/export?${p}`;
  link.setAttribute('download', `arenden-${p.get('from')}-${p.get('to')}.${p.get('format') === 'csv' ? 'csv' : 'jsonl'}`);
}

$('#errand-search').addEventListener('submit', (e) => { e.preventDefault(); searchErrands(0); });
$('#errand-search').addEventListener('reset', () => { setTimeout(() => searchErrands(0), 0); });
async function page(delta) {
  if (!errandQuery) return;
  await searchErrands(errandQuery.offset + delta * errandQuery.limit, errandQuery.params);
  // Paging to the first or last page disables the button that had focus.
  const other = delta < 0 ? $('#e-next') : $('#e-prev');
  if ((delta < 0 ? $('#e-prev') : $('#e-next')).disabled && !other.disabled) other.focus();
}
$('#e-prev').addEventListener('click', () => page(-1));
$('#e-next').addEventListener('click', () => page(1));
$('#r-email').addEventListener('change', updateReleaseLinks);
$('#r-phone').addEventListener('change', updateReleaseLinks);
$('#errand-close').addEventListener('click', () => {
  $('#errand-detail').hidden = true;
  delete $('#errand-detail').dataset.number;
  if (openedFrom && openedFrom.isConnected) {
    openedFrom.focus();
  } else {
    $('#errands-heading').setAttribute('tabindex', '-1');
    $('#errands-heading').focus();
  }
});
for (const id of ['#x-from', '#x-to', '#x-format']) $(id).addEventListener('input', updateExportLink);
$('#export-form').addEventListener('submit', (e) => {
  e.preventDefault();
  updateExportLink();
  $('#export-link').click();
});
