-- kommunchat schema, PostgreSQL flavour. Keep in step with migrations/sqlite.
-- Times are milliseconds since the Unix epoch (UTC), the same in both backends.

-- Advisors and admins. Passwords are argon2id PHC strings.
CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('advisor', 'admin')),
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Server-side sessions. Only a SHA-256 of the cookie's token is kept, so a
-- copy of the database does not let anyone sign in.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

-- One row per chat from `start` on. It becomes an errand (errand_number set)
-- when it first reaches an advisor.
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    queued_at BIGINT NOT NULL,
    citizen_name TEXT,
    topic TEXT,
    language TEXT,
    first_assigned_at BIGINT,
    advisor_id BIGINT,
    advisor_name TEXT,
    errand_number TEXT UNIQUE,
    ended_at BIGINT,
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
    seq BIGINT NOT NULL,
    sender TEXT NOT NULL CHECK (sender IN ('citizen', 'advisor', 'system')),
    advisor_id BIGINT,
    sender_name TEXT,
    client_msg_id TEXT,
    body TEXT NOT NULL,
    sent_at BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
CREATE UNIQUE INDEX messages_client_id ON messages (conversation_id, sender, client_msg_id)
    WHERE client_msg_id IS NOT NULL;

-- Queue history for statistics: joined, refused, assigned, transferred,
-- requeued, ended.
CREATE TABLE queue_events (
    id BIGSERIAL PRIMARY KEY,
    conversation_id TEXT,
    kind TEXT NOT NULL,
    at BIGINT NOT NULL,
    advisor_id BIGINT,
    detail TEXT
);
CREATE INDEX queue_events_at ON queue_events (at);

-- The last errand number handed out per year (numbers are YYYY-NNNNNN).
CREATE TABLE errand_counters (
    year BIGINT PRIMARY KEY,
    last BIGINT NOT NULL
);
