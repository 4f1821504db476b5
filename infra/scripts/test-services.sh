#!/usr/bin/env bash
# Run a command with the local services the test suite uses:
#   - PostgreSQL: the installed cluster (pg_ctlcluster, as root) or a throwaway initdb cluster
#     in a temp dir (as any other user); exports LAB_TEST_PG_URL.
#   - Prometheus: Debian's binary, installed here when missing and we are root; tests start
#     their own instance on a free port.
# Anything that cannot be had is reported; the tests that need it then skip with the reason,
# unless LAB_REQUIRE_SERVICES=1 (CI), where they fail instead.
set -uo pipefail

log() { echo "[test-services] $*" >&2; }
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)

apt_install() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
  [ -n "${_apt_updated:-}" ] || { apt-get update -qq >/dev/null 2>&1; _apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
}

if [ -z "${LAB_TEST_PG_URL:-}" ]; then
  [ -n "$pg_bin" ] || { log "installing postgresql"; apt_install postgresql; pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1); }
  if [ "$(id -u)" = 0 ] && command -v pg_ctlcluster >/dev/null; then
    ver=$(basename "$(dirname "$pg_bin")")
    pg_ctlcluster "$ver" main start 2>/dev/null || true
    if su postgres -c "psql -qtAc 'select 1'" >/dev/null 2>&1; then
      su postgres -c "psql -qtAc \"select 1 from pg_roles where rolname='lab'\"" | grep -q 1 \
        || su postgres -c "psql -qc \"create role lab login superuser password 'lab'\"" >/dev/null
      su postgres -c "psql -qtAc \"select 1 from pg_database where datname='lab_test'\"" | grep -q 1 \
        || su postgres -c "createdb -O lab lab_test"
      port=$(su postgres -c "psql -qtAc 'show port'")
      export LAB_TEST_PG_URL="postgresql+psycopg://lab:lab@127.0.0.1:${port}/lab_test"
    fi
  elif [ -n "$pg_bin" ]; then
    dir=$(mktemp -d /tmp/lab-pg.XXXXXX)
    port=$(( 20000 + RANDOM % 20000 ))
    if "$pg_bin/initdb" -D "$dir/data" -U lab --auth=trust >/dev/null 2>&1 \
       && "$pg_bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
            -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null 2>&1; then
      "$pg_bin/createdb" -h 127.0.0.1 -p "$port" -U lab lab_test
      export LAB_TEST_PG_URL="postgresql+psycopg://lab@127.0.0.1:${port}/lab_test"
      trap '"$pg_bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1; rm -rf "$dir"' EXIT
    fi
  fi
fi
if [ -n "${LAB_TEST_PG_URL:-}" ]; then log "PostgreSQL: ${LAB_TEST_PG_URL%%@*}@..."; else log "PostgreSQL: not available"; fi

if ! command -v prometheus >/dev/null; then
  log "installing prometheus"; apt_install prometheus || true
  # Debian starts it as a service on :9090; the suite runs its own instances.
  systemctl stop prometheus >/dev/null 2>&1 || service prometheus stop >/dev/null 2>&1 || true
fi
command -v prometheus >/dev/null && log "Prometheus: $(command -v prometheus)" || log "Prometheus: not available"

"$@"
