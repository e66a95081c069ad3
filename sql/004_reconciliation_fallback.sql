-- Reconciliation and manual fallback (CONTRACT sections 5 and 6): runs against the systems of
-- record, the drift they find, fallbacks per site and system, and the ledger of what staff did by
-- hand while one was active. These tables hold references and codes, never personal data.

CREATE TABLE reconciliation_runs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    system       text        NOT NULL,
    site         text        NOT NULL,
    day          date        NOT NULL,
    trigger      text        NOT NULL CHECK (trigger IN ('schedule', 'on_demand', 'fallback_end')),
    requested_by text,
    status       text        NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'unreachable', 'error')),
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    checked      integer     NOT NULL DEFAULT 0,
    drifted      integer     NOT NULL DEFAULT 0,
    error        text
);
CREATE INDEX reconciliation_runs_latest ON reconciliation_runs (system, site, started_at DESC);

CREATE TABLE drift_items (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- system|ref|kind|field: a later run that finds the same drift updates the open item
    dedupe_key        text        NOT NULL,
    run_id            bigint      NOT NULL REFERENCES reconciliation_runs (id),
    system            text        NOT NULL,
    site              text        NOT NULL,
    ref               text        NOT NULL,
    journey_id        uuid,
    kind              text        NOT NULL CHECK (kind IN ('missing_here', 'missing_there', 'state_mismatch', 'stale')),
    field             text,
    ours              jsonb,
    theirs            jsonb,
    theirs_updated_at timestamptz,
    -- set when the record was made by hand during this fallback: `push_ours` is what is offered
    fallback_id       bigint,
    -- the system of record changed the record while the fallback ran: for review, never overwritten
    conflict          boolean     NOT NULL DEFAULT false,
    status            text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'repairing', 'resolved', 'ignored')),
    action            text        CHECK (action IN ('accept_source', 'push_ours', 'ignore')),
    reason            text,
    acted_by          text,
    command_id        uuid,
    -- what the verifying snapshot read found after a repair
    last_check        jsonb,
    detected_at       timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    resolved_at       timestamptz
);
CREATE UNIQUE INDEX drift_items_one_open ON drift_items (dedupe_key) WHERE status IN ('open', 'repairing');
CREATE INDEX drift_items_status_site ON drift_items (status, site, detected_at DESC);

CREATE TABLE fallbacks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site        text        NOT NULL,
    system      text        NOT NULL,
    reason      text        NOT NULL,
    -- active: staff work by hand; replaying: ended, the ledger is being pushed to the system; ended
    status      text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'replaying', 'ended')),
    started_by  text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    ended_by    text,
    ended_at    timestamptz,
    end_reason  text,
    -- what the replay did: records pushed, conflicts listed, already in the system
    replay      jsonb
);
CREATE UNIQUE INDEX fallbacks_one_active ON fallbacks (site, system) WHERE status = 'active';
CREATE INDEX fallbacks_site_started ON fallbacks (site, started_at DESC);

-- The manual steps of a fallback in the order staff took them; each is also an applied event
-- from `/manual/<user>`.
CREATE TABLE fallback_ledger (
    fallback_id   bigint      NOT NULL REFERENCES fallbacks (id),
    seq           integer     NOT NULL,
    action        text        NOT NULL CHECK (action IN ('check_in', 'issue_ticket', 'call', 'start', 'complete')),
    ref           text        NOT NULL,
    journey_id    uuid,
    event_source  text        NOT NULL,
    event_id      text        NOT NULL,
    actor         text        NOT NULL,
    data          jsonb       NOT NULL,
    at            timestamptz NOT NULL DEFAULT now(),
    replay_status text        NOT NULL DEFAULT 'pending'
                  CHECK (replay_status IN ('pending', 'pushed', 'conflict', 'in_system')),
    command_id    uuid,
    PRIMARY KEY (fallback_id, seq)
);
CREATE INDEX fallback_ledger_ref ON fallback_ledger (ref);

-- Manual ticket numbers (M-001, M-002, …) per site and day.
CREATE TABLE manual_tickets (
    site text    NOT NULL,
    day  date    NOT NULL,
    last integer NOT NULL,
    PRIMARY KEY (site, day)
);

-- Integration status as last decided, so a change (up → down) is noticed once and published.
CREATE TABLE integration_status (
    system     text PRIMARY KEY,
    status     text        NOT NULL CHECK (status IN ('up', 'degraded', 'down')),
    reason     text        NOT NULL,
    since      timestamptz NOT NULL DEFAULT now(),
    checked_at timestamptz NOT NULL DEFAULT now()
);
