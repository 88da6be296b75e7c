//! The policy: what may be executed, by whom, and when.
//!
//! [`PolicyConfig`] holds the hub's rules: the mode (Guide, the default,
//! never executes anything; Assist executes a step only after an approval),
//! destructive opt-ins per action and per target or tag, deny rules, the
//! approval TTL and the roles that may approve. There is no autonomous mode.
//!
//! [`PlanRun`] is the pure state machine for one validated plan:
//! [`PlanRun::handle`] takes `now` and an [`Event`] and returns [`Action`]s;
//! [`PlanRun::poll_timeout`] says when to deliver [`Event::Timeout`]. An
//! approval is bound to the plan hash and the step hash, expires, is used
//! once, and any edit of the plan invalidates all of them. Steps run in
//! order; a failure stops the plan and shows the rollback hints.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::audit::AuditKind;
use super::catalog::{ActionCall, ActionId, Inventory, Probe, RiskClass, RollbackHint, Target};
use super::plan::ValidatedPlan;

/// Whether anything is ever executed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Nothing is executed; steps become a checklist with exact commands.
    #[default]
    Guide,
    /// A step executes after an authorized user approved exactly it.
    Assist,
}

/// What a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// Everything.
    Any,
    /// A node and everything on it.
    Node(String),
    /// One guest.
    Guest {
        /// Node.
        node: String,
        /// Guest id.
        vmid: u32,
    },
    /// One container.
    Container {
        /// Node.
        node: String,
        /// Name.
        name: String,
    },
    /// Anything carrying the tag (its own or its node's).
    Tag(String),
}

impl Scope {
    /// Whether the scope covers `target` (with its `tags`).
    pub fn matches(&self, target: &Target, tags: &[String]) -> bool {
        match (self, target) {
            (Self::Any, _) => true,
            (Self::Node(n), t) => t.node() == n,
            (Self::Guest { node, vmid }, Target::Guest { node: n, vmid: v }) => {
                node == n && vmid == v
            }
            (Self::Container { node, name }, Target::Container { node: n, name: c }) => {
                node == n && name == c
            }
            (Self::Tag(tag), _) => tags.contains(tag),
            _ => false,
        }
    }
}

/// Destructive actions allowed on a scope (the hub's half of the opt-in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptIn {
    /// The destructive actions opted into.
    pub actions: Vec<ActionId>,
    /// Where.
    pub scope: Scope,
}

/// Never touch a scope with actions at or above a risk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenyRule {
    /// Where.
    pub scope: Scope,
    /// Lowest risk refused (`Low`: every change; `ReadOnly`: even reads).
    pub min_risk: RiskClass,
    /// Shown with the refusal.
    pub reason: String,
}

/// The hub's control policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyConfig {
    /// Guide (default) or Assist.
    pub mode: Mode,
    /// How long an approval stays valid, seconds.
    pub approval_ttl_s: i64,
    /// Roles that may approve, reject and execute.
    pub approver_roles: Vec<String>,
    /// Destructive opt-ins.
    pub destructive_opt_in: Vec<OptIn>,
    /// Deny rules.
    pub deny: Vec<DenyRule>,
    /// Lifetime of a signed command, seconds.
    pub command_ttl_s: i64,
    /// How long to wait for the agent's result, seconds.
    pub result_timeout_s: i64,
    /// How long a verification probe may stay pending, seconds.
    pub probe_timeout_s: i64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Guide,
            approval_ttl_s: 900,
            approver_roles: vec!["admin".into()],
            destructive_opt_in: Vec::new(),
            deny: Vec::new(),
            command_ttl_s: 120,
            result_timeout_s: 900,
            probe_timeout_s: 300,
        }
    }
}

/// A policy that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyConfigError {
    /// A duration is out of range.
    #[error("{field} must be {min} to {max} seconds")]
    Duration {
        /// Field.
        field: &'static str,
        /// Smallest.
        min: i64,
        /// Largest.
        max: i64,
    },
    /// Nobody could approve anything.
    #[error("approver_roles is empty")]
    NoApprovers,
    /// An opt-in names an action that is not destructive.
    #[error("destructive_opt_in lists {0}, which is not destructive")]
    NotDestructive(&'static str),
}

