-- Finding things (contract section 11): journeys by the start of a reference or ticket number, each
-- command's attempts, who asked for a resend, and the audit log by site.

-- Prefix search compares bytes (text_pattern_ops: `~>=~`, `~<~`), so a search reads only the index range
-- of its prefix. A reference is found by its whole text (`queue:T-0042`) or by its id alone (`T-0042`).
CREATE INDEX journey_refs_prefix ON journey_refs (lower(ref) text_pattern_ops);
CREATE INDEX journey_refs_id_prefix ON journey_refs (lower(substr(ref, strpos(ref, ':') + 1)) text_pattern_ops);
-- a ticket number (state.ticket is a stamped value: [key, {"ticket", "queue_name"}])
CREATE INDEX journeys_ticket_prefix ON journeys (lower(state #>> '{ticket,1,ticket}') text_pattern_ops);

-- One row per publish of a command, with the answer that attempt got (none: no answer in time).
CREATE TABLE command_attempts (
    command_id  uuid        NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    sent_at     timestamptz NOT NULL DEFAULT now(),
    answer      text        CHECK (answer IN ('ok', 'failed', 'unavailable')),
    error       text,
    answered_at timestamptz,
    PRIMARY KEY (command_id, attempt)
);

-- A resend waits for the next publish: a second one asked for before then changes nothing.
ALTER TABLE commands ADD COLUMN resend_requested_at timestamptz;
-- commands each rule produced today
CREATE INDEX commands_rule_created ON commands (rule, created_at);

-- The site an audited action concerns, taken from its target's row, so no caller can forget it. NULL for
-- actions of no one site: only a token for every site sees those.
ALTER TABLE audit_log ADD COLUMN site text;
CREATE INDEX audit_log_site_id ON audit_log (site, id DESC);
CREATE INDEX audit_log_action_id ON audit_log (action, id DESC);

CREATE FUNCTION audit_log_site() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind text := split_part(NEW.target, ':', 1);
    key text := substr(NEW.target, length(kind) + 2);
BEGIN
    IF NEW.site IS NOT NULL THEN
        RETURN NEW;
    END IF;
    IF kind IN ('fallback', 'drift', 'failure', 'alert') AND key ~ '^[0-9]{1,18}$' THEN
        NEW.site := CASE kind
            WHEN 'fallback' THEN (SELECT site FROM fallbacks WHERE id = key::bigint)
            WHEN 'drift' THEN (SELECT site FROM drift_items WHERE id = key::bigint)
            WHEN 'alert' THEN (SELECT site FROM alerts WHERE id = key::bigint)
            ELSE (SELECT site FROM failures WHERE id = key::bigint) END;
    ELSIF kind = 'command' AND key ~ '^[0-9a-f-]{36}$' THEN
        NEW.site := (SELECT site FROM commands WHERE id = key::uuid);
    ELSIF kind = 'journey' AND key ~ '^[0-9a-f-]{36}$' THEN
        NEW.site := (SELECT site FROM journeys WHERE id = key::uuid);
    ELSIF kind = 'reconciliation' THEN  -- reconciliation:<system>:<site>:<day>
        NEW.site := nullif(split_part(NEW.target, ':', 3), '');
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_log_site BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_site();

-- One journey's page: its failures and drift, and the ids a merge folded into it.
CREATE INDEX failures_journey ON failures (journey_id) WHERE journey_id IS NOT NULL;
CREATE INDEX drift_items_ref ON drift_items (ref);
CREATE INDEX drift_items_journey ON drift_items (journey_id) WHERE journey_id IS NOT NULL;
CREATE INDEX journey_aliases_new ON journey_aliases (new_id);
