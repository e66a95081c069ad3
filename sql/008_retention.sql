-- Retention (backend/retention): stored data stays bounded, and the audit log stays append-only.
--
-- The application may still never UPDATE or TRUNCATE audit_log, nor DELETE a row younger than
-- audit_retention_floor(). Rows older than that go only through purge_audit_log(), which refuses
-- any retention shorter than the floor. An audit row's `at` is always the time it was written
-- (a backdated insert is re-stamped), so "older than the floor" means really that old.

CREATE FUNCTION audit_retention_floor() RETURNS interval LANGUAGE sql IMMUTABLE AS $$
    SELECT interval '90 days'
$$;

CREATE OR REPLACE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- only purge_audit_log() switches the flag on, for its own statement
    IF TG_OP = 'DELETE' AND current_setting('switchboard.audit_purge', true) = 'on'
       AND OLD.at < now() - audit_retention_floor() THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE FUNCTION audit_log_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.at := clock_timestamp();
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_log_stamp BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_stamp();

CREATE FUNCTION purge_audit_log(older_than interval) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    removed bigint;
BEGIN
    IF older_than IS NULL OR older_than < audit_retention_floor() THEN
        RAISE EXCEPTION 'audit retention % is below the floor of %', older_than, audit_retention_floor()
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config('switchboard.audit_purge', 'on', true);
    DELETE FROM audit_log WHERE at < now() - older_than;
    GET DIAGNOSTICS removed = ROW_COUNT;
    PERFORM set_config('switchboard.audit_purge', 'off', true);
    RETURN removed;
END
$$;

-- what the purge of settled commands and closed failures looks for
CREATE INDEX commands_settled ON commands (updated_at) WHERE status IN ('ok', 'failed');
CREATE INDEX failures_closed ON failures (last_at) WHERE status IN ('resolved', 'discarded');
