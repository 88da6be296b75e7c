//! Wire-type drafts for Proxmox VE facts.
//!
//! These are meant to move into `wingman-protocol` (encoding: postcard), so
//! they follow its rules: serde derive only, no `untagged`, `flatten`,
//! `skip*`, `tag` or `other` attributes, and enum variants are only ever
//! appended. Times are Unix milliseconds (`i64`), sizes are bytes, CPU is a
//! fraction (1.0 = one full CPU for guests, all CPUs for a node), exactly as
//! the PVE API reports them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One Proxmox VE observation. Variants are only appended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PveFact {
    /// Node status (`GET /nodes/{node}/status`).
    Node(PveNode),
    /// One VM or container.
    Guest(PveGuest),
    /// A task started or finished.
    Task(PveTask),
    /// Cluster membership and quorum (`GET /cluster/status`).
    Cluster(PveClusterStatus),
    /// HA manager state (`GET /cluster/ha/status/current`).
    Ha(PveHaStatus),
    /// One storage as seen from this node.
    Storage(PveStorage),
    /// One ZFS pool.
    Zfs(ZfsPool),
    /// One physical disk's SMART summary.
    Smart(SmartDisk),
    /// Outcome of one guest's backup inside a finished `vzdump` task.
    Backup(BackupOutcome),
    /// Pending package updates.
    Updates(PackageUpdates),
    /// Whether the API is usable (auth, privileges, reachability).
    Status(PveStatus),
    /// Outcome of an action the agent executed.
    Action(ActionResult),
    /// An event pushed by the PVE notification system (webhook target),
    /// received by the hub.
    Notification(PveNotification),
    /// A guest's snapshot names (`GET …/{vmid}/snapshot`), sent when they
    /// change: after snapshot tasks, and on a slow periodic refresh.
    Snapshots(GuestSnapshots),
}

/// The snapshots of one guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestSnapshots {
    /// Node.
    pub node: String,
    /// Guest id.
    pub vmid: u32,
    /// VM or container.
    pub kind: GuestKind,
    /// Snapshot names, oldest first (without PVE's `current` pseudo-entry).
    pub names: Vec<String>,
}

impl PveFact {
    /// Stable kind name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Node(_) => "pve_node",
            Self::Guest(_) => "pve_guest",
            Self::Task(_) => "pve_task",
            Self::Cluster(_) => "pve_cluster",
            Self::Ha(_) => "pve_ha",
            Self::Storage(_) => "pve_storage",
            Self::Zfs(_) => "zfs_pool",
            Self::Smart(_) => "smart_disk",
            Self::Backup(_) => "backup_outcome",
            Self::Updates(_) => "package_updates",
            Self::Status(_) => "pve_status",
            Self::Action(_) => "action_result",
            Self::Notification(_) => "pve_notification",
            Self::Snapshots(_) => "pve_snapshots",
        }
    }
}

/// Node status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PveNode {
    /// Node name.
    pub node: String,
    /// `pveversion`, e.g. "pve-manager/9.1.2/…".
    pub pve_version: String,
    /// Running kernel release, e.g. "6.14.8-2-pve".
    pub kernel: String,
    /// Seconds since boot.
    pub uptime_s: u64,
    /// CPU usage as a fraction of all CPUs (0.0-1.0).
    pub cpu: f32,
    /// Logical CPUs.
    pub cpus: u32,
    /// 1, 5 and 15 minute load averages.
    pub load: [f32; 3],
    /// Memory in use, bytes.
    pub mem_used: u64,
    /// Memory total, bytes.
    pub mem_total: u64,
    /// Root filesystem used, bytes.
    pub rootfs_used: u64,
    /// Root filesystem size, bytes.
    pub rootfs_total: u64,
    /// Cluster name, `None` on a standalone node.
    pub cluster_name: Option<String>,
}

/// Guest type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GuestKind {
    /// QEMU/KVM virtual machine.
    Qemu,
    /// LXC container.
    Lxc,
}

