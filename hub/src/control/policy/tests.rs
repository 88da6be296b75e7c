//! Policy state-machine tests: each rule as a small scripted scenario.

use serde_json::{Value, json};

use super::super::audit::AuditKind;
use super::super::catalog::tests::inv;
use super::super::catalog::{ActionId, Inventory, RiskClass};
use super::super::plan::tests::{act, plan};
use super::super::plan::{Catalog, Step, validate};
use super::*;

/// A scripted input; hashes are filled in from the run.
enum Ev {
    /// Approve step with role and fresh-auth flag, hashes as shown.
    Approve(&'static str, &'static str, usize, bool),
    /// Approve with explicit (plan hash, step hash).
    ApproveHashes(usize, String, String),
    Exec(&'static str, usize),
    ExecPrecheck(usize, &'static str),
    Result(usize, bool, bool, &'static str),
    Probe(usize, bool),
    Manual(&'static str, usize),
    Reject(&'static str, &'static str),
    Edit(&'static str),
    Timeout,
}

fn to_event(run: &PlanRun, ev: Ev) -> Event {
    let hashes = |i: usize| {
        (
            run.plan().plan_hash.clone(),
            run.plan()
                .steps
                .get(i)
                .map(|s| s.step_hash.clone())
                .unwrap_or_default(),
        )
    };
    match ev {
        Ev::Approve(user, role, i, fresh_auth) => {
            let (plan_hash, step_hash) = hashes(i);
            Event::ApprovalGiven {
                user: user.into(),
                role: role.into(),
                step_index: i,
                plan_hash,
                step_hash,
                fresh_auth,
            }
        }
        Ev::ApproveHashes(i, plan_hash, step_hash) => Event::ApprovalGiven {
            user: "alice".into(),
            role: "admin".into(),
            step_index: i,
            plan_hash,
            step_hash,
            fresh_auth: true,
        },
        Ev::Exec(role, i) => Event::ExecuteRequested {
            user: "alice".into(),
            role: role.into(),
            step_index: i,
            precheck: Vec::new(),
        },
        Ev::ExecPrecheck(i, why) => Event::ExecuteRequested {
            user: "alice".into(),
            role: "admin".into(),
            step_index: i,
            precheck: vec![why.into()],
        },
        Ev::Result(i, ok, refused, detail) => Event::AgentResult {
            step_index: i,
            ok,
            refused,
            detail: detail.into(),
            upid: None,
        },
        Ev::Probe(i, verified) => Event::ProbeResult {
            step_index: i,
            verified,
            detail: if verified {
                "ok"
            } else {
                "guest 101 is running"
            }
            .into(),
        },
        Ev::Manual(role, i) => Event::ManualDone {
            user: "alice".into(),
            role: role.into(),
            step_index: i,
        },
        Ev::Reject(role, reason) => Event::Rejected {
            user: "bob".into(),
            role: role.into(),
            step_index: None,
            reason: reason.into(),
        },
        Ev::Edit(h) => Event::PlanEdited {
            new_plan_hash: h.into(),
        },
        Ev::Timeout => Event::Timeout,
    }
}

/// Non-audit actions, one line each.
fn brief(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendCommand(c) => Some(format!("send {}", c.step_index)),
            Action::RunProbe { step_index, .. } => Some(format!("probe {step_index}")),
            Action::StepVerified { step_index } => Some(format!("verified {step_index}")),
            Action::PlanStopped { reason, rollback } => Some(format!(
                "stopped: {reason} | rollback {:?}",
                rollback.iter().map(|r| r.step_index).collect::<Vec<_>>()
            )),
            Action::PlanCompleted => Some("completed".into()),
            Action::Refused { reason, .. } => Some(format!("refused: {reason}")),
            Action::Audit(_) => None,
        })
        .collect()
}

fn audits(actions: &[Action]) -> Vec<AuditKind> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Audit(r) => Some(r.kind),
            _ => None,
        })
        .collect()
}

fn make_run(
    mode: Mode,
    tweak: impl FnOnce(&mut PolicyConfig),
    i: &Inventory,
    steps: Vec<Step>,
) -> PlanRun {
    let mut cfg = PolicyConfig {
        mode,
        ..PolicyConfig::default()
    };
    tweak(&mut cfg);
    let v = validate(&plan(steps), &Catalog::builtin(), i, &cfg).unwrap();
    PlanRun::new(cfg, v)
}

