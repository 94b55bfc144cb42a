#!/usr/bin/env bash
# Runs the benchmark: provisions PostgreSQL and a broker when missing, builds
# the release binaries, and measures; results go to bench/results/. Extra
# arguments go to accountable-bench (e.g. --seconds 3 --backlog 20000).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/stack.sh
cargo build --locked --release -p accountable -p accountable-bench
exec target/release/accountable-bench "$@"
