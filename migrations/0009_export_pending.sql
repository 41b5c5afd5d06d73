-- 0009 export_pending (issue 13): an export is recorded before its bundle
-- becomes visible, as pending, and completed once it is. A pending row is
-- settled by the next export of its source: adopted if its bundle (the file,
-- or volume .000, renamed last) is there, removed otherwise. So a bundle that
-- was made visible is always in the chain, and no two bundles of a source
-- share a sequence number.

ALTER TABLE exports ADD COLUMN pending INTEGER NOT NULL DEFAULT 0 CHECK (pending IN (0, 1));
