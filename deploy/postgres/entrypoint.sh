#!/bin/sh
# First start on an empty volume: initdb with the superuser POSTGRES_USER, whose
# password is the first line of POSTGRES_PASSWORD_FILE, and the database POSTGRES_DB.
# Then run the server as the postgres user (the entrypoint starts as root only to
# read the secret, whichever uid owns it on the host, and to fix the volume's owner).
#
# Environment: POSTGRES_USER (postgres), POSTGRES_DB (= POSTGRES_USER),
# POSTGRES_PASSWORD_FILE (/run/secrets/db_password), PGPORT (5432),
# POSTGRES_LISTEN (*: every interface of the container; 127.0.0.1 under host networking).
set -eu
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
port=${PGPORT:-5432}
listen=${POSTGRES_LISTEN:-*}
pwfile=${POSTGRES_PASSWORD_FILE:-/run/secrets/db_password}
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }

install -d -o postgres -g postgres -m 0700 "$PGDATA"
install -d -o postgres -g postgres -m 2775 /run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ ! -r "$pwfile" ] || [ -z "$(head -n1 "$pwfile")" ]; then
    echo "postgres-entrypoint: no password in $pwfile (POSTGRES_PASSWORD_FILE)" >&2
    exit 1
  fi
  tmp=$(mktemp)
  head -n1 "$pwfile" | tr -d '\r\n' >"$tmp"
  chown postgres "$tmp"; chmod 600 "$tmp"
  echo "postgres-entrypoint: initialising $PGDATA (superuser $user, database $db)"
  as_postgres initdb -D "$PGDATA" -U "$user" --pwfile="$tmp" -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$tmp"
  # Other containers (and the host through published ports) connect over TCP with
  # the password; the local socket inside this container stays trust for pg_isready.
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    echo "CREATE DATABASE \"$db\" OWNER \"$user\";" \
      | as_postgres postgres --single -D "$PGDATA" -j postgres >/dev/null
  fi
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups -- \
  postgres -D "$PGDATA" -p "$port" -c "listen_addresses=$listen" \
  -c unix_socket_directories=/run/postgresql -c log_destination=stderr "$@"
