//! Hub configuration: defaults, then `/etc/wingman/hub.toml`, then
//! `WINGMAN_HUB__*` environment variables, then command-line flags. Unknown
//! keys are rejected; the database URL's password is redacted in `Debug`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use wingman_agent::layer::{self, ConfigError};

/// Default config file.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/wingman/hub.toml";
/// Environment prefix, e.g. `WINGMAN_HUB__HTTP__LISTEN=0.0.0.0:8080`.
pub const ENV_PREFIX: &str = "WINGMAN_HUB__";
/// The credentials file's name, next to the config file.
pub const CREDENTIALS_FILE: &str = "hub.credentials";

/// The hub's settings.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// Data directory: CA, SQLite database.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://USER:PASS@HOST/DB`; empty means SQLite in the data dir.
    pub database_url: String,
    /// `HOST:PORT` agents should dial, printed in enrollment commands; empty
    /// means this host's name with the QUIC port.
    pub public_address: String,
    /// Log filter.
    pub log_level: String,
    /// Operator skills, added to the built-in library (same spec).
    pub skills_dir: PathBuf,
    /// QUIC (agent link) settings.
    pub quic: QuicConfig,
    /// HTTP (API and dashboard) settings.
    pub http: HttpConfig,
    /// Agent link policy.
    pub agents: AgentsConfig,
    /// Web authentication policy.
    pub auth: AuthConfig,
    /// Notification channels and routing (`[notify]`); a document saved in
    /// the dashboard replaces this table.
    pub notify: crate::notify::NotifyConfig,
    /// How long facts, summaries and resolved incidents are kept.
    pub retention: RetentionConfig,
    /// The incident engine: correlation window, hold-down, throttling and
    /// every detector threshold (`[incidents]`, `[incidents.detectors]`,
    /// `[incidents.throttle]`; defaults documented in `engine/config.rs`).
    pub incidents: crate::engine::EngineConfig,
    /// The Proxmox VE notification webhook receiver.
    pub pve: PveHubConfig,
    /// LLM providers (`[llm]`; keys usually in `hub.credentials`).
    pub llm: crate::llm::LlmConfig,
    /// Retrieval over incidents, outcomes, summaries and skills (`[memory]`).
    pub memory: crate::recall::MemoryConfig,
    /// The reasoner: queue, per-provider concurrency, circuit breaker and
    /// monthly token budgets (`[reasoner]`).
    pub reasoner: crate::reasoner::ReasonerConfig,
    /// The control plane's policy (`[control]`): Guide (default) or Assist,
    /// destructive opt-ins and target rules. A policy saved in the
    /// dashboard replaces this table.
    pub control: crate::plans::ControlConfig,
}

/// `[retention]`: what is kept, in days, and how often it is pruned.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Facts and webhook events (default 30 days).
    pub facts_days: u32,
    /// Log template summaries, by last sighting (default 90 days).
    pub summaries_days: u32,
    /// Resolved incidents, by resolution time (default 365 days).
    pub resolved_incidents_days: u32,
    /// How often the pruner runs (default 3600 s).
    pub prune_interval_secs: u64,
    /// Largest page the list APIs return (default 200).
    pub max_page_size: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            facts_days: 30,
            summaries_days: 90,
            resolved_incidents_days: 365,
            prune_interval_secs: 3600,
            max_page_size: 200,
        }
    }
}

/// `[pve]`: the receiver for PVE 8.3+ notification webhooks.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PveHubConfig {
    /// Shared secret PVE sends as `Authorization: Bearer <token>`; empty
    /// disables the endpoint. Put it in `/etc/wingman/hub.credentials` or
    /// `WINGMAN_HUB__PVE__WEBHOOK_TOKEN`, not in a world-readable file.
    pub webhook_secret: Option<crate::notify::Secret>,
    /// Largest webhook body accepted, bytes (default 256 KiB).
    pub webhook_max_body: Option<usize>,
}

/// QUIC listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QuicConfig {
    /// UDP address for agents.
    pub listen: SocketAddr,
    /// Maximum simultaneous agent connections.
    pub max_connections: usize,
}

