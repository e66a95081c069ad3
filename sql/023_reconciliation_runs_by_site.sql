-- the scheduler orders the sites by when any system last reconciled them, every round: by this index each
-- site's latest run is one probe, not a scan of every run kept (sites × systems × 30 days)
CREATE INDEX reconciliation_runs_by_site ON reconciliation_runs (site, started_at DESC);
