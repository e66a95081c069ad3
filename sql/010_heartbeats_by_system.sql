-- Heartbeats keyed by the system the connector is authenticated as (its NATS subject, its token's system),
-- with the `connector:<name>` of the event's subject only a label: one system's connector can no longer
-- overwrite another system's heartbeat by naming it.
ALTER TABLE heartbeats DROP CONSTRAINT heartbeats_pkey;
ALTER TABLE heartbeats ADD PRIMARY KEY (system, connector);
