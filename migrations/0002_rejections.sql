-- 0002 rejections: entries upstream listed that can never be mirrored
-- (hostile or malformed versions in @v/list or @latest), with the reason.
-- They are not versions (they fail Go's rules), so they live apart from
-- `versions`; one row per run that saw them, so `status` shows the latest.

CREATE TABLE rejections (
    id       INTEGER PRIMARY KEY,
    run_id   INTEGER NOT NULL REFERENCES runs (id),
    module   TEXT    NOT NULL,           -- module path as configured (validated)
    entry    TEXT    NOT NULL,           -- the raw upstream string, untrusted
    reason   TEXT    NOT NULL,
    seen_at  TEXT    NOT NULL
) STRICT;

CREATE INDEX rejections_by_time ON rejections (seen_at);
