-- Settings edited in the dashboard (e.g. the notification channels, secrets
-- included: the database is readable by the hub's service user only).
CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT NOT NULL
);
-- Events pushed by the Proxmox VE notification system (webhook target),
-- stored as facts; dedup_key follows integrations.md section 2.7.
CREATE TABLE pve_notifications (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key   TEXT NOT NULL UNIQUE,
    node        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    severity    TEXT NOT NULL,
    title       TEXT NOT NULL,
    body        TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX pve_notifications_received ON pve_notifications(received_at);
-- Retention prunes by age.
CREATE INDEX facts_received ON facts(received_at);
CREATE INDEX log_templates_last ON log_templates(last_seen);
