-- Retention keeps the inbox rows of a fallback's steps until the fallback has ended: one probe per inbox
-- row it would purge, however long the ledgers kept.
CREATE INDEX fallback_ledger_event ON fallback_ledger (event_source, event_id);
