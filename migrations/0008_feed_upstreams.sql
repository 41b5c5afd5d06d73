-- 0008 feed and upstreams (issue 13).
--
-- * feed_cursor.page_cap: the most entries the index was seen to serve per
--   page when it served fewer than asked and yet had more behind (proved by
--   the next page bringing new entries at the previous page's last
--   Timestamp). A page that brings nothing new and holds that many entries
--   cannot move past its Timestamp: the run fails naming it instead of
--   taking the page for the end of the feed. NULL: no cap seen (the
--   documented one, 2000, applies).
-- * feed_cursor.backwards: feed entries dropped because their Timestamp was
--   older than the cursor (the index went backwards), over all runs.
-- * upstream_health: per upstream base URL (password redacted), requests
--   made, requests that failed (after their retries), and the last failure.

ALTER TABLE feed_cursor ADD COLUMN page_cap INTEGER;
ALTER TABLE feed_cursor ADD COLUMN backwards INTEGER NOT NULL DEFAULT 0;

CREATE TABLE upstream_health (
    upstream        TEXT    PRIMARY KEY,
    requests        INTEGER NOT NULL DEFAULT 0,
    errors          INTEGER NOT NULL DEFAULT 0,
    last_failure_at TEXT,
    last_failure    TEXT,
    updated_at      TEXT    NOT NULL
) STRICT;