impl PolicyConfig {
    /// Checks the configuration; the hub refuses to start with a bad one.
    /// `command_ttl_s` must stay within the agents' accepted lifetime
    /// (`command_sig::Limits::max_lifetime_s`, 600 s by default).
    pub fn check(&self) -> Result<(), PolicyConfigError> {
        let range = |field, v: i64, min, max| {
            if (min..=max).contains(&v) {
                Ok(())
            } else {
                Err(PolicyConfigError::Duration { field, min, max })
            }
        };
        range("approval_ttl_s", self.approval_ttl_s, 30, 86_400)?;
        range("command_ttl_s", self.command_ttl_s, 5, 600)?;
        range("result_timeout_s", self.result_timeout_s, 10, 86_400)?;
        range("probe_timeout_s", self.probe_timeout_s, 10, 86_400)?;
        if self.approver_roles.is_empty() {
            return Err(PolicyConfigError::NoApprovers);
        }
        for o in &self.destructive_opt_in {
            for a in &o.actions {
                if super::catalog::spec(*a).risk != RiskClass::Destructive {
                    return Err(PolicyConfigError::NotDestructive(a.as_str()));
                }
            }
        }
        Ok(())
    }

    /// Why policy refuses to execute `call`, or `None` if it may run
    /// (subject to approval). Checks deny rules, the hub's destructive
    /// opt-in and, when the inventory knows it, the agent's own opt-in.
    pub fn refusal(&self, call: &ActionCall, inv: &Inventory) -> Option<String> {
        let target = call.target();
        let tags = inv.tags_of(&target);
        let risk = call.risk();
        if let Some(rule) = self
            .deny
            .iter()
            .find(|r| risk >= r.min_risk && r.scope.matches(&target, &tags))
        {
            return Some(format!("{target} is denied by hub policy: {}", rule.reason));
        }
        if risk == RiskClass::Destructive {
            let id = call.id();
            let opted = self
                .destructive_opt_in
                .iter()
                .any(|o| o.actions.contains(&id) && o.scope.matches(&target, &tags));
            if !opted {
                return Some(format!(
                    "{} is destructive and the hub policy has no opt-in for it on {target}",
                    id.as_str()
                ));
            }
            if inv
                .node(target.node())
                .and_then(|n| n.agent_allows_destructive)
                == Some(false)
            {
                return Some(format!(
                    "the agent on {} does not allow destructive actions (its own config)",
                    target.node()
                ));
            }
        }
        None
    }

    fn authorized(&self, role: &str) -> bool {
        self.approver_roles.iter().any(|r| r == role)
    }
}

/// A recorded approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Who.
    pub user: String,
    /// With which role.
    pub role: String,
    /// When, Unix seconds.
    pub at: i64,
    /// Until when.
    pub expires_at: i64,
    /// The plan hash approved.
    pub plan_hash: String,
    /// The step hash approved.
    pub step_hash: String,
}

