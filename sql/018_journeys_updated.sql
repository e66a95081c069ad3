-- Flow (every second per changed site, in the live feed) and the reconciliation scheduler read the journeys
-- changed in the last day; journeys stay, so without this every read scanned the whole history.
CREATE INDEX journeys_updated ON journeys (updated_at);
