-- Reconciliation's lookups read only what they need, whatever the history kept:
-- retention checks each old run against the drift that points at it,
CREATE INDEX drift_items_run ON drift_items (run_id);
-- and a run looks up, for each thing it found, whether a person ignored it before.
CREATE INDEX drift_items_ignored_key ON drift_items (dedupe_key) WHERE status = 'ignored';
