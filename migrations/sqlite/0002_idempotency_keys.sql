-- One row per Idempotency-Key. status_code is NULL while the first request is in flight.
CREATE TABLE idempotency_keys (
    key           TEXT    PRIMARY KEY,
    request_hash  TEXT    NOT NULL,
    status_code   INTEGER,
    response_body BLOB,
    created_at    INTEGER NOT NULL, -- unix milliseconds
    completed_at  INTEGER
) STRICT;

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
