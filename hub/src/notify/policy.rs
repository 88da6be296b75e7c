//! The notification policy: a pure state machine. It never reads a clock;
//! every call takes `now`.
//!
//! For each [`IncidentEvent`], in order:
//!
//! 1. **dedup**: an identical (incident id, transition, severity) seen less
//!    than `dedup_window_secs` ago is dropped (so an escalation to a new
//!    severity is never swallowed);
//! 2. per route: the **transition** must be listed (default: opened,
//!    escalated, reopened, resolved) and the **severity** must be at least
//!    `min_severity` (default warning);
//! 3. **quiet hours** (local time at a fixed UTC offset, the window may wrap
//!    midnight): only critical passes; the rest is held and sent as one
//!    digest per channel when the window ends (`held = "digest"`, default)
//!    or counted and dropped (`held = "drop"`);
//! 4. per channel **token bucket** (`burst` tokens, one more every
//!    `refill_secs`; `burst = 0` disables it): excess notifications are
//!    collapsed and sent as one "N more" digest when the next token
//!    arrives, with exact counts. A channel reached by two routes gets an
//!    event once.
//!
//! Digests are not rate limited themselves. The caller drives time:
//! [`Notifier::poll_timeout`] says when [`Notifier::on_timeout`] has work;
//! [`Notifier::on_event`] also flushes anything already due first.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::{Duration, OffsetDateTime, Time, UtcOffset};

use super::config::ConfigError;
use super::message::{Digest, DigestItem, DigestReason, MAX_DIGEST_ITEMS, Notification};
use super::{IncidentEvent, Severity, Transition};

/// A notification for one channel, produced by the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Channel name.
    pub channel: String,
    /// What to send.
    pub notification: Notification,
}

/// Token bucket settings for one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Bucket size: notifications sent back to back before limiting; 0
    /// disables the limit.
    pub burst: u32,
    /// One token comes back every this many seconds.
    pub refill_secs: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            burst: 10,
            refill_secs: 60,
        }
    }
}

/// What happens to non-critical notifications during quiet hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HeldMode {
    /// Hold them and send one digest when quiet hours end.
    #[default]
    Digest,
    /// Drop them (counted in [`NotifierStats::dropped_quiet`]).
    Drop,
}

/// A wall-clock time written `"HH:MM"` (or `"HH:MM:SS"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClockTime(pub Time);

impl ClockTime {
    /// Parses `"HH:MM"` or `"HH:MM:SS"`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split(':');
        let h: u8 = parts.next()?.parse().ok()?;
        let m: u8 = parts.next()?.parse().ok()?;
        let sec: u8 = match parts.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        if parts.next().is_some() {
            return None;
        }
        Time::from_hms(h, m, sec).ok().map(Self)
    }
}

impl fmt::Display for ClockTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, m, s) = self.0.as_hms();
        if s == 0 {
            write!(f, "{h:02}:{m:02}")
        } else {
            write!(f, "{h:02}:{m:02}:{s:02}")
        }
    }
}

impl<'de> Deserialize<'de> for ClockTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid time {s:?}, expected HH:MM")))
    }
}

impl Serialize for ClockTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A fixed UTC offset written `"+01:00"`, `"-05:30"`, `"+02"` or `"UTC"`.
/// Daylight saving time is not followed: change it twice a year, or use
/// UTC hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset(pub UtcOffset);

impl Default for Offset {
    fn default() -> Self {
        Self(UtcOffset::UTC)
    }
}

impl Offset {
    /// Parses the forms above.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("utc") || s == "Z" {
            return Some(Self(UtcOffset::UTC));
        }
        let (sign, rest) = match s.as_bytes().first()? {
            b'+' => (1i8, &s[1..]),
            b'-' => (-1i8, &s[1..]),
            _ => return None,
        };
        let (h, m) = match rest.split_once(':') {
            Some((h, m)) => (h.parse::<i8>().ok()?, m.parse::<i8>().ok()?),
            None => (rest.parse::<i8>().ok()?, 0),
        };
        if !(0..=23).contains(&h) || !(0..=59).contains(&m) {
            return None;
        }
        UtcOffset::from_hms(sign * h, sign * m, 0).ok().map(Self)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, m, _) = self.0.as_hms();
        let sign = if self.0.is_negative() { '-' } else { '+' };
        write!(f, "{sign}{:02}:{:02}", h.unsigned_abs(), m.unsigned_abs())
    }
}

