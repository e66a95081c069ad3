-- Journeys, their references, the inbound event log, inbound failures and site capacity.
-- Switchboard holds journey state and references, never personal data.

CREATE TABLE journeys (
    id             uuid PRIMARY KEY,
    site           text        NOT NULL,
    stage          text        NOT NULL,
    -- the full merge state: each attribute with the key (time|source|id) of the event that set it
    state          jsonb       NOT NULL,
    arrived_at     timestamptz,
    waiting_at     timestamptz,
    called_at      timestamptz,
    in_service_at  timestamptz,
    finished_at    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX journeys_site_created ON journeys (site, created_at DESC, id DESC);
CREATE INDEX journeys_created ON journeys (created_at DESC, id DESC);
CREATE INDEX journeys_site_stage ON journeys (site, stage);
CREATE INDEX journeys_site_arrived ON journeys (site, arrived_at) WHERE arrived_at IS NOT NULL;
CREATE INDEX journeys_site_finished ON journeys (site, finished_at) WHERE finished_at IS NOT NULL;

-- `<system>:<external id>` references; a reference belongs to exactly one journey.
CREATE TABLE journey_refs (
    ref        text PRIMARY KEY,
    journey_id uuid NOT NULL REFERENCES journeys (id) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX journey_refs_journey ON journey_refs (journey_id);

-- When a link merges two journeys, the absorbed id keeps answering with the survivor.
CREATE TABLE journey_aliases (
    old_id uuid PRIMARY KEY,
    new_id uuid NOT NULL
);

-- The inbox: every applied event once, by (source, id). Idempotency lives here, not only in
-- JetStream's duplicate window.
CREATE TABLE events (
    source      text        NOT NULL,
    id          text        NOT NULL,
    type        text        NOT NULL,
    subject     text        NOT NULL,
    site        text,
    time        timestamptz NOT NULL,
    data        jsonb       NOT NULL,
    journey_id  uuid,
    dropped_fields integer  NOT NULL DEFAULT 0,
    traceparent text,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (source, id)
);
CREATE INDEX events_journey ON events (journey_id, time) WHERE journey_id IS NOT NULL;
CREATE INDEX events_applied ON events (applied_at);

CREATE TABLE failures (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- the same bad message delivered again counts as another attempt, not another failure
    dedupe_key   text        NOT NULL UNIQUE,
    kind         text        NOT NULL CHECK (kind IN ('invalid_event', 'pii_rejected', 'source_mismatch',
                                   'unauthorized_source', 'apply_error', 'command_failed', 'command_timeout')),
    status       text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'retrying', 'resolved', 'discarded')),
    system       text,
    site         text,
    subject      text,
    event_source text,
    event_id     text,
    event_type   text,
    command_id   text,
    reason       text        NOT NULL,
    attempts     integer     NOT NULL DEFAULT 1,
    first_at     timestamptz NOT NULL DEFAULT now(),
    last_at      timestamptz NOT NULL DEFAULT now(),
    acted_by     text,
    payload      jsonb       NOT NULL
);
CREATE INDEX failures_status_last ON failures (status, last_at DESC);
CREATE INDEX failures_site ON failures (site, last_at DESC);

CREATE TABLE capacity (
    site          text PRIMARY KEY,
    counters_open integer     NOT NULL,
    counters_busy integer     NOT NULL,
    staff_on_duty integer     NOT NULL,
    queue_length  integer     NOT NULL,
    event_key     text        NOT NULL,
    updated_at    timestamptz NOT NULL
);

-- Latest heartbeat per connector; integration health builds on it.
CREATE TABLE heartbeats (
    connector  text PRIMARY KEY,
    system     text        NOT NULL,
    upstream   text        NOT NULL,
    version    text        NOT NULL,
    event_key  text        NOT NULL,
    seen_at    timestamptz NOT NULL
);