/// Runs a script; each line is (now, input, expected non-audit outputs,
/// where a `~` prefix means "starts with").
fn check(run: &mut PlanRun, script: Vec<(i64, Ev, Vec<&str>)>) -> Vec<Action> {
    let mut all = Vec::new();
    for (n, (now, ev, want)) in script.into_iter().enumerate() {
        let event = to_event(run, ev);
        let out = run.handle(now, event);
        let got = brief(&out);
        assert_eq!(got.len(), want.len(), "line {n}: got {got:#?}");
        for (g, w) in got.iter().zip(&want) {
            match w.strip_prefix('~') {
                Some(prefix) => assert!(g.starts_with(prefix), "line {n}: {g:?} !~ {prefix:?}"),
                None => assert_eq!(g, w, "line {n}"),
            }
        }
        all.extend(out);
    }
    all
}

fn shutdown_start() -> Vec<Step> {
    vec![
        act("pve.guest_config", json!({"node": "pve1", "vmid": 101})),
        act(
            "pve.shutdown",
            json!({"node": "pve1", "vmid": 101, "timeout_s": 60}),
        ),
        act("pve.start", json!({"node": "pve1", "vmid": 101})),
    ]
}

fn assist(steps: Vec<Step>) -> PlanRun {
    make_run(Mode::Assist, |_| {}, &inv(), steps)
}

#[test]
fn default_mode_is_guide() {
    assert_eq!(PolicyConfig::default().mode, Mode::Guide);
    assert_eq!(PolicyConfig::default().check(), Ok(()));
}

#[test]
fn config_checks() {
    let bad = |f: fn(&mut PolicyConfig)| {
        let mut c = PolicyConfig::default();
        f(&mut c);
        c.check().unwrap_err().to_string()
    };
    assert_eq!(
        bad(|c| c.approval_ttl_s = 0),
        "approval_ttl_s must be 30 to 86400 seconds"
    );
    assert_eq!(
        bad(|c| c.command_ttl_s = 3600),
        "command_ttl_s must be 5 to 600 seconds"
    );
    assert_eq!(bad(|c| c.approver_roles.clear()), "approver_roles is empty");
    assert_eq!(
        bad(|c| c.destructive_opt_in.push(OptIn {
            actions: vec![ActionId::PveStart],
            scope: Scope::Any
        })),
        "destructive_opt_in lists pve.start, which is not destructive"
    );
}

#[test]
fn guide_mode_never_sends_commands() {
    let mut run = make_run(Mode::Guide, |_| {}, &inv(), shutdown_start());
    let all = check(
        &mut run,
        vec![
            (
                0,
                Ev::Approve("alice", "admin", 0, true),
                vec!["~refused: Guide mode"],
            ),
            (1, Ev::Exec("admin", 0), vec!["~refused: Guide mode"]),
            // The operator ticks steps off; the hub still verifies them.
            (2, Ev::Manual("admin", 0), vec![]),
            (3, Ev::Manual("admin", 1), vec!["probe 1"]),
            (4, Ev::Probe(1, true), vec!["verified 1"]),
            (5, Ev::Manual("admin", 2), vec!["probe 2"]),
            (6, Ev::Probe(2, true), vec!["verified 2", "completed"]),
        ],
    );
    assert!(!all.iter().any(|a| matches!(a, Action::SendCommand(_))));
    assert_eq!(run.status(), &RunStatus::Completed);
}

#[test]
fn assist_happy_path() {
    let mut run = assist(shutdown_start());
    let all = check(
        &mut run,
        vec![
            (10, Ev::Approve("alice", "admin", 0, false), vec![]),
            (11, Ev::Exec("admin", 0), vec!["send 0"]),
            (
                12,
                Ev::Result(0, true, false, "config read"),
                vec!["verified 0"],
            ),
            (20, Ev::Approve("alice", "admin", 1, false), vec![]),
            (21, Ev::Exec("admin", 1), vec!["send 1"]),
            (
                40,
                Ev::Result(1, true, false, "qmshutdown OK"),
                vec!["probe 1"],
            ),
            (45, Ev::Probe(1, true), vec!["verified 1"]),
            (50, Ev::Approve("alice", "admin", 2, false), vec![]),
            (51, Ev::Exec("admin", 2), vec!["send 2"]),
            (
                60,
                Ev::Result(2, true, false, "qmstart OK"),
                vec!["probe 2"],
            ),
            (61, Ev::Probe(2, true), vec!["verified 2", "completed"]),
        ],
    );
    let sent: Vec<&CommandRequest> = all
        .iter()
        .filter_map(|a| match a {
            Action::SendCommand(c) => Some(c),
            _ => None,
        })
        .collect();
    let p = run.plan();
    assert_eq!(sent[1].plan_hash, p.plan_hash);
    assert_eq!(sent[1].step_hash, p.steps[1].step_hash);
    assert_eq!(sent[1].issued_at, 21);
    assert_eq!(sent[1].expires_at, 21 + 120);
    assert_eq!(sent[1].node, "pve1");
    // The probe is timed from the send.
    assert!(all.iter().any(|a| matches!(
        a,
        Action::RunProbe {
            step_index: 1,
            executed_at: 21,
            deadline: 340,
            ..
        }
    )));
    let kinds = audits(&all);
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == AuditKind::StepApproved)
            .count(),
        3
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == AuditKind::CommandSent)
            .count(),
        3
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == AuditKind::StepVerified)
            .count(),
        3
    );
    assert_eq!(kinds.last(), Some(&AuditKind::PlanCompleted));
    // Every audit detail carries the plan hash.
    for a in &all {
        if let Action::Audit(r) = a {
            assert_eq!(r.detail["plan_hash"], Value::String(p.plan_hash.clone()));
        }
    }
    assert_eq!(run.poll_timeout(), None);
}

