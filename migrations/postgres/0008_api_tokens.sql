-- API tokens: only a SHA-256 hash of each is kept. A token is found by the first 8
-- bytes of its hash (`lookup`) and then compared whole in constant time. Names are
-- never reused, revoked or not: events name their actor by it. Times are Unix
-- milliseconds, as in the delivery tables.
CREATE TABLE api_tokens (
    name         TEXT   PRIMARY KEY,
    lookup       TEXT   NOT NULL,
    token_hash   TEXT   NOT NULL,
    -- Comma-separated scope names: `orders:read,orders:write`.
    scopes       TEXT   NOT NULL,
    -- `200/s`, or NULL for no limit.
    rate         TEXT,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    -- Written at most once a minute per token.
    last_used_at BIGINT
);

CREATE INDEX api_tokens_by_lookup ON api_tokens (lookup);
