-- The sessions a user can see and end: where each began (the client's
-- address and user agent as first seen) and when, carried from token to
-- token of the family like `auth_time` and `amr`. Sessions from before
-- show no address or agent, and began with their oldest token.
ALTER TABLE refresh_tokens
    ADD COLUMN started_at timestamptz,
    ADD COLUMN client_address text,
    ADD COLUMN user_agent text;

UPDATE refresh_tokens t
   SET started_at = (SELECT min(f.created_at) FROM refresh_tokens f WHERE f.family_id = t.family_id)
 WHERE revoked_at IS NULL AND replaced_at IS NULL;

-- The live token of each session, by user: what `mySessions` lists.
CREATE INDEX refresh_tokens_live_idx ON refresh_tokens (user_id, created_at)
    WHERE revoked_at IS NULL AND replaced_at IS NULL;

-- One session ended on its own (a logout, `endSession`, a reused token):
-- its access tokens are refused at once, not only after they expire. The
-- sessions that ended this way within an access token's life are read with
-- the user's cut-off, and announced on the cut-off's channel, so that
-- every API process forgets what it remembered of the user.
CREATE INDEX refresh_tokens_ended_idx ON refresh_tokens (user_id, revoked_at)
    WHERE revoked_reason IN ('logout', 'ended', 'reuse');

CREATE TRIGGER refresh_tokens_ended_notify
    AFTER UPDATE OF revoked_at ON refresh_tokens
    FOR EACH ROW
    WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL
          AND NEW.revoked_reason IN ('logout', 'ended', 'reuse'))
    EXECUTE FUNCTION notify_token_cutoff();

-- An erasure wipes where the user's sessions came from (personal data kept
-- outside the events, so the shredded key does not cover it), in the
-- event's own transaction.
CREATE FUNCTION events_forget_session_origins() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE refresh_tokens SET client_address = NULL, user_agent = NULL
     WHERE user_id = NEW.aggregate_id::uuid
       AND (client_address IS NOT NULL OR user_agent IS NOT NULL);
    RETURN NULL;
END
$$;

CREATE TRIGGER events_forget_session_origins
    AFTER INSERT ON events
    FOR EACH ROW
    WHEN (NEW.aggregate_type = 'User' AND NEW.event_type = 'UserErased')
    EXECUTE FUNCTION events_forget_session_origins();

-- Tokens of sessions long over are forgotten a few hundred at a time, at
-- each sign-in.
CREATE INDEX refresh_tokens_expiry_idx ON refresh_tokens (expires_at);
