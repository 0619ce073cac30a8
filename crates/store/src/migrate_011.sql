-- Schema version 11: each client's clock as estimated from its messages (the largest lead
-- of a boundary's own time over its arrival; see the docs' "Agents whose clock is off").
-- clock_offset_ns: how far the client's clock runs ahead of the sidecar's (negative:
-- behind), NULL until enough messages arrived to trust it. clock_skewed: 1 when that is
-- beyond the matching window, so its boundaries get no snapshots (or, with
-- --clock-skew-correction, snapshots nearest their corrected times).
ALTER TABLE clients ADD COLUMN clock_offset_ns INTEGER;
ALTER TABLE clients ADD COLUMN clock_skewed INTEGER NOT NULL DEFAULT 0;
