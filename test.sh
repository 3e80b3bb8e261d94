#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, unit tests, and the
# integration tests against real servers with SQLite and PostgreSQL.
# This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")"

# The PostgreSQL tests need a server on 127.0.0.1:5432 (trust auth).
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "test.sh: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
  fi
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo nextest run --all-targets --locked --no-fail-fast

# The benchmark harness in its short smoke mode: proves the load generator
# works end to end (a failed run is one that lost, doubled or missed
# something); no timing is judged here.
cargo build --bins --locked
target/debug/kommunchat-bench --smoke --server target/debug/kommunchat --out target/bench-smoke
# The relay once more with the server on PostgreSQL (a scratch database,
# dropped afterwards).
target/debug/kommunchat-bench --smoke --only relay --server target/debug/kommunchat \
  --postgres "${KOMMUNCHAT_TEST_PG:-postgres://postgres@127.0.0.1:5432}/postgres" --out target/bench-smoke-pg

# The web pages in a real browser (Chromium via playwright-core), with axe-core.
./tests/browser/run.sh
