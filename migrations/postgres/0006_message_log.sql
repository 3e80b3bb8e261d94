-- The message log (src/storage/message_log.rs) acknowledges chat messages
-- before the database holds them. This row says up to which record (LSN)
-- it does; it is updated in the same transaction as the rows, so at start
-- every later record is applied exactly once. PostgreSQL does not use the
-- log; the table is here to keep the schemas in step. Keep in step with the
-- other backend's migration of the same number.
CREATE TABLE message_log_applied (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    lsn BIGINT NOT NULL
);
INSERT INTO message_log_applied (id, lsn) VALUES (1, 0);
