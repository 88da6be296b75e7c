//! Agent configuration: defaults, then `/etc/wingman/agent.toml`, then
//! `WINGMAN_AGENT__*` environment variables, then command-line flags.

use std::path::PathBuf;

use serde::Deserialize;

use crate::layer::{self, ConfigError};

/// Default config file.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/wingman/agent.toml";
/// Environment prefix; nesting uses `__`, e.g. `WINGMAN_AGENT__FACTS__SAMPLE_INTERVAL_MS`.
pub const ENV_PREFIX: &str = "WINGMAN_AGENT__";

/// The agent's settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Where enrollment state lives (mode 0700).
    pub state_dir: PathBuf,
    /// Override of the hub address recorded at enrollment (`HOST:PORT`).
    pub hub: Option<String>,
    /// Log filter, e.g. `info` or `wingman_agent=debug`.
    pub log_level: String,
    /// The node's name at the hub (default: `proxmox.node` on a PVE node,
    /// else the system hostname). Incidents and the cluster view match
    /// nodes by this name.
    pub node_name: Option<String>,
    /// Host facts settings.
    pub facts: FactsConfig,
    /// Uplink settings.
    pub link: LinkConfig,
    /// The durable spool.
    pub spool: SpoolSection,
    /// Log summaries.
    pub logs: LogsConfig,
    /// Docker or Podman.
    pub docker: DockerSection,
    /// Proxmox VE (on PVE nodes).
    pub proxmox: ProxmoxSection,
}

/// A secret string: redacted in `Debug`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value (tests and programmatic configuration).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The Proxmox VE integration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProxmoxSection {
    /// Watch Proxmox VE when this node is one (`/etc/pve` exists).
    pub enabled: bool,
    /// The local API.
    pub base_url: String,
    /// API token id, `USER@REALM!TOKENID` (see the README for the role).
    pub token_id: Option<String>,
    /// API token secret.
    pub token_secret: Option<Secret>,
    /// SHA-256 fingerprint of the node's API certificate (`pvenode cert info`).
    pub fingerprint: Option<String>,
    /// This node's name in PVE (default: the hostname).
    pub node: Option<String>,
    /// The task directory followed for task events.
    pub tasks_dir: std::path::PathBuf,
    /// API sweep interval.
    pub interval_secs: u64,
    /// What the hub may ask this node to do to its guests (`[proxmox.policy]`):
    /// destructive actions (hard stop, rollback) are refused unless
    /// `allow_destructive = true`.
    pub policy: crate::pve::LocalPolicy,
}

impl Default for ProxmoxSection {
    fn default() -> Self {
        Self {
            enabled: true,
            base_url: "https://localhost:8006/api2/json".into(),
            token_id: None,
            token_secret: None,
            fingerprint: None,
            node: None,
            tasks_dir: std::path::PathBuf::from("/var/log/pve/tasks"),
            interval_secs: 30,
            policy: crate::pve::LocalPolicy::default(),
        }
    }
}

/// The Docker/Podman integration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DockerSection {
    /// Watch the container engine when a socket is found (or `socket` is set).
    pub enabled: bool,
    /// Engine socket; empty: auto-detect Docker, then rootful and rootless Podman.
    pub socket: Option<std::path::PathBuf>,
    /// Summarise running containers' logs (templates and counts only).
    pub container_logs: bool,
    /// Which container actions the hub may have this node run.
    pub policy: crate::docker::LocalPolicy,
}

impl Default for DockerSection {
    fn default() -> Self {
        Self {
            enabled: true,
            socket: None,
            container_logs: true,
            policy: crate::docker::LocalPolicy::default(),
        }
    }
}

/// The log pipeline and its sources.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    /// Turn the log pipeline on or off.
    pub enabled: bool,
    /// Summary window.
    pub window_ms: u64,
    /// An error-severity line closes the window this long after it arrived
    /// instead of at the window's end, so problems reach the hub in about a
    /// second while ordinary lines are still counted per window (0: off).
    pub urgent_flush_ms: u64,
    /// Lines longer than this are cut (counted).
    pub max_line_bytes: usize,
    /// Templates kept in memory; least recently used ones are evicted (counted).
    pub max_templates: usize,
    /// Built-in redaction rules to turn off (by name).
    pub disabled_redaction_rules: Vec<String>,
    /// Extra key names whose values are always redacted.
    pub extra_secret_keys: Vec<String>,
    /// The high-entropy token rule (off by default: it also hits ids).
    pub redact_high_entropy: bool,
    /// The systemd journal.
    pub journal: JournalConfig,
    /// Plain log files.
    pub files: Vec<FileSourceConfig>,
    /// The opt-in local store of raw lines.
    pub raw: RawConfig,
}

