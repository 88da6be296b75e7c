//! Typed guest actions and their execution: local policy check, the POST,
//! then following the task (and, for HA-managed guests, the HA chain) to
//! the real outcome.
//!
//! Endpoints (`integrations.md` §1.7, PVE 9.1 schema):
//! `POST /nodes/{node}/{qemu|lxc}/{vmid}/status/{start,shutdown,stop,reboot,suspend,resume}`,
//! `POST …/snapshot` (`snapname`), `POST …/snapshot/{snapname}/rollback`,
//! `POST …/migrate` (`target`, `online`; containers use `restart`),
//! `POST /nodes/{node}/vzdump` (`vmid`, `mode`, `storage`, **`remove=0`** so
//! no old backup is ever pruned). Each returns a UPID.
//!
//! HA-managed guests (`qemu-server` `Qemu.pm`, `pve-container` `LXC.pm`,
//! `vm_is_ha_managed` branches): `status/start` forks an `hastart` task
//! (`ha-manager set vm:<id> --state started`), `status/stop` and
//! `status/shutdown` an `hastop` task (`ha-manager crm-command stop`),
//! `migrate` an `hamigrate` task (`ha-manager migrate`). Those finish as soon
//! as the request is recorded; the LRM then runs the real worker
//! (`qmstart`, `qmshutdown`/`qmstop`, `qmigrate`, or `vz*` for containers;
//! its log starts with "task started by HA resource agent") as `root@pam`.
//! [`execute`] follows that chain: the request task, then the HA service
//! state (`GET /cluster/ha/status/current`) and the worker task found with
//! `GET /nodes/{node}/tasks?vmid=&since=&source=all`, and reports the worker's
//! UPID and status. Seeing root's tasks and the HA state needs `Sys.Audit`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::client::{PveClient, PveError, TaskQuery, enc};
use super::facts::{ActionOutcome, ActionResult, GuestKind, TaskStatus, Upid};
use super::policy::{LocalPolicy, Risk, risk};
use super::tasks::{failure_summary, parse_status, summarize_log};
use super::upid::parse_upid;

pub use wingman_protocol::pve::{BackupMode, GuestRef, PveAction, PveActionOp};

/// Why an action could not even be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// A parameter PVE would reject (or that could escape the URL path).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Parameter.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
}

