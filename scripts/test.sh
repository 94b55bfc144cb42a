#!/usr/bin/env bash
# Runs every check and test: formatting, lints, then the unit tests and the
# end-to-end tests against real PostgreSQL and a real Kafka broker, which it
# provisions when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/stack.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