#[test]
fn approval_is_bound_to_plan_and_step_hash() {
    let mut run = assist(shutdown_start());
    let p = run.plan().clone();
    check(
        &mut run,
        vec![
            (
                0,
                Ev::ApproveHashes(1, "ab".repeat(32), p.steps[1].step_hash.clone()),
                vec!["~refused: the approval is for plan abababababab"],
            ),
            (
                0,
                Ev::ApproveHashes(1, p.plan_hash.clone(), p.steps[2].step_hash.clone()),
                vec!["refused: the approval is for a different version of this step"],
            ),
            (
                0,
                Ev::Approve("alice", "admin", 7, false),
                vec!["refused: the plan has no step 8"],
            ),
            (
                1,
                Ev::Exec("admin", 0),
                vec!["refused: the step has no valid approval"],
            ),
        ],
    );
    assert!(run.approvals().is_empty());
}

#[test]
fn approvals_expire() {
    let mut run = assist(shutdown_start());
    let all = check(
        &mut run,
        vec![(0, Ev::Approve("alice", "admin", 0, false), vec![])],
    );
    assert_eq!(run.poll_timeout(), Some(900));
    let all2 = check(
        &mut run,
        vec![
            (899, Ev::Timeout, vec![]),
            (900, Ev::Timeout, vec![]),
            (
                901,
                Ev::Exec("admin", 0),
                vec!["refused: the step has no valid approval"],
            ),
        ],
    );
    assert!(audits(&all).contains(&AuditKind::StepApproved));
    assert_eq!(audits(&all2).first(), Some(&AuditKind::ApprovalExpired));
    assert_eq!(run.poll_timeout(), None);
    // Expired on the very event that would use it.
    let mut run = assist(shutdown_start());
    check(
        &mut run,
        vec![
            (0, Ev::Approve("alice", "admin", 0, false), vec![]),
            (
                900,
                Ev::Exec("admin", 0),
                vec!["refused: the step has no valid approval"],
            ),
        ],
    );
}

#[test]
fn editing_the_plan_invalidates_approvals() {
    let mut run = assist(shutdown_start());
    let h = run.plan().plan_hash.clone();
    let all = check(
        &mut run,
        vec![
            (0, Ev::Approve("alice", "admin", 0, false), vec![]),
            (0, Ev::Approve("alice", "admin", 1, false), vec![]),
            (1, Ev::Edit(Box::leak(h.into_boxed_str())), vec![]),
            (
                2,
                Ev::Edit("cafe"),
                vec![
                    "stopped: the plan was edited (now cafe); all approvals are void | rollback []",
                ],
            ),
            (
                3,
                Ev::Exec("admin", 0),
                vec!["refused: the plan was edited (now cafe); approve the new version"],
            ),
            (
                3,
                Ev::Approve("alice", "admin", 0, false),
                vec!["~refused: the plan was edited"],
            ),
        ],
    );
    assert!(run.approvals().is_empty());
    assert!(audits(&all).contains(&AuditKind::ApprovalsInvalidated));
    assert!(!all.iter().any(|a| matches!(a, Action::SendCommand(_))));
}

fn stop_plan() -> Vec<Step> {
    vec![act("pve.stop", json!({"node": "pve1", "vmid": 101}))]
}

fn opt_in(actions: Vec<ActionId>, scope: Scope) -> impl FnOnce(&mut PolicyConfig) {
    move |c| c.destructive_opt_in.push(OptIn { actions, scope })
}

