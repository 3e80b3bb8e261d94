-- A chat whose citizen has gone while the advisor has still to close it
-- (wrap-up) is ended for the record at once, but the advisor's category and
-- summary are still to come: 1 until they are, so that a restart gives the
-- chat back to its advisor (Storage::open_conversations). Keep in step with
-- the other backend's migration of the same number.
ALTER TABLE conversations ADD COLUMN wrap_up_pending INTEGER NOT NULL DEFAULT 0;
CREATE INDEX conversations_wrap_up_pending ON conversations (wrap_up_pending) WHERE wrap_up_pending = 1;
