-- One row per Idempotency-Key. status_code is NULL while the first request is in flight.
CREATE TABLE idempotency_keys (
    key           text        PRIMARY KEY,
    request_hash  text        NOT NULL,
    status_code   smallint,
    response_body bytea,
    created_at    timestamptz NOT NULL,
    completed_at  timestamptz
);

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
