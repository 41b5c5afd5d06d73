-- 0007 run error (issue 13): why a run could not proceed, as the whole error
-- chain (`a: b: c`) the command printed. NULL for runs that went to their end
-- (their failing versions' reasons are in versions.last_error, found through
-- versions.last_run_id) and for runs that died before recording anything.

ALTER TABLE runs ADD COLUMN error TEXT;
