-- Integration health and recovery pacing (CONTRACT sections 3 and 6), and the indexes the manual
-- fallback and the integrations view read by.

-- The delivery pace of each system's commands, shared by every relay: the one publishing a system's
-- commands (under its advisory lock) spends tokens here, so replicas together keep the pace.
CREATE TABLE command_pace (
    system       text PRIMARY KEY,
    rate_per_min double precision NOT NULL,
    tokens       double precision NOT NULL,
    refilled_at  timestamptz      NOT NULL DEFAULT now(),
    halved_at    timestamptz,
    -- the trouble of the last minute: [[kind, epoch seconds], ...], kind failed/unavailable/timeout
    trouble      jsonb            NOT NULL DEFAULT '[]',
    -- sites whose open counters held staff commands back on the last publish: {site: counters_open}
    floor        jsonb            NOT NULL DEFAULT '{}',
    reason       text             NOT NULL,
    updated_at   timestamptz      NOT NULL DEFAULT now()
);

-- The pace reason last announced with the status, so a change of pace is published once too; when the
-- figures were last published (whichever replica claims a system's row for the round publishes them).
ALTER TABLE integration_status ADD COLUMN pace_reason text;
ALTER TABLE integration_status ADD COLUMN figures_at timestamptz;

-- Commands sent to a site in the last minute (the floor's bound) and settled per system (success rate).
CREATE INDEX commands_site_sent ON commands (site, sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX commands_system_updated ON commands (system, updated_at);
-- Invalid events per minute; the failure a manual event became, if it did.
CREATE INDEX failures_last ON failures (last_at);
CREATE INDEX failures_event ON failures (event_source, event_id) WHERE event_source IS NOT NULL;
