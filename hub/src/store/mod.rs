//! The hub's storage: one [`Store`] trait with domain methods, and two
//! backends chosen by the database URL: SQLite (the embedded default) and
//! PostgreSQL (the scale path). Migrations live in `migrations/<backend>/`,
//! are embedded in the binary and are append-only.

mod sql;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

pub use sql::{PgStore, SqliteStore};

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist.
    #[error("not found")]
    NotFound,
    /// A unique constraint was violated.
    #[error("already exists")]
    Conflict,
    /// The database URL is not usable.
    #[error("invalid database URL: {0}")]
    Url(String),
    /// The backend failed.
    #[error("database error: {0}")]
    Backend(String),
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict,
            _ => Self::Backend(e.to_string()),
        }
    }
}

/// Result alias.
pub type StoreResult<T> = Result<T, StoreError>;

/// Outcome of consuming an enrollment token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// Valid and now consumed.
    Consumed,
    /// No such token or wrong secret.
    Unknown,
    /// Already used.
    Used,
    /// Past its expiry.
    Expired,
}

/// A newly created enrollment token (only the secret's hash is stored).
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Public token id.
    pub id: String,
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
    /// Creation time, ms.
    pub created_at: i64,
    /// Expiry, ms.
    pub expires_at: i64,
}

/// An enrolled agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentRow {
    /// Agent id (UUIDv7).
    pub id: String,
    /// Hostname reported at enrollment or last connect.
    pub hostname: String,
    /// proxmox, docker or plain.
    pub kind: String,
    /// Agent version.
    pub agent_version: String,
    /// Enrollment time, ms.
    pub enrolled_at: i64,
    /// Revocation time, ms.
    pub revoked_at: Option<i64>,
    /// Last heartbeat or message, ms.
    pub last_seen: Option<i64>,
    /// Whether the node is considered online.
    pub online: bool,
    /// Expiry of the newest certificate, ms.
    pub cert_not_after: i64,
}

/// The newest fact of one kind for an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LatestFact {
    /// Fact kind, e.g. "host".
    pub kind: String,
    /// When the agent observed it, ms.
    pub observed_at: i64,
    /// JSON body.
    pub body: String,
}

/// One fact to ingest, already serialized.
#[derive(Debug, Clone)]
pub struct FactRecord {
    /// Kind.
    pub kind: String,
    /// Observation time, ms.
    pub observed_at: i64,
    /// JSON body.
    pub body: String,
    /// Whether the fact is a snapshot kept as the agent's latest of its kind.
    pub latest: bool,
}

/// A template count from a log summary, to accumulate per node and source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRecord {
    /// journal, file or container.
    pub source_kind: String,
    /// Unit, path or container.
    pub source_name: String,
    /// Stable template id (u64 stored bit-for-bit as i64).
    pub template_id: u64,
    /// Masked template text.
    pub template: String,
    /// Worst syslog priority (0-7).
    pub severity: i64,
    /// Lines.
    pub count: i64,
    /// Whether the window was a burst.
    pub burst: bool,
    /// First line, ms.
    pub first_seen: i64,
    /// Last line, ms.
    pub last_seen: i64,
}

/// Accumulated counts of one template on one node and source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateRow {
    /// Agent.
    pub agent_id: String,
    /// journal, file or container.
    pub source_kind: String,
    /// Unit, path or container.
    pub source_name: String,
    /// Stable template id, as a decimal string (JSON numbers lose u64 precision).
    pub template_id: String,
    /// Masked template text.
    pub template: String,
    /// Worst syslog priority seen.
    pub severity: i64,
    /// Lines counted.
    pub count: i64,
    /// Burst windows.
    pub bursts: i64,
    /// First seen, ms.
    pub first_seen: i64,
    /// Last seen, ms.
    pub last_seen: i64,
}

