-- the failure-rate alert rule counts the failures first seen within its window, every round of every
-- replica: by this index it reads the window's rows, not the whole history
CREATE INDEX failures_first ON failures (first_at);
