//! The action catalog: every action the control plane can plan, with typed
//! parameters, a risk class, preconditions over the hub's [`Inventory`], the
//! expected effect, a verification [`Probe`] and a rollback hint.
//!
//! The catalog is static data ([`CATALOG`]). A plan step names an action and
//! gives its parameters as a JSON object; [`build_call`] checks them against
//! the action's [`ParamSpec`]s and the inventory and produces a typed
//! [`ActionCall`], the only thing the executor ever sees. There is no shell
//! or free-form action. [`plan_json_schema`] generates the strict JSON schema
//! a model must answer in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::exec::{
    BackupMode, ContainerRunState, DockerAction, GuestKind, GuestRef, PveAction, PveActionOp,
};

/// How much harm an action can do, as the control plane classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RiskClass {
    /// Reads state, changes nothing.
    ReadOnly,
    /// Brings something up or bounces it.
    Low,
    /// Takes a service down or loads the system.
    Medium,
    /// Loses data or state; cannot be undone.
    Destructive,
}

impl RiskClass {
    /// Stable name: "read_only", "low", "medium", "destructive".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadOnly => "read_only",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::Destructive => "destructive",
        }
    }
}

/// Every catalog action. Serialized as its dotted name, e.g. `"pve.stop"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ActionId {
    /// `docker.start`
    #[serde(rename = "docker.start")]
    DockerStart,
    /// `docker.stop`
    #[serde(rename = "docker.stop")]
    DockerStop,
    /// `docker.restart`
    #[serde(rename = "docker.restart")]
    DockerRestart,
    /// `docker.remove`
    #[serde(rename = "docker.remove")]
    DockerRemove,
    /// `docker.inspect`
    #[serde(rename = "docker.inspect")]
    DockerInspect,
    /// `docker.logs_summary`
    #[serde(rename = "docker.logs_summary")]
    DockerLogsSummary,
    /// `pve.start`
    #[serde(rename = "pve.start")]
    PveStart,
    /// `pve.shutdown`
    #[serde(rename = "pve.shutdown")]
    PveShutdown,
    /// `pve.stop`
    #[serde(rename = "pve.stop")]
    PveStop,
    /// `pve.reboot`
    #[serde(rename = "pve.reboot")]
    PveReboot,
    /// `pve.suspend`
    #[serde(rename = "pve.suspend")]
    PveSuspend,
    /// `pve.resume`
    #[serde(rename = "pve.resume")]
    PveResume,
    /// `pve.snapshot_create`
    #[serde(rename = "pve.snapshot_create")]
    PveSnapshotCreate,
    /// `pve.snapshot_rollback`
    #[serde(rename = "pve.snapshot_rollback")]
    PveSnapshotRollback,
    /// `pve.migrate`
    #[serde(rename = "pve.migrate")]
    PveMigrate,
    /// `pve.backup_now`
    #[serde(rename = "pve.backup_now")]
    PveBackupNow,
    /// `pve.task_log`
    #[serde(rename = "pve.task_log")]
    PveTaskLog,
    /// `pve.guest_config`
    #[serde(rename = "pve.guest_config")]
    PveGuestConfig,
    /// `host.unit_status`
    #[serde(rename = "host.unit_status")]
    HostUnitStatus,
}

impl ActionId {
    /// The dotted name.
    pub fn as_str(self) -> &'static str {
        spec(self).name
    }

    /// Parses a dotted name.
    pub fn parse(s: &str) -> Option<Self> {
        CATALOG.iter().find(|a| a.name == s).map(|a| a.id)
    }
}

/// What an action targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetKind {
    /// A node (params `node`).
    Node,
    /// A PVE guest (params `node`, `vmid`).
    Guest,
    /// A container (params `node`, `container`).
    Container,
}

/// A parameter's type and constraints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A node name (hostname rules, no leading `-`).
    Node,
    /// A PVE guest id, 100-999999999.
    Vmid,
    /// A container name or id.
    Container,
    /// A PVE snapshot name.
    Snapshot,
    /// A PVE storage id.
    Storage,
    /// A systemd unit name.
    Unit,
    /// A PVE task id (`UPID:...`).
    Upid,
    /// Whole seconds within bounds.
    Seconds {
        /// Smallest allowed.
        min: u32,
        /// Largest allowed.
        max: u32,
    },
    /// true or false.
    Bool,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
}

/// One parameter of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamSpec {
    /// Name in the step's `params` object.
    pub name: &'static str,
    /// Type and constraints.
    pub kind: ParamKind,
    /// False: may be omitted or null.
    pub required: bool,
    /// One-line description (goes into the model schema).
    pub doc: &'static str,
}

/// A condition on current facts that must hold before the action runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// The target's node is online.
    NodeOnline,
    /// The guest's status is one of these.
    GuestStatusIs(&'static [&'static str]),
    /// The guest has no config lock (backup, snapshot, migrate, ...).
    GuestNotLocked,
    /// The guest is not a template.
    GuestNotTemplate,
    /// The snapshot named by `name` exists.
    SnapshotExists,
    /// The snapshot named by `name` does not exist yet.
    SnapshotAbsent,
    /// `target` is another online node of the same cluster.
    MigrationTargetValid,
    /// The container's state is one of these.
    ContainerStateIs(&'static [ContainerRunState]),
    /// The container is not running, or `force` is set.
    ContainerStoppedOrForce,
    /// The UPID names the `node` parameter's node.
    UpidOnNode,
}

/// A catalog entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionSpec {
    /// Id.
    pub id: ActionId,
    /// Dotted name, e.g. `pve.shutdown`.
    pub name: &'static str,
    /// What it does, one line.
    pub summary: &'static str,
    /// Risk class.
    pub risk: RiskClass,
    /// What it targets.
    pub target: TargetKind,
    /// Parameters (anything else is rejected).
    pub params: &'static [ParamSpec],
    /// Checked against current facts at validation and before execution.
    pub preconditions: &'static [Precondition],
    /// The expected effect, one line.
    pub effect: &'static str,
    /// How the result is verified, one line.
    pub verification: &'static str,
}

const P_NODE: ParamSpec = ParamSpec {
    name: "node",
    kind: ParamKind::Node,
    required: true,
    doc: "Node name as in the inventory",
};
const P_VMID: ParamSpec = ParamSpec {
    name: "vmid",
    kind: ParamKind::Vmid,
    required: true,
    doc: "Guest id (VM or container) on that node",
};
const P_CONTAINER: ParamSpec = ParamSpec {
    name: "container",
    kind: ParamKind::Container,
    required: true,
    doc: "Container name on that node",
};
const P_STOP_TIMEOUT: ParamSpec = ParamSpec {
    name: "timeout_s",
    kind: ParamKind::Seconds { min: 0, max: 600 },
    required: false,
    doc: "Seconds before SIGKILL; null for the container's default",
};
const P_SNAPNAME: ParamSpec = ParamSpec {
    name: "name",
    kind: ParamKind::Snapshot,
    required: true,
    doc: "Snapshot name: a letter, then letters, digits, - or _; at most 40",
};

const RUNNING: &[&str] = &["running"];
const GUEST_LIVE: &[Precondition] = &[
    Precondition::NodeOnline,
    Precondition::GuestStatusIs(RUNNING),
    Precondition::GuestNotLocked,
];

