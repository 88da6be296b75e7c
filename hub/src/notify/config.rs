//! Configuration: the `[notify]` table with its `[[notify.channels]]`
//! (a `kind`-tagged [`ChannelConfig`]) and the policy settings, validation,
//! channel construction, and the write-only public view.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::channel::{Channel, ChannelKind};
use super::channels::discord::{DiscordChannel, DiscordConfig};
use super::channels::email::{EmailChannel, EmailConfig};
use super::channels::gotify::{GotifyChannel, GotifyConfig};
use super::channels::ntfy::{NtfyChannel, NtfyConfig};
use super::channels::slack::{SlackChannel, SlackConfig};
use super::channels::webhook::{WebhookChannel, WebhookConfig};
use super::delivery::DispatchConfig;
use super::egress::{Egress, EgressError};
use super::policy::{PolicyConfig, RateLimit, RouteConfig};

/// Configuration errors; each names the channel or route.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A channel setting is invalid.
    #[error("notification channel \"{channel}\": {detail}")]
    Invalid {
        /// Channel name.
        channel: String,
        /// What is wrong.
        detail: String,
    },
    /// Two channels share a name.
    #[error("two notification channels are named \"{0}\"")]
    DuplicateName(String),
    /// A route names a channel that does not exist.
    #[error("notification route \"{route}\" sends to unknown channel \"{channel}\"")]
    UnknownChannel {
        /// Route name.
        route: String,
        /// Channel name.
        channel: String,
    },
    /// A route or policy setting is invalid.
    #[error("notification route \"{route}\": {detail}")]
    Route {
        /// Route name.
        route: String,
        /// What is wrong.
        detail: String,
    },
    /// The egress client could not be set up.
    #[error(transparent)]
    Egress(#[from] EgressError),
}

/// One `[[notify.channels]]` entry, tagged by `kind`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ChannelConfig {
    /// ntfy.
    Ntfy(NtfyConfig),
    /// Gotify.
    Gotify(GotifyConfig),
    /// Discord webhook.
    Discord(DiscordConfig),
    /// Slack webhook.
    Slack(SlackConfig),
    /// Generic signed webhook.
    Webhook(WebhookConfig),
    /// SMTP email.
    Email(EmailConfig),
}

impl ChannelConfig {
    /// The channel name.
    pub fn name(&self) -> &str {
        match self {
            Self::Ntfy(c) => &c.name,
            Self::Gotify(c) => &c.name,
            Self::Discord(c) => &c.name,
            Self::Slack(c) => &c.name,
            Self::Webhook(c) => &c.name,
            Self::Email(c) => &c.name,
        }
    }

    /// The service kind.
    pub fn kind(&self) -> ChannelKind {
        match self {
            Self::Ntfy(_) => ChannelKind::Ntfy,
            Self::Gotify(_) => ChannelKind::Gotify,
            Self::Discord(_) => ChannelKind::Discord,
            Self::Slack(_) => ChannelKind::Slack,
            Self::Webhook(_) => ChannelKind::Webhook,
            Self::Email(_) => ChannelKind::Email,
        }
    }

    /// Validates and builds the channel.
    pub fn build(&self, egress: &Egress) -> Result<Arc<dyn Channel>, ConfigError> {
        if self.name().trim().is_empty() {
            return Err(ConfigError::Invalid {
                channel: String::new(),
                detail: "name is empty".to_owned(),
            });
        }
        let e = egress.clone();
        Ok(match self {
            Self::Ntfy(c) => Arc::new(NtfyChannel::new(c, e)?),
            Self::Gotify(c) => Arc::new(GotifyChannel::new(c, e)?),
            Self::Discord(c) => Arc::new(DiscordChannel::new(c, e)?),
            Self::Slack(c) => Arc::new(SlackChannel::new(c, e)?),
            Self::Webhook(c) => Arc::new(WebhookChannel::new(c, e)?),
            Self::Email(c) => Arc::new(EmailChannel::new(c, e)?),
        })
    }

    /// The view an API may return: every secret is `{"set": true|false}`.
    pub fn public_view(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

fn default_dedup_secs() -> u64 {
    600
}

/// The `[notify]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Channels.
    #[serde(default)]
    pub channels: Vec<ChannelConfig>,
    /// Routes; when empty, one default route sends to every channel.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Identical (incident, transition, severity) within this many seconds
    /// are sent once (default 600).
    #[serde(default = "default_dedup_secs")]
    pub dedup_window_secs: u64,
    /// Default per-channel token bucket.
    #[serde(default)]
    pub rate_limit: RateLimit,
    /// Per-channel overrides of `rate_limit`, keyed by channel name.
    #[serde(default)]
    pub channel_rate_limits: BTreeMap<String, RateLimit>,
    /// Delivery queue and retry settings.
    #[serde(default)]
    pub delivery: DispatchConfig,
    /// Base URL of the dashboard as people reach it (e.g.
    /// `https://wingman.lan`), for the incident links in notifications.
    #[serde(default)]
    pub dashboard_url: Option<String>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            channels: Vec::new(),
            routes: Vec::new(),
            dedup_window_secs: default_dedup_secs(),
            rate_limit: RateLimit::default(),
            channel_rate_limits: BTreeMap::new(),
            delivery: DispatchConfig::default(),
            dashboard_url: None,
        }
    }
}

impl NotifyConfig {
    /// Checks names and references (channel construction checks the rest).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = BTreeSet::new();
        for c in &self.channels {
            if !names.insert(c.name()) {
                return Err(ConfigError::DuplicateName(c.name().to_owned()));
            }
        }
        for r in &self.routes {
            for ch in &r.channels {
                if !names.contains(ch.as_str()) {
                    return Err(ConfigError::UnknownChannel {
                        route: r.name.clone(),
                        channel: ch.clone(),
                    });
                }
            }
        }
        for ch in self.channel_rate_limits.keys() {
            if !names.contains(ch.as_str()) {
                return Err(ConfigError::UnknownChannel {
                    route: "channel_rate_limits".to_owned(),
                    channel: ch.clone(),
                });
            }
        }
        Ok(())
    }

    /// Validates and builds every channel.
    pub fn build_channels(&self, egress: &Egress) -> Result<Vec<Arc<dyn Channel>>, ConfigError> {
        self.validate()?;
        self.channels.iter().map(|c| c.build(egress)).collect()
    }

    /// The policy part, with the default route filled in when none is set.
    pub fn policy(&self) -> PolicyConfig {
        let routes = if self.channels.is_empty() {
            Vec::new()
        } else if self.routes.is_empty() {
            vec![RouteConfig::all_channels(
                self.channels.iter().map(|c| c.name().to_owned()).collect(),
            )]
        } else {
            self.routes.clone()
        };
        PolicyConfig {
            routes,
            dedup_window_secs: self.dedup_window_secs,
            rate_limit: self.rate_limit,
            channel_rate_limits: self.channel_rate_limits.clone(),
        }
    }

    /// The view an API may return (secrets as `{"set": true}`).
    pub fn public_view(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}
