#!/usr/bin/env bash
# Install what the agent sandbox (tasks_lib/agents/sandbox.py) runs: Debian's bubblewrap at
# /usr/bin/bwrap. Idempotent: returns at once when bwrap is on PATH. The sandbox tests
# (tests/faults/test_sandbox_faults.py) fail in CI without it, and skip elsewhere.
set -euo pipefail

if ! command -v bwrap >/dev/null; then
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  start=$(date +%s)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    bubblewrap >/dev/null
  echo "bubblewrap installed in $(( $(date +%s) - start )) s"
fi
command -v bwrap >/dev/null || { echo "install-sandbox: bwrap missing after apt-get install" >&2; exit 1; }
echo "sandbox ready: $(bwrap --version)"
