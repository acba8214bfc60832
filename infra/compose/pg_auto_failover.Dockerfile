# PostgreSQL 15 with pg_auto_failover, the HA manager `make cluster` runs (tools/postgres_nodes.py on branch
# cluster), for the monitor and the data nodes of docker-compose.scale.yml.
# UNTESTED: no container engine runs where this project is tested. make cluster ran Debian bookworm's
# postgresql-15-auto-failover 2.0; this image takes the same package from the PGDG repository the postgres
# image is built with, which may be a later release.
FROM postgres:15
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15-auto-failover \
 && rm -rf /var/lib/apt/lists/*
COPY pg_node.sh /usr/local/bin/pg_node.sh
COPY pg_hba.conf /etc/ledger/pg_hba.conf
USER postgres
ENTRYPOINT ["/usr/local/bin/pg_node.sh"]
