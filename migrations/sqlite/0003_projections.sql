-- One row per projection: its active generation of tables, its checkpoint (the cursor
-- of the last event applied), its state, and any rebuild under way. The runner locks
-- this row in every batch's transaction, so a checkpoint, a skip and a blue/green
-- switch never interleave.
CREATE TABLE projections (
    name                    TEXT   PRIMARY KEY,
    version                 BIGINT NOT NULL,
    generation              BIGINT NOT NULL,
    cursor_tx               BIGINT NOT NULL DEFAULT 0,
    cursor_position         BIGINT NOT NULL DEFAULT 0,
    status                  TEXT   NOT NULL DEFAULT 'running',
    last_error              TEXT,
    failed_tx               BIGINT,
    failed_position         BIGINT,
    failed_event_id         TEXT,
    rebuild_generation      BIGINT,
    rebuild_version         BIGINT,
    rebuild_cursor_tx       BIGINT,
    rebuild_cursor_position BIGINT,
    retired_generation      BIGINT,
    updated_at              TEXT   NOT NULL
);

-- Events an operator chose to skip in a failed projection: kept, and visible.
CREATE TABLE projection_skips (
    name       TEXT   NOT NULL,
    event_id   TEXT   NOT NULL,
    position   BIGINT NOT NULL,
    error      TEXT   NOT NULL,
    skipped_at TEXT   NOT NULL,
    PRIMARY KEY (name, event_id)
);
