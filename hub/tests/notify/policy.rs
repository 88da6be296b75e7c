//! The policy configured from TOML, end to end: severity filter, quiet
//! hours hold then digest, rate-limit digest with exact counts, dedup.

use serde::Deserialize;
use time::{Duration, OffsetDateTime};

use super::common::sample_event;
use super::subject::{Content, Delivery, Notifier, NotifyConfig, Severity, Transition};

#[derive(Deserialize)]
struct Root {
    notify: NotifyConfig,
}

const CONFIG: &str = r#"
[notify]
dedup_window_secs = 300
rate_limit = { burst = 3, refill_secs = 120 }

[[notify.channels]]
kind = "ntfy"
name = "phone"
server = "https://ntfy.sh"
topic = "wingman-test"

[[notify.channels]]
kind = "email"
name = "mail"
host = "smtp.lab.example"
from = "wingman@lab.example"
to = ["ops@lab.example"]

[notify.channel_rate_limits]
mail = { burst = 0, refill_secs = 0 }

[[notify.routes]]
name = "pager"
channels = ["phone"]
min_severity = "warning"
quiet_hours = { start = "23:00", end = "06:30", utc_offset = "+02:00" }

[[notify.routes]]
name = "everything"
channels = ["mail"]
min_severity = "info"
transitions = ["opened", "escalated", "acknowledged", "resolved", "reopened"]
"#;

fn notifier() -> Notifier {
    let root: Root = toml::from_str(CONFIG).unwrap();
    root.notify.validate().unwrap();
    Notifier::new(root.notify.policy()).unwrap()
}

/// 2026-01-05 12:00 UTC (14:00 local at +02:00).
fn noon() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_767_571_200 + 12 * 3600).unwrap()
}

fn event(id: &str, sev: Severity, tr: Transition) -> super::subject::IncidentEvent {
    let mut e = sample_event(sev, tr);
    e.incident.id = id.to_owned();
    e
}

fn to(out: &[Delivery], channel: &str) -> Vec<String> {
    out.iter()
        .filter(|d| d.channel == channel)
        .map(|d| match &d.notification.content {
            Content::Incident {
                incident,
                transition,
            } => format!("{}:{transition}", incident.id),
            Content::Digest(g) => format!("digest:{}/{}", g.count, g.incidents),
            Content::Test => "test".to_owned(),
        })
        .collect()
}

#[test]
fn severity_filter_per_route() {
    let mut n = notifier();
    let out = n.on_event(noon(), &event("a", Severity::Info, Transition::Opened));
    assert_eq!(to(&out, "phone"), Vec::<String>::new());
    assert_eq!(to(&out, "mail"), vec!["a:opened"]);
    let out = n.on_event(
        noon(),
        &event("a", Severity::Warning, Transition::Escalated),
    );
    assert_eq!(to(&out, "phone"), vec!["a:escalated"]);
    let out = n.on_event(
        noon(),
        &event("a", Severity::Warning, Transition::Acknowledged),
    );
    assert_eq!(to(&out, "phone"), Vec::<String>::new());
    assert_eq!(to(&out, "mail"), vec!["a:acknowledged"]);
}

#[test]
fn quiet_hours_hold_then_digest() {
    let mut n = notifier();
    // 23:30 local = 21:30 UTC.
    let night = noon() + Duration::minutes(9 * 60 + 30);
    let out = n.on_event(night, &event("b", Severity::Warning, Transition::Opened));
    assert_eq!(to(&out, "phone"), Vec::<String>::new());
    assert_eq!(to(&out, "mail"), vec!["b:opened"]);
    let out = n.on_event(night, &event("c", Severity::Critical, Transition::Opened));
    assert_eq!(to(&out, "phone"), vec!["c:opened"]);
    let out = n.on_event(
        night + Duration::hours(1),
        &event("b", Severity::Warning, Transition::Resolved),
    );
    assert_eq!(to(&out, "phone"), Vec::<String>::new());
    // Ends at 06:30 local = 04:30 UTC next day.
    let end = noon() + Duration::minutes(16 * 60 + 30);
    assert_eq!(n.poll_timeout(), Some(end));
    assert!(n.on_timeout(end - Duration::seconds(1)).is_empty());
    let out = n.on_timeout(end);
    assert_eq!(to(&out, "phone"), vec!["digest:2/1"]);
    let d = &out[0].notification;
    assert_eq!(
        d.title,
        "Quiet hours over: 2 notifications (1 incident) held"
    );
    assert_eq!(
        d.body,
        "- [warning] opened: Disk almost full on pve1 (b)\n- [warning] resolved: Disk almost full on pve1 (b)"
    );
    assert_eq!(n.poll_timeout(), None);
}

#[test]
fn rate_limit_digest_count_exact() {
    let mut n = notifier();
    let t = noon();
    let mut phone = Vec::new();
    for i in 0..10 {
        let out = n.on_event(
            t,
            &event(&format!("r{i}"), Severity::Warning, Transition::Opened),
        );
        assert_eq!(to(&out, "mail").len(), 1, "mail is unlimited");
        phone.extend(to(&out, "phone"));
    }
    assert_eq!(phone, vec!["r0:opened", "r1:opened", "r2:opened"]);
    assert_eq!(n.poll_timeout(), Some(t + Duration::seconds(120)));
    let out = n.on_timeout(t + Duration::seconds(120));
    assert_eq!(to(&out, "phone"), vec!["digest:7/7"]);
    assert_eq!(
        out[0].notification.title,
        "7 more notifications (7 incidents) held back by the rate limit"
    );
    assert_eq!(n.stats().rate_limited, 7);
}

#[test]
fn dedup_identical_within_window() {
    let mut n = notifier();
    let e = event("d", Severity::Warning, Transition::Opened);
    assert_eq!(n.on_event(noon(), &e).len(), 2);
    assert!(n.on_event(noon() + Duration::seconds(299), &e).is_empty());
    assert_eq!(n.stats().deduped, 1);
    assert_eq!(n.on_event(noon() + Duration::seconds(300), &e).len(), 2);
}

#[test]
fn unknown_channel_in_route_refused() {
    let bad = CONFIG.replace("channels = [\"mail\"]", "channels = [\"pager\"]");
    let root: Root = toml::from_str(&bad).unwrap();
    let err = root.notify.validate().unwrap_err();
    assert_eq!(
        err.to_string(),
        "notification route \"everything\" sends to unknown channel \"pager\""
    );
}

#[test]
fn default_route_when_none_configured() {
    let cfg: NotifyConfig = toml::from_str(
        r#"[[channels]]
kind = "gotify"
name = "g"
server = "http://gotify.lan"
token = "t""#,
    )
    .unwrap();
    let p = cfg.policy();
    assert_eq!(p.routes.len(), 1);
    assert_eq!(p.routes[0].channels, vec!["g"]);
    assert_eq!(p.routes[0].min_severity, Severity::Warning);
    assert_eq!(p.dedup_window_secs, 600);
}
