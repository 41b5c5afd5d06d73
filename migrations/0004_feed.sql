-- 0004 feed: following index.golang.org (migration 0003 is the checksum
-- database's).
--
-- * feed_cursor: one row, the `since` of the next feed request at full
--   precision (RFC 3339 with nanoseconds, as the feed writes it), and the
--   newest entry timestamp seen (for feed lag). It moves only in the
--   transaction that records a page's entries as pending versions.
-- * feed_seen: the raw (Path, Version) pairs whose Timestamp equals `since`:
--   `since` is inclusive, so the next page repeats them and they are skipped.
-- * versions.origin: who planned the version. Feed versions are fetched from
--   the feed's proxy base and retried across runs with backoff.
-- * versions.next_try_at: a failed feed version waits until then (NULL: due).
-- * modules.listed_at: when a watched module's @v/list was last read; with
--   the feed on, a watched module is listed again only when its refresh
--   interval has passed.

CREATE TABLE feed_cursor (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    since      TEXT    NOT NULL,
    newest     TEXT,
    updated_at TEXT    NOT NULL
) STRICT;

CREATE TABLE feed_seen (
    path    TEXT NOT NULL,               -- raw feed string, untrusted
    version TEXT NOT NULL,               -- raw feed string, untrusted
    PRIMARY KEY (path, version)
) STRICT;

ALTER TABLE versions ADD COLUMN origin TEXT NOT NULL DEFAULT 'watch'
    CHECK (origin IN ('watch', 'feed'));
ALTER TABLE versions ADD COLUMN next_try_at TEXT;

ALTER TABLE modules ADD COLUMN listed_at TEXT;
