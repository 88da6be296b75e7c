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
    /// Host facts settings.
    pub facts: FactsConfig,
    /// Uplink settings.
    pub link: LinkConfig,
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
    /// Unacknowledged batches kept in memory; beyond it the oldest is dropped
    /// and counted (policy: drop oldest).
    pub max_unacked_batches: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/wingman-agent"),
            hub: None,
            log_level: "info".into(),
            facts: FactsConfig::default(),
            link: LinkConfig::default(),
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
            max_unacked_batches: 1_000,
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
        if self.link.max_unacked_batches == 0 {
            return Err(ConfigError::Invalid(
                "link.max_unacked_batches must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// A commented example file with every key and its default.
    pub fn example() -> &'static str {
        include_str!("../../packaging/agent.toml")
    }
}