impl<'de> Deserialize<'de> for Offset {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid UTC offset {s:?}, expected like \"+01:00\""
            ))
        })
    }
}

impl Serialize for Offset {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Quiet hours of a route: `[start, end)` local time, wrapping midnight
/// when `end <= start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// Start, `"22:00"`.
    pub start: ClockTime,
    /// End, `"07:00"`.
    pub end: ClockTime,
    /// Offset of the local time from UTC (default UTC).
    #[serde(default)]
    pub utc_offset: Offset,
    /// `digest` (default) or `drop`.
    #[serde(default)]
    pub held: HeldMode,
}

impl QuietHours {
    /// When `now` is inside quiet hours, the instant they end.
    pub fn ends_at(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let local = now.to_offset(self.utc_offset.0);
        let t = local.time();
        let (s, e) = (self.start.0, self.end.0);
        let inside = if s < e {
            t >= s && t < e
        } else {
            t >= s || t < e
        };
        if !inside {
            return None;
        }
        let mut date = local.date();
        if e <= t {
            date = date.next_day()?;
        }
        Some(date.with_time(e).assume_offset(self.utc_offset.0))
    }
}

fn default_route_name() -> String {
    "default".to_owned()
}

fn default_min_severity() -> Severity {
    Severity::Warning
}

/// The transitions notified by default.
pub fn default_transitions() -> Vec<Transition> {
    vec![
        Transition::Opened,
        Transition::Escalated,
        Transition::Reopened,
        Transition::Resolved,
    ]
}

/// One `[[notify.routes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Route name (for logs and errors).
    #[serde(default = "default_route_name")]
    pub name: String,
    /// Channel names.
    pub channels: Vec<String>,
    /// Lowest severity notified (default warning).
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    /// Transitions notified (default opened, escalated, reopened, resolved).
    #[serde(default = "default_transitions")]
    pub transitions: Vec<Transition>,
    /// Optional quiet hours.
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
}

impl RouteConfig {
    /// The default route: every channel, default rules.
    pub fn all_channels(channels: Vec<String>) -> Self {
        Self {
            name: default_route_name(),
            channels,
            min_severity: default_min_severity(),
            transitions: default_transitions(),
            quiet_hours: None,
        }
    }
}

/// Everything the policy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Routes.
    pub routes: Vec<RouteConfig>,
    /// Dedup window in seconds (0 disables).
    pub dedup_window_secs: u64,
    /// Default bucket per channel.
    pub rate_limit: RateLimit,
    /// Per-channel overrides.
    pub channel_rate_limits: BTreeMap<String, RateLimit>,
}

/// Counters, for the dashboard and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NotifierStats {
    /// Events dropped as duplicates.
    pub deduped: u64,
    /// Notifications emitted for channels (incidents and digests).
    pub emitted: u64,
    /// Notifications held in quiet hours.
    pub held: u64,
    /// Notifications dropped in quiet hours (`held = "drop"`).
    pub dropped_quiet: u64,
    /// Notifications collapsed by rate limits.
    pub rate_limited: u64,
}

/// Collapsed notifications waiting for a digest.
#[derive(Debug, Clone, Default)]
struct Acc {
    count: u64,
    ids: BTreeSet<String>,
    items: Vec<DigestItem>,
}

impl Acc {
    fn add(&mut self, ev: &IncidentEvent, now: OffsetDateTime) {
        self.count += 1;
        self.ids.insert(ev.incident.id.clone());
        if self.items.len() < MAX_DIGEST_ITEMS {
            self.items.push(DigestItem {
                incident_id: ev.incident.id.clone(),
                title: ev.incident.title.clone(),
                severity: ev.incident.severity,
                transition: ev.transition,
                at: now.unix_timestamp(),
            });
        }
    }

