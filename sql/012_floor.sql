-- Floor operations (CONTRACT section 10): a floor action's caller-chosen step id, so that a repeat finds
-- the first answer and does nothing twice; and the manual steps of every system in a fallback's ledger.

-- In normal operation a floor action is a command; the step id names it for good.
CREATE TABLE floor_steps (
    step_id    text PRIMARY KEY,
    journey_id uuid        NOT NULL,
    site       text        NOT NULL,
    action     text        NOT NULL,
    actor      text        NOT NULL,
    command_id uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX floor_steps_created ON floor_steps (created_at);

-- During a fallback it is a manual step: the ledger row carries the step id.
ALTER TABLE fallback_ledger ADD COLUMN step_id text;
CREATE UNIQUE INDEX fallback_ledger_step ON fallback_ledger (step_id) WHERE step_id IS NOT NULL;
ALTER TABLE fallback_ledger DROP CONSTRAINT fallback_ledger_action_check;
ALTER TABLE fallback_ledger ADD CONSTRAINT fallback_ledger_action_check
    CHECK (action IN ('check_in', 'issue_ticket', 'call', 'recall', 'no_show', 'transfer', 'start', 'complete',
                      'book_walk_in', 'mark_unverified', 'verify', 'set_priority'));
