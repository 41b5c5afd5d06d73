-- 0012 export_go_mod_only (issue 12): bundles carry versions published for
-- their go.mod only (`.info` and `.mod`, no zip). An export remembers
-- whether it held the version's zip, so that a version exported as
-- `mod_only` and published with its zip later is exported again, with it.

ALTER TABLE export_versions ADD COLUMN with_zip INTEGER NOT NULL DEFAULT 1
    CHECK (with_zip IN (0, 1));