/// Losses an agent reported with gap facts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GapAccounting {
    /// Distinct gap reports.
    pub reports: u64,
    /// The same gap reported again (after an agent restart); not counted twice.
    pub duplicate_reports: u64,
    /// Facts the gap reports name.
    pub reported_facts: u64,
    /// Facts lost for good: reported, minus ones the store has after all.
    pub lost_facts: u64,
    /// Batches lost for good.
    pub lost_batches: u64,
}

/// One fact batch of a group committed by [`Store::ingest_batches`].
#[derive(Debug, Clone)]
pub struct IngestItem {
    /// The agent.
    pub agent_id: String,
    /// Its stream.
    pub stream_id: u64,
    /// The batch's sequence number; 0 for an unsequenced (current-state) batch.
    pub seq: u64,
    /// Facts.
    pub facts: Vec<FactRecord>,
    /// Template counts from its log summaries.
    pub templates: Vec<TemplateRecord>,
}

/// Outcome of [`Store::ingest_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestOutcome {
    /// The stream's committed sequence number after this call.
    pub committed_seq: u64,
    /// The batch had been committed before (a replay); nothing was written.
    pub duplicate: bool,
}

/// A stored incident: filter columns plus the engine's incident as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IncidentRow {
    /// Engine id, e.g. `inc-12`.
    pub id: String,
    /// Dedup fingerprint.
    pub fingerprint: String,
    /// open, acknowledged or resolved.
    pub state: String,
    /// info, warning or critical.
    pub severity: String,
    /// Title.
    pub title: String,
    /// Node (agent) ids, comma-separated.
    pub nodes: String,
    /// Opened, ms.
    pub opened_at: i64,
    /// Last change, ms.
    pub updated_at: i64,
    /// Resolved, ms.
    pub resolved_at: Option<i64>,
    /// The engine's incident, JSON.
    pub body: String,
}

/// Filters for listing incidents.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// Only this state.
    pub state: Option<String>,
    /// Only this severity.
    pub severity: Option<String>,
    /// Only incidents involving this node id.
    pub node: Option<String>,
    /// Page size.
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
}

/// A dashboard user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// Id.
    pub id: String,
    /// Login name.
    pub name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// admin, operator or viewer.
    pub role: String,
    /// Set for one-time passwords: the user must choose a new one.
    pub must_change_password: bool,
}

/// A server-side session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// SHA-256 of the session id (the cookie holds the id).
    pub id_hash: String,
    /// The user.
    pub user_id: String,
    /// The synchronizer CSRF token for this session.
    pub csrf_token: String,
    /// Creation, ms.
    pub created_at: i64,
    /// Last use, ms.
    pub last_seen: i64,
    /// Absolute expiry, ms.
    pub expires_at: i64,
}

/// An API key (only its hash is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    /// Id.
    pub id: String,
    /// Human name.
    pub name: String,
    /// SHA-256 of the key, hex.
    pub key_hash: String,
    /// Owner.
    pub user_id: String,
    /// Creation, ms.
    pub created_at: i64,
    /// Expiry, ms.
    pub expires_at: i64,
    /// Revocation, ms.
    pub revoked_at: Option<i64>,
}

