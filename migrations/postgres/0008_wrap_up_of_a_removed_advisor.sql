-- A chat in wrap-up whose advisor's account was removed could never be
-- closed: nobody can sign in to classify it, and every start passed it by.
-- Removing an account now closes its wrap-ups as they stand (the errand is
-- kept, without a category); this closes those left from before. Keep in
-- step with the other backend's migration of the same number.
UPDATE conversations SET wrap_up_pending = 0
WHERE wrap_up_pending = 1
  AND (advisor_id IS NULL OR advisor_id NOT IN (SELECT id FROM users));