/// Inputs to the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A user approved one step of one exact plan.
    ApprovalGiven {
        /// Who.
        user: String,
        /// Their role.
        role: String,
        /// Step.
        step_index: usize,
        /// The plan hash shown to them.
        plan_hash: String,
        /// The step hash shown to them.
        step_hash: String,
        /// Re-authenticated just now (required for destructive steps).
        fresh_auth: bool,
    },
    /// A user rejected the plan (or one step of it); the run stops.
    Rejected {
        /// Who.
        user: String,
        /// Their role.
        role: String,
        /// The step, if a single step was rejected.
        step_index: Option<usize>,
        /// Why.
        reason: String,
    },
    /// The plan was edited; its new hash.
    PlanEdited {
        /// New plan hash.
        new_plan_hash: String,
    },
    /// A user asked to execute an approved step.
    ExecuteRequested {
        /// Who.
        user: String,
        /// Their role.
        role: String,
        /// Step.
        step_index: usize,
        /// [`ValidatedPlan::precheck`] against the current inventory.
        precheck: Vec<String>,
    },
    /// A user says they carried out a step by hand.
    ManualDone {
        /// Who.
        user: String,
        /// Their role.
        role: String,
        /// Step.
        step_index: usize,
    },
    /// The agent's report.
    AgentResult {
        /// Step.
        step_index: usize,
        /// Carried out.
        ok: bool,
        /// Refused by the agent's local policy (not executed).
        refused: bool,
        /// What happened.
        detail: String,
        /// PVE task id, if any.
        upid: Option<String>,
    },
    /// The shell evaluated the step's probe: passed, or failed for good.
    ProbeResult {
        /// Step.
        step_index: usize,
        /// Passed.
        verified: bool,
        /// The probe's detail.
        detail: String,
    },
    /// [`PlanRun::poll_timeout`] was reached.
    Timeout,
}

/// What the hub sends to the agent; the shell adds the command id, nonce
/// and signature (`command_sig::sign`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRequest {
    /// Step.
    pub step_index: usize,
    /// Agent node.
    pub node: String,
    /// What to run.
    pub call: ActionCall,
    /// Bound plan hash.
    pub plan_hash: String,
    /// Bound step hash.
    pub step_hash: String,
    /// Signing time (`now` of the execution request), Unix seconds.
    pub issued_at: i64,
    /// Command expiry, Unix seconds.
    pub expires_at: i64,
}

/// A rollback hint for one step that ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRollback {
    /// Step.
    pub step_index: usize,
    /// The hint.
    pub hint: RollbackHint,
}

/// What the state machine wants to be recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// `user:<name>`, `agent:<node>` or `hub`.
    pub actor: String,
    /// What happened.
    pub kind: AuditKind,
    /// Details (plan hash, step, reasons, ...).
    pub detail: Value,
}

/// Outputs of the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Sign and send this to the agent.
    SendCommand(CommandRequest),
    /// Evaluate the probe against fresh inventories until it passes, fails,
    /// or `deadline`; report with [`Event::ProbeResult`].
    RunProbe {
        /// Step.
        step_index: usize,
        /// The probe.
        probe: Probe,
        /// When the command was sent (pass to `Probe::evaluate`).
        executed_at: i64,
        /// Give up after this.
        deadline: i64,
    },
    /// The step's effect was verified.
    StepVerified {
        /// Step.
        step_index: usize,
    },
    /// The run stopped; show the reason and the rollback hints (the failed
    /// step first, then earlier executed steps in reverse order).
    PlanStopped {
        /// Why.
        reason: String,
        /// Hints.
        rollback: Vec<StepRollback>,
    },
    /// Every step is done.
    PlanCompleted,
    /// A request was refused; show the reason.
    Refused {
        /// Step, if any.
        step_index: Option<usize>,
        /// Why.
        reason: String,
    },
    /// Append to the audit trail.
    Audit(AuditRecord),
}

/// Where a step is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepState {
    /// Not started.
    Pending,
    /// Sent to the agent.
    Sent {
        /// When.
        at: i64,
        /// Result deadline.
        deadline: i64,
    },
    /// Executed; waiting for the probe.
    Probing {
        /// When the command was sent (or the step was done by hand).
        executed_at: i64,
        /// Probe deadline.
        deadline: i64,
    },
    /// Effect verified.
    Verified,
    /// Done by hand, nothing to verify.
    Done,
    /// Failed.
    Failed(String),
}

/// Where the run is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    /// Accepting events.
    Active,
    /// Stopped (failure, rejection).
    Stopped(String),
    /// The plan was edited; this run is over.
    Superseded(String),
    /// All steps done.
    Completed,
}