impl GuestKind {
    /// The API path segment and `/cluster/resources` type: "qemu" or "lxc".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Qemu => "qemu",
            Self::Lxc => "lxc",
        }
    }

    /// The HA resource prefix: "vm" or "ct" (as in `vm:100`).
    pub fn ha_prefix(self) -> &'static str {
        match self {
            Self::Qemu => "vm",
            Self::Lxc => "ct",
        }
    }

    /// Parses "qemu" or "lxc".
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "qemu" => Some(Self::Qemu),
            "lxc" => Some(Self::Lxc),
            _ => None,
        }
    }
}

/// One VM or container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PveGuest {
    /// Node the guest is on.
    pub node: String,
    /// Guest id.
    pub vmid: u32,
    /// VM or container.
    pub kind: GuestKind,
    /// Name (empty if unset).
    pub name: String,
    /// `running`, `stopped`, `paused`, … as reported.
    pub status: String,
    /// Seconds since start (0 when stopped).
    pub uptime_s: u64,
    /// CPU usage, fraction of one CPU times `cpus` at most.
    pub cpu: f32,
    /// Memory in use, bytes.
    pub mem: u64,
    /// Memory limit, bytes.
    pub maxmem: u64,
    /// Disk in use, bytes (containers only; 0 for VMs).
    pub disk: u64,
    /// Disk size, bytes.
    pub maxdisk: u64,
    /// HA state if HA-managed (`hastate`), e.g. "started".
    pub ha_state: Option<String>,
    /// Config lock, e.g. "backup", "snapshot", "migrate".
    pub lock: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Whether this is a template.
    pub template: bool,
}

/// A parsed task id (`UPID:node:pid:pstart:starttime:type:id:user:`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Upid {
    /// Node that runs the task.
    pub node: String,
    /// Worker PID.
    pub pid: u32,
    /// Worker process start time, clock ticks since boot.
    pub pstart: u64,
    /// Task start, Unix seconds.
    pub starttime: u64,
    /// Task type, e.g. "qmstart", "vzdump".
    pub task_type: String,
    /// Object id, usually the vmid; may be empty.
    pub id: String,
    /// `user@realm` or `user@realm!tokenid`.
    pub user: String,
}

/// A task's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskStatus {
    /// Still running.
    Running,
    /// `TASK OK`.
    Ok,
    /// `TASK WARNINGS: n`.
    Warnings(u32),
    /// `TASK ERROR: …`: a short, log-derived summary (run it through the
    /// redactor before it leaves the node).
    Failed(String),
    /// Finished, but the status is unreadable ("unexpected status", empty).
    Unknown(String),
}

impl TaskStatus {
    /// True for `Ok` and `Warnings`.
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Ok | Self::Warnings(_))
    }

    /// True unless `Running`.
    pub fn is_finished(&self) -> bool {
        !matches!(self, Self::Running)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Running => f.write_str("running"),
            Self::Ok => f.write_str("OK"),
            Self::Warnings(n) => write!(f, "WARNINGS: {n}"),
            Self::Failed(s) => write!(f, "ERROR: {s}"),
            Self::Unknown(s) => write!(f, "unknown: {s}"),
        }
    }
}

/// A task started or finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PveTask {
    /// The task id.
    pub upid: Upid,
    /// Its state.
    pub status: TaskStatus,
    /// Start, Unix ms (from the UPID).
    pub start_ms: i64,
    /// End, Unix ms, once finished.
    pub end_ms: Option<i64>,
}

/// One cluster member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// Node name.
    pub name: String,
    /// Whether it is online.
    pub online: bool,
    /// Whether it is the node that answered.
    pub local: bool,
    /// Corosync node id.
    pub nodeid: Option<u32>,
    /// Cluster address.
    pub ip: Option<String>,
}

/// Cluster membership and quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PveClusterStatus {
    /// Cluster name, `None` on a standalone node.
    pub cluster_name: Option<String>,
    /// Quorate (a standalone node is always quorate).
    pub quorate: bool,
    /// Node count the cluster reports.
    pub node_count: u32,
    /// corosync config version.
    pub config_version: Option<u64>,
    /// Members.
    pub nodes: Vec<ClusterNode>,
}

