#!/usr/bin/env bash
# Provisions what Accountable needs, reusing what already answers:
#   - PostgreSQL at $DATABASE_URL; otherwise a cluster in .data/postgres from
#     the machine's PostgreSQL binaries (initdb, pg_ctl), on that URL's port;
#   - a Kafka-compatible broker at $KAFKA_BOOTSTRAP_SERVERS; otherwise tansu
#     (installed with cargo when absent), on loopback, memory storage;
#   - OpenSSL's headers for the build (webauthn-rs), with apt-get when missing.
# Sourced by scripts/run.sh and scripts/test.sh; exports the two variables.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="$ROOT/.data"
mkdir -p "$DATA"

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/accountable}"
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}"

log() { printf '[stack] %s\n' "$*" >&2; }

# host:port of the URL's authority (postgres://user[:pw]@host:port/db).
pg_authority="${DATABASE_URL#*://}"
pg_authority="${pg_authority#*@}"
pg_authority="${pg_authority%%/*}"
PG_HOST="${pg_authority%%:*}"
PG_PORT="${pg_authority##*:}"
[[ "$PG_PORT" == "$pg_authority" ]] && PG_PORT=5432

KAFKA_HOST="${KAFKA_BOOTSTRAP_SERVERS%%,*}"
KAFKA_PORT="${KAFKA_HOST##*:}"
KAFKA_HOST="${KAFKA_HOST%%:*}"

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_for_port() {
  local host=$1 port=$2 what=$3 tries=${4:-100}
  for _ in $(seq "$tries"); do
    port_open "$host" "$port" && return 0
    sleep 0.2
  done
  log "$what did not come up on $host:$port"
  return 1
}

pg_bin() {
  local name=$1 found
  found="$(command -v "$name" 2>/dev/null || true)"
  if [[ -z "$found" ]]; then
    found="$(ls -d /usr/lib/postgresql/*/bin/"$name" 2>/dev/null | sort -V | tail -n 1 || true)"
  fi
  [[ -n "$found" ]] || { log "PostgreSQL's $name is not installed (Debian: apt-get install postgresql)"; return 1; }
  printf '%s' "$found"
}

ensure_postgres() {
  if port_open "$PG_HOST" "$PG_PORT"; then
    log "PostgreSQL answers at $PG_HOST:$PG_PORT"
    return
  fi
  local initdb pg_ctl pgdata="$DATA/postgres" as=()
  initdb="$(pg_bin initdb)"
  pg_ctl="$(pg_bin pg_ctl)"
  # PostgreSQL refuses to run as root: then the cluster belongs to the
  # postgres account, in a folder that account can reach.
  if [[ "$(id -u)" == 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    as=(runuser -u postgres --)
    pgdata="/var/tmp/accountable/postgres-$PG_PORT"
  fi
  if [[ ! -f "$pgdata/PG_VERSION" ]]; then
    log "creating a PostgreSQL cluster in $pgdata"
    mkdir -p "$pgdata"
    [[ ${#as[@]} -gt 0 ]] && chown postgres "$pgdata"
    "${as[@]}" "$initdb" -D "$pgdata" -U postgres --auth=trust >"$DATA/initdb.log"
  fi
  log "starting PostgreSQL on $PG_HOST:$PG_PORT"
  "${as[@]}" "$pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w \
    -o "-c listen_addresses=$PG_HOST -c port=$PG_PORT -c unix_socket_directories=$pgdata -c max_connections=300" start >/dev/null
  wait_for_port "$PG_HOST" "$PG_PORT" PostgreSQL
}

ensure_broker() {
  if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
    log "a Kafka broker answers at $KAFKA_HOST:$KAFKA_PORT"
    return
  fi
  if ! command -v tansu >/dev/null 2>&1 && [[ ! -x "$HOME/.cargo/bin/tansu" ]]; then
    log "installing tansu 0.6.0 (about 10 minutes, once)"
    cargo install tansu --version 0.6.0 --locked --features dynostore
  fi
  local tansu
  tansu="$(command -v tansu 2>/dev/null || printf '%s' "$HOME/.cargo/bin/tansu")"
  log "starting tansu on $KAFKA_HOST:$KAFKA_PORT (memory storage)"
  nohup "$tansu" broker \
    --listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
    --advertised-listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
    --storage-engine memory://tansu/ >"$DATA/tansu.log" 2>&1 &
  echo $! >"$DATA/tansu.pid"
  wait_for_port "$KAFKA_HOST" "$KAFKA_PORT" tansu
}

# webauthn-rs verifies passkeys with OpenSSL: its headers are needed to build.
ensure_build_libraries() {
  if pkg-config --exists openssl 2>/dev/null; then
    return
  fi
  log "installing OpenSSL's headers and pkg-config (Debian: libssl-dev pkg-config)"
  local as_root=()
  [[ "$(id -u)" == 0 ]] || as_root=(sudo)
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q libssl-dev pkg-config >/dev/null
}

ensure_build_libraries
ensure_postgres
ensure_broker
