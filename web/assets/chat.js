// kommunchat: the citizen chat. Runs in the widget's iframe (or alone at /chat).
// Protocol: docs/protocol.md. Message text is only ever set with textContent.
import { T } from './chat-i18n.js';

const TZ = 'Europe/Stockholm';
const STORE = 'kommunchat-chat';
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const embedded = window.parent !== window;

// ---------------------------------------------------------------- state

function fresh(lang) {
  return {
    lang, langChosen: false, phase: 'idle', token: null, conversationId: null, lastSeq: 0,
    position: null, wait: null, advisorName: null, errand: null, endReason: null, messages: [],
    leaveRequested: false, canRate: false, rating: null, ratingToken: null,
  };
}
function load() {
  try { return JSON.parse(sessionStorage.getItem(STORE)); } catch { return null; }
}
function save() {
  try { sessionStorage.setItem(STORE, JSON.stringify(st)); } catch { /* storage blocked: the chat still works until reload */ }
}
const hostLang = (params.get('lang') || document.documentElement.lang || 'sv').toLowerCase().startsWith('en') ? 'en' : 'sv';
let st = load() || fresh(hostLang);
if (!st.langChosen) st.lang = hostLang;

let ws = null;
let welcome = null;
let hours = null;
let retry = 0;
let retryTimer = null;
let lost = false;
let resuming = false;
let typingSent = false;
let typingTimer = null;
let maxBytes = 16384;
let lastAnnouncedPosition = null;
// The satisfaction survey: only a connection that received `ended` with
// `can_rate` may send `rate`. After a reload or a reconnect the page asks
// again with the ended chat's token (`st.ratingToken`): a `resume` within the
// server's rating window answers `ended` once more, and that connection may rate.
let rateSocket = null;
let rateSending = false;
let reclaiming = false; // a `resume` for the ended chat's survey is unanswered
let rateOffered = false; // this page has shown the form (a reconnect keeps it)
let surveyNote = null; // { kind: '' | 'ok' | 'error', key }

// ---------------------------------------------------------------- text

function t(key, vars) {
  let s = (T[st.lang] && T[st.lang][key]) ?? T.sv[key] ?? key;
  if (vars) for (const [k, v] of Object.entries(vars)) s = s.split(`{${k}}`).join(String(v));
  return s;
}
function applyI18n() {
  document.documentElement.lang = st.lang;
  document.title = t('title');
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = t(el.dataset.i18nPlaceholder);
  const other = st.lang === 'sv' ? 'en' : 'sv';
  const sw = $('lang-switch');
  sw.textContent = other === 'en' ? 'English' : 'Svenska';
  sw.lang = other;
  sw.setAttribute('aria-label', other === 'en' ? 'Change language to English' : 'Byt språk till svenska');
}
function announce(text) {
  const a = $('announcer');
  a.textContent = '';
  // A fresh text node in a separate task is announced reliably by screen readers.
  setTimeout(() => { a.textContent = text; }, 50);
}

// ---------------------------------------------------------------- time

