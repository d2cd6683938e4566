-- Storefront sources: a Shopify shop or WooCommerce site whose webhooks we take. The
-- signing secret is sealed (store::sealed), like a subscription's; after a rotation
-- the previous one still verifies until `previous_secret_until`. Times are Unix ms.
CREATE TABLE sources (
    name                  TEXT   PRIMARY KEY,
    platform              TEXT   NOT NULL CHECK (platform IN ('shopify', 'woocommerce')),
    -- The only shop domain (Shopify) or site URL (WooCommerce) accepted, if set.
    shop                  TEXT,
    secret                TEXT   NOT NULL,
    previous_secret       TEXT,
    previous_secret_until BIGINT,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);

-- Every verified delivery, stored before it is acknowledged: the body as received,
-- the platform's headers, and the key that makes a repeated delivery a no-op. The
-- applier takes `waiting` rows in order and leaves each `applied` or `failed`
-- (with the reason); a crash in between leaves it `waiting`, to be applied again.
CREATE TABLE source_inbox (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source      TEXT   NOT NULL REFERENCES sources (name) ON DELETE CASCADE,
    dedup_key   TEXT   NOT NULL,
    topic       TEXT   NOT NULL,
    -- A JSON object of the platform's headers (X-Shopify-*, X-WC-Webhook-*).
    headers     TEXT   NOT NULL,
    body        TEXT   NOT NULL,
    received_at BIGINT NOT NULL,
    state       TEXT   NOT NULL CHECK (state IN ('waiting', 'applied', 'failed')),
    -- Set once the body has been read: the order it is about.
    order_id    TEXT,
    attempts    BIGINT NOT NULL DEFAULT 0,
    -- For `applied`: how many commands it took (0: the order already showed it all).
    commands    BIGINT,
    error_code  TEXT,
    error       TEXT,
    -- 1 when the domain refused its command (a refund before the payment): it is put
    -- back in line whenever its order changes, since the change may be what it lacked.
    refused     BIGINT NOT NULL DEFAULT 0,
    applied_at  BIGINT,
    UNIQUE (source, dedup_key)
);
CREATE INDEX source_inbox_by_state ON source_inbox (state, id);
CREATE INDEX source_inbox_by_source ON source_inbox (source, state, id);

-- Bodies are a few KB of JSON, over the TOAST threshold: pglz compressing each one
-- took more of PostgreSQL's CPU than the rest of the insert. lz4 is several times
-- cheaper; a server built without it keeps the default.
DO $$
BEGIN
    ALTER TABLE source_inbox ALTER COLUMN body SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    NULL;
END
$$;
