//! ntfy: `POST {server}/{topic}` with the body as the message and the
//! `Title`, `Priority` (1-5), `Tags` and `Click` headers; optional bearer
//! token (`tk_...`) or basic auth.

use async_trait::async_trait;
use base64::Engine as _;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use super::{click_url, config_url, join_path, one_line, text_header, truncate_bytes, urgency};
use crate::notify::Severity;
use crate::notify::channel::{Channel, ChannelKind, SendError, Sent, http_status_error};
use crate::notify::config::ConfigError;
use crate::notify::egress::{Egress, EgressPolicy};
use crate::notify::message::{Content, Notification};
use crate::notify::secret::{self, Secret};

/// ntfy's message size before it turns the body into an attachment.
const MAX_BODY: usize = 4096;

/// `kind = "ntfy"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NtfyConfig {
    /// Channel name.
    pub name: String,
    /// Server base URL, e.g. `https://ntfy.sh`.
    pub server: String,
    /// Topic (letters, digits, `-`, `_`; at most 64).
    pub topic: String,
    /// Access token, sent as `Authorization: Bearer`.
    #[serde(default, serialize_with = "secret::serialize_opt")]
    pub token: Option<Secret>,
    /// User for basic auth (with `password`).
    #[serde(default)]
    pub username: Option<String>,
    /// Password for basic auth.
    #[serde(default, serialize_with = "secret::serialize_opt")]
    pub password: Option<Secret>,
    /// Allow a loopback server.
    #[serde(default)]
    pub allow_loopback: bool,
    /// Allow a private-range (LAN) server; off unless the admin allows it.
    #[serde(default)]
    pub allow_private: bool,
}

/// An ntfy channel.
#[derive(Debug)]
pub struct NtfyChannel {
    name: String,
    url: Url,
    auth: Option<HeaderValue>,
    policy: EgressPolicy,
    egress: Egress,
}

impl NtfyChannel {
    /// Validates the config.
    pub fn new(cfg: &NtfyConfig, egress: Egress) -> Result<Self, ConfigError> {
        let invalid = |detail: &str| ConfigError::Invalid {
            channel: cfg.name.clone(),
            detail: detail.to_owned(),
        };
        let server = config_url(&cfg.name, "server", &cfg.server)?;
        let topic = cfg.topic.trim();
        if topic.is_empty()
            || topic.len() > 64
            || !topic
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid("topic must be 1-64 letters, digits, '-' or '_'"));
        }
        let auth = match (&cfg.token, &cfg.username, &cfg.password) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(invalid("set either token or username/password, not both"));
            }
            (Some(t), None, None) => Some(format!("Bearer {}", t.expose())),
            (None, Some(u), Some(p)) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{}", p.expose()))
            )),
            (None, Some(_), None) | (None, None, Some(_)) => {
                return Err(invalid("basic auth needs both username and password"));
            }
            (None, None, None) => None,
        };
        let auth = match auth {
            Some(a) => {
                let mut v = HeaderValue::from_str(&a)
                    .map_err(|_| invalid("token or password contains invalid characters"))?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Ok(Self {
            name: cfg.name.clone(),
            url: join_path(&server, topic),
            auth,
            policy: EgressPolicy {
                allow_loopback: cfg.allow_loopback,
                allow_private: cfg.allow_private,
            },
            egress,
        })
    }
}

/// ntfy tags: an emoji short code first, then `wingman` and the node names.
pub(crate) fn ntfy_tags(n: &Notification) -> Vec<String> {
    let emoji = match &n.content {
        Content::Incident { .. } if n.is_resolution() => "white_check_mark",
        Content::Incident { .. } => match n.severity {
            Severity::Critical => "rotating_light",
            Severity::Warning => "warning",
            Severity::Info => "information_source",
        },
        Content::Digest(_) => "inbox_tray",
        Content::Test => "test_tube",
    };
    let mut tags = vec![emoji.to_owned(), "wingman".to_owned()];
    if let Content::Incident { incident, .. } = &n.content {
        tags.extend(
            incident
                .nodes
                .iter()
                .map(|node| one_line(node).replace(',', " "))
                .filter(|node| !node.is_empty()),
        );
    }
    tags
}

#[async_trait]
impl Channel for NtfyChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ChannelKind {
        ChannelKind::Ntfy
    }

    async fn send(&self, n: &Notification) -> Result<Sent, SendError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(HeaderName::from_static("title"), text_header(&n.title));
        headers.insert(
            HeaderName::from_static("priority"),
            HeaderValue::from(u16::from(urgency(n))),
        );
        headers.insert(
            HeaderName::from_static("tags"),
            text_header(&ntfy_tags(n).join(",")),
        );
        if let Some(click) = click_url(n).and_then(|u| HeaderValue::from_str(&u).ok()) {
            headers.insert(HeaderName::from_static("click"), click);
        }
        if let Some(auth) = &self.auth {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        let body = truncate_bytes(&n.body, MAX_BODY).as_bytes().to_vec();
        let status = self
            .egress
            .post("ntfy", self.policy, &self.url, headers, body)
            .await?;
        if status.is_success() {
            Ok(Sent {
                status: status.as_u16(),
            })
        } else {
            Err(http_status_error(
                "ntfy",
                status,
                "check the token (or username and password) and that it may publish to the topic",
                "check the server URL",
            ))
        }
    }
}
