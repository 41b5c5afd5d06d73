-- 0007 go_mod_only: versions published for their go.mod only.
--
-- A project's module graph reads the go.mod of versions no build needs the
-- files of (versions MVS does not select, dependencies of pruned modules).
-- Such a version is fetched without its zip and recorded `mod_only`: its
-- `.info` and `.mod` are in the tree, it is not in `@v/list` or `@latest`
-- (so the lists stay truthful), and it becomes `published` when something
-- needs its zip. The status itself is allowed by the Rust step before this
-- file (migrate.rs `allow_go_mod_only`), which edits the CHECK constraints.

-- Its go.mod never changes, and it never goes back: only `published` (its
-- zip added) follows. Like versions_published_immutable, a backstop for
-- writers other than the store.
CREATE TRIGGER versions_mod_only_immutable
BEFORE UPDATE OF status, mod_size, h1_mod
ON versions
WHEN OLD.status = 'mod_only' AND (
    NEW.status NOT IN ('mod_only', 'published')
    OR NEW.mod_size IS NOT OLD.mod_size OR NEW.h1_mod IS NOT OLD.h1_mod)
BEGIN
    SELECT RAISE(ABORT, 'a version published for its go.mod keeps its go.mod');
END;