    fn into_digest(self, reason: DigestReason) -> Digest {
        Digest {
            reason,
            count: self.count,
            incidents: u64::try_from(self.ids.len()).unwrap_or(u64::MAX),
            items: self.items,
        }
    }
}

#[derive(Debug, Clone)]
struct Held {
    release_at: OffsetDateTime,
    acc: Acc,
}

#[derive(Debug, Clone)]
struct Bucket {
    limit: RateLimit,
    tokens: u32,
    last: OffsetDateTime,
    pending: Option<Acc>,
}

impl Bucket {
    fn new(limit: RateLimit, now: OffsetDateTime) -> Self {
        Self {
            limit,
            tokens: limit.burst,
            last: now,
            pending: None,
        }
    }

    fn period(&self) -> Duration {
        Duration::seconds(i64::try_from(self.limit.refill_secs).unwrap_or(i64::MAX))
    }

    fn refill(&mut self, now: OffsetDateTime) {
        if self.tokens >= self.limit.burst {
            self.last = now;
            return;
        }
        let period = self.limit.refill_secs.max(1);
        let elapsed = (now - self.last).whole_seconds();
        if elapsed <= 0 {
            return;
        }
        let n = u64::try_from(elapsed).unwrap_or(0) / period;
        if n == 0 {
            return;
        }
        let add = u32::try_from(n).unwrap_or(u32::MAX);
        self.tokens = self.tokens.saturating_add(add).min(self.limit.burst);
        if self.tokens >= self.limit.burst {
            self.last = now;
        } else {
            self.last += Duration::seconds(i64::try_from(n * period).unwrap_or(i64::MAX));
        }
    }

    /// Takes a token if one is available (always, when unlimited).
    fn try_take(&mut self, now: OffsetDateTime) -> bool {
        if self.limit.burst == 0 {
            return true;
        }
        self.refill(now);
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            false
        }
    }

    fn next_token_at(&self) -> OffsetDateTime {
        self.last + self.period()
    }
}

/// The policy state machine.
#[derive(Debug, Clone)]
pub struct Notifier {
    cfg: PolicyConfig,
    held: Vec<Option<Held>>,
    buckets: BTreeMap<String, Bucket>,
    dedup: HashMap<(String, Transition, Severity), OffsetDateTime>,
    seq: u64,
    stats: NotifierStats,
}

