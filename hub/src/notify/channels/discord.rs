//! Discord incoming webhook: `POST <webhook URL>` with one embed (title,
//! description, colour by severity, url). Mentions are disabled so incident
//! text cannot ping `@everyone`. The webhook URL is a secret (its path
//! holds the token).

use async_trait::async_trait;
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{click_url, config_url};
use crate::notify::Severity;
use crate::notify::channel::{Channel, ChannelKind, SendError, Sent, http_status_error};
use crate::notify::config::ConfigError;
use crate::notify::egress::{Egress, EgressPolicy};
use crate::notify::message::{Notification, truncate};
use crate::notify::secret::Secret;

impl std::fmt::Debug for DiscordChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscordChannel")
            .field("name", &self.name)
            .field("host", &self.parsed.host_str())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Embed colours.
pub const COLOR_CRITICAL: u32 = 0xE7_4C_3C;
/// Warning colour (amber).
pub const COLOR_WARNING: u32 = 0xF3_9C_12;
/// Info colour (blue).
pub const COLOR_INFO: u32 = 0x34_98_DB;
/// Resolution colour (green).
pub const COLOR_RESOLVED: u32 = 0x2E_CC_71;

/// `kind = "discord"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    /// Channel name.
    pub name: String,
    /// `https://discord.com/api/webhooks/<id>/<token>`.
    pub webhook_url: Secret,
    /// Display name override for the webhook.
    #[serde(default)]
    pub username: Option<String>,
    /// Allow a loopback target.
    #[serde(default)]
    pub allow_loopback: bool,
    /// Allow a private-range (LAN) server; off unless the admin allows it.
    #[serde(default)]
    pub allow_private: bool,
}

/// A Discord webhook channel. `Debug` shows the host only.
pub struct DiscordChannel {
    name: String,
    parsed: Url,
    username: Option<String>,
    policy: EgressPolicy,
    egress: Egress,
}

impl DiscordChannel {
    /// Validates the config.
    pub fn new(cfg: &DiscordConfig, egress: Egress) -> Result<Self, ConfigError> {
        let parsed = config_url(&cfg.name, "webhook_url", cfg.webhook_url.expose())?;
        Ok(Self {
            name: cfg.name.clone(),
            parsed,
            username: cfg.username.clone(),
            policy: EgressPolicy {
                allow_loopback: cfg.allow_loopback,
                allow_private: cfg.allow_private,
            },
            egress,
        })
    }
}

/// Embed colour for a notification.
pub(crate) fn discord_color(n: &Notification) -> u32 {
    if n.is_resolution() {
        return COLOR_RESOLVED;
    }
    match n.severity {
        Severity::Critical => COLOR_CRITICAL,
        Severity::Warning => COLOR_WARNING,
        Severity::Info => COLOR_INFO,
    }
}

/// The JSON body sent to Discord.
pub(crate) fn discord_body(n: &Notification, username: Option<&str>) -> serde_json::Value {
    let mut embed = json!({
        "title": truncate(&n.title, 256),
        "description": truncate(&n.body, 4096),
        "color": discord_color(n),
    });
    if let Some(url) = click_url(n) {
        embed["url"] = json!(url);
    }
    let mut body = json!({
        "embeds": [embed],
        "allowed_mentions": { "parse": [] },
    });
    if let Some(u) = username {
        body["username"] = json!(truncate(u, 80));
    }
    body
}

#[async_trait]
impl Channel for DiscordChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ChannelKind {
        ChannelKind::Discord
    }

    async fn send(&self, n: &Notification) -> Result<Sent, SendError> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let body = serde_json::to_vec(&discord_body(n, self.username.as_deref())).map_err(|e| {
            SendError::Config {
                service: "Discord",
                detail: e.to_string(),
            }
        })?;
        let status = self
            .egress
            .post("Discord", self.policy, &self.parsed, headers, body)
            .await?;
        if status.is_success() {
            Ok(Sent {
                status: status.as_u16(),
            })
        } else {
            let gone = "the webhook URL is wrong or the webhook was deleted; copy it again from the Discord channel settings";
            Err(http_status_error("Discord", status, gone, gone))
        }
    }
}
