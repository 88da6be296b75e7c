-- Remediation plans: the plan as proposed, its validation, and the policy
-- state machine's run (step states, approvals bound to the plan and step
-- hashes, consumed approvals, status) as JSON. Every change of a plan is also
-- an entry of the hash-chained audit_log.
CREATE TABLE plans (
    id           TEXT PRIMARY KEY,
    incident_id  TEXT NOT NULL,
    source       TEXT NOT NULL,
    status       TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    run          TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX plans_incident ON plans(incident_id, created_at);
CREATE INDEX plans_status ON plans(status);
