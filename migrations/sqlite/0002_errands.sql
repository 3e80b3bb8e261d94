-- Public-record handling: secrecy flags, personnummer mentions, retention.

-- 1 when a message in the conversation holds a personnummer or
-- samordningsnummer: the errand needs a secrecy review before release.
ALTER TABLE conversations ADD COLUMN secrecy_flag INTEGER NOT NULL DEFAULT 0;
-- Set when retention (gallring) removed the transcript and personal fields;
-- the row stays, anonymous, for statistics.
ALTER TABLE conversations ADD COLUMN purged_at INTEGER;

-- Which conversations mention which number, for access requests
-- (registerutdrag). Only a SHA-256 of the twelve-digit form is kept.
CREATE TABLE personnummer_mentions (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    number_hash TEXT NOT NULL
);
CREATE INDEX personnummer_mentions_hash ON personnummer_mentions (number_hash);
CREATE INDEX personnummer_mentions_conversation ON personnummer_mentions (conversation_id);
CREATE INDEX conversations_ended_at ON conversations (ended_at);
