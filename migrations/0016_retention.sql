-- 0016 retention (issue 15): versions pruned by `gomirror prune`.
--
-- A prune goes in the commit's reverse order (src/commit.rs `unpublish`):
-- its versions become `pruning` (still in the tree, no longer in any list:
-- lists are made from `published` rows), the lists are rewritten and the
-- time recorded, the prune waits out the lists' cache lifetime, deletes
-- `.info`, then `.mod` and `.zip`, and marks them `pruned`. The statuses
-- themselves are allowed by the Rust step before this file (migrate.rs
-- `allow_pruning`), which edits the CHECK constraint as 0007 did.
-- A `pruned` row keeps its recorded sizes and hashes; it may go back to
-- `pending` when something selects it again (re-mirrored normally).

CREATE TABLE prunes (
    id                 INTEGER PRIMARY KEY,
    started_at         TEXT    NOT NULL,
    -- When `@v/list`/`@latest` no longer named its versions; NULL before.
    -- A restarted prune waits only what is left of the lists' lifetime.
    lists_rewritten_at TEXT,
    finished_at        TEXT
) STRICT;

CREATE TABLE pruned_versions (
    prune_id   INTEGER NOT NULL REFERENCES prunes (id),
    version_id INTEGER NOT NULL REFERENCES versions (id),
    was        TEXT    NOT NULL CHECK (was IN ('published', 'mod_only')),
    reason     TEXT    NOT NULL,           -- why the policy let it go, as shown
    bytes      INTEGER NOT NULL,           -- info + mod + zip sizes removed
    PRIMARY KEY (prune_id, version_id)
) STRICT;

CREATE INDEX pruned_versions_version ON pruned_versions (version_id);

-- 0001's backstop, with one way out of `published`: into `pruning`, the
-- recorded files unchanged.
DROP TRIGGER versions_published_immutable;
CREATE TRIGGER versions_published_immutable
BEFORE UPDATE OF status, info_size, mod_size, zip_size, h1_zip, h1_mod, zip_sha256, time, published_at
ON versions
WHEN OLD.status = 'published' AND (
    (NEW.status IS NOT OLD.status AND NEW.status IS NOT 'pruning')
    OR NEW.info_size IS NOT OLD.info_size OR NEW.mod_size IS NOT OLD.mod_size
    OR NEW.zip_size IS NOT OLD.zip_size OR NEW.h1_zip IS NOT OLD.h1_zip
    OR NEW.h1_mod IS NOT OLD.h1_mod OR NEW.zip_sha256 IS NOT OLD.zip_sha256
    OR NEW.time IS NOT OLD.time OR NEW.published_at IS NOT OLD.published_at)
BEGIN
    SELECT RAISE(ABORT, 'published version is immutable');
END;

-- 0007's, likewise.
DROP TRIGGER versions_mod_only_immutable;
CREATE TRIGGER versions_mod_only_immutable
BEFORE UPDATE OF status, mod_size, h1_mod
ON versions
WHEN OLD.status = 'mod_only' AND (
    NEW.status NOT IN ('mod_only', 'published', 'pruning')
    OR NEW.mod_size IS NOT OLD.mod_size OR NEW.h1_mod IS NOT OLD.h1_mod)
BEGIN
    SELECT RAISE(ABORT, 'a version published for its go.mod keeps its go.mod');
END;

-- A version being pruned only finishes: its files may be half deleted, so
-- nothing may list or re-publish it until it is `pruned`.
CREATE TRIGGER versions_pruning_finishes
BEFORE UPDATE OF status ON versions
WHEN OLD.status = 'pruning' AND NEW.status NOT IN ('pruning', 'pruned')
BEGIN
    SELECT RAISE(ABORT, 'a version being pruned is pruned first');
END;
