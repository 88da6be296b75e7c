-- Wingman hub schema, SQLite backend. Append-only: never edit a shipped migration.
CREATE TABLE agents (
    id              TEXT PRIMARY KEY,
    hostname        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    agent_version   TEXT NOT NULL,
    enrolled_at     INTEGER NOT NULL,
    revoked_at      INTEGER,
    last_seen       INTEGER,
    online          BOOLEAN NOT NULL DEFAULT FALSE,
    cert_not_after  INTEGER NOT NULL
);

CREATE TABLE certificates (
    fingerprint TEXT PRIMARY KEY,
    agent_id    TEXT NOT NULL REFERENCES agents(id),
    issued_at   INTEGER NOT NULL,
    not_after   INTEGER NOT NULL
);
CREATE INDEX certificates_agent ON certificates(agent_id);

CREATE TABLE enrollment_tokens (
    id          TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    used_by     TEXT
);

CREATE TABLE streams (
    agent_id      TEXT NOT NULL REFERENCES agents(id),
    stream_id     INTEGER NOT NULL,
    committed_seq INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (agent_id, stream_id)
);

CREATE TABLE facts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id    TEXT NOT NULL,
    stream_id   INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    idx         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    observed_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    body        TEXT NOT NULL,
    UNIQUE (agent_id, stream_id, seq, idx)
);
CREATE INDEX facts_agent_kind_time ON facts(agent_id, kind, observed_at);

CREATE TABLE latest_facts (
    agent_id    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    observed_at INTEGER NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (agent_id, kind)
);

CREATE TABLE presence_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT NOT NULL,
    online   BOOLEAN NOT NULL,
    at       INTEGER NOT NULL
);
CREATE INDEX presence_events_agent ON presence_events(agent_id, at);

CREATE TABLE users (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    password_hash        TEXT NOT NULL,
    role                 TEXT NOT NULL,
    must_change_password BOOLEAN NOT NULL DEFAULT FALSE,
    created_at           INTEGER NOT NULL
);

CREATE TABLE sessions (
    id_hash    TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id),
    csrf_token TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    user_id    TEXT NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    last_used  INTEGER,
    revoked_at INTEGER
);
