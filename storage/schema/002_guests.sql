-- Guest accounts (spec: "Guest access").
ALTER TABLE accounts ADD COLUMN is_guest INTEGER NOT NULL DEFAULT 0;
