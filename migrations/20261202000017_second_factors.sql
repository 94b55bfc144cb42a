-- The second step of a sign-in with a second factor: handed out when the
-- password checked out, taken once, within minutes.
CREATE TABLE login_challenges (
    id         uuid PRIMARY KEY,
    user_id    uuid        NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX login_challenges_expiry ON login_challenges (expires_at);

-- When and how the user of a session last proved who they are (`auth_time`
-- and `amr` of its access tokens): carried from token to token of the
-- family, moved by a re-authentication. Sessions from before count as
-- never proven: a dangerous change asks them to re-authenticate.
ALTER TABLE refresh_tokens
    ADD COLUMN auth_time timestamptz,
    ADD COLUMN amr text[] NOT NULL DEFAULT '{}';