/// Everything the hub persists, as domain operations.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies pending migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// Which backend this is ("sqlite" or "postgres").
    fn backend(&self) -> &'static str;

    /// Stores a new enrollment token.
    async fn create_enrollment_token(&self, token: &NewToken) -> StoreResult<()>;
    /// Atomically consumes a token if it exists, matches, is unused and unexpired.
    async fn consume_enrollment_token(
        &self,
        id: &str,
        secret_hash: &str,
        used_by: &str,
        now: i64,
    ) -> StoreResult<TokenUse>;

    /// Registers a newly enrolled agent and its first certificate in one transaction.
    async fn create_agent(&self, agent: &AgentRow, cert_fingerprint: &str) -> StoreResult<()>;
    /// Records a renewed certificate.
    async fn add_certificate(
        &self,
        agent_id: &str,
        fingerprint: &str,
        issued_at: i64,
        not_after: i64,
    ) -> StoreResult<()>;
    /// Certificates of agents that are not revoked and not expired: (fingerprint, agent id).
    async fn active_certificates(&self, now: i64) -> StoreResult<Vec<(String, String)>>;
    /// Revokes an agent; false when it does not exist or was already revoked.
    async fn revoke_agent(&self, id: &str, now: i64) -> StoreResult<bool>;
    /// Ids of revoked agents.
    async fn revoked_agents(&self) -> StoreResult<Vec<String>>;
    /// All agents, by hostname.
    async fn list_agents(&self) -> StoreResult<Vec<AgentRow>>;
    /// One agent.
    async fn get_agent(&self, id: &str) -> StoreResult<Option<AgentRow>>;
    /// Session start: updates identity fields, marks online, records the transition.
    async fn agent_connected(
        &self,
        id: &str,
        hostname: &str,
        kind: &str,
        agent_version: &str,
        now: i64,
    ) -> StoreResult<()>;
    /// Heartbeat: updates `last_seen` (and brings an offline node back online).
    async fn touch_agent(&self, id: &str, now: i64) -> StoreResult<()>;
    /// Marks online agents last seen before `cutoff` offline; returns their ids.
    async fn mark_stale_offline(&self, cutoff: i64, now: i64) -> StoreResult<Vec<String>>;
    /// Online/offline transitions of an agent, newest first: (online, at).
    async fn presence_events(&self, agent_id: &str, limit: i64) -> StoreResult<Vec<(bool, i64)>>;

    /// Highest committed sequence number of a stream (0 if none).
    async fn committed_seq(&self, agent_id: &str, stream_id: u64) -> StoreResult<u64>;
    /// Commits one batch idempotently: a batch at or below the committed
    /// sequence number is a duplicate and writes nothing.
    async fn ingest_batch(
        &self,
        agent_id: &str,
        stream_id: u64,
        seq: u64,
        facts: &[FactRecord],
        templates: &[TemplateRecord],
        now: i64,
    ) -> StoreResult<IngestOutcome>;
    /// Commits several batches (of any agents) in one transaction, each with
    /// the dedup of [`Store::ingest_batch`]; all or nothing.
    async fn ingest_batches(
        &self,
        items: &[IngestItem],
        now: i64,
    ) -> StoreResult<Vec<IngestOutcome>>;
    /// Template counts of an agent, most recently seen first.
    async fn log_templates(&self, agent_id: &str, limit: i64) -> StoreResult<Vec<TemplateRow>>;
    /// Every stored row of a template id across nodes and sources.
    async fn template_rows(&self, template_id: u64) -> StoreResult<Vec<TemplateRow>>;
    /// The newest fact of each kind for an agent.
    async fn latest_facts(&self, agent_id: &str) -> StoreResult<Vec<LatestFact>>;
    /// Number of stored facts of an agent.
    async fn fact_count(&self, agent_id: &str) -> StoreResult<i64>;
    /// Loss accounting from the agent's gap facts, each loss counted once.
    async fn gap_accounting(&self, agent_id: &str) -> StoreResult<GapAccounting>;
    /// The newest facts of one kind for an agent: (observed_at, JSON body).
    async fn recent_facts(
        &self,
        agent_id: &str,
        kind: &str,
        limit: i64,
    ) -> StoreResult<Vec<(i64, String)>>;

    /// Inserts or replaces an incident.
    async fn upsert_incident(&self, row: &IncidentRow) -> StoreResult<()>;
    /// Incidents matching `filter`, most recently updated first, and the total count.
    async fn list_incidents(&self, filter: &IncidentFilter)
    -> StoreResult<(Vec<IncidentRow>, i64)>;
    /// One incident.
    async fn get_incident(&self, id: &str) -> StoreResult<Option<IncidentRow>>;
    /// Incidents the engine must know after a restart: not resolved, or
    /// resolved after `resolved_since` (so they can reopen).
    async fn live_incidents(&self, resolved_since: i64) -> StoreResult<Vec<IncidentRow>>;

    /// Creates a user; `Conflict` if the name exists.
    async fn create_user(&self, user: &UserRow, now: i64) -> StoreResult<()>;
    /// Replaces a user's password hash and clears or sets the must-change flag.
    async fn set_password(&self, user_id: &str, hash: &str, must_change: bool) -> StoreResult<()>;
    /// A user by login name.
    async fn user_by_name(&self, name: &str) -> StoreResult<Option<UserRow>>;
    /// Number of users.
    async fn user_count(&self) -> StoreResult<i64>;
    /// Stores a session.
    async fn create_session(&self, session: &SessionRow) -> StoreResult<()>;
    /// A live session and its user.
    async fn session(&self, id_hash: &str, now: i64) -> StoreResult<Option<(SessionRow, UserRow)>>;
    /// Updates a session's last use.
    async fn touch_session(&self, id_hash: &str, now: i64) -> StoreResult<()>;
    /// Deletes a session (logout).
    async fn delete_session(&self, id_hash: &str) -> StoreResult<()>;
    /// Stores an API key.
    async fn create_api_key(&self, key: &ApiKeyRow) -> StoreResult<()>;
    /// A valid (unrevoked, unexpired) API key and its user, by hash.
    async fn api_key(&self, key_hash: &str, now: i64) -> StoreResult<Option<(ApiKeyRow, UserRow)>>;

    /// A dashboard-edited setting (`key` such as `notify`).
    async fn get_setting(&self, key: &str) -> StoreResult<Option<SettingRow>>;
    /// Inserts or replaces a setting.
    async fn put_setting(&self, row: &SettingRow) -> StoreResult<()>;
    /// Stores a PVE notification; `false` when its dedup key was seen before.
    async fn record_pve_notification(&self, row: &PveNotificationRow) -> StoreResult<bool>;
    /// Recent PVE notifications, newest first, optionally for one node.
    async fn pve_notifications(
        &self,
        node: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<PveNotificationRow>>;
    /// Deletes what is older than the retention cut-offs (Unix ms).
    async fn prune(&self, cut: &PruneCutoffs) -> StoreResult<PruneCounts>;

    /// Appends one audit entry (the table refuses updates and deletes).
    async fn audit_append(&self, row: &AuditRow) -> StoreResult<()>;
    /// Inserts or replaces a plan.
    async fn put_plan(&self, row: &PlanRow) -> StoreResult<()>;
    /// One plan.
    async fn plan(&self, id: &str) -> StoreResult<Option<PlanRow>>;
    /// The plans of an incident, oldest first.
    async fn plans_for_incident(&self, incident_id: &str) -> StoreResult<Vec<PlanRow>>;
    /// Plans with this status (`active` at start, to resume them).
    async fn plans_with_status(&self, status: &str) -> StoreResult<Vec<PlanRow>>;
    /// Audit entries after `after_seq` in order, optionally of one incident.
    async fn audit_entries(
        &self,
        incident_id: Option<&str>,
        after_seq: i64,
        limit: i64,
    ) -> StoreResult<Vec<AuditRow>>;
    /// The newest audit entry.
    async fn audit_last(&self) -> StoreResult<Option<AuditRow>>;

    /// Every stored memory vector (read once at start).
    async fn vectors_load(&self) -> StoreResult<Vec<VectorRow>>;
    /// Inserts or replaces memory vectors by id, in one transaction.
    async fn vectors_upsert(&self, rows: &[VectorRow], now: i64) -> StoreResult<()>;
    /// Deletes memory vectors by id.
    async fn vectors_delete(&self, ids: &[String]) -> StoreResult<()>;
    /// Deletes memory vectors of `kind` created before `before` (ms).
    async fn vectors_delete_older_than(&self, kind: &str, before: i64) -> StoreResult<u64>;

    /// Records one model call; returns its row id.
    async fn record_exchange(&self, row: &ExchangeRow) -> StoreResult<i64>;
    /// Model calls about one subject (`incident` or `chat` and its id), oldest first.
    async fn exchanges(
        &self,
        subject_kind: &str,
        subject_id: &str,
        limit: i64,
    ) -> StoreResult<Vec<ExchangeRow>>;
    /// Inserts or replaces the model narrative of an incident.
    async fn put_model_narrative(&self, row: &ModelNarrativeRow) -> StoreResult<()>;
    /// The model narrative of an incident.
    async fn model_narrative(&self, incident_id: &str) -> StoreResult<Option<ModelNarrativeRow>>;
    /// Adds tokens, one call and cost to a provider's usage of `month` (`YYYY-MM`).
    async fn add_llm_usage(
        &self,
        provider: &str,
        month: &str,
        tokens_in: i64,
        tokens_out: i64,
        cost_usd: f64,
    ) -> StoreResult<()>;
    /// A provider's usage of `month` (zero when none).
    async fn llm_usage(&self, provider: &str, month: &str) -> StoreResult<UsageRow>;
    /// Appends a chat message; returns its row id.
    async fn append_chat(&self, row: &ChatMessageRow) -> StoreResult<i64>;
    /// The newest `limit` messages of a chat, oldest first.
    async fn chat_messages(&self, chat_id: &str, limit: i64) -> StoreResult<Vec<ChatMessageRow>>;
    /// Stores a new guided skill run.
    async fn create_skill_run(&self, row: &SkillRunRow) -> StoreResult<()>;
    /// One skill run.
    async fn skill_run(&self, id: &str) -> StoreResult<Option<SkillRunRow>>;
    /// Replaces a run's steps (JSON) after a tick.
    async fn update_skill_run(&self, id: &str, steps: &str, updated_at: i64) -> StoreResult<()>;
}