/// The systemd journal source.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JournalConfig {
    /// Read the journal (skipped with a warning when `journalctl` is missing).
    pub enabled: bool,
    /// Only these units (empty: everything).
    pub units: Vec<String>,
    /// The `journalctl` program.
    pub journalctl: String,
    /// Read the journal files in this directory instead of the system journal.
    pub directory: Option<std::path::PathBuf>,
    /// Send redacted example lines with the summaries (opt-in).
    pub examples: bool,
    /// Keep raw lines in the local store (opt-in; they never leave the node).
    pub raw: bool,
}

/// One plain log file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// The file to follow (rotation by rename and copytruncate is handled).
    pub path: std::path::PathBuf,
    /// Send redacted example lines (opt-in).
    #[serde(default)]
    pub examples: bool,
    /// Keep raw lines in the local store (opt-in).
    #[serde(default)]
    pub raw: bool,
}

/// The raw line store.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// Days kept.
    pub retention_days: u32,
    /// Size cap in bytes; oldest days go first.
    pub max_bytes: u64,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window_ms: 10_000,
            urgent_flush_ms: 1_000,
            max_line_bytes: 16 * 1024,
            max_templates: 5_000,
            disabled_redaction_rules: Vec::new(),
            extra_secret_keys: Vec::new(),
            redact_high_entropy: false,
            journal: JournalConfig::default(),
            files: Vec::new(),
            raw: RawConfig::default(),
        }
    }
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            units: Vec::new(),
            journalctl: "journalctl".into(),
            directory: None,
            examples: false,
            raw: false,
        }
    }
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            retention_days: 7,
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Host facts collection.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FactsConfig {
    /// How often the host is sampled; a sample that changed materially is sent at once.
    pub sample_interval_ms: u64,
    /// A sample is sent at least this often even when nothing changed.
    pub max_interval_ms: u64,
}

/// Uplink behaviour.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LinkConfig {
    /// First reconnect delay; doubles with jitter up to `reconnect_max_ms`.
    pub reconnect_min_ms: u64,
    /// Largest reconnect delay.
    pub reconnect_max_ms: u64,
    /// Batches sent but not yet acknowledged at any time (flow control: the
    /// rest waits in the spool).
    pub max_inflight_batches: usize,
    /// How often the agent reports its own health (spool, link, pipeline).
    pub health_interval_ms: u64,
}

/// The durable on-disk spool between the collectors and the hub.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolSection {
    /// Spool directory; default `<state_dir>/spool`.
    pub dir: Option<PathBuf>,
    /// Size cap; beyond it the oldest segment is dropped and the loss is
    /// reported to the hub as a gap (overflow policy: drop oldest).
    pub max_bytes: u64,
    /// Segment rotation size.
    pub segment_bytes: u64,
    /// `interval` (group commit, the default) or `always` (fsync every batch).
    pub fsync: FsyncMode,
    /// With `fsync = "interval"`: the longest time an appended batch stays unsynced.
    pub fsync_interval_ms: u64,
}

/// The spool's fsync policy.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// fsync after every appended batch.
    Always,
    /// Group commit: at most `fsync_interval_ms` or 256 batches unsynced.
    Interval,
}

impl Default for SpoolSection {
    fn default() -> Self {
        Self {
            dir: None,
            max_bytes: 256 * 1024 * 1024,
            segment_bytes: 4 * 1024 * 1024,
            fsync: FsyncMode::Interval,
            fsync_interval_ms: 200,
        }
    }
}

impl SpoolSection {
    /// The spool settings for `stream_id` (each stream has its own directory).
    pub fn spool_config(
        &self,
        state_dir: &std::path::Path,
        stream_id: u64,
    ) -> crate::spool::SpoolConfig {
        let base = self.dir.clone().unwrap_or_else(|| state_dir.join("spool"));
        let mut cfg = crate::spool::SpoolConfig::new(base.join(format!("{stream_id:016x}")));
        cfg.max_bytes = self.max_bytes;
        cfg.segment_bytes = self.segment_bytes;
        cfg.fsync = match self.fsync {
            FsyncMode::Always => crate::spool::FsyncPolicy::Always,
            FsyncMode::Interval => crate::spool::FsyncPolicy::Interval {
                max_records: 256,
                max_ms: self.fsync_interval_ms,
            },
        };
        cfg
    }
}

