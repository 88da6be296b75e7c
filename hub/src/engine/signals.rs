//! Normalised signals: what the hub feeds the engine after mapping wire facts,
//! presence changes and PVE notifications.
//!
//! A [`Signal`] is an observation time plus a [`SignalBody`]. In JSON the
//! body is flattened and tagged by `"signal"`:
//!
//! ```json
//! {"at_ms": 1700000000000, "signal": "node_offline", "node": "pve1"}
//! ```
//!
//! Log-derived signals carry masked templates only (the agent's miner and
//! redactor made them); the engine never sees a raw log line.

use serde::{Deserialize, Serialize};

/// One observation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// When it was observed (agent or hub wall clock), Unix ms.
    pub at_ms: i64,
    /// What was observed.
    #[serde(flatten)]
    pub body: SignalBody,
}

impl Signal {
    /// A signal observed at `at_ms`.
    pub fn new(at_ms: i64, body: SignalBody) -> Self {
        Self { at_ms, body }
    }
}

/// Guest type on Proxmox VE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestKind {
    /// A QEMU virtual machine.
    Qemu,
    /// An LXC container.
    Lxc,
}

impl GuestKind {
    /// Short name used in text: `vm` or `ct`.
    pub fn short(self) -> &'static str {
        match self {
            Self::Qemu => "vm",
            Self::Lxc => "ct",
        }
    }
}

/// Guest run state, from `/cluster/resources` `status` (plus QMP `io-error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestStatus {
    /// Running.
    Running,
    /// Stopped.
    Stopped,
    /// Paused (may be intentional, e.g. suspend-mode backup).
    Paused,
    /// Suspended to disk.
    Suspended,
    /// Paused by QEMU because of a storage I/O error.
    IoError,
    /// Anything else (including the status of guests on an offline node).
    #[serde(other)]
    Unknown,
}

/// Docker/Podman container event action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerEventKind {
    /// Main process exited (see `exit_code`).
    Die,
    /// OOM kill in the container's cgroup.
    Oom,
    /// `health_status: unhealthy`.
    Unhealthy,
    /// `health_status: healthy`.
    Healthy,
    /// Restarted via API/CLI.
    Restart,
    /// Started.
    Start,
    /// Stop requested and completed.
    Stop,
    /// Signal sent via API/CLI.
    Kill,
    /// Removed.
    Destroy,
    /// Anything else (ignored).
    #[serde(other)]
    Other,
}

/// ZFS pool health as printed by `zpool status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PoolHealth {
    /// Healthy.
    Online,
    /// Redundancy lost, still serving.
    Degraded,
    /// Not serving.
    Faulted,
    /// Taken offline by the administrator.
    Offline,
    /// Devices missing.
    Unavail,
    /// Device removed.
    Removed,
    /// I/O suspended.
    Suspended,
    /// Anything else.
    #[serde(other)]
    Unknown,
}

impl PoolHealth {
    /// Upper-case name as `zpool` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "ONLINE",
            Self::Degraded => "DEGRADED",
            Self::Faulted => "FAULTED",
            Self::Offline => "OFFLINE",
            Self::Unavail => "UNAVAIL",
            Self::Removed => "REMOVED",
            Self::Suspended => "SUSPENDED",
            Self::Unknown => "UNKNOWN",
        }
    }
}

/// Where a log template came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogSourceKind {
    /// The journal; the name is the unit or syslog identifier.
    Journal,
    /// A log file; the name is its path.
    File,
    /// A container's output; the name is the container.
    Container,
}

impl LogSourceKind {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Journal => "journal",
            Self::File => "file",
            Self::Container => "container",
        }
    }
}

/// A mounted filesystem's size, from a host sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsSample {
    /// Mount point.
    pub mount: String,
    /// Size in bytes.
    pub total_bytes: u64,
    /// Available bytes.
    pub avail_bytes: u64,
}

