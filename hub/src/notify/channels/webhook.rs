//! Generic JSON webhook with a stable, versioned schema and an optional
//! HMAC-SHA256 signature.
//!
//! # Request
//!
//! `POST <url>` with `Content-Type: application/json` and these headers:
//!
//! | header | value |
//! |---|---|
//! | `X-Wingman-Event` | `incident`, `digest` or `test` |
//! | `X-Wingman-Delivery` | notification id, the same on every retry (idempotency key) |
//! | `X-Wingman-Timestamp` | send time, Unix seconds |
//! | `X-Wingman-Signature` | `sha256=<lowercase hex>` of HMAC-SHA256(secret, `"<timestamp>.<body>"`), only when `secret` is set |
//!
//! The signature covers the timestamp and the exact body bytes, so a
//! receiver must verify it over the raw body before parsing, compare in
//! constant time, and reject timestamps more than a few minutes old
//! (replay).
//!
//! # Body, `version` 1
//!
//! ```json
//! {
//!   "version": 1,
//!   "id": "1700000000-1",
//!   "type": "incident",              // "incident" | "digest" | "test"
//!   "created": 1700000000,           // Unix seconds
//!   "title": "Opened: ZFS pool degraded",
//!   "text": "Severity: critical | Nodes: pve1\n\n...",
//!   "severity": "critical",          // "info" | "warning" | "critical"
//!   "url": "https://wingman.lan/incidents/42",   // or null
//!   "incident": {                    // only for "incident"
//!     "id": "42", "title": "...", "severity": "critical",
//!     "nodes": ["pve1"], "narrative": "...", "url": "..." },
//!   "transition": "opened",          // only for "incident"
//!   "digest": {                      // only for "digest"
//!     "reason": "quiet_hours",       // or "rate_limit"
//!     "count": 7, "incidents": 3,
//!     "items": [{ "incident_id": "42", "title": "...", "severity": "warning",
//!                 "transition": "opened", "at": 1700000000 }] }
//! }
//! ```
//!
//! Fields may be added within version 1; removals or changes of meaning
//! bump `version`.

use async_trait::async_trait;
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use ring::hmac;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::config_url;
use crate::notify::channel::{Channel, ChannelKind, SendError, Sent, http_status_error};
use crate::notify::config::ConfigError;
use crate::notify::egress::{Egress, EgressPolicy};
use crate::notify::message::{Content, Notification};
use crate::notify::secret::{self, Secret};

/// Schema version of the body.
pub const SCHEMA_VERSION: u32 = 1;
/// Signature header.
pub const SIGNATURE_HEADER: &str = "x-wingman-signature";
/// Timestamp header.
pub const TIMESTAMP_HEADER: &str = "x-wingman-timestamp";
/// Event type header.
pub const EVENT_HEADER: &str = "x-wingman-event";
/// Delivery id header.
pub const DELIVERY_HEADER: &str = "x-wingman-delivery";

/// `kind = "webhook"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Target URL.
    pub url: String,
    /// Channel name.
    pub name: String,
    /// Shared HMAC secret; when set, requests are signed.
    #[serde(default, serialize_with = "secret::serialize_opt")]
    pub secret: Option<Secret>,
    /// Allow a loopback target.
    #[serde(default)]
    pub allow_loopback: bool,
    /// Allow a private-range (LAN) server; off unless the admin allows it.
    #[serde(default)]
    pub allow_private: bool,
}

/// A generic webhook channel.
pub struct WebhookChannel {
    name: String,
    url: Url,
    key: Option<hmac::Key>,
    policy: EgressPolicy,
    egress: Egress,
}

impl std::fmt::Debug for WebhookChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookChannel")
            .field("name", &self.name)
            .field("host", &self.url.host_str())
            .field("signed", &self.key.is_some())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl WebhookChannel {
    /// Validates the config.
    pub fn new(cfg: &WebhookConfig, egress: Egress) -> Result<Self, ConfigError> {
        let url = config_url(&cfg.name, "url", &cfg.url)?;
        let key = match &cfg.secret {
            Some(s) if s.is_empty() => {
                return Err(ConfigError::Invalid {
                    channel: cfg.name.clone(),
                    detail: "secret is empty".to_owned(),
                });
            }
            Some(s) => Some(hmac::Key::new(hmac::HMAC_SHA256, s.expose().as_bytes())),
            None => None,
        };
        Ok(Self {
            name: cfg.name.clone(),
            url,
            key,
            policy: EgressPolicy {
                allow_loopback: cfg.allow_loopback,
                allow_private: cfg.allow_private,
            },
            egress,
        })
    }
}

/// The version-1 JSON body.
pub fn webhook_body(n: &Notification) -> serde_json::Value {
    let mut body = json!({
        "version": SCHEMA_VERSION,
        "id": n.id,
        "type": n.type_name(),
        "created": n.created,
        "title": n.title,
        "text": n.body,
        "severity": n.severity,
        "url": n.url,
    });
    match &n.content {
        Content::Incident {
            incident,
            transition,
        } => {
            body["incident"] = json!(incident);
            body["transition"] = json!(transition);
        }
        Content::Digest(d) => body["digest"] = json!(d),
        Content::Test => {}
    }
    body
}

/// `sha256=<hex>` of HMAC-SHA256(secret, `"<timestamp>.<body>"`).
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    sign_with(&key, timestamp, body)
}

fn sign_with(key: &hmac::Key, timestamp: i64, body: &[u8]) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("sha256={}", hex::encode(ctx.sign().as_ref()))
}

/// Verifies a signature header in constant time (for receivers and tests).
pub fn verify_signature(secret: &[u8], timestamp: i64, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(tag) = hex::decode(hex_sig) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut msg = timestamp.to_string().into_bytes();
    msg.push(b'.');
    msg.extend_from_slice(body);
    hmac::verify(&key, &msg, &tag).is_ok()
}

#[async_trait]
impl Channel for WebhookChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ChannelKind {
        ChannelKind::Webhook
    }

    async fn send(&self, n: &Notification) -> Result<Sent, SendError> {
        let body = serde_json::to_vec(&webhook_body(n)).map_err(|e| SendError::Config {
            service: "webhook",
            detail: e.to_string(),
        })?;
        let ts = OffsetDateTime::now_utc().unix_timestamp();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            HeaderName::from_static(EVENT_HEADER),
            HeaderValue::from_static(n.type_name()),
        );
        if let Ok(id) = HeaderValue::from_str(&n.id) {
            headers.insert(HeaderName::from_static(DELIVERY_HEADER), id);
        }
        headers.insert(
            HeaderName::from_static(TIMESTAMP_HEADER),
            HeaderValue::from(ts),
        );
        if let Some(key) = &self.key {
            let sig = sign_with(key, ts, &body);
            if let Ok(v) = HeaderValue::from_str(&sig) {
                headers.insert(HeaderName::from_static(SIGNATURE_HEADER), v);
            }
        }
        let status = self
            .egress
            .post("webhook", self.policy, &self.url, headers, body)
            .await?;
        if status.is_success() {
            Ok(Sent {
                status: status.as_u16(),
            })
        } else {
            Err(http_status_error(
                "webhook",
                status,
                "check the shared secret on both sides (and the receiver's clock, the timestamp is signed)",
                "check the webhook URL",
            ))
        }
    }
}
