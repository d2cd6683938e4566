-- Payloads and metadata are kept as `json` (the text as written, checked to be JSON)
-- rather than `jsonb`. The log is written once and read whole, over and over: by every
-- projection, delivery and rebuild. Printing jsonb back as text cost PostgreSQL more
-- than everything else in reading the log (about 3.7 s of its CPU per million events,
-- 70% of a full read); json is sent as it is stored. Queries that want jsonb's
-- operators cast: `payload::jsonb @> '…'`.
--
-- Rewrites the table once, under an exclusive lock: run it while no writer is up.
ALTER TABLE events
    ALTER COLUMN payload  TYPE json USING payload::json,
    ALTER COLUMN metadata TYPE json USING metadata::json;
