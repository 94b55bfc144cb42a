#!/usr/bin/env bash
# Builds the account pages and the console (web/) into web/dist, which the
# accountable binary embeds: Vite and the front-end packages from npm at
# the versions pinned in web/package-lock.json. Sourced by scripts/run.sh,
# scripts/test.sh and scripts/bench.sh before cargo builds; it rebuilds only
# when a source is newer than the last build, so that cargo does not
# rebuild the crate for nothing.
set -euo pipefail

WEB="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/web"

if ! command -v node >/dev/null 2>&1; then
  printf '[web] Node.js 20 or later is needed (Debian: apt-get install nodejs npm)\n' >&2
  exit 1
fi
if ! cmp -s "$WEB/package-lock.json" "$WEB/node_modules/installed-lock.json"; then
  printf '[web] installing the front-end toolchain\n' >&2
  npm ci --prefix "$WEB" --no-audit --no-fund --silent
  cp "$WEB/package-lock.json" "$WEB/node_modules/installed-lock.json"
fi
stamp="$WEB/dist/.built"
if [[ ! -f "$stamp" ]] || [[ -n "$(find "$WEB/src" "$WEB/account" "$WEB/console" "$WEB/vite.config.js" "$WEB/public" \
  "$WEB/package-lock.json" -newer "$stamp" -print -quit)" ]]; then
  printf '[web] building the pages\n' >&2
  (cd "$WEB" && npx --no-install vite build --logLevel warn)
  touch "$stamp"
fi
