-- 0010 run error (issue 13): why a run could not proceed, as the whole error
-- chain (`a: b: c`) the command printed. NULL for runs that went to their end
-- (their failing versions are in run_failures below) and for runs that died
-- before recording anything.

ALTER TABLE runs ADD COLUMN error TEXT;

-- The first failing versions of a run that finished partial, with their
-- reasons, copied when the run ends: versions.last_error moves on when a later
-- run retries a version, and `status` must still say why this run failed.
-- A few per run (status shows the first; the run's counts say how many).
CREATE TABLE run_failures (
    run_id  INTEGER NOT NULL REFERENCES runs (id),
    path    TEXT    NOT NULL,
    version TEXT    NOT NULL,
    status  TEXT    NOT NULL,
    reason  TEXT    NOT NULL,
    PRIMARY KEY (run_id, path, version)
) STRICT;
