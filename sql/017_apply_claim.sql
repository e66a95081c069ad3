-- The apply worker's first round trip of a batch (backend/ingest/apply.py): claim the batch's events in the
-- inbox, taking the advisory locks on every reference and subject it names, then resolve those references
-- and lock their journeys. Two statements, as before, but in one call: each statement of a volatile
-- function takes a snapshot of its own, so the second sees as committed every transaction that held one of
-- the locks the first waited for, as the second round trip it replaces did.
--
-- Rows: one per event claimed (source, id), then one per reference resolved (ref, journey_id, state,
-- created_at; state NULL when the journey was merged away meanwhile: the caller resolves again).
CREATE FUNCTION apply_claim(sources text[], ids text[], locks bigint[], refs text[])
RETURNS TABLE (source text, id text, ref text, journey_id uuid, state jsonb, created_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    INSERT INTO event_inbox AS i (source, id)
    SELECT k.source, k.id FROM unnest(sources, ids) AS k(source, id)
    WHERE (SELECT count(*) FROM unnest(locks) AS l WHERE pg_advisory_xact_lock(l) IS NOT NULL) >= 0
    ON CONFLICT DO NOTHING
    RETURNING i.source, i.id, NULL::text, NULL::uuid, NULL::jsonb, NULL::timestamptz;
    RETURN QUERY
    WITH mapped AS (SELECT r.ref, r.journey_id FROM journey_refs r WHERE r.ref = ANY(refs)),
    locked AS (SELECT j.id, j.state, j.created_at FROM journeys j
               WHERE j.id IN (SELECT m.journey_id FROM mapped m) ORDER BY j.id FOR UPDATE)
    SELECT NULL::text, NULL::text, m.ref, m.journey_id, l.state, l.created_at
    FROM mapped m LEFT JOIN locked l ON l.id = m.journey_id;
END
$$;