/// The state machine for one validated plan. Serializable so the shell can
/// store it after every event and resume it after a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanRun {
    config: PolicyConfig,
    plan: ValidatedPlan,
    steps: Vec<StepState>,
    approvals: BTreeMap<usize, Approval>,
    consumed: BTreeSet<String>,
    status: RunStatus,
    /// What the agent answered per step (diagnostic summaries, outcomes).
    #[serde(default)]
    results: BTreeMap<usize, String>,
}

fn user_actor(user: &str) -> String {
    format!("user:{user}")
}

impl PlanRun {
    /// A run for `plan` under `config`.
    pub fn new(config: PolicyConfig, plan: ValidatedPlan) -> Self {
        let steps = vec![StepState::Pending; plan.steps.len()];
        Self {
            config,
            plan,
            steps,
            approvals: BTreeMap::new(),
            consumed: BTreeSet::new(),
            status: RunStatus::Active,
            results: BTreeMap::new(),
        }
    }

    /// The policy the run applies.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// The hub policy changed: the run applies `config` from now on. Each
    /// step's policy refusal is recomputed against `inv` (the plan itself,
    /// and so its hashes, do not change), and pending approvals are void:
    /// they were given under the old rules. Returns the audit record when
    /// any were dropped.
    pub fn set_policy(&mut self, config: PolicyConfig, inv: &Inventory) -> Option<AuditRecord> {
        if self.status != RunStatus::Active {
            return None;
        }
        for s in &mut self.plan.steps {
            if let Some(call) = &s.call {
                s.refused = config.refusal(call, inv);
            }
        }
        self.config = config;
        let dropped = self.approvals.len();
        self.approvals.clear();
        (dropped > 0).then(|| AuditRecord {
            actor: "hub".into(),
            kind: AuditKind::ApprovalsInvalidated,
            detail: json!({
                "reason": "the control policy changed",
                "approvals_dropped": dropped,
                "plan_hash": self.plan.plan_hash,
            }),
        })
    }

    /// The plan.
    pub fn plan(&self) -> &ValidatedPlan {
        &self.plan
    }

    /// Step states.
    pub fn steps(&self) -> &[StepState] {
        &self.steps
    }

    /// What the agent answered per step.
    pub fn results(&self) -> &BTreeMap<usize, String> {
        &self.results
    }

    /// Current approvals by step.
    pub fn approvals(&self) -> &BTreeMap<usize, Approval> {
        &self.approvals
    }

    /// Run status.
    pub fn status(&self) -> &RunStatus {
        &self.status
    }