/// One stored model call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExchangeRow {
    /// Row id (0 before insert).
    pub id: i64,
    /// `incident` or `chat`.
    pub subject_kind: String,
    /// Incident id or chat id.
    pub subject_id: String,
    /// Provider name.
    pub provider: String,
    /// Model.
    pub model: String,
    /// Task (`narrative`, `chat`).
    pub task: String,
    /// HTTP attempt within the call, from 1.
    pub attempt: i64,
    /// The exact request body sent.
    pub request_body: String,
    /// The response body, when one arrived.
    pub response_body: Option<String>,
    /// HTTP status, when a response arrived.
    pub http_status: Option<i64>,
    /// Prompt tokens.
    pub tokens_in: Option<i64>,
    /// Completion tokens.
    pub tokens_out: Option<i64>,
    /// Latency, ms.
    pub latency_ms: i64,
    /// Estimated cost, USD.
    pub est_cost_usd: Option<f64>,
    /// `ok`, `invalid_output` or `error`.
    pub outcome: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Unix ms.
    pub created_at: i64,
}

/// The model narrative of an incident (or why there is none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelNarrativeRow {
    /// Incident.
    pub incident_id: String,
    /// The incident's severity when it was narrated (an escalation asks again).
    pub severity: String,
    /// Provider.
    pub provider: String,
    /// Model.
    pub model: String,
    /// `ok`, `fallback` (invalid output twice), `failed`, `skipped`.
    pub status: String,
    /// The validated narrative as JSON when `ok`.
    pub narrative: Option<String>,
    /// Why the model narrative is missing.
    pub error: Option<String>,
    /// JSON object: ref id -> short label of the data item given to the model.
    pub refs: String,
    /// Unix ms.
    pub created_at: i64,
}