/// The catalog, in display order.
pub static CATALOG: &[ActionSpec] = &[
    ActionSpec {
        id: ActionId::DockerStart,
        name: "docker.start",
        summary: "Start a stopped container",
        risk: RiskClass::Low,
        target: TargetKind::Container,
        params: &[P_NODE, P_CONTAINER],
        preconditions: &[
            Precondition::NodeOnline,
            Precondition::ContainerStateIs(&[
                ContainerRunState::Created,
                ContainerRunState::Exited,
            ]),
        ],
        effect: "The container is running",
        verification: "Container state is running and it started after the action",
    },
    ActionSpec {
        id: ActionId::DockerStop,
        name: "docker.stop",
        summary: "Stop a running container (SIGTERM, then SIGKILL after the timeout)",
        risk: RiskClass::Medium,
        target: TargetKind::Container,
        params: &[P_NODE, P_CONTAINER, P_STOP_TIMEOUT],
        preconditions: &[
            Precondition::NodeOnline,
            Precondition::ContainerStateIs(&[
                ContainerRunState::Running,
                ContainerRunState::Restarting,
            ]),
        ],
        effect: "The container is exited",
        verification: "Container state is exited",
    },
    ActionSpec {
        id: ActionId::DockerRestart,
        name: "docker.restart",
        summary: "Restart a container",
        risk: RiskClass::Low,
        target: TargetKind::Container,
        params: &[P_NODE, P_CONTAINER, P_STOP_TIMEOUT],
        preconditions: &[
            Precondition::NodeOnline,
            Precondition::ContainerStateIs(&[
                ContainerRunState::Running,
                ContainerRunState::Restarting,
                ContainerRunState::Exited,
                ContainerRunState::Created,
            ]),
        ],
        effect: "The container is running again, freshly started",
        verification: "Container state is running and it started after the action",
    },
    ActionSpec {
        id: ActionId::DockerRemove,
        name: "docker.remove",
        summary: "Remove a container (force also kills a running one)",
        risk: RiskClass::Destructive,
        target: TargetKind::Container,
        params: &[
            P_NODE,
            P_CONTAINER,
            ParamSpec {
                name: "force",
                kind: ParamKind::Bool,
                required: true,
                doc: "Kill it first if it is running",
            },
        ],
        preconditions: &[
            Precondition::NodeOnline,
            Precondition::ContainerStoppedOrForce,
        ],
        effect: "The container no longer exists",
        verification: "The container is gone from the inventory",
    },
    ActionSpec {
        id: ActionId::DockerInspect,
        name: "docker.inspect",
        summary: "Read a container's configuration and state",
        risk: RiskClass::ReadOnly,
        target: TargetKind::Container,
        params: &[P_NODE, P_CONTAINER],
        preconditions: &[Precondition::NodeOnline],
        effect: "Nothing changes; the result holds the container's state",
        verification: "None (read-only)",
    },
    ActionSpec {
        id: ActionId::DockerLogsSummary,
        name: "docker.logs_summary",
        summary: "Summarize a container's recent logs (templates and counts, redacted)",
        risk: RiskClass::ReadOnly,
        target: TargetKind::Container,
        params: &[
            P_NODE,
            P_CONTAINER,
            ParamSpec {
                name: "since_s",
                kind: ParamKind::Seconds {
                    min: 60,
                    max: 86_400,
                },
                required: true,
                doc: "How far back, in seconds (60-86400)",
            },
        ],
        preconditions: &[Precondition::NodeOnline],
        effect: "Nothing changes; the result holds a log summary",
        verification: "None (read-only)",
    },
    ActionSpec {
        id: ActionId::PveStart,
        name: "pve.start",
        summary: "Start a stopped VM or container",
        risk: RiskClass::Low,
        target: TargetKind::Guest,
        params: &[P_NODE, P_VMID],
        preconditions: &[
            Precondition::NodeOnline,
            Precondition::GuestStatusIs(&["stopped"]),
            Precondition::GuestNotLocked,
            Precondition::GuestNotTemplate,
        ],
        effect: "The guest is running",
        verification: "Guest status is running",
    },
    ActionSpec {
        id: ActionId::PveShutdown,
        name: "pve.shutdown",
        summary: "Shut a guest down gracefully (ACPI / init)",
        risk: RiskClass::Medium,
        target: TargetKind::Guest,
        params: &[
            P_NODE,
            P_VMID,
            ParamSpec {
                name: "timeout_s",
                kind: ParamKind::Seconds { min: 1, max: 3600 },
                required: false,
                doc: "Seconds to wait before PVE gives up; null for the default",
            },
        ],
        preconditions: GUEST_LIVE,
        effect: "The guest is stopped",
        verification: "Guest status is stopped",
    },
    ActionSpec {
        id: ActionId::PveStop,
        name: "pve.stop",
        summary: "Hard-stop a guest (like pulling the power plug)",
        risk: RiskClass::Destructive,
        target: TargetKind::Guest,
        params: &[P_NODE, P_VMID],
        preconditions: &[
            Precondition::NodeOnline,
            Precondition::GuestStatusIs(&["running", "paused"]),
            Precondition::GuestNotLocked,
        ],
        effect: "The guest is stopped; unsaved state is lost",
        verification: "Guest status is stopped",
    },
    ActionSpec {
        id: ActionId::PveReboot,
        name: "pve.reboot",
        summary: "Reboot a guest gracefully",
        risk: RiskClass::Medium,
        target: TargetKind::Guest,
        params: &[P_NODE, P_VMID],
        preconditions: GUEST_LIVE,
        effect: "The guest is running again after a reboot",
        verification: "Guest status is running",
    },
    ActionSpec {
        id: ActionId::PveSuspend,
        name: "pve.suspend",
        summary: "Suspend (pause) a running guest",
        risk: RiskClass::Medium,
        target: TargetKind::Guest,
        params: &[P_NODE, P_VMID],
        preconditions: GUEST_LIVE,
        effect: "The guest is paused",
        verification: "Guest status is paused",
    },
    ActionSpec {
        id: ActionId::PveResume,
        name: "pve.resume",
        summary: "Resume a paused guest",
        risk: RiskClass::Low,
        target: TargetKind::Guest,
        params: &[P_NODE, P_VMID],
        preconditions: &[
            Precondition::NodeOnline,
            Precondition::GuestStatusIs(&["paused"]),
        ],
        effect: "The guest is running",
        verification: "Guest status is running",
    },
    ActionSpec {
        id: ActionId::PveSnapshotCreate,
        name: "pve.snapshot_create",
        summary: "Create a snapshot of a guest",
        risk: RiskClass::Low,
        target: TargetKind::Guest,
        params: &[P_NODE, P_VMID, P_SNAPNAME],
        preconditions: &[
            Precondition::NodeOnline,
            Precondition::GuestNotLocked,
            Precondition::GuestNotTemplate,
            Precondition::SnapshotAbsent,
        ],
        effect: "The snapshot exists",
        verification: "The snapshot is listed for the guest",
    },
    ActionSpec {
        id: ActionId::PveSnapshotRollback,
        name: "pve.snapshot_rollback",
        summary: "Roll a guest back to a snapshot, discarding everything since",
        risk: RiskClass::Destructive,
        target: TargetKind::Guest,
        params: &[P_NODE, P_VMID, P_SNAPNAME],
        preconditions: &[
            Precondition::NodeOnline,
            Precondition::GuestNotLocked,
            Precondition::SnapshotExists,
        ],
        effect: "The guest's disks and config are as they were at the snapshot",
        verification: "The guest is not locked and the snapshot still exists",
    },
    ActionSpec {
        id: ActionId::PveMigrate,
        name: "pve.migrate",
        summary: "Migrate a guest to another node of the cluster",
        risk: RiskClass::Medium,
        target: TargetKind::Guest,
        params: &[
            P_NODE,
            P_VMID,
            ParamSpec {
                name: "target",
                kind: ParamKind::Node,
                required: true,
                doc: "Target node (same cluster, online)",
            },
            ParamSpec {
                name: "online",
                kind: ParamKind::Bool,
                required: true,
                doc: "Live migration for VMs, restart mode for containers",
            },
        ],
        preconditions: &[
            Precondition::NodeOnline,
            Precondition::GuestNotLocked,
            Precondition::MigrationTargetValid,
        ],
        effect: "The guest runs on the target node",
        verification: "The guest is listed on the target node",
    },
    ActionSpec {
        id: ActionId::PveBackupNow,
        name: "pve.backup_now",
        summary: "Back a guest up now with vzdump (never prunes old backups)",
        risk: RiskClass::Medium,
        target: TargetKind::Guest,
        params: &[
            P_NODE,
            P_VMID,
            ParamSpec {
                name: "storage",
                kind: ParamKind::Storage,
                required: false,
                doc: "Target storage id; null for the PVE default",
            },
            ParamSpec {
                name: "mode",
                kind: ParamKind::Choice(&["snapshot", "suspend", "stop"]),
                required: true,
                doc: "vzdump mode; snapshot has no downtime",
            },
        ],
        preconditions: &[Precondition::NodeOnline, Precondition::GuestNotLocked],
        effect: "A new backup of the guest exists",
        verification: "The guest's last backup is newer than the action",
    },
    ActionSpec {
        id: ActionId::PveTaskLog,
        name: "pve.task_log",
        summary: "Read a PVE task's log (summarized, redacted)",
        risk: RiskClass::ReadOnly,
        target: TargetKind::Node,
        params: &[
            P_NODE,
            ParamSpec {
                name: "upid",
                kind: ParamKind::Upid,
                required: true,
                doc: "Task id, UPID:node:...",
            },
        ],
        preconditions: &[Precondition::NodeOnline, Precondition::UpidOnNode],
        effect: "Nothing changes; the result holds the task log summary",
        verification: "None (read-only)",
    },
    ActionSpec {
        id: ActionId::PveGuestConfig,
        name: "pve.guest_config",
        summary: "Read a guest's configuration",
        risk: RiskClass::ReadOnly,
        target: TargetKind::Guest,
        params: &[P_NODE, P_VMID],
        preconditions: &[Precondition::NodeOnline],
        effect: "Nothing changes; the result holds the guest config",
        verification: "None (read-only)",
    },
    ActionSpec {
        id: ActionId::HostUnitStatus,
        name: "host.unit_status",
        summary: "Read a systemd unit's status",
        risk: RiskClass::ReadOnly,
        target: TargetKind::Node,
        params: &[
            P_NODE,
            ParamSpec {
                name: "unit",
                kind: ParamKind::Unit,
                required: true,
                doc: "Unit name, e.g. nginx.service",
            },
        ],
        preconditions: &[Precondition::NodeOnline],
        effect: "Nothing changes; the result holds the unit's state",
        verification: "None (read-only)",
    },
];

/// The spec of an action. Every [`ActionId`] has exactly one entry.
pub fn spec(id: ActionId) -> &'static ActionSpec {
    // CATALOG lists every id; the fallback is unreachable in practice and
    // checked by a test.
    CATALOG
        .iter()
        .find(|a| a.id == id)
        .unwrap_or(&FALLBACK_SPEC)
}

const FALLBACK_SPEC: ActionSpec = ActionSpec {
    id: ActionId::HostUnitStatus,
    name: "unknown",
    summary: "",
    risk: RiskClass::Destructive,
    target: TargetKind::Node,
    params: &[],
    preconditions: &[],
    effect: "",
    verification: "",
};

/// Looks an action up by dotted name.
pub fn lookup(name: &str) -> Option<&'static ActionSpec> {
    CATALOG.iter().find(|a| a.name == name)
}

// ---------------------------------------------------------------------------
// Inventory
// ---------------------------------------------------------------------------

/// What the hub knows right now, built by the shell from committed facts.
/// Guests are keyed by node then vmid (separate PVE installations may reuse
/// vmids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// When the newest fact in it was committed, Unix seconds.
    pub taken_at: i64,
    /// Nodes by name.
    pub nodes: BTreeMap<String, NodeInfo>,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The agent is connected (presence).
    pub online: bool,
    /// PVE cluster name; `None` for standalone and non-PVE nodes.
    pub cluster: Option<String>,
    /// Operator tags.
    pub tags: Vec<String>,
    /// The agent's own destructive opt-in, as it reported it; `None` if
    /// unknown (the agent still decides).
    pub agent_allows_destructive: Option<bool>,
    /// PVE guests by vmid.
    pub guests: BTreeMap<u32, GuestInfo>,
    /// Containers by name.
    pub containers: BTreeMap<String, ContainerInfo>,
}

/// One PVE guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestInfo {
    /// VM or container.
    pub kind: GuestKind,
    /// Name.
    pub name: String,
    /// `running`, `stopped`, `paused`, ...
    pub status: String,
    /// Managed by PVE HA.
    pub ha_managed: bool,
    /// Config lock, e.g. "backup".
    pub lock: Option<String>,
    /// A template.
    pub template: bool,
    /// Tags.
    pub tags: Vec<String>,
    /// Snapshot names.
    pub snapshots: Vec<String>,
    /// Last successful backup, Unix seconds.
    pub last_backup_at: Option<i64>,
}

/// One container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// Full id.
    pub id: String,
    /// State.
    pub state: ContainerRunState,
    /// Last start, Unix seconds.
    pub started_at: Option<i64>,
    /// Tags (e.g. `compose:<project>`).
    pub tags: Vec<String>,
}

