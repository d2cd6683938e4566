-- Wakes readers in other processes when events commit (NOTIFY is delivered at commit).
-- One notification per statement, and PostgreSQL folds duplicates within a transaction.
CREATE FUNCTION events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orderlog_events', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_notify
    AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify();
