#!/usr/bin/env bash
# The web pages in a real browser: Chromium (Debian's) driven by playwright-core,
# checked with axe-core. Each scenario starts its own kommunchat server.
# Called by ./test.sh as its last step; works on a fresh machine as root.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

if [ ! -x /usr/bin/chromium ]; then
  echo "run.sh: installing Debian's chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y chromium
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "run.sh: installing Node.js and npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y nodejs npm
fi

(cd "$here" && npm ci --no-audit --no-fund)

(cd "$repo" && cargo build --locked)
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$repo/$target" ;; esac
export KC_SERVER_BIN="$target/debug/kommunchat"

cd "$here"
exec node --test --test-concurrency=1 --test-timeout=120000 ./*.test.mjs