/// The kinds of signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "signal", rename_all = "snake_case")]
pub enum SignalBody {
    /// The hub knows this node (enrolled agent or PVE cluster member). The
    /// shell sends one per node at start and on enrollment.
    NodeRegistered {
        /// Node name.
        node: String,
    },
    /// The node was removed (agent revoked): its conditions clear and its
    /// detector state is forgotten.
    NodeRemoved {
        /// Node name.
        node: String,
    },
    /// The agent is connected again (presence sweep).
    NodeOnline {
        /// Node name.
        node: String,
    },
    /// The agent missed its heartbeats (presence sweep) or PVE reports the
    /// node offline.
    NodeOffline {
        /// Node name.
        node: String,
    },
    /// Periodic host indicators.
    HostSample {
        /// Node name.
        node: String,
        /// CPU busy, 0-100.
        cpu_pct: f32,
        /// Memory used, 0-100.
        mem_pct: f32,
        /// Swap used, 0-100.
        swap_pct: f32,
        /// 1-minute load average.
        load1: f32,
        /// Logical CPUs.
        cpu_count: u32,
        /// I/O wait share, 0-100, where known.
        #[serde(default)]
        iowait_pct: Option<f32>,
        /// Mounted filesystems.
        #[serde(default)]
        filesystems: Vec<FsSample>,
    },
    /// One masked template's count in one summary window.
    LogTemplate {
        /// Node name.
        node: String,
        /// Source kind.
        source_kind: LogSourceKind,
        /// Unit, file path or container name.
        source: String,
        /// Stable template id (FNV-1a 64 of the text).
        template_id: u64,
        /// The masked template text.
        template: String,
        /// Lines in the window.
        count: u32,
        /// Worst syslog priority seen, 0 (emerg) .. 7 (debug).
        severity: u8,
        /// First time this template appeared on the node.
        #[serde(default)]
        new_template: bool,
        /// Far above the template's own baseline.
        #[serde(default)]
        burst: bool,
    },
    /// A guest's state (hub poll of `/cluster/resources`).
    GuestState {
        /// Node the guest is on.
        node: String,
        /// VMID.
        guest_id: u32,
        /// QEMU or LXC.
        guest_kind: GuestKind,
        /// Guest name.
        #[serde(default)]
        name: String,
        /// Run state.
        status: GuestStatus,
        /// The hub expects it to run (onboot, or running before and no
        /// operator stop task since).
        #[serde(default)]
        expected_running: bool,
        /// Managed by PVE HA.
        #[serde(default)]
        ha_managed: bool,
    },
    /// A guest process died ungracefully (`qmeventd` cleanup with
    /// `graceful=0`, LXC abort).
    GuestCrashed {
        /// Node.
        node: String,
        /// VMID.
        guest_id: u32,
        /// QEMU or LXC.
        guest_kind: GuestKind,
        /// Guest name.
        #[serde(default)]
        name: String,
        /// Short masked reason.
        #[serde(default)]
        reason: String,
    },
    /// A container lifecycle event.
    ContainerEvent {
        /// Docker host.
        node: String,
        /// Container name.
        container: String,
        /// Action.
        kind: ContainerEventKind,
        /// Exit code for `die`.
        #[serde(default)]
        exit_code: Option<i64>,
    },
    /// The agent saw a restart loop itself (restart policy counter).
    ContainerRestartLoop {
        /// Docker host.
        node: String,
        /// Container name.
        container: String,
        /// Restarts in the window.
        restarts: u32,
        /// Window, seconds.
        window_s: u32,
    },
    /// A PVE task finished.
    TaskFinished {
        /// Node that ran it.
        node: String,
        /// Task UPID.
        upid: String,
        /// Task type (`vzdump`, `qmstart`, ...).
        task_type: String,
        /// Guest, if the task is about one.
        #[serde(default)]
        guest_id: Option<u32>,
        /// `OK` or `WARNINGS: n`.
        ok: bool,
        /// Exit status text (masked).
        #[serde(default)]
        status_text: String,
    },
    /// ZFS pool state.
    ZfsPool {
        /// Node.
        node: String,
        /// Pool name.
        pool: String,
        /// Health.
        health: PoolHealth,
        /// Errors found by the last scrub.
        #[serde(default)]
        scrub_errors: u64,
    },
    /// SMART summary of one disk.
    SmartDisk {
        /// Node.
        node: String,
        /// Device, e.g. `/dev/sda`.
        device: String,
        /// Overall self-assessment passed.
        passed: bool,
        /// Reallocated sector count.
        #[serde(default)]
        reallocated: u64,
        /// Current pending sector count.
        #[serde(default)]
        pending: u64,
    },
    /// PVE HA fenced a node.
    HaFencing {
        /// Node that reported it.
        node: String,
        /// The fenced node.
        fenced_node: String,
    },
    /// PVE HA recovered a guest from a fenced node onto another node.
    HaRecovery {
        /// Node the guest now runs on.
        node: String,
        /// The node it came from.
        from_node: String,
        /// VMID.
        guest_id: u32,
    },
    /// Quorum as seen by one node.
    Quorum {
        /// Reporting node.
        node: String,
        /// This node is in the quorate partition.
        quorate: bool,
        /// Members it can see.
        members: u32,
    },
    /// A certificate's expiry.
    CertExpiry {
        /// Node.
        node: String,
        /// Certificate subject (or file name).
        subject: String,
        /// Not-after, Unix ms.
        not_after_ms: i64,
    },
    /// Pending package updates.
    PendingUpdates {
        /// Node.
        node: String,
        /// Security updates.
        security: u32,
        /// All updates.
        total: u32,
    },
    /// A storage's size (PVE storage: a datastore rather than a mount); the
    /// filesystem detector treats it like a mount named `storage <name>`.
    StorageSample {
        /// Node that reported it.
        node: String,
        /// Storage id.
        storage: String,
        /// Size in bytes.
        total_bytes: u64,
        /// Available bytes.
        avail_bytes: u64,
    },
    /// Linux pressure stall information for I/O (percent of the last 10 s
    /// in which some tasks waited for I/O).
    IoPressure {
        /// Node.
        node: String,
        /// `io some avg10`.
        some_pct: f32,
        /// `io full avg10`.
        full_pct: f32,
    },
    /// Clock offset from the hub or NTP reference.
    TimeDrift {
        /// Node.
        node: String,
        /// Offset, ms (positive: node ahead).
        offset_ms: i64,
    },
}

