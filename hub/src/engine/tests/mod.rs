//! Scenario tests: data in, incidents out.
//!
//! Each `*.json` fixture next to this file is a timed sequence of signals and
//! commands plus the expected outcome, run by [`check`]. Times in fixtures
//! are seconds after [`BASE_MS`] (2024-05-01 10:00:00Z).
//!
//! Fixture shape:
//!
//! ```json
//! {
//!   "config": { "resolve_hold_down_ms": 60000 },          // optional overrides
//!   "nodes": ["pve1"],                                    // registered at t=0
//!   "steps": [
//!     {"t": 0, "signal": {"signal": "node_offline", "node": "pve1"}},
//!     {"t": 5, "at": 4, "signals": [ ... ]},               // observed at 4 s
//!     {"t": 9, "repeat": 3, "every": 60, "signal": ...},   // t = 9, 69, 129
//!     {"t": 0, "repeat": 10, "every": 30, "sequence": [    // offsets per repetition
//!        {"dt": 0, "signal": ...}, {"dt": 15, "signal": ...}]},
//!     {"t": 60, "command": {"command": "acknowledge", "incident_id": "inc-1", "by": "alice"}},
//!     {"t": 61, "command": {...}, "error": "invalid_transition"}
//!   ],
//!   "end": 3600,                                          // run timers up to here
//!   "expect": {
//!     "incidents": [ {subset of the incident JSON, plus helper keys} ],
//!     "stats": { subset of EngineStats },
//!     "actions": { "opened": 1, "resolved": 1, "reopened": 0, "notify": 2 },
//!     "notify_kinds": ["opened", "resolved"]
//!   }
//! }
//! ```
//!
//! Helper keys in an expected incident: `affected_contains`,
//! `narrative_contains`, `narrative_lines` (exact snapshot),
//! `timeline_events` (exact sequence), `evidence_summaries_contain`,
//! `condition_count`.
//!
//! After every step the engine's internal invariants are checked.

use serde_json::{Map, Value, json};

use super::*;

/// 2024-05-01 10:00:00Z.
const BASE_MS: i64 = 1_714_557_600_000;

fn ms(v: &Value) -> Option<i64> {
    v.as_f64().map(|s| BASE_MS + (s * 1000.0).round() as i64)
}

/// What a run produced.
struct Outcome {
    engine: Engine,
    actions: Vec<Action>,
}

fn drain(engine: &mut Engine, out: &mut Vec<Action>) {
    while let Some(a) = engine.poll_action() {
        out.push(a);
    }
    if let Err(e) = engine.check_invariants() {
        panic!("invariant violated: {e}");
    }
}

fn run_timers(engine: &mut Engine, until: i64, out: &mut Vec<Action>) {
    while let Some(d) = engine.poll_timeout() {
        if d > until {
            break;
        }
        engine.handle_timeout(d);
        drain(engine, out);
    }
}

/// One timed input after expanding `repeat` and `sequence`.
enum Item {
    Signal(Value),
    Command(Value, Option<String>),
    Tick,
}

/// Expands a step into `(now, at, item)` inputs. `t`/`at` are absolute
/// seconds for top-level steps; inside a `sequence`, `dt` is relative to the
/// repetition's start.
fn expand(step: &Value, t0: i64, at0: Option<i64>, out: &mut Vec<(i64, Option<i64>, Item)>) {
    let repeat = step.get("repeat").and_then(Value::as_u64).unwrap_or(1);
    let every = step.get("every").and_then(Value::as_f64).unwrap_or(0.0);
    for i in 0..repeat {
        let shift = (every * 1000.0 * i as f64).round() as i64;
        let now = t0 + shift;
        let at = at0.map(|a| a + shift);
        if let Some(s) = step.get("signal") {
            out.push((now, at, Item::Signal(s.clone())));
        }
        for s in step
            .get("signals")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push((now, at, Item::Signal(s.clone())));
        }
        if let Some(c) = step.get("command") {
            let err = step
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_string);
            out.push((now, at, Item::Command(c.clone(), err)));
        }
        if step.get("tick").is_some() {
            out.push((now, at, Item::Tick));
        }
        for sub in step
            .get("sequence")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let dt = sub.get("dt").and_then(Value::as_f64).unwrap_or(0.0);
            let st = now + (dt * 1000.0).round() as i64;
            expand(sub, st, None, out);
        }
    }
}

