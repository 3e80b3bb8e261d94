// kommunchat: the advisor console. Protocol: docs/protocol.md (advisor).
// Message text is only ever set with textContent.
import { $, api, announce, duration, clockTime, randomId, session } from './staff.js';
import { hasPersonnummer } from './personnummer.js';

const PN_WARNING = 'Texten innehåller ett personnummer – ärendet markeras för sekretessprövning';

const chats = new Map(); // conversation_id -> chat state
let me = null;
let ws = null;
let welcome = null;
let status = 'away';
let wanted = null; // a status chosen while no connection could carry it; sent once welcomed
let titleCueUntil = 0;
let retry = 0;
let retryTimer = null;
let queueTimer = null;
let queue = { waiting: 0, longest_wait_seconds: 0, at: Date.now() };
let selected = null;
let audio = null;
let signedOut = false;
let counter = 0;

const auth = session({
  roles: ['advisor', 'admin'],
  onUser(user) {
    me = user;
    signedOut = false;
    $('#console-view').hidden = false;
    $('#console-heading').focus();
    connect();
  },
  onSignOut() {
    signedOut = true;
    wanted = null;
    disconnect();
    $('#console-view').hidden = true;
  },
});

// ---------------------------------------------------------------- connection

function connect() {
  clearTimeout(retryTimer);
  if (ws || signedOut) return;
  const sock = new WebSocket(`${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws/advisor`);
  ws = sock;
  let welcomed = false;
  sock.onmessage = (e) => {
    let f;
    try { f = JSON.parse(e.data); } catch { return; }
    if (f.type === 'welcome') welcomed = true;
    handle(f);
  };
  sock.onclose = async (e) => {
    if (ws !== sock) return;
    ws = null;
    if (signedOut) return;
    if (e.code === 1008) { wanted = null; auth.expired(); clearAll(); return; }
    if (e.code === 4001) {
      banner('Konsolen har öppnats i ett annat fönster eller en annan flik.', 'Använd konsolen här');
      return;
    }
    if (!welcomed) {
      // The upgrade may have been refused because the session is gone.
      try { await api('GET', '/api/v1/me'); } catch (err) {
        if (err.status === 401) { wanted = null; auth.expired(); clearAll(); return; }
      }
    }
    banner('Anslutningen till servern bröts. Konsolen ansluter igen av sig själv och hämtar dina chattar.', 'Försök nu');
    announce('Anslutningen bröts. Ansluter igen.', true);
    const delay = Math.min(10000, 500 * 2 ** retry) * (0.75 + Math.random() / 2);
    retry = Math.min(retry + 1, 8);
    retryTimer = setTimeout(connect, delay);
  };
}
function disconnect() {
  clearTimeout(retryTimer);
  if (ws) { const s = ws; ws = null; s.close(1000); }
}
function send(frame) {
  if (!ws || ws.readyState !== WebSocket.OPEN || !welcome) return false;
  ws.send(JSON.stringify(frame));
  return true;
}
function banner(text, buttonText) {
  const b = $('#conn-banner');
  $('#conn-text').textContent = text;
  let btn = $('#conn-retry');
  if (!btn) {
    btn = document.createElement('button');
    btn.type = 'button';
    btn.id = 'conn-retry';
    btn.className = 'secondary';
    btn.addEventListener('click', () => { retry = 0; connect(); });
    b.append(btn);
  }
  btn.textContent = buttonText;
  b.hidden = false;
}

// ---------------------------------------------------------------- frames

