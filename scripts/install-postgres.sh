#!/usr/bin/env bash
# Install what `tgflow server --postgres` and tests/flows/test_postgres_server.py run (the
# private cluster of flows/postgres.py): Debian's postgresql, whose initdb/postgres/pg_ctl live
# under /usr/lib/postgresql/<version>/bin, off PATH. Idempotent: returns at once when they are
# there. Also makes sure the `postgres` user exists: Postgres refuses to run as root, so as
# root flows/postgres.py runs the cluster as that user. The test fails in CI without them, and
# skips elsewhere.
set -euo pipefail

find_bin() {
  local found
  found=$(command -v initdb 2>/dev/null || true)
  # A link on PATH (to /usr/lib/postgresql/...) stands for its target's folder, which has psql.
  if [[ -n $found ]]; then dirname "$(readlink -f "$found")"; return; fi
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -n $found && -x $found/initdb && -x $found/pg_ctl ]]; then echo "$found"; fi
}

if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
bin=$(find_bin)
if [[ -z $bin ]]; then
  start=$(date +%s)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    postgresql >/dev/null
  echo "postgresql installed in $(( $(date +%s) - start )) s"
  bin=$(find_bin)
fi
[[ -n $bin ]] || { echo "install-postgres: initdb/pg_ctl missing after apt-get install" >&2; exit 1; }
if ! getent passwd postgres >/dev/null; then
  $SUDO useradd --system --no-create-home --shell /usr/sbin/nologin postgres
  echo "user postgres created"
fi
echo "postgres ready: $("$bin/postgres" --version) in $bin (user postgres: uid $(id -u postgres))"