function parts(date, opts) {
  const out = {};
  for (const p of new Intl.DateTimeFormat('en-GB', { timeZone: TZ, ...opts }).formatToParts(date)) out[p.type] = p.value;
  return out;
}
function clock(hhmm) { return st.lang === 'sv' ? hhmm.replace(':', '.') : hhmm; }
function timeOf(date) {
  const p = parts(date, { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
  return clock(`${p.hour}:${p.minute}`);
}
function dayKey(date) {
  const p = parts(date, { year: 'numeric', month: '2-digit', day: '2-digit' });
  return `${p.year}-${p.month}-${p.day}`;
}
function locale() { return st.lang === 'sv' ? 'sv-SE' : 'en-GB'; }
function dayName(date, withDate) {
  const opts = withDate ? { weekday: 'long', day: 'numeric', month: 'long' } : { weekday: 'long' };
  return new Intl.DateTimeFormat(locale(), { timeZone: TZ, ...opts }).format(date);
}
// "Vi öppnar igen måndag 08.00"
function nextOpeningText(iso) {
  if (!iso) return t('noOpening');
  const d = new Date(iso);
  const days = Math.round((Date.parse(dayKey(d)) - Date.parse(dayKey(new Date()))) / 864e5);
  const when = days <= 0 ? t('today') : days === 1 ? t('tomorrow') : dayName(d, days >= 7);
  return t('weOpen', { when, time: timeOf(d) });
}
function intervalsText(list) {
  if (!list || list.length === 0) return t('closedAllDay');
  return list.map((i) => `${clock(i.from)}–${clock(i.to)}`).join(', ');
}
function reasonText(reason) {
  const map = T[st.lang].reasons || {};
  return map[reason] || reason;
}
function waitText(seconds) {
  if (seconds == null) return t('waitUnknown');
  const minutes = Math.max(1, Math.round(seconds / 60));
  return minutes === 1 ? t('waitOne') : t('waitMinutes', { n: minutes });
}

// ---------------------------------------------------------------- connection

function connect() {
  clearTimeout(retryTimer);
  if (ws) return;
  const url = `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws/citizen`;
  let sock;
  try { sock = new WebSocket(url); } catch { scheduleReconnect(); return; }
  ws = sock;
  sock.onmessage = (e) => {
    let frame;
    try { frame = JSON.parse(e.data); } catch { return; }
    handle(frame);
  };
  sock.onclose = (e) => {
    if (sock === rateSocket) surveyConnectionLost();
    if (ws !== sock) return;
    ws = null;
    welcome = welcome && { ...welcome, stale: true };
    resuming = false;
    reclaiming = false;
    if (e.code === 4001) { showBanner(t('elsewhere'), false); return; }
    if (active()) setLost(true);
    scheduleReconnect();
  };
}
function scheduleReconnect() {
  clearTimeout(retryTimer);
  const delay = Math.min(10000, 400 * 2 ** retry) * (0.75 + Math.random() / 2);
  retry = Math.min(retry + 1, 8);
  retryTimer = setTimeout(connect, delay);
}
function send(frame) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify(frame));
  return true;
}
function ready() { return ws && ws.readyState === WebSocket.OPEN && welcome && !welcome.stale && !resuming; }
function active() { return st.phase === 'queued' || st.phase === 'chatting'; }

function setLost(value) {
  if (lost === value) return;
  lost = value;
  if (value) {
    showBanner(t('connLost'), true);
    announce(t('connLost'));
  } else {
    $('conn-banner').hidden = true;
    announce(t('connBack'));
  }
}
function showBanner(text, withRetry) {
  $('conn-text').textContent = text;
  let btn = $('retry-now');
  if (withRetry && !btn) {
    btn = document.createElement('button');
    btn.type = 'button';
    btn.id = 'retry-now';
    btn.className = 'secondary';
    btn.addEventListener('click', () => { retry = 0; connect(); });
    $('conn-banner').append(btn);
  }
  if (btn) { btn.hidden = !withRetry; btn.textContent = t('retryNow'); }
  $('conn-banner').hidden = false;
}

// ---------------------------------------------------------------- frames

