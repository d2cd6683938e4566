-- A rebuild fails apart from the serving generation, which keeps following the log
-- meanwhile: its failure (the error and the event it stopped on) has columns of its own.
ALTER TABLE projections ADD COLUMN rebuild_last_error TEXT;
ALTER TABLE projections ADD COLUMN rebuild_failed_tx BIGINT;
ALTER TABLE projections ADD COLUMN rebuild_failed_position BIGINT;
ALTER TABLE projections ADD COLUMN rebuild_failed_event_id TEXT;

-- The code version a skip was made under: a rebuild by that same code skips the event
-- again, so it equals the view maintained live; other code applies it. NULL for skips
-- recorded before this column existed (no rebuild skips them).
ALTER TABLE projection_skips ADD COLUMN version BIGINT;