/// Runs a scenario (the fixture without its `expect`).
fn run(scenario: &Value) -> Outcome {
    let config: EngineConfig = match scenario.get("config") {
        Some(c) => serde_json::from_value(c.clone()).expect("config"),
        None => EngineConfig::default(),
    };
    let mut engine = Engine::new(config);
    let mut actions = Vec::new();
    for n in scenario
        .get("nodes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let node = n.as_str().expect("node name").to_string();
        engine.handle_signal(
            BASE_MS,
            Signal::new(BASE_MS, SignalBody::NodeRegistered { node }),
        );
    }
    let mut items = Vec::new();
    for step in scenario
        .get("steps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let t0 = step.get("t").and_then(ms).expect("step needs t");
        expand(step, t0, step.get("at").and_then(ms), &mut items);
    }
    // Chronological; steps at the same time keep their order.
    items.sort_by_key(|(now, _, _)| *now);
    for (now, at, item) in items {
        run_timers(&mut engine, now, &mut actions);
        match item {
            Item::Signal(b) => {
                let body: SignalBody = serde_json::from_value(b.clone())
                    .unwrap_or_else(|e| panic!("bad signal {b}: {e}"));
                engine.handle_signal(now, Signal::new(at.unwrap_or(now), body));
                drain(&mut engine, &mut actions);
            }
            Item::Command(c, want) => {
                let cmd: Command = serde_json::from_value(c.clone()).expect("command");
                let r = engine.handle_command(now, cmd);
                drain(&mut engine, &mut actions);
                match (want, r) {
                    (None, Ok(())) => {}
                    (Some(want), Err(e)) => {
                        let got = serde_json::to_value(&e).expect("error json");
                        assert_eq!(got["error"], Value::String(want), "command error");
                    }
                    (want, got) => panic!("command {c}: expected {want:?}, got {got:?}"),
                }
            }
            Item::Tick => run_timers(&mut engine, now, &mut actions),
        }
    }
    if let Some(end) = scenario.get("end").and_then(ms) {
        run_timers(&mut engine, end, &mut actions);
    }
    Outcome { engine, actions }
}

/// `want` is contained in `got`: objects by key, arrays element-wise with
/// equal length, scalars equal (numbers compared as f64).
fn subset(path: &str, want: &Value, got: &Value) -> Result<(), String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let gv = g.get(k).unwrap_or(&Value::Null);
                subset(&format!("{path}.{k}"), wv, gv)?;
            }
            Ok(())
        }
        (Value::Array(w), Value::Array(g)) => {
            if w.len() != g.len() {
                return Err(format!("{path}: want {want}, got {got}"));
            }
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                subset(&format!("{path}[{i}]"), wv, gv)?;
            }
            Ok(())
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => Ok(()),
        _ if want == got => Ok(()),
        _ => Err(format!("{path}: want {want}, got {got}")),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn check_incident(i: usize, want: &Value, inc: &Incident) -> Result<(), String> {
    let got = serde_json::to_value(inc).map_err(|e| e.to_string())?;
    let mut want: Map<String, Value> = want.as_object().cloned().unwrap_or_default();
    let path = format!("incidents[{i}] ({})", inc.id);
    if let Some(v) = want.remove("affected_contains") {
        for a in strings(&v) {
            if !inc.affected.contains(&a) {
                return Err(format!("{path}: affected {:?} lacks {a:?}", inc.affected));
            }
        }
    }
    if let Some(v) = want.remove("narrative_contains") {
        for a in strings(&v) {
            if !inc.narrative.contains(&a) {
                return Err(format!("{path}: narrative lacks {a:?}:\n{}", inc.narrative));
            }
        }
    }
    if let Some(v) = want.remove("narrative_lines") {
        let lines: Vec<&str> = inc.narrative.lines().collect();
        let want_lines = strings(&v);
        if lines != want_lines {
            return Err(format!(
                "{path}: narrative snapshot differs.\n--- want\n{}\n--- got\n{}",
                want_lines.join("\n"),
                inc.narrative
            ));
        }
    }
    if let Some(v) = want.remove("timeline_events") {
        let events: Vec<Value> = inc
            .timeline
            .iter()
            .map(|e| serde_json::to_value(e.event).unwrap_or(Value::Null))
            .collect();
        subset(
            &format!("{path}.timeline_events"),
            &v,
            &Value::Array(events),
        )?;
    }
    if let Some(v) = want.remove("evidence_summaries_contain") {
        for a in strings(&v) {
            if !inc.evidence.iter().any(|e| e.summary.contains(&a)) {
                let all: Vec<&str> = inc.evidence.iter().map(|e| e.summary.as_str()).collect();
                return Err(format!("{path}: no evidence contains {a:?}: {all:#?}"));
            }
        }
    }
    if let Some(v) = want.remove("condition_count") {
        let n = inc.conditions.len() as u64 + inc.conditions_omitted;
        if Some(n) != v.as_u64() {
            return Err(format!("{path}: condition_count want {v}, got {n}"));
        }
    }
    subset(&path, &Value::Object(want), &got)
}

