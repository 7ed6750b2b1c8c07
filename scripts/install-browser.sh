#!/usr/bin/env bash
# Install what the browser tests (tests/ui/test_ui_*.py) drive: Debian's chromium at
# /usr/bin/chromium and PyPI playwright in the venv. Idempotent: returns at once when both
# are there. Never runs `playwright install`: it downloads a browser build of its own, which
# cannot be fetched on this network; playwright drives Debian's chromium instead.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
CHROMIUM=/usr/bin/chromium

if [[ ! -x $CHROMIUM ]]; then
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  start=$(date +%s)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    chromium fonts-liberation >/dev/null
  echo "chromium installed in $(( $(date +%s) - start )) s"
fi
[[ -x $CHROMIUM ]] || { echo "install-browser: $CHROMIUM missing after apt-get install" >&2; exit 1; }

if ! "$VENV/bin/python" -c "import playwright" 2>/dev/null; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "playwright>=1.45"
fi
echo "browser ready: $($CHROMIUM --version 2>/dev/null | head -1)"