function handle(f) {
  switch (f.type) {
    case 'welcome': {
      const reconnect = welcome !== null;
      welcome = f;
      retry = 0;
      $('#conn-banner').hidden = true;
      if (reconnect) announce('Anslutningen är återställd.');
      // A status chosen before this connection was welcomed wins over the one
      // the server remembers; the server confirms it with a `status` frame.
      if (wanted && wanted !== f.status && send({ type: 'status', status: wanted })) setStatus(wanted, false);
      else setStatus(f.status, false);
      wanted = null;
      $('#max-chats').textContent = String(f.max_chats);
      setQueue(f.queue);
      const ids = new Set(f.chats.map((c) => c.conversation_id));
      for (const [id, c] of chats) if (!ids.has(id) && !c.ended) removeChat(id, 'Chatten finns inte längre hos dig.');
      for (const c of f.chats) upsertChat(c, false);
      for (const c of chats.values()) fillSelects(c);
      break;
    }
    case 'status':
      setStatus(f.status, true);
      break;
    case 'assigned':
      upsertChat(f.chat, true);
      break;
    case 'message': {
      const c = chats.get(f.conversation_id);
      if (c) addMessage(c, f);
      break;
    }
    case 'ack': {
      const c = chats.get(f.conversation_id);
      if (!c) break;
      const m = c.messages.find((x) => x.client_msg_id === f.client_msg_id);
      if (m && m.pending) {
        m.pending = false;
        m.seq = f.seq;
        m.sent_at = f.sent_at;
        redrawMessage(c, m);
      }
      c.lastSeq = Math.max(c.lastSeq, f.seq);
      break;
    }
    case 'typing': {
      const c = chats.get(f.conversation_id);
      if (!c) break;
      c.el.querySelector('.typing').textContent = f.active ? `${citizenName(c)} skriver …` : '';
      c.tab.classList.toggle('is-typing', f.active);
      break;
    }
    case 'citizen_presence': {
      const c = chats.get(f.conversation_id);
      if (!c) break;
      c.data.citizen_connected = f.connected;
      drawHead(c);
      announce(f.connected ? `${citizenName(c)} är ansluten igen.` : `${citizenName(c)}s anslutning bröts.`);
      break;
    }
    case 'inactivity_warning': {
      const c = chats.get(f.conversation_id);
      if (!c) break;
      const el = c.el.querySelector('.inactivity');
      el.textContent = `Ingen har skrivit på ett tag. Chatten avslutas om cirka ${Math.max(1, Math.round(f.ends_in_seconds / 60))} min.`;
      el.hidden = false;
      break;
    }
    case 'wrap_up': {
      const c = chats.get(f.conversation_id);
      if (!c) break;
      c.data.state = 'wrap_up';
      drawState(c);
      announce(`${citizenName(c)} har lämnat chatten. Skriv en sammanfattning och avsluta ärendet.`);
      break;
    }
    case 'chat_ended': {
      const c = chats.get(f.conversation_id);
      if (!c) break;
      c.ended = true;
      c.data.errand_number = f.errand_number;
      drawHead(c);
      drawState(c);
      const text = `Chatten med ${citizenName(c)} är avslutad. Ärendenummer ${f.errand_number || 'saknas'}.`;
      c.el.querySelector('.ended-text').textContent = text;
      announce(text);
      if (c.id === selected) c.el.querySelector('.close-tab').focus();
      updateCount();
      break;
    }
    case 'chat_removed': {
      const c = chats.get(f.conversation_id);
      if (!c) break;
      const why = f.reason === 'transferred' ? 'har överförts till en kollega' : 'har lagts tillbaka i kön';
      removeChat(c.id, `Chatten med ${citizenName(c)} ${why}.`);
      break;
    }
    case 'queue':
      setQueue(f);
      break;
    case 'server_shutdown':
      // The chats survive the restart, but the new server has not heard this
      // console's status: say it again once welcomed.
      wanted = wanted || status;
      banner('Servern startas om. Konsolen ansluter igen av sig själv.', 'Försök nu');
      break;
    case 'error':
      onError(f);
      break;
    default:
      break;
  }
}

function onError(f) {
  const c = f.conversation_id ? chats.get(f.conversation_id) : null;
  if (c && f.client_msg_id) {
    const m = c.messages.find((x) => x.client_msg_id === f.client_msg_id && x.pending);
    if (m && (f.code === 'storage_failed' || f.code === 'rate_limited')) {
      setTimeout(() => { if (m.pending) send(messageFrame(c, m)); }, 1500);
      return;
    }
    if (m) { m.pending = false; m.failed = true; redrawMessage(c, m); }
    const why = {
      invalid_field: 'Meddelandet är för långt eller tomt.',
      conversation_full: 'Chatten har blivit så lång som en chatt får bli. Avsluta den; medborgaren kan starta en ny chatt.',
    };
    showPanelError(c, '.send-error', why[f.code] || `Meddelandet skickades inte (${f.message}).`);
    return;
  }
  if (c && f.code === 'target_unavailable') {
    showPanelError(c, '.transfer-error', 'Kollegan är inte inloggad, inte tillgänglig eller har inga lediga platser.');
    return;
  }
  if (c && (f.code === 'invalid_category' || f.code === 'invalid_field')) {
    showPanelError(c, '.end-error', f.code === 'invalid_category' ? 'Välj en av kategorierna i listan.' : f.message);
    return;
  }
  announce(`Fel: ${f.message}`, true);
}

