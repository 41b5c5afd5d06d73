-- 0003 sumdb: what the checksum database told us, so that every later
-- answer can be proved consistent with it, and what the tree's offline copy
-- of the database (sumdb/<name>/...) was built from.

-- Signed tree heads we verified (signature, and consistency with every
-- smaller head already here). The largest is the head every newer one must
-- extend; a head that does not is a forked log. `pinned` heads were
-- published as the offline copy's `latest`: the tree serves the tiles every
-- lookup needs to verify against each of them.
CREATE TABLE sumdb_heads (
    id       INTEGER PRIMARY KEY,
    db_name  TEXT    NOT NULL,             -- checksum database name, e.g. sum.golang.org
    size     INTEGER NOT NULL CHECK (size >= 0),
    hash     TEXT    NOT NULL,             -- base64 tree hash, as in the note
    note     BLOB    NOT NULL,             -- the signed note as served
    seen_at  TEXT    NOT NULL,
    pinned   INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1)),
    UNIQUE (db_name, size)
) STRICT;

-- The database's record of a version: its position in the log. The two
-- go.sum lines are not stored: they equal the version's h1_zip and h1_mod
-- (sync refuses a version otherwise), so they are rebuilt from those.
-- Written before the version is recorded published. Private versions
-- (GONOSUMDB patterns) have no row.
CREATE TABLE sumdb_records (
    version_id INTEGER NOT NULL REFERENCES versions (id),
    db_name    TEXT    NOT NULL,
    record_id  INTEGER NOT NULL CHECK (record_id >= 0),
    PRIMARY KEY (version_id, db_name)
) STRICT;
