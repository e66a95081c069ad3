-- The one site its sender could speak for, when the failed event came from a connector limited to sites
-- (backend/journeys/merge.py, "scope"): a retry applies it for that site alone, as its first delivery
-- would have been.
ALTER TABLE failures ADD COLUMN scope text;