function handle(f) {
  switch (f.type) {
    case 'welcome':
      welcome = f;
      retry = 0;
      maxBytes = f.max_message_bytes || maxBytes;
      if (active() && st.token) {
        resuming = true;
        send({ type: 'resume', token: st.token, last_seq: st.lastSeq });
      } else {
        if (st.phase === 'ended' && st.canRate && st.ratingToken) {
          reclaiming = send({ type: 'resume', token: st.ratingToken, last_seq: st.lastSeq });
        }
        if (lost) setLost(false);
      }
      render();
      break;
    case 'resumed':
      resuming = false;
      st.conversationId = f.conversation_id;
      st.phase = f.state;
      if (f.state === 'queued') { st.position = f.position ?? st.position; st.wait = f.estimated_wait_seconds ?? null; }
      if (f.state === 'chatting' && f.advisor_name) st.advisorName = f.advisor_name;
      setLost(false);
      save();
      if (st.leaveRequested) send({ type: 'leave' });
      flushPending();
      render();
      break;
    case 'refused':
      $('start-button').disabled = false;
      showStartError(t(`refused_${f.code}`) !== `refused_${f.code}` ? t(`refused_${f.code}`) : f.message);
      if (f.code === 'closed') loadHours().then(render);
      break;
    case 'queued':
      st.phase = 'queued';
      st.token = f.resume_token;
      st.conversationId = f.conversation_id;
      st.position = f.position;
      st.wait = f.estimated_wait_seconds;
      lastAnnouncedPosition = f.position;
      save();
      render();
      announce(`${t('queuedAnnounce')} ${t('position', { n: f.position })}`);
      $('message-input').focus();
      flushPending();
      break;
    case 'queue_update':
      st.position = f.position;
      st.wait = f.estimated_wait_seconds;
      save();
      renderQueue();
      if (f.position !== lastAnnouncedPosition) {
        lastAnnouncedPosition = f.position;
        announce(t('position', { n: f.position }));
      }
      break;
    case 'assigned':
      st.phase = 'chatting';
      st.advisorName = f.advisor_name;
      addSystem(t('joined', { name: f.advisor_name }));
      save();
      render();
      announce(t('joined', { name: f.advisor_name }));
      break;
    case 'message':
      addMessage({ seq: f.seq, mine: f.sender === 'citizen', name: f.sender_name || null, text: f.text, at: f.sent_at, cid: f.client_msg_id || null });
      if (f.sender === 'advisor') setTyping(false);
      break;
    case 'ack': {
      const m = st.messages.find((x) => x.cid === f.client_msg_id && x.mine);
      st.lastSeq = Math.max(st.lastSeq, f.seq);
      if (m && m.pending) {
        m.pending = false;
        m.seq = f.seq;
        m.at = f.sent_at;
        updateMessage(m);
      }
      save();
      break;
    }
    case 'typing':
      setTyping(f.active);
      break;
    case 'inactivity_warning':
      $('inactivity').hidden = false;
      $('inactivity').textContent = t('inactivity', { n: Math.max(1, Math.round(f.ends_in_seconds / 60)) });
      announce($('inactivity').textContent);
      break;
    case 'ended':
      if (reclaiming) { surveyReclaimed(f.can_rate === true); break; }
      // Also the answer to a `resume` when the chat ended while the connection was down.
      resuming = false;
      if (lost) { lost = false; $('conn-banner').hidden = true; }
      endChat(f.errand_number, f.reason, f.can_rate === true);
      break;
    case 'rated':
      rateSending = false;
      st.rating = { choice: (st.rating && st.rating.choice) || f.score, score: f.score };
      save();
      surveyNote = { kind: 'ok', key: 'surveyThanks' };
      renderSurvey();
      announce(thanksText(false));
      break;
    case 'server_shutdown':
      showBanner(t('restarting'), false);
      break;
    case 'error':
      onError(f);
      break;
    default:
      break;
  }
}

function onError(f) {
  if (reclaiming && f.code === 'not_found') {
    surveyReclaimed(false);
    return;
  }
  if (resuming && f.code === 'not_found') {
    resuming = false;
    setLost(false);
    endChat(null, 'resume_failed');
    return;
  }
  if (f.client_msg_id) {
    const m = st.messages.find((x) => x.cid === f.client_msg_id && x.pending);
    if (!m) return;
    if (f.code === 'storage_failed' || f.code === 'rate_limited' || f.code === 'shutting_down') {
      setTimeout(() => { if (m.pending && ready()) send({ type: 'message', client_msg_id: m.cid, text: m.text }); }, 1500);
      return;
    }
    m.pending = false;
    m.failed = true;
    updateMessage(m);
    save();
    // A chat sent back to the queue has had an advisor: the chat's own limit is the one met.
    const waitingFirst = st.phase === 'queued' && !st.advisorName;
    const why = { invalid_field: 'tooLong', conversation_full: waitingFirst ? 'queueFull' : 'chatFull' };
    showSendError(t(why[f.code] || 'sendFailed'));
    return;
  }
  if (rateSending && st.phase === 'ended') {
    // The only request this page sends after `ended` is `rate`.
    rateSending = false;
    const hadFocus = $('survey-form').contains(document.activeElement);
    if (f.code === 'invalid_state') { rateSocket = null; st.ratingToken = null; save(); } // nothing more to rate
    surveyNote = { kind: 'error', key: f.code === 'invalid_state' ? 'surveyClosed' : f.code === 'invalid_field' ? 'surveyInvalid' : 'surveyFailed' };
    renderSurvey();
    announce(t(surveyNote.key));
    if (hadFocus && $('survey-form').hidden) $('survey-note').focus();
    return;
  }
  if (st.phase === 'idle') {
    // The answer to a `start`: say why it did not start.
    $('start-button').disabled = false;
    showStartError(t(f.code === 'too_many_chats' ? 'tooManyChats' : 'startFailed'));
  }
}

