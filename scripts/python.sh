#!/usr/bin/env bash
# The Python the end-to-end tests drive peers with (aiosmtpd as the SMTP
# server, pyotp for TOTP codes, Authlib and PyJWT as an OAuth client), in
# a virtual environment of the project's own, installed from PyPI at the
# versions pinned in tests/peers/requirements.txt. Sourced by
# scripts/test.sh; exports ACCOUNTABLE_TEST_PYTHON.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.data/venv"
REQUIREMENTS="$ROOT/tests/peers/requirements.txt"

if [[ ! -x "$VENV/bin/python" ]]; then
  printf '[python] creating %s\n' "$VENV" >&2
  python3 -m venv "$VENV"
fi
if ! cmp -s "$REQUIREMENTS" "$VENV/installed.txt"; then
  printf '[python] installing %s\n' "$REQUIREMENTS" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
  cp "$REQUIREMENTS" "$VENV/installed.txt"
fi
export ACCOUNTABLE_TEST_PYTHON="$VENV/bin/python"
