-- Private signing keys are sealed under the master key from now on; keys
-- stored in clear by earlier versions are sealed at the next start.
ALTER TABLE signing_keys ADD COLUMN sealed boolean NOT NULL DEFAULT false;
