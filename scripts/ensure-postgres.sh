# Sourced by scripts/test: makes sure a PostgreSQL server is reachable and exports DATABASE_URL
# naming a database on it from which `#[sqlx::test]` can create one throwaway database per test.
#
# In order: an already-set, reachable DATABASE_URL; a server on 127.0.0.1:5432 (trust auth,
# user postgres); the machine's Debian cluster, started with pg_ctlcluster; a throwaway cluster
# made with the system's initdb/pg_ctl under target/. When none of these exists and we run as
# root with apt, Debian's `postgresql` is installed first. Otherwise one clear line and exit 1.

pg_fail() { echo "test: $*" >&2; exit 1; }

pg_can_connect() { # url
  if command -v psql >/dev/null 2>&1; then
    psql "$1" -Atqc 'select 1' >/dev/null 2>&1
  else
    (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
  fi
}

pg_wait() { # url
  for _ in $(seq 1 60); do pg_can_connect "$1" && return 0; sleep 0.5; done
  return 1
}

# Installs Debian's PostgreSQL when no server answers and no initdb exists (root and apt only).
pg_install() {
  [ -n "$(pg_bin_dir)" ] && return
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    pg_fail "no PostgreSQL server answers and none is installed: install it (apt-get install postgresql) or set DATABASE_URL"
  fi
  echo "test: installing Debian's postgresql" >&2
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1; }; } ||
    pg_fail "apt-get install postgresql failed: install PostgreSQL by hand or set DATABASE_URL"
}

pg_bin_dir() {
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

PG_AS=()
PG_BIN=""
PG_DIR=""

pg_stop_throwaway() {
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR" stop -m fast >/dev/null 2>&1 || true
}

# Starts a cluster under target/pg-test on port 55432, stopped again when the calling shell exits.
pg_throwaway_cluster() {
  local port=55432
  PG_BIN=$(pg_bin_dir)
  [ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] ||
    pg_fail "PostgreSQL is not running and no initdb was found: install PostgreSQL (e.g. apt-get install postgresql) or set DATABASE_URL"
  PG_DIR="$PWD/target/pg-test"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || pg_fail "initdb refuses to run as root and there is no 'postgres' user to run it as"
    PG_AS=(runuser -u postgres --)
  fi
  if [ ! -f "$PG_DIR/PG_VERSION" ]; then
    mkdir -p "$PG_DIR"
    [ ${#PG_AS[@]} -eq 0 ] || chown postgres "$PG_DIR"
    "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR" -U postgres --auth=trust >/dev/null ||
      pg_fail "initdb failed in $PG_DIR"
  fi
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR" -l "$PG_DIR/server.log" -w \
    -o "-p $port -k /tmp -c listen_addresses=127.0.0.1" start >/dev/null ||
    pg_fail "the throwaway PostgreSQL did not start; see $PG_DIR/server.log"
  trap pg_stop_throwaway EXIT
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

ensure_postgres() {
  if [ -n "${DATABASE_URL:-}" ] && pg_can_connect "$DATABASE_URL"; then
    return
  fi
  local local_url="postgres://postgres@127.0.0.1:5432/postgres"
  pg_can_connect "$local_url" || pg_install
  if ! pg_can_connect "$local_url" && command -v pg_ctlcluster >/dev/null 2>&1 &&
    [ -d /etc/postgresql ] && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
    echo "test: starting the machine's PostgreSQL cluster" >&2
    local cluster
    cluster=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$cluster" main start >/dev/null 2>&1 || true
    if ! pg_wait "$local_url"; then
      # It does not let us in (Debian's default asks for a password): leave it as it was.
      pg_ctlcluster --skip-systemctl-redirect "$cluster" main stop >/dev/null 2>&1 || true
    fi
  fi
  if pg_can_connect "$local_url"; then
    export DATABASE_URL="$local_url"
    return
  fi
  echo "test: no PostgreSQL on 127.0.0.1:5432; starting a throwaway cluster" >&2
  pg_throwaway_cluster
  pg_wait "$DATABASE_URL" || pg_fail "the throwaway PostgreSQL does not answer"
}
