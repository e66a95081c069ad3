-- Routing and recovery: the command outbox, failure bookkeeping for retries, the append-only audit log.

-- The outbox: a command is inserted in the transaction that applies the events causing it, and a
-- relay publishes it afterwards. Nothing is lost when a backend dies between the two.
CREATE TABLE commands (
    -- derived from rule + journey + causing event: the same cause never produces the command twice
    id            uuid PRIMARY KEY,
    -- creation order: held commands of a system go out in this order when it is back
    seq           bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    rule          text        NOT NULL,
    system        text        NOT NULL,
    command       text        NOT NULL,
    journey_id    uuid        NOT NULL,
    refs          text[]      NOT NULL,
    site          text        NOT NULL,
    data          jsonb       NOT NULL,
    status        text        NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'held', 'sent', 'ok', 'failed')),
    -- publishes so far; the message of attempt n carries attempt = n
    attempts      integer     NOT NULL DEFAULT 0,
    -- the attempt after which a failed or unanswered command becomes a failure; NULL: the setting
    attempt_limit integer,
    -- pending/held: not before; sent: the answer is due by then
    next_at       timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz,
    -- the connector's answer to the attempt in flight, until the relay acts on it
    answer        text        CHECK (answer IN ('failed', 'unavailable')),
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX commands_due ON commands (next_at) WHERE status IN ('pending', 'held', 'sent');
CREATE INDEX commands_journey ON commands (journey_id);
CREATE INDEX commands_site_seq ON commands (site, seq DESC);

ALTER TABLE failures ADD COLUMN journey_id uuid;
ALTER TABLE failures ADD COLUMN last_retry_at timestamptz;
CREATE INDEX failures_command ON failures (command_id) WHERE command_id IS NOT NULL;
CREATE INDEX failures_subject ON failures (subject) WHERE subject IS NOT NULL;

-- Who did what, when, why and with what result. Append-only: no role may change or remove a row.
CREATE TABLE audit_log (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor   text        NOT NULL,
    roles   text[]      NOT NULL,
    action  text        NOT NULL,
    target  text        NOT NULL,
    reason  text,
    result  jsonb       NOT NULL
);
CREATE INDEX audit_log_actor_at ON audit_log (actor, at DESC);
CREATE INDEX audit_log_at ON audit_log (at DESC);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
