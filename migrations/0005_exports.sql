-- 0005 exports: air-gap bundles written by `gomirror export`. A row is
-- written only once its bundle is completely written and fsynced, in the
-- same transaction as what it contained, so an interrupted export leaves
-- no trace and the next one holds the same versions.
--
-- * exports: one per bundle; `sequence` counts per source (1, 2, …),
--   `follows` of the next bundle is this `bundle_id`.
-- * export_versions: the module versions whose files a bundle holds.
-- * export_tiles: the checksum-database tiles it holds, tree-relative
--   (`sumdb/<name>/tile/…`); tiles are not versions' files, so the next
--   incremental export subtracts them here.

CREATE TABLE exports (
    id         INTEGER PRIMARY KEY,
    source     TEXT    NOT NULL,
    sequence   INTEGER NOT NULL CHECK (sequence >= 1),
    bundle_id  TEXT    NOT NULL UNIQUE,   -- lowercase hex sha256 of manifest.json
    full       INTEGER NOT NULL CHECK (full IN (0, 1)),
    created    TEXT    NOT NULL,          -- as in the manifest
    completed  TEXT    NOT NULL,          -- when the bundle was fsynced and renamed
    files      INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,          -- bundle bytes on disk, all volumes
    path       TEXT    NOT NULL,          -- the bundle file, or its first volume
    UNIQUE (source, sequence)
) STRICT;

CREATE TABLE export_versions (
    export_id  INTEGER NOT NULL REFERENCES exports (id),
    version_id INTEGER NOT NULL REFERENCES versions (id),
    PRIMARY KEY (export_id, version_id)
) STRICT;

CREATE INDEX export_versions_version ON export_versions (version_id);

CREATE TABLE export_tiles (
    export_id INTEGER NOT NULL REFERENCES exports (id),
    tile      TEXT    NOT NULL,
    PRIMARY KEY (export_id, tile)
) STRICT;

CREATE INDEX export_tiles_tile ON export_tiles (tile);
