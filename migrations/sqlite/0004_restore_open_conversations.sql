-- Open conversations survive a restart: the next start reads them back
-- into the hub (Storage::open_conversations), and citizens and advisors
-- take them up again where they were. Keep in step with migrations/postgres.

-- A SHA-256 of the citizen's resume token, so the citizen can resume after
-- a restart. Only the hash: a copy of the database does not let anyone
-- write as the citizen. NULL in rows from before this migration.
ALTER TABLE conversations ADD COLUMN resume_token_hash TEXT;

-- Its place in the hub's queue while it waits (smaller is served first;
-- chats sent back to the queue go in front with smaller numbers); NULL while
-- an advisor has it. A restart puts everyone back in the same order.
ALTER TABLE conversations ADD COLUMN queue_place INTEGER;