/// Runs the fixture and compares the outcome with its `expect`.
fn check(fixture: &str) {
    let v: Value = serde_json::from_str(fixture).expect("fixture is JSON");
    let out = run(&v);
    let expect = v.get("expect").cloned().unwrap_or_else(|| json!({}));
    if let Err(e) = compare(&out, &expect) {
        let incidents: Vec<&Incident> = out.engine.incidents().collect();
        panic!(
            "{e}\n\nincidents: {}\nstats: {:?}",
            serde_json::to_string_pretty(&incidents).unwrap_or_default(),
            out.engine.stats()
        );
    }
}

fn compare(out: &Outcome, expect: &Value) -> Result<(), String> {
    if let Some(want) = expect.get("incidents").and_then(Value::as_array) {
        let got: Vec<&Incident> = out.engine.incidents().collect();
        if want.len() != got.len() {
            let titles: Vec<(&str, &str)> = got
                .iter()
                .map(|i| (i.id.as_str(), i.title.as_str()))
                .collect();
            return Err(format!(
                "want {} incidents, got {}: {titles:?}",
                want.len(),
                got.len()
            ));
        }
        for (i, (w, g)) in want.iter().zip(got).enumerate() {
            check_incident(i, w, g)?;
        }
    }
    if let Some(want) = expect.get("stats") {
        let got = serde_json::to_value(out.engine.stats()).map_err(|e| e.to_string())?;
        subset("stats", want, &got)?;
    }
    let mut counts = json!({"opened": 0, "updated": 0, "resolved": 0, "reopened": 0, "notify": 0});
    let mut kinds = Vec::new();
    for a in &out.actions {
        let k = match a {
            Action::IncidentOpened(_) => "opened",
            Action::IncidentUpdated(_) => "updated",
            Action::IncidentResolved(_) => "resolved",
            Action::IncidentReopened(_) => "reopened",
            Action::Notify(n) => {
                kinds.push(serde_json::to_value(n.kind).unwrap_or(Value::Null));
                "notify"
            }
        };
        counts[k] = json!(counts[k].as_u64().unwrap_or(0) + 1);
    }
    if let Some(want) = expect.get("actions") {
        subset("actions", want, &counts)?;
    }
    if let Some(want) = expect.get("notify_kinds") {
        subset("notify_kinds", want, &Value::Array(kinds))?;
    }
    Ok(())
}

macro_rules! fixtures {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check(include_str!(concat!(stringify!($name), ".json")));
            }
        )*
    };
}

fixtures!(
    node_silent,
    node_flapping,
    reopen_window,
    ack_resolve_commands,
    manual_resolve_mutes,
    guest_crashed,
    container_crash_loop,
    container_unhealthy,
    service_failing,
    oom_kill,
    storage_full,
    storage_filling,
    backup_failed,
    zfs_degraded,
    smart_failing,
    ha_fencing,
    quorum_lost,
    log_error_burst,
    resource_pressure,
    io_pressure,
    cert_expiring,
    security_updates,
    task_failed,
    time_drift,
    causal_chain_storage,
    offline_suppression,
    correlation_window,
    storm_per_node,
    storm_global,
    bad_input,
    unknown_node_drop,
    hold_down,
    event_quiet_expiry,
    stale_and_frozen,
    ack_suppresses_escalation,
    narrative_snapshot,
);

// ----- tests that are easier in code ---------------------------------------

fn sig(at: i64, body: SignalBody) -> Signal {
    Signal::new(at, body)
}

