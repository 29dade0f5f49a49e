-- Parking a status update and recording its payment serialise on one lock (issue 33.2).
--
-- Without it the two could miss each other: the recording statement's check for parked
-- updates read a snapshot taken before a parked row committed, and the parking
-- request's re-check ran before the payment committed, so the update stayed parked.
-- Now the parker takes an exclusive transaction lock on the reference's bucket before
-- it looks for the payment (a fresh statement, so a fresh snapshot), and the recording
-- statement takes the same buckets shared and only then looks for parked updates (a
-- VOLATILE function: its query gets a snapshot taken after the locks). Whichever gets
-- the bucket second sees what the first committed.
--
-- Buckets bound the locks one batch holds (at most 64 entries in the shared lock table,
-- whatever the batch size); recorders never wait for each other (shared locks), a parker
-- waits at most for the batches in flight in its bucket. Every holder of several buckets
-- takes them in ascending order, so no cycle can form. The first key (1885436263, 'payg')
-- keeps these locks apart from every other advisory lock of the database.
CREATE FUNCTION payment_service.parking_bucket(reference text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT hashtext(reference) & 63 $$;

CREATE FUNCTION payment_service.lock_for_parking(reference text) RETURNS void
LANGUAGE sql VOLATILE
AS $$ SELECT pg_advisory_xact_lock(1885436263, payment_service.parking_bucket(reference)) $$;

CREATE FUNCTION payment_service.parked_among(refs text[]) RETURNS text[]
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(1885436263, b)
    FROM (SELECT DISTINCT payment_service.parking_bucket(r) AS b FROM unnest(refs) r ORDER BY 1) s;
    RETURN ARRAY(SELECT DISTINCT u.reference_number
                 FROM payment_service.pending_status_updates u
                 WHERE u.reference_number = ANY(refs));
END
$$;
