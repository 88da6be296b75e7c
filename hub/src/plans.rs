//! The control plane's shell: remediation plans for incidents, run through
//! the pure policy state machine ([`crate::control::policy::PlanRun`]).
//!
//! [`Control`] owns the runs. Every request (create, approve, reject,
//! execute, mark done) becomes an [`Event`] fed with `now`; the actions the
//! state machine returns are carried out here: audit records are appended
//! to the hash-chained trail, approved steps are signed with the hub's
//! command key and sent to the node's agent over its authenticated link,
//! verification probes are evaluated against a fresh [`Inventory`] built
//! from committed facts, and the run is stored after every event (so it
//! resumes after a restart). A ticker delivers timeouts.
//!
//! The policy comes from `[control]` in `hub.toml`, or from the dashboard's
//! policy page (stored in the `settings` table), and applies to running
//! plans as soon as it changes (their approvals are voided).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wingman_protocol::CommandBody;
use wingman_protocol::pve::PveFact;

use crate::audit::AuditLog;
use crate::control::catalog::{
    ActionCall, ContainerInfo, GuestInfo, Inventory, NodeInfo, ProbeVerdict, RiskClass,
};
use crate::control::plan::{self, Catalog, Plan, PlanSource, Step, ValidationError};
use crate::control::policy::{
    Action, DenyRule, Event, Mode, OptIn, PlanRun, PolicyConfig, RunStatus, Scope, StepState,
};
use crate::pki::HubPki;
use crate::store::{DynStore, PlanRow, SettingRow, StoreError};
use crate::transport::{AgentReply, Registry};

/// The settings key of the dashboard-saved policy.
pub const POLICY_SETTING: &str = "control.policy";

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// `[control]` in `hub.toml` (also what the policy page saves).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// `guide` (default: nothing is executed) or `assist` (approved steps run).
    pub mode: String,
    /// How long an approval stays valid, seconds.
    pub approval_ttl_s: i64,
    /// Roles that may approve, reject, execute and mark steps done.
    pub approver_roles: Vec<String>,
    /// Destructive opt-ins, one rule per entry:
    /// `ACTION[,ACTION...] on SCOPE`, e.g. `docker.remove on node:docker1`.
    pub destructive_opt_in: Vec<String>,
    /// Target rules, one per entry: `RISK on SCOPE: REASON`, refusing actions
    /// at or above `RISK` (`read_only`, `low`, `medium`, `destructive`), e.g.
    /// `low on guest:pve1/100: the NAS VM is never touched`.
    pub deny: Vec<String>,
    /// Lifetime of a signed command, seconds (agents accept at most 600).
    pub command_ttl_s: i64,
    /// How long to wait for the agent's result, seconds.
    pub result_timeout_s: i64,
    /// How long a verification probe may stay pending, seconds.
    pub probe_timeout_s: i64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        let p = PolicyConfig::default();
        Self {
            mode: "guide".into(),
            approval_ttl_s: p.approval_ttl_s,
            approver_roles: p.approver_roles,
            destructive_opt_in: Vec::new(),
            deny: Vec::new(),
            command_ttl_s: p.command_ttl_s,
            result_timeout_s: p.result_timeout_s,
            probe_timeout_s: p.probe_timeout_s,
        }
    }
}

/// Parses a scope: `any`, `node:NAME`, `guest:NODE/VMID`,
/// `container:NODE/NAME` or `tag:TAG`.
pub fn parse_scope(s: &str) -> Result<Scope, String> {
    let s = s.trim();
    if s == "any" {
        return Ok(Scope::Any);
    }
    let (kind, rest) = s.split_once(':').ok_or_else(|| {
        format!("scope {s:?} must be any, node:N, guest:N/ID, container:N/NAME or tag:T")
    })?;
    let nonempty = |v: &str, what: &str| {
        if v.is_empty() {
            Err(format!("scope {s:?} has an empty {what}"))
        } else {
            Ok(v.to_owned())
        }
    };
    match kind {
        "node" => Ok(Scope::Node(nonempty(rest, "node")?)),
        "tag" => Ok(Scope::Tag(nonempty(rest, "tag")?)),
        "guest" => {
            let (node, id) = rest
                .split_once('/')
                .ok_or_else(|| format!("scope {s:?}: write guest:NODE/VMID"))?;
            let vmid = id
                .parse()
                .map_err(|_| format!("scope {s:?}: {id:?} is not a guest id"))?;
            Ok(Scope::Guest {
                node: nonempty(node, "node")?,
                vmid,
            })
        }
        "container" => {
            let (node, name) = rest
                .split_once('/')
                .ok_or_else(|| format!("scope {s:?}: write container:NODE/NAME"))?;
            Ok(Scope::Container {
                node: nonempty(node, "node")?,
                name: nonempty(name, "container")?,
            })
        }
        other => Err(format!(
            "scope kind {other:?} is not any, node, guest, container or tag"
        )),
    }
}

/// Formats a scope in [`parse_scope`]'s syntax.
pub fn format_scope(s: &Scope) -> String {
    match s {
        Scope::Any => "any".into(),
        Scope::Node(n) => format!("node:{n}"),
        Scope::Guest { node, vmid } => format!("guest:{node}/{vmid}"),
        Scope::Container { node, name } => format!("container:{node}/{name}"),
        Scope::Tag(t) => format!("tag:{t}"),
    }
}

fn parse_risk(s: &str) -> Result<RiskClass, String> {
    match s.trim() {
        "read_only" | "read-only" => Ok(RiskClass::ReadOnly),
        "low" => Ok(RiskClass::Low),
        "medium" => Ok(RiskClass::Medium),
        "destructive" => Ok(RiskClass::Destructive),
        other => Err(format!(
            "risk {other:?} is not read_only, low, medium or destructive"
        )),
    }
}

