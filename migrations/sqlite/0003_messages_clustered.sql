-- Messages arrive from many conversations at once, and every group commit
-- writes each B-tree page it touched to the log in full. The original table
-- kept three B-trees per message (the rows by rowid, the primary key, and a
-- unique index on client_msg_id), so a commit of k messages from k
-- conversations dirtied about 2k + 1 pages. Now:
-- * the rows are stored in primary-key order (WITHOUT ROWID), one B-tree, a
--   conversation's messages side by side (a transcript is one range read);
-- * client_msg_id is no longer a unique index: the hub, the one owner of
--   every open conversation, already refuses a reused client_msg_id, and a
--   conversation does not outlive a restart (it ends as interrupted).
CREATE TABLE messages_by_conversation (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    sender TEXT NOT NULL CHECK (sender IN ('citizen', 'advisor', 'system')),
    advisor_id INTEGER,
    sender_name TEXT,
    client_msg_id TEXT,
    body TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;

INSERT INTO messages_by_conversation
    (conversation_id, seq, sender, advisor_id, sender_name, client_msg_id, body, sent_at)
SELECT conversation_id, seq, sender, advisor_id, sender_name, client_msg_id, body, sent_at FROM messages;

DROP TABLE messages;
ALTER TABLE messages_by_conversation RENAME TO messages;
