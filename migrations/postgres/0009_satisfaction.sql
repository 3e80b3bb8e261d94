-- The citizen's answer to "how satisfied are you?" when a chat with an
-- advisor ends: 1 (very dissatisfied) to 5 (very satisfied), NULL when not
-- answered; a later answer replaces it. For the statistics; the errand's
-- record does not depend on it. Keep in step with the other backend's
-- migration of the same number.
ALTER TABLE conversations ADD COLUMN satisfaction BIGINT CHECK (satisfaction BETWEEN 1 AND 5);
ALTER TABLE conversations ADD COLUMN rated_at BIGINT;