#[test]
fn destructive_needs_both_opt_ins() {
    // No hub opt-in.
    let mut run = make_run(Mode::Assist, |_| {}, &inv(), stop_plan());
    assert!(run.plan().steps[0].destructive);
    check(
        &mut run,
        vec![(
            0,
            Ev::Approve("alice", "admin", 0, true),
            vec![
                "refused: refused by policy: pve.stop is destructive and the hub policy has no opt-in for it on guest 101 on pve1",
            ],
        )],
    );
    // Opt-in for another action, or another target, does not count.
    for tweak in [
        opt_in(vec![ActionId::PveSnapshotRollback], Scope::Any),
        opt_in(
            vec![ActionId::PveStop],
            Scope::Guest {
                node: "pve1".into(),
                vmid: 100,
            },
        ),
        opt_in(vec![ActionId::PveStop], Scope::Tag("lab".into())),
        opt_in(vec![ActionId::PveStop], Scope::Node("pve2".into())),
    ] {
        let mut run = make_run(Mode::Assist, tweak, &inv(), stop_plan());
        check(
            &mut run,
            vec![(
                0,
                Ev::Approve("alice", "admin", 0, true),
                vec!["~refused: refused by policy: pve.stop is destructive"],
            )],
        );
    }
    // Hub opt-in, but the agent reported its own opt-in off.
    let mut i = inv();
    i.nodes.get_mut("pve1").unwrap().agent_allows_destructive = Some(false);
    let mut run = make_run(
        Mode::Assist,
        opt_in(vec![ActionId::PveStop], Scope::Tag("prod".into())),
        &i,
        stop_plan(),
    );
    check(
        &mut run,
        vec![(
            0,
            Ev::Approve("alice", "admin", 0, true),
            vec![
                "refused: refused by policy: the agent on pve1 does not allow destructive actions (its own config)",
            ],
        )],
    );
    // Hub opt-in, agent's unknown: it goes out, needs fresh auth, and the
    // agent's refusal stops the plan.
    let mut run = make_run(
        Mode::Assist,
        opt_in(vec![ActionId::PveStop], Scope::Node("pve1".into())),
        &inv(),
        stop_plan(),
    );
    let all = check(
        &mut run,
        vec![
            (
                0,
                Ev::Approve("alice", "admin", 0, false),
                vec!["refused: destructive steps need a fresh re-authentication"],
            ),
            (1, Ev::Approve("alice", "admin", 0, true), vec![]),
            (2, Ev::Exec("admin", 0), vec!["send 0"]),
            (
                3,
                Ev::Result(
                    0,
                    false,
                    true,
                    "refused by local policy: stop is destructive",
                ),
                vec![
                    "refused: refused by the agent on pve1: refused by local policy: stop is destructive",
                    "~stopped: refused by the agent on pve1",
                ],
            ),
        ],
    );
    assert!(audits(&all).contains(&AuditKind::StepFailed));
    // Both opt-ins: it runs to verification.
    let mut i = inv();
    i.nodes.get_mut("pve1").unwrap().agent_allows_destructive = Some(true);
    let mut run = make_run(
        Mode::Assist,
        opt_in(vec![ActionId::PveStop], Scope::Any),
        &i,
        stop_plan(),
    );
    check(
        &mut run,
        vec![
            (1, Ev::Approve("alice", "admin", 0, true), vec![]),
            (2, Ev::Exec("admin", 0), vec!["send 0"]),
            (3, Ev::Result(0, true, false, "qmstop OK"), vec!["probe 0"]),
            (4, Ev::Probe(0, true), vec!["verified 0", "completed"]),
        ],
    );
}

#[test]
fn per_target_deny_rules() {
    let never_100 = |c: &mut PolicyConfig| {
        c.deny.push(DenyRule {
            scope: Scope::Guest {
                node: "pve1".into(),
                vmid: 100,
            },
            min_risk: RiskClass::Low,
            reason: "never touch VM 100".into(),
        });
    };
    let mut run = make_run(
        Mode::Assist,
        never_100,
        &inv(),
        vec![act("pve.reboot", json!({"node": "pve1", "vmid": 100}))],
    );
    assert_eq!(
        run.plan().steps[0].refused.as_deref(),
        Some("guest 100 on pve1 is denied by hub policy: never touch VM 100")
    );
    check(
        &mut run,
        vec![
            (
                0,
                Ev::Approve("alice", "admin", 0, false),
                vec![
                    "refused: refused by policy: guest 100 on pve1 is denied by hub policy: never touch VM 100",
                ],
            ),
            (
                1,
                Ev::Exec("admin", 0),
                vec!["~refused: refused by policy: guest 100"],
            ),
        ],
    );
    // Reading VM 100 is still allowed; another guest is unaffected.
    let run = make_run(
        Mode::Assist,
        never_100,
        &inv(),
        vec![
            act("pve.guest_config", json!({"node": "pve1", "vmid": 100})),
            act("pve.reboot", json!({"node": "pve1", "vmid": 101})),
        ],
    );
    assert!(run.plan().steps.iter().all(|s| s.refused.is_none()));
    // Tag and node scopes; tags include the node's.
    let by_tag = |c: &mut PolicyConfig| {
        c.deny.push(DenyRule {
            scope: Scope::Tag("compose:shop".into()),
            min_risk: RiskClass::Medium,
            reason: "shop is frozen".into(),
        });
    };
    let run = make_run(
        Mode::Assist,
        by_tag,
        &inv(),
        vec![
            act(
                "docker.restart",
                json!({"node": "docker1", "container": "web"}),
            ),
            act(
                "docker.stop",
                json!({"node": "docker1", "container": "web"}),
            ),
        ],
    );
    assert_eq!(run.plan().steps[0].refused, None);
    assert_eq!(
        run.plan().steps[1].refused.as_deref(),
        Some("container web on docker1 is denied by hub policy: shop is frozen")
    );
    let mut i = inv();
    i.nodes
        .get_mut("pve1")
        .unwrap()
        .tags
        .push("critical".into());
    let run = make_run(
        Mode::Assist,
        |c| {
            c.deny.push(DenyRule {
                scope: Scope::Tag("critical".into()),
                min_risk: RiskClass::ReadOnly,
                reason: "hands off".into(),
            })
        },
        &i,
        vec![act(
            "pve.guest_config",
            json!({"node": "pve1", "vmid": 105}),
        )],
    );
    assert!(run.plan().steps[0].refused.is_some());
}