fn task_fail(node: &str, n: u32) -> SignalBody {
    SignalBody::TaskFinished {
        node: node.into(),
        upid: format!("UPID:{node}:{n:08X}:0:0:qmstart:{n}:root@pam:"),
        task_type: "qmstart".into(),
        guest_id: Some(n),
        ok: false,
        status_text: "start failed".into(),
    }
}

/// security-design F3: 1000 triggers in 60 s from one agent create at most
/// burst + rate incidents; every trigger lands somewhere.
#[test]
fn storm_f3_thousand_triggers_one_agent() {
    let mut e = Engine::new(EngineConfig {
        // Make every trigger a separate situation: certificates never correlate.
        ..EngineConfig::default()
    });
    let mut actions = Vec::new();
    for i in 0..1000u32 {
        let now = BASE_MS + i64::from(i) * 60;
        e.handle_signal(
            now,
            sig(
                now,
                SignalBody::CertExpiry {
                    node: "pve1".into(),
                    subject: format!("cert-{i}"),
                    not_after_ms: now + DAY_MS,
                },
            ),
        );
        drain(&mut e, &mut actions);
    }
    let incidents: Vec<&Incident> = e.incidents().collect();
    let storms: Vec<&&Incident> = incidents.iter().filter(|i| i.storm).collect();
    assert!(incidents.len() <= 17, "{} incidents", incidents.len());
    assert_eq!(storms.len(), 1);
    let regular = incidents.len() - 1;
    assert!(regular <= 16);
    let merged = storms[0].merged_count as usize;
    assert_eq!(regular + merged, 1000, "nothing dropped");
    assert_eq!(e.stats().throttled_merged as usize, merged);
    assert_eq!(storms[0].conditions.len(), 100);
    assert_eq!(storms[0].conditions_omitted as usize, merged - 100);
}

#[test]
fn restore_resumes_and_advances_ids() {
    let mut e = Engine::new(EngineConfig::default());
    let mut actions = Vec::new();
    e.handle_signal(BASE_MS, sig(BASE_MS, task_fail("pve1", 100)));
    e.handle_signal(
        BASE_MS,
        sig(
            BASE_MS,
            SignalBody::NodeOffline {
                node: "pve2".into(),
            },
        ),
    );
    drain(&mut e, &mut actions);
    let saved: Vec<Incident> = e.incidents().cloned().collect();
    assert_eq!(saved.len(), 2);
    let json = serde_json::to_string(&saved).expect("serialize");
    let back: Vec<Incident> = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, saved);

    let mut r = Engine::new(EngineConfig::default());
    r.restore(back.clone());
    r.restore(back); // duplicates are ignored
    assert_eq!(r.incidents().count(), 2);
    assert!(r.poll_action().is_none(), "restore emits nothing");
    r.check_invariants().expect("invariants");
    // The node comes back: the restored node_silent condition clears and the
    // incident resolves after the hold-down.
    let t = BASE_MS + 60_000;
    r.handle_signal(
        t,
        sig(
            t,
            SignalBody::NodeOnline {
                node: "pve2".into(),
            },
        ),
    );
    let mut out = Vec::new();
    drain(&mut r, &mut out);
    run_timers(&mut r, t + 6 * MINUTE_MS, &mut out);
    assert_eq!(
        r.incident("inc-2").map(|i| i.state),
        Some(IncidentState::Resolved)
    );
    // A new problem gets a fresh id past the restored ones.
    let t2 = t + 7 * MINUTE_MS;
    r.handle_signal(
        t2,
        sig(
            t2,
            SignalBody::NodeOffline {
                node: "pve9".into(),
            },
        ),
    );
    drain(&mut r, &mut out);
    assert!(r.incident("inc-3").is_some());
    // The restored event condition expires on its own after the quiet time.
    run_timers(&mut r, BASE_MS + 40 * MINUTE_MS, &mut out);
    assert_eq!(
        r.incident("inc-1").map(|i| i.state),
        Some(IncidentState::Resolved)
    );
}