/// Token usage of a provider in one month.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageRow {
    /// Prompt tokens.
    pub tokens_in: i64,
    /// Completion tokens.
    pub tokens_out: i64,
    /// Calls.
    pub calls: i64,
    /// Estimated cost, USD.
    pub cost_usd: f64,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessageRow {
    /// Row id (0 before insert).
    pub id: i64,
    /// Chat (one per user).
    pub chat_id: String,
    /// `user` or `assistant`.
    pub role: String,
    /// User name, or `wingman`.
    pub author: String,
    /// Text (shown escaped, never as HTML).
    pub text: String,
    /// Unix ms.
    pub created_at: i64,
}

/// A guided skill run: the skill's steps as a checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkillRunRow {
    /// Run id.
    pub id: String,
    /// Skill.
    pub skill_id: String,
    /// Incident it was started for.
    pub incident_id: Option<String>,
    /// User.
    pub started_by: String,
    /// JSON array of `{text, done, by, at}`.
    pub steps: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// One stored remediation plan (`plans`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRow {
    /// Plan id.
    pub id: String,
    /// Incident.
    pub incident_id: String,
    /// `skill`, `model` or `operator`.
    pub source: String,
    /// `active`, `stopped`, `superseded` or `completed`.
    pub status: String,
    /// Who proposed it (`user:<name>`, `hub`).
    pub created_by: String,
    /// The run (plan, validation, step states, approvals), JSON.
    pub run: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// One stored audit entry (`audit_log`), the columns of
