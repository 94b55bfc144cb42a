#!/usr/bin/env bash
# Runs Accountable for development: provisions PostgreSQL and a broker when
# missing, then serves GraphQL, relays, projects and mails in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/stack.sh
source scripts/web.sh
cargo build --locked --bin accountable
addr="${ACCOUNTABLE_HTTP_ADDR:-127.0.0.1:8080}"
printf '\nGraphiQL: http://%s/graphql\n' "$addr"
printf 'Account pages: http://%s/account/   Console (admins, auditors): http://%s/console/\n' "$addr" "$addr"
if [[ -z "${ACCOUNTABLE_SMTP_URL:-}" ]]; then
  printf 'Mail (no ACCOUNTABLE_SMTP_URL): .eml files in %s\n' "${ACCOUNTABLE_MAIL_DIR:-.data/mail}"
fi
printf '\n'
exec target/debug/accountable dev
