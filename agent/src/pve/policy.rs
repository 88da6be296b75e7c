//! Action risk and the node-local policy. Pure: no I/O.
//!
//! The local policy is the agent's last word: whatever the hub asks, an
//! action it refuses is never sent to the PVE API. Risk levels follow
//! `integrations.md` §1.7: snapshot rollback and hard stop discard data or
//! pull the plug (destructive); shutdown, reboot, suspend, migrate and
//! backup interrupt or load the guest (medium); start, resume and snapshot
//! creation are low.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::actions::{BackupMode, PveAction, PveActionOp};

/// How much harm an action can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Risk {
    /// Safe to retry, no data loss.
    Low,
    /// Interrupts service or loads the system.
    Medium,
    /// Loses data or state (rollback, power-pull).
    Destructive,
}

impl Risk {
    /// Stable lowercase name ("low", "medium", "destructive").
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::Destructive => "destructive",
        }
    }
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The risk of an action.
pub fn risk(action: &PveAction) -> Risk {
    match &action.op {
        PveActionOp::Start | PveActionOp::Resume | PveActionOp::SnapshotCreate { .. } => Risk::Low,
        PveActionOp::Shutdown { .. }
        | PveActionOp::Reboot
        | PveActionOp::Suspend
        | PveActionOp::Migrate { .. }
        | PveActionOp::BackupNow { .. } => Risk::Medium,
        PveActionOp::Stop | PveActionOp::SnapshotRollback { .. } => Risk::Destructive,
    }
}

/// Node-local limits on what the agent may do (`[proxmox.policy]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalPolicy {
    /// Allow destructive actions (rollback, hard stop). Default: no.
    pub allow_destructive: bool,
    /// Allow medium-risk actions. Default: yes.
    pub allow_medium: bool,
    /// Allow `vzdump --mode stop` (stops the guest for the backup). Default: no.
    pub allow_backup_stop_mode: bool,
    /// Only these guests, if set.
    pub allowed_vmids: Option<Vec<u32>>,
    /// Never these guests.
    pub denied_vmids: Vec<u32>,
}

impl Default for LocalPolicy {
    fn default() -> Self {
        Self {
            allow_destructive: false,
            allow_medium: true,
            allow_backup_stop_mode: false,
            allowed_vmids: None,
            denied_vmids: Vec::new(),
        }
    }
}

/// Why the policy refused an action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused by local policy: {reason}")]
pub struct Refusal {
    /// One-line reason.
    pub reason: String,
    /// The action's risk.
    pub risk: Risk,
}

impl LocalPolicy {
    /// `Ok` if allowed, else the reason.
    pub fn check(&self, action: &PveAction) -> Result<(), Refusal> {
        let r = risk(action);
        let vmid = action.guest.vmid;
        let refuse = |reason: String| Err(Refusal { reason, risk: r });
        if self.denied_vmids.contains(&vmid) {
            return refuse(format!("guest {vmid} is on the deny list"));
        }
        if let Some(allowed) = &self.allowed_vmids
            && !allowed.contains(&vmid)
        {
            return refuse(format!("guest {vmid} is not on the allow list"));
        }
        match r {
            Risk::Destructive if !self.allow_destructive => {
                return refuse(format!(
                    "{} is destructive ({}) and destructive actions are disabled on this node",
                    action.name(),
                    destructive_why(&action.op)
                ));
            }
            Risk::Medium if !self.allow_medium => {
                return refuse(format!(
                    "{} is medium risk and medium-risk actions are disabled on this node",
                    action.name()
                ));
            }
            _ => {}
        }
        if let PveActionOp::BackupNow {
            mode: BackupMode::Stop,
            ..
        } = &action.op
            && !self.allow_backup_stop_mode
        {
            return refuse(
                "backup in stop mode shuts the guest down; use snapshot mode".to_owned(),
            );
        }
        Ok(())
    }
}

fn destructive_why(op: &PveActionOp) -> &'static str {
    match op {
        PveActionOp::Stop => "hard stop, like pulling the power plug",
        PveActionOp::SnapshotRollback { .. } => "discards all changes since the snapshot",
        _ => "may lose data",
    }
}
