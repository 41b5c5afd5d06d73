-- 0011 file sha256: the sha256 of every published file, not only the zip's,
-- so `gomirror verify` can tell an edited `.info` or `.mod` from the one
-- published (see: #13). Rows published before this migration keep NULL:
-- verify checks their `.info` by content (Version, Time, size) and their
-- `.mod` by its `h1:`, and says how many it checked that way.

ALTER TABLE versions ADD COLUMN info_sha256 TEXT;   -- lowercase hex, as served
ALTER TABLE versions ADD COLUMN mod_sha256 TEXT;    -- lowercase hex

-- Written once, in the commit that publishes the version; after that they
-- describe the tree like the columns 0001 guards.
CREATE TRIGGER versions_published_sha256_immutable
BEFORE UPDATE OF info_sha256, mod_sha256 ON versions
WHEN OLD.status = 'published' AND (
    (OLD.info_sha256 IS NOT NULL AND NEW.info_sha256 IS NOT OLD.info_sha256)
    OR (OLD.mod_sha256 IS NOT NULL AND NEW.mod_sha256 IS NOT OLD.mod_sha256))
BEGIN
    SELECT RAISE(ABORT, 'published version is immutable');
END;
