-- 0001 init: modules, versions, runs.
--
-- Conventions for every migration:
-- * Timestamps are RFC 3339 UTC text with whole seconds ("2024-05-01T12:00:00Z"):
--   readable in the sqlite3 shell and, being fixed width, they sort as text.
-- * Tables are STRICT so a wrong type is an error, not a silent coercion.
-- * Later migrations only add (tables, columns, indexes); they never rewrite
--   published rows.

CREATE TABLE modules (
    id         INTEGER PRIMARY KEY,
    path       TEXT    NOT NULL UNIQUE,  -- module path, already validated (module.CheckPath)
    first_seen TEXT    NOT NULL
) STRICT;

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    started_at  TEXT    NOT NULL,
    ended_at    TEXT,                    -- NULL while running, and for runs found interrupted
    pid         INTEGER NOT NULL,
    outcome     TEXT    NOT NULL DEFAULT 'running'
        CHECK (outcome IN ('running', 'ok', 'partial', 'failed', 'interrupted')),
    planned     INTEGER NOT NULL DEFAULT 0,
    published   INTEGER NOT NULL DEFAULT 0,
    skipped     INTEGER NOT NULL DEFAULT 0,
    quarantined INTEGER NOT NULL DEFAULT 0,
    not_found   INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    bytes       INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE INDEX runs_outcome ON runs (outcome);

CREATE TABLE versions (
    id           INTEGER PRIMARY KEY,    -- stable handle for later tables (export history)
    module_id    INTEGER NOT NULL REFERENCES modules (id),
    version      TEXT    NOT NULL,       -- canonical semver, already validated
    status       TEXT    NOT NULL
        CHECK (status IN ('pending', 'published', 'quarantined', 'not_found', 'failed')),
    info_size    INTEGER,
    mod_size     INTEGER,
    zip_size     INTEGER,
    h1_zip       TEXT,                   -- "h1:..." of the zip (dirhash.Hash1)
    h1_mod       TEXT,                   -- "h1:..." of go.mod
    zip_sha256   TEXT,                   -- lowercase hex
    time         TEXT,                   -- the Time field of .info, as served
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,                   -- quarantine reason, not-found reason or fetch error
    last_run_id  INTEGER REFERENCES runs (id),
    first_seen   TEXT    NOT NULL,
    updated_at   TEXT    NOT NULL,
    published_at TEXT,
    UNIQUE (module_id, version),
    -- A published row always describes what is in the tree.
    CHECK (status != 'published' OR (
        info_size IS NOT NULL AND mod_size IS NOT NULL AND zip_size IS NOT NULL
        AND h1_zip IS NOT NULL AND h1_mod IS NOT NULL AND zip_sha256 IS NOT NULL
        AND time IS NOT NULL AND published_at IS NOT NULL))
) STRICT;

CREATE INDEX versions_status ON versions (status, updated_at);

-- A published file never changes (STYLE.md §5), so neither does its row.
-- The store's statements already skip published rows; this trigger is the
-- backstop for any other writer. Columns not listed here (added later, e.g.
-- export bookkeeping) stay writable.
CREATE TRIGGER versions_published_immutable
BEFORE UPDATE OF status, info_size, mod_size, zip_size, h1_zip, h1_mod, zip_sha256, time, published_at
ON versions
WHEN OLD.status = 'published' AND (
    NEW.status IS NOT OLD.status
    OR NEW.info_size IS NOT OLD.info_size OR NEW.mod_size IS NOT OLD.mod_size
    OR NEW.zip_size IS NOT OLD.zip_size OR NEW.h1_zip IS NOT OLD.h1_zip
    OR NEW.h1_mod IS NOT OLD.h1_mod OR NEW.zip_sha256 IS NOT OLD.zip_sha256
    OR NEW.time IS NOT OLD.time OR NEW.published_at IS NOT OLD.published_at)
BEGIN
    SELECT RAISE(ABORT, 'published version is immutable');
END;
