-- Kept in step with SQLite's 0003: client_msg_id is no longer a unique index.
-- The hub, the one owner of every open conversation, already refuses a reused
-- client_msg_id, and a conversation does not outlive a restart (it ends as
-- interrupted); the index only cost a page write per message.
DROP INDEX messages_client_id;
