-- 0015 index entries (issue 16): the downstream index feed, one entry per
-- version published with its zip, in the order the commit step recorded them.
--
-- `ts_ns` is the entry's Timestamp, nanoseconds since the Unix epoch, UNIQUE:
-- a reader pages with an inclusive `since`, so timestamps strictly increase
-- and a page can never end inside a run of equal ones. A version has one
-- entry; publishing it again (after a prune) moves it to a new timestamp.
-- The feed serves only entries whose version is `published` now, so versions
-- published for their go.mod only, and pruned ones, are never in it.
CREATE TABLE index_entries (
    version_id INTEGER PRIMARY KEY REFERENCES versions (id),
    ts_ns      INTEGER NOT NULL UNIQUE
) STRICT;

-- Versions published before this migration, in the order they were
-- published: their second, plus one microsecond per version recorded in the
-- same second (a batch shares its published_at).
INSERT INTO index_entries (version_id, ts_ns)
SELECT id,
       unixepoch(published_at) * 1000000000
           + (ROW_NUMBER() OVER (PARTITION BY published_at ORDER BY id) - 1) * 1000
FROM versions
WHERE status = 'published';