// ---------------------------------------------------------------- status and queue

function setStatus(s, announceIt) {
  status = s;
  $('#status-available').checked = s === 'available';
  $('#status-away').checked = s !== 'available';
  document.body.dataset.status = s;
  $('#no-chats-hint').textContent = s === 'available'
    ? 'Du är tillgänglig. Nya chattar kommer hit av sig själva.'
    : 'Välj Tillgänglig för att ta emot chattar.';
  if (announceIt) announce(s === 'available' ? 'Din status är nu Tillgänglig.' : 'Din status är nu Borta.');
}
function requestStatus(s) {
  unlockAudio();
  if (send({ type: 'status', status: s })) { wanted = null; return; }
  // Not welcomed yet (the console is still connecting, or reconnecting): keep
  // the choice and send it as soon as the connection is up.
  wanted = s;
  setStatus(s, false);
  if (!$('#conn-banner').hidden) announce('Ingen anslutning just nu. Statusen ändras när konsolen har anslutit igen.');
}
function setQueue(q) {
  queue = { waiting: q.waiting, longest_wait_seconds: q.longest_wait_seconds, at: Date.now() };
  setColleagues(q.available || []);
  drawQueue();
  clearInterval(queueTimer);
  queueTimer = setInterval(drawQueue, 5000);
}
// The transfer fields suggest colleagues who are available with a free slot.
function setColleagues(available) {
  const self = (welcome && welcome.advisor && welcome.advisor.username) || (me && me.username);
  const list = $('#colleagues');
  list.replaceChildren(...available.filter((c) => c.username !== self).map((c) => {
    const option = document.createElement('option');
    option.value = c.username;
    option.label = `${c.display_name} (${c.free_slots} ${c.free_slots === 1 ? 'ledig plats' : 'lediga platser'})`;
    return option;
  }));
}
function drawQueue() {
  $('#queue-waiting').textContent = String(queue.waiting);
  const grown = queue.waiting > 0 ? (Date.now() - queue.at) / 1000 : 0;
  $('#queue-longest').textContent = queue.waiting > 0 ? duration(queue.longest_wait_seconds + grown) : '–';
}

// ---------------------------------------------------------------- chats

function citizenName(c) { return c.data.citizen_name || 'Invånaren'; }

function upsertChat(data, isNew) {
  let c = chats.get(data.conversation_id);
  if (!c) {
    c = createChat(data);
    chats.set(c.id, c);
  }
  // Pending messages not yet in the stored history are kept and sent again.
  const pending = c.messages.filter((m) => m.pending && !data.messages.some((x) => x.client_msg_id === m.client_msg_id));
  c.data = data;
  c.ended = false;
  c.messages = data.messages.map((m) => ({ ...m }));
  c.lastSeq = c.messages.reduce((a, m) => Math.max(a, m.seq), 0);
  c.messages.push(...pending);
  c.list.replaceChildren(...c.messages.map((m) => messageLi(c, m)));
  scrollLog(c);
  drawHead(c);
  drawState(c);
  fillSelects(c);
  for (const m of pending) send(messageFrame(c, m));
  updateCount();
  if (isNew) {
    if (!selected || !chats.has(selected)) select(c.id, false);
    else markUnread(c, c.messages.filter((m) => m.sender === 'citizen').length);
    cue(c);
  } else if (!selected || !chats.has(selected)) {
    select(c.id, false);
  }
}