#[test]
fn roles_are_checked() {
    let mut run = assist(shutdown_start());
    check(
        &mut run,
        vec![
            (
                0,
                Ev::Approve("eve", "viewer", 0, true),
                vec!["refused: role \"viewer\" may not approve or execute steps"],
            ),
            (0, Ev::Approve("alice", "admin", 0, false), vec![]),
            (
                1,
                Ev::Exec("viewer", 0),
                vec!["refused: role \"viewer\" may not approve or execute steps"],
            ),
            (
                1,
                Ev::Manual("viewer", 0),
                vec!["refused: role \"viewer\" may not mark steps done"],
            ),
            (
                1,
                Ev::Reject("viewer", "no"),
                vec!["refused: role \"viewer\" may not reject plans"],
            ),
            (2, Ev::Exec("admin", 0), vec!["send 0"]),
        ],
    );
    // Other roles can be configured.
    let mut run = make_run(
        Mode::Assist,
        |c| c.approver_roles = vec!["operator".into()],
        &inv(),
        shutdown_start(),
    );
    check(
        &mut run,
        vec![
            (
                0,
                Ev::Approve("alice", "admin", 0, false),
                vec!["~refused: role \"admin\""],
            ),
            (0, Ev::Approve("olga", "operator", 0, false), vec![]),
        ],
    );
}

fn three_steps() -> Vec<Step> {
    vec![
        act(
            "pve.snapshot_create",
            json!({"node": "pve1", "vmid": 101, "name": "pre_fix"}),
        ),
        act("pve.shutdown", json!({"node": "pve1", "vmid": 101})),
        act("pve.start", json!({"node": "pve1", "vmid": 101})),
    ]
}

fn approve_exec_ok(i: usize, t: i64) -> Vec<(i64, Ev, Vec<&'static str>)> {
    vec![
        (t, Ev::Approve("alice", "admin", i, false), vec![]),
        (
            t,
            Ev::Exec("admin", i),
            vec![["send 0", "send 1", "send 2"][i]],
        ),
        (
            t + 1,
            Ev::Result(i, true, false, "OK"),
            vec![["probe 0", "probe 1", "probe 2"][i]],
        ),
        (
            t + 2,
            Ev::Probe(i, true),
            vec![["verified 0", "verified 1", "verified 2"][i]],
        ),
    ]
}

