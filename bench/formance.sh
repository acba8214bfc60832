#!/usr/bin/env bash
# Formance Ledger v2.4.12 (+ its fix #1684) built from source and served on its own PostgreSQL 15 cluster, for
# `make bench-formance` (bench/formance.py runs issue 24's write matrix against it beside ours).
#   formance.sh build   clone, patch and build it (once; Go from PATH, modules from the Go proxy)
#   formance.sh start   init PG cluster if absent, start PG + ledger, create ledger "bench"
#   formance.sh stop    stop ledger and PG
#   formance.sh reset   stop ledger, drop+recreate the database, start ledger, recreate "bench"
#   formance.sh status  show what is running
# Everything lives under $FORMANCE_BASE (.cache/formance). PG: 127.0.0.1:5499, ledger API: 127.0.0.1:3068.
# What the build takes, found by building it here: v2.4.12 deadlocks above 20 concurrent writes without
# Formance's own fix #1684 (commit 1ea404b18, on main, in no tag), cherry-picked here; the module
# go.vallahaye.net/batcher v0.6.0 is not served by the Go module proxy, so it is replaced by a clone of
# vallahaye/go-batcher at that tag. FORMANCE_GIT and BATCHER_GIT name other places to clone them from.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE=${FORMANCE_BASE:-$ROOT/.cache/formance}
FORMANCE_GIT=${FORMANCE_GIT:-https://github.com/formancehq/ledger}
BATCHER_GIT=${BATCHER_GIT:-https://github.com/vallahaye/go-batcher}
VERSION=v2.4.12
FIX_1684=1ea404b185eac91d04a1f500d6deb47522c627c4
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGDATA=$BASE/pgdata
PGRUN=$BASE/pgrun                    # unix socket dir + PG server log (owned by postgres)
PGPORT=${PGPORT:-5499}
DB=ledger
LEDGER_BIN=$BASE/bin/ledger
LEDGER_PORT=${LEDGER_PORT:-3068}
LEDGER_LOG=$BASE/ledger.log
LEDGER_PID=$BASE/ledger.pid
LEDGER_NAME=${LEDGER_NAME:-bench}
MAX_OPEN_CONNS=${FORMANCE_MAX_OPEN_CONNS:-20}
MAX_IDLE_CONNS=${FORMANCE_MAX_IDLE_CONNS:-20}
EXTRA_ARGS=${FORMANCE_EXTRA_ARGS:-}   # e.g. "--debug" or "--experimental-features"
# POST /v2/bench body; {} = default features (HASH_LOGS=SYNC, MOVES_HISTORY=ON, ...).
# Non-default features need FORMANCE_EXTRA_ARGS=--experimental-features, e.g.
#   BENCH_LEDGER_CONFIG='{"features":{"HASH_LOGS":"DISABLED"}}'
BENCH_LEDGER_CONFIG=${BENCH_LEDGER_CONFIG:-'{}'}
API=http://127.0.0.1:$LEDGER_PORT
PG_URI="postgres://postgres@127.0.0.1:$PGPORT/$DB?sslmode=disable"

mkdir -p "$BASE"
cd "$BASE"   # runuser keeps cwd; postgres must be able to read it
log() { echo "[formance] $*" >&2; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
psql_pg() { as_pg "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres -v ON_ERROR_STOP=1 "$@"; }
pg_running() { as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }

pg_init() {
  [ -f "$PGDATA/PG_VERSION" ] && return 0
  log "initdb $PGDATA"
  mkdir -p "$PGDATA" "$PGRUN"
  chown postgres:postgres "$PGDATA" "$PGRUN" 2>/dev/null || true
  chmod 700 "$PGDATA"
  as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  cat >>"$PGDATA/postgresql.conf" <<EOF

# --- formance bench cluster ---
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$PGRUN'
shared_buffers = 256MB
max_connections = 100
EOF
}

pg_start() {
  pg_init
  mkdir -p "$PGRUN"; chown postgres:postgres "$PGRUN" 2>/dev/null || true
  if ! pg_running; then
    log "starting PostgreSQL on 127.0.0.1:$PGPORT"
    # cluster_name: its processes show as "postgres: formance: ...", which the bench counts apart from ours.
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGRUN/postgres.log" -o "-c cluster_name=formance" -w -t 60 start >/dev/null
  fi
  if ! psql_pg -d postgres -tAc "select 1 from pg_database where datname='$DB'" | grep -q 1; then
    psql_pg -d postgres -c "create database $DB"
  fi
}

pg_stop() {
  if [ -f "$PGDATA/PG_VERSION" ] && pg_running; then
    log "stopping PostgreSQL"
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null
  fi
}

ledger_pid() {  # prints pid only if it is really our ledger process
  [ -f "$LEDGER_PID" ] || return 1
  local p; p=$(cat "$LEDGER_PID")
  [ -n "$p" ] && [ -r "/proc/$p/cmdline" ] && tr '\0' ' ' <"/proc/$p/cmdline" | grep -q "^$LEDGER_BIN serve" && echo "$p"
}

wait_http() {  # wait until the server answers
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$API/_healthcheck" 2>/dev/null && return 0
    if ! ledger_pid >/dev/null; then log "ledger died, see $LEDGER_LOG"; tail -20 "$LEDGER_LOG" >&2; return 1; fi
    sleep 0.1
  done
  log "ledger did not answer in 30s, see $LEDGER_LOG"; return 1
}

ledger_start() {
  if ledger_pid >/dev/null; then wait_http; return 0; fi
  [ -x "$LEDGER_BIN" ] || { log "missing $LEDGER_BIN"; exit 1; }
  log "starting ledger on 127.0.0.1:$LEDGER_PORT (log $LEDGER_LOG)"
  # shellcheck disable=SC2086
  setsid nohup "$LEDGER_BIN" serve \
      --postgres-uri "$PG_URI" \
      --bind "127.0.0.1:$LEDGER_PORT" \
      --postgres-max-open-conns "$MAX_OPEN_CONNS" \
      --postgres-max-idle-conns "$MAX_IDLE_CONNS" \
      --auto-upgrade \
      $EXTRA_ARGS >>"$LEDGER_LOG" 2>&1 </dev/null &
  echo $! >"$LEDGER_PID"
  wait_http
}

ledger_stop() {
  local p
  if p=$(ledger_pid); then
    log "stopping ledger (pid $p)"
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && { log "ledger still alive, SIGKILL"; kill -KILL "$p" || true; }
  fi
  rm -f "$LEDGER_PID"
}

create_bench() {
  local code
  code=$(curl -sS -o /tmp/formance-create.$$ -w '%{http_code}' -X POST "$API/v2/$LEDGER_NAME" \
         -H 'Content-Type: application/json' -d "$BENCH_LEDGER_CONFIG")
  case "$code" in
    204) log "ledger '$LEDGER_NAME' created" ;;
    400) if grep -q LEDGER_ALREADY_EXISTS /tmp/formance-create.$$; then log "ledger '$LEDGER_NAME' already exists";
         else cat /tmp/formance-create.$$ >&2; rm -f /tmp/formance-create.$$; return 1; fi ;;
    *)   log "create ledger failed: HTTP $code"; cat /tmp/formance-create.$$ >&2; rm -f /tmp/formance-create.$$; return 1 ;;
  esac
  rm -f /tmp/formance-create.$$
}

cmd_build() {
  [ -x "$LEDGER_BIN" ] && { log "built already: $LEDGER_BIN"; return 0; }
  command -v go >/dev/null || { log "building Formance needs Go on PATH"; exit 1; }
  [ -d "$BASE/ledger/.git" ] || git clone -q "$FORMANCE_GIT" "$BASE/ledger"
  [ -d "$BASE/go-batcher/.git" ] || git clone -q "$BATCHER_GIT" "$BASE/go-batcher"
  git -C "$BASE/go-batcher" checkout -q v0.6.0
  if ! git -C "$BASE/ledger" rev-parse -q --verify "$VERSION-fix1684" >/dev/null; then
    git -C "$BASE/ledger" checkout -q -b "$VERSION-fix1684" "$VERSION"
    git -C "$BASE/ledger" -c user.name=bench -c user.email=bench@localhost cherry-pick "$FIX_1684" >/dev/null
  fi
  git -C "$BASE/ledger" checkout -q "$VERSION-fix1684"
  (cd "$BASE/ledger" && go mod edit -replace "go.vallahaye.net/batcher=$BASE/go-batcher" && go mod download &&
   mkdir -p "$BASE/bin" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$LEDGER_BIN" .)
  log "built $LEDGER_BIN"
}

cmd_start() { pg_start; ledger_start; create_bench; log "ready: $API/v2/$LEDGER_NAME"; }
cmd_stop()  { ledger_stop; pg_stop; }
cmd_reset() {
  ledger_stop          # the ledger caches ledger/bucket state: restart it after dropping the DB
  pg_start
  log "dropping and recreating database $DB"
  psql_pg -d postgres -c "drop database if exists $DB with (force)" -c "create database $DB"
  ledger_start
  create_bench
  log "ready (fresh): $API/v2/$LEDGER_NAME"
}
cmd_status() {
  if pg_running; then echo "postgres: running on 127.0.0.1:$PGPORT"; else echo "postgres: stopped"; fi
  if p=$(ledger_pid); then echo "ledger: running pid $p on $API"; else echo "ledger: stopped"; fi
}

case "${1:-}" in
  build)  cmd_build ;;
  start)  cmd_start ;;
  stop)   cmd_stop ;;
  reset)  cmd_reset ;;
  status) cmd_status ;;
  *) echo "usage: $0 {build|start|stop|reset|status}" >&2; exit 2 ;;
esac
