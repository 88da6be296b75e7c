//! Gotify: `POST {server}/message` with the application token in
//! `X-Gotify-Key` and a JSON body `{title, message, priority, extras}`;
//! `extras["client::notification"].click.url` opens the incident.

use async_trait::async_trait;
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{click_url, config_url, join_path, urgency};
use crate::notify::channel::{Channel, ChannelKind, SendError, Sent, http_status_error};
use crate::notify::config::ConfigError;
use crate::notify::egress::{Egress, EgressPolicy};
use crate::notify::message::Notification;
use crate::notify::secret::Secret;

/// `kind = "gotify"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GotifyConfig {
    /// Channel name.
    pub name: String,
    /// Server base URL, e.g. `http://192.168.1.5:8080`.
    pub server: String,
    /// Application token.
    pub token: Secret,
    /// Allow a loopback server.
    #[serde(default)]
    pub allow_loopback: bool,
    /// Allow a private-range (LAN) server; off unless the admin allows it.
    #[serde(default)]
    pub allow_private: bool,
}

/// A Gotify channel.
#[derive(Debug)]
pub struct GotifyChannel {
    name: String,
    url: Url,
    key: HeaderValue,
    policy: EgressPolicy,
    egress: Egress,
}

impl GotifyChannel {
    /// Validates the config.
    pub fn new(cfg: &GotifyConfig, egress: Egress) -> Result<Self, ConfigError> {
        let invalid = |detail: &str| ConfigError::Invalid {
            channel: cfg.name.clone(),
            detail: detail.to_owned(),
        };
        let server = config_url(&cfg.name, "server", &cfg.server)?;
        if cfg.token.is_empty() {
            return Err(invalid("token is empty"));
        }
        let mut key = HeaderValue::from_str(cfg.token.expose())
            .map_err(|_| invalid("token contains invalid characters"))?;
        key.set_sensitive(true);
        Ok(Self {
            name: cfg.name.clone(),
            url: join_path(&server, "message"),
            key,
            policy: EgressPolicy {
                allow_loopback: cfg.allow_loopback,
                allow_private: cfg.allow_private,
            },
            egress,
        })
    }
}

/// Gotify priority: 8 for urgency 5 (high-priority notification), 5 for
/// 4, 4 for 3, 2 for resolutions.
pub(crate) fn gotify_priority(n: &Notification) -> u8 {
    match urgency(n) {
        5 => 8,
        4 => 5,
        3 => 4,
        _ => 2,
    }
}

/// The JSON body sent to Gotify.
pub(crate) fn gotify_body(n: &Notification) -> serde_json::Value {
    let mut body = json!({
        "title": n.title,
        "message": n.body,
        "priority": gotify_priority(n),
    });
    if let Some(url) = click_url(n) {
        body["extras"] = json!({ "client::notification": { "click": { "url": url } } });
    }
    body
}

#[async_trait]
impl Channel for GotifyChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ChannelKind {
        ChannelKind::Gotify
    }

    async fn send(&self, n: &Notification) -> Result<Sent, SendError> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(HeaderName::from_static("x-gotify-key"), self.key.clone());
        let body = serde_json::to_vec(&gotify_body(n)).map_err(|e| SendError::Config {
            service: "Gotify",
            detail: e.to_string(),
        })?;
        let status = self
            .egress
            .post("Gotify", self.policy, &self.url, headers, body)
            .await?;
        if status.is_success() {
            Ok(Sent {
                status: status.as_u16(),
            })
        } else {
            Err(http_status_error(
                "Gotify",
                status,
                "check the application token",
                "check the server URL",
            ))
        }
    }
}
