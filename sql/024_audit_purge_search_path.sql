-- pg_temp, when a function's search_path leaves it out, is searched first for tables: a session's temporary
-- table named audit_log would have taken the purge's DELETE (and its "done") in place of the real one
ALTER FUNCTION purge_audit_log(interval) SET search_path = pg_catalog, public, pg_temp;
