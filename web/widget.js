/* kommunchat widget: <script src="https://HOST/widget.js" defer></script>
   Adds a launcher button (in a shadow root, so the host page's CSS
   cannot reach it) that opens the chat in an iframe from kommunchat's origin. */
(function () {
  var me = document.currentScript, d = document;
  if (!me || window.__kommunchat) return;
  window.__kommunchat = 1;
  var origin = new URL(me.src).origin;
  var en = /^en/i.test(d.documentElement.lang || '');
  var KEY = 'kommunchat-open';
  var host = d.createElement('div');
  var root = host.attachShadow({ mode: 'open' });
  var css = ':host{all:initial}' +
    'button{position:fixed;right:1rem;bottom:1rem;z-index:2147483000;font:600 1rem/1.2 system-ui,sans-serif;' +
    'color:#fff;background:#0b4f8a;border:2px solid #fff;border-radius:2rem;padding:.8rem 1.2rem;cursor:pointer;' +
    'box-shadow:0 2px 8px rgba(0,0,0,.35);min-height:44px}' +
    'button:hover{background:#083a66}button:focus-visible{outline:3px solid #b3470f;outline-offset:3px}' +
    'iframe{position:fixed;right:1rem;bottom:5rem;z-index:2147483001;width:400px;height:640px;' +
    'max-width:calc(100vw - 2rem);max-height:calc(100vh - 6rem);border:1px solid #6b7178;border-radius:.5rem;' +
    'background:#fff;box-shadow:0 4px 24px rgba(0,0,0,.3)}' +
    '@media (max-width:480px),(max-height:500px){iframe{inset:0;width:100%;height:100%;max-width:none;max-height:none;border:0;border-radius:0}}' +
    '[hidden]{display:none!important}';
  try {
    var sheet = new CSSStyleSheet();
    sheet.replaceSync(css);
    root.adoptedStyleSheets = [sheet];
  } catch (e) {
    var style = d.createElement('style');
    style.textContent = css;
    root.appendChild(style);
  }
  var button = d.createElement('button');
  button.type = 'button';
  button.textContent = en ? 'Chat with us' : 'Chatta med oss';
  button.setAttribute('aria-expanded', 'false');
  root.appendChild(button);
  var frame = null;

  function remember(v) { try { sessionStorage.setItem(KEY, v); } catch (e) { /* not kept */ } }
  function open(focus) {
    if (!frame) {
      frame = d.createElement('iframe');
      frame.src = origin + '/chat?embed=1&lang=' + (en ? 'en' : 'sv');
      frame.title = en ? 'Chat with the municipality' : 'Chatta med kommunen';
      frame.setAttribute('allow', 'clipboard-write');
      root.appendChild(frame);
      frame.addEventListener('load', function () { if (focus) post('focus'); });
    } else if (focus) post('focus');
    frame.hidden = false;
    button.setAttribute('aria-expanded', 'true');
    if (focus) frame.focus();
    remember('1');
  }
  function close() {
    if (frame) frame.hidden = true;
    button.setAttribute('aria-expanded', 'false');
    remember('0');
    button.focus();
  }
  function post(what) { frame.contentWindow.postMessage({ kommunchat: what }, origin); }
  button.addEventListener('click', function () {
    if (frame && !frame.hidden) close(); else open(true);
  });
  window.addEventListener('message', function (e) {
    if (e.origin === origin && frame && e.source === frame.contentWindow && e.data && e.data.kommunchat === 'close') close();
  });
  d.body.appendChild(host);
  try { if (sessionStorage.getItem(KEY) === '1') open(false); } catch (e) { /* closed */ }
})();