function endChat(errand, reason, canRate = false) {
  st.phase = 'ended';
  st.errand = errand;
  st.endReason = reason;
  st.canRate = canRate;
  st.rating = canRate ? { choice: null, score: null } : null;
  st.ratingToken = canRate ? st.token : null;
  rateSocket = canRate ? ws : null;
  rateOffered = canRate;
  rateSending = false;
  surveyNote = null;
  st.token = null;
  st.leaveRequested = false;
  for (const m of st.messages) if (m.pending) { m.pending = false; m.failed = true; }
  setTyping(false);
  save();
  render();
  announce(`${t('endedHeading')}. ${errand ? `${t('errandNumber')} ${errand}` : ''}`);
  $('ended-heading').focus();
}

// ---------------------------------------------------------------- messages

function addSystem(text) {
  const m = { system: true, text, at: new Date().toISOString(), seq: null, key: `s${Date.now()}${Math.random()}` };
  st.messages.push(m);
  appendLi(m);
}
function addMessage(m) {
  if (m.seq != null && st.messages.some((x) => x.seq === m.seq && !x.system)) return;
  if (m.mine && m.cid) {
    const own = st.messages.find((x) => x.cid === m.cid && x.mine);
    if (own) {
      own.pending = false;
      own.seq = m.seq;
      own.at = m.at;
      updateMessage(own);
      st.lastSeq = Math.max(st.lastSeq, m.seq);
      save();
      return;
    }
  }
  st.messages.push(m);
  st.lastSeq = Math.max(st.lastSeq, m.seq || 0);
  save();
  appendLi(m);
}
function liFor(m) {
  const li = document.createElement('li');
  li.dataset.key = m.system ? m.key : m.cid || `seq${m.seq}`;
  if (m.system) {
    li.className = 'msg system';
    li.textContent = m.text;
    return li;
  }
  li.className = `msg ${m.mine ? 'mine' : 'theirs'}`;
  const meta = document.createElement('span');
  meta.className = 'meta';
  meta.textContent = `${m.mine ? t('you') : m.name || t('advisor')}${m.at ? `, ${timeOf(new Date(m.at))}` : ''}`;
  const text = document.createElement('p');
  text.className = 'text';
  text.textContent = m.text;
  li.append(meta, text);
  if (m.pending) li.dataset.pending = '1';
  if (m.pending || m.failed) {
    const p = document.createElement('span');
    p.className = 'pending';
    p.textContent = m.failed ? t('notSent') : t('sending');
    li.append(p);
  }
  return li;
}
function appendLi(m) {
  const list = $('messages');
  // Stored messages arrive in seq order; ones still waiting for their ack stay last.
  const before = m.pending ? null : [...list.children].find((el) => el.dataset.pending === '1') || null;
  list.insertBefore(liFor(m), before);
  scrollLog();
}
function updateMessage(m) {
  const el = [...$('messages').children].find((x) => x.dataset.key === m.cid);
  if (el) keepingLogEnd(() => el.replaceWith(liFor(m)));
}
/** Runs `change`, and if the log showed its newest line before, shows it after too. */
function keepingLogEnd(change) {
  const log = $('log');
  const atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 8;
  change();
  if (atEnd) scrollLog();
}
function rebuildLog() {
  const list = $('messages');
  list.replaceChildren(...st.messages.map(liFor));
  scrollLog();
}
function scrollLog() {
  const log = $('log');
  log.scrollTop = log.scrollHeight;
}
function setTyping(on) {
  $('typing').textContent = on ? t('typing', { name: st.advisorName || t('advisor') }) : '';
}
function randomId() {
  const b = new Uint8Array(12);
  crypto.getRandomValues(b);
  return `c-${[...b].map((x) => x.toString(16).padStart(2, '0')).join('')}`;
}
function flushPending() {
  if (!ready()) return;
  for (const m of st.messages) if (m.pending) send({ type: 'message', client_msg_id: m.cid, text: m.text });
}

// ---------------------------------------------------------------- views

