-- What users expect on a profile besides their name.
ALTER TABLE users ADD COLUMN locale text, ADD COLUMN time_zone text;
