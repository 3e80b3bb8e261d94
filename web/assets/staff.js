// Shared by the advisor console and the admin dashboard: sign-in, JSON calls, announcements.

export const $ = (sel, root = document) => root.querySelector(sel);

export class HttpError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** A JSON call to the API; throws HttpError with the server's code and message. */
export async function api(method, path, body) {
  const init = { method, headers: { accept: 'application/json' }, credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  if (r.status === 204) return null;
  let data = null;
  try { data = await r.json(); } catch { /* not JSON */ }
  if (!r.ok) {
    const e = (data && data.error) || {};
    throw new HttpError(r.status, e.code || String(r.status), e.message || r.statusText);
  }
  return data;
}

export function announce(text, assertive = false) {
  const el = document.getElementById(assertive ? 'alert' : 'announcer');
  el.textContent = '';
  setTimeout(() => { el.textContent = text; }, 50);
}

/** "2 min 5 s", "45 s". */
export function duration(seconds) {
  if (seconds == null) return '–';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function clockTime(iso) {
  if (!iso) return '';
  return new Intl.DateTimeFormat('sv-SE', { timeZone: 'Europe/Stockholm', hour: '2-digit', minute: '2-digit' })
    .format(new Date(iso)).replace(':', '.');
}

export function randomId(prefix) {
  const b = new Uint8Array(12);
  crypto.getRandomValues(b);
  return `${prefix}-${[...b].map((x) => x.toString(16).padStart(2, '0')).join('')}`;
}

/**
 * Shows the sign-in form until someone with one of `roles` is signed in,
 * then calls `onUser(user)`. Returns a function that signs out.
 */
export function session({ roles, onUser, onSignOut }) {
  const view = $('#login-view');
  const form = $('#login-form');
  const error = $('#login-error');
  const bar = $('#user-bar');

  function showLogin(message) {
    view.hidden = false;
    bar.hidden = true;
    error.hidden = !message;
    error.textContent = message || '';
    $('#login-heading').focus();
  }
  function signedIn(user) {
    if (!roles.includes(user.role)) {
      showLogin('Ditt konto har inte behörighet till den här sidan.');
      return;
    }
    view.hidden = true;
    bar.hidden = false;
    $('#user-name').textContent = `${user.display_name} (${user.username})`;
    onUser(user);
  }
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    const username = $('#login-user').value.trim();
    const password = $('#login-pass').value;
    if (!username || !password) {
      error.textContent = 'Fyll i användarnamn och lösenord.';
      error.hidden = false;
      return;
    }
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const user = await api('POST', '/api/v1/login', { username, password });
      $('#login-pass').value = '';
      signedIn(user);
    } catch (err) {
      error.textContent = err.status === 401
        ? 'Fel användarnamn eller lösenord.'
        : err.status === 429 ? 'För många försök. Vänta en stund och försök igen.' : 'Inloggningen misslyckades. Försök igen.';
      error.hidden = false;
      $('#login-pass').focus();
    } finally {
      button.disabled = false;
    }
  });
  $('#logout').addEventListener('click', async () => {
    try { await api('POST', '/api/v1/logout'); } catch { /* signed out anyway */ }
    if (onSignOut) onSignOut();
    showLogin('Du är utloggad.');
  });

  api('GET', '/api/v1/me').then(signedIn, () => showLogin());
  return {
    expired() {
      if (onSignOut) onSignOut();
      showLogin('Din inloggning har upphört. Logga in igen.');
    },
  };
}