impl AgentConfig {
    /// The name this node reports to the hub.
    pub fn node_name(&self, kind: wingman_protocol::HostKind) -> String {
        self.node_name
            .clone()
            .or_else(|| {
                (kind == wingman_protocol::HostKind::Proxmox && self.proxmox.enabled)
                    .then(|| self.proxmox.node.clone())
                    .flatten()
            })
            .or_else(|| sysinfo::System::host_name().ok())
            .unwrap_or_else(|| "unknown".into())
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/wingman-agent"),
            hub: None,
            log_level: "info".into(),
            node_name: None,
            facts: FactsConfig::default(),
            link: LinkConfig::default(),
            spool: SpoolSection::default(),
            logs: LogsConfig::default(),
            docker: DockerSection::default(),
            proxmox: ProxmoxSection::default(),
        }
    }
}

impl Default for FactsConfig {
    fn default() -> Self {
        Self {
            sample_interval_ms: 10_000,
            max_interval_ms: 60_000,
        }
    }
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
            max_inflight_batches: 256,
            health_interval_ms: 30_000,
        }
    }
}

impl AgentConfig {
    /// Loads the layered config from `file` (or the default file) and the
    /// process environment.
    pub fn load(file: Option<PathBuf>) -> Result<Self, ConfigError> {
        let explicit = file.is_some();
        let path = file.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
        if explicit && !path.exists() {
            return Err(ConfigError::Read {
                path,
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let cfg: Self = layer::load(&[path], ENV_PREFIX, std::env::vars())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(n) = &self.node_name {
            let ok = !n.is_empty()
                && n.len() <= 253
                && n.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_');
            if !ok {
                return Err(ConfigError::Invalid(
                    "node_name must be 1-253 letters, digits, '-', '.' or '_'".into(),
                ));
            }
        }
        if self.facts.sample_interval_ms < 100 {
            return Err(ConfigError::Invalid(
                "facts.sample_interval_ms must be at least 100".into(),
            ));
        }
        if self.link.reconnect_min_ms == 0
            || self.link.reconnect_max_ms < self.link.reconnect_min_ms
        {
            return Err(ConfigError::Invalid(
                "link.reconnect_min_ms must be > 0 and <= link.reconnect_max_ms".into(),
            ));
        }
        if self.logs.window_ms < 100 {
            return Err(ConfigError::Invalid(
                "logs.window_ms must be at least 100".into(),
            ));
        }
        if self.logs.max_line_bytes < 256 || self.logs.max_templates < 10 {
            return Err(ConfigError::Invalid(
                "logs.max_line_bytes must be at least 256 and logs.max_templates at least 10"
                    .into(),
            ));
        }
        let unknown: Vec<&str> = self
            .logs
            .disabled_redaction_rules
            .iter()
            .map(String::as_str)
            .filter(|r| !wingman_protocol::logs::Redactor::rule_names().contains(r))
            .collect();
        if !unknown.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "logs.disabled_redaction_rules names unknown rules: {}",
                unknown.join(", ")
            )));
        }
        if let Some(fp) = &self.proxmox.fingerprint
            && crate::pve::client::parse_fingerprint(fp).is_err()
        {
            return Err(ConfigError::Invalid(
                "proxmox.fingerprint must be the node certificate's SHA-256 (64 hex digits, colons allowed)".into(),
            ));
        }
        if let Some(id) = &self.proxmox.token_id
            && !(id.contains('@') && id.contains('!'))
        {
            return Err(ConfigError::Invalid(
                "proxmox.token_id must look like USER@REALM!TOKENID".into(),
            ));
        }
        if self.link.max_inflight_batches == 0 {
            return Err(ConfigError::Invalid(
                "link.max_inflight_batches must be at least 1".into(),
            ));
        }
        if self.link.health_interval_ms < 1_000 {
            return Err(ConfigError::Invalid(
                "link.health_interval_ms must be at least 1000".into(),
            ));
        }
        if self.spool.max_bytes < 64 * 1024 || self.spool.segment_bytes < 4096 {
            return Err(ConfigError::Invalid(
                "spool.max_bytes must be at least 65536 and spool.segment_bytes at least 4096"
                    .into(),
            ));
        }
        if self.spool.segment_bytes > self.spool.max_bytes {
            return Err(ConfigError::Invalid(
                "spool.segment_bytes must not exceed spool.max_bytes".into(),
            ));
        }
        if self.spool.fsync_interval_ms == 0 || self.spool.fsync_interval_ms > 60_000 {
            return Err(ConfigError::Invalid(
                "spool.fsync_interval_ms must be between 1 and 60000".into(),
            ));
        }
        Ok(())
    }

    /// A commented example file with every key and its default.
    pub fn example() -> &'static str {
        include_str!("../../packaging/agent.toml")
    }
}
