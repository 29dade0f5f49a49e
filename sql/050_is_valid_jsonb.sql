-- Is this text valid JSON? The portable form of PostgreSQL 16's
-- pg_input_is_valid(text, 'jsonb'), for PostgreSQL 15 (gateway/db/server.py chooses which
-- one the staging batch uses). The exception block costs a subtransaction per call: it is
-- evaluated only for metadata that arrived as a JSON string, which is rare.
CREATE OR REPLACE FUNCTION payment_service.is_valid_jsonb(value text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    PERFORM value::jsonb;
    RETURN true;
EXCEPTION WHEN data_exception THEN
    RETURN false;
END
$$;