impl ControlConfig {
    /// The policy these settings describe, checked.
    pub fn to_policy(&self) -> Result<PolicyConfig, String> {
        let mode = match self.mode.as_str() {
            "guide" => Mode::Guide,
            "assist" => Mode::Assist,
            other => {
                return Err(format!(
                    "control mode {other:?} is not guide or assist (there is no autonomous mode)"
                ));
            }
        };
        let mut opt_in = Vec::new();
        for rule in &self.destructive_opt_in {
            let (actions, scope) = rule
                .split_once(" on ")
                .ok_or_else(|| format!("opt-in {rule:?}: write ACTION[,ACTION] on SCOPE"))?;
            let mut ids = Vec::new();
            for a in actions.split(',').map(str::trim) {
                let spec = crate::control::catalog::lookup(a)
                    .ok_or_else(|| format!("opt-in {rule:?}: unknown action {a:?}"))?;
                ids.push(spec.id);
            }
            opt_in.push(OptIn {
                actions: ids,
                scope: parse_scope(scope)?,
            });
        }
        let mut deny = Vec::new();
        for rule in &self.deny {
            let (risk, rest) = rule
                .split_once(" on ")
                .ok_or_else(|| format!("rule {rule:?}: write RISK on SCOPE: REASON"))?;
            let (scope, reason) = rest
                .split_once(':')
                .and_then(|(k, r)| {
                    // `guest:pve1/100: reason` — the scope holds one colon.
                    if k == "any" {
                        return Some((k.to_owned(), r.trim().to_owned()));
                    }
                    let (v, reason) = r.split_once(':')?;
                    Some((format!("{k}:{v}"), reason.trim().to_owned()))
                })
                .ok_or_else(|| format!("rule {rule:?}: write RISK on SCOPE: REASON"))?;
            if reason.is_empty() {
                return Err(format!("rule {rule:?} needs a reason after the scope"));
            }
            deny.push(DenyRule {
                scope: parse_scope(&scope)?,
                min_risk: parse_risk(risk)?,
                reason,
            });
        }
        let policy = PolicyConfig {
            mode,
            approval_ttl_s: self.approval_ttl_s,
            approver_roles: self.approver_roles.clone(),
            destructive_opt_in: opt_in,
            deny,
            command_ttl_s: self.command_ttl_s,
            result_timeout_s: self.result_timeout_s,
            probe_timeout_s: self.probe_timeout_s,
        };
        policy.check().map_err(|e| e.to_string())?;
        Ok(policy)
    }
}

// ---------------------------------------------------------------------------
// Inventory
// ---------------------------------------------------------------------------

/// What the hub knows now, from every non-revoked agent's latest facts:
/// node presence and cluster, PVE guests (newest fact per guest), and the
/// containers of the newest Docker inventory. `taken_at` is the newest of
/// those facts (Unix seconds), so probes wait for facts newer than the action.
pub async fn build_inventory(store: &DynStore) -> Result<Inventory, StoreError> {
    let mut inv = Inventory {
        taken_at: 0,
        nodes: BTreeMap::new(),
    };
    for a in store.list_agents().await? {
        if a.revoked_at.is_some() {
            continue;
        }
        let mut node = NodeInfo {
            online: a.online,
            cluster: None,
            tags: vec![format!("kind:{}", a.kind)],
            agent_allows_destructive: None,
            guests: BTreeMap::new(),
            containers: BTreeMap::new(),
        };
        for f in store.latest_facts(&a.id).await? {
            match f.kind.as_str() {
                "pve_cluster" => {
                    if let Ok(PveFact::Cluster(c)) = serde_json::from_str::<PveFact>(&f.body) {
                        node.cluster = c.cluster_name;
                    }
                }
                "docker_inventory" => {
                    let Ok(di) = serde_json::from_str::<wingman_protocol::docker::ContainerInventory>(
                        &f.body,
                    ) else {
                        continue;
                    };
                    inv.taken_at = inv.taken_at.max(f.observed_at / 1000);
                    for c in di.containers {
                        let mut tags = Vec::new();
                        if let Some(p) = &c.compose_project {
                            tags.push(format!("compose:{p}"));
                        }
                        node.containers.insert(
                            c.name.clone(),
                            ContainerInfo {
                                id: c.id,
                                state: c.state,
                                started_at: c.started_ms.map(|ms| ms / 1000),
                                tags,
                            },
                        );
                    }
                }
                "agent_policy" => {
                    // Refused early only when the agent refuses every
                    // destructive action; otherwise the agent decides.
                    if let Ok(p) = serde_json::from_str::<wingman_protocol::AgentPolicy>(&f.body) {
                        node.agent_allows_destructive =
                            Some(p.docker_allow_destructive || p.pve_allow_destructive);
                    }
                }
                _ => {}
            }
        }
        for (observed_at, body) in store.recent_facts(&a.id, "pve_guest", 1000).await? {
            let Ok(PveFact::Guest(g)) = serde_json::from_str::<PveFact>(&body) else {
                continue;
            };
            inv.taken_at = inv.taken_at.max(observed_at / 1000);
            node.guests.entry(g.vmid).or_insert(GuestInfo {
                kind: g.kind,
                name: g.name,
                status: g.status,
                ha_managed: g.ha_state.is_some(),
                lock: g.lock,
                template: g.template,
                tags: g.tags,
                snapshots: Vec::new(),
                last_backup_at: None,
            });
        }
        // Snapshot names: the newest report per guest.
        let mut seen = std::collections::BTreeSet::new();
        for (_, body) in store.recent_facts(&a.id, "pve_snapshots", 1000).await? {
            let Ok(PveFact::Snapshots(s)) = serde_json::from_str::<PveFact>(&body) else {
                continue;
            };
            if seen.insert(s.vmid)
                && let Some(g) = node.guests.get_mut(&s.vmid)
            {
                g.snapshots = s.names;
            }
        }
        inv.nodes.insert(a.hostname.clone(), node);
    }
    Ok(inv)
}

// ---------------------------------------------------------------------------
// Plans from skills
// ---------------------------------------------------------------------------

/// What an incident is about, for filling a skill's placeholders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanSubject {
    /// Node name.
    pub node: Option<String>,
    /// Container name.
    pub container: Option<String>,
    /// Guest id.
    pub vmid: Option<u32>,
}

impl PlanSubject {
    /// The incident's first container, guest and node.
    pub fn of(inc: &crate::engine::Incident) -> Self {
        let container = inc.containers.first();
        let guest = inc.guests.first();
        Self {
            node: container
                .map(|c| c.node.clone())
                .or_else(|| guest.map(|g| g.node.clone()))
                .or_else(|| inc.nodes.first().cloned()),
            container: container.map(|c| c.container.clone()),
            vmid: guest.map(|g| g.guest_id),
        }
    }
}