function show(id) {
  for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== id;
}
function render() {
  applyI18n();
  $('close-widget').hidden = !embedded;
  if (st.phase === 'ended') return renderEnded();
  if (active()) return renderChat();
  if (welcome) {
    if (!welcome.opening.open && !welcome.opening.accepting) return renderClosed();
    return renderStart();
  }
  if (hours && !hours.open_now) return renderClosed();
  show('view-loading');
}
function notice() {
  const n = (welcome && welcome.notice) || (hours && hours.contact) || {};
  return n;
}
function renderClosed() {
  show('view-closed');
  const n = notice();
  const op = welcome && welcome.opening;
  const reasonCode = hours ? hours.reason_code : op && op.reason_code;
  const reason = hours ? hours.reason : op && op.reason;
  $('closed-reason').textContent = reasonCode === 'holiday' || reasonCode === 'exception' ? t('closedToday', { reason: reasonText(reason) }) : '';
  $('closed-reason').hidden = !$('closed-reason').textContent;
  $('closed-next').textContent = nextOpeningText((hours && hours.next_opening) || (op && op.next_opening));
  $('closed-today').textContent = hours ? intervalsText(hours.intervals) : '…';
  const devs = (hours && hours.deviations) || [];
  $('closed-deviations-wrap').hidden = devs.length === 0;
  $('closed-deviations').replaceChildren(...devs.map((d) => {
    const li = document.createElement('li');
    const date = new Date(`${d.date}T12:00:00Z`);
    li.textContent = `${dayName(date, true)}: ${d.open ? intervalsText(d.intervals) : t('closedWord')} (${reasonText(d.reason)})`;
    return li;
  }));
  const phone = n.phone || '';
  $('closed-phone').textContent = phone;
  $('closed-phone').href = `tel:${phone.replace(/[^0-9+]/g, '')}`;
  $('closed-address').textContent = n.visiting_address || '';
}
function renderStart() {
  show('view-start');
  const n = notice();
  $('public-record-text').textContent = n.public_record_notice || '';
  const link = $('privacy-link');
  if (n.privacy_policy_url) link.href = n.privacy_policy_url;
  link.hidden = !n.privacy_policy_url;
  $('start-hours').textContent = hours ? `${t('todayHours')}: ${intervalsText(hours.intervals)}` : '';
  const op = welcome.opening;
  $('not-accepting').hidden = op.accepting;
  if (!op.accepting) $('not-accepting').textContent = t('notAccepting', { phone: n.phone || '' });
}
function renderQueue() {
  const queued = st.phase === 'queued';
  $('queue-panel').hidden = !queued;
  if (queued) {
    $('queue-position').textContent = st.position != null ? t('position', { n: st.position }) : t('queuedAnnounce');
    $('queue-wait').textContent = `${t('estimatedWait')}: ${waitText(st.wait)}`;
  }
}
function renderChat() {
  const wasHidden = $('view-chat').hidden;
  show('view-chat');
  if (wasHidden) rebuildLog();
  renderQueue();
  const chatting = st.phase === 'chatting';
  $('advisor-line').hidden = !chatting;
  if (chatting) $('advisor-line').textContent = t('chattingWith', { name: st.advisorName || t('advisor') });
  $('leave-button').hidden = chatting;
  $('end-button').hidden = !chatting || !$('end-confirm').hidden;
}
function renderEnded() {
  show('view-ended');
  const reasons = T[st.lang].endReasons;
  $('ended-reason').textContent = reasons[st.endReason] || '';
  $('errand-line').hidden = !st.errand;
  $('errand-number').textContent = st.errand || '';
  $('ended-public').textContent = st.errand ? t('publicAfter') : '';
  $('transcript').replaceChildren(...st.messages.map(liFor));
  $('save-button').hidden = st.messages.length === 0;
  $('print-button').hidden = st.messages.length === 0;
  renderSurvey();
}
function surveyOpen() { return rateSocket !== null && ws === rateSocket && ws.readyState === WebSocket.OPEN; }
function renderSurvey() {
  const rated = Boolean(st.rating && st.rating.score != null);
  // The form shows while the chat can still be rated: on the connection that
  // may rate, or between connections once this page has offered it (a
  // reloaded page waits for the server's answer). When the window has passed
  // the form goes; a rating already given is still thanked for.
  const usable = st.phase === 'ended' && st.canRate && Boolean(st.ratingToken) && (rateSocket !== null || rateOffered);
  const note = surveyNote || (rated ? { kind: 'ok', key: 'surveyThanks' } : null);
  $('survey').hidden = !(st.phase === 'ended' && st.canRate && (usable || note));
  $('survey-form').hidden = !usable;
  const choice = st.rating ? st.rating.choice : null;
  for (const r of $('survey-form').elements.score) r.checked = Number(r.value) === choice;
  const el = $('survey-note');
  el.hidden = !note;
  el.className = `notice survey-note ${note ? note.kind : ''}`;
  el.textContent = !note ? '' : note.key === 'surveyThanks' ? thanksText(usable) : t(note.key);
  const fieldset = $('survey-form').querySelector('fieldset');
  if (note && note.kind === 'error') fieldset.setAttribute('aria-describedby', 'survey-note');
  else fieldset.removeAttribute('aria-describedby');
}
function thanksText(canChange) {
  const score = st.rating && st.rating.score;
  const given = score >= 1 && score <= 5 ? ` ${t('surveyGiven', { score: t(`score${score}`) })}` : '';
  return `${t('surveyThanks')}${given}${canChange ? ` ${t('surveyChange')}` : ''}`;
}
function surveyError(key) {
  surveyNote = { kind: 'error', key };
  renderSurvey();
  announce(t(key));
}
/**
 * The connection that could send the rating is gone. The form stays: the next
 * connection asks for the survey again (`surveyReclaimed`). A rating that was
 * on its way may not have been stored, so it says so.
 */
