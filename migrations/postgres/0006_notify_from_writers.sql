-- The statement trigger of 0004 made every command's commit take PostgreSQL's global
-- notification lock, which serialised all commits. Writers now announce new events
-- themselves, at most once per few milliseconds and outside their transactions
-- (store::reader::LogSignal), and readers still poll as a fallback.
DROP TRIGGER events_notify ON events;
DROP FUNCTION events_notify();
