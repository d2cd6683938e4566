-- Deliveries: every subscription is an independent reader of the log with its own
-- durable cursor. Times are Unix milliseconds, so both backends compare them alike.
CREATE TABLE subscriptions (
    id                    TEXT   PRIMARY KEY,
    kind                  TEXT   NOT NULL CHECK (kind IN ('webhook', 'nats')),
    -- The webhook URL, or the NATS subject prefix.
    target                TEXT   NOT NULL,
    -- A JSON array of event type patterns: `order.*`, `payment.captured`, `*`.
    event_types           TEXT   NOT NULL,
    description           TEXT,
    max_in_flight         BIGINT NOT NULL,
    state                 TEXT   NOT NULL CHECK (state IN ('active', 'paused', 'disabled')),
    state_reason          TEXT,
    secret                TEXT,
    -- After a rotation the previous secret keeps signing until this time.
    previous_secret       TEXT,
    previous_secret_until BIGINT,
    cursor_tx             BIGINT NOT NULL,
    cursor_position       BIGINT NOT NULL,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);

-- Messages that did not go through on their first attempt, with the later events of
-- their stream (one aggregate) queued behind them: `waiting` for the next attempt, or
-- `dead` once the retry schedule is exhausted. Only the head of a stream is attempted,
-- so each stream stays in order while the others go on.
CREATE TABLE delivery_queue (
    subscription_id TEXT   NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    event_id        TEXT   NOT NULL,
    stream          TEXT   NOT NULL,
    sequence        BIGINT NOT NULL,
    position        BIGINT NOT NULL,
    message         TEXT   NOT NULL,
    state           TEXT   NOT NULL CHECK (state IN ('waiting', 'dead')),
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    queued_at       BIGINT NOT NULL,
    dead_at         BIGINT,
    last_error      TEXT,
    PRIMARY KEY (subscription_id, event_id)
);
CREATE INDEX delivery_queue_stream ON delivery_queue (subscription_id, stream, sequence);

-- Every attempt of every delivery, kept for ORDERLOG_DELIVERY_ATTEMPT_RETENTION.
CREATE TABLE delivery_attempts (
    subscription_id TEXT   NOT NULL,
    event_id        TEXT   NOT NULL,
    position        BIGINT NOT NULL,
    attempted_at    BIGINT NOT NULL,
    outcome         TEXT   NOT NULL,
    status          BIGINT,
    latency_ms      BIGINT NOT NULL,
    detail          TEXT
);
CREATE INDEX delivery_attempts_event ON delivery_attempts (subscription_id, event_id);
CREATE INDEX delivery_attempts_time ON delivery_attempts (attempted_at);
