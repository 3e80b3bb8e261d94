-- kommunchat schema, SQLite flavour. Keep in step with migrations/postgres.
-- Times are milliseconds since the Unix epoch (UTC), the same in both backends.

-- Advisors and admins. Passwords are argon2id PHC strings.
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('advisor', 'admin')),
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- Server-side sessions. Only a SHA-256 of the cookie's token is kept, so a
-- copy of the database does not let anyone sign in.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

-- One row per chat from `start` on. It becomes an errand (errand_number set)
-- when it first reaches an advisor.
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    queued_at INTEGER NOT NULL,
    citizen_name TEXT,
    topic TEXT,
    language TEXT,
    first_assigned_at INTEGER,
    advisor_id INTEGER,
    advisor_name TEXT,
    errand_number TEXT UNIQUE,
    ended_at INTEGER,
    end_reason TEXT,
    outcome TEXT,
    category TEXT,
    summary TEXT
);
CREATE INDEX conversations_open ON conversations (ended_at) WHERE ended_at IS NULL;
CREATE INDEX conversations_queued_at ON conversations (queued_at);

-- The transcript. seq is assigned by the server per conversation;
-- client_msg_id makes a client's retries idempotent.
CREATE TABLE messages (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    sender TEXT NOT NULL CHECK (sender IN ('citizen', 'advisor', 'system')),
    advisor_id INTEGER,
    sender_name TEXT,
    client_msg_id TEXT,
    body TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
CREATE UNIQUE INDEX messages_client_id ON messages (conversation_id, sender, client_msg_id)
    WHERE client_msg_id IS NOT NULL;

-- Queue history for statistics: joined, refused, assigned, transferred,
-- requeued, ended.
CREATE TABLE queue_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT,
    kind TEXT NOT NULL,
    at INTEGER NOT NULL,
    advisor_id INTEGER,
    detail TEXT
);
CREATE INDEX queue_events_at ON queue_events (at);

-- The last errand number handed out per year (numbers are YYYY-NNNNNN).
CREATE TABLE errand_counters (
    year INTEGER PRIMARY KEY,
    last INTEGER NOT NULL
);
