-- A registration claims its address unconfirmed, and confirms it once its
-- events are committed. An unconfirmed claim older than the configured time
-- was left by a crash: the next registration checks the event store and
-- either confirms it (the user exists) or takes it over.
ALTER TABLE user_emails ADD COLUMN confirmed boolean NOT NULL DEFAULT true;