/// [`crate::control::audit::AuditEntry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Unix seconds.
    pub ts: i64,
    /// Who.
    pub actor: String,
    /// What (snake_case kind).
    pub kind: String,
    /// Incident, if any.
    pub incident_id: Option<String>,
    /// Plan, if any.
    pub plan_id: Option<String>,
    /// JSON detail.
    pub detail: String,
    /// The previous entry's hash.
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

/// One stored memory vector (`memory_vectors`).
#[derive(Debug, Clone, PartialEq)]
pub struct VectorRow {
    /// Point id, e.g. `incident:inc-12`.
    pub id: String,
    /// `incident`, `outcome`, `template_summary` or `skill`.
    pub kind: String,
    /// Embedder id string (`name/model/dim`).
    pub embedder: String,
    /// Dimensions.
    pub dim: usize,
    /// `dim` little-endian f32.
    pub vector: Vec<u8>,
    /// Payload JSON.
    pub payload: String,
    /// The document's creation, ms.
    pub created_at: i64,
}

/// A dashboard-edited setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingRow {
    /// Key.
    pub key: String,
    /// JSON value (may hold secrets: never log it).
    pub value: String,
    /// Unix ms.
    pub updated_at: i64,
    /// User name.
    pub updated_by: String,
}

/// A stored PVE notification (webhook event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PveNotificationRow {
    /// Row id (0 before insert).
    pub id: i64,
    /// `(hostname, type, job-id, timestamp, title)` joined.
    pub dedup_key: String,
    /// `fields.hostname`.
    pub node: String,
    /// `fields.type` (vzdump, replication, fencing, package-updates, system-mail, ...).
    pub kind: String,
    /// PVE severity.
    pub severity: String,
    /// Title.
    pub title: String,
    /// The fact as JSON.
    pub body: String,
    /// Unix ms.
    pub received_at: i64,
}

/// Retention cut-offs (Unix ms); rows older than these are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneCutoffs {
    /// Facts received before this.
    pub facts_before: i64,
    /// Log template rows last seen before this.
    pub summaries_before: i64,
    /// Resolved incidents resolved before this.
    pub incidents_before: i64,
}

/// How many rows a prune deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneCounts {
    /// Facts (and webhook events).
    pub facts: u64,
    /// Log template rows.
    pub summaries: u64,
    /// Resolved incidents.
    pub incidents: u64,
}

/// A shared store handle.
pub type DynStore = Arc<dyn Store>;

/// Opens the store for `url` (`sqlite://PATH` or `postgres://...`) and migrates it.
pub async fn open(url: &str) -> StoreResult<DynStore> {
    let store: DynStore = if url.starts_with("sqlite:") {
        Arc::new(SqliteStore::connect(url).await?)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Arc::new(PgStore::connect(url).await?)
    } else {
        return Err(StoreError::Url(
            "expected sqlite://PATH or postgres://USER@HOST/DB".into(),
        ));
    };
    store.migrate().await?;
    Ok(store)
}

/// Redacts the password in a database URL for logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((creds, host)) => {
            let user = creds.split(':').next().unwrap_or("");
            if creds.contains(':') {
                format!("{scheme}://{user}:***@{host}")
            } else {
                url.to_string()
            }
        }
        None => url.to_string(),
    }
}