function createChat(data) {
  const id = data.conversation_id;
  const n = ++counter;
  const tab = document.createElement('button');
  tab.type = 'button';
  tab.setAttribute('role', 'tab');
  tab.id = `tab-${n}`;
  tab.className = 'tab';
  tab.setAttribute('aria-controls', `panel-${n}`);
  tab.setAttribute('aria-selected', 'false');
  tab.tabIndex = -1;
  const label = document.createElement('span');
  label.className = 'tab-label';
  const badge = document.createElement('span');
  badge.className = 'badge';
  badge.hidden = true;
  tab.append(label, badge);
  tab.addEventListener('click', () => select(id, false));
  tab.addEventListener('keydown', onTabKey);
  $('#tabs').append(tab);

  const el = document.getElementById('panel-template').content.firstElementChild.cloneNode(true);
  el.id = `panel-${n}`;
  el.setAttribute('aria-labelledby', `tab-${n}`);
  el.hidden = true;
  const bind = (labelSel, fieldSel, suffix) => {
    const field = el.querySelector(fieldSel);
    field.id = `${suffix}-${n}`;
    el.querySelector(labelSel).htmlFor = field.id;
  };
  bind('.canned-label', '.canned', 'canned');
  bind('.message-label', '.message-input', 'msg');
  bind('.transfer-label', '.transfer-to', 'transfer');
  bind('.category-label', '.category', 'category');
  bind('.summary-label', '.summary', 'summary');
  const warning = el.querySelector('.pn-warning');
  warning.id = `pn-warning-${n}`;
  el.querySelector('.message-input').setAttribute('aria-describedby', warning.id);
  el.querySelector('.log').setAttribute('aria-label', 'Meddelanden');
  $('#panels').append(el);

  const c = { id, n, data, el, tab, label, badge, list: el.querySelector('.messages'), messages: [], unread: 0, lastSeq: 0, ended: false, typingSent: false, typingTimer: null };
  wirePanel(c);
  return c;
}

function wirePanel(c) {
  const el = c.el;
  const input = el.querySelector('.message-input');
  el.querySelector('.composer').addEventListener('submit', (e) => { e.preventDefault(); sendMessage(c); });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.altKey && !e.isComposing) { e.preventDefault(); sendMessage(c); }
  });
  input.addEventListener('input', () => {
    checkDraft(c);
    if (c.data.state !== 'chatting' || c.ended) return;
    if (!c.typingSent) c.typingSent = send({ type: 'typing', conversation_id: c.id, active: true });
    clearTimeout(c.typingTimer);
    c.typingTimer = setTimeout(() => stopTyping(c), 3000);
  });
  el.querySelector('.insert-canned').addEventListener('click', () => insertCanned(c));
  el.querySelector('.canned').addEventListener('keydown', (e) => {
    if (e.key === 'Enter') { e.preventDefault(); insertCanned(c); }
  });
  el.querySelector('.transfer-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const to = el.querySelector('.transfer-to').value.trim();
    el.querySelector('.transfer-error').hidden = true;
    if (!to) { showPanelError(c, '.transfer-error', 'Skriv kollegans användarnamn.'); return; }
    send({ type: 'transfer', conversation_id: c.id, to });
  });
  el.querySelector('.to-queue').addEventListener('click', () => {
    el.querySelector('.transfer-error').hidden = true;
    send({ type: 'transfer', conversation_id: c.id, to: null });
  });
  el.querySelector('.end-form').addEventListener('submit', (e) => {
    e.preventDefault();
    el.querySelector('.end-error').hidden = true;
    const category = el.querySelector('.category').value;
    const summary = el.querySelector('.summary').value.trim();
    if (welcome && welcome.categories.length && !category) {
      showPanelError(c, '.end-error', 'Välj en kategori.');
      el.querySelector('.category').focus();
      return;
    }
    const frame = { type: 'end', conversation_id: c.id };
    if (category) frame.category = category;
    if (summary) frame.summary = summary;
    if (!send(frame)) showPanelError(c, '.end-error', 'Ingen anslutning just nu. Försök igen om en stund.');
  });
  el.querySelector('.close-tab').addEventListener('click', () => removeChat(c.id, null));
}

function fillSelects(c) {
  if (!welcome) return;
  const canned = c.el.querySelector('.canned');
  const name = (welcome.advisor && welcome.advisor.display_name) || (me && me.display_name) || '';
  canned.replaceChildren(...welcome.canned_responses.map((text, i) => {
    const o = document.createElement('option');
    o.value = String(i);
    o.textContent = text.split('{namn}').join(name);
    return o;
  }));
  c.el.querySelector('.canned-row').hidden = welcome.canned_responses.length === 0;
  const cat = c.el.querySelector('.category');
  const chosen = cat.value;
  const first = document.createElement('option');
  first.value = '';
  first.textContent = welcome.categories.length ? 'Välj kategori' : 'Ingen kategori';
  cat.replaceChildren(first, ...welcome.categories.map((text) => {
    const o = document.createElement('option');
    o.value = text;
    o.textContent = text;
    return o;
  }));
  cat.value = chosen;
}

