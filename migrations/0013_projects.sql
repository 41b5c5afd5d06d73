-- 0013 projects (issue 12): each project's closure as the runs saw it.
--
-- `projects` holds one row per project directory (the canonical path), with
-- the run that last computed its closure and what it found: the go version
-- that decided pruning, the toolchain it switches to, or why it could not be
-- read (`go.mod:3: …`). A full sync forgets the projects no longer in the
-- config, so the rows (and the metrics' labels) stay bounded by it.
CREATE TABLE projects (
    dir        TEXT    PRIMARY KEY,
    last_run   INTEGER NOT NULL REFERENCES runs (id),
    seen_at    TEXT    NOT NULL,
    go         TEXT,
    toolchain  TEXT,
    error      TEXT
) STRICT;

-- Per run and project: versions the closure needs, present in the tree when
-- the run ended, and missing by reason (pending: not fetched yet, e.g. an
-- interrupted run or a zip still to add to a go.mod-only version).
CREATE TABLE project_runs (
    run_id      INTEGER NOT NULL REFERENCES runs (id),
    dir         TEXT    NOT NULL,
    needed      INTEGER NOT NULL,
    present     INTEGER NOT NULL,
    not_found   INTEGER NOT NULL,
    quarantined INTEGER NOT NULL,
    failed      INTEGER NOT NULL,
    private     INTEGER NOT NULL,
    pending     INTEGER NOT NULL,
    PRIMARY KEY (run_id, dir)
) STRICT;

-- The first few missing versions of each project run, with their reasons
-- as the run left them (versions.last_error moves on with later runs).
CREATE TABLE project_missing (
    run_id  INTEGER NOT NULL REFERENCES runs (id),
    dir     TEXT    NOT NULL,
    path    TEXT    NOT NULL,
    version TEXT    NOT NULL,
    reason  TEXT    NOT NULL,
    detail  TEXT,
    PRIMARY KEY (run_id, dir, path, version)
) STRICT;