/// HTTP listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// TCP address for the API and dashboard.
    pub listen: SocketAddr,
    /// Mark cookies `Secure` (set when the dashboard is served over HTTPS,
    /// e.g. behind a reverse proxy).
    pub secure_cookies: bool,
    /// Requests served at once; beyond it they are answered 503 + Retry-After.
    pub max_inflight: usize,
}

/// Agent link policy.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsConfig {
    /// Heartbeat interval agents are told to use.
    pub heartbeat_interval_ms: u32,
    /// A node is offline when no heartbeat arrived for this long.
    pub offline_after_ms: u64,
    /// Lifetime of agent client certificates (agents renew at 60-75%).
    pub cert_lifetime_secs: u64,
    /// Default lifetime of enrollment tokens.
    pub token_ttl_secs: u64,
    /// Fact batches waiting for the ingest writer; beyond it agents get a busy reply.
    pub ingest_queue: usize,
    /// The retry time a busy reply tells agents.
    pub busy_retry_ms: u32,
}

/// Web authentication policy.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// A session unused this long expires.
    pub session_idle_secs: u64,
    /// A session expires this long after login regardless of use.
    pub session_max_secs: u64,
    /// Failed logins allowed per client address within `login_window_secs`
    /// before each further attempt is delayed (exponentially).
    pub login_max_failures: u32,
    /// The window for counting failures.
    pub login_window_secs: u64,
    /// Lifetime of API keys created without `--ttl-days`.
    pub api_key_ttl_days: u32,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/wingman-hub"),
            database_url: String::new(),
            public_address: String::new(),
            log_level: "info".into(),
            skills_dir: PathBuf::from("/etc/wingman/skills"),
            quic: QuicConfig::default(),
            http: HttpConfig::default(),
            agents: AgentsConfig::default(),
            auth: AuthConfig::default(),
            notify: crate::notify::NotifyConfig::default(),
            retention: RetentionConfig::default(),
            incidents: crate::engine::EngineConfig::default(),
            pve: PveHubConfig::default(),
            llm: crate::llm::LlmConfig::default(),
            memory: crate::recall::MemoryConfig::default(),
            reasoner: crate::reasoner::ReasonerConfig::default(),
            control: crate::plans::ControlConfig::default(),
        }
    }
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 4433)),
            max_connections: 1024,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            secure_cookies: false,
            max_inflight: 256,
        }
    }
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 5_000,
            offline_after_ms: 20_000,
            cert_lifetime_secs: 30 * 24 * 3600,
            token_ttl_secs: 3600,
            ingest_queue: 512,
            busy_retry_ms: 500,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            session_idle_secs: 12 * 3600,
            session_max_secs: 7 * 24 * 3600,
            login_max_failures: 5,
            login_window_secs: 300,
            api_key_ttl_days: 90,
        }
    }
}

impl std::fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfig")
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &crate::store::redact_url(&self.database_url),
            )
            .field("public_address", &self.public_address)
            .field("log_level", &self.log_level)
            .field("skills_dir", &self.skills_dir)
            .field("quic", &self.quic)
            .field("http", &self.http)
            .field("agents", &self.agents)
            .field("auth", &self.auth)
            .field("notify", &self.notify)
            .field("retention", &self.retention)
            .field("incidents", &self.incidents)
            .field("pve", &self.pve)
            .field("llm", &self.llm)
            .field("memory", &self.memory)
            .field("reasoner", &self.reasoner)
            .field("control", &self.control)
            .finish()
    }
}

