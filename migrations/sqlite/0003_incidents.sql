-- Incidents built by the engine. The body is the engine's incident as JSON;
-- the columns are the filters the API and dashboard need.
CREATE TABLE incidents (
    id          TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    state       TEXT NOT NULL,
    severity    TEXT NOT NULL,
    title       TEXT NOT NULL,
    nodes       TEXT NOT NULL,
    opened_at   INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    resolved_at INTEGER,
    body        TEXT NOT NULL
);
CREATE INDEX incidents_state_updated ON incidents(state, updated_at);
CREATE INDEX incidents_updated ON incidents(updated_at);
