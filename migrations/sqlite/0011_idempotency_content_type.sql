-- The Content-Type of the kept response, so that a replay is served as the first answer
-- was. NULL for a response kept before this column existed (every one of them was
-- served as application/json) and for one without a body type.
ALTER TABLE idempotency_keys ADD COLUMN content_type TEXT;
