-- Schema version 1 of the smartproxy-api database.
--
-- Times are TEXT in the fixed-width UTC form 2006-01-02T15:04:05.000000000Z, so
-- that they compare correctly as strings. Every table whose content appears in
-- the configuration document bumps revision.value in the same transaction
-- (triggers at the end of this file), which is how the API notices changes
-- made by another process on the same database file.

CREATE TABLE revision (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO revision (id, value) VALUES (1, 1);

-- Proxy clients (one smartproxy-client each) and their bearer tokens.
CREATE TABLE clients (
    id                INTEGER PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE CHECK (name <> ''),
    created_at        TEXT NOT NULL,
    last_seen_at      TEXT,
    last_remote_addr  TEXT NOT NULL DEFAULT ''
);

-- Tokens are stored as the SHA-256 of the token; the token itself is shown
-- once, when it is created.
CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY,
    client_id   INTEGER NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    hash        BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),
    hint        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX tokens_client ON tokens (client_id);

-- Proxy settings, one row per key; the keys and their syntax are checked by
-- the store code.
CREATE TABLE settings (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE partners (
    id               INTEGER PRIMARY KEY,
    odette_id        TEXT NOT NULL UNIQUE CHECK (odette_id <> ''),
    name             TEXT NOT NULL DEFAULT '',
    enabled          INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    password         TEXT NOT NULL DEFAULT '',
    direction        TEXT NOT NULL DEFAULT 'both' CHECK (direction IN ('both', 'incoming', 'outgoing')),
    charset          TEXT NOT NULL DEFAULT 'strict' CHECK (charset IN ('strict', 'lenient')),
    max_credit       INTEGER NOT NULL DEFAULT 0 CHECK (max_credit BETWEEN 0 AND 999),
    max_buffer_size  INTEGER NOT NULL DEFAULT 0 CHECK (max_buffer_size = 0 OR max_buffer_size BETWEEN 128 AND 99999),
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);

CREATE TABLE certificate_bindings (
    id                     INTEGER PRIMARY KEY,
    partner_id             INTEGER NOT NULL REFERENCES partners (id) ON DELETE CASCADE,
    position               INTEGER NOT NULL,
    subject_serial_number  TEXT NOT NULL DEFAULT '',
    sha256_fingerprint     TEXT NOT NULL DEFAULT '',
    subject                TEXT NOT NULL DEFAULT '',
    CHECK (subject_serial_number <> '' OR sha256_fingerprint <> '' OR subject <> ''),
    UNIQUE (partner_id, position)
);

CREATE TABLE allowed_networks (
    partner_id  INTEGER NOT NULL REFERENCES partners (id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    cidr        TEXT NOT NULL CHECK (cidr <> ''),
    PRIMARY KEY (partner_id, position),
    UNIQUE (partner_id, cidr)
);

CREATE TABLE trusted_cas (
    id          INTEGER PRIMARY KEY,
    sha256      TEXT NOT NULL UNIQUE CHECK (length(sha256) = 64),
    subject     TEXT NOT NULL,
    not_after   TEXT NOT NULL,
    der         BLOB NOT NULL,
    added_at    TEXT NOT NULL
);

-- CRL bodies are kept in chunks so that one is never read into memory whole
-- to be served. A blob is immutable; a new version of a CRL gets a new blob.
CREATE TABLE crl_blobs (
    id      INTEGER PRIMARY KEY,
    size    INTEGER NOT NULL CHECK (size > 0),
    sha256  TEXT NOT NULL CHECK (length(sha256) = 64),
    chunks  INTEGER NOT NULL CHECK (chunks > 0)
);

CREATE TABLE crl_chunks (
    blob_id  INTEGER NOT NULL REFERENCES crl_blobs (id) ON DELETE CASCADE,
    seq      INTEGER NOT NULL,
    data     BLOB NOT NULL,
    PRIMARY KEY (blob_id, seq)
);

-- The CRLs in the configuration. scope says which list a new version
-- replaces: "url:<URL>" for downloaded lists, "issuer:<hex>" for imported ones.
CREATE TABLE crls (
    id           INTEGER PRIMARY KEY,
    scope        TEXT NOT NULL UNIQUE,
    url          TEXT NOT NULL DEFAULT '',
    issuer       TEXT NOT NULL,
    source       TEXT NOT NULL CHECK (source IN ('download', 'import')),
    blob_id      INTEGER NOT NULL REFERENCES crl_blobs (id),
    size         INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    entries      INTEGER NOT NULL,
    number       TEXT NOT NULL DEFAULT '',
    this_update  TEXT NOT NULL,
    next_update  TEXT,
    updated_at   TEXT NOT NULL
);

-- Every CRL distribution point the backend knows: configured by the operator
-- or reported by a proxy client, with the result of the last download.
CREATE TABLE crl_urls (
    id                INTEGER PRIMARY KEY,
    url               TEXT NOT NULL UNIQUE CHECK (url <> ''),
    configured        INTEGER NOT NULL DEFAULT 0 CHECK (configured IN (0, 1)),
    reported          INTEGER NOT NULL DEFAULT 0 CHECK (reported IN (0, 1)),
    reported_by       TEXT NOT NULL DEFAULT '',
    reported_at       TEXT,
    added_at          TEXT NOT NULL,
    last_attempt_at   TEXT,
    last_success_at   TEXT,
    last_status       TEXT NOT NULL DEFAULT '',
    last_error        TEXT NOT NULL DEFAULT '',
    etag              TEXT NOT NULL DEFAULT '',
    last_modified     TEXT NOT NULL DEFAULT '',
    failures          INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE routes (
    id                 INTEGER PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE CHECK (name <> ''),
    listen_address     TEXT NOT NULL,
    partner_address    TEXT NOT NULL,
    partner_odette_id  TEXT NOT NULL,
    server_name        TEXT NOT NULL DEFAULT '',
    created_at         TEXT NOT NULL
);

CREATE TABLE ignore_rules (
    id           INTEGER PRIMARY KEY,
    substring    TEXT NOT NULL CHECK (substring <> ''),
    description  TEXT NOT NULL DEFAULT '',
    valid_from   TEXT,
    valid_until  TEXT,
    created_at   TEXT NOT NULL,
    CHECK (valid_from IS NULL OR valid_until IS NULL OR valid_from < valid_until)
);

-- Events reported by proxy clients. event_id is the client's unique id:
-- a resent event is recognised and not stored twice.
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY,
    event_id     TEXT NOT NULL UNIQUE CHECK (event_id <> ''),
    client_id    INTEGER REFERENCES clients (id) ON DELETE SET NULL,
    time         TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    severity     TEXT NOT NULL CHECK (severity IN ('debug', 'info', 'warning', 'error', 'critical')),
    name         TEXT NOT NULL CHECK (name <> ''),
    session_id   INTEGER NOT NULL DEFAULT 0,
    odette_id    TEXT NOT NULL DEFAULT '',
    remote_addr  TEXT NOT NULL DEFAULT '',
    message      TEXT NOT NULL DEFAULT '',
    fields       TEXT NOT NULL DEFAULT '{}',
    source       TEXT NOT NULL DEFAULT '',
    outcome      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_time ON events (time);
CREATE INDEX events_name ON events (name, time);

-- License files by proxy ID, and what each client last reported.
CREATE TABLE licenses (
    proxy_id     TEXT PRIMARY KEY,
    customer     TEXT NOT NULL,
    not_before   TEXT NOT NULL,
    not_after    TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    file         BLOB NOT NULL,
    imported_at  TEXT NOT NULL
);

CREATE TABLE license_status (
    client_id    INTEGER PRIMARY KEY REFERENCES clients (id) ON DELETE CASCADE,
    proxy_id     TEXT NOT NULL,
    valid        INTEGER NOT NULL CHECK (valid IN (0, 1)),
    expires_at   TEXT,
    reason       TEXT NOT NULL DEFAULT '',
    reported_at  TEXT NOT NULL
);

CREATE TABLE config_status (
    id           INTEGER PRIMARY KEY,
    client_id    INTEGER REFERENCES clients (id) ON DELETE CASCADE,
    revision     INTEGER NOT NULL,
    etag         TEXT NOT NULL DEFAULT '',
    applied      INTEGER NOT NULL CHECK (applied IN (0, 1)),
    errors       TEXT NOT NULL DEFAULT '[]',
    reported_at  TEXT NOT NULL
);
CREATE INDEX config_status_client ON config_status (client_id, id);

-- Revision triggers: every change to the configuration bumps the revision.
CREATE TRIGGER settings_ai AFTER INSERT ON settings BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER settings_au AFTER UPDATE ON settings BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER settings_ad AFTER DELETE ON settings BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER partners_ai AFTER INSERT ON partners BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER partners_au AFTER UPDATE ON partners BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER partners_ad AFTER DELETE ON partners BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER certificate_bindings_ai AFTER INSERT ON certificate_bindings BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER certificate_bindings_au AFTER UPDATE ON certificate_bindings BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER certificate_bindings_ad AFTER DELETE ON certificate_bindings BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER allowed_networks_ai AFTER INSERT ON allowed_networks BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER allowed_networks_au AFTER UPDATE ON allowed_networks BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER allowed_networks_ad AFTER DELETE ON allowed_networks BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER trusted_cas_ai AFTER INSERT ON trusted_cas BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER trusted_cas_au AFTER UPDATE ON trusted_cas BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER trusted_cas_ad AFTER DELETE ON trusted_cas BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER crls_ai AFTER INSERT ON crls BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER crls_au AFTER UPDATE ON crls BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER crls_ad AFTER DELETE ON crls BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER routes_ai AFTER INSERT ON routes BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER routes_au AFTER UPDATE ON routes BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER routes_ad AFTER DELETE ON routes BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER ignore_rules_ai AFTER INSERT ON ignore_rules BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER ignore_rules_au AFTER UPDATE ON ignore_rules BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER ignore_rules_ad AFTER DELETE ON ignore_rules BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER licenses_ai AFTER INSERT ON licenses BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER licenses_au AFTER UPDATE ON licenses BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER licenses_ad AFTER DELETE ON licenses BEGIN UPDATE revision SET value = value + 1 WHERE id = 1; END;
