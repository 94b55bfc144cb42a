#!/usr/bin/env bash
# The soak run, before a release: ten minutes of steady commands against
# `serve`, `relay` and `project` processes (ACCOUNTABLE_LOAD_SECONDS to
# change the length). It is left out of scripts/test.sh, which stays short.
# Give it a freshly started broker and nothing else heavy on the machine:
# it asserts bounded lag, which a busy machine can break.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/stack.sh
cargo test --locked --test api -- --ignored --exact \
  load::steady_commands_for_ten_minutes_fail_none_grow_no_memory_and_keep_lag_bounded