function surveyConnectionLost() {
  rateSocket = null;
  if (rateSending) {
    rateSending = false;
    if (st.phase === 'ended' && st.canRate) surveyError('surveyNoConnection');
  }
}
/** The server's answer to the page asking for the ended chat's survey again. */
function surveyReclaimed(canRate) {
  reclaiming = false;
  if (st.phase !== 'ended' || !st.canRate || !st.ratingToken) return; // a new chat was started meanwhile
  const hadFocus = $('survey-form').contains(document.activeElement);
  if (canRate) {
    rateSocket = ws;
    rateOffered = true;
    if (surveyNote && surveyNote.key === 'surveyNoConnection') surveyNote = null;
    renderSurvey();
    return;
  }
  // Too late: the chat can no longer be rated.
  st.ratingToken = null;
  rateSocket = null;
  save();
  const rated = Boolean(st.rating && st.rating.score != null);
  const wasShown = rateOffered;
  surveyNote = rated ? { kind: 'ok', key: 'surveyThanks' } : wasShown ? { kind: '', key: 'surveyClosed' } : null;
  renderSurvey();
  if (wasShown && !rated) announce(t('surveyClosed'));
  if (hadFocus && !$('survey-note').hidden) $('survey-note').focus();
}
function showStartError(text) {
  $('start-error').textContent = text;
  $('start-error').hidden = false;
  announce(text);
}
function showSendError(text) {
  // The notice takes room from the log: keep its newest line (often the message that failed) in view.
  keepingLogEnd(() => {
    $('send-error').textContent = text;
    $('send-error').hidden = false;
  });
  announce(text);
}

// ---------------------------------------------------------------- actions

function transcriptText() {
  const lines = [`${t('title')} — ${notice().organisation || ''}`];
  if (st.errand) lines.push(`${t('errandNumber')} ${st.errand}`);
  lines.push('');
  for (const m of st.messages) {
    const when = m.at ? `${dayKey(new Date(m.at))} ${timeOf(new Date(m.at))}` : '';
    lines.push(m.system ? `[${when}] ${m.text}` : `[${when}] ${m.mine ? t('you') : m.name || t('advisor')}: ${m.text}`);
  }
  return `${lines.join('\n')}\n`;
}

