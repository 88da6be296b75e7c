//! The object-safe [`Channel`] trait every notification service implements,
//! and [`SendError`], whose `Display` is a sentence a user can act on
//! ("ntfy answered 401 Unauthorized: check the token").

use std::fmt;

use async_trait::async_trait;
use serde::Serialize;

use super::egress::SsrfError;
use super::message::Notification;

/// The service behind a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// ntfy (<https://ntfy.sh> or self-hosted).
    Ntfy,
    /// Gotify.
    Gotify,
    /// Discord incoming webhook.
    Discord,
    /// Slack incoming webhook.
    Slack,
    /// Generic signed JSON webhook.
    Webhook,
    /// SMTP email.
    Email,
}

impl ChannelKind {
    /// Config name (`kind = "..."`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ntfy => "ntfy",
            Self::Gotify => "gotify",
            Self::Discord => "discord",
            Self::Slack => "slack",
            Self::Webhook => "webhook",
            Self::Email => "email",
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A successful send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// HTTP status or SMTP reply code of the final answer.
    pub status: u16,
}

/// One notification destination. Implementations must not log secrets.
#[async_trait]
pub trait Channel: Send + Sync + fmt::Debug {
    /// The configured channel name (unique).
    fn name(&self) -> &str;
    /// Which service this is.
    fn kind(&self) -> ChannelKind;
    /// Sends one notification, once (retries are the caller's business).
    async fn send(&self, notification: &Notification) -> Result<Sent, SendError>;
}

/// Why a send failed. `Display` is one sentence for the user.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// The SSRF guard refused the destination.
    #[error("{0}")]
    Blocked(#[from] SsrfError),
    /// The service answered with an error status.
    #[error("{service} answered {status}{}: {hint}", if reason.is_empty() { String::new() } else { format!(" {reason}") })]
    Status {
        /// Service name ("ntfy", "Gotify", "SMTP server", ...).
        service: &'static str,
        /// HTTP status or SMTP reply code.
        status: u16,
        /// Reason phrase ("Unauthorized") or the SMTP server's first line.
        reason: String,
        /// What to check.
        hint: String,
    },
    /// No answer in time.
    #[error("{service} did not answer within {secs} s: check that the server is up and reachable")]
    Timeout {
        /// Service name.
        service: &'static str,
        /// The timeout.
        secs: f64,
    },
    /// TCP or TLS connection failed.
    #[error("could not connect to {service} at {host}: {detail}")]
    Connect {
        /// Service name.
        service: &'static str,
        /// Host (never the full URL).
        host: String,
        /// Cause.
        detail: String,
    },
    /// Another transport or protocol failure.
    #[error("sending to {service} failed: {detail}")]
    Transport {
        /// Service name.
        service: &'static str,
        /// Cause.
        detail: String,
    },
    /// No channel has that name.
    #[error("there is no notification channel named \"{0}\"")]
    UnknownChannel(String),
    /// The channel cannot work as configured.
    #[error("the {service} channel is misconfigured: {detail}")]
    Config {
        /// Service name.
        service: &'static str,
        /// What is wrong.
        detail: String,
    },
}

impl SendError {
    /// Whether trying again later may help: timeouts, connection failures,
    /// HTTP 5xx and 429, SMTP 4xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Connect { .. } | Self::Transport { .. } => true,
            Self::Status {
                service, status, ..
            } => {
                if *service == SMTP_SERVICE {
                    (400..500).contains(status)
                } else {
                    *status >= 500 || *status == 429
                }
            }
            Self::Blocked(_) | Self::Config { .. } | Self::UnknownChannel(_) => false,
        }
    }

    /// The HTTP status or SMTP code, when the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Service name used for SMTP errors.
pub(crate) const SMTP_SERVICE: &str = "SMTP server";

/// Builds [`SendError::Status`] for an HTTP answer with a service-specific
/// hint for the common auth and not-found statuses.
pub(crate) fn http_status_error(
    service: &'static str,
    status: reqwest::StatusCode,
    auth_hint: &str,
    not_found_hint: &str,
) -> SendError {
    let code = status.as_u16();
    let hint = match code {
        401 | 403 => auth_hint.to_owned(),
        404 | 410 => not_found_hint.to_owned(),
        300..=399 => {
            "redirects are not followed; put the final URL in the channel settings".to_owned()
        }
        400 | 422 => {
            "the service rejected the message format; this is a Wingman bug, please report it"
                .to_owned()
        }
        413 => "the message is too large for the service".to_owned(),
        429 => "the service is rate limiting us; it will be retried later".to_owned(),
        500..=599 => "the service had an internal error; it will be retried".to_owned(),
        _ => "unexpected answer from the service".to_owned(),
    };
    SendError::Status {
        service,
        status: code,
        reason: status.canonical_reason().unwrap_or_default().to_owned(),
        hint,
    }
}