/// One HA resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaService {
    /// Service id, e.g. "vm:100".
    pub sid: String,
    /// Verbose state, e.g. "started", "starting", "fence", "error".
    pub state: String,
    /// Node it is on.
    pub node: String,
    /// Requested state from the resource config.
    pub request_state: Option<String>,
    /// State as seen by the CRM.
    pub crm_state: Option<String>,
}

/// One local resource manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaLrm {
    /// Node.
    pub node: String,
    /// Status text, e.g. "pve1 (active, Tue Jun 10 10:00:00 2025)".
    pub status: String,
}

/// Something HA is fencing or has to fence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaFencing {
    /// Node being fenced.
    pub node: String,
    /// Service waiting on the fence, if the entry is a service.
    pub sid: Option<String>,
    /// Short description.
    pub detail: String,
}

/// HA manager state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PveHaStatus {
    /// Quorate as HA sees it.
    pub quorate: bool,
    /// Master (CRM) status text, empty if no master.
    pub manager_status: String,
    /// Current master node.
    pub master_node: Option<String>,
    /// LRMs.
    pub lrms: Vec<HaLrm>,
    /// Resources.
    pub services: Vec<HaService>,
    /// Fencing in progress (services waiting for their node to be fenced).
    pub fencing: Vec<HaFencing>,
    /// PVE 9.x watchdog state from the `fencing` entry (`armed-state`:
    /// armed, standby, disarming, disarmed).
    pub armed_state: Option<String>,
}

/// One storage as seen from a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PveStorage {
    /// Node that reported it.
    pub node: String,
    /// Storage id.
    pub storage: String,
    /// Storage type, e.g. "dir", "zfspool", "lvmthin", "pbs".
    pub kind: String,
    /// Content types, e.g. ["images", "rootdir"].
    pub content: Vec<String>,
    /// Used bytes.
    pub used: u64,
    /// Total bytes.
    pub total: u64,
    /// Accessible.
    pub active: bool,
    /// Enabled in the config.
    pub enabled: bool,
    /// Shared between nodes.
    pub shared: bool,
    /// Estimated seconds until full at the recent fill rate; `None` if not
    /// filling or not enough history.
    pub time_to_full_s: Option<u64>,
}

/// Last or current scrub/resilver of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubResult {
    /// True for a resilver, false for a scrub.
    pub resilver: bool,
    /// Still running.
    pub in_progress: bool,
    /// Errors found.
    pub errors: u64,
    /// Bytes repaired (resilvered).
    pub repaired: u64,
    /// When it finished, Unix ms (node local time read as UTC).
    pub finished_ms: Option<i64>,
    /// How long it took.
    pub duration_s: Option<u64>,
}

/// A vdev that is not ONLINE or has errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VdevProblem {
    /// Vdev name, e.g. "sdb" or "mirror-0".
    pub name: String,
    /// State, e.g. "FAULTED", "DEGRADED", "UNAVAIL".
    pub state: String,
    /// Read errors.
    pub read: u64,
    /// Write errors.
    pub write: u64,
    /// Checksum errors.
    pub cksum: u64,
    /// Message, e.g. "was /dev/sdb1".
    pub msg: String,
}

/// One ZFS pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZfsPool {
    /// Node.
    pub node: String,
    /// Pool name.
    pub name: String,
    /// Health, e.g. "ONLINE", "DEGRADED", "FAULTED".
    pub health: String,
    /// Size, bytes.
    pub size: u64,
    /// Allocated, bytes.
    pub alloc: u64,
    /// Free, bytes.
    pub free: u64,
    /// Fragmentation, percent.
    pub frag: u32,
    /// `status:` text of `zpool status`, if any.
    pub status: Option<String>,
    /// `action:` text, if any.
    pub action: Option<String>,
    /// `errors:` text, e.g. "No known data errors".
    pub errors: Option<String>,
    /// Last/current scrub or resilver.
    pub scrub: Option<ScrubResult>,
    /// Vdevs that are not ONLINE or have error counters.
    pub problems: Vec<VdevProblem>,
}

