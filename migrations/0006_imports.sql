-- 0006 imports: the bundles an offline mirror applied (issue 7). A bundle is
-- recorded only after every file of it is published and its versions are
-- recorded, so the newest row is where the chain continues: the next
-- incremental bundle must have the next sequence of the same source and
-- follow this bundle id.

CREATE TABLE imports (
    id          INTEGER PRIMARY KEY,
    source      TEXT    NOT NULL,        -- the online mirror's id, from the signed manifest
    sequence    INTEGER NOT NULL CHECK (sequence >= 1),
    bundle_id   TEXT    NOT NULL,        -- hex sha256 of the manifest
    full        INTEGER NOT NULL CHECK (full IN (0, 1)),
    signer      TEXT    NOT NULL,        -- "<name>+<hash>" of the key that signed it
    versions    INTEGER NOT NULL,
    files       INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    imported_at TEXT    NOT NULL,
    UNIQUE (source, sequence)
) STRICT;