/// `pve-configid`-style names: a letter, then letters, digits, `-`, `_`; at
/// most 40 characters (PVE's snapshot name rule).
fn valid_snapname(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && s.len() <= 40
        && c.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn valid_node(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

fn valid_storage(s: &str) -> bool {
    valid_snapname(s)
        || (s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && s.starts_with(|c: char| c.is_ascii_alphabetic()))
}

/// Policy and request building for [`PveAction`] (the type lives in the
/// protocol crate).
pub trait PveActionExt {
    /// Risk level.
    fn risk(&self) -> Risk;
    /// The POST path (relative to `/api2/json`) and JSON body. Pure.
    fn request(&self) -> Result<(String, Value), ActionError>;
}

impl PveActionExt for PveAction {
    fn risk(&self) -> Risk {
        risk(self)
    }

    fn request(&self) -> Result<(String, Value), ActionError> {
        let g = &self.guest;
        if !valid_node(&g.node) {
            return Err(ActionError::Invalid {
                field: "node",
                reason: "not a node name",
            });
        }
        if !(100..=999_999_999).contains(&g.vmid) {
            return Err(ActionError::Invalid {
                field: "vmid",
                reason: "must be 100-999999999",
            });
        }
        let base = format!("/nodes/{}/{}/{}", enc(&g.node), g.kind.as_str(), g.vmid);
        let status = |verb: &str| format!("{base}/status/{verb}");
        Ok(match &self.op {
            PveActionOp::Start => (status("start"), json!({})),
            PveActionOp::Shutdown { timeout_s } => (
                status("shutdown"),
                match timeout_s {
                    Some(t) => json!({ "timeout": t }),
                    None => json!({}),
                },
            ),
            PveActionOp::Stop => (status("stop"), json!({})),
            PveActionOp::Reboot => (status("reboot"), json!({})),
            PveActionOp::Suspend => (status("suspend"), json!({})),
            PveActionOp::Resume => (status("resume"), json!({})),
            PveActionOp::SnapshotCreate { name } => {
                if !valid_snapname(name) {
                    return Err(ActionError::Invalid {
                        field: "snapname",
                        reason: "letter first, then letters, digits, - or _; max 40",
                    });
                }
                (
                    format!("{base}/snapshot"),
                    json!({ "snapname": name, "description": "created by Wingman" }),
                )
            }
            PveActionOp::SnapshotRollback { name } => {
                if !valid_snapname(name) {
                    return Err(ActionError::Invalid {
                        field: "snapname",
                        reason: "letter first, then letters, digits, - or _; max 40",
                    });
                }
                (format!("{base}/snapshot/{}/rollback", enc(name)), json!({}))
            }
            PveActionOp::Migrate { target, online } => {
                if !valid_node(target) {
                    return Err(ActionError::Invalid {
                        field: "target",
                        reason: "not a node name",
                    });
                }
                let body = match (g.kind, online) {
                    (GuestKind::Qemu, o) => json!({ "target": target, "online": u8::from(*o) }),
                    // Containers cannot live-migrate: "online" means restart mode.
                    (GuestKind::Lxc, true) => json!({ "target": target, "restart": 1 }),
                    (GuestKind::Lxc, false) => json!({ "target": target }),
                };
                (format!("{base}/migrate"), body)
            }
            PveActionOp::BackupNow { storage, mode } => {
                let mut body = json!({
                    "vmid": g.vmid.to_string(),
                    "mode": mode.as_str(),
                    "remove": 0,
                });
                if let Some(s) = storage {
                    if !valid_storage(s) {
                        return Err(ActionError::Invalid {
                            field: "storage",
                            reason: "not a storage id",
                        });
                    }
                    body["storage"] = json!(s);
                }
                (format!("/nodes/{}/vzdump", enc(&g.node)), body)
            }
        })
    }
}

/// How long and how often to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecOptions {
    /// First poll interval (backs off ×1.5 up to 2 s).
    pub poll_interval: Duration,
    /// Give up following after this (the task keeps running on PVE).
    pub timeout: Duration,
    /// For HA guests: how long to wait for the worker task or the HA state
    /// once the other one is already final.
    pub ha_grace: Duration,
}

impl Default for ExecOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(500),
            timeout: Duration::from_secs(600),
            ha_grace: Duration::from_secs(15),
        }
    }
}

/// Transient errors worth retrying while following.
fn transient(e: &PveError) -> bool {
    matches!(
        e,
        PveError::ApiDown { .. } | PveError::Timeout | PveError::Api { status: 500.., .. }
    )
}

async fn sleep_backoff(delay: &mut Duration) {
    tokio::time::sleep(*delay).await;
    *delay = (*delay * 3 / 2).min(Duration::from_secs(2));
}

/// Final status of a stopped task from its `exitstatus`, with a log-derived
/// summary on failure.
async fn final_status(client: &PveClient, upid: &Upid, exitstatus: &str) -> TaskStatus {
    let st = parse_status(exitstatus);
    if let TaskStatus::Failed(msg) = &st
        && let Ok(lines) = client.task_log_tail(upid, 50).await
    {
        return TaskStatus::Failed(failure_summary(msg, &summarize_log(&lines)));
    }
    st
}

/// Polls `GET …/tasks/{upid}/status` until the task stops or `deadline`;
/// returns `Running` on timeout.
pub async fn follow_task(
    client: &PveClient,
    upid: &Upid,
    deadline: Instant,
    interval: Duration,
) -> Result<TaskStatus, PveError> {
    let mut delay = interval;
    loop {
        match client.task_status(upid).await {
            Ok(st) if st.status.as_deref() == Some("stopped") => {
                return Ok(
                    final_status(client, upid, st.exitstatus.as_deref().unwrap_or("")).await,
                );
            }
            Ok(_) => {}
            Err(e) if transient(&e) => {
                tracing::debug!(upid = %upid, error = %e, "retrying task status");
            }
            Err(e) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Ok(TaskStatus::Running);
        }
        sleep_backoff(&mut delay).await;
    }
}