#[test]
fn nan_and_empty_values_are_invalid() {
    let mut e = Engine::new(EngineConfig::default());
    e.handle_signal(
        BASE_MS,
        sig(
            BASE_MS,
            SignalBody::HostSample {
                node: "pve1".into(),
                cpu_pct: f32::NAN,
                mem_pct: 1.0,
                swap_pct: 0.0,
                load1: 0.1,
                cpu_count: 4,
                iowait_pct: Some(f32::INFINITY),
                filesystems: vec![],
            },
        ),
    );
    e.handle_signal(
        BASE_MS,
        sig(
            BASE_MS,
            SignalBody::NodeOffline {
                node: String::new(),
            },
        ),
    );
    let s = e.stats();
    assert_eq!((s.signals, s.invalid, s.accepted), (2, 2, 0));
    assert!(e.poll_action().is_none());
}

#[test]
fn clock_regression_is_counted_and_ignored() {
    let mut e = Engine::new(EngineConfig::default());
    e.handle_signal(
        BASE_MS,
        sig(
            BASE_MS,
            SignalBody::NodeOffline {
                node: "pve1".into(),
            },
        ),
    );
    e.handle_timeout(BASE_MS - 1000);
    e.handle_signal(
        BASE_MS - 5000,
        sig(
            BASE_MS - 5000,
            SignalBody::NodeOnline {
                node: "pve1".into(),
            },
        ),
    );
    assert_eq!(e.stats().clock_regressions, 2);
    // Online was observed before offline: out of order, dropped.
    assert_eq!(e.stats().out_of_order, 1);
}

#[test]
fn signal_json_shape_round_trips() {
    let s = sig(
        5,
        SignalBody::ContainerEvent {
            node: "docker1".into(),
            container: "web".into(),
            kind: ContainerEventKind::Die,
            exit_code: Some(137),
        },
    );
    let v = serde_json::to_value(&s).expect("json");
    assert_eq!(
        v,
        json!({"at_ms": 5, "signal": "container_event", "node": "docker1",
               "container": "web", "kind": "die", "exit_code": 137})
    );
    let back: Signal = serde_json::from_value(v).expect("back");
    assert_eq!(back, s);
    let odd: SignalBody = serde_json::from_value(
        json!({"signal": "container_event", "node": "d", "container": "c", "kind": "exec_start"}),
    )
    .expect("unknown kinds map to other");
    assert!(matches!(
        odd,
        SignalBody::ContainerEvent {
            kind: ContainerEventKind::Other,
            ..
        }
    ));
}

