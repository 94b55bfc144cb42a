#!/usr/bin/env bash
# Runs every check and test: formatting, lints, then the unit tests and the
# end-to-end tests against real PostgreSQL and a real Kafka broker, which it
# provisions when missing, and passkeys in Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/stack.sh
source scripts/python.sh
source scripts/browser.sh
source scripts/web.sh
# Each test makes a database of its own; drop those of earlier runs.
if command -v psql >/dev/null 2>&1; then
  admin_url="${DATABASE_URL%/*}/postgres"
  for db in $(psql "$admin_url" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'accountable\_test\_%'"); do
    psql "$admin_url" -qc "DROP DATABASE \"$db\" WITH (FORCE)"
  done
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
scripts/check-walls.sh
# A failing test's message, not a backtrace of the runtime, ends its report.
RUST_BACKTRACE=0 cargo test --workspace --locked
