-- Log template counts per node and source, accumulated from log summaries.
CREATE TABLE log_templates (
    agent_id    TEXT NOT NULL,
    source_kind TEXT NOT NULL,
    source_name TEXT NOT NULL,
    template_id INTEGER NOT NULL,
    template    TEXT NOT NULL,
    severity    INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    bursts      INTEGER NOT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    PRIMARY KEY (agent_id, source_kind, source_name, template_id)
);
CREATE INDEX log_templates_template ON log_templates(template_id);
CREATE INDEX log_templates_agent_last ON log_templates(agent_id, last_seen);