    /// When [`Event::Timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<i64> {
        if self.status != RunStatus::Active {
            return None;
        }
        let approvals = self.approvals.values().map(|a| a.expires_at);
        let steps = self.steps.iter().filter_map(|s| match s {
            StepState::Sent { deadline, .. } | StepState::Probing { deadline, .. } => {
                Some(*deadline)
            }
            _ => None,
        });
        approvals.chain(steps).min()
    }

    /// Feeds one event at `now`; returns what to do.
    pub fn handle(&mut self, now: i64, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        self.expire(now, &mut out);
        match event {
            Event::ApprovalGiven {
                user,
                role,
                step_index,
                plan_hash,
                step_hash,
                fresh_auth,
            } => self.on_approval(
                now,
                &mut out,
                Approval {
                    user,
                    role,
                    at: now,
                    expires_at: now.saturating_add(self.config.approval_ttl_s),
                    plan_hash,
                    step_hash,
                },
                step_index,
                fresh_auth,
            ),
            Event::Rejected {
                user,
                role,
                step_index,
                reason,
            } => self.on_rejected(&mut out, &user, &role, step_index, &reason),
            Event::PlanEdited { new_plan_hash } => self.on_edited(&mut out, new_plan_hash),
            Event::ExecuteRequested {
                user,
                role,
                step_index,
                precheck,
            } => self.on_execute(now, &mut out, &user, &role, step_index, &precheck),
            Event::ManualDone {
                user,
                role,
                step_index,
            } => self.on_manual_done(now, &mut out, &user, &role, step_index),
            Event::AgentResult {
                step_index,
                ok,
                refused,
                detail,
                upid,
            } => self.on_agent_result(now, &mut out, step_index, ok, refused, detail, upid),
            Event::ProbeResult {
                step_index,
                verified,
                detail,
            } => self.on_probe_result(&mut out, step_index, verified, detail),
            Event::Timeout => {}
        }
        out
    }

    fn audit(&self, out: &mut Vec<Action>, actor: String, kind: AuditKind, mut detail: Value) {
        if let Value::Object(m) = &mut detail {
            m.insert("plan_hash".into(), json!(self.plan.plan_hash));
        }
        out.push(Action::Audit(AuditRecord {
            actor,
            kind,
            detail,
        }));
    }

    fn refuse(
        &self,
        out: &mut Vec<Action>,
        actor: String,
        kind: AuditKind,
        step_index: Option<usize>,
        reason: String,
    ) {
        self.audit(
            out,
            actor,
            kind,
            json!({"step": step_index, "reason": reason}),
        );
        out.push(Action::Refused { step_index, reason });
    }

    fn inactive_reason(&self) -> Option<String> {
        match &self.status {
            RunStatus::Active => None,
            RunStatus::Stopped(r) => Some(format!("the plan is stopped: {r}")),
            RunStatus::Superseded(h) => Some(format!(
                "the plan was edited (now {}); approve the new version",
                short(h)
            )),
            RunStatus::Completed => Some("the plan is complete".into()),
        }
    }

    /// Reasons common to approve and execute, in order.
    fn gate(&self, role: &str, step_index: usize) -> Result<(), String> {
        if let Some(r) = self.inactive_reason() {
            return Err(r);
        }
        if self.config.mode == Mode::Guide {
            return Err(
                "Guide mode: nothing is executed; follow the checklist and mark steps done".into(),
            );
        }
        if !self.config.authorized(role) {
            return Err(format!("role {role:?} may not approve or execute steps"));
        }
        let Some(step) = self.plan.steps.get(step_index) else {
            return Err(format!("the plan has no step {}", step_index + 1));
        };
        if step.call.is_none() {
            return Err("a manual step is not executed; mark it done".into());
        }
        if let Some(r) = &step.refused {
            return Err(format!("refused by policy: {r}"));
        }
        Ok(())
    }

    fn on_approval(
        &mut self,
        now: i64,
        out: &mut Vec<Action>,
        approval: Approval,
        step_index: usize,
        fresh_auth: bool,
    ) {
        let actor = user_actor(&approval.user);
        let check = || -> Result<(), String> {
            self.gate(&approval.role, step_index)?;
            let step = self.plan.steps.get(step_index).ok_or("no such step")?;
            if approval.plan_hash != self.plan.plan_hash {
                return Err(format!(
                    "the approval is for plan {}, the current plan is {}",
                    short(&approval.plan_hash),
                    short(&self.plan.plan_hash)
                ));
            }
            if approval.step_hash != step.step_hash {
                return Err("the approval is for a different version of this step".into());
            }
            if self.consumed.contains(&approval.step_hash)
                || self.steps.get(step_index) != Some(&StepState::Pending)
            {
                return Err("replayed approval: this step was already executed".into());
            }
            if step.destructive && !fresh_auth {
                return Err("destructive steps need a fresh re-authentication".into());
            }
            Ok(())
        };
        match check() {
            Err(reason) => self.refuse(
                out,
                actor,
                AuditKind::ApprovalRefused,
                Some(step_index),
                reason,
            ),
            Ok(()) => {
                self.audit(
                    out,
                    actor,
                    AuditKind::StepApproved,
                    json!({
                        "step": step_index,
                        "step_hash": approval.step_hash,
                        "role": approval.role,
                        "fresh_auth": fresh_auth,
                        "at": now,
                        "expires_at": approval.expires_at,
                    }),
                );
                self.approvals.insert(step_index, approval);
            }
        }
    }

    fn on_rejected(
        &mut self,
        out: &mut Vec<Action>,
        user: &str,
        role: &str,
        step_index: Option<usize>,
        reason: &str,
    ) {
        let actor = user_actor(user);
        if let Some(r) = self.inactive_reason() {
            return self.refuse(out, actor, AuditKind::RejectionRefused, step_index, r);
        }
        if !self.config.authorized(role) {
            return self.refuse(
                out,
                actor,
                AuditKind::RejectionRefused,
                step_index,
                format!("role {role:?} may not reject plans"),
            );
        }
        self.audit(
            out,
            actor,
            AuditKind::PlanRejected,
            json!({"step": step_index, "reason": reason}),
        );
        self.stop(out, format!("rejected by {user}: {reason}"), None);
    }

    fn on_edited(&mut self, out: &mut Vec<Action>, new_hash: String) {
        if new_hash == self.plan.plan_hash || self.status != RunStatus::Active {
            return;
        }
        let dropped = self.approvals.len();
        self.approvals.clear();
        self.audit(
            out,
            "hub".into(),
            AuditKind::ApprovalsInvalidated,
            json!({"new_plan_hash": new_hash, "approvals_dropped": dropped}),
        );
        let rollback = self.executed_hints(None);
        self.status = RunStatus::Superseded(new_hash.clone());
        out.push(Action::PlanStopped {
            reason: format!(
                "the plan was edited (now {}); all approvals are void",
                short(&new_hash)
            ),
            rollback,
        });
    }

    fn next_step(&self) -> Option<usize> {
        self.steps
            .iter()
            .position(|s| !matches!(s, StepState::Verified | StepState::Done))
    }

    fn on_execute(
        &mut self,
        now: i64,
        out: &mut Vec<Action>,
        user: &str,
        role: &str,
        step_index: usize,
        precheck: &[String],
    ) {
        let actor = user_actor(user);
        let check = || -> Result<(String, ActionCall, String), String> {
            self.gate(role, step_index)?;
            let step = self.plan.steps.get(step_index).ok_or("no such step")?;
            let call = step.call.as_ref().ok_or("manual step")?;
            if self.steps.get(step_index) != Some(&StepState::Pending) {
                return Err("this step was already executed".into());
            }
            if let Some(next) = self.next_step()
                && next < step_index
            {
                return Err(format!("step {} must finish first", next + 1));
            }
            let approval = self
                .approvals
                .get(&step_index)
                .ok_or("the step has no valid approval")?;
            if approval.plan_hash != self.plan.plan_hash || approval.step_hash != step.step_hash {
                return Err("the approval does not match the current plan".into());
            }
            if now >= approval.expires_at {
                return Err("the approval expired".into());
            }
            if !precheck.is_empty() {
                return Err(format!("precondition failed: {}", precheck.join("; ")));
            }
            Ok((approval.user.clone(), call.clone(), step.step_hash.clone()))
        };
        match check() {
            Err(reason) => self.refuse(
                out,
                actor,
                AuditKind::ExecutionRefused,
                Some(step_index),
                reason,
            ),
            Ok((approved_by, call, step_hash)) => {
                let req = CommandRequest {
                    step_index,
                    node: call.node().to_owned(),
                    call: call.clone(),
                    plan_hash: self.plan.plan_hash.clone(),
                    step_hash: step_hash.clone(),
                    issued_at: now,
                    expires_at: now.saturating_add(self.config.command_ttl_s),
                };
                self.audit(
                    out,
                    actor,
                    AuditKind::CommandSent,
                    json!({
                        "step": step_index,
                        "step_hash": step_hash,
                        "approved_by": approved_by,
                        "node": req.node,
                        "action": call.id().as_str(),
                        "expires_at": req.expires_at,
                    }),
                );
                self.approvals.remove(&step_index);
                self.consumed.insert(step_hash);
                if let Some(s) = self.steps.get_mut(step_index) {
                    *s = StepState::Sent {
                        at: now,
                        deadline: now.saturating_add(self.config.result_timeout_s),
                    };
                }
                out.push(Action::SendCommand(req));
            }
        }
    }

    fn on_manual_done(
        &mut self,
        now: i64,
        out: &mut Vec<Action>,
        user: &str,
        role: &str,
        step_index: usize,
    ) {
        let actor = user_actor(user);
        let check = || -> Result<Option<Probe>, String> {
            if let Some(r) = self.inactive_reason() {
                return Err(r);
            }
            if !self.config.authorized(role) {
                return Err(format!("role {role:?} may not mark steps done"));
            }
            let step = self
                .plan
                .steps
                .get(step_index)
                .ok_or_else(|| format!("the plan has no step {}", step_index + 1))?;
            if self.steps.get(step_index) != Some(&StepState::Pending) {
                return Err("this step is not pending".into());
            }
            if let Some(next) = self.next_step()
                && next < step_index
            {
                return Err(format!("step {} must finish first", next + 1));
            }
            Ok(step.probe.clone())
        };
        match check() {
            Err(reason) => self.refuse(
                out,
                actor,
                AuditKind::ManualDoneRefused,
                Some(step_index),
                reason,
            ),
            Ok(probe) => {
                self.audit(
                    out,
                    actor,
                    AuditKind::ManualStepDone,
                    json!({"step": step_index}),
                );
                match probe {
                    Some(probe) => self.start_probe(now, out, step_index, probe, now),
                    None => {
                        if let Some(s) = self.steps.get_mut(step_index) {
                            *s = StepState::Done;
                        }
                        self.maybe_complete(out);
                    }
                }
            }
        }
    }

    fn start_probe(
        &mut self,
        now: i64,
        out: &mut Vec<Action>,
        step_index: usize,
        probe: Probe,
        executed_at: i64,
    ) {
        let deadline = now.saturating_add(self.config.probe_timeout_s);
        if let Some(s) = self.steps.get_mut(step_index) {
            *s = StepState::Probing {
                executed_at,
                deadline,
            };
        }
        out.push(Action::RunProbe {
            step_index,
            probe,
            executed_at,
            deadline,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn on_agent_result(
        &mut self,
        now: i64,
        out: &mut Vec<Action>,
        step_index: usize,
        ok: bool,
        refused: bool,
        detail: String,
        upid: Option<String>,
    ) {
        let node = self
            .plan
            .steps
            .get(step_index)
            .and_then(|s| s.call.as_ref())
            .map_or_else(|| "?".to_owned(), |c| c.node().to_owned());
        let actor = format!("agent:{node}");
        let sent_at = match self.steps.get(step_index) {
            Some(StepState::Sent { at, .. }) => *at,
            _ => {
                self.audit(
                    out,
                    actor,
                    AuditKind::UnexpectedEvent,
                    json!({"step": step_index, "event": "agent_result", "ok": ok, "detail": detail}),
                );
                return;
            }
        };
        self.audit(
            out,
            actor,
            AuditKind::StepExecuted,
            json!({"step": step_index, "ok": ok, "refused": refused, "detail": detail, "upid": upid}),
        );
        self.results
            .insert(step_index, detail.chars().take(4_000).collect());
        if refused {
            let reason = format!("refused by the agent on {node}: {detail}");
            out.push(Action::Refused {
                step_index: Some(step_index),
                reason: reason.clone(),
            });
            self.fail(out, step_index, reason);
        } else if !ok {
            self.fail(
                out,
                step_index,
                format!("step {} failed: {detail}", step_index + 1),
            );
        } else {
            match self
                .plan
                .steps
                .get(step_index)
                .and_then(|s| s.probe.clone())
            {
                Some(probe) => self.start_probe(now, out, step_index, probe, sent_at),
                None => self.verified(out, step_index, "read-only; the agent answered"),
            }
        }
    }

    fn on_probe_result(
        &mut self,
        out: &mut Vec<Action>,
        step_index: usize,
        verified: bool,
        detail: String,
    ) {
        if !matches!(self.steps.get(step_index), Some(StepState::Probing { .. })) {
            self.audit(
                out,
                "hub".into(),
                AuditKind::UnexpectedEvent,
                json!({"step": step_index, "event": "probe_result", "verified": verified}),
            );
            return;
        }
        if verified {
            self.verified(out, step_index, &detail);
        } else {
            self.fail(
                out,
                step_index,
                format!("step {} was not verified: {detail}", step_index + 1),
            );
        }
    }

    fn verified(&mut self, out: &mut Vec<Action>, step_index: usize, detail: &str) {
        if let Some(s) = self.steps.get_mut(step_index) {
            *s = StepState::Verified;
        }
        self.audit(
            out,
            "hub".into(),
            AuditKind::StepVerified,
            json!({"step": step_index, "detail": detail}),
        );
        out.push(Action::StepVerified { step_index });
        self.maybe_complete(out);
    }

    fn maybe_complete(&mut self, out: &mut Vec<Action>) {
        if self.next_step().is_none() && self.status == RunStatus::Active {
            self.status = RunStatus::Completed;
            self.audit(out, "hub".into(), AuditKind::PlanCompleted, json!({}));
            out.push(Action::PlanCompleted);
        }
    }

    fn fail(&mut self, out: &mut Vec<Action>, step_index: usize, reason: String) {
        if let Some(s) = self.steps.get_mut(step_index) {
            *s = StepState::Failed(reason.clone());
        }
        self.audit(
            out,
            "hub".into(),
            AuditKind::StepFailed,
            json!({"step": step_index, "reason": reason}),
        );
        self.stop(out, reason, Some(step_index));
    }

    /// Hints for the failed step (if any) then every step that ran, newest
    /// first.
    fn executed_hints(&self, failed: Option<usize>) -> Vec<StepRollback> {
        let mut idx: Vec<usize> = failed.into_iter().collect();
        for (i, s) in self.steps.iter().enumerate().rev() {
            let ran = matches!(
                s,
                StepState::Verified
                    | StepState::Done
                    | StepState::Sent { .. }
                    | StepState::Probing { .. }
            );
            if ran && Some(i) != failed {
                idx.push(i);
            }
        }
        idx.into_iter()
            .filter_map(|i| {
                let hint = self.plan.steps.get(i)?.rollback.clone()?;
                Some(StepRollback {
                    step_index: i,
                    hint,
                })
            })
            .collect()
    }

    fn stop(&mut self, out: &mut Vec<Action>, reason: String, failed: Option<usize>) {
        let rollback = self.executed_hints(failed);
        self.status = RunStatus::Stopped(reason.clone());
        self.approvals.clear();
        self.audit(
            out,
            "hub".into(),
            AuditKind::PlanStopped,
            json!({"reason": reason, "failed_step": failed}),
        );
        out.push(Action::PlanStopped { reason, rollback });
    }

    fn expire(&mut self, now: i64, out: &mut Vec<Action>) {
        if self.status != RunStatus::Active {
            return;
        }
        let expired: Vec<usize> = self
            .approvals
            .iter()
            .filter(|(_, a)| now >= a.expires_at)
            .map(|(i, _)| *i)
            .collect();
        for i in expired {
            if let Some(a) = self.approvals.remove(&i) {
                self.audit(
                    out,
                    "hub".into(),
                    AuditKind::ApprovalExpired,
                    json!({"step": i, "user": a.user, "expires_at": a.expires_at}),
                );
            }
        }
        let overdue = self.steps.iter().enumerate().find_map(|(i, s)| match s {
            StepState::Sent { deadline, .. } if now >= *deadline => Some((
                i,
                format!(
                    "no result from the agent within {} s",
                    self.config.result_timeout_s
                ),
            )),
            StepState::Probing { deadline, .. } if now >= *deadline => Some((
                i,
                format!(
                    "the effect was not verified within {} s",
                    self.config.probe_timeout_s
                ),
            )),
            _ => None,
        });
        if let Some((i, why)) = overdue {
            self.fail(out, i, format!("step {}: {why}", i + 1));
        }
    }
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests;
