#!/bin/sh
# One PostgreSQL machine of docker-compose.scale.yml under pg_auto_failover: `pg_node.sh monitor` or
# `pg_node.sh pg1` / `pg2`. The same steps as `make cluster` (tools/postgres_nodes.py on branch cluster):
# an instance of our own first (initdb, our settings in postgresql.auto.conf, which pg_autoctl leaves alone and
# a standby inherits with its base backup), `pg_autoctl create` once, then `pg_autoctl run`, which starts
# PostgreSQL, follows the monitor, and rewinds a former primary into a standby when it comes back.
# UNTESTED: no container engine runs where this project is tested; make cluster runs these steps on loopback.
set -eu
name="$1"
export PGDATA=/var/lib/postgresql/pgaf
config="$HOME/.config/pg_autoctl$PGDATA/pg_autoctl.cfg"  # pg_autoctl's own record that the node was created

own_instance() {
    # The owner's password for SCRAM from the compose network (LEDGER_POSTGRES_PASSWORD); pg_autoctl connects
    # over the container's socket, trusted as on make cluster's loopback (pg_hba.conf).
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb -D "$PGDATA" -U postgres --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8
    rm -f "$pwfile"
    cp /etc/ledger/pg_hba.conf "$PGDATA/pg_hba.conf"
    cat "$1" >> "$PGDATA/postgresql.auto.conf"
}

if [ ! -f "$config" ]; then
    settings=$(mktemp)
    if [ "$name" = monitor ]; then
        # make cluster's failure detection: a primary lost is replaced after ~10 s instead of ~50 s (its
        # docs/cluster.md says what that costs); ALTER SYSTEM there, the same file here.
        cat > "$settings" <<'CONF'
pgautofailover.health_check_period = 1000
pgautofailover.health_check_timeout = 1000
pgautofailover.health_check_retry_delay = 500
pgautofailover.health_check_max_retries = 2
pgautofailover.node_considered_unhealthy_timeout = 5000
pgautofailover.primary_demote_timeout = 5000
CONF
        own_instance "$settings"
        pg_autoctl create monitor --pgdata "$PGDATA" --pgport 5432 --hostname monitor --auth trust \
            --skip-pg-hba --ssl-self-signed
    else
        cat > "$settings" <<'CONF'
shared_preload_libraries = 'pg_stat_statements'
max_connections = 300
max_wal_size = '2GB'
wal_compression = on
CONF
        # The first data node registers its own instance; the second is cloned from the primary by
        # pg_autoctl (pg_basebackup), so it starts from an empty folder.
        if [ "$name" = pg1 ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
            own_instance "$settings"
        fi
        pg_autoctl create postgres --pgdata "$PGDATA" --pgport 5432 --hostname "$name" --name "$name" \
            --listen '*' --dbname ledger --auth trust --skip-pg-hba --ssl-self-signed \
            --monitor "postgres://autoctl_node@monitor:5432/pg_auto_failover?sslmode=require"
    fi
    rm -f "$settings"
fi
exec pg_autoctl run --pgdata "$PGDATA"
