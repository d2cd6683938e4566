-- The event log: the single source of truth. postgres-es writes the first seven columns;
-- the database stamps the rest, so no writer can forget or forge them.
CREATE TABLE events (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL CHECK (sequence >= 1),
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    -- Strictly increasing, but NOT committed in order: readers of the global log pair it
    -- with transaction_id (see DESIGN.md, "Global order on PostgreSQL").
    global_position bigint      GENERATED ALWAYS AS IDENTITY,
    event_id        uuid        NOT NULL DEFAULT gen_random_uuid(),
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    -- A second writer of the same sequence loses here: optimistic concurrency.
    PRIMARY KEY (aggregate_type, aggregate_id, sequence),
    UNIQUE (global_position),
    UNIQUE (event_id)
);

-- The catch-up reader's cursor is (transaction_id, global_position).
CREATE INDEX events_by_cursor ON events (transaction_id, global_position);

CREATE FUNCTION events_are_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on events is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_refuse_update_and_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();

CREATE TRIGGER events_refuse_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();
