//! The service-neutral [`Notification`] that channels render: an incident
//! transition, a digest of held or rate-limited notifications, or a test
//! message. Plain text only; each channel escapes for its own format.

use serde::Serialize;
use time::OffsetDateTime;

use super::{Incident, IncidentEvent, Severity, Transition};

/// Most digest lines carried in a digest; the rest are only counted.
pub const MAX_DIGEST_ITEMS: usize = 20;

/// Why notifications were collapsed into a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestReason {
    /// Held during a route's quiet hours.
    QuietHours,
    /// Over a channel's rate limit.
    RateLimit,
}

/// One collapsed notification in a digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DigestItem {
    /// Incident id.
    pub incident_id: String,
    /// Incident title.
    pub title: String,
    /// Severity at the time.
    pub severity: Severity,
    /// The transition.
    pub transition: Transition,
    /// When it happened (Unix seconds).
    pub at: i64,
}

/// Several notifications collapsed into one message. Counts are exact even
/// when `items` is cut at [`MAX_DIGEST_ITEMS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Digest {
    /// Why.
    pub reason: DigestReason,
    /// Number of notifications collapsed.
    pub count: u64,
    /// Number of distinct incidents among them.
    pub incidents: u64,
    /// The first [`MAX_DIGEST_ITEMS`] notifications, oldest first.
    pub items: Vec<DigestItem>,
}

impl Digest {
    /// Highest severity among the items (info when empty).
    pub fn max_severity(&self) -> Severity {
        self.items
            .iter()
            .map(|i| i.severity)
            .max()
            .unwrap_or(Severity::Info)
    }
}

/// What a notification is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// One incident transition.
    Incident {
        /// The incident after the transition.
        incident: Incident,
        /// The transition.
        transition: Transition,
    },
    /// A digest.
    Digest(Digest),
    /// A test message from "send test".
    Test,
}

/// A rendered, service-neutral notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Unique id (stable across retries), e.g. for webhook idempotency.
    pub id: String,
    /// One-line title.
    pub title: String,
    /// Plain-text body.
    pub body: String,
    /// Severity (for digests, the highest collapsed one).
    pub severity: Severity,
    /// Link to open (the incident's dashboard page).
    pub url: Option<String>,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Structured content.
    pub content: Content,
}

impl Notification {
    /// A notification for one incident transition.
    pub fn for_event(id: String, event: &IncidentEvent, now: OffsetDateTime) -> Self {
        let inc = &event.incident;
        let mut body = format!("Severity: {}", inc.severity);
        if !inc.nodes.is_empty() {
            body.push_str(" | Nodes: ");
            body.push_str(&inc.nodes.join(", "));
        }
        if !inc.narrative.trim().is_empty() {
            body.push_str("\n\n");
            body.push_str(inc.narrative.trim_end());
        }
        Self {
            id,
            title: format!("{}: {}", event.transition.label(), inc.title),
            body,
            severity: inc.severity,
            url: inc.url.clone(),
            created: now.unix_timestamp(),
            content: Content::Incident {
                incident: inc.clone(),
                transition: event.transition,
            },
        }
    }

    /// A digest notification.
    pub fn for_digest(id: String, digest: Digest, now: OffsetDateTime) -> Self {
        let plural = |n: u64, word: &str| {
            if n == 1 {
                format!("{n} {word}")
            } else {
                format!("{n} {word}s")
            }
        };
        let notes = if digest.count == 1 {
            "notification"
        } else {
            "notifications"
        };
        let incidents = plural(digest.incidents, "incident");
        let title = match digest.reason {
            DigestReason::QuietHours => {
                format!(
                    "Quiet hours over: {} {notes} ({incidents}) held",
                    digest.count
                )
            }
            DigestReason::RateLimit => format!(
                "{} more {notes} ({incidents}) held back by the rate limit",
                digest.count
            ),
        };
        let mut body = String::new();
        for item in &digest.items {
            body.push_str(&format!(
                "- [{}] {}: {} ({})\n",
                item.severity, item.transition, item.title, item.incident_id
            ));
        }
        let shown = u64::try_from(digest.items.len()).unwrap_or(u64::MAX);
        if digest.count > shown {
            body.push_str(&format!("- ... and {} more\n", digest.count - shown));
        }
        Self {
            id,
            title,
            body: body.trim_end().to_owned(),
            severity: digest.max_severity(),
            url: None,
            created: now.unix_timestamp(),
            content: Content::Digest(digest),
        }
    }

    /// The test message sent by "send test".
    pub fn test(now: OffsetDateTime) -> Self {
        Self {
            id: format!("test-{}", now.unix_timestamp()),
            title: "Wingman test notification".to_owned(),
            body: "If you can read this, the channel works.".to_owned(),
            severity: Severity::Info,
            url: None,
            created: now.unix_timestamp(),
            content: Content::Test,
        }
    }

    /// The incident id, for incident notifications.
    pub fn incident_id(&self) -> Option<&str> {
        match &self.content {
            Content::Incident { incident, .. } => Some(&incident.id),
            _ => None,
        }
    }

    /// The transition, for incident notifications.
    pub fn transition(&self) -> Option<Transition> {
        match &self.content {
            Content::Incident { transition, .. } => Some(*transition),
            _ => None,
        }
    }

    /// Whether this announces a resolution (channels lower its urgency).
    pub fn is_resolution(&self) -> bool {
        self.transition() == Some(Transition::Resolved)
    }

    /// Short type name: `incident`, `digest` or `test`.
    pub fn type_name(&self) -> &'static str {
        match self.content {
            Content::Incident { .. } => "incident",
            Content::Digest(_) => "digest",
            Content::Test => "test",
        }
    }
}

/// Cuts `s` to at most `max` characters, ending with an ellipsis if cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}
