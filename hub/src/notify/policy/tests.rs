//! Data-driven policy tests: each case is a config, a list of steps (an
//! event or a timer tick at a minute offset) and the deliveries expected
//! after each step, rendered as short strings.

use super::*;
use crate::notify::message::Content;
use crate::notify::{Incident, IncidentEvent, Severity, Transition};

use Severity::{Critical as C, Info as I, Warning as W};
use Transition::{Acknowledged as Ack, Escalated as Esc, Opened as Open, Resolved as Res};

/// 2026-01-05 00:00:00 UTC.
const BASE: i64 = 1_767_571_200;

fn at(min: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(BASE + min * 60).unwrap()
}

fn ev(id: &str, severity: Severity, transition: Transition) -> IncidentEvent {
    IncidentEvent {
        incident: Incident {
            id: id.to_owned(),
            title: format!("incident {id}"),
            severity,
            nodes: vec!["pve1".to_owned()],
            narrative: "something happened".to_owned(),
            url: Some(format!("https://wingman.lan/incidents/{id}")),
        },
        transition,
    }
}

#[derive(Clone, Copy)]
enum Step {
    /// Event at minute offset.
    E(i64, &'static str, Severity, Transition),
    /// `on_timeout` at minute offset.
    T(i64),
}

fn render(d: &Delivery) -> String {
    match &d.notification.content {
        Content::Incident {
            incident,
            transition,
        } => format!("{}:{}:{}", d.channel, incident.id, transition),
        Content::Digest(g) => {
            let reason = match g.reason {
                DigestReason::QuietHours => "quiet",
                DigestReason::RateLimit => "rate",
            };
            format!("{}:digest:{reason}:{}/{}", d.channel, g.count, g.incidents)
        }
        Content::Test => format!("{}:test", d.channel),
    }
}

fn unlimited() -> RateLimit {
    RateLimit {
        burst: 0,
        refill_secs: 0,
    }
}

fn route(channels: &[&str]) -> RouteConfig {
    RouteConfig::all_channels(channels.iter().map(|c| (*c).to_owned()).collect())
}

fn policy(routes: Vec<RouteConfig>) -> PolicyConfig {
    PolicyConfig {
        routes,
        dedup_window_secs: 600,
        rate_limit: unlimited(),
        channel_rate_limits: BTreeMap::new(),
    }
}

fn quiet(start: &str, end: &str, offset: &str, held: HeldMode) -> Option<QuietHours> {
    Some(QuietHours {
        start: ClockTime::parse(start).unwrap(),
        end: ClockTime::parse(end).unwrap(),
        utc_offset: Offset::parse(offset).unwrap(),
        held,
    })
}

struct Case {
    name: &'static str,
    cfg: PolicyConfig,
    steps: Vec<(Step, Vec<&'static str>)>,
}

fn run(case: &Case) -> Notifier {
    let mut n = Notifier::new(case.cfg.clone()).unwrap();
    for (i, (step, want)) in case.steps.iter().enumerate() {
        let got = match *step {
            Step::E(m, id, sev, tr) => n.on_event(at(m), &ev(id, sev, tr)),
            Step::T(m) => n.on_timeout(at(m)),
        };
        let got: Vec<String> = got.iter().map(render).collect();
        assert_eq!(got, *want, "case {:?}, step {i}", case.name);
    }
    n
}

#[test]
fn table() {
    let quiet_route = |held| RouteConfig {
        quiet_hours: quiet("22:00", "07:00", "+01:00", held),
        ..route(&["phone"])
    };
    let cases = vec![
        Case {
            name: "severity filter (default min warning)",
            cfg: policy(vec![route(&["phone"])]),
            steps: vec![
                (Step::E(0, "a", I, Open), vec![]),
                (Step::E(0, "b", W, Open), vec!["phone:b:opened"]),
                (Step::E(0, "c", C, Open), vec!["phone:c:opened"]),
            ],
        },
        Case {
            name: "min severity critical",
            cfg: policy(vec![RouteConfig {
                min_severity: C,
                ..route(&["phone"])
            }]),
            steps: vec![
                (Step::E(0, "a", W, Open), vec![]),
                (Step::E(1, "a", C, Esc), vec!["phone:a:escalated"]),
            ],
        },
        Case {
            name: "default transitions skip acknowledged",
            cfg: policy(vec![route(&["phone"])]),
            steps: vec![
                (Step::E(0, "a", W, Open), vec!["phone:a:opened"]),
                (Step::E(1, "a", W, Ack), vec![]),
                (Step::E(2, "a", W, Res), vec!["phone:a:resolved"]),
                (
                    Step::E(3, "a", W, Transition::Reopened),
                    vec!["phone:a:reopened"],
                ),
            ],
        },
        Case {
            name: "custom transitions",
            cfg: policy(vec![RouteConfig {
                transitions: vec![Open],
                ..route(&["phone"])
            }]),
            steps: vec![
                (Step::E(0, "a", W, Open), vec!["phone:a:opened"]),
                (Step::E(1, "a", W, Res), vec![]),
            ],
        },
        Case {
            name: "dedup within window, not after, not across severity",
            cfg: policy(vec![route(&["phone"])]),
            steps: vec![
                (Step::E(0, "a", W, Open), vec!["phone:a:opened"]),
                (Step::E(5, "a", W, Open), vec![]),
                (Step::E(9, "a", W, Open), vec![]),
                (Step::E(9, "b", W, Open), vec!["phone:b:opened"]),
                (Step::E(9, "a", C, Esc), vec!["phone:a:escalated"]),
                (Step::E(10, "a", W, Open), vec!["phone:a:opened"]),
            ],
        },
        Case {
            name: "two routes to the same channel send once",
            cfg: policy(vec![route(&["phone", "mail"]), route(&["phone"])]),
            steps: vec![(
                Step::E(0, "a", W, Open),
                vec!["phone:a:opened", "mail:a:opened"],
            )],
        },
        Case {
            // 22:00-07:00 at +01:00 is 21:00-06:00 UTC.
            name: "quiet hours hold then digest; critical passes",
            cfg: policy(vec![quiet_route(HeldMode::Digest)]),
            steps: vec![
                (Step::E(20 * 60 + 59, "a", W, Open), vec!["phone:a:opened"]),
                (Step::E(21 * 60, "b", W, Open), vec![]),
                (Step::E(22 * 60, "c", W, Open), vec![]),
                (Step::E(23 * 60, "b", W, Res), vec![]),
                (Step::E(23 * 60, "d", C, Open), vec!["phone:d:opened"]),
                (Step::T(30 * 60 - 1), vec![]),
                (Step::T(30 * 60), vec!["phone:digest:quiet:3/2"]),
                (Step::T(30 * 60 + 1), vec![]),
                (Step::E(30 * 60 + 1, "e", W, Open), vec!["phone:e:opened"]),
            ],
        },
        Case {
            name: "quiet hours drop mode",
            cfg: policy(vec![quiet_route(HeldMode::Drop)]),
            steps: vec![
                (Step::E(21 * 60, "b", W, Open), vec![]),
                (Step::T(30 * 60), vec![]),
                (Step::E(30 * 60, "c", W, Open), vec!["phone:c:opened"]),
            ],
        },
        Case {
            name: "quiet digest released by the next event",
            cfg: policy(vec![quiet_route(HeldMode::Digest)]),
            steps: vec![
                (Step::E(21 * 60, "b", W, Open), vec![]),
                (
                    Step::E(31 * 60, "c", W, Open),
                    vec!["phone:digest:quiet:1/1", "phone:c:opened"],
                ),
            ],
        },
        Case {
            name: "rate limit: burst 2, excess collapsed, counts exact",
            cfg: PolicyConfig {
                rate_limit: RateLimit {
                    burst: 2,
                    refill_secs: 60,
                },
                ..policy(vec![route(&["phone"])])
            },
            steps: vec![
                (Step::E(0, "a", W, Open), vec!["phone:a:opened"]),
                (Step::E(0, "b", W, Open), vec!["phone:b:opened"]),
                (Step::E(0, "c", W, Open), vec![]),
                (Step::E(0, "d", W, Open), vec![]),
                (Step::E(0, "c", C, Esc), vec![]),
                (Step::E(0, "e", W, Open), vec![]),
                (Step::T(0), vec![]),
                (Step::T(1), vec!["phone:digest:rate:4/3"]),
                (Step::T(2), vec![]),
                (Step::E(2, "f", W, Open), vec!["phone:f:opened"]),
                (Step::E(2, "g", W, Open), vec![]),
                (
                    Step::E(4, "h", W, Open),
                    vec!["phone:digest:rate:1/1", "phone:h:opened"],
                ),
            ],
        },
        Case {
            name: "per-channel rate limits are independent",
            cfg: PolicyConfig {
                channel_rate_limits: BTreeMap::from([(
                    "phone".to_owned(),
                    RateLimit {
                        burst: 1,
                        refill_secs: 300,
                    },
                )]),
                ..policy(vec![route(&["phone", "mail"])])
            },
            steps: vec![
                (
                    Step::E(0, "a", W, Open),
                    vec!["phone:a:opened", "mail:a:opened"],
                ),
                (Step::E(0, "b", W, Open), vec!["mail:b:opened"]),
                (Step::T(4), vec![]),
                (Step::T(5), vec!["phone:digest:rate:1/1"]),
            ],
        },
    ];
    for case in &cases {
        run(case);
    }
}

#[test]
fn poll_timeout_tracks_quiet_end_and_next_token() {
    let mut cfg = policy(vec![RouteConfig {
        quiet_hours: quiet("22:00", "07:00", "+01:00", HeldMode::Digest),
        ..route(&["phone"])
    }]);
    cfg.channel_rate_limits.insert(
        "mail".to_owned(),
        RateLimit {
            burst: 1,
            refill_secs: 90,
        },
    );
    cfg.routes.push(route(&["mail"]));
    let mut n = Notifier::new(cfg).unwrap();
    assert_eq!(n.poll_timeout(), None);
    // 10:00 UTC: not quiet; mail uses its only token, the next is limited.
    n.on_event(at(600), &ev("a", W, Open));
    n.on_event(at(600), &ev("b", W, Open));
    assert_eq!(n.poll_timeout(), Some(at(600) + Duration::seconds(90)));
    let out = n.on_timeout(at(600) + Duration::seconds(90));
    assert_eq!(out.len(), 1);
    assert_eq!(n.poll_timeout(), None);
    // 21:30 UTC is quiet; held until 06:00 UTC next day.
    n.on_event(at(21 * 60 + 30), &ev("c", W, Open));
    assert_eq!(n.poll_timeout(), Some(at(30 * 60)));
    let stats = n.stats();
    assert_eq!(stats.held, 1);
    assert_eq!(stats.rate_limited, 1);
}

#[test]
fn digest_counts_exact_beyond_item_cap() {
    let cfg = PolicyConfig {
        rate_limit: RateLimit {
            burst: 1,
            refill_secs: 60,
        },
        dedup_window_secs: 0,
        ..policy(vec![route(&["phone"])])
    };
    let mut n = Notifier::new(cfg).unwrap();
    n.on_event(at(0), &ev("first", W, Open));
    for i in 0..57 {
        let id = format!("x{}", i % 31);
        assert!(n.on_event(at(0), &ev(&id, W, Open)).is_empty());
    }
    let out = n.on_timeout(at(1));
    assert_eq!(out.len(), 1);
    let Content::Digest(d) = &out[0].notification.content else {
        panic!("not a digest");
    };
    assert_eq!((d.count, d.incidents), (57, 31));
    assert_eq!(d.items.len(), MAX_DIGEST_ITEMS);
    assert!(out[0].notification.body.ends_with("- ... and 37 more"));
    assert_eq!(
        out[0].notification.title,
        "57 more notifications (31 incidents) held back by the rate limit"
    );
}

#[test]
fn quiet_window_table() {
    // (start, end, offset, utc minute of day, expected end as utc minute from BASE day)
    let cases: &[(&str, &str, &str, i64, Option<i64>)] = &[
        ("22:00", "07:00", "UTC", 21 * 60 + 59, None),
        ("22:00", "07:00", "UTC", 22 * 60, Some(24 * 60 + 7 * 60)),
        ("22:00", "07:00", "UTC", 3 * 60, Some(7 * 60)),
        ("22:00", "07:00", "UTC", 7 * 60, None),
        ("12:00", "14:00", "UTC", 13 * 60, Some(14 * 60)),
        ("12:00", "14:00", "UTC", 14 * 60, None),
        ("22:00", "07:00", "+01:00", 21 * 60, Some(30 * 60)),
        ("22:00", "07:00", "-05:30", 3 * 60 + 30, Some(12 * 60 + 30)),
        ("22:00", "07:00", "-05:30", 3 * 60 + 29, None),
    ];
    for (start, end, off, now, want) in cases {
        let q = quiet(start, end, off, HeldMode::Digest).unwrap();
        assert_eq!(
            q.ends_at(at(*now)),
            want.map(at),
            "{start}-{end} {off} at {now}"
        );
    }
}

#[test]
fn parse_clock_and_offset() {
    assert_eq!(ClockTime::parse("07:30").unwrap().to_string(), "07:30");
    assert!(ClockTime::parse("24:00").is_none());
    assert!(ClockTime::parse("7").is_none());
    assert_eq!(Offset::parse("+01:00").unwrap().to_string(), "+01:00");
    assert_eq!(Offset::parse("-05:30").unwrap().to_string(), "-05:30");
    assert_eq!(Offset::parse("+02").unwrap().to_string(), "+02:00");
    assert_eq!(Offset::parse("UTC").unwrap().to_string(), "+00:00");
    assert!(Offset::parse("01:00").is_none());
    assert!(Offset::parse("+25:00").is_none());
}

#[test]
fn invalid_policies_are_refused() {
    let mut same = route(&["phone"]);
    same.quiet_hours = quiet("22:00", "22:00", "UTC", HeldMode::Digest);
    assert!(Notifier::new(policy(vec![same])).is_err());
    assert!(Notifier::new(policy(vec![route(&[])])).is_err());
    let zero_refill = PolicyConfig {
        rate_limit: RateLimit {
            burst: 3,
            refill_secs: 0,
        },
        ..policy(vec![route(&["phone"])])
    };
    assert!(Notifier::new(zero_refill).is_err());
}
