-- The reasoning layer: every model call (the exact request body sent and the
-- response), the model narrative per incident, token usage per provider and
-- month (budgets), chat transcripts and guided skill runs.
CREATE TABLE llm_exchanges (
    id              BIGSERIAL PRIMARY KEY,
    subject_kind    TEXT NOT NULL,
    subject_id      TEXT NOT NULL,
    provider        TEXT NOT NULL,
    model           TEXT NOT NULL,
    task            TEXT NOT NULL,
    attempt         BIGINT NOT NULL,
    request_body    TEXT NOT NULL,
    response_body   TEXT,
    http_status     BIGINT,
    tokens_in       BIGINT,
    tokens_out      BIGINT,
    latency_ms      BIGINT NOT NULL,
    est_cost_usd    DOUBLE PRECISION,
    outcome         TEXT NOT NULL,
    error           TEXT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX llm_exchanges_subject ON llm_exchanges(subject_kind, subject_id, id);
CREATE INDEX llm_exchanges_created ON llm_exchanges(created_at);
CREATE TABLE llm_narratives (
    incident_id  TEXT PRIMARY KEY,
    severity     TEXT NOT NULL,
    provider     TEXT NOT NULL,
    model        TEXT NOT NULL,
    status       TEXT NOT NULL,
    narrative    TEXT,
    error        TEXT,
    refs         TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE TABLE llm_usage (
    provider    TEXT NOT NULL,
    month       TEXT NOT NULL,
    tokens_in   BIGINT NOT NULL,
    tokens_out  BIGINT NOT NULL,
    calls       BIGINT NOT NULL,
    cost_usd    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (provider, month)
);
CREATE TABLE chat_messages (
    id          BIGSERIAL PRIMARY KEY,
    chat_id     TEXT NOT NULL,
    role        TEXT NOT NULL,
    author      TEXT NOT NULL,
    text        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX chat_messages_chat ON chat_messages(chat_id, id);
CREATE TABLE skill_runs (
    id          TEXT PRIMARY KEY,
    skill_id    TEXT NOT NULL,
    incident_id TEXT,
    started_by  TEXT NOT NULL,
    steps       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