/// SMART health summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SmartHealth {
    /// "PASSED" (ATA) or "OK" (SAS).
    Passed,
    /// "FAILED!" or anything containing FAIL.
    Failed,
    /// "UNKNOWN", "SMART Disabled", missing.
    Unknown,
}

/// One disk's SMART summary (`GET /nodes/{node}/disks/list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmartDisk {
    /// Node.
    pub node: String,
    /// Device path, e.g. "/dev/sda".
    pub devpath: String,
    /// Model.
    pub model: String,
    /// Serial.
    pub serial: String,
    /// "hdd", "ssd", "nvme", "usb", "unknown".
    pub disk_type: String,
    /// Normalised health.
    pub health: SmartHealth,
    /// Health text as reported.
    pub health_raw: String,
    /// Remaining life in percent (SSD/NVMe), `None` if "N/A".
    pub wearout: Option<u8>,
}

/// Outcome of one guest's backup within a `vzdump` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupOutcome {
    /// Guest.
    pub vmid: u32,
    /// The `vzdump` task.
    pub upid: Upid,
    /// Whether this guest's backup succeeded.
    pub ok: bool,
    /// Archive size, bytes (file-based storages only).
    pub size_bytes: Option<u64>,
    /// Duration of this guest's backup.
    pub duration_s: Option<u64>,
    /// Target storage.
    pub storage: Option<String>,
    /// Short error text when it failed (log-derived; redact before sending).
    pub error_summary: Option<String>,
    /// When the task ended, Unix ms.
    pub end_ms: Option<i64>,
}

/// Pending package updates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageUpdates {
    /// Node.
    pub node: String,
    /// Packages with an update.
    pub total: u32,
    /// Security updates, `None` when the API cannot tell (it reports only
    /// `Origin`, which is "Debian" for both main and security).
    pub security: Option<u32>,
    /// First package names, sorted (at most 64).
    pub packages: Vec<String>,
}

/// Why the API is not (fully) usable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PveProblem {
    /// All good.
    None,
    /// 401: token unknown, wrong secret, expired or user disabled.
    Unauthorized,
    /// 403: the token lacks a privilege.
    Forbidden {
        /// ACL path from the error, e.g. "/nodes/pve1".
        path: Option<String>,
        /// Missing privilege(s), e.g. ["Sys.Audit"].
        privileges: Vec<String>,
    },
    /// Connection refused, 5xx, or pveproxy not answering.
    ApiDown,
    /// The node presented a certificate whose SHA-256 does not match the pin.
    CertificateMismatch {
        /// Fingerprint the node presented (colon-separated hex), if seen.
        presented: Option<String>,
    },
    /// The request timed out.
    Timeout,
    /// The answer could not be understood.
    BadResponse,
}

/// Whether the PVE API is usable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PveStatus {
    /// Node.
    pub node: String,
    /// The API answered (false for down, timeout, TLS, auth failures).
    pub reachable: bool,
    /// What is wrong.
    pub problem: PveProblem,
    /// API path that showed the problem.
    pub endpoint: Option<String>,
    /// One-line explanation for the operator.
    pub message: String,
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionOutcome {
    /// The task(s) ran to the end; see `status`.
    Completed,
    /// The local policy refused it; nothing was sent.
    Refused,
    /// The API rejected the request (no task was created).
    RequestFailed,
    /// Still running when the follow deadline passed.
    TimedOut,
}

