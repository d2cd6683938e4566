-- Which server delivers each subscription, how its breaker stands there and how wide
-- its in-flight window is: written
-- by the holder of the subscription's lease when it takes it, whenever the breaker
-- moves, and every few seconds, so that any server can answer a status truthfully.
-- A row whose `reported_at` is old belongs to a server that died: nobody holds it.
CREATE TABLE delivery_leases (
    subscription_id TEXT   PRIMARY KEY REFERENCES subscriptions (id) ON DELETE CASCADE,
    node            TEXT   NOT NULL,
    since           BIGINT NOT NULL,
    breaker         TEXT   NOT NULL,
    -- The in-flight window there (delivery::window), at most max_in_flight.
    window_size     BIGINT NOT NULL,
    reported_at     BIGINT NOT NULL
);
