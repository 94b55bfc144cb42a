#!/usr/bin/env bash
# What the passkey tests drive: Debian's Chromium (installed with apt-get
# when missing) and playwright-core from npm at the version pinned in
# tests/browser/package-lock.json (it downloads no browser). Sourced by
# scripts/test.sh; exports ACCOUNTABLE_TEST_CHROMIUM.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BROWSER_TESTS="$ROOT/tests/browser"

if [[ ! -x /usr/bin/chromium ]]; then
  printf '[browser] installing Debian chromium\n' >&2
  as_root=()
  [[ "$(id -u)" == 0 ]] || as_root=(sudo)
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null ||
    { "${as_root[@]}" apt-get update -q >/dev/null &&
      "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }
fi
if ! command -v node >/dev/null 2>&1; then
  printf '[browser] Node.js is needed (Debian: apt-get install nodejs npm)\n' >&2
  exit 1
fi
if ! cmp -s "$BROWSER_TESTS/package-lock.json" "$BROWSER_TESTS/node_modules/installed-lock.json"; then
  printf '[browser] installing playwright-core\n' >&2
  npm ci --prefix "$BROWSER_TESTS" --no-audit --no-fund --silent
  cp "$BROWSER_TESTS/package-lock.json" "$BROWSER_TESTS/node_modules/installed-lock.json"
fi
export ACCOUNTABLE_TEST_CHROMIUM=/usr/bin/chromium
