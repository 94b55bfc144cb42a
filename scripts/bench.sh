#!/usr/bin/env bash
# Runs the benchmark: provisions PostgreSQL and a broker when missing, builds
# the release binaries and the peers (PostGraphile 4 from npm, at the
# version bench/peers/package-lock.json pins), and measures; results go to
# bench/results/. Extra arguments go to accountable-bench (e.g. --seconds 3
# --backlog 20000).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/stack.sh
source scripts/web.sh
cargo build --locked --release -p accountable -p accountable-bench
if ! cmp -s bench/peers/package-lock.json bench/peers/node_modules/installed-lock.json; then
  npm ci --prefix bench/peers --no-audit --no-fund --silent
  cp bench/peers/package-lock.json bench/peers/node_modules/installed-lock.json
fi
exec target/release/accountable-bench "$@"
