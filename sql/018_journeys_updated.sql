-- Flow (every second per changed site, in the live feed) and the reconciliation scheduler read the journeys
-- changed in the last day; finished journeys are kept for months, so without this every read scanned them all.
CREATE INDEX journeys_updated ON journeys (updated_at);