/// A `### Step N: ...` section of a skill: its title and the commands of
/// its first code block.
fn skill_sections(body: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut in_steps = false;
    let mut in_code = false;
    let mut code_done = false;
    for line in body.lines() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix("## ") {
            in_steps = h.trim().eq_ignore_ascii_case("steps");
            continue;
        }
        if !in_steps {
            continue;
        }
        if let Some(h) = t.strip_prefix("### ") {
            out.push((h.trim().to_owned(), Vec::new()));
            in_code = false;
            code_done = false;
            continue;
        }
        if t.starts_with("```") {
            if in_code {
                in_code = false;
                code_done = true;
            } else if !code_done {
                in_code = t == "```" || t == "```sh" || t == "```bash" || t == "```shell";
            }
            continue;
        }
        if in_code
            && let Some((_, cmds)) = out.last_mut()
            && !t.is_empty()
            && !t.starts_with('#')
        {
            cmds.push(t.to_owned());
        }
    }
    out.truncate(plan::MAX_STEPS);
    out
}

/// Replaces the skills' placeholder words with the incident's subject.
fn fill(cmd: &str, subject: &PlanSubject) -> String {
    let mut words: Vec<String> = Vec::new();
    for w in cmd.split(' ') {
        let r = match w {
            "CONTAINER" => subject.container.clone(),
            "VMID" | "CTID" | "ID" => subject.vmid.map(|v| v.to_string()),
            "NODE" => subject.node.clone(),
            _ => None,
        };
        words.push(r.unwrap_or_else(|| w.to_owned()));
    }
    words.join(" ")
}

/// Maps one command line onto a catalog action, where one matches exactly.
fn catalog_step(cmd: &str, subject: &PlanSubject, why: &str) -> Option<Step> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let node = subject.node.clone()?;
    let (action, params) = match words.as_slice() {
        [engine, verb, container] if matches!(*engine, "docker" | "podman") => {
            let action = match *verb {
                "start" => "docker.start",
                "stop" => "docker.stop",
                "restart" => "docker.restart",
                _ => return None,
            };
            let mut p = json!({"node": node, "container": container});
            if action != "docker.start" {
                p["timeout_s"] = Value::Null;
            }
            (action, p)
        }
        [tool, verb, id] if matches!(*tool, "qm" | "pct") => {
            let action = match *verb {
                "start" => "pve.start",
                "shutdown" => "pve.shutdown",
                "stop" => "pve.stop",
                "reboot" => "pve.reboot",
                "suspend" => "pve.suspend",
                "resume" => "pve.resume",
                _ => return None,
            };
            let vmid: u32 = id.parse().ok()?;
            let mut p = json!({"node": node, "vmid": vmid});
            if action == "pve.shutdown" {
                p["timeout_s"] = Value::Null;
            }
            (action, p)
        }
        _ => return None,
    };
    // Only when the catalog accepts these parameters (else a manual step).
    let spec = crate::control::catalog::lookup(action)?;
    let names: Vec<&str> = spec.params.iter().map(|p| p.name).collect();
    let keys_ok = params
        .as_object()
        .is_some_and(|o| o.keys().all(|k| names.contains(&k.as_str())));
    keys_ok.then(|| Step::Action {
        action: action.to_owned(),
        params,
        why: why.to_owned(),
    })
}

/// A plan from a skill: each `### Step` becomes one step. A step whose code
/// block is a single command matching a catalog action (`docker restart
/// CONTAINER`, `qm start VMID`, ...) becomes that action with the incident's
/// subject filled in; every other step is manual, with its commands.
pub fn plan_from_skill(
    skill: &crate::skills::Skill,
    id: &str,
    incident_id: &str,
    subject: &PlanSubject,
) -> Plan {
    let mut steps = Vec::new();
    for (title, cmds) in skill_sections(&skill.body) {
        let filled: Vec<String> = cmds.iter().map(|c| fill(c, subject)).collect();
        let mapped = match filled.as_slice() {
            [one] if skill.tier >= 2 => catalog_step(one, subject, &title),
            _ => None,
        };
        steps.push(mapped.unwrap_or_else(|| Step::Manual {
            text: title.chars().take(1_000).collect(),
            node: subject.node.clone(),
            command: (!filled.is_empty()).then(|| filled.join("\n").chars().take(4_000).collect()),
        }));
    }
    if steps.is_empty() {
        steps.push(Step::Manual {
            text: format!("Follow the skill {} by hand", skill.id),
            node: subject.node.clone(),
            command: None,
        });
    }
    Plan {
        id: id.to_owned(),
        incident_id: incident_id.to_owned(),
        skill_id: Some(skill.id.clone()),
        source: PlanSource::Skill,
        title: skill.title.chars().take(200).collect(),
        steps,
    }
}

// ---------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------

/// One step as pages and the API show it.
#[derive(Debug, Clone, Serialize)]
pub struct StepView {
    /// Zero-based index.
    pub index: usize,
    /// Catalog action name, or `manual`.
    pub action: String,
    /// `read_only`, `low`, `medium`, `destructive`, or `manual`.
    pub risk: String,
    /// Flagged destructive.
    pub destructive: bool,
    /// Why policy refuses it, if it does.
    pub refused: Option<String>,
    /// Notes (HA routing, downtime, ...).
    pub notes: Vec<String>,
    /// Expected effect.
    pub effect: String,
    /// What to do (Guide checklist text).
    pub text: String,
    /// Where to run the command.
    pub node: Option<String>,
    /// The exact command.
    pub command: Option<String>,
    /// `pending`, `sent`, `probing`, `verified`, `done` or `failed`.
    pub state: String,
    /// Failure reason.
    pub failure: Option<String>,
    /// The step hash an approval binds to.
    pub step_hash: String,
    /// Who approved it and until when (Unix seconds).
    pub approved_by: Option<String>,
    /// Approval expiry, Unix seconds.
    pub approval_expires_at: Option<i64>,
    /// How to undo it.
    pub rollback: Option<String>,
    /// The verification, one line.
    pub verification: Option<String>,
    /// The agents can execute it (every catalog action).
    pub executable: bool,
    /// What the agent answered (a diagnostic's summary, an action's outcome).
    pub result: Option<String>,
}

