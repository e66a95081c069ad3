-- Least privilege: the backend runs as a role of its own (SWITCHBOARD_DATABASE_URL), the migrations as
-- the role that owns the tables (SWITCHBOARD_DATABASE_OWNER_URL). docs/security.md lists who may do what.
--
-- The runtime role reads and writes rows; it never changes a table, a trigger or the schema, and the
-- audit log is insert-only for it. What needs more than that goes through functions owned by the
-- owner (SECURITY DEFINER) that do one guarded thing: purge_audit_log (sql/008) and creating the
-- coming month partitions of `events` (below). `switchboard migrate` and the backend, when given the
-- owner's URL, call grant_runtime_privileges(<runtime role>) after the migrations, every time, so a
-- table a later migration adds is granted too and nothing granted by hand outlives a start.

-- The coming month partitions, for the runtime role: it may not pick the first month (the owner's
-- ensure_event_partitions may, once, at migrate time) nor ask for more than two years ahead.
-- `public` first: ensure_event_partitions creates the partitions in the first schema of the path, where
-- only the owner may create anything; pg_temp last, so no temporary table of the caller's is found instead.
CREATE FUNCTION ensure_coming_event_partitions(months_ahead integer) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_catalog, pg_temp AS $$
BEGIN
    IF months_ahead IS NULL OR months_ahead < 0 OR months_ahead > 24 THEN
        RAISE EXCEPTION 'months ahead must be between 0 and 24, not %', months_ahead
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN ensure_event_partitions(months_ahead);
END
$$;

-- Functions run with their owner's rights: nobody but whom grant_runtime_privileges names may call them.
REVOKE EXECUTE ON FUNCTION ensure_coming_event_partitions(integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ensure_event_partitions(integer, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION purge_audit_log(interval) FROM PUBLIC;

CREATE FUNCTION grant_runtime_privileges(runtime name) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    target_schema name := current_schema();
    tab name;
BEGIN
    IF runtime = current_user THEN
        RAISE EXCEPTION 'the runtime role must not be the owner (%)', runtime USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- nobody but the owner creates anything here (PUBLIC had CREATE on `public` before Postgres 15)
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC, %I', target_schema, runtime);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', target_schema, runtime);
    -- rows of every table; never TRUNCATE, REFERENCES or TRIGGER. Partitions go through their parent.
    FOR tab IN SELECT c.relname FROM pg_class c
               WHERE c.relnamespace = target_schema::regnamespace AND c.relkind IN ('r', 'p')
                 AND NOT c.relispartition LOOP
        EXECUTE format('REVOKE ALL ON TABLE %I FROM %I', tab, runtime);
        EXECUTE format('GRANT %s ON TABLE %I TO %I', CASE tab
            WHEN 'audit_log' THEN 'SELECT, INSERT'  -- append-only, removed only by purge_audit_log
            WHEN 'schema_migrations' THEN 'SELECT'  -- the backend checks it is up to date
            ELSE 'SELECT, INSERT, UPDATE, DELETE' END, tab, runtime);
    END LOOP;
    EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA %I TO %I', target_schema, runtime);
    EXECUTE format('GRANT EXECUTE ON FUNCTION ensure_coming_event_partitions(integer), purge_audit_log(interval)'
                   ' TO %I', runtime);
END
$$;
REVOKE EXECUTE ON FUNCTION grant_runtime_privileges(name) FROM PUBLIC;