impl Notifier {
    /// Validates the policy.
    pub fn new(cfg: PolicyConfig) -> Result<Self, ConfigError> {
        for r in &cfg.routes {
            let err = |detail: &str| ConfigError::Route {
                route: r.name.clone(),
                detail: detail.to_owned(),
            };
            if r.channels.is_empty() {
                return Err(err("channels is empty"));
            }
            if r.transitions.is_empty() {
                return Err(err("transitions is empty"));
            }
            if let Some(q) = &r.quiet_hours
                && q.start == q.end
            {
                return Err(err("quiet_hours start and end are equal"));
            }
        }
        let limits = std::iter::once(("rate_limit", &cfg.rate_limit))
            .chain(cfg.channel_rate_limits.iter().map(|(k, v)| (k.as_str(), v)));
        for (name, l) in limits {
            if l.burst > 0 && l.refill_secs == 0 {
                return Err(ConfigError::Route {
                    route: name.to_owned(),
                    detail: "rate limit refill_secs must be at least 1".to_owned(),
                });
            }
        }
        Ok(Self {
            held: vec![None; cfg.routes.len()],
            cfg,
            buckets: BTreeMap::new(),
            dedup: HashMap::new(),
            seq: 0,
            stats: NotifierStats::default(),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> NotifierStats {
        self.stats
    }

    fn next_id(&mut self, now: OffsetDateTime) -> String {
        self.seq += 1;
        format!("{}-{}", now.unix_timestamp(), self.seq)
    }

    fn limit_for(&self, channel: &str) -> RateLimit {
        self.cfg
            .channel_rate_limits
            .get(channel)
            .copied()
            .unwrap_or(self.cfg.rate_limit)
    }

    /// Handles one incident event; returns what to send now (including any
    /// digests that were already due).
    pub fn on_event(&mut self, now: OffsetDateTime, event: &IncidentEvent) -> Vec<Delivery> {
        let mut out = self.on_timeout(now);
        let inc = &event.incident;

        let window =
            Duration::seconds(i64::try_from(self.cfg.dedup_window_secs).unwrap_or(i64::MAX));
        if self.cfg.dedup_window_secs > 0 {
            self.dedup.retain(|_, seen| now - *seen < window);
            let key = (inc.id.clone(), event.transition, inc.severity);
            if self.dedup.contains_key(&key) {
                self.stats.deduped += 1;
                tracing::debug!(incident = %inc.id, transition = %event.transition, "duplicate notification dropped");
                return out;
            }
            self.dedup.insert(key, now);
        }

        let mut reached: BTreeSet<String> = BTreeSet::new();
        for idx in 0..self.cfg.routes.len() {
            let route = &self.cfg.routes[idx];
            if !route.transitions.contains(&event.transition) || inc.severity < route.min_severity {
                continue;
            }
            if inc.severity < Severity::Critical
                && let Some(q) = route.quiet_hours
                && let Some(end) = q.ends_at(now)
            {
                match q.held {
                    HeldMode::Digest => {
                        let held = self.held[idx].get_or_insert_with(|| Held {
                            release_at: end,
                            acc: Acc::default(),
                        });
                        held.acc.add(event, now);
                        self.stats.held += 1;
                    }
                    HeldMode::Drop => self.stats.dropped_quiet += 1,
                }
                continue;
            }
            let channels: Vec<String> = route
                .channels
                .iter()
                .filter(|c| !reached.contains(*c))
                .cloned()
                .collect();
            for ch in channels {
                reached.insert(ch.clone());
                let limit = self.limit_for(&ch);
                let bucket = self
                    .buckets
                    .entry(ch.clone())
                    .or_insert_with(|| Bucket::new(limit, now));
                if bucket.try_take(now) {
                    let id = self.next_id(now);
                    self.stats.emitted += 1;
                    out.push(Delivery {
                        channel: ch,
                        notification: Notification::for_event(id, event, now),
                    });
                } else {
                    bucket
                        .pending
                        .get_or_insert_with(Acc::default)
                        .add(event, now);
                    self.stats.rate_limited += 1;
                    tracing::debug!(channel = %ch, incident = %inc.id, "rate limited; collapsed into digest");
                }
            }
        }
        out
    }

    /// When [`Self::on_timeout`] next has work, if ever.
    pub fn poll_timeout(&self) -> Option<OffsetDateTime> {
        let held = self.held.iter().flatten().map(|h| h.release_at);
        let buckets = self
            .buckets
            .values()
            .filter(|b| b.pending.is_some())
            .map(Bucket::next_token_at);
        held.chain(buckets).min()
    }

    /// Sends digests that are due at `now`: held quiet-hours notifications
    /// whose window ended, and rate-limited ones whose channel has a token.
    pub fn on_timeout(&mut self, now: OffsetDateTime) -> Vec<Delivery> {
        let mut out = Vec::new();
        for idx in 0..self.held.len() {
            let due = matches!(&self.held[idx], Some(h) if h.release_at <= now);
            if !due {
                continue;
            }
            let Some(held) = self.held[idx].take() else {
                continue;
            };
            let digest = held.acc.into_digest(DigestReason::QuietHours);
            let channels = self.cfg.routes[idx].channels.clone();
            for ch in channels {
                let id = self.next_id(now);
                self.stats.emitted += 1;
                out.push(Delivery {
                    channel: ch,
                    notification: Notification::for_digest(id, digest.clone(), now),
                });
            }
        }
        let mut due = Vec::new();
        for (ch, bucket) in &mut self.buckets {
            if bucket.pending.is_some()
                && bucket.try_take(now)
                && let Some(acc) = bucket.pending.take()
            {
                due.push((ch.clone(), acc));
            }
        }
        for (ch, acc) in due {
            let id = self.next_id(now);
            self.stats.emitted += 1;
            out.push(Delivery {
                channel: ch,
                notification: Notification::for_digest(
                    id,
                    acc.into_digest(DigestReason::RateLimit),
                    now,
                ),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests;
