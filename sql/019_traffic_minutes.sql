-- Each system's traffic per minute, added to by every apply batch (backend/integrations/traffic.py): the
-- integrations' figures read a few of these rows instead of sorting every event of the last minutes.
-- `writer` is the apply connection's backend pid: each replica adds to rows of its own, so two replicas
-- never wait on one another's row. Rows older than the figures need are deleted by the figures round.
CREATE TABLE traffic_minutes (
    system     text        NOT NULL,
    minute     timestamptz NOT NULL,
    writer     integer     NOT NULL,
    latency_ms bigint[]    NOT NULL,  -- events per latency bucket: their sum is the minute's events
    PRIMARY KEY (system, minute, writer)
);
