//! Outbound notifications for incidents: channels (ntfy, Gotify, Discord,
//! Slack, a signed generic webhook, SMTP email), an SSRF-guarded egress
//! client, a pure routing policy and an async delivery shell.
//!
//! The flow is:
//!
//! 1. the incident engine produces an [`IncidentEvent`];
//! 2. [`policy::Notifier::on_event`] (pure, fed `now`) applies per-route
//!    rules — minimum severity, transitions, quiet hours, per-channel rate
//!    limits, dedup — and returns [`policy::Delivery`] values; held
//!    notifications come out later as digests from
//!    [`policy::Notifier::on_timeout`] at [`policy::Notifier::poll_timeout`];
//! 3. [`delivery::Dispatcher::enqueue`] queues each delivery (bounded, drop
//!    newest on overflow), sends it through its [`channel::Channel`] with
//!    retries and records a [`delivery::DeliveryRecord`].
//!
//! Every outbound connection goes through [`egress`]: scheme allow-list,
//! resolve → check → connect to the pinned address, no redirects, timeouts.
//! Secrets in channel configs are [`secret::Secret`]s: redacted in `Debug`,
//! serialized only as `{"set": true}`.
//!
//! TOML shape (under the hub's `[notify]` table):
//!
//! ```toml
//! [notify]
//! dedup_window_secs = 600
//! rate_limit = { burst = 5, refill_secs = 300 }
//!
//! [[notify.channels]]
//! kind = "ntfy"
//! name = "phone"
//! server = "https://ntfy.sh"
//! topic = "wingman-alerts"
//! token = "tk_..."
//!
//! [[notify.routes]]
//! name = "pager"
//! channels = ["phone"]
//! min_severity = "warning"
//! transitions = ["opened", "escalated", "reopened", "resolved"]
//! quiet_hours = { start = "22:00", end = "07:00", utc_offset = "+01:00", held = "digest" }
//! ```

pub mod channel;
pub mod channels;
pub mod config;
pub mod delivery;
pub mod egress;
pub mod message;
pub mod policy;
pub mod secret;
pub mod service;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use channel::{Channel, ChannelKind, SendError, Sent};
pub use config::{ChannelConfig, ConfigError, NotifyConfig};
pub use delivery::{DeliveryRecord, DispatchConfig, Dispatcher, EnqueueOutcome, OverflowPolicy};
pub use egress::{Egress, EgressPolicy, SsrfError};
pub use message::{Content, Digest, DigestItem, DigestReason, Notification};
pub use policy::{Delivery, Notifier, PolicyConfig};
pub use secret::Secret;

/// How bad an incident is: the incident engine's severity (ordered
/// `Info < Warning < Critical`, lowercase in config and payloads).
pub use crate::engine::Severity;

/// A state change of an incident, the thing that may be notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    /// A new incident.
    Opened,
    /// Its severity went up.
    Escalated,
    /// Someone acknowledged it.
    Acknowledged,
    /// It is over.
    Resolved,
    /// It came back after being resolved.
    Reopened,
}

impl Transition {
    /// Lowercase name, as in config and payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Escalated => "escalated",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
            Self::Reopened => "reopened",
        }
    }

    /// Capitalised label for titles ("Opened").
    pub fn label(self) -> &'static str {
        match self {
            Self::Opened => "Opened",
            Self::Escalated => "Escalated",
            Self::Acknowledged => "Acknowledged",
            Self::Resolved => "Resolved",
            Self::Reopened => "Reopened",
        }
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the notifier needs to know about an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Stable incident id.
    pub id: String,
    /// One-line title.
    pub title: String,
    /// Current severity.
    pub severity: Severity,
    /// Node names involved.
    pub nodes: Vec<String>,
    /// Narrative text (plain text, may be long).
    pub narrative: String,
    /// Dashboard URL of the incident.
    pub url: Option<String>,
}

/// An incident together with the transition that just happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentEvent {
    /// The incident after the transition.
    pub incident: Incident,
    /// What happened.
    pub transition: Transition,
}