/// What an action touches, for policy rules and display.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Target {
    /// A node.
    Node {
        /// Node.
        node: String,
    },
    /// A PVE guest.
    Guest {
        /// Node.
        node: String,
        /// Guest id.
        vmid: u32,
    },
    /// A container.
    Container {
        /// Node.
        node: String,
        /// Container name.
        name: String,
    },
}

impl Target {
    /// The node.
    pub fn node(&self) -> &str {
        match self {
            Self::Node { node } | Self::Guest { node, .. } | Self::Container { node, .. } => node,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Node { node } => write!(f, "node {node}"),
            Self::Guest { node, vmid } => write!(f, "guest {vmid} on {node}"),
            Self::Container { node, name } => write!(f, "container {name} on {node}"),
        }
    }
}

impl Inventory {
    /// A node.
    pub fn node(&self, node: &str) -> Option<&NodeInfo> {
        self.nodes.get(node)
    }

    /// A guest on a node.
    pub fn guest(&self, node: &str, vmid: u32) -> Option<&GuestInfo> {
        self.nodes.get(node).and_then(|n| n.guests.get(&vmid))
    }

    /// A container on a node.
    pub fn container(&self, node: &str, name: &str) -> Option<&ContainerInfo> {
        self.nodes.get(node).and_then(|n| n.containers.get(name))
    }

    /// Whether the target exists.
    pub fn has(&self, t: &Target) -> bool {
        match t {
            Target::Node { node } => self.node(node).is_some(),
            Target::Guest { node, vmid } => self.guest(node, *vmid).is_some(),
            Target::Container { node, name } => self.container(node, name).is_some(),
        }
    }

    /// The tags that apply to a target: its own and its node's.
    pub fn tags_of(&self, t: &Target) -> Vec<String> {
        let mut tags: Vec<String> = self
            .node(t.node())
            .map(|n| n.tags.clone())
            .unwrap_or_default();
        match t {
            Target::Node { .. } => {}
            Target::Guest { node, vmid } => {
                if let Some(g) = self.guest(node, *vmid) {
                    tags.extend(g.tags.iter().cloned());
                }
            }
            Target::Container { node, name } => {
                if let Some(c) = self.container(node, name) {
                    tags.extend(c.tags.iter().cloned());
                }
            }
        }
        tags.sort();
        tags.dedup();
        tags
    }

    fn guest_mut(&mut self, node: &str, vmid: u32) -> Option<&mut GuestInfo> {
        self.nodes
            .get_mut(node)
            .and_then(|n| n.guests.get_mut(&vmid))
    }

    fn container_mut(&mut self, node: &str, name: &str) -> Option<&mut ContainerInfo> {
        self.nodes
            .get_mut(node)
            .and_then(|n| n.containers.get_mut(name))
    }
}

// ---------------------------------------------------------------------------
// Typed calls
// ---------------------------------------------------------------------------

/// A fully checked action with its parameters: what the executor runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionCall {
    /// A container action (start, stop, restart, remove).
    Docker {
        /// Node the container is on.
        node: String,
        /// The action.
        action: DockerAction,
    },
    /// Read a container's config and state.
    DockerInspect {
        /// Node.
        node: String,
        /// Container name.
        container: String,
    },
    /// Summarize a container's recent logs.
    DockerLogsSummary {
        /// Node.
        node: String,
        /// Container name.
        container: String,
        /// How far back.
        since_s: u32,
    },
    /// A guest action.
    Pve(PveAction),
    /// Read a task log.
    PveTaskLog {
        /// Node.
        node: String,
        /// Task id.
        upid: String,
    },
    /// Read a guest's config.
    PveGuestConfig {
        /// The guest.
        guest: GuestRef,
    },
    /// Read a systemd unit's status.
    UnitStatus {
        /// Node.
        node: String,
        /// Unit name.
        unit: String,
    },
}

impl ActionCall {
    /// The catalog id.
    pub fn id(&self) -> ActionId {
        match self {
            Self::Docker { action, .. } => match action {
                DockerAction::Start { .. } => ActionId::DockerStart,
                DockerAction::Stop { .. } => ActionId::DockerStop,
                DockerAction::Restart { .. } => ActionId::DockerRestart,
                DockerAction::Remove { .. } => ActionId::DockerRemove,
            },
            Self::DockerInspect { .. } => ActionId::DockerInspect,
            Self::DockerLogsSummary { .. } => ActionId::DockerLogsSummary,
            Self::Pve(a) => match &a.op {
                PveActionOp::Start => ActionId::PveStart,
                PveActionOp::Shutdown { .. } => ActionId::PveShutdown,
                PveActionOp::Stop => ActionId::PveStop,
                PveActionOp::Reboot => ActionId::PveReboot,
                PveActionOp::Suspend => ActionId::PveSuspend,
                PveActionOp::Resume => ActionId::PveResume,
                PveActionOp::SnapshotCreate { .. } => ActionId::PveSnapshotCreate,
                PveActionOp::SnapshotRollback { .. } => ActionId::PveSnapshotRollback,
                PveActionOp::Migrate { .. } => ActionId::PveMigrate,
                PveActionOp::BackupNow { .. } => ActionId::PveBackupNow,
            },
            Self::PveTaskLog { .. } => ActionId::PveTaskLog,
            Self::PveGuestConfig { .. } => ActionId::PveGuestConfig,
            Self::UnitStatus { .. } => ActionId::HostUnitStatus,
        }
    }

    /// The catalog spec.
    pub fn spec(&self) -> &'static ActionSpec {
        spec(self.id())
    }

    /// The risk class (the catalog's; a test keeps it equal to the
    /// adapters' own classification).
    pub fn risk(&self) -> RiskClass {
        self.spec().risk
    }

    /// The node the command goes to.
    pub fn node(&self) -> &str {
        match self {
            Self::Docker { node, .. }
            | Self::DockerInspect { node, .. }
            | Self::DockerLogsSummary { node, .. }
            | Self::PveTaskLog { node, .. }
            | Self::UnitStatus { node, .. } => node,
            Self::Pve(a) => &a.guest.node,
            Self::PveGuestConfig { guest } => &guest.node,
        }
    }

    /// What it touches.
    pub fn target(&self) -> Target {
        let node = self.node().to_owned();
        match self {
            Self::Docker { action, .. } => Target::Container {
                node,
                name: docker_container(action).to_owned(),
            },
            Self::DockerInspect { container, .. } | Self::DockerLogsSummary { container, .. } => {
                Target::Container {
                    node,
                    name: container.clone(),
                }
            }
            Self::Pve(a) => Target::Guest {
                node,
                vmid: a.guest.vmid,
            },
            Self::PveGuestConfig { guest } => Target::Guest {
                node,
                vmid: guest.vmid,
            },
            Self::PveTaskLog { .. } | Self::UnitStatus { .. } => Target::Node { node },
        }
    }
}

fn docker_container(a: &DockerAction) -> &str {
    match a {
        DockerAction::Start { container }
        | DockerAction::Stop { container, .. }
        | DockerAction::Restart { container, .. }
        | DockerAction::Remove { container, .. } => container,
    }
}