function insertCanned(c) {
  const sel = c.el.querySelector('.canned');
  const input = c.el.querySelector('.message-input');
  const text = sel.options[sel.selectedIndex] ? sel.options[sel.selectedIndex].textContent : '';
  if (!text) return;
  input.value = input.value ? `${input.value} ${text}` : text;
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
  checkDraft(c);
}

/** Warns (politely, once per change) while the draft holds a personnummer. */
function checkDraft(c) {
  const found = hasPersonnummer(c.el.querySelector('.message-input').value);
  if (found === Boolean(c.pnWarned)) return;
  c.pnWarned = found;
  const warning = c.el.querySelector('.pn-warning');
  warning.replaceChildren();
  warning.classList.toggle('active', found);
  if (found) {
    const icon = document.createElement('span');
    icon.className = 'pn-icon';
    icon.setAttribute('aria-hidden', 'true');
    icon.textContent = '⚠';
    warning.append(icon, ` ${PN_WARNING}`);
  }
}

/** The message holds a personnummer: flagged by the server, or found here (history, own messages). */
function holdsPersonnummer(m) {
  if (m.personnummer) return true;
  const year = m.sent_at ? new Date(m.sent_at).getFullYear() : undefined;
  return hasPersonnummer(m.text, year);
}
function personnummerFlag() {
  const flag = document.createElement('span');
  flag.className = 'pn-flag';
  const icon = document.createElement('span');
  icon.className = 'pn-icon';
  icon.setAttribute('aria-hidden', 'true');
  icon.textContent = '⚠';
  flag.append(icon, ' Innehåller personnummer');
  return flag;
}

function drawHead(c) {
  const d = c.data;
  c.el.querySelector('.panel-title').textContent = d.topic ? `${citizenName(c)} – ${d.topic}` : citizenName(c);
  const meta = [];
  if (d.errand_number) meta.push(`Ärende ${d.errand_number}`);
  meta.push(`I kö ${clockTime(d.queued_at)}`, `tilldelad ${clockTime(d.assigned_at)}`);
  if (d.language) meta.push(`språk: ${d.language}`);
  c.el.querySelector('.panel-meta').textContent = meta.join(' · ');
  const presence = c.el.querySelector('.presence');
  presence.textContent = c.ended ? '' : d.citizen_connected ? 'Invånaren är ansluten.' : 'Invånarens anslutning är bruten – väntar på att den kommer tillbaka.';
  presence.className = `presence ${d.citizen_connected ? 'on' : 'off'}`;
  c.label.textContent = c.ended ? `${citizenName(c)} (avslutad)` : citizenName(c);
}

function drawState(c) {
  const el = c.el;
  const wrap = c.data.state === 'wrap_up' && !c.ended;
  el.querySelector('.wrapup').hidden = !wrap;
  const canWrite = c.data.state === 'chatting' && !c.ended;
  for (const x of el.querySelectorAll('.composer textarea, .composer button, .composer select')) x.disabled = !canWrite;
  el.querySelector('.composer').hidden = c.ended;
  el.querySelector('.transfer').hidden = !canWrite;
  el.querySelector('.end-form').hidden = c.ended;
  el.querySelector('.ended-box').hidden = !c.ended;
  if (c.ended) el.querySelector('.typing').textContent = '';
  c.tab.classList.toggle('ended', c.ended);
}