/// A plan as pages and the API show it.
#[derive(Debug, Clone, Serialize)]
pub struct PlanView {
    /// Plan id.
    pub id: String,
    /// Incident.
    pub incident_id: String,
    /// Skill it came from.
    pub skill_id: Option<String>,
    /// `skill`, `model` or `operator`.
    pub source: String,
    /// Title.
    pub title: String,
    /// `active`, `stopped`, `superseded` or `completed`.
    pub status: String,
    /// Why it stopped.
    pub status_detail: Option<String>,
    /// `guide` or `assist`.
    pub mode: String,
    /// The plan hash approvals bind to.
    pub plan_hash: String,
    /// Who proposed it.
    pub created_by: String,
    /// Unix ms.
    pub created_at: i64,
    /// Steps.
    pub steps: Vec<StepView>,
    /// The steps in the operator plan format, to revise them.
    pub steps_json: String,
}

fn status_str(s: &RunStatus) -> (&'static str, Option<String>) {
    match s {
        RunStatus::Active => ("active", None),
        RunStatus::Stopped(r) => ("stopped", Some(r.clone())),
        RunStatus::Superseded(h) => (
            "superseded",
            Some(format!(
                "edited: replaced by a new version (plan hash {}); its approvals are void",
                h.get(..12).unwrap_or(h)
            )),
        ),
        RunStatus::Completed => ("completed", None),
    }
}

fn source_str(s: PlanSource) -> &'static str {
    match s {
        PlanSource::Skill => "skill",
        PlanSource::Model => "model",
        PlanSource::Operator => "operator",
    }
}

/// What an agent executes for a call: container and guest actions.
fn command_body(call: &ActionCall) -> Option<CommandBody> {
    use wingman_protocol::Diagnostic as D;
    Some(match call {
        ActionCall::Docker { action, .. } => CommandBody::Docker(action.clone()),
        ActionCall::Pve(a) => CommandBody::Pve(a.clone()),
        ActionCall::DockerInspect { container, .. } => CommandBody::Diagnose(D::DockerInspect {
            container: container.clone(),
        }),
        ActionCall::DockerLogsSummary {
            container, since_s, ..
        } => CommandBody::Diagnose(D::DockerLogs {
            container: container.clone(),
            since_s: *since_s,
        }),
        ActionCall::PveTaskLog { upid, .. } => {
            CommandBody::Diagnose(D::PveTaskLog { upid: upid.clone() })
        }
        ActionCall::PveGuestConfig { guest } => CommandBody::Diagnose(D::PveGuestConfig {
            guest: guest.clone(),
        }),
        ActionCall::UnitStatus { unit, .. } => {
            CommandBody::Diagnose(D::UnitStatus { unit: unit.clone() })
        }
    })
}

/// A plan in the operator format (`{"title", "steps": [...]}`).
pub fn operator_json(plan: &Plan) -> String {
    let steps: Vec<Value> = plan
        .steps
        .iter()
        .map(|s| match s {
            Step::Action {
                action,
                params,
                why,
            } => json!({"action": action, "params": params, "why": why}),
            Step::Manual {
                text,
                node,
                command,
            } => json!({"manual": text, "node": node, "command": command}),
        })
        .collect();
    serde_json::to_string_pretty(&json!({"title": plan.title, "steps": steps})).unwrap_or_default()
}

/// Builds the view of a run.
pub fn view(row: &PlanRow, run: &PlanRun) -> PlanView {
    let vp = run.plan();
    let (status, status_detail) = status_str(run.status());
    let steps = vp
        .steps
        .iter()
        .map(|s| {
            let (state, failure) = match run.steps().get(s.index) {
                Some(StepState::Pending) | None => ("pending", None),
                Some(StepState::Sent { .. }) => ("sent", None),
                Some(StepState::Probing { .. }) => ("probing", None),
                Some(StepState::Verified) => ("verified", None),
                Some(StepState::Done) => ("done", None),
                Some(StepState::Failed(r)) => ("failed", Some(r.clone())),
            };
            let approval = run.approvals().get(&s.index);
            StepView {
                index: s.index,
                action: s
                    .call
                    .as_ref()
                    .map_or_else(|| "manual".into(), |c| c.spec().name.to_owned()),
                risk: s
                    .risk
                    .map_or_else(|| "manual".into(), |r| r.as_str().to_owned()),
                destructive: s.destructive,
                refused: s.refused.clone(),
                notes: s.notes.clone(),
                effect: s.effect.clone(),
                text: s.checklist.text.clone(),
                node: s.checklist.node.clone(),
                command: s.checklist.command.clone(),
                state: state.into(),
                failure,
                step_hash: s.step_hash.clone(),
                approved_by: approval.map(|a| a.user.clone()),
                approval_expires_at: approval.map(|a| a.expires_at),
                rollback: s.rollback.as_ref().map(|r| r.text.clone()),
                verification: s.call.as_ref().map(|c| c.spec().verification.to_owned()),
                executable: s.call.as_ref().is_some_and(|c| command_body(c).is_some()),
                result: run.results().get(&s.index).cloned(),
            }
        })
        .collect();
    PlanView {
        id: row.id.clone(),
        incident_id: row.incident_id.clone(),
        skill_id: vp.plan.skill_id.clone(),
        source: row.source.clone(),
        title: vp.plan.title.clone(),
        status: status.into(),
        status_detail,
        mode: match run.config().mode {
            Mode::Guide => "guide".into(),
            Mode::Assist => "assist".into(),
        },
        plan_hash: vp.plan_hash.clone(),
        created_by: row.created_by.clone(),
        created_at: row.created_at,
        steps,
        steps_json: operator_json(&vp.plan),
    }
}

