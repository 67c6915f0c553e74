#!/bin/bash
# Entry point of deploy/postgres: on an empty data folder, create the cluster with the
# POSTGRES_USER superuser (password POSTGRES_PASSWORD, checked with SCRAM over TCP) and the
# POSTGRES_DB database; then run the server in the foreground on every interface of the
# container (its port is published only where docker-compose.yml says: on 127.0.0.1).
set -Eeuo pipefail

say() { printf 'postgres-entrypoint: %s\n' "$*" >&2; }

user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$user}

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
    [[ -n ${POSTGRES_PASSWORD:-} ]] || {
        say "error: POSTGRES_PASSWORD is empty; the database would accept anyone"
        exit 1
    }
    say "creating the cluster in $PGDATA (superuser $user, database $database)"
    # Socket connections come from this container's own processes (the server's user);
    # every TCP client needs the password.
    initdb --pgdata="$PGDATA" --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    printf 'host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
    if [[ $database != postgres ]]; then
        # A server on the socket only, so that nobody connects before the database exists.
        pg_ctl --pgdata="$PGDATA" --options="-c listen_addresses=''" --wait --silent start
        createdb --username="$user" --host=/var/run/postgresql "$database"
        pg_ctl --pgdata="$PGDATA" --mode=fast --wait --silent stop
    fi
fi

exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