function messageLi(c, m) {
  const li = document.createElement('li');
  const mine = m.sender === 'advisor';
  li.className = `msg ${mine ? 'mine' : 'theirs'}`;
  li.dataset.key = m.client_msg_id && mine ? m.client_msg_id : `seq${m.seq}`;
  const meta = document.createElement('span');
  meta.className = 'meta';
  const who = mine ? (m.sender_name && me && m.sender_name !== me.display_name ? m.sender_name : 'Du') : m.sender_name || citizenName(c);
  meta.textContent = m.sent_at ? `${who}, ${clockTime(m.sent_at)}` : who;
  const text = document.createElement('p');
  text.className = 'text';
  text.textContent = m.text;
  li.append(meta, text);
  if (holdsPersonnummer(m)) {
    li.classList.add('has-pn');
    li.append(personnummerFlag());
  }
  if (m.pending || m.failed) {
    const s = document.createElement('span');
    s.className = 'pending';
    s.textContent = m.failed ? 'Skickades inte' : 'Skickas …';
    li.append(s);
    if (m.pending) li.dataset.pending = '1';
  }
  return li;
}
function redrawMessage(c, m) {
  const el = [...c.list.children].find((x) => x.dataset.key === m.client_msg_id);
  if (el) el.replaceWith(messageLi(c, m));
}
function addMessage(c, f) {
  if (c.messages.some((m) => m.seq === f.seq)) return;
  const m = { seq: f.seq, sender: f.sender, sender_name: f.sender_name, text: f.text, sent_at: f.sent_at, client_msg_id: f.client_msg_id, personnummer: f.personnummer === true };
  c.messages.push(m);
  c.lastSeq = Math.max(c.lastSeq, f.seq);
  const before = [...c.list.children].find((el) => el.dataset.pending === '1') || null;
  c.list.insertBefore(messageLi(c, m), before);
  scrollLog(c);
  if (f.sender === 'citizen') {
    c.el.querySelector('.typing').textContent = '';
    c.tab.classList.remove('is-typing');
    if (c.id !== selected || document.hidden) markUnread(c, c.unread + 1);
  }
}
function scrollLog(c) {
  const log = c.el.querySelector('.log');
  log.scrollTop = log.scrollHeight;
}
function messageFrame(c, m) {
  return { type: 'message', conversation_id: c.id, client_msg_id: m.client_msg_id, text: m.text };
}
function sendMessage(c) {
  const input = c.el.querySelector('.message-input');
  const text = input.value.trim();
  c.el.querySelector('.send-error').hidden = true;
  if (!text || c.ended || c.data.state !== 'chatting') return;
  const max = welcome ? welcome.max_message_bytes : 16384;
  if (new TextEncoder().encode(text).length > max) { showPanelError(c, '.send-error', 'Meddelandet är för långt.'); return; }
  const m = { seq: null, sender: 'advisor', sender_name: me ? me.display_name : null, text, sent_at: null, client_msg_id: randomId('a'), pending: true };
  c.messages.push(m);
  c.list.append(messageLi(c, m));
  scrollLog(c);
  input.value = '';
  checkDraft(c);
  stopTyping(c);
  send(messageFrame(c, m));
}
function stopTyping(c) {
  clearTimeout(c.typingTimer);
  if (c.typingSent) send({ type: 'typing', conversation_id: c.id, active: false });
  c.typingSent = false;
}
function showPanelError(c, sel, text) {
  const el = c.el.querySelector(sel);
  el.textContent = text;
  el.hidden = false;
  announce(text, true);
}

function markUnread(c, n) {
  c.unread = n;
  c.badge.hidden = n === 0;
  c.badge.replaceChildren();
  if (n > 0) {
    const hidden = document.createElement('span');
    hidden.className = 'visually-hidden';
    hidden.textContent = n === 1 ? ' oläst meddelande' : ' olästa meddelanden';
    c.badge.append(String(n), hidden);
  }
  updateTitle();
}
function updateTitle() {
  let unread = 0;
  for (const c of chats.values()) unread += c.unread;
  const title = unread ? `(${unread}) Chattkonsol – kommunchat` : 'Chattkonsol – kommunchat';
  document.title = Date.now() < titleCueUntil ? `Ny chatt! ${title}` : title;
}
function updateCount() {
  const open = [...chats.values()].filter((c) => !c.ended).length;
  $('#chat-count').textContent = String(open);
  $('#no-chats').hidden = chats.size > 0;
}

