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