// ---------------------------------------------------------------------------
// The shell
// ---------------------------------------------------------------------------

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No such plan.
    #[error("no such plan")]
    NotFound,
    /// The plan does not validate.
    #[error("the plan is invalid: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<ValidationError>),
    /// The state machine refused the request.
    #[error("{0}")]
    Refused(String),
    /// Bad input.
    #[error("{0}")]
    BadRequest(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A user request on a plan.
#[derive(Debug, Clone)]
pub struct Requester {
    /// User name.
    pub user: String,
    /// Role.
    pub role: String,
}

struct Entry {
    row: PlanRow,
    run: PlanRun,
}

/// The control plane's runtime.
pub struct Control {
    store: DynStore,
    audit: Arc<AuditLog>,
    registry: Arc<Registry>,
    pki: Arc<HubPki>,
    base: ControlConfig,
    policy: std::sync::RwLock<(ControlConfig, PolicyConfig)>,
    runs: Mutex<BTreeMap<String, Entry>>,
    /// Probe poll interval.
    probe_every: Duration,
    /// Agent results and probe verdicts back to [`Control::run`] (bounded;
    /// senders wait when it is full: a result is never dropped).
    results_tx: tokio::sync::mpsc::Sender<(String, Event)>,
    results_rx: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<(String, Event)>>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

fn now_s() -> i64 {
    wingman_agent::now_ms() / 1000
}

impl Control {
    /// Opens the control plane: the policy (`[control]`, overridden by the
    /// dashboard's saved one) and the active plans.
    pub async fn open(
        store: DynStore,
        audit: Arc<AuditLog>,
        registry: Arc<Registry>,
        pki: Arc<HubPki>,
        base: ControlConfig,
    ) -> Result<Arc<Self>, String> {
        let base_policy = base.to_policy().map_err(|e| format!("[control]: {e}"))?;
        let mut effective = (base.clone(), base_policy);
        if let Some(row) = store
            .get_setting(POLICY_SETTING)
            .await
            .map_err(|e| e.to_string())?
        {
            match serde_json::from_str::<ControlConfig>(&row.value)
                .map_err(|e| e.to_string())
                .and_then(|c| c.to_policy().map(|p| (c, p)))
            {
                Ok(saved) => effective = saved,
                Err(error) => {
                    warn!(%error, "the saved control policy is invalid; using [control] from hub.toml");
                }
            }
        }
        let mut runs = BTreeMap::new();
        for row in store
            .plans_with_status("active")
            .await
            .map_err(|e| e.to_string())?
        {
            match serde_json::from_str::<PlanRun>(&row.run) {
                Ok(run) => {
                    runs.insert(row.id.clone(), Entry { row, run });
                }
                Err(error) => warn!(plan = %row.id, %error, "cannot resume a stored plan"),
            }
        }
        let (results_tx, results_rx) = tokio::sync::mpsc::channel(256);
        Ok(Arc::new(Self {
            results_tx,
            results_rx: std::sync::Mutex::new(Some(results_rx)),
            store,
            audit,
            registry,
            pki,
            base,
            policy: std::sync::RwLock::new(effective),
            runs: Mutex::new(runs),
            probe_every: Duration::from_millis(500),
        }))
    }

    /// The effective policy and the settings it came from.
    pub fn policy(&self) -> (ControlConfig, PolicyConfig) {
        self.policy
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|_| (self.base.clone(), PolicyConfig::default()))
    }

    /// Saves a new policy (dashboard or API): checked, stored, applied to
    /// active plans (their approvals are voided), and audited.
    pub async fn set_policy(&self, cfg: ControlConfig, by: &str) -> Result<(), ControlError> {
        let policy = cfg.to_policy().map_err(ControlError::BadRequest)?;
        let value =
            serde_json::to_string(&cfg).map_err(|e| ControlError::BadRequest(e.to_string()))?;
        self.store
            .put_setting(&SettingRow {
                key: POLICY_SETTING.into(),
                value,
                updated_at: wingman_agent::now_ms(),
                updated_by: by.to_owned(),
            })
            .await?;
        if let Ok(mut p) = self.policy.write() {
            *p = (cfg.clone(), policy.clone());
        }
        let _ = self
            .audit
            .record(
                &format!("user:{by}"),
                crate::control::audit::AuditKind::ControlPolicyChanged,
                None,
                json!({"policy": cfg}),
            )
            .await;
        let inv = build_inventory(&self.store).await?;
        let mut runs = self.runs.lock().await;
        for e in runs.values_mut() {
            if let Some(rec) = e.run.set_policy(policy.clone(), &inv) {
                let _ = self
                    .audit
                    .record_plan(
                        &rec.actor,
                        rec.kind,
                        Some(&e.row.incident_id),
                        Some(&e.row.id),
                        rec.detail,
                    )
                    .await;
            }
            self.persist(e).await?;
        }
        info!(by, mode = %cfg.mode, "control policy changed");
        Ok(())
    }

    async fn persist(&self, e: &mut Entry) -> Result<(), StoreError> {
        e.row.status = status_str(e.run.status()).0.to_owned();
        e.row.run =
            serde_json::to_string(&e.run).map_err(|err| StoreError::Backend(err.to_string()))?;
        e.row.updated_at = wingman_agent::now_ms();
        self.store.put_plan(&e.row).await
    }

    /// Validates and stores a proposed plan. Invalid plans are audited and
    /// refused with every problem.
    pub async fn create(
        self: &Arc<Self>,
        plan: Plan,
        created_by: &str,
    ) -> Result<PlanView, ControlError> {
        let (_, policy) = self.policy();
        let inv = build_inventory(&self.store).await?;
        let incident = Some(plan.incident_id.as_str());
        let actor = created_by.to_owned();
        let _ = self
            .audit
            .record_plan(
                &actor,
                crate::control::audit::AuditKind::PlanCreated,
                incident,
                Some(&plan.id),
                json!({
                    "source": source_str(plan.source),
                    "skill": plan.skill_id,
                    "title": plan.title,
                    "plan_hash": plan.hash(),
                    "steps": plan.steps.len(),
                }),
            )
            .await;
        let validated = match plan::validate(&plan, &Catalog::builtin(), &inv, &policy) {
            Ok(v) => v,
            Err(errors) => {
                let _ = self
                    .audit
                    .record_plan(
                        "hub",
                        crate::control::audit::AuditKind::PlanInvalid,
                        incident,
                        Some(&plan.id),
                        json!({"errors": errors.iter().map(ToString::to_string).collect::<Vec<_>>()}),
                    )
                    .await;
                return Err(ControlError::Invalid(errors));
            }
        };
        let _ = self
            .audit
            .record_plan(
                "hub",
                crate::control::audit::AuditKind::PlanValidated,
                incident,
                Some(&plan.id),
                json!({
                    "plan_hash": validated.plan_hash,
                    "destructive_steps": validated.steps.iter().filter(|s| s.destructive).count(),
                    "refused_steps": validated.steps.iter().filter(|s| s.refused.is_some()).count(),
                }),
            )
            .await;
        let now = wingman_agent::now_ms();
        let run = PlanRun::new(policy, validated);
        let mut entry = Entry {
            row: PlanRow {
                id: plan.id.clone(),
                incident_id: plan.incident_id.clone(),
                source: source_str(plan.source).into(),
                status: "active".into(),
                created_by: created_by.to_owned(),
                run: String::new(),
                created_at: now,
                updated_at: now,
            },
            run,
        };
        self.persist(&mut entry).await?;
        let v = view(&entry.row, &entry.run);
        info!(plan = %plan.id, incident = %plan.incident_id, steps = plan.steps.len(), "plan created");
        self.runs.lock().await.insert(plan.id.clone(), entry);
        Ok(v)
    }

    /// Revises an active plan: the new version (`title`, `steps`) is
    /// validated and stored as a new plan; the old run is superseded, which
    /// voids every approval given for it (they were bound to its hashes).
    pub async fn revise(
        self: &Arc<Self>,
        id: &str,
        title: Option<String>,
        steps: Vec<Step>,
        by: &str,
    ) -> Result<PlanView, ControlError> {
        let old = {
            let runs = self.runs.lock().await;
            match runs.get(id) {
                Some(e) => e.run.plan().plan.clone(),
                None => {
                    drop(runs);
                    let v = self.get(id).await?;
                    return Err(ControlError::Refused(format!(
                        "only an active plan can be revised; this one is {}",
                        v.status
                    )));
                }
            }
        };
        let new = Plan {
            id: format!("plan-{}", uuid::Uuid::now_v7().simple()),
            incident_id: old.incident_id.clone(),
            skill_id: old.skill_id.clone(),
            source: PlanSource::Operator,
            title: title.unwrap_or_else(|| old.title.clone()),
            steps,
        };
        if new.title == old.title && new.steps == old.steps {
            return Err(ControlError::BadRequest(
                "the revision changes nothing".into(),
            ));
        }
        let view = self.create(new, by).await?;
        let _ = self
            .feed(
                id,
                Event::PlanEdited {
                    new_plan_hash: view.plan_hash.clone(),
                },
            )
            .await;
        Ok(view)
    }

    /// One plan's view (active plans from memory, others from the store).
    pub async fn get(&self, id: &str) -> Result<PlanView, ControlError> {
        if let Some(e) = self.runs.lock().await.get(id) {
            return Ok(view(&e.row, &e.run));
        }
        let row = self.store.plan(id).await?.ok_or(ControlError::NotFound)?;
        let run: PlanRun = serde_json::from_str(&row.run)
            .map_err(|e| ControlError::Store(StoreError::Backend(e.to_string())))?;
        Ok(view(&row, &run))
    }

    /// The plans of an incident.
    pub async fn for_incident(&self, incident_id: &str) -> Result<Vec<PlanView>, ControlError> {
        let rows = self.store.plans_for_incident(incident_id).await?;
        let runs = self.runs.lock().await;
        Ok(rows
            .iter()
            .filter_map(|row| match runs.get(&row.id) {
                Some(e) => Some(view(&e.row, &e.run)),
                None => serde_json::from_str::<PlanRun>(&row.run)
                    .ok()
                    .map(|run| view(row, &run)),
            })
            .collect())
    }

    /// Approves step `step` of plan `id`, as shown with `plan_hash` and
    /// `step_hash`. `fresh_auth`: the user re-entered their password.
    pub async fn approve(
        self: &Arc<Self>,
        id: &str,
        who: &Requester,
        step: usize,
        plan_hash: &str,
        step_hash: &str,
        fresh_auth: bool,
    ) -> Result<PlanView, ControlError> {
        self.feed(
            id,
            Event::ApprovalGiven {
                user: who.user.clone(),
                role: who.role.clone(),
                step_index: step,
                plan_hash: plan_hash.to_owned(),
                step_hash: step_hash.to_owned(),
                fresh_auth,
            },
        )
        .await
    }

    /// Rejects the plan (or one step of it); the run stops.
    pub async fn reject(
        self: &Arc<Self>,
        id: &str,
        who: &Requester,
        step: Option<usize>,
        reason: &str,
    ) -> Result<PlanView, ControlError> {
        let reason = reason.trim();
        let reason = if reason.is_empty() {
            "no reason given"
        } else {
            reason
        };
        self.feed(
            id,
            Event::Rejected {
                user: who.user.clone(),
                role: who.role.clone(),
                step_index: step,
                reason: reason.chars().take(500).collect(),
            },
        )
        .await
    }

    /// Executes an approved step: preconditions are re-checked against the
    /// current inventory and policy first.
    pub async fn execute(
        self: &Arc<Self>,
        id: &str,
        who: &Requester,
        step: usize,
    ) -> Result<PlanView, ControlError> {
        let inv = build_inventory(&self.store).await?;
        let (_, policy) = self.policy();
        // A plan that is not active has no run here; `feed` says why.
        let precheck = self
            .runs
            .lock()
            .await
            .get(id)
            .map(|e| e.run.plan().precheck(step, &inv, &policy))
            .unwrap_or_default();
        self.feed(
            id,
            Event::ExecuteRequested {
                user: who.user.clone(),
                role: who.role.clone(),
                step_index: step,
                precheck,
            },
        )
        .await
    }

    /// A user carried out a step by hand (Guide mode, or a manual step).
    pub async fn manual_done(
        self: &Arc<Self>,
        id: &str,
        who: &Requester,
        step: usize,
    ) -> Result<PlanView, ControlError> {
        self.feed(
            id,
            Event::ManualDone {
                user: who.user.clone(),
                role: who.role.clone(),
                step_index: step,
            },
        )
        .await
    }

    /// Feeds one event to an active run, records and carries out what it
    /// returns, and answers with the new view (or the refusal).
    async fn feed(self: &Arc<Self>, id: &str, event: Event) -> Result<PlanView, ControlError> {
        let now = now_s();
        let mut runs = self.runs.lock().await;
        let Some(e) = runs.get_mut(id) else {
            drop(runs);
            // Finished plans are not in memory: answer with why.
            let v = self.get(id).await?;
            return Err(ControlError::Refused(format!(
                "the plan is {}{}",
                v.status,
                v.status_detail
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            )));
        };
        let actions = e.run.handle(now, event);
        let mut refused = None;
        for a in &actions {
            match a {
                Action::Audit(rec) => {
                    let _ = self
                        .audit
                        .record_plan(
                            &rec.actor,
                            rec.kind,
                            Some(&e.row.incident_id),
                            Some(&e.row.id),
                            rec.detail.clone(),
                        )
                        .await;
                }
                Action::Refused { reason, .. } => refused = Some(reason.clone()),
                Action::SendCommand(req) => {
                    let this = Arc::clone(self);
                    let (id, req) = (id.to_owned(), req.clone());
                    tokio::spawn(async move { this.send_step(id, req).await });
                }
                Action::RunProbe {
                    step_index,
                    probe,
                    executed_at,
                    deadline,
                } => {
                    let this = Arc::clone(self);
                    let (id, probe) = (id.to_owned(), probe.clone());
                    let (step, executed_at, deadline) = (*step_index, *executed_at, *deadline);
                    tokio::spawn(async move {
                        this.run_probe(id, step, probe, executed_at, deadline).await;
                    });
                }
                Action::StepVerified { step_index } => {
                    info!(plan = %id, step = step_index + 1, "step verified");
                }
                Action::PlanStopped { reason, .. } => {
                    warn!(plan = %id, %reason, "plan stopped");
                }
                Action::PlanCompleted => info!(plan = %id, "plan completed"),
            }
        }
        self.persist(e).await?;
        let v = view(&e.row, &e.run);
        if e.run.status() != &RunStatus::Active {
            runs.remove(id);
        }
        match refused {
            Some(r) => Err(ControlError::Refused(r)),
            None => Ok(v),
        }
    }

    /// Signs a step's command and sends it to the node's agent; the answer
    /// (or the delivery failure) goes back into the run.
    async fn send_step(self: Arc<Self>, id: String, req: crate::control::policy::CommandRequest) {
        let step_index = req.step_index;
        let result = self.deliver(&req).await;
        let (ok, refused, detail) = match result {
            Ok(r) => r,
            Err(detail) => (false, false, detail),
        };
        let upid = detail
            .split_whitespace()
            .find(|w| {
                w.trim_matches(|c| c == '(' || c == ')')
                    .starts_with("UPID:")
            })
            .map(|w| w.trim_matches(|c| c == '(' || c == ')').to_owned());
        let event = Event::AgentResult {
            step_index,
            ok,
            refused,
            detail,
            upid,
        };
        let _ = self.results_tx.send((id, event)).await;
    }

    async fn deliver(
        &self,
        req: &crate::control::policy::CommandRequest,
    ) -> Result<(bool, bool, String), String> {
        let Some(body) = command_body(&req.call) else {
            return Ok((
                false,
                true,
                format!("{} cannot be sent to an agent", req.call.spec().name),
            ));
        };
        let agents = self.store.list_agents().await.map_err(|e| e.to_string())?;
        let agent = agents
            .iter()
            .filter(|a| a.revoked_at.is_none() && a.hostname == req.node)
            .max_by_key(|a| (a.online, a.last_seen))
            .ok_or_else(|| format!("no enrolled agent reports node {}", req.node))?;
        let hash = |h: &str| {
            wingman_agent::command_sig::hash_from_hex(h).ok_or_else(|| format!("bad hash {h}"))
        };
        let signed = self
            .pki
            .sign_command(wingman_agent::command_sig::CommandToSign {
                body_bytes: wingman_protocol::encode_body(&body).map_err(|e| e.to_string())?,
                audience: agent.id.clone(),
                plan_hash: hash(&req.plan_hash)?,
                step_hash: hash(&req.step_hash)?,
                issued_at: req.issued_at,
                expires_at: req.expires_at,
                nonce: rand::random(),
            });
        let (_, policy) = self.policy();
        let wait = Duration::from_secs(u64::try_from(policy.result_timeout_s).unwrap_or(900));
        match self.registry.send_signed(&agent.id, signed, wait).await {
            Ok(AgentReply::Action(o)) => Ok((o.result.ok, o.result.refused, o.result.detail)),
            Ok(AgentReply::Result(r)) => Ok((r.ok, false, r.detail)),
            Err(e) => Err(format!("not delivered: {e}")),
        }
    }

    /// Evaluates a probe against fresh inventories until it passes, fails
    /// or the deadline passes (then the run's timeout fails the step).
    async fn run_probe(
        self: Arc<Self>,
        id: String,
        step_index: usize,
        probe: crate::control::catalog::Probe,
        executed_at: i64,
        deadline: i64,
    ) {
        loop {
            if now_s() > deadline {
                return;
            }
            let verdict = match build_inventory(&self.store).await {
                Ok(inv) => probe.evaluate(&inv, executed_at),
                Err(e) => ProbeVerdict::Pending(e.to_string()),
            };
            let (verified, detail) = match verdict {
                ProbeVerdict::Passed => (true, "the expected state is visible".to_owned()),
                ProbeVerdict::Failed(d) => (false, d),
                ProbeVerdict::Pending(_) => {
                    tokio::time::sleep(self.probe_every).await;
                    continue;
                }
            };
            let event = Event::ProbeResult {
                step_index,
                verified,
                detail,
            };
            let _ = self.results_tx.send((id, event)).await;
            return;
        }
    }

    /// The control plane's event loop: feeds agent results and probe
    /// verdicts into their runs, and delivers due timeouts (approval expiry,
    /// missing results, probes that never passed) every second, until
    /// `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(mut results) = self.results_rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                r = results.recv() => {
                    if let Some((id, event)) = r {
                        let _ = self.feed(&id, event).await;
                    }
                    continue;
                }
                _ = tick.tick() => {}
            }
            let now = now_s();
            let due: Vec<String> = self
                .runs
                .lock()
                .await
                .iter()
                .filter(|(_, e)| e.run.poll_timeout().is_some_and(|t| t <= now))
                .map(|(id, _)| id.clone())
                .collect();
            for id in due {
                let _ = self.feed(&id, Event::Timeout).await;
            }
        }
    }

    /// What was done about an incident, for its outcome record: one line per
    /// plan and step.
    pub async fn outcome_lines(&self, incident_id: &str) -> Vec<String> {
        let Ok(plans) = self.for_incident(incident_id).await else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for p in plans {
            out.push(format!(
                "plan \"{}\" ({}, {}): {}",
                p.title, p.source, p.mode, p.status
            ));
            for s in p.steps {
                out.push(format!("  step {} {}: {}", s.index + 1, s.action, s.state));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn policy_rules_parse_and_bad_ones_are_named() {
        let cfg = ControlConfig {
            mode: "assist".into(),
            destructive_opt_in: vec![
                "docker.remove on node:docker1".into(),
                "pve.stop, pve.snapshot_rollback on tag:lab".into(),
            ],
            deny: vec![
                "low on guest:pve1/100: the NAS VM is never touched".into(),
                "read_only on any: maintenance freeze".into(),
                "medium on container:docker1/db: the database".into(),
            ],
            ..ControlConfig::default()
        };
        let p = cfg.to_policy().unwrap();
        assert_eq!(p.mode, Mode::Assist);
        assert_eq!(p.destructive_opt_in.len(), 2);
        assert_eq!(p.destructive_opt_in[1].actions.len(), 2);
        assert_eq!(
            p.deny[0].scope,
            Scope::Guest {
                node: "pve1".into(),
                vmid: 100
            }
        );
        assert_eq!(p.deny[0].reason, "the NAS VM is never touched");
        assert_eq!(p.deny[1].scope, Scope::Any);
        assert_eq!(p.deny[1].min_risk, RiskClass::ReadOnly);
        assert_eq!(format_scope(&p.deny[2].scope), "container:docker1/db");
        assert_eq!(
            ControlConfig::default().to_policy().unwrap().mode,
            Mode::Guide
        );

        let bad = |f: &dyn Fn(&mut ControlConfig), want: &str| {
            let mut c = ControlConfig::default();
            f(&mut c);
            let e = c.to_policy().unwrap_err();
            assert!(e.contains(want), "{e} !~ {want}");
        };
        bad(&|c| c.mode = "autonomous".into(), "no autonomous mode");
        bad(
            &|c| c.destructive_opt_in = vec!["docker.remove".into()],
            "ACTION",
        );
        bad(
            &|c| c.destructive_opt_in = vec!["docker.nuke on any".into()],
            "unknown action",
        );
        bad(
            &|c| c.destructive_opt_in = vec!["docker.restart on any".into()],
            "not destructive",
        );
        bad(
            &|c| c.destructive_opt_in = vec!["docker.remove on planet:x".into()],
            "scope kind",
        );
        bad(
            &|c| c.deny = vec!["low on guest:pve1/abc: x".into()],
            "not a guest id",
        );
        bad(&|c| c.deny = vec!["huge on any: x".into()], "risk");
        bad(
            &|c| c.deny = vec!["low on node:pve1".into()],
            "RISK on SCOPE",
        );
        bad(
            &|c| c.deny = vec!["low on node:pve1:  ".into()],
            "needs a reason",
        );
        bad(&|c| c.approval_ttl_s = 1, "approval_ttl_s");
        bad(&|c| c.command_ttl_s = 3600, "command_ttl_s");
        bad(&|c| c.approver_roles.clear(), "role");
    }

    fn skill(tier: u8, body: &str) -> crate::skills::Skill {
        crate::skills::Skill {
            id: "s".into(),
            title: "A skill".into(),
            tier,
            platforms: vec![],
            tags: vec![],
            detectors: vec![],
            keywords: vec![],
            risk: "low".into(),
            privileges: vec![],
            estimated_minutes: 5,
            applies_to: vec![],
            version: 1,
            body: body.into(),
            source: crate::skills::SkillSource::BuiltIn,
        }
    }

    const BODY: &str = "# T\n\n## Diagnosis\n\n```sh\ndocker restart CONTAINER\n```\n\n## Steps\n\n\
### Step 1: Read the logs\n\n```sh\ndocker logs --tail 50 CONTAINER\n```\n\n\
### Step 2: Restart it\n\n```sh\ndocker restart CONTAINER\n```\n\n**Risk:** low\n\n\
### Step 3: Start the guest\n\n```sh\nqm start VMID\n```\n\n\
### Step 4: Two commands\n\n```sh\ndocker stop CONTAINER\ndocker start CONTAINER\n```\n\n## Verification\n\n```sh\ndocker ps\n```\n";

    #[test]
    fn skill_steps_become_catalog_actions_where_they_match() {
        let subject = PlanSubject {
            node: Some("docker1".into()),
            container: Some("web".into()),
            vmid: Some(101),
        };
        let p = plan_from_skill(&skill(2, BODY), "p1", "inc-1", &subject);
        assert_eq!(p.source, PlanSource::Skill);
        assert_eq!(p.skill_id.as_deref(), Some("s"));
        assert_eq!(p.steps.len(), 4, "{:#?}", p.steps);
        match &p.steps[0] {
            Step::Manual {
                text,
                command,
                node,
            } => {
                assert_eq!(text, "Step 1: Read the logs");
                assert_eq!(command.as_deref(), Some("docker logs --tail 50 web"));
                assert_eq!(node.as_deref(), Some("docker1"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p.steps[1],
            Step::Action {
                action: "docker.restart".into(),
                params: json!({"node": "docker1", "container": "web", "timeout_s": null}),
                why: "Step 2: Restart it".into(),
            }
        );
        assert!(matches!(&p.steps[2], Step::Action { action, params, .. }
            if action == "pve.start" && params["vmid"] == 101));
        assert!(matches!(&p.steps[3], Step::Manual { command: Some(c), .. } if c.contains('\n')));
        // Tier 1 skills only read: every step stays manual.
        let p = plan_from_skill(&skill(1, BODY), "p2", "inc-1", &subject);
        assert!(p.steps.iter().all(|s| matches!(s, Step::Manual { .. })));
        // No subject node: no action can be targeted.
        let p = plan_from_skill(&skill(2, BODY), "p3", "inc-1", &PlanSubject::default());
        assert!(p.steps.iter().all(|s| matches!(s, Step::Manual { .. })));
        // The built-in library: a Tier 2 skill's `qm start VMID` step becomes
        // `pve.start` on the incident's guest.
        let lib = crate::skills::load_all(std::path::Path::new("/nonexistent"));
        let oom = lib
            .skills
            .iter()
            .find(|s| s.id == "node-oom-kills")
            .unwrap();
        let pve = PlanSubject {
            node: Some("pve1".into()),
            container: None,
            vmid: Some(104),
        };
        let p = plan_from_skill(oom, "p5", "inc-1", &pve);
        assert!(
            p.steps
                .iter()
                .any(|s| matches!(s, Step::Action { action, params, .. }
                if action == "pve.start" && params["vmid"] == 104 && params["node"] == "pve1")),
            "{:#?}",
            p.steps
        );
        // A skill without steps still gives a plan (one manual step).
        let p = plan_from_skill(&skill(2, "# T\n\nno steps"), "p4", "inc-1", &subject);
        assert_eq!(p.steps.len(), 1);
    }
}
