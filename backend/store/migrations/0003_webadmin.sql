-- Schema version 2: the web admin's accounts, sessions, login failures and
-- audit log, and indexes for the filters of its events page. Nothing here is
-- part of the configuration document, so no revision triggers.

-- Admin users of the web admin, created with `smartproxy-api user add`.
-- password is an argon2id hash in the PHC string form
-- ($argon2id$v=19$m=…,t=…,p=…$salt$hash); the password itself is not stored.
CREATE TABLE admin_users (
    id                   INTEGER PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE CHECK (name <> ''),
    password             TEXT NOT NULL CHECK (password LIKE '$argon2id$%'),
    created_at           TEXT NOT NULL,
    password_changed_at  TEXT NOT NULL
);

-- Web sessions. Like tokens, a session is stored as the SHA-256 of the
-- cookie value, which is known only to the browser.
CREATE TABLE admin_sessions (
    id            INTEGER PRIMARY KEY,
    hash          BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),
    user_id       INTEGER NOT NULL REFERENCES admin_users (id) ON DELETE CASCADE,
    created_at    TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL,
    remote_addr   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX admin_sessions_user ON admin_sessions (user_id);

-- Failed logins, counted per user name and per address to slow guessing.
CREATE TABLE admin_login_failures (
    id           INTEGER PRIMARY KEY,
    user_name    TEXT NOT NULL,
    remote_addr  TEXT NOT NULL,
    at           TEXT NOT NULL
);
CREATE INDEX admin_login_failures_user ON admin_login_failures (user_name, at);
CREATE INDEX admin_login_failures_addr ON admin_login_failures (remote_addr, at);

-- Every change made through the web admin or the admin CLI: who, what, when,
-- from where.
CREATE TABLE audit_log (
    id           INTEGER PRIMARY KEY,
    time         TEXT NOT NULL,
    actor        TEXT NOT NULL CHECK (actor <> ''),
    remote_addr  TEXT NOT NULL DEFAULT '',
    action       TEXT NOT NULL CHECK (action <> ''),
    target       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_time ON audit_log (time);

-- The events page filters by severity, partner and client, newest first.
CREATE INDEX events_severity ON events (severity, time);
CREATE INDEX events_odette_id ON events (odette_id, time);
CREATE INDEX events_client ON events (client_id, time);