function wire() {
  $('lang-switch').addEventListener('click', () => {
    st.lang = st.lang === 'sv' ? 'en' : 'sv';
    st.langChosen = true;
    save();
    render();
    if (!$('view-chat').hidden) rebuildLog();
    announce(t('langChanged'));
  });
  $('close-widget').addEventListener('click', () => window.parent.postMessage({ kommunchat: 'close' }, '*'));
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && embedded && $('end-confirm').hidden) window.parent.postMessage({ kommunchat: 'close' }, '*');
  });
  window.addEventListener('message', (e) => {
    if (e.source === window.parent && e.data && e.data.kommunchat === 'focus') $('title').focus();
  });
  $('start-form').addEventListener('submit', (e) => {
    e.preventDefault();
    $('start-error').hidden = true;
    const frame = { type: 'start', language: st.lang };
    const name = $('name-input').value.trim();
    const topic = $('topic-input').value.trim();
    if (name) frame.display_name = name;
    if (topic) frame.topic = topic;
    if (!ready() || !send(frame)) { showStartError(t('noConnection')); return; }
    $('start-button').disabled = true;
    setTimeout(() => { $('start-button').disabled = false; }, 3000);
  });
  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    sendMessage();
  });
  $('message-input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); sendMessage(); }
  });
  $('message-input').addEventListener('input', () => {
    if (st.phase !== 'chatting') return;
    if (!typingSent) typingSent = send({ type: 'typing', active: true });
    clearTimeout(typingTimer);
    typingTimer = setTimeout(stopTyping, 3000);
  });
  $('leave-button').addEventListener('click', () => {
    st.leaveRequested = true;
    save();
    if (ready()) send({ type: 'leave' });
  });
  $('end-button').addEventListener('click', () => {
    $('end-confirm').hidden = false;
    $('end-button').hidden = true;
    $('end-yes').focus();
  });
  $('end-no').addEventListener('click', () => {
    $('end-confirm').hidden = true;
    $('end-button').hidden = false;
    $('end-button').focus();
  });
  $('end-yes').addEventListener('click', () => {
    $('end-confirm').hidden = true;
    st.leaveRequested = true;
    save();
    if (ready()) send({ type: 'leave' });
  });
  $('survey-form').addEventListener('change', (e) => {
    if (e.target.name !== 'score' || !st.rating) return;
    st.rating.choice = Number(e.target.value);
    save();
    if (surveyNote && surveyNote.key === 'surveyChoose') { surveyNote = null; renderSurvey(); }
  });
  $('survey-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const picked = $('survey-form').querySelector('input[name=score]:checked');
    if (!picked) { surveyError('surveyChoose'); return; }
    if (!surveyOpen() || !send({ type: 'rate', score: Number(picked.value) })) { surveyError('surveyNoConnection'); return; }
    rateSending = true;
    if (surveyNote && surveyNote.kind === 'error') { surveyNote = null; renderSurvey(); }
  });
  $('print-button').addEventListener('click', () => window.print());
  $('save-button').addEventListener('click', () => {
    const blob = new Blob([transcriptText()], { type: 'text/plain;charset=utf-8' });
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = `chatt-${st.errand || 'kommunchat'}.txt`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  });
  $('new-chat-button').addEventListener('click', () => {
    st = { ...fresh(st.lang), langChosen: st.langChosen };
    save();
    rateSocket = null;
    rateSending = false;
    rateOffered = false; // an unanswered `resume` for the survey finds the phase changed
    surveyNote = null;
    $('messages').replaceChildren();
    $('inactivity').hidden = true;
    $('send-error').hidden = true;
    render();
    if (!ws) connect();
    $('start-heading').focus();
  });
  window.addEventListener('online', () => { retry = 0; if (!ws) connect(); });
}
function stopTyping() {
  clearTimeout(typingTimer);
  if (typingSent) send({ type: 'typing', active: false });
  typingSent = false;
}
function sendMessage() {
  const input = $('message-input');
  const text = input.value.trim();
  $('send-error').hidden = true;
  if (!text || !active()) return;
  if (new TextEncoder().encode(text).length > maxBytes) { showSendError(t('tooLong')); return; }
  const m = { cid: randomId(), mine: true, text, pending: true, seq: null, at: null, name: null };
  st.messages.push(m);
  save();
  appendLi(m);
  input.value = '';
  stopTyping();
  if (ready()) send({ type: 'message', client_msg_id: m.cid, text });
}

async function loadHours() {
  try {
    const r = await fetch('/api/v1/hours', { headers: { accept: 'application/json' } });
    if (r.ok) hours = await r.json();
  } catch { /* the socket's welcome has the essentials */ }
}

wire();
render();
connect();
loadHours().then(render);
