-- Customers' data keys (store::vault). Each seals the personal data of one order of a
-- customer's (addresses, email, phone, note); the log holds only that sealed text. The
-- key itself is sealed by the server's key (store::sealed), for the place
-- `customer_keys.sealed_key:<key_id>`. Erasing a customer deletes every key of theirs,
-- and with them every way to read that data: the log is never rewritten. Times are
-- Unix milliseconds.
CREATE TABLE customer_keys (
    key_id      TEXT   PRIMARY KEY,
    customer_id TEXT   NOT NULL,
    sealed_key  TEXT   NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX customer_keys_customer ON customer_keys (customer_id);