/// Executes an action: policy check (a refusal never reaches the API), POST,
/// follow the task or HA chain, report the real outcome.
pub async fn execute(
    client: &PveClient,
    policy: &LocalPolicy,
    action: &PveAction,
    opts: &ExecOptions,
) -> ActionResult {
    let started = Instant::now();
    let mut res = ActionResult {
        action: action.name().to_owned(),
        node: action.guest.node.clone(),
        vmid: action.guest.vmid,
        kind: action.guest.kind,
        outcome: ActionOutcome::Completed,
        upid: None,
        status: TaskStatus::Running,
        chain: Vec::new(),
        ha_state: None,
        message: String::new(),
        duration_ms: 0,
    };
    let finish = |mut r: ActionResult| {
        r.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        r
    };
    if let Err(refusal) = policy.check(action) {
        res.outcome = ActionOutcome::Refused;
        res.status = TaskStatus::Failed(refusal.reason.clone());
        res.message = refusal.to_string();
        return finish(res);
    }
    let (path, body) = match action.request() {
        Ok(r) => r,
        Err(e) => {
            res.outcome = ActionOutcome::RequestFailed;
            res.status = TaskStatus::Failed(e.to_string());
            res.message = e.to_string();
            return finish(res);
        }
    };
    let upid = match client.post_upid(&path, &body).await {
        Ok(u) => u,
        Err(e) => {
            res.outcome = ActionOutcome::RequestFailed;
            res.status = TaskStatus::Failed(e.to_string());
            res.message = e.to_string();
            return finish(res);
        }
    };
    tracing::info!(action = action.name(), vmid = action.guest.vmid, upid = %upid, "PVE action started");
    res.chain.push(upid.clone());
    let deadline = started + opts.timeout;
    let status = match follow_task(client, &upid, deadline, opts.poll_interval).await {
        Ok(s) => s,
        Err(e) => {
            res.upid = Some(upid);
            res.outcome = ActionOutcome::TimedOut;
            res.message = format!("lost track of the task: {e}");
            return finish(res);
        }
    };
    res.upid = Some(upid.clone());
    res.status = status.clone();
    if status == TaskStatus::Running {
        res.outcome = ActionOutcome::TimedOut;
        res.message = format!("{} still running after {:?}", upid.task_type, opts.timeout);
        return finish(res);
    }
    if upid.task_type.starts_with("ha") && status.is_success() {
        follow_ha_chain(client, action, &upid, deadline, opts, &mut res).await;
    }
    if res.message.is_empty() {
        res.message = format!(
            "{} of {} {} on {}: {}",
            action.name(),
            action.guest.kind.as_str(),
            action.guest.vmid,
            action.guest.node,
            res.status
        );
    }
    finish(res)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HaGoal {
    State(&'static str),
    OnNode(String),
}

/// Follows HA after the request task finished OK (see module docs).
async fn follow_ha_chain(
    client: &PveClient,
    action: &PveAction,
    ha_upid: &Upid,
    deadline: Instant,
    opts: &ExecOptions,
    res: &mut ActionResult,
) {
    let g = &action.guest;
    let sid = format!("{}:{}", g.kind.ha_prefix(), g.vmid);
    let (types, goal): (&[&str], HaGoal) = match (ha_upid.task_type.as_str(), &action.op) {
        ("hastart", _) => (&["qmstart", "vzstart"], HaGoal::State("started")),
        ("hastop", _) => (
            &["qmshutdown", "qmstop", "vzshutdown", "vzstop"],
            HaGoal::State("stopped"),
        ),
        ("hamigrate" | "harelocate", PveActionOp::Migrate { target, .. }) => {
            (&["qmigrate", "vzmigrate"], HaGoal::OnNode(target.clone()))
        }
        _ => return,
    };
    let mut search_nodes = vec![g.node.clone()];
    let mut ha_visible = true;
    let mut worker: Option<Upid> = None;
    let mut worker_status: Option<TaskStatus> = None;
    let mut settled_at: Option<Instant> = None;
    let mut delay = opts.poll_interval;
    loop {
        // 1. HA service state.
        let mut goal_reached = false;
        if ha_visible {
            match client.ha_status().await {
                Ok(rows) => {
                    if let Some(row) = rows.iter().find(|r| {
                        r.sid.as_deref() == Some(sid.as_str())
                            || r.id.as_deref() == Some(format!("service:{sid}").as_str())
                    }) {
                        let state = row.state.clone().unwrap_or_default();
                        let node = row.node.clone().unwrap_or_default();
                        if !node.is_empty() && !search_nodes.contains(&node) {
                            search_nodes.push(node.clone());
                        }
                        res.ha_state = Some(state.clone());
                        if state == "error" {
                            res.status = TaskStatus::Failed(format!(
                                "HA resource {sid} entered the error state"
                            ));
                            if let Some(w) = &worker {
                                res.upid = Some(w.clone());
                            }
                            return;
                        }
                        goal_reached = match &goal {
                            HaGoal::State(s) => state == *s,
                            HaGoal::OnNode(t) => {
                                node == *t && matches!(state.as_str(), "started" | "stopped")
                            }
                        };
                    }
                }
                Err(PveError::Forbidden { .. }) => {
                    tracing::warn!(
                        "no Sys.Audit on /: cannot see the HA state, following the worker task only"
                    );
                    ha_visible = false;
                }
                Err(e) => tracing::debug!(error = %e, "HA status unavailable"),
            }
        }
        // 2. The worker task the LRM started.
        if worker.is_none() {
            for n in &search_nodes {
                let q = TaskQuery {
                    since: Some(ha_upid.starttime),
                    vmid: Some(g.vmid),
                    source: Some("all"),
                    limit: Some(50),
                    ..TaskQuery::default()
                };
                match client.tasks(n, &q).await {
                    Ok(rows) => {
                        worker = rows
                            .iter()
                            .filter_map(|r| r.upid.as_deref().and_then(|u| parse_upid(u).ok()))
                            .filter(|u| {
                                u != ha_upid
                                    && u.starttime >= ha_upid.starttime
                                    && types.contains(&u.task_type.as_str())
                            })
                            .min_by_key(|u| (u.starttime, u.pid));
                    }
                    Err(e) => tracing::debug!(node = %n, error = %e, "cannot list tasks"),
                }
                if let Some(w) = &worker {
                    res.chain.push(w.clone());
                    break;
                }
            }
        }
        if let (Some(w), None) = (&worker, &worker_status) {
            match client.task_status(w).await {
                Ok(st) if st.status.as_deref() == Some("stopped") => {
                    worker_status =
                        Some(final_status(client, w, st.exitstatus.as_deref().unwrap_or("")).await);
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(upid = %w, error = %e, "cannot read worker status"),
            }
        }
        // 3. Decide.
        match (&worker, &worker_status) {
            (Some(w), Some(st)) if !st.is_success() => {
                res.upid = Some(w.clone());
                res.status = st.clone();
                return;
            }
            (Some(w), Some(st)) => {
                if goal_reached || !ha_visible {
                    res.upid = Some(w.clone());
                    res.status = st.clone();
                    return;
                }
                let since = *settled_at.get_or_insert_with(Instant::now);
                if since.elapsed() >= opts.ha_grace {
                    res.upid = Some(w.clone());
                    res.status = st.clone();
                    res.message = format!(
                        "{} finished but HA reports {sid} as {}",
                        w.task_type,
                        res.ha_state.as_deref().unwrap_or("unknown")
                    );
                    return;
                }
            }
            (None, _) if goal_reached => {
                // Already in the goal state (no worker needed) or the worker
                // is not listed yet: give it a moment.
                let since = *settled_at.get_or_insert_with(Instant::now);
                if since.elapsed() >= opts.ha_grace {
                    res.upid = Some(ha_upid.clone());
                    res.status = TaskStatus::Ok;
                    return;
                }
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            res.outcome = ActionOutcome::TimedOut;
            res.status = TaskStatus::Running;
            res.upid = worker.clone().or_else(|| Some(ha_upid.clone()));
            res.message = format!(
                "HA has not finished {} for {sid} (state {})",
                action.name(),
                res.ha_state.as_deref().unwrap_or("unknown")
            );
            return;
        }
        sleep_backoff(&mut delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(kind: GuestKind, op: PveActionOp) -> PveAction {
        PveAction {
            guest: GuestRef {
                node: "pve1".into(),
                vmid: 100,
                kind,
            },
            op,
        }
    }

    #[test]
    fn requests() {
        let (p, b) = a(GuestKind::Qemu, PveActionOp::Start).request().unwrap();
        assert_eq!(p, "/nodes/pve1/qemu/100/status/start");
        assert_eq!(b, json!({}));
        let (p, b) = a(
            GuestKind::Lxc,
            PveActionOp::SnapshotRollback {
                name: "before_upgrade".into(),
            },
        )
        .request()
        .unwrap();
        assert_eq!(p, "/nodes/pve1/lxc/100/snapshot/before_upgrade/rollback");
        assert_eq!(b, json!({}));
        let (p, b) = a(
            GuestKind::Qemu,
            PveActionOp::BackupNow {
                storage: Some("backup-nfs".into()),
                mode: BackupMode::Snapshot,
            },
        )
        .request()
        .unwrap();
        assert_eq!(p, "/nodes/pve1/vzdump");
        assert_eq!(
            b,
            json!({"vmid": "100", "mode": "snapshot", "remove": 0, "storage": "backup-nfs"})
        );
        let (_, b) = a(
            GuestKind::Qemu,
            PveActionOp::Migrate {
                target: "pve2".into(),
                online: true,
            },
        )
        .request()
        .unwrap();
        assert_eq!(b, json!({"target": "pve2", "online": 1}));
        let (_, b) = a(
            GuestKind::Lxc,
            PveActionOp::Migrate {
                target: "pve2".into(),
                online: true,
            },
        )
        .request()
        .unwrap();
        assert_eq!(b, json!({"target": "pve2", "restart": 1}));
    }

    #[test]
    fn rejects_path_injection() {
        for name in ["../../x", "a/b", "", "1abc", &"a".repeat(41)] {
            assert!(
                a(
                    GuestKind::Qemu,
                    PveActionOp::SnapshotRollback { name: name.into() }
                )
                .request()
                .is_err()
            );
        }
        assert!(
            a(
                GuestKind::Qemu,
                PveActionOp::Migrate {
                    target: "pve2/../x".into(),
                    online: false
                }
            )
            .request()
            .is_err()
        );
    }

    #[test]
    fn risks_and_policy() {
        use PveActionOp::*;
        let cases = [
            (Start, Risk::Low),
            (Resume, Risk::Low),
            (SnapshotCreate { name: "s".into() }, Risk::Low),
            (Shutdown { timeout_s: None }, Risk::Medium),
            (Reboot, Risk::Medium),
            (Suspend, Risk::Medium),
            (
                Migrate {
                    target: "b".into(),
                    online: true,
                },
                Risk::Medium,
            ),
            (
                BackupNow {
                    storage: None,
                    mode: BackupMode::Snapshot,
                },
                Risk::Medium,
            ),
            (Stop, Risk::Destructive),
            (SnapshotRollback { name: "s".into() }, Risk::Destructive),
        ];
        let p = LocalPolicy::default();
        for (op, r) in cases {
            let act = a(GuestKind::Qemu, op);
            assert_eq!(act.risk(), r, "{}", act.name());
            assert_eq!(
                p.check(&act).is_ok(),
                r != Risk::Destructive,
                "{}",
                act.name()
            );
        }
        let p = LocalPolicy {
            allow_destructive: true,
            ..LocalPolicy::default()
        };
        assert!(p.check(&a(GuestKind::Qemu, Stop)).is_ok());
        let p = LocalPolicy {
            denied_vmids: vec![100],
            ..LocalPolicy::default()
        };
        assert!(p.check(&a(GuestKind::Qemu, Start)).is_err());
        let p = LocalPolicy::default();
        let err = p
            .check(&a(
                GuestKind::Qemu,
                BackupNow {
                    storage: None,
                    mode: BackupMode::Stop,
                },
            ))
            .unwrap_err();
        assert!(err.reason.contains("stop mode"));
    }
}
