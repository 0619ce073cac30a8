-- Schema version 5: the OTLP export outbox.
--
-- With --otlp-export, every run that ends is appended here in the transaction that ends
-- it, in commit order; the exporter sends runs after `export_cursor.seq` and moves the
-- cursor only once the receiver has acknowledged them, so a receiver that is down, or a
-- sidecar killed mid-export, loses nothing (at most the last batch is sent again, with the
-- same ids, which OTLP receivers that deduplicate - runlens does - store once).
-- Retention must not delete runs at or after the cursor while export is configured.
CREATE TABLE export_outbox (
    seq     INTEGER PRIMARY KEY,
    run_id  TEXT NOT NULL
);
CREATE TABLE export_cursor (
    exporter  TEXT PRIMARY KEY,   -- 'otlp'
    seq       INTEGER NOT NULL    -- the last outbox entry acknowledged by the receiver
);
