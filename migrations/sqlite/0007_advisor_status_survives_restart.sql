-- An advisor's own choice of status, `available` or `away`, so that a
-- restart, a crash included, gives it back when the advisor's console comes
-- back within the grace period (as after a dropped connection). `away` once
-- the advisor has been gone past the grace period. Keep in step with the
-- other backend's migration of the same number.
ALTER TABLE users ADD COLUMN advisor_status TEXT NOT NULL DEFAULT 'away';