/// Why a step's action or parameters were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Not in the catalog.
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    /// `params` is not a JSON object.
    #[error("params must be an object")]
    ParamsNotObject,
    /// A parameter the action does not take.
    #[error("{action} takes no parameter {param:?}")]
    UnknownParam {
        /// Action.
        action: &'static str,
        /// The parameter given.
        param: String,
    },
    /// A required parameter is missing or null.
    #[error("{action} needs parameter {param}")]
    MissingParam {
        /// Action.
        action: &'static str,
        /// The parameter.
        param: &'static str,
    },
    /// A parameter has the wrong type or value.
    #[error("parameter {param}: {reason}")]
    BadParam {
        /// The parameter.
        param: &'static str,
        /// Why.
        reason: String,
    },
    /// The target is not in the inventory.
    #[error("{0} is not in the inventory")]
    TargetNotFound(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PVal {
    Str(String),
    Num(u32),
    Bool(bool),
    Null,
}

struct Params(BTreeMap<&'static str, PVal>);

impl Params {
    fn str(&self, name: &'static str) -> Result<String, CallError> {
        match self.0.get(name) {
            Some(PVal::Str(s)) => Ok(s.clone()),
            _ => Err(CallError::BadParam {
                param: name,
                reason: "expected a string".into(),
            }),
        }
    }
    fn opt_str(&self, name: &'static str) -> Option<String> {
        match self.0.get(name) {
            Some(PVal::Str(s)) => Some(s.clone()),
            _ => None,
        }
    }
    fn num(&self, name: &'static str) -> Result<u32, CallError> {
        match self.0.get(name) {
            Some(PVal::Num(n)) => Ok(*n),
            _ => Err(CallError::BadParam {
                param: name,
                reason: "expected an integer".into(),
            }),
        }
    }
    fn opt_num(&self, name: &'static str) -> Option<u32> {
        match self.0.get(name) {
            Some(PVal::Num(n)) => Some(*n),
            _ => None,
        }
    }
    fn flag(&self, name: &'static str) -> Result<bool, CallError> {
        match self.0.get(name) {
            Some(PVal::Bool(b)) => Ok(*b),
            _ => Err(CallError::BadParam {
                param: name,
                reason: "expected a boolean".into(),
            }),
        }
    }
}

fn valid_node(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

fn valid_snapname(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && s.len() <= 40
        && c.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn valid_storage(s: &str) -> bool {
    valid_snapname(s)
        || (s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && s.starts_with(|c: char| c.is_ascii_alphabetic()))
}

fn valid_container(s: &str) -> bool {
    // Docker's name rule: [a-zA-Z0-9][a-zA-Z0-9_.-]+ (ids are hex, covered).
    s.len() <= 128
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn valid_unit(s: &str) -> bool {
    s.len() <= 256
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ":_.@-\\".contains(c))
}

/// The node field of a UPID (`UPID:node:...`), if it looks like one.
pub fn upid_node(s: &str) -> Option<&str> {
    if s.len() > 256
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":@!._-".contains(c))
    {
        return None;
    }
    let mut parts = s.split(':');
    if parts.next() != Some("UPID") {
        return None;
    }
    let node = parts.next()?;
    // node, pid, pstart, starttime, type, id, user, and a trailing empty field.
    (parts.count() >= 6 && valid_node(node)).then_some(node)
}

fn check_value(p: &ParamSpec, v: &Value) -> Result<PVal, CallError> {
    let bad = |reason: &str| CallError::BadParam {
        param: p.name,
        reason: reason.to_owned(),
    };
    let string = |ok: fn(&str) -> bool, what: &str| -> Result<PVal, CallError> {
        let s = v.as_str().ok_or_else(|| bad("expected a string"))?;
        if ok(s) {
            Ok(PVal::Str(s.to_owned()))
        } else {
            Err(bad(&format!("not a valid {what}")))
        }
    };
    match p.kind {
        ParamKind::Node => string(valid_node, "node name"),
        ParamKind::Container => string(valid_container, "container name"),
        ParamKind::Snapshot => string(valid_snapname, "snapshot name"),
        ParamKind::Storage => string(valid_storage, "storage id"),
        ParamKind::Unit => string(valid_unit, "unit name"),
        ParamKind::Upid => string(|s| upid_node(s).is_some(), "UPID"),
        ParamKind::Vmid => {
            let n = v.as_u64().ok_or_else(|| bad("expected an integer"))?;
            if (100..=999_999_999).contains(&n) {
                Ok(PVal::Num(
                    u32::try_from(n).map_err(|_| bad("out of range"))?,
                ))
            } else {
                Err(bad("must be 100-999999999"))
            }
        }
        ParamKind::Seconds { min, max } => {
            let n = v.as_u64().ok_or_else(|| bad("expected an integer"))?;
            match u32::try_from(n) {
                Ok(n) if (min..=max).contains(&n) => Ok(PVal::Num(n)),
                _ => Err(bad(&format!("must be {min}-{max}"))),
            }
        }
        ParamKind::Bool => v
            .as_bool()
            .map(PVal::Bool)
            .ok_or_else(|| bad("expected a boolean")),
        ParamKind::Choice(options) => {
            let s = v.as_str().ok_or_else(|| bad("expected a string"))?;
            if options.contains(&s) {
                Ok(PVal::Str(s.to_owned()))
            } else {
                Err(bad(&format!("must be one of {}", options.join(", "))))
            }
        }
    }
}

fn parse_params(spec: &ActionSpec, params: &Value) -> Result<Params, Vec<CallError>> {
    let Some(obj) = params.as_object() else {
        return Err(vec![CallError::ParamsNotObject]);
    };
    let mut errs = Vec::new();
    for k in obj.keys() {
        if !spec.params.iter().any(|p| p.name == k) {
            errs.push(CallError::UnknownParam {
                action: spec.name,
                param: k.clone(),
            });
        }
    }
    let mut out = BTreeMap::new();
    for p in spec.params {
        match obj.get(p.name) {
            None | Some(Value::Null) if p.required => errs.push(CallError::MissingParam {
                action: spec.name,
                param: p.name,
            }),
            None | Some(Value::Null) => {
                out.insert(p.name, PVal::Null);
            }
            Some(v) => match check_value(p, v) {
                Ok(val) => {
                    out.insert(p.name, val);
                }
                Err(e) => errs.push(e),
            },
        }
    }
    if errs.is_empty() {
        Ok(Params(out))
    } else {
        Err(errs)
    }
}

/// Checks a step's action name and parameters against the catalog and the
/// inventory (the target must exist) and builds the typed call.
pub fn build_call(
    action: &str,
    params: &Value,
    inv: &Inventory,
) -> Result<ActionCall, Vec<CallError>> {
    let spec = lookup(action).ok_or_else(|| vec![CallError::UnknownAction(action.to_owned())])?;
    let p = parse_params(spec, params)?;
    build_typed(spec, &p, inv).map_err(|e| vec![e])
}

fn build_typed(spec: &ActionSpec, p: &Params, inv: &Inventory) -> Result<ActionCall, CallError> {
    let node = p.str("node")?;
    if inv.node(&node).is_none() {
        return Err(CallError::TargetNotFound(format!("node {node}")));
    }
    let guest = || -> Result<GuestRef, CallError> {
        let vmid = p.num("vmid")?;
        let g = inv
            .guest(&node, vmid)
            .ok_or_else(|| CallError::TargetNotFound(format!("guest {vmid} on {node}")))?;
        Ok(GuestRef {
            node: node.clone(),
            vmid,
            kind: g.kind,
        })
    };
    let container = || -> Result<String, CallError> {
        let name = p.str("container")?;
        if inv.container(&node, &name).is_none() {
            return Err(CallError::TargetNotFound(format!(
                "container {name} on {node}"
            )));
        }
        Ok(name)
    };
    let pve = |op: PveActionOp| -> Result<ActionCall, CallError> {
        Ok(ActionCall::Pve(PveAction {
            guest: guest()?,
            op,
        }))
    };
    let docker = |action: DockerAction| ActionCall::Docker {
        node: node.clone(),
        action,
    };
    Ok(match spec.id {
        ActionId::DockerStart => docker(DockerAction::Start {
            container: container()?,
        }),
        ActionId::DockerStop => docker(DockerAction::Stop {
            container: container()?,
            timeout_s: p.opt_num("timeout_s"),
        }),
        ActionId::DockerRestart => docker(DockerAction::Restart {
            container: container()?,
            timeout_s: p.opt_num("timeout_s"),
        }),
        ActionId::DockerRemove => docker(DockerAction::Remove {
            container: container()?,
            force: p.flag("force")?,
        }),
        ActionId::DockerInspect => ActionCall::DockerInspect {
            container: container()?,
            node: node.clone(),
        },
        ActionId::DockerLogsSummary => ActionCall::DockerLogsSummary {
            container: container()?,
            since_s: p.num("since_s")?,
            node: node.clone(),
        },
        ActionId::PveStart => pve(PveActionOp::Start)?,
        ActionId::PveShutdown => pve(PveActionOp::Shutdown {
            timeout_s: p.opt_num("timeout_s"),
        })?,
        ActionId::PveStop => pve(PveActionOp::Stop)?,
        ActionId::PveReboot => pve(PveActionOp::Reboot)?,
        ActionId::PveSuspend => pve(PveActionOp::Suspend)?,
        ActionId::PveResume => pve(PveActionOp::Resume)?,
        ActionId::PveSnapshotCreate => pve(PveActionOp::SnapshotCreate {
            name: p.str("name")?,
        })?,
        ActionId::PveSnapshotRollback => pve(PveActionOp::SnapshotRollback {
            name: p.str("name")?,
        })?,
        ActionId::PveMigrate => pve(PveActionOp::Migrate {
            target: p.str("target")?,
            online: p.flag("online")?,
        })?,
        ActionId::PveBackupNow => pve(PveActionOp::BackupNow {
            storage: p.opt_str("storage"),
            mode: match p.str("mode")?.as_str() {
                "suspend" => BackupMode::Suspend,
                "stop" => BackupMode::Stop,
                _ => BackupMode::Snapshot,
            },
        })?,
        ActionId::PveTaskLog => ActionCall::PveTaskLog {
            upid: p.str("upid")?,
            node: node.clone(),
        },
        ActionId::PveGuestConfig => ActionCall::PveGuestConfig { guest: guest()? },
        ActionId::HostUnitStatus => ActionCall::UnitStatus {
            unit: p.str("unit")?,
            node: node.clone(),
        },
    })
}

/// The step's `params` object for a call (inverse of [`build_call`]).
pub fn call_params(call: &ActionCall) -> Value {
    match call {
        ActionCall::Docker { node, action } => match action {
            DockerAction::Start { container } => json!({"node": node, "container": container}),
            DockerAction::Stop {
                container,
                timeout_s,
            }
            | DockerAction::Restart {
                container,
                timeout_s,
            } => json!({"node": node, "container": container, "timeout_s": timeout_s}),
            DockerAction::Remove { container, force } => {
                json!({"node": node, "container": container, "force": force})
            }
        },
        ActionCall::DockerInspect { node, container } => {
            json!({"node": node, "container": container})
        }
        ActionCall::DockerLogsSummary {
            node,
            container,
            since_s,
        } => json!({"node": node, "container": container, "since_s": since_s}),
        ActionCall::Pve(a) => {
            let mut m = Map::new();
            m.insert("node".into(), json!(a.guest.node));
            m.insert("vmid".into(), json!(a.guest.vmid));
            match &a.op {
                PveActionOp::Shutdown { timeout_s } => {
                    m.insert("timeout_s".into(), json!(timeout_s));
                }
                PveActionOp::SnapshotCreate { name } | PveActionOp::SnapshotRollback { name } => {
                    m.insert("name".into(), json!(name));
                }
                PveActionOp::Migrate { target, online } => {
                    m.insert("target".into(), json!(target));
                    m.insert("online".into(), json!(online));
                }
                PveActionOp::BackupNow { storage, mode } => {
                    m.insert("storage".into(), json!(storage));
                    m.insert("mode".into(), json!(mode.as_str()));
                }
                _ => {}
            }
            Value::Object(m)
        }
        ActionCall::PveTaskLog { node, upid } => json!({"node": node, "upid": upid}),
        ActionCall::PveGuestConfig { guest } => json!({"node": guest.node, "vmid": guest.vmid}),
        ActionCall::UnitStatus { node, unit } => json!({"node": node, "unit": unit}),
    }
}

// ---------------------------------------------------------------------------
// Preconditions and simulated effects
// ---------------------------------------------------------------------------

/// Checks the call's preconditions against `inv`; returns every failure.
pub fn check_preconditions(call: &ActionCall, inv: &Inventory) -> Vec<String> {
    let mut fails = Vec::new();
    let target = call.target();
    if !inv.has(&target) {
        fails.push(format!("{target} is not in the inventory"));
        return fails;
    }
    let node = call.node();
    let guest = match call {
        ActionCall::Pve(a) => inv.guest(node, a.guest.vmid),
        ActionCall::PveGuestConfig { guest } => inv.guest(node, guest.vmid),
        _ => None,
    };
    let container = match &target {
        Target::Container { name, .. } => inv.container(node, name),
        _ => None,
    };
    for pre in call.spec().preconditions {
        match pre {
            Precondition::NodeOnline => {
                if !inv.node(node).is_some_and(|n| n.online) {
                    fails.push(format!("node {node} is offline"));
                }
            }
            Precondition::GuestStatusIs(states) => {
                if let Some(g) = guest
                    && !states.contains(&g.status.as_str())
                {
                    fails.push(format!(
                        "{target} is {} (needs {})",
                        g.status,
                        states.join(" or ")
                    ));
                }
            }
            Precondition::GuestNotLocked => {
                if let Some(lock) = guest.and_then(|g| g.lock.as_deref()) {
                    fails.push(format!("{target} is locked ({lock})"));
                }
            }
            Precondition::GuestNotTemplate => {
                if guest.is_some_and(|g| g.template) {
                    fails.push(format!("{target} is a template"));
                }
            }
            Precondition::SnapshotExists | Precondition::SnapshotAbsent => {
                let name = match call {
                    ActionCall::Pve(PveAction {
                        op:
                            PveActionOp::SnapshotCreate { name }
                            | PveActionOp::SnapshotRollback { name },
                        ..
                    }) => name.as_str(),
                    _ => "",
                };
                let has = guest.is_some_and(|g| g.snapshots.iter().any(|s| s == name));
                if *pre == Precondition::SnapshotExists && !has {
                    fails.push(format!("{target} has no snapshot {name}"));
                }
                if *pre == Precondition::SnapshotAbsent && has {
                    fails.push(format!("{target} already has a snapshot {name}"));
                }
            }
            Precondition::MigrationTargetValid => {
                if let ActionCall::Pve(PveAction {
                    op: PveActionOp::Migrate { target: to, .. },
                    ..
                }) = call
                {
                    let here = inv.node(node).and_then(|n| n.cluster.as_deref());
                    match inv.node(to) {
                        _ if to == node => {
                            fails.push(format!("{target} is already on {to}"));
                        }
                        None => fails.push(format!("target node {to} is not in the inventory")),
                        Some(t) if !t.online => fails.push(format!("target node {to} is offline")),
                        Some(t) if here.is_none() || t.cluster.as_deref() != here => {
                            fails.push(format!("target node {to} is not in the same cluster"));
                        }
                        Some(t) if t.guests.contains_key(&call_vmid(call)) => {
                            fails
                                .push(format!("target node {to} already has a guest with that id"));
                        }
                        Some(_) => {}
                    }
                }
            }
            Precondition::ContainerStateIs(states) => {
                if let Some(c) = container
                    && !states.contains(&c.state)
                {
                    fails.push(format!("{target} is {:?} (needs {states:?})", c.state));
                }
            }
            Precondition::ContainerStoppedOrForce => {
                let force = matches!(
                    call,
                    ActionCall::Docker {
                        action: DockerAction::Remove { force: true, .. },
                        ..
                    }
                );
                if let Some(c) = container
                    && !force
                    && matches!(
                        c.state,
                        ContainerRunState::Running | ContainerRunState::Restarting
                    )
                {
                    fails.push(format!("{target} is running (stop it first or set force)"));
                }
            }
            Precondition::UpidOnNode => {
                if let ActionCall::PveTaskLog { upid, .. } = call
                    && upid_node(upid) != Some(node)
                {
                    fails.push(format!("task {upid} did not run on {node}"));
                }
            }
        }
    }
    fails
}

fn call_vmid(call: &ActionCall) -> u32 {
    match call {
        ActionCall::Pve(a) => a.guest.vmid,
        ActionCall::PveGuestConfig { guest } => guest.vmid,
        _ => 0,
    }
}

/// Applies the call's expected effect to `inv`, so that a later step's
/// preconditions are checked against the state the earlier steps leave.
pub fn simulate(call: &ActionCall, inv: &mut Inventory, now: i64) {
    match call {
        ActionCall::Docker { node, action } => {
            let name = docker_container(action).to_owned();
            match action {
                DockerAction::Remove { .. } => {
                    if let Some(n) = inv.nodes.get_mut(node) {
                        n.containers.remove(&name);
                    }
                }
                other => {
                    if let Some(c) = inv.container_mut(node, &name) {
                        if matches!(other, DockerAction::Stop { .. }) {
                            c.state = ContainerRunState::Exited;
                        } else {
                            c.state = ContainerRunState::Running;
                            c.started_at = Some(now);
                        }
                    }
                }
            }
        }
        ActionCall::Pve(a) => {
            let (node, vmid) = (a.guest.node.as_str(), a.guest.vmid);
            if let PveActionOp::Migrate { target, .. } = &a.op {
                let moved = inv.nodes.get_mut(node).and_then(|n| n.guests.remove(&vmid));
                if let (Some(g), Some(t)) = (moved, inv.nodes.get_mut(target)) {
                    t.guests.insert(vmid, g);
                }
                return;
            }
            let Some(g) = inv.guest_mut(node, vmid) else {
                return;
            };
            match &a.op {
                PveActionOp::Start | PveActionOp::Reboot | PveActionOp::Resume => {
                    g.status = "running".into();
                }
                PveActionOp::Shutdown { .. } | PveActionOp::Stop => g.status = "stopped".into(),
                PveActionOp::Suspend => g.status = "paused".into(),
                PveActionOp::SnapshotCreate { name } => g.snapshots.push(name.clone()),
                PveActionOp::BackupNow { .. } => g.last_backup_at = Some(now),
                PveActionOp::SnapshotRollback { .. } | PveActionOp::Migrate { .. } => {}
            }
        }
        _ => {}
    }
}

/// Things the operator should know before a call runs (not refusals).
pub fn advisories(call: &ActionCall, inv: &Inventory) -> Vec<String> {
    let mut out = Vec::new();
    match call {
        ActionCall::Pve(a) => {
            let vmid = a.guest.vmid;
            let guest = inv.guest(&a.guest.node, vmid);
            if guest.is_some_and(|g| g.ha_managed) {
                match &a.op {
                    PveActionOp::Shutdown { .. } | PveActionOp::Stop => out.push(format!(
                        "guest {vmid} is HA-managed: this goes through ha-manager and sets its HA request state to stopped; HA will not start it again until it is set to started"
                    )),
                    PveActionOp::Start => out.push(format!(
                        "guest {vmid} is HA-managed: the start goes through ha-manager (request state started)"
                    )),
                    PveActionOp::Migrate { .. } => out.push(format!(
                        "guest {vmid} is HA-managed: the migration goes through ha-manager"
                    )),
                    _ => {}
                }
            }
            match &a.op {
                PveActionOp::BackupNow {
                    mode: BackupMode::Stop,
                    ..
                } => out.push(
                    "stop mode shuts the guest down for the backup; agents refuse it unless allow_backup_stop_mode is set"
                        .into(),
                ),
                PveActionOp::Migrate { online: false, .. }
                    if a.guest.kind == GuestKind::Qemu
                        && guest.is_some_and(|g| g.status == "running") =>
                {
                    out.push(format!(
                        "VM {vmid} is running: PVE refuses an offline migration of a running VM; use online"
                    ));
                }
                PveActionOp::Suspend if a.guest.kind == GuestKind::Lxc => {
                    out.push("container suspend (freeze) is experimental in PVE".into());
                }
                _ => {}
            }
        }
        ActionCall::Docker {
            node,
            action:
                DockerAction::Remove {
                    container,
                    force: true,
                },
        } if inv.container(node, container).is_some_and(|c| {
            matches!(
                c.state,
                ContainerRunState::Running | ContainerRunState::Restarting
            )
        }) =>
        {
            out.push(format!(
                "force kills the running container {container} first"
            ));
        }
        _ => {}
    }
    out
}

/// The catalog as JSON, for the API and the dashboard.
pub fn catalog_json() -> Value {
    Value::Array(
        CATALOG
            .iter()
            .map(|a| {
                json!({
                    "name": a.name,
                    "summary": a.summary,
                    "risk": a.risk.as_str(),
                    "params": a.params.iter().map(|p| json!({
                        "name": p.name,
                        "required": p.required,
                        "doc": p.doc,
                        "schema": param_schema(p),
                    })).collect::<Vec<_>>(),
                    "preconditions": a.preconditions.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>(),
                    "effect": a.effect,
                    "verification": a.verification,
                })
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------
// Verification probes
// ---------------------------------------------------------------------------

/// A check over a later inventory that tells whether an action had its
/// expected effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Probe {
    /// The guest's status is `status`.
    GuestStatus {
        /// Node.
        node: String,
        /// Guest.
        vmid: u32,
        /// Expected status.
        status: String,
    },
    /// The guest is listed on `node`.
    GuestOnNode {
        /// Expected node.
        node: String,
        /// Guest.
        vmid: u32,
    },
    /// The snapshot exists.
    SnapshotPresent {
        /// Node.
        node: String,
        /// Guest.
        vmid: u32,
        /// Snapshot.
        name: String,
    },
    /// The guest is unlocked and the snapshot still exists (after a rollback).
    RolledBack {
        /// Node.
        node: String,
        /// Guest.
        vmid: u32,
        /// Snapshot.
        name: String,
    },
    /// The guest's last backup is at or after the action.
    BackupAfterAction {
        /// Node.
        node: String,
        /// Guest.
        vmid: u32,
    },
    /// The container runs and started at or after the action.
    ContainerStartedAfterAction {
        /// Node.
        node: String,
        /// Container.
        name: String,
    },
    /// The container is exited.
    ContainerExited {
        /// Node.
        node: String,
        /// Container.
        name: String,
    },
    /// The container is gone.
    ContainerAbsent {
        /// Node.
        node: String,
        /// Container.
        name: String,
    },
}

/// A probe's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeVerdict {
    /// The expected effect is visible.
    Passed,
    /// Not visible yet (stale inventory, task still settling); ask again.
    Pending(String),
    /// Cannot pass any more (the target vanished, or a contrary state).
    Failed(String),
}

/// The probe for a call; `None` for read-only actions (verified by the
/// agent's successful answer).
pub fn probe_for(call: &ActionCall) -> Option<Probe> {
    match call {
        ActionCall::Docker { node, action } => {
            let (node, name) = (node.clone(), docker_container(action).to_owned());
            Some(match action {
                DockerAction::Start { .. } | DockerAction::Restart { .. } => {
                    Probe::ContainerStartedAfterAction { node, name }
                }
                DockerAction::Stop { .. } => Probe::ContainerExited { node, name },
                DockerAction::Remove { .. } => Probe::ContainerAbsent { node, name },
            })
        }
        ActionCall::Pve(a) => {
            let (node, vmid) = (a.guest.node.clone(), a.guest.vmid);
            let status = |s: &str| Probe::GuestStatus {
                node: node.clone(),
                vmid,
                status: s.to_owned(),
            };
            Some(match &a.op {
                PveActionOp::Start | PveActionOp::Reboot | PveActionOp::Resume => status("running"),
                PveActionOp::Shutdown { .. } | PveActionOp::Stop => status("stopped"),
                PveActionOp::Suspend => status("paused"),
                PveActionOp::SnapshotCreate { name } => Probe::SnapshotPresent {
                    node,
                    vmid,
                    name: name.clone(),
                },
                PveActionOp::SnapshotRollback { name } => Probe::RolledBack {
                    node,
                    vmid,
                    name: name.clone(),
                },
                PveActionOp::Migrate { target, .. } => Probe::GuestOnNode {
                    node: target.clone(),
                    vmid,
                },
                PveActionOp::BackupNow { .. } => Probe::BackupAfterAction { node, vmid },
            })
        }
        _ => None,
    }
}

impl Probe {
    /// Evaluates the probe over `inv`, for an action executed at
    /// `executed_at` (Unix seconds). An inventory older than the action is
    /// always `Pending`.
    pub fn evaluate(&self, inv: &Inventory, executed_at: i64) -> ProbeVerdict {
        if inv.taken_at < executed_at {
            return ProbeVerdict::Pending("inventory is older than the action".into());
        }
        let gone =
            |what: String| ProbeVerdict::Failed(format!("{what} is no longer in the inventory"));
        match self {
            Self::GuestStatus { node, vmid, status } => match inv.guest(node, *vmid) {
                None => gone(format!("guest {vmid} on {node}")),
                Some(g) if g.status == *status => ProbeVerdict::Passed,
                Some(g) => ProbeVerdict::Pending(format!("guest {vmid} is {}", g.status)),
            },
            Self::GuestOnNode { node, vmid } => {
                if inv.guest(node, *vmid).is_some() {
                    ProbeVerdict::Passed
                } else {
                    ProbeVerdict::Pending(format!("guest {vmid} is not on {node} yet"))
                }
            }
            Self::SnapshotPresent { node, vmid, name } => match inv.guest(node, *vmid) {
                None => gone(format!("guest {vmid} on {node}")),
                Some(g) if g.snapshots.contains(name) => ProbeVerdict::Passed,
                Some(_) => ProbeVerdict::Pending(format!("snapshot {name} not listed yet")),
            },
            Self::RolledBack { node, vmid, name } => match inv.guest(node, *vmid) {
                None => gone(format!("guest {vmid} on {node}")),
                Some(g) if !g.snapshots.contains(name) => {
                    ProbeVerdict::Failed(format!("snapshot {name} disappeared"))
                }
                Some(g) => match &g.lock {
                    Some(l) => ProbeVerdict::Pending(format!("guest {vmid} is locked ({l})")),
                    None => ProbeVerdict::Passed,
                },
            },
            Self::BackupAfterAction { node, vmid } => match inv.guest(node, *vmid) {
                None => gone(format!("guest {vmid} on {node}")),
                Some(g) if g.last_backup_at.is_some_and(|t| t >= executed_at) => {
                    ProbeVerdict::Passed
                }
                Some(_) => ProbeVerdict::Pending("no backup newer than the action yet".into()),
            },
            Self::ContainerStartedAfterAction { node, name } => match inv.container(node, name) {
                None => gone(format!("container {name} on {node}")),
                Some(c)
                    if c.state == ContainerRunState::Running
                        && c.started_at.is_some_and(|t| t >= executed_at) =>
                {
                    ProbeVerdict::Passed
                }
                Some(c) => ProbeVerdict::Pending(format!("container {name} is {:?}", c.state)),
            },
            Self::ContainerExited { node, name } => match inv.container(node, name) {
                None => gone(format!("container {name} on {node}")),
                Some(c) if c.state == ContainerRunState::Exited => ProbeVerdict::Passed,
                Some(c) => ProbeVerdict::Pending(format!("container {name} is {:?}", c.state)),
            },
            Self::ContainerAbsent { node, name } => match inv.container(node, name) {
                None => ProbeVerdict::Passed,
                Some(_) => ProbeVerdict::Pending(format!("container {name} still exists")),
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Rollback hints
// ---------------------------------------------------------------------------

/// How to undo a step, shown when a plan stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackHint {
    /// What to do, for a human.
    pub text: String,
    /// A catalog action that undoes it, if there is one.
    pub undo: Option<UndoStep>,
}

/// A catalog action that undoes a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndoStep {
    /// The action.
    pub action: ActionId,
    /// Its parameters.
    pub params: Value,
}

/// The rollback hint for a call.
pub fn rollback_hint(call: &ActionCall) -> RollbackHint {
    let hint = |text: String, undo: Option<ActionCall>| RollbackHint {
        text,
        undo: undo.map(|c| UndoStep {
            action: c.id(),
            params: call_params(&c),
        }),
    };
    match call {
        ActionCall::Docker { node, action } => {
            let container = docker_container(action).to_owned();
            let c = |action| ActionCall::Docker {
                node: node.clone(),
                action,
            };
            match action {
                DockerAction::Start { .. } => hint(
                    format!("stop {container} again"),
                    Some(c(DockerAction::Stop {
                        container: container.clone(),
                        timeout_s: None,
                    })),
                ),
                DockerAction::Stop { .. } => hint(
                    format!("start {container} again"),
                    Some(c(DockerAction::Start {
                        container: container.clone(),
                    })),
                ),
                DockerAction::Restart { .. } => hint(
                    format!("a restart cannot be undone; read {container}'s logs summary"),
                    None,
                ),
                DockerAction::Remove { .. } => hint(
                    format!(
                        "cannot be undone: recreate {container} from its compose file or run command"
                    ),
                    None,
                ),
            }
        }
        ActionCall::Pve(a) => {
            let g = &a.guest;
            let again = |op| {
                Some(ActionCall::Pve(PveAction {
                    guest: g.clone(),
                    op,
                }))
            };
            let tool = if g.kind == GuestKind::Qemu {
                "qm"
            } else {
                "pct"
            };
            match &a.op {
                PveActionOp::Start => hint(
                    format!("shut guest {} down again", g.vmid),
                    again(PveActionOp::Shutdown { timeout_s: None }),
                ),
                PveActionOp::Shutdown { .. } | PveActionOp::Stop => hint(
                    format!("start guest {} again", g.vmid),
                    again(PveActionOp::Start),
                ),
                PveActionOp::Reboot => hint(
                    format!(
                        "a reboot cannot be undone; check guest {}'s console",
                        g.vmid
                    ),
                    None,
                ),
                PveActionOp::Suspend => hint(
                    format!("resume guest {}", g.vmid),
                    again(PveActionOp::Resume),
                ),
                PveActionOp::Resume => hint(
                    format!("suspend guest {} again", g.vmid),
                    again(PveActionOp::Suspend),
                ),
                PveActionOp::SnapshotCreate { name } => hint(
                    format!(
                        "delete the snapshot on {}: {tool} delsnapshot {} {name}",
                        g.node, g.vmid
                    ),
                    None,
                ),
                PveActionOp::SnapshotRollback { name } => hint(
                    format!(
                        "cannot be undone: changes since snapshot {name} are gone; restore from a backup if needed"
                    ),
                    None,
                ),
                PveActionOp::Migrate { target, online } => hint(
                    format!("migrate guest {} back to {}", g.vmid, g.node),
                    Some(ActionCall::Pve(PveAction {
                        guest: GuestRef {
                            node: target.clone(),
                            vmid: g.vmid,
                            kind: g.kind,
                        },
                        op: PveActionOp::Migrate {
                            target: g.node.clone(),
                            online: *online,
                        },
                    })),
                ),
                PveActionOp::BackupNow { .. } => hint(
                    "nothing to undo; delete the new archive from its storage if unwanted".into(),
                    None,
                ),
            }
        }
        _ => hint("nothing to undo (read-only)".into(), None),
    }
}

// ---------------------------------------------------------------------------
// Model schema
// ---------------------------------------------------------------------------

fn param_schema(p: &ParamSpec) -> Value {
    let (ty, extra) = match p.kind {
        ParamKind::Vmid | ParamKind::Seconds { .. } => ("integer", None),
        ParamKind::Bool => ("boolean", None),
        ParamKind::Choice(options) => ("string", Some(json!(options))),
        _ => ("string", None),
    };
    let mut s = Map::new();
    if p.required {
        s.insert("type".into(), json!(ty));
    } else {
        s.insert("type".into(), json!([ty, "null"]));
    }
    s.insert("description".into(), json!(p.doc));
    if let Some(e) = extra {
        let mut e = e;
        if !p.required
            && let Value::Array(xs) = &mut e
        {
            xs.push(Value::Null);
        }
        s.insert("enum".into(), e);
    }
    Value::Object(s)
}

/// Name of the schema given to the model.
pub const PLAN_SCHEMA_NAME: &str = "wingman_plan";

/// The JSON schema a model must answer in when it proposes a plan. Strict:
/// every object closes with `additionalProperties: false` and lists all its
/// properties as required (optional parameters are nullable). Each step is
/// one of the catalog actions (`anyOf`, discriminated by `action`) or a
/// manual step with text only: a model never supplies a command line.
pub fn plan_json_schema() -> Value {
    let mut variants: Vec<Value> = CATALOG
        .iter()
        .map(|a| {
            let props: Map<String, Value> = a
                .params
                .iter()
                .map(|p| (p.name.to_owned(), param_schema(p)))
                .collect();
            let required: Vec<&str> = a.params.iter().map(|p| p.name).collect();
            json!({
                "type": "object",
                "description": format!("{} (risk: {})", a.summary, a.risk.as_str()),
                "additionalProperties": false,
                "required": ["action", "params", "why"],
                "properties": {
                    "action": {"type": "string", "enum": [a.name]},
                    "params": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": required,
                        "properties": props,
                    },
                    "why": {"type": "string", "description": "Why this step, one sentence"},
                }
            })
        })
        .collect();
    variants.push(json!({
        "type": "object",
        "description": "Something the operator must do or check by hand",
        "additionalProperties": false,
        "required": ["action", "text"],
        "properties": {
            "action": {"type": "string", "enum": ["manual"]},
            "text": {"type": "string", "description": "What to do, for a human"},
        }
    }));
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["title", "steps"],
        "properties": {
            "title": {"type": "string", "description": "What the plan achieves, one line"},
            "steps": {
                "type": "array",
                "description": "Ordered steps; prefer read-only diagnostics first",
                "items": {"anyOf": variants},
            },
        }
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
pub(crate) mod tests {
    use super::*;

    /// A small inventory: two clustered PVE nodes, one offline PVE node, and
    /// a Docker host.
    pub(crate) fn inv() -> Inventory {
        let guest = |kind, status: &str, tags: &[&str], snaps: &[&str]| GuestInfo {
            kind,
            name: String::new(),
            status: status.into(),
            ha_managed: false,
            lock: None,
            template: false,
            tags: tags.iter().map(|s| (*s).to_owned()).collect(),
            snapshots: snaps.iter().map(|s| (*s).to_owned()).collect(),
            last_backup_at: None,
        };
        let container = |state| ContainerInfo {
            id: "3f2a".into(),
            state,
            started_at: Some(500),
            tags: vec!["compose:shop".into()],
        };
        let node = |online, cluster: Option<&str>| NodeInfo {
            online,
            cluster: cluster.map(str::to_owned),
            tags: Vec::new(),
            agent_allows_destructive: None,
            guests: BTreeMap::new(),
            containers: BTreeMap::new(),
        };
        let mut pve1 = node(true, Some("lab"));
        pve1.guests
            .insert(100, guest(GuestKind::Qemu, "running", &["core"], &[]));
        pve1.guests.insert(
            101,
            guest(GuestKind::Qemu, "running", &["prod"], &["before_upgrade"]),
        );
        pve1.guests
            .insert(105, guest(GuestKind::Lxc, "stopped", &[], &[]));
        let mut locked = guest(GuestKind::Qemu, "running", &[], &[]);
        locked.lock = Some("backup".into());
        pve1.guests.insert(110, locked);
        let pve2 = node(true, Some("lab"));
        let mut pve3 = node(false, Some("lab"));
        pve3.guests
            .insert(300, guest(GuestKind::Qemu, "stopped", &[], &[]));
        let mut docker1 = node(true, None);
        docker1
            .containers
            .insert("web".into(), container(ContainerRunState::Running));
        docker1
            .containers
            .insert("db".into(), container(ContainerRunState::Exited));
        Inventory {
            taken_at: 1_000,
            nodes: [
                ("pve1".to_owned(), pve1),
                ("pve2".to_owned(), pve2),
                ("pve3".to_owned(), pve3),
                ("docker1".to_owned(), docker1),
            ]
            .into_iter()
            .collect(),
        }
    }

    fn call(action: &str, params: Value) -> ActionCall {
        build_call(action, &params, &inv()).unwrap()
    }

    #[test]
    fn every_id_has_one_spec() {
        let mut names: Vec<&str> = CATALOG.iter().map(|a| a.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOG.len());
        for a in CATALOG {
            assert_eq!(spec(a.id).name, a.name);
            assert_eq!(ActionId::parse(a.name), Some(a.id));
            assert_eq!(serde_json::to_value(a.id).unwrap(), json!(a.name));
        }
        assert_eq!(CATALOG.len(), 19);
    }

    #[test]
    fn builds_typed_calls() {
        let c = call(
            "pve.shutdown",
            json!({"node": "pve1", "vmid": 101, "timeout_s": 60}),
        );
        assert_eq!(
            c,
            ActionCall::Pve(PveAction {
                guest: GuestRef {
                    node: "pve1".into(),
                    vmid: 101,
                    kind: GuestKind::Qemu
                },
                op: PveActionOp::Shutdown {
                    timeout_s: Some(60)
                }
            })
        );
        assert_eq!(c.risk(), RiskClass::Medium);
        // Optional params may be omitted or null.
        let c = call(
            "docker.stop",
            json!({"node": "docker1", "container": "web"}),
        );
        assert_eq!(call_params(&c)["timeout_s"], Value::Null);
        // Round trip through call_params.
        for (a, p) in [
            (
                "pve.migrate",
                json!({"node": "pve1", "vmid": 101, "target": "pve2", "online": true}),
            ),
            (
                "pve.backup_now",
                json!({"node": "pve1", "vmid": 101, "storage": null, "mode": "snapshot"}),
            ),
            (
                "docker.remove",
                json!({"node": "docker1", "container": "db", "force": false}),
            ),
            (
                "host.unit_status",
                json!({"node": "pve1", "unit": "pveproxy.service"}),
            ),
            (
                "docker.logs_summary",
                json!({"node": "docker1", "container": "web", "since_s": 3600}),
            ),
        ] {
            let c = call(a, p.clone());
            assert_eq!(call_params(&c), p, "{a}");
            assert_eq!(c.id().as_str(), a);
        }
    }

    #[test]
    fn rejects_unknown_and_bad_params() {
        let i = inv();
        let e = build_call("shell.exec", &json!({}), &i).unwrap_err();
        assert_eq!(e, vec![CallError::UnknownAction("shell.exec".into())]);
        let e = build_call(
            "pve.start",
            &json!({"node": "pve1", "vmid": 101, "force": true}),
            &i,
        )
        .unwrap_err();
        assert!(matches!(&e[0], CallError::UnknownParam { param, .. } if param == "force"));
        let e = build_call("pve.start", &json!({"node": "pve1"}), &i).unwrap_err();
        assert!(matches!(
            e[0],
            CallError::MissingParam { param: "vmid", .. }
        ));
        for (params, bad) in [
            (json!({"node": "pve1", "vmid": 99}), "vmid"),
            (json!({"node": "pve1", "vmid": "101"}), "vmid"),
            (json!({"node": "-x", "vmid": 101}), "node"),
            (json!({"node": "pve1/../x", "vmid": 101}), "node"),
        ] {
            let e = build_call("pve.start", &params, &i).unwrap_err();
            assert!(
                matches!(e[0], CallError::BadParam { param, .. } if param == bad),
                "{params}"
            );
        }
        let e = build_call(
            "pve.snapshot_create",
            &json!({"node": "pve1", "vmid": 101, "name": "a b; rm -rf /"}),
            &i,
        )
        .unwrap_err();
        assert!(matches!(e[0], CallError::BadParam { param: "name", .. }));
        let e = build_call(
            "docker.stop",
            &json!({"node": "docker1", "container": "web", "timeout_s": 601}),
            &i,
        )
        .unwrap_err();
        assert!(matches!(
            e[0],
            CallError::BadParam {
                param: "timeout_s",
                ..
            }
        ));
        let e = build_call(
            "pve.backup_now",
            &json!({"node": "pve1", "vmid": 101, "storage": null, "mode": "fast"}),
            &i,
        )
        .unwrap_err();
        assert!(matches!(e[0], CallError::BadParam { param: "mode", .. }));
        let e = build_call(
            "host.unit_status",
            &json!({"node": "pve1", "unit": "--all"}),
            &i,
        )
        .unwrap_err();
        assert!(matches!(e[0], CallError::BadParam { param: "unit", .. }));
        assert_eq!(
            build_call("pve.start", &json!([1]), &i).unwrap_err(),
            vec![CallError::ParamsNotObject]
        );
    }

    #[test]
    fn targets_must_exist() {
        let i = inv();
        for (a, p, what) in [
            (
                "pve.start",
                json!({"node": "pve9", "vmid": 101}),
                "node pve9",
            ),
            (
                "pve.start",
                json!({"node": "pve2", "vmid": 101}),
                "guest 101 on pve2",
            ),
            (
                "docker.restart",
                json!({"node": "docker1", "container": "nope", "timeout_s": null}),
                "container nope on docker1",
            ),
        ] {
            let e = build_call(a, &p, &i).unwrap_err();
            assert_eq!(e, vec![CallError::TargetNotFound(what.into())]);
        }
    }

    #[test]
    fn preconditions() {
        let i = inv();
        let pre = |a: &str, p: Value| check_preconditions(&call(a, p), &i);
        assert!(pre("pve.shutdown", json!({"node": "pve1", "vmid": 101})).is_empty());
        assert_eq!(
            pre("pve.start", json!({"node": "pve1", "vmid": 101})),
            vec!["guest 101 on pve1 is running (needs stopped)"]
        );
        assert_eq!(
            pre("pve.shutdown", json!({"node": "pve1", "vmid": 110})),
            vec!["guest 110 on pve1 is locked (backup)"]
        );
        assert_eq!(
            pre("pve.start", json!({"node": "pve3", "vmid": 300})),
            vec!["node pve3 is offline"]
        );
        assert!(
            pre(
                "pve.snapshot_rollback",
                json!({"node": "pve1", "vmid": 101, "name": "before_upgrade"})
            )
            .is_empty()
        );
        assert_eq!(
            pre(
                "pve.snapshot_rollback",
                json!({"node": "pve1", "vmid": 101, "name": "nope"})
            ),
            vec!["guest 101 on pve1 has no snapshot nope"]
        );
        assert_eq!(
            pre(
                "pve.snapshot_create",
                json!({"node": "pve1", "vmid": 101, "name": "before_upgrade"})
            ),
            vec!["guest 101 on pve1 already has a snapshot before_upgrade"]
        );
        assert!(
            pre(
                "pve.migrate",
                json!({"node": "pve1", "vmid": 101, "target": "pve2", "online": true})
            )
            .is_empty()
        );
        assert_eq!(
            pre(
                "pve.migrate",
                json!({"node": "pve1", "vmid": 101, "target": "pve3", "online": true})
            ),
            vec!["target node pve3 is offline"]
        );
        assert_eq!(
            pre(
                "pve.migrate",
                json!({"node": "pve1", "vmid": 101, "target": "docker1", "online": true})
            ),
            vec!["target node docker1 is not in the same cluster"]
        );
        assert_eq!(
            pre(
                "docker.remove",
                json!({"node": "docker1", "container": "web", "force": false})
            ),
            vec!["container web on docker1 is running (stop it first or set force)"]
        );
        assert!(
            pre(
                "docker.remove",
                json!({"node": "docker1", "container": "web", "force": true})
            )
            .is_empty()
        );
        assert!(
            pre(
                "docker.start",
                json!({"node": "docker1", "container": "db"})
            )
            .is_empty()
        );
        assert_eq!(
            pre(
                "docker.start",
                json!({"node": "docker1", "container": "web"})
            )
            .len(),
            1
        );
        assert_eq!(
            pre(
                "pve.task_log",
                json!({"node": "pve1", "upid": "UPID:pve2:0000A1B2:00C0FFEE:65F0A000:qmstart:101:root@pam:"})
            ),
            vec![
                "task UPID:pve2:0000A1B2:00C0FFEE:65F0A000:qmstart:101:root@pam: did not run on pve1"
            ]
        );
    }

    #[test]
    fn simulate_then_probe() {
        let mut i = inv();
        let c = call("pve.shutdown", json!({"node": "pve1", "vmid": 101}));
        let probe = probe_for(&c).unwrap();
        assert!(matches!(
            probe.evaluate(&i, 1_000),
            ProbeVerdict::Pending(_)
        ));
        simulate(&c, &mut i, 1_000);
        assert_eq!(probe.evaluate(&i, 1_000), ProbeVerdict::Passed);
        // Stale inventory never passes.
        assert!(matches!(
            probe.evaluate(&i, 1_001),
            ProbeVerdict::Pending(_)
        ));
        // Migration moves the guest.
        let m = call(
            "pve.migrate",
            json!({"node": "pve1", "vmid": 101, "target": "pve2", "online": true}),
        );
        let probe = probe_for(&m).unwrap();
        simulate(&m, &mut i, 1_000);
        assert_eq!(probe.evaluate(&i, 1_000), ProbeVerdict::Passed);
        assert!(i.guest("pve1", 101).is_none());
        // Container restart needs a fresh start time.
        let mut i = inv();
        let r = call(
            "docker.restart",
            json!({"node": "docker1", "container": "web"}),
        );
        let probe = probe_for(&r).unwrap();
        assert!(matches!(probe.evaluate(&i, 900), ProbeVerdict::Pending(_)));
        simulate(&r, &mut i, 1_000);
        assert_eq!(probe.evaluate(&i, 1_000), ProbeVerdict::Passed);
        // A vanished guest fails.
        let s = probe_for(&call("pve.start", json!({"node": "pve1", "vmid": 105}))).unwrap();
        let mut i = inv();
        i.nodes.get_mut("pve1").unwrap().guests.remove(&105);
        assert!(matches!(s.evaluate(&i, 1_000), ProbeVerdict::Failed(_)));
        // Removal passes once the container is gone.
        let mut i = inv();
        let rm = call(
            "docker.remove",
            json!({"node": "docker1", "container": "db", "force": false}),
        );
        let probe = probe_for(&rm).unwrap();
        assert!(matches!(
            probe.evaluate(&i, 1_000),
            ProbeVerdict::Pending(_)
        ));
        simulate(&rm, &mut i, 1_000);
        assert_eq!(probe.evaluate(&i, 1_000), ProbeVerdict::Passed);
        // Backups.
        let mut i = inv();
        let b = call(
            "pve.backup_now",
            json!({"node": "pve1", "vmid": 101, "mode": "snapshot"}),
        );
        let probe = probe_for(&b).unwrap();
        assert!(matches!(
            probe.evaluate(&i, 1_000),
            ProbeVerdict::Pending(_)
        ));
        simulate(&b, &mut i, 1_000);
        assert_eq!(probe.evaluate(&i, 1_000), ProbeVerdict::Passed);
        // Read-only actions have no probe.
        assert!(
            probe_for(&call(
                "pve.guest_config",
                json!({"node": "pve1", "vmid": 101})
            ))
            .is_none()
        );
    }

    #[test]
    fn rollback_hints() {
        let h = rollback_hint(&call("pve.shutdown", json!({"node": "pve1", "vmid": 101})));
        let undo = h.undo.unwrap();
        assert_eq!(undo.action, ActionId::PveStart);
        assert_eq!(undo.params, json!({"node": "pve1", "vmid": 101}));
        let h = rollback_hint(&call(
            "pve.migrate",
            json!({"node": "pve1", "vmid": 101, "target": "pve2", "online": true}),
        ));
        assert_eq!(
            h.undo.unwrap().params,
            json!({"node": "pve2", "vmid": 101, "target": "pve1", "online": true})
        );
        let h = rollback_hint(&call(
            "pve.snapshot_rollback",
            json!({"node": "pve1", "vmid": 101, "name": "before_upgrade"}),
        ));
        assert!(h.undo.is_none() && h.text.starts_with("cannot be undone"));
        let h = rollback_hint(&call(
            "pve.snapshot_create",
            json!({"node": "pve1", "vmid": 105, "name": "s1"}),
        ));
        assert!(h.text.contains("pct delsnapshot 105 s1"));
    }

    #[test]
    fn advisories_for_ha_and_risky_modes() {
        let mut i = inv();
        i.nodes
            .get_mut("pve1")
            .unwrap()
            .guests
            .get_mut(&101)
            .unwrap()
            .ha_managed = true;
        let c = call("pve.shutdown", json!({"node": "pve1", "vmid": 101}));
        let notes = advisories(&c, &i);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("HA request state to stopped"));
        assert!(advisories(&c, &inv()).is_empty());
        let c = call(
            "pve.backup_now",
            json!({"node": "pve1", "vmid": 101, "mode": "stop"}),
        );
        assert!(advisories(&c, &inv())[0].contains("allow_backup_stop_mode"));
        let c = call(
            "pve.migrate",
            json!({"node": "pve1", "vmid": 101, "target": "pve2", "online": false}),
        );
        assert!(advisories(&c, &inv())[0].contains("offline migration"));
        let c = call(
            "docker.remove",
            json!({"node": "docker1", "container": "web", "force": true}),
        );
        assert_eq!(
            advisories(&c, &inv()),
            vec!["force kills the running container web first"]
        );
    }

    #[test]
    fn catalog_json_lists_everything() {
        let j = catalog_json();
        let xs = j.as_array().unwrap();
        assert_eq!(xs.len(), CATALOG.len());
        assert_eq!(xs[0]["name"], "docker.start");
        assert_eq!(xs[0]["risk"], "low");
    }

    /// The adapters' risk, as a class (the adapters' `Risk` has the same
    /// three names; in the repo Docker and PVE each have their own enum).
    fn adapter_class(name: &str) -> RiskClass {
        match name {
            "Low" => RiskClass::Low,
            "Medium" => RiskClass::Medium,
            _ => RiskClass::Destructive,
        }
    }

    #[test]
    fn catalog_risk_equals_the_adapters_risk() {
        let cases = [
            (
                "docker.start",
                json!({"node": "docker1", "container": "db"}),
            ),
            (
                "docker.stop",
                json!({"node": "docker1", "container": "web"}),
            ),
            (
                "docker.restart",
                json!({"node": "docker1", "container": "web"}),
            ),
            (
                "docker.remove",
                json!({"node": "docker1", "container": "db", "force": false}),
            ),
            ("pve.start", json!({"node": "pve1", "vmid": 105})),
            ("pve.shutdown", json!({"node": "pve1", "vmid": 101})),
            ("pve.stop", json!({"node": "pve1", "vmid": 101})),
            ("pve.reboot", json!({"node": "pve1", "vmid": 101})),
            ("pve.suspend", json!({"node": "pve1", "vmid": 101})),
            ("pve.resume", json!({"node": "pve1", "vmid": 101})),
            (
                "pve.snapshot_create",
                json!({"node": "pve1", "vmid": 101, "name": "s"}),
            ),
            (
                "pve.snapshot_rollback",
                json!({"node": "pve1", "vmid": 101, "name": "s"}),
            ),
            (
                "pve.migrate",
                json!({"node": "pve1", "vmid": 101, "target": "pve2", "online": true}),
            ),
            (
                "pve.backup_now",
                json!({"node": "pve1", "vmid": 101, "mode": "snapshot"}),
            ),
        ];
        for (a, p) in cases {
            let c = call(a, p);
            let adapter = match &c {
                ActionCall::Docker { action, .. } => format!("{:?}", action.risk()),
                ActionCall::Pve(x) => {
                    format!("{:?}", wingman_agent::pve::PveActionExt::risk(x))
                }
                _ => String::new(),
            };
            assert_eq!(c.risk(), adapter_class(&adapter), "{a}");
        }
        for a in CATALOG {
            if a.risk != RiskClass::ReadOnly {
                assert!(matches!(
                    a.target,
                    TargetKind::Guest | TargetKind::Container
                ));
            }
        }
    }

    /// Strict-mode rules: every object closed and all properties required.
    fn strict(schema: &Value, path: &str) {
        if let Some(obj) = schema.as_object() {
            if obj.get("type") == Some(&json!("object")) {
                assert_eq!(
                    obj.get("additionalProperties"),
                    Some(&json!(false)),
                    "{path}"
                );
                let props = obj["properties"].as_object().unwrap();
                let req: Vec<&str> = obj["required"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect();
                let mut keys: Vec<&str> = props.keys().map(String::as_str).collect();
                let mut req_sorted = req.clone();
                keys.sort_unstable();
                req_sorted.sort_unstable();
                assert_eq!(keys, req_sorted, "{path}");
            }
            for (k, v) in obj {
                strict(v, &format!("{path}.{k}"));
            }
        } else if let Some(xs) = schema.as_array() {
            for (i, x) in xs.iter().enumerate() {
                strict(x, &format!("{path}[{i}]"));
            }
        }
    }

    #[test]
    fn schema_is_strict_and_covers_the_catalog() {
        let s = plan_json_schema();
        strict(&s, "$");
        let variants = s["properties"]["steps"]["items"]["anyOf"]
            .as_array()
            .unwrap();
        assert_eq!(variants.len(), CATALOG.len() + 1);
        let names: Vec<&str> = variants
            .iter()
            .map(|v| v["properties"]["action"]["enum"][0].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pve.backup_now") && names.contains(&"manual"));
        // The manual variant has no command field.
        let manual = variants.last().unwrap();
        assert!(manual["properties"].get("command").is_none());
        // Optional params are nullable; enum includes null.
        let backup = variants
            .iter()
            .find(|v| v["properties"]["action"]["enum"][0] == "pve.backup_now")
            .unwrap();
        assert_eq!(
            backup["properties"]["params"]["properties"]["storage"]["type"],
            json!(["string", "null"])
        );
    }
}