impl SignalBody {
    /// The node the signal is from.
    pub fn node(&self) -> &str {
        match self {
            Self::NodeRegistered { node }
            | Self::NodeRemoved { node }
            | Self::NodeOnline { node }
            | Self::NodeOffline { node }
            | Self::HostSample { node, .. }
            | Self::LogTemplate { node, .. }
            | Self::GuestState { node, .. }
            | Self::GuestCrashed { node, .. }
            | Self::ContainerEvent { node, .. }
            | Self::ContainerRestartLoop { node, .. }
            | Self::TaskFinished { node, .. }
            | Self::ZfsPool { node, .. }
            | Self::SmartDisk { node, .. }
            | Self::HaFencing { node, .. }
            | Self::HaRecovery { node, .. }
            | Self::Quorum { node, .. }
            | Self::CertExpiry { node, .. }
            | Self::PendingUpdates { node, .. }
            | Self::TimeDrift { node, .. }
            | Self::StorageSample { node, .. }
            | Self::IoPressure { node, .. } => node,
        }
    }

    /// Stable variant name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::NodeRegistered { .. } => "node_registered",
            Self::NodeRemoved { .. } => "node_removed",
            Self::NodeOnline { .. } => "node_online",
            Self::NodeOffline { .. } => "node_offline",
            Self::HostSample { .. } => "host_sample",
            Self::LogTemplate { .. } => "log_template",
            Self::GuestState { .. } => "guest_state",
            Self::GuestCrashed { .. } => "guest_crashed",
            Self::ContainerEvent { .. } => "container_event",
            Self::ContainerRestartLoop { .. } => "container_restart_loop",
            Self::TaskFinished { .. } => "task_finished",
            Self::ZfsPool { .. } => "zfs_pool",
            Self::SmartDisk { .. } => "smart_disk",
            Self::HaFencing { .. } => "ha_fencing",
            Self::HaRecovery { .. } => "ha_recovery",
            Self::Quorum { .. } => "quorum",
            Self::CertExpiry { .. } => "cert_expiry",
            Self::PendingUpdates { .. } => "pending_updates",
            Self::TimeDrift { .. } => "time_drift",
            Self::StorageSample { .. } => "storage_sample",
            Self::IoPressure { .. } => "io_pressure",
        }
    }

    /// The ordering key: signals with the same key are expected in time
    /// order; an older one is out of order, an equal one with equal content a
    /// duplicate. `None` for registration signals, which are idempotent.
    pub(crate) fn order_key(&self) -> Option<String> {
        let n = self.node();
        let k = match self {
            Self::NodeRegistered { .. } | Self::NodeRemoved { .. } => return None,
            Self::NodeOnline { .. } | Self::NodeOffline { .. } => format!("presence/{n}"),
            Self::HostSample { .. } => format!("host/{n}"),
            Self::LogTemplate {
                source_kind,
                source,
                template_id,
                ..
            } => format!(
                "log/{n}/{}:{source}/{template_id:016x}",
                source_kind.as_str()
            ),
            Self::GuestState { guest_id, .. } => format!("guest/{n}/{guest_id}"),
            Self::GuestCrashed { guest_id, .. } => format!("guestcrash/{n}/{guest_id}"),
            Self::ContainerEvent { container, .. } => format!("container/{n}/{container}"),
            Self::ContainerRestartLoop { container, .. } => format!("ctloop/{n}/{container}"),
            Self::TaskFinished { upid, .. } => format!("task/{n}/{upid}"),
            Self::ZfsPool { pool, .. } => format!("zfs/{n}/{pool}"),
            Self::SmartDisk { device, .. } => format!("smart/{n}/{device}"),
            Self::HaFencing { fenced_node, .. } => format!("fence/{n}/{fenced_node}"),
            Self::HaRecovery { guest_id, .. } => format!("harecovery/{n}/{guest_id}"),
            Self::Quorum { .. } => format!("quorum/{n}"),
            Self::CertExpiry { subject, .. } => format!("cert/{n}/{subject}"),
            Self::PendingUpdates { .. } => format!("updates/{n}"),
            Self::TimeDrift { .. } => format!("drift/{n}"),
            Self::StorageSample { storage, .. } => format!("storage/{n}/{storage}"),
            Self::IoPressure { .. } => format!("iopressure/{n}"),
        };
        Some(k)
    }

    /// True when a float field is NaN or infinite; such signals are counted
    /// as invalid and dropped.
    pub(crate) fn has_bad_float(&self) -> bool {
        match self {
            Self::HostSample {
                cpu_pct,
                mem_pct,
                swap_pct,
                load1,
                iowait_pct,
                ..
            } => {
                !cpu_pct.is_finite()
                    || !mem_pct.is_finite()
                    || !swap_pct.is_finite()
                    || !load1.is_finite()
                    || iowait_pct.is_some_and(|v| !v.is_finite())
            }
            Self::IoPressure {
                some_pct, full_pct, ..
            } => !some_pct.is_finite() || !full_pct.is_finite(),
            _ => false,
        }
    }
}