#[test]
fn updates_coalesce_between_polls() {
    let mut e = Engine::new(EngineConfig::default());
    for i in 0..50 {
        let now = BASE_MS + i * 1000;
        e.handle_signal(
            now,
            sig(
                now,
                SignalBody::LogTemplate {
                    node: "pve1".into(),
                    source_kind: LogSourceKind::Journal,
                    source: "postgresql.service".into(),
                    template_id: 7,
                    template: "FATAL: could not open file <*>".into(),
                    count: 10,
                    severity: 3,
                    new_template: false,
                    burst: true,
                },
            ),
        );
    }
    let actions: Vec<Action> = std::iter::from_fn(|| e.poll_action()).collect();
    let kinds: Vec<&str> = actions
        .iter()
        .map(|a| match a {
            Action::IncidentOpened(_) => "opened",
            Action::IncidentUpdated(_) => "updated",
            Action::Notify(_) => "notify",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["opened", "notify"]);
    let Some(Action::IncidentOpened(inc)) = actions.first() else {
        panic!("first action");
    };
    // Polled late, so it already carries all 50 occurrences folded into one
    // evidence entry.
    assert_eq!(inc.evidence.len(), 1);
    assert_eq!(inc.evidence[0].count, 50);
}

/// Deterministic pseudo-random soak: arbitrary signal mixes, commands and
/// timer runs never panic, keep invariants and stay bounded.
#[test]
fn soak_random_inputs() {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut e = Engine::new(EngineConfig::default());
    let mut actions = Vec::new();
    let mut now = BASE_MS;
    for _ in 0..8_000 {
        now += (next() % 20_000) as i64;
        let node = format!("n{}", next() % 6);
        let r = next();
        let at = now - (next() % 400_000) as i64 + 200_000;
        let body = match r % 14 {
            0 => SignalBody::NodeOffline { node },
            1 => SignalBody::NodeOnline { node },
            2 => SignalBody::HostSample {
                node,
                cpu_pct: (next() % 101) as f32,
                mem_pct: (next() % 101) as f32,
                swap_pct: 0.0,
                load1: 1.0,
                cpu_count: 4,
                iowait_pct: Some((next() % 40) as f32),
                filesystems: vec![FsSample {
                    mount: "/".into(),
                    total_bytes: 1000,
                    avail_bytes: next() % 1200,
                }],
            },
            3 => task_fail(&node, (next() % 5) as u32),
            4 => SignalBody::ContainerEvent {
                node,
                container: format!("c{}", next() % 3),
                kind: [
                    ContainerEventKind::Die,
                    ContainerEventKind::Oom,
                    ContainerEventKind::Unhealthy,
                    ContainerEventKind::Healthy,
                    ContainerEventKind::Stop,
                    ContainerEventKind::Destroy,
                ][(next() % 6) as usize],
                exit_code: Some((next() % 3) as i64),
            },
            5 => SignalBody::GuestState {
                node,
                guest_id: (next() % 4) as u32,
                guest_kind: GuestKind::Qemu,
                name: String::new(),
                status: [
                    GuestStatus::Running,
                    GuestStatus::Stopped,
                    GuestStatus::IoError,
                    GuestStatus::Unknown,
                ][(next() % 4) as usize],
                expected_running: next() % 2 == 0,
                ha_managed: false,
            },
            6 => SignalBody::ZfsPool {
                node,
                pool: "rpool".into(),
                health: if next() % 2 == 0 {
                    PoolHealth::Online
                } else {
                    PoolHealth::Degraded
                },
                scrub_errors: 0,
            },
            7 => SignalBody::Quorum {
                node,
                quorate: next() % 2 == 0,
                members: 2,
            },
            8 => SignalBody::LogTemplate {
                node,
                source_kind: LogSourceKind::Journal,
                source: "kernel".into(),
                template_id: next() % 5,
                template: [
                    "Out of memory: Killed process <*> (java)",
                    "x.service: Failed with result 'exit-code'.",
                    "I/O error, dev sda",
                    "boom",
                ][(next() % 4) as usize]
                    .into(),
                count: 3,
                severity: 3,
                new_template: true,
                burst: next() % 2 == 0,
            },
            9 => SignalBody::HaFencing {
                node,
                fenced_node: format!("n{}", next() % 6),
            },
            10 => SignalBody::CertExpiry {
                node,
                subject: "pveproxy".into(),
                not_after_ms: now + (next() % 30) as i64 * DAY_MS,
            },
            11 => SignalBody::NodeRemoved { node },
            12 => SignalBody::NodeRegistered { node },
            _ => SignalBody::TimeDrift {
                node,
                offset_ms: (next() % 20_000) as i64 - 10_000,
            },
        };
        e.handle_signal(now, sig(at, body));
        drain(&mut e, &mut actions);
        if next() % 50 == 0 {
            let id = format!("inc-{}", next() % 40);
            let by = "op".to_string();
            let cmd = match next() % 3 {
                0 => Command::Acknowledge {
                    incident_id: id,
                    by,
                },
                1 => Command::Resolve {
                    incident_id: id,
                    by,
                },
                _ => Command::Reopen {
                    incident_id: id,
                    by,
                },
            };
            let _ = e.handle_command(now, cmd);
            drain(&mut e, &mut actions);
        }
        run_timers(&mut e, now, &mut actions);
        for inc in e.incidents() {
            assert!(inc.evidence.len() <= 30);
            assert!(inc.timeline.len() <= 50);
            assert!(inc.conditions.len() <= 100);
        }
    }
    let s = e.stats();
    assert!(s.accepted > 1000 && s.incidents_opened > 10, "{s:?}");
    // Memory stays bounded: everything resolved long ago has been evicted.
    run_timers(&mut e, now + 3 * DAY_MS, &mut actions);
    assert!(
        e.incidents().all(
            |i| i.state != IncidentState::Resolved || i.resolved_at_ms.is_some_and(|r| r > now)
        )
    );
}

#[test]
fn extreme_times_do_not_panic() {
    let mut e = Engine::new(EngineConfig::default());
    for (now, at) in [
        (i64::MAX, i64::MAX),
        (i64::MAX, i64::MIN),
        (i64::MIN, i64::MIN),
        (0, i64::MAX),
    ] {
        e.handle_signal(now, sig(at, SignalBody::NodeOffline { node: "x".into() }));
        e.handle_signal(now, sig(at, task_fail("x", 1)));
        e.handle_timeout(now);
        while e.poll_action().is_some() {}
    }
    e.check_invariants().expect("invariants");
}
