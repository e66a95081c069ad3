#!/bin/sh
# Run once by the postgres image, as its superuser, when the data volume is first initialised
# (/docker-entrypoint-initdb.d): the two roles Switchboard uses, and its database (docs/security.md).
#   switchboard      owns the tables: `switchboard migrate` only
#   switchboard_app  what the backends run as: rows only, granted by `switchboard migrate` (sql/010)
# Passwords come from the environment (compose.yaml), never from this file.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
     -v owner_password="$SWITCHBOARD_OWNER_PASSWORD" -v app_password="$SWITCHBOARD_APP_PASSWORD" <<'SQL'
CREATE ROLE switchboard LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'owner_password';
CREATE ROLE switchboard_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'app_password';
CREATE DATABASE switchboard OWNER switchboard;
-- nobody else connects, and the runtime role makes no temporary tables either
REVOKE ALL ON DATABASE switchboard FROM PUBLIC;
GRANT CONNECT ON DATABASE switchboard TO switchboard_app;
SQL
