-- The relay's lookups read what is waiting to go out, never the backlog a down system holds, which
-- grows for as long as it is down (they read every waiting row twice a second before):
-- the systems with commands waiting (one probe each), and a system's next ones in order, stopping at the batch;
CREATE INDEX commands_waiting ON commands (system, seq) WHERE status IN ('pending', 'held');
-- and the commands of a down system still to be held.
CREATE INDEX commands_pending ON commands (system) WHERE status = 'pending';
