-- A connector limited to sites speaks for them alone (backend/journeys/merge.py). A failure keeps the sites
-- its sender was limited to, so that a retry applies the event there alone, as its first delivery would
-- have been; an applied event keeps the one site it spoke for (its scope), so that the journey's timeline
-- can say which events count where the journey sits.
ALTER TABLE failures ADD COLUMN sender_sites jsonb;  -- an array of sites
ALTER TABLE events ADD COLUMN scope text;
