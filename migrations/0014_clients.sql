-- 0014 clients (issue 14): what the web server's access log says clients did.
--
-- Two tables are contracts between stages:
-- - `client_use` is written by reading the log and read by `clients`,
--   `status`, metrics and retention (a version's last use);
-- - `client_misses` is written by reading the log and read and updated by
--   the sync that learns from it.
-- Times are RFC 3339 UTC text with whole seconds, from the log's lines.

-- Per module version, everything the log ever said about it. `version` is
-- '' for requests about the module as a whole (`@v/list`, `@latest`).
-- A use is a GET answered 200, 206 or 304; a miss is a 404.
CREATE TABLE client_use (
    path        TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    uses        INTEGER NOT NULL DEFAULT 0,
    misses      INTEGER NOT NULL DEFAULT 0,
    bytes       INTEGER NOT NULL DEFAULT 0,   -- body bytes sent for its uses
    first_used  TEXT,
    last_used   TEXT,
    last_missed TEXT,
    PRIMARY KEY (path, version)
) STRICT, WITHOUT ROWID;

CREATE INDEX client_use_last_used ON client_use (last_used);

-- Misses that may become work: a canonical version of a valid module path
-- missed through the proxy (`.info`, `.mod`, `.zip`) or the checksum
-- database (`lookup/<path>@<version>`): kind 'version'; or a missed
-- `@v/list` / `@latest` of a valid module path: kind 'listing', version ''.
-- Hostile and non-canonical requests never get here (they are counted with
-- the log's figures). The learning sync sets `learned_at` and `outcome`
-- (e.g. published, not_found, excluded, private) and, when upstream has
-- nothing, `retry_after`: the row is not learned again before it, nor
-- again at all unless a client misses it again after `learned_at`.
CREATE TABLE client_misses (
    path         TEXT    NOT NULL,
    version      TEXT    NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('version', 'listing')),
    via          TEXT    NOT NULL CHECK (via IN ('proxy', 'lookup')),
    misses       INTEGER NOT NULL,
    first_missed TEXT    NOT NULL,
    last_missed  TEXT    NOT NULL,
    learned_at   TEXT,
    outcome      TEXT,
    retry_after  TEXT,
    PRIMARY KEY (path, version),
    CHECK ((kind = 'listing') = (version = ''))
) STRICT, WITHOUT ROWID;

CREATE INDEX client_misses_due ON client_misses (last_missed);

-- The tables below belong to reading the log alone (src/state/clients.rs).

-- Where reading the log resumes: the file's identity (device, inode), the
-- sha256 of its first `head_len` bytes (at most 4 KiB, never beyond what
-- was read) and the offset after the last whole line read. `generation`
-- grows with every batch recorded: a reader records its batch only if the
-- generation is still the one it started from, so two readers at once
-- (`gomirror clients` during a sync) never count a line twice.
CREATE TABLE client_log_cursor (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    dev         INTEGER NOT NULL,
    ino         INTEGER NOT NULL,
    head_len    INTEGER NOT NULL,
    head_sha256 TEXT    NOT NULL,
    offset      INTEGER NOT NULL,
    generation  INTEGER NOT NULL,
    read_at     TEXT    NOT NULL
) STRICT;

-- Counts of everything the log said, by key: the result classes of
-- protocol requests (use, probe, miss, client_gone, range_not_satisfiable,
-- forbidden, server_error, other), `bytes` (body bytes of every protocol
-- request), and what was skipped (unparsed, not_protocol, rejected,
-- non_canonical). `hour` is Unix time / 3600; -1 holds the totals since the
-- first line, the others are kept for `clients --since` (CLIENT_HOURS_KEPT).
CREATE TABLE client_totals (
    hour INTEGER NOT NULL,
    key  TEXT    NOT NULL,
    n    INTEGER NOT NULL,
    PRIMARY KEY (hour, key)
) STRICT, WITHOUT ROWID;

-- By hour, for `clients --since`: uses, misses and bytes per module path
-- (top modules), and misses per module version (top misses).
CREATE TABLE client_module_hours (
    hour   INTEGER NOT NULL,
    path   TEXT    NOT NULL,
    uses   INTEGER NOT NULL,
    misses INTEGER NOT NULL,
    bytes  INTEGER NOT NULL,
    PRIMARY KEY (hour, path)
) STRICT, WITHOUT ROWID;

CREATE TABLE client_miss_hours (
    hour    INTEGER NOT NULL,
    path    TEXT    NOT NULL,
    version TEXT    NOT NULL,
    misses  INTEGER NOT NULL,
    PRIMARY KEY (hour, path, version)
) STRICT, WITHOUT ROWID;

-- Hostile request paths refused, by reason, with the last one seen.
CREATE TABLE client_rejects (
    reason    TEXT    PRIMARY KEY,
    n         INTEGER NOT NULL,
    last_seen TEXT    NOT NULL,
    example   TEXT    NOT NULL
) STRICT, WITHOUT ROWID;
