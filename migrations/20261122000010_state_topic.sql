-- The version of each row last acknowledged on the state topic; a row whose
-- state_version is behind its version is (re)published.
ALTER TABLE users ADD COLUMN state_version bigint;
CREATE INDEX users_state_pending_idx ON users (id) WHERE state_version IS DISTINCT FROM version;