function select(id, focusTab) {
  const c = chats.get(id);
  if (!c) return;
  selected = id;
  for (const x of chats.values()) {
    const on = x.id === id;
    x.tab.setAttribute('aria-selected', String(on));
    x.tab.tabIndex = on ? 0 : -1;
    x.el.hidden = !on;
  }
  c.tab.classList.remove('new');
  markUnread(c, 0);
  scrollLog(c);
  if (focusTab) c.tab.focus();
}
function order() { return [...$('#tabs').children].map((tab) => [...chats.values()].find((c) => c.tab === tab)).filter(Boolean); }
function step(delta) {
  const list = order();
  if (!list.length) return;
  const i = Math.max(0, list.findIndex((c) => c.id === selected));
  const next = list[(i + delta + list.length) % list.length];
  select(next.id, true);
}
function onTabKey(e) {
  const list = order();
  if (e.key === 'ArrowRight') { e.preventDefault(); step(1); }
  else if (e.key === 'ArrowLeft') { e.preventDefault(); step(-1); }
  else if (e.key === 'Home' && list.length) { e.preventDefault(); select(list[0].id, true); }
  else if (e.key === 'End' && list.length) { e.preventDefault(); select(list[list.length - 1].id, true); }
}
function removeChat(id, message) {
  const c = chats.get(id);
  if (!c) return;
  const list = order();
  const i = list.indexOf(c);
  c.tab.remove();
  c.el.remove();
  chats.delete(id);
  if (selected === id) {
    selected = null;
    const rest = order();
    if (rest.length) select(rest[Math.min(i, rest.length - 1)].id, true);
    else $('#console-heading').focus();
  }
  updateCount();
  updateTitle();
  if (message) announce(message);
}
function clearAll() {
  for (const id of [...chats.keys()]) removeChat(id, null);
  welcome = null;
}

// ---------------------------------------------------------------- cue for a new chat

function unlockAudio() {
  if (audio) return;
  try { audio = new AudioContext(); } catch { audio = null; }
}
function beep() {
  if (!audio) return;
  if (audio.state === 'suspended') audio.resume();
  const now = audio.currentTime;
  for (const [i, freq] of [660, 880].entries()) {
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.0001, now + i * 0.18);
    gain.gain.exponentialRampToValueAtTime(0.2, now + i * 0.18 + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, now + i * 0.18 + 0.16);
    osc.connect(gain).connect(audio.destination);
    osc.start(now + i * 0.18);
    osc.stop(now + i * 0.18 + 0.17);
  }
}
function cue(c) {
  beep();
  // The highlight stays until the advisor looks at the chat; on the chat that is
  // already shown it goes when the pulse is over.
  c.tab.classList.add('new');
  if (c.id === selected) c.tab.addEventListener('animationend', () => { if (c.id === selected) c.tab.classList.remove('new'); }, { once: true });
  const text = `Ny chatt: ${citizenName(c)}${c.data.topic ? `, ${c.data.topic}` : ''}.`;
  announce(text, true);
  titleCueUntil = Date.now() + 4000;
  updateTitle();
  setTimeout(updateTitle, 4050);
}

// ---------------------------------------------------------------- keyboard

function current() { return selected ? chats.get(selected) : null; }
document.addEventListener('keydown', (e) => {
  if (!e.altKey || !e.shiftKey || e.ctrlKey || e.metaKey || $('#console-view').hidden) return;
  const c = current();
  const digit = /^Digit([1-9])$/.exec(e.code);
  if (digit) {
    const list = order();
    const target = list[Number(digit[1]) - 1];
    if (target) { e.preventDefault(); select(target.id, true); }
    return;
  }
  switch (e.code) {
    case 'KeyN': e.preventDefault(); step(1); break;
    case 'KeyP': e.preventDefault(); step(-1); break;
    case 'KeyS': e.preventDefault(); requestStatus(status === 'available' ? 'away' : 'available'); break;
    case 'KeyM': if (c) { e.preventDefault(); c.el.querySelector('.message-input').focus(); } break;
    case 'KeyR': if (c) { e.preventDefault(); c.el.querySelector('.canned').focus(); } break;
    case 'KeyE': if (c && !c.ended) { e.preventDefault(); c.el.querySelector('.category').focus(); } break;
    default: break;
  }
});
for (const radio of document.querySelectorAll('input[name=status]')) {
  radio.addEventListener('change', () => { if (radio.checked) requestStatus(radio.value); });
}
document.addEventListener('visibilitychange', () => {
  const c = current();
  if (!document.hidden && c) markUnread(c, 0);
});
document.addEventListener('pointerdown', unlockAudio, { once: true });
document.addEventListener('keydown', unlockAudio, { once: true });