/// Outcome of an executed action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    /// Action name, e.g. "start", "snapshot_rollback".
    pub action: String,
    /// Node the request went to.
    pub node: String,
    /// Guest.
    pub vmid: u32,
    /// Guest type.
    pub kind: GuestKind,
    /// How it ended.
    pub outcome: ActionOutcome,
    /// The task that decided the outcome (for HA guests: the real worker
    /// task, e.g. `qmstart`, not the `hastart` request).
    pub upid: Option<Upid>,
    /// Final task status (`Running` if timed out).
    pub status: TaskStatus,
    /// Every task followed, in order (HA request task first).
    pub chain: Vec<Upid>,
    /// Final HA service state, for HA-managed guests.
    pub ha_state: Option<String>,
    /// One-line summary (log-derived on failure; redact before sending).
    pub message: String,
    /// Wall time from request to outcome.
    pub duration_ms: u64,
}
/// An event of the PVE notification system (PVE 8.3+ webhook target), as
/// the hub stores it. Free text is redacted and masked into templates
/// before it is kept: the notification's `message` can carry backup logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PveNotification {
    /// `fields.hostname`: the node the event is about (for `fencing`, the
    /// fenced node).
    pub node: String,
    /// `fields.type`: `vzdump`, `replication`, `fencing`, `package-updates`,
    /// `system-mail`, or another.
    pub kind: String,
    /// `info`, `notice`, `warning`, `error` or `unknown`.
    pub severity: String,
    /// The rendered title (redacted).
    pub title: String,
    /// `fields.job-id`, for scheduled jobs.
    pub job_id: Option<String>,
    /// PVE's timestamp, Unix ms.
    pub at_ms: i64,
    /// Up to 8 distinct masked templates of the message lines that report a
    /// problem (error, failed, ...), with how often each occurred. The
    /// message itself is never kept.
    pub problems: Vec<(crate::logs::MaskedTemplate, u32)>,
    /// Lines in the message.
    pub message_lines: u32,
}

/// The guest an action targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRef {
    /// Node the guest is on (the request goes there).
    pub node: String,
    /// Guest id.
    pub vmid: u32,
    /// VM or container.
    pub kind: GuestKind,
}

/// `vzdump --mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupMode {
    /// Live snapshot (default, no downtime).
    Snapshot,
    /// Suspend during the backup.
    Suspend,
    /// Stop the guest for the backup.
    Stop,
}

impl BackupMode {
    /// The API value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Suspend => "suspend",
            Self::Stop => "stop",
        }
    }
}

/// What to do to a guest. Variants are only appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PveActionOp {
    /// Start.
    Start,
    /// ACPI/graceful shutdown, with an optional timeout in seconds.
    Shutdown {
        /// Seconds to wait before PVE gives up.
        timeout_s: Option<u32>,
    },
    /// Hard stop (power-pull).
    Stop,
    /// Reboot.
    Reboot,
    /// Suspend (pause).
    Suspend,
    /// Resume.
    Resume,
    /// Create a snapshot.
    SnapshotCreate {
        /// Snapshot name.
        name: String,
    },
    /// Roll back to a snapshot.
    SnapshotRollback {
        /// Snapshot name.
        name: String,
    },
    /// Migrate to another node.
    Migrate {
        /// Target node.
        target: String,
        /// Live migration (VMs) / restart mode (containers).
        online: bool,
    },
    /// Back up now.
    BackupNow {
        /// Target storage (PVE default if `None`).
        storage: Option<String>,
        /// Mode.
        mode: BackupMode,
    },
}

/// A typed action on one guest, sent by the hub as
/// [`crate::CommandBody::Pve`]; the agent's local policy decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PveAction {
    /// Target.
    pub guest: GuestRef,
    /// Operation.
    pub op: PveActionOp,
}

impl PveAction {
    /// Stable name, e.g. "start", "snapshot_rollback".
    pub fn name(&self) -> &'static str {
        match &self.op {
            PveActionOp::Start => "start",
            PveActionOp::Shutdown { .. } => "shutdown",
            PveActionOp::Stop => "stop",
            PveActionOp::Reboot => "reboot",
            PveActionOp::Suspend => "suspend",
            PveActionOp::Resume => "resume",
            PveActionOp::SnapshotCreate { .. } => "snapshot_create",
            PveActionOp::SnapshotRollback { .. } => "snapshot_rollback",
            PveActionOp::Migrate { .. } => "migrate",
            PveActionOp::BackupNow { .. } => "backup_now",
        }
    }
}

pub mod upid;
