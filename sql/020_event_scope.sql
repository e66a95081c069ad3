-- The one site its sender could speak for, when an event came from a connector limited to sites
-- (backend/journeys/merge.py, "scope"). A failure keeps it so that a retry applies the event for that site
-- alone, as its first delivery would have been; an applied event keeps it so that the journey's timeline
-- can say which events count where it sits.
ALTER TABLE failures ADD COLUMN scope text;
ALTER TABLE events ADD COLUMN scope text;