#[test]
fn failure_stops_the_plan_with_rollback_hints() {
    let mut run = assist(three_steps());
    let mut script = approve_exec_ok(0, 0);
    script.extend(approve_exec_ok(1, 10));
    script.extend([
        (20, Ev::Approve("alice", "admin", 2, false), vec![]),
        (20, Ev::Exec("admin", 2), vec!["send 2"]),
        (
            21,
            Ev::Result(2, false, false, "qmstart: storage offline"),
            vec!["stopped: step 3 failed: qmstart: storage offline | rollback [2, 1, 0]"],
        ),
        (
            22,
            Ev::Exec("admin", 2),
            vec!["~refused: the plan is stopped: step 3 failed"],
        ),
    ]);
    let all = check(&mut run, script);
    let stopped = all
        .iter()
        .find_map(|a| match a {
            Action::PlanStopped { rollback, .. } => Some(rollback.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        stopped[0].hint.undo.as_ref().unwrap().action,
        ActionId::PveShutdown
    );
    assert_eq!(
        stopped[1].hint.undo.as_ref().unwrap().action,
        ActionId::PveStart
    );
    assert!(stopped[2].hint.text.contains("qm delsnapshot 101 pre_fix"));
    assert!(matches!(run.steps()[2], StepState::Failed(_)));
    // A failed verification stops it too.
    let mut run = assist(three_steps());
    let mut script = approve_exec_ok(0, 0);
    script.extend([
        (10, Ev::Approve("alice", "admin", 1, false), vec![]),
        (10, Ev::Exec("admin", 1), vec!["send 1"]),
        (11, Ev::Result(1, true, false, "OK"), vec!["probe 1"]),
        (
            12,
            Ev::Probe(1, false),
            vec!["stopped: step 2 was not verified: guest 101 is running | rollback [1, 0]"],
        ),
    ]);
    check(&mut run, script);
}

#[test]
fn replayed_approval_is_refused() {
    let mut run = assist(three_steps());
    let mut script = approve_exec_ok(0, 0);
    script.extend([
        (
            5,
            Ev::Approve("alice", "admin", 0, false),
            vec!["refused: replayed approval: this step was already executed"],
        ),
        (
            5,
            Ev::Exec("admin", 0),
            vec!["refused: this step was already executed"],
        ),
    ]);
    check(&mut run, script);
    // Replaying while the command is in flight is refused too, and the
    // approval is single-use.
    let mut run = assist(three_steps());
    check(
        &mut run,
        vec![
            (0, Ev::Approve("alice", "admin", 0, false), vec![]),
            (0, Ev::Exec("admin", 0), vec!["send 0"]),
            (
                1,
                Ev::Approve("alice", "admin", 0, false),
                vec!["refused: replayed approval: this step was already executed"],
            ),
            (
                1,
                Ev::Exec("admin", 0),
                vec!["refused: this step was already executed"],
            ),
        ],
    );
    assert!(run.approvals().is_empty());
}

#[test]
fn steps_run_in_order_and_preconditions_are_rechecked() {
    let mut run = assist(three_steps());
    check(
        &mut run,
        vec![
            (0, Ev::Approve("alice", "admin", 1, false), vec![]),
            (
                0,
                Ev::Exec("admin", 1),
                vec!["refused: step 1 must finish first"],
            ),
            (
                0,
                Ev::Manual("admin", 1),
                vec!["refused: step 1 must finish first"],
            ),
            (0, Ev::Approve("alice", "admin", 0, false), vec![]),
            (
                1,
                Ev::ExecPrecheck(0, "guest 101 on pve1 is locked (backup)"),
                vec!["refused: precondition failed: guest 101 on pve1 is locked (backup)"],
            ),
            // The approval survives a failed precheck.
            (2, Ev::Exec("admin", 0), vec!["send 0"]),
        ],
    );
}

#[test]
fn timeouts_fail_the_step() {
    let mut run = assist(three_steps());
    check(
        &mut run,
        vec![
            (0, Ev::Approve("alice", "admin", 0, false), vec![]),
            (0, Ev::Exec("admin", 0), vec!["send 0"]),
        ],
    );
    assert_eq!(run.poll_timeout(), Some(900));
    let all = check(
        &mut run,
        vec![
            (899, Ev::Timeout, vec![]),
            (
                900,
                Ev::Timeout,
                vec!["stopped: step 1: no result from the agent within 900 s | rollback [0]"],
            ),
            // A late result is only recorded.
            (901, Ev::Result(0, true, false, "OK"), vec![]),
        ],
    );
    assert_eq!(audits(&all).last(), Some(&AuditKind::UnexpectedEvent));
    // Probe deadline.
    let mut run = assist(three_steps());
    check(
        &mut run,
        vec![
            (0, Ev::Approve("alice", "admin", 0, false), vec![]),
            (0, Ev::Exec("admin", 0), vec!["send 0"]),
            (10, Ev::Result(0, true, false, "OK"), vec!["probe 0"]),
        ],
    );
    assert_eq!(run.poll_timeout(), Some(310));
    check(
        &mut run,
        vec![(
            310,
            Ev::Timeout,
            vec!["stopped: step 1: the effect was not verified within 300 s | rollback [0]"],
        )],
    );
}

#[test]
fn rejection_stops_the_plan() {
    let mut run = assist(three_steps());
    let mut script = approve_exec_ok(0, 0);
    script.extend([
        (
            5,
            Ev::Reject("admin", "wrong diagnosis"),
            vec!["stopped: rejected by bob: wrong diagnosis | rollback [0]"],
        ),
        (
            6,
            Ev::Approve("alice", "admin", 1, false),
            vec!["~refused: the plan is stopped: rejected by bob"],
        ),
    ]);
    let all = check(&mut run, script);
    assert!(audits(&all).contains(&AuditKind::PlanRejected));
}

#[test]
fn manual_steps_in_assist_mode() {
    let steps = vec![
        Step::Manual {
            text: "tell the family the NAS reboots".into(),
            node: None,
            command: None,
        },
        act("pve.reboot", json!({"node": "pve1", "vmid": 101})),
    ];
    let mut run = assist(steps);
    check(
        &mut run,
        vec![
            (
                0,
                Ev::Approve("alice", "admin", 0, false),
                vec!["refused: a manual step is not executed; mark it done"],
            ),
            (0, Ev::Manual("admin", 0), vec![]),
            (
                0,
                Ev::Manual("admin", 0),
                vec!["refused: this step is not pending"],
            ),
            (1, Ev::Approve("alice", "admin", 1, false), vec![]),
            (1, Ev::Exec("admin", 1), vec!["send 1"]),
            (2, Ev::Result(1, true, false, "OK"), vec!["probe 1"]),
            (3, Ev::Probe(1, true), vec!["verified 1", "completed"]),
            (
                4,
                Ev::Exec("admin", 1),
                vec!["refused: the plan is complete"],
            ),
        ],
    );
    assert_eq!(run.steps()[0], StepState::Done);
}

#[test]
fn unexpected_results_are_only_audited() {
    let mut run = assist(three_steps());
    let all = check(
        &mut run,
        vec![
            (0, Ev::Result(0, true, false, "OK"), vec![]),
            (0, Ev::Probe(1, true), vec![]),
        ],
    );
    assert_eq!(
        audits(&all),
        vec![AuditKind::UnexpectedEvent, AuditKind::UnexpectedEvent]
    );
    assert_eq!(run.status(), &RunStatus::Active);
}

/// Replaces `$plan`, `$plan12` and `$stepN` with the run's hashes.
fn substitute(v: &mut Value, run: &PlanRun) {
    match v {
        Value::String(s) => {
            let p = run.plan();
            let short = p.plan_hash.get(..12).unwrap_or_default().to_owned();
            let mut out = s.replace("$plan12", &short).replace("$plan", &p.plan_hash);
            for st in p.steps.iter().rev() {
                out = out.replace(&format!("$step{}", st.index), &st.step_hash);
            }
            *s = out;
        }
        Value::Array(xs) => xs.iter_mut().for_each(|x| substitute(x, run)),
        Value::Object(m) => m.values_mut().for_each(|x| substitute(x, run)),
        _ => {}
    }
}

#[test]
fn json_scenarios() {
    let cases: Vec<Value> = serde_json::from_str(include_str!("scenarios.json")).unwrap();
    assert!(cases.len() >= 6);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let mut cfg = serde_json::to_value(PolicyConfig::default()).unwrap();
        for (k, v) in case["policy"].as_object().unwrap() {
            cfg[k] = v.clone();
        }
        let cfg: PolicyConfig = serde_json::from_value(cfg).unwrap();
        cfg.check().unwrap();
        let steps: Vec<Step> = case["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| act(s["action"].as_str().unwrap(), s["params"].clone()))
            .collect();
        let v = validate(&plan(steps), &Catalog::builtin(), &inv(), &cfg)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let mut run = PlanRun::new(cfg, v);
        for (n, line) in case["script"].as_array().unwrap().iter().enumerate() {
            let mut line = line.clone();
            substitute(&mut line, &run);
            let event: Event = serde_json::from_value(line["event"].clone())
                .unwrap_or_else(|e| panic!("{name} line {n}: {e}"));
            let out = run.handle(line["at"].as_i64().unwrap(), event);
            let got = brief(&out);
            let want: Vec<&str> = line["expect"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_str().unwrap())
                .collect();
            assert_eq!(got.len(), want.len(), "{name} line {n}: got {got:#?}");
            for (g, w) in got.iter().zip(&want) {
                match w.strip_prefix('~') {
                    Some(prefix) => assert!(g.starts_with(prefix), "{name} line {n}: {g:?}"),
                    None => assert_eq!(g, w, "{name} line {n}"),
                }
            }
            // Every refusal and state change is audited.
            if !got.is_empty() || !matches!(line["event"], Value::String(_)) {
                assert!(
                    out.iter().any(|a| matches!(a, Action::Audit(_))),
                    "{name} line {n}: no audit record"
                );
            }
        }
    }
}

/// Every mode × risk class × hub opt-in × agent opt-in combination: what
/// happens to one step that is approved (with fresh authentication) and
/// executed. Guide never sends; Assist sends read-only, low and medium
/// steps; a destructive step goes out only with the hub's opt-in and an
/// agent that did not report its own opt-in off.
#[test]
fn mode_risk_opt_in_matrix() {
    let steps = |risk: RiskClass| match risk {
        RiskClass::ReadOnly => vec![act(
            "pve.guest_config",
            json!({"node": "pve1", "vmid": 101}),
        )],
        RiskClass::Low => vec![act(
            "pve.snapshot_create",
            json!({"node": "pve1", "vmid": 101, "name": "before_fix"}),
        )],
        RiskClass::Medium => vec![act(
            "pve.shutdown",
            json!({"node": "pve1", "vmid": 101, "timeout_s": 60}),
        )],
        RiskClass::Destructive => stop_plan(),
    };
    let mut cases = 0;
    for mode in [Mode::Guide, Mode::Assist] {
        for risk in [
            RiskClass::ReadOnly,
            RiskClass::Low,
            RiskClass::Medium,
            RiskClass::Destructive,
        ] {
            for hub_opt_in in [false, true] {
                for agent in [None, Some(false), Some(true)] {
                    cases += 1;
                    let mut i = inv();
                    i.nodes.get_mut("pve1").unwrap().agent_allows_destructive = agent;
                    let mut run = make_run(
                        mode,
                        |c| {
                            if hub_opt_in {
                                c.destructive_opt_in.push(OptIn {
                                    actions: vec![ActionId::PveStop],
                                    scope: Scope::Any,
                                });
                            }
                        },
                        &i,
                        steps(risk),
                    );
                    let step = &run.plan().steps[0];
                    assert_eq!(step.risk, Some(risk));
                    assert_eq!(step.destructive, risk == RiskClass::Destructive);
                    let policy_refuses =
                        risk == RiskClass::Destructive && (!hub_opt_in || agent == Some(false));
                    assert_eq!(
                        step.refused.is_some(),
                        policy_refuses,
                        "{mode:?} {risk:?} hub={hub_opt_in} agent={agent:?}: {:?}",
                        step.refused
                    );
                    let mut out =
                        run.handle(1, to_event(&run, Ev::Approve("alice", "admin", 0, true)));
                    out.extend(run.handle(2, to_event(&run, Ev::Exec("admin", 0))));
                    let sent = out.iter().any(|a| matches!(a, Action::SendCommand(_)));
                    let expect_sent = mode == Mode::Assist && !policy_refuses;
                    assert_eq!(
                        sent,
                        expect_sent,
                        "{mode:?} {risk:?} hub={hub_opt_in} agent={agent:?}: {:#?}",
                        brief(&out)
                    );
                    if !expect_sent {
                        let why = brief(&out).join(" | ");
                        let want = if mode == Mode::Guide {
                            "Guide mode"
                        } else {
                            "refused by policy"
                        };
                        assert!(why.contains(want), "{mode:?} {risk:?}: {why}");
                    }
                    // A destructive step never goes out without fresh auth.
                    if expect_sent && risk == RiskClass::Destructive {
                        let mut again = make_run(
                            mode,
                            |c| {
                                c.destructive_opt_in.push(OptIn {
                                    actions: vec![ActionId::PveStop],
                                    scope: Scope::Any,
                                })
                            },
                            &i,
                            steps(risk),
                        );
                        let out = again
                            .handle(1, to_event(&again, Ev::Approve("alice", "admin", 0, false)));
                        assert!(brief(&out).join("").contains("fresh re-authentication"));
                    }
                }
            }
        }
    }
    assert_eq!(cases, 48);
}

/// A policy change applies to a running plan: approvals given under the old
/// rules are void, refusals are recomputed (a new deny rule refuses the
/// step; switching to Guide stops execution), and the plan hash stays.
#[test]
fn a_policy_change_voids_approvals_and_recomputes_refusals() {
    let mut run = assist(shutdown_start());
    let hash = run.plan().plan_hash.clone();
    check(
        &mut run,
        vec![(0, Ev::Approve("alice", "admin", 0, false), vec![])],
    );
    assert_eq!(run.approvals().len(), 1);
    let mut cfg = run.config().clone();
    cfg.deny.push(DenyRule {
        scope: Scope::Guest {
            node: "pve1".into(),
            vmid: 101,
        },
        min_risk: RiskClass::Medium,
        reason: "change freeze".into(),
    });
    let rec = run.set_policy(cfg, &inv()).expect("audit record");
    assert_eq!(rec.kind, AuditKind::ApprovalsInvalidated);
    assert!(run.approvals().is_empty());
    assert_eq!(run.plan().plan_hash, hash);
    assert!(
        run.plan().steps[0].refused.is_none(),
        "read-only stays allowed"
    );
    assert!(
        run.plan().steps[1]
            .refused
            .as_deref()
            .unwrap()
            .contains("change freeze")
    );
    check(
        &mut run,
        vec![(
            1,
            Ev::Exec("admin", 0),
            vec!["refused: the step has no valid approval"],
        )],
    );
    let mut guide = run.config().clone();
    guide.mode = Mode::Guide;
    assert!(run.set_policy(guide, &inv()).is_none(), "nothing to void");
    check(
        &mut run,
        vec![(
            2,
            Ev::Approve("alice", "admin", 0, false),
            vec!["~refused: Guide mode"],
        )],
    );
}
