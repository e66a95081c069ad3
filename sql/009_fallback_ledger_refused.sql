-- A manual step is in the ledger before its event is published (so a failure after the publish cannot
-- lose it); a step whose event the apply worker refuses stays there as `refused`, and the replay skips it.
ALTER TABLE fallback_ledger DROP CONSTRAINT fallback_ledger_replay_status_check;
ALTER TABLE fallback_ledger ADD CONSTRAINT fallback_ledger_replay_status_check
    CHECK (replay_status IN ('pending', 'pushed', 'conflict', 'in_system', 'refused'));
