#!/usr/bin/env bash
# The web pages in real browsers, checked with axe-core: Debian's chromium (over
# CDP) and Debian's firefox-esr (over WebDriver BiDi), driven by playwright-core,
# run every *.test.mjs; WebKit, Safari's engine (WebKitGTK's MiniBrowser over
# classic WebDriver, under Xvfb), runs webkit.wd.mjs. KC_BROWSERS picks which
# ("chromium firefox webkit" by default). Each scenario starts its own server.
# Called by ./test.sh as its last step; works on a fresh machine as root.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
browsers="${KC_BROWSERS:-chromium firefox webkit}"

missing=()
for b in $browsers; do
  case "$b" in
    chromium) [ -x /usr/bin/chromium ] || missing+=(chromium) ;;
    firefox) [ -x /usr/bin/firefox-esr ] || missing+=(firefox-esr) ;;
    webkit)
      command -v WebKitWebDriver >/dev/null || missing+=(webkit2gtk-driver)
      [ -n "${DISPLAY:-}" ] || command -v Xvfb >/dev/null || missing+=(xvfb)
      ;;
    *) echo "run.sh: unknown browser '$b' in KC_BROWSERS (use chromium, firefox, webkit)" >&2; exit 2 ;;
  esac
done
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "run.sh: installing Debian's ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y "${missing[@]}"
fi

(cd "$here" && npm ci --no-audit --no-fund)

(cd "$repo" && cargo build --locked)
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$repo/$target" ;; esac
export KC_SERVER_BIN="$target/debug/kommunchat"

cd "$here"
failed=()
for b in $browsers; do
  echo "run.sh: the browser suite in $b"
  # Tests or steps a browser's driver cannot do are reported as "# SKIP" /
  # "# <browser>: skipped step" with the reason.
  if [ "$b" = webkit ]; then
    # Playwright cannot drive Debian's WebKit: one scenario over WebDriver.
    KC_BROWSER="$b" node --test --test-concurrency=1 --test-timeout=120000 ./webkit.wd.mjs || failed+=("$b")
  else
    KC_BROWSER="$b" node --test --test-concurrency=1 --test-timeout=120000 ./*.test.mjs || failed+=("$b")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "run.sh: the browser suite failed in: ${failed[*]}" >&2
  exit 1
fi
echo "run.sh: the browser suite passed in: $browsers"