impl HubConfig {
    /// Loads the layered config from `file` (or the default) and the environment.
    pub fn load(file: Option<PathBuf>) -> Result<Self, ConfigError> {
        let explicit = file.is_some();
        let path = file.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
        if explicit && !path.exists() {
            return Err(ConfigError::Read {
                path,
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        // Secrets live beside the config in `hub.credentials` (0600, written
        // by `wingman-hub init`); it is merged over the config file.
        let credentials = path.with_file_name(CREDENTIALS_FILE);
        let cfg: Self = layer::load(&[path, credentials], ENV_PREFIX, std::env::vars())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.agents.heartbeat_interval_ms < 100 {
            return bad("agents.heartbeat_interval_ms must be at least 100");
        }
        if self.agents.offline_after_ms < 2 * u64::from(self.agents.heartbeat_interval_ms) {
            return bad(
                "agents.offline_after_ms must be at least twice agents.heartbeat_interval_ms",
            );
        }
        if self.agents.cert_lifetime_secs < 10 {
            return bad("agents.cert_lifetime_secs must be at least 10");
        }
        if !(10..=60_000).contains(&self.agents.busy_retry_ms) {
            return bad("agents.busy_retry_ms must be between 10 and 60000");
        }
        if self.agents.ingest_queue == 0 || self.quic.max_connections == 0 {
            return bad("agents.ingest_queue and quic.max_connections must be at least 1");
        }
        let e = &self.incidents;
        if e.correlation_window_ms <= 0
            || e.resolve_hold_down_ms < 0
            || e.housekeeping_interval_ms <= 0
            || e.max_signal_age_ms <= 0
        {
            return bad(
                "incidents.correlation_window_ms, housekeeping_interval_ms and max_signal_age_ms must be positive, resolve_hold_down_ms not negative",
            );
        }
        for g in [e.throttle.per_node, e.throttle.global] {
            if g.period_ms <= 0 || g.burst == 0 {
                return bad("incidents.throttle: period_ms must be positive and burst at least 1");
            }
        }
        let m = &self.memory;
        if m.enabled
            && m.backend == crate::recall::BackendKind::Qdrant
            && !m.qdrant_url.starts_with("http")
        {
            return bad(
                "memory.qdrant_url must be an http:// or https:// URL when backend = \"qdrant\"",
            );
        }
        if m.enabled
            && m.embedder != crate::recall::EmbedderKind::Hashed
            && !(8..=8192).contains(&m.embed_dim)
        {
            return bad("memory.embed_dim must be between 8 and 8192");
        }
        if let Err(e) = self.control.to_policy() {
            return Err(ConfigError::Invalid(format!("control: {e}")));
        }
        let r = &self.retention;
        if r.facts_days == 0 || r.summaries_days == 0 || r.resolved_incidents_days == 0 {
            return bad("retention.*_days must be at least 1");
        }
        if r.prune_interval_secs < 10 || !(10..=10_000).contains(&r.max_page_size) {
            return bad(
                "retention.prune_interval_secs must be at least 10 and retention.max_page_size between 10 and 10000",
            );
        }
        let q = &self.reasoner;
        if q.queue_capacity == 0 || q.workers == 0 || q.default_concurrency == 0 {
            return bad(
                "reasoner.queue_capacity, reasoner.workers and reasoner.default_concurrency must be at least 1",
            );
        }
        if let Err(e) = self.notify.validate() {
            return Err(ConfigError::Invalid(e.to_string()));
        }
        if self
            .pve
            .webhook_secret
            .as_ref()
            .is_some_and(|t| !t.is_empty() && t.expose().len() < 16)
        {
            return bad("pve.webhook_secret must be at least 16 characters");
        }
        if !self.database_url.is_empty()
            && !self.database_url.starts_with("sqlite:")
            && !self.database_url.starts_with("postgres://")
            && !self.database_url.starts_with("postgresql://")
        {
            return bad("database_url must start with sqlite:// or postgres://");
        }
        Ok(())
    }

    /// The effective database URL.
    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("wingman.db").display())
        } else {
            self.database_url.clone()
        }
    }

    /// The address agents should dial.
    pub fn agent_address(&self, bound: SocketAddr) -> String {
        if !self.public_address.is_empty() {
            return self.public_address.clone();
        }
        if bound.ip().is_unspecified() {
            let host = sysinfo::System::host_name().unwrap_or_else(|_| "localhost".into());
            format!("{host}:{}", bound.port())
        } else {
            bound.to_string()
        }
    }

    /// A commented example file with every key and its default.
    pub fn example() -> &'static str {
        include_str!("../../packaging/hub.toml")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_database_password_and_example_parses() {
        let c = HubConfig {
            database_url: "postgres://wingman:hunter2@db/wingman".into(),
            ..HubConfig::default()
        };
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        let parsed: HubConfig = toml::from_str(HubConfig::example()).unwrap();
        assert_eq!(format!("{parsed:?}"), format!("{:?}", HubConfig::default()));
    }
}
