//! Slack incoming webhook: `POST <webhook URL>` with `{text, blocks}`:
//! `text` is the notification fallback, `blocks` a linked title section and
//! a body section in escaped mrkdwn. The webhook URL is a secret.

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
use crate::notify::message::{Content, Notification, truncate};
use crate::notify::secret::Secret;

impl std::fmt::Debug for SlackChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackChannel")
            .field("name", &self.name)
            .field("host", &self.parsed.host_str())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// `kind = "slack"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// Channel name.
    pub name: String,
    /// `https://hooks.slack.com/services/...`.
    pub webhook_url: Secret,
    /// Allow a loopback target.
    #[serde(default)]
    pub allow_loopback: bool,
    /// Allow a private-range (LAN) server; off unless the admin allows it.
    #[serde(default)]
    pub allow_private: bool,
}

/// A Slack webhook channel. `Debug` shows the host only.
pub struct SlackChannel {
    name: String,
    parsed: Url,
    policy: EgressPolicy,
    egress: Egress,
}

impl SlackChannel {
    /// Validates the config.
    pub fn new(cfg: &SlackConfig, egress: Egress) -> Result<Self, ConfigError> {
        let parsed = config_url(&cfg.name, "webhook_url", cfg.webhook_url.expose())?;
        Ok(Self {
            name: cfg.name.clone(),
            parsed,
            policy: EgressPolicy {
                allow_loopback: cfg.allow_loopback,
                allow_private: cfg.allow_private,
            },
            egress,
        })
    }
}

/// Escapes `&`, `<`, `>` for Slack mrkdwn.
pub(crate) fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn emoji(n: &Notification) -> &'static str {
    match &n.content {
        Content::Incident { .. } if n.is_resolution() => ":white_check_mark:",
        Content::Incident { .. } => match n.severity {
            Severity::Critical => ":rotating_light:",
            Severity::Warning => ":warning:",
            Severity::Info => ":information_source:",
        },
        Content::Digest(_) => ":inbox_tray:",
        Content::Test => ":test_tube:",
    }
}

/// The JSON body sent to Slack.
pub(crate) fn slack_body(n: &Notification) -> serde_json::Value {
    let title = slack_escape(&n.title);
    let heading = match click_url(n) {
        Some(url) => format!("{} *<{}|{}>*", emoji(n), url.replace('|', "%7C"), title),
        None => format!("{} *{}*", emoji(n), title),
    };
    json!({
        "text": format!("{} {}", emoji(n), n.title),
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": truncate(&heading, 3000) } },
            { "type": "section", "text": { "type": "mrkdwn", "text": truncate(&slack_escape(&n.body), 3000) } },
        ],
    })
}

#[async_trait]
impl Channel for SlackChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ChannelKind {
        ChannelKind::Slack
    }

    async fn send(&self, n: &Notification) -> Result<Sent, SendError> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let body = serde_json::to_vec(&slack_body(n)).map_err(|e| SendError::Config {
            service: "Slack",
            detail: e.to_string(),
        })?;
        let status = self
            .egress
            .post("Slack", self.policy, &self.parsed, headers, body)
            .await?;
        if status.is_success() {
            Ok(Sent {
                status: status.as_u16(),
            })
        } else {
            let gone =
                "the webhook URL was revoked or is wrong; create a new incoming webhook in Slack";
            Err(http_status_error("Slack", status, gone, gone))
        }
    }
}
