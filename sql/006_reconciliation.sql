-- Reconciliation (CONTRACT section 5), beyond 004: the system's record as the run read it, so a repair
-- needs no second read to know what to take; and the open drift of one reference, found fast.
ALTER TABLE drift_items ADD COLUMN record jsonb;
CREATE INDEX drift_items_open_ref ON drift_items (system, site, ref) WHERE status IN ('open', 'repairing');
CREATE INDEX drift_items_repairing ON drift_items (updated_at) WHERE status = 'repairing';
