-- The event log partitioned by month of `applied_at`, and idempotency in a narrow inbox of its own.
--
-- A partitioned table's unique key must contain the partition key, so `events` can no longer hold
-- "(source, id) once". `event_inbox` does: one narrow row per applied event, the same key as
-- before, checked and filled in the apply transaction. `events` keeps the payloads, partitioned by
-- when Switchboard applied them (monotonic, unlike the upstream `time`, so every insert goes to the
-- current month and a month is dropped whole, with no vacuum, when its retention ends). A default
-- partition catches anything outside the months created; the backend keeps months ahead in place
-- (`ensure_event_partitions`, at start and daily). docs/scaling.md says why and what grows.

CREATE TABLE event_inbox (
    source     text        NOT NULL,
    id         text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (source, id)
);

ALTER TABLE events RENAME TO events_before_007;
ALTER TABLE events_before_007 RENAME CONSTRAINT events_pkey TO events_before_007_pkey;
ALTER INDEX events_journey RENAME TO events_before_007_journey;
ALTER INDEX events_applied RENAME TO events_before_007_applied;

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
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
) PARTITION BY RANGE (applied_at);
CREATE INDEX events_journey ON events (journey_id, time) WHERE journey_id IS NOT NULL;
CREATE INDEX events_applied ON events (applied_at);
-- finding one event by its key; uniqueness is event_inbox's
CREATE INDEX events_key ON events (source, id);
CREATE TABLE events_default PARTITION OF events DEFAULT;

-- The month partitions from `from_month` to `months_ahead` months after the current one.
CREATE FUNCTION ensure_event_partitions(months_ahead integer, from_month timestamptz DEFAULT now())
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    month date := date_trunc('month', from_month AT TIME ZONE 'UTC')::date;
    last date := (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => months_ahead))::date;
    created integer := 0;
    name text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('ensure_event_partitions'));  -- backends starting together
    WHILE month <= last LOOP
        name := 'events_' || to_char(month, 'YYYY_MM');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)', name,
                           month::timestamp AT TIME ZONE 'UTC', (month + interval '1 month')::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
        month := (month + interval '1 month')::date;
    END LOOP;
    RETURN created;
END
$$;

SELECT ensure_event_partitions(3, coalesce((SELECT min(applied_at) FROM events_before_007), now()));
INSERT INTO events SELECT * FROM events_before_007;
INSERT INTO event_inbox (source, id, applied_at) SELECT source, id, applied_at FROM events_before_007;
DROP TABLE events_before_007;
