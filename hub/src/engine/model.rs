//! Output and command types: incidents, evidence, actions, commands, stats.
//!
//! Everything here is `Serialize + Deserialize` so the shell can persist
//! incidents as JSON and hand them back to [`super::Engine::restore`].

use std::fmt;

use serde::{Deserialize, Serialize};

use super::signals::GuestKind;

/// Incident severity, ordered `info < warning < critical`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Informational.
    #[default]
    Info,
    /// Needs attention.
    Warning,
    /// Service is down or data is at risk.
    Critical,
}

impl Severity {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Incident lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    /// Open, nobody has acknowledged it.
    Open,
    /// Someone is on it.
    Acknowledged,
    /// Over (automatically after the hold-down, or by an operator).
    Resolved,
}

impl IncidentState {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
        }
    }
}

/// The detectors. Names are stable (`snake_case` in JSON and text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// Node or agent silent.
    NodeSilent,
    /// Guest stopped unexpectedly, crashed, or paused on I/O error.
    GuestCrashed,
    /// Container exits non-zero repeatedly.
    ContainerCrashLoop,
    /// Container health check failing.
    ContainerUnhealthy,
    /// systemd unit failed or is restart-looping.
    ServiceFailing,
    /// Kernel or cgroup OOM kill.
    OomKill,
    /// Filesystem projected to fill soon.
    StorageFilling,
    /// Filesystem (nearly) full.
    StorageFull,
    /// vzdump failed.
    BackupFailed,
    /// ZFS pool not healthy.
    ZfsDegraded,
    /// Disk SMART failing.
    SmartFailing,
    /// HA fenced a node (and recovered its guests).
    HaFencing,
    /// Node lost quorum.
    QuorumLost,
    /// Burst of a new or rare error template.
    LogErrorBurst,
    /// Sustained CPU, memory or I/O pressure.
    ResourcePressure,
    /// Certificate about to expire.
    CertExpiring,
    /// Security updates pending.
    SecurityUpdates,
    /// A PVE task failed.
    TaskFailed,
    /// Node clock drifting.
    TimeDrift,
}

/// How a condition ends when no signal clears it explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// Only an explicit signal clears it (node presence).
    Explicit,
    /// Clears `event_quiet_ms` after the last occurrence.
    Event,
    /// Clears `stale_after_ms` after the last refresh (frozen while the
    /// node is offline).
    Snapshot,
    /// Clears `slow_stale_after_ms` after the last refresh (frozen while the
    /// node is offline).
    Slow,
    /// Clears `backup_clear_ms` after the last failure.
    Backup,
}

impl Detector {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NodeSilent => "node_silent",
            Self::GuestCrashed => "guest_crashed",
            Self::ContainerCrashLoop => "container_crash_loop",
            Self::ContainerUnhealthy => "container_unhealthy",
            Self::ServiceFailing => "service_failing",
            Self::OomKill => "oom_kill",
            Self::StorageFilling => "storage_filling",
            Self::StorageFull => "storage_full",
            Self::BackupFailed => "backup_failed",
            Self::ZfsDegraded => "zfs_degraded",
            Self::SmartFailing => "smart_failing",
            Self::HaFencing => "ha_fencing",
            Self::QuorumLost => "quorum_lost",
            Self::LogErrorBurst => "log_error_burst",
            Self::ResourcePressure => "resource_pressure",
            Self::CertExpiring => "cert_expiring",
            Self::SecurityUpdates => "security_updates",
            Self::TaskFailed => "task_failed",
            Self::TimeDrift => "time_drift",
        }
    }

    pub(crate) fn lifetime(self) -> Lifetime {
        match self {
            Self::NodeSilent => Lifetime::Explicit,
            Self::ContainerCrashLoop
            | Self::ServiceFailing
            | Self::OomKill
            | Self::HaFencing
            | Self::LogErrorBurst
            | Self::TaskFailed => Lifetime::Event,
            Self::GuestCrashed
            | Self::StorageFilling
            | Self::StorageFull
            | Self::QuorumLost
            | Self::ResourcePressure
            | Self::TimeDrift => Lifetime::Snapshot,
            Self::ContainerUnhealthy
            | Self::ZfsDegraded
            | Self::SmartFailing
            | Self::CertExpiring
            | Self::SecurityUpdates => Lifetime::Slow,
            Self::BackupFailed => Lifetime::Backup,
        }
    }

    /// Slow housekeeping findings get their own incident: nothing joins
    /// them and they join nothing.
    pub(crate) fn standalone(self) -> bool {
        matches!(self, Self::CertExpiring | Self::SecurityUpdates)
    }

    /// Cluster-level findings join each other across nodes.
    pub(crate) fn cluster_scoped(self) -> bool {
        matches!(self, Self::NodeSilent | Self::QuorumLost | Self::HaFencing)
    }
}

impl fmt::Display for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a condition is about. The key (see [`Subject::key`]) excludes
/// display-only fields such as a guest's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subject {
    /// A node as a whole.
    Node {
        /// Node.
        node: String,
    },
    /// A PVE guest.
    Guest {
        /// Node it is (or was last seen) on.
        node: String,
        /// VMID.
        guest_id: u32,
        /// QEMU or LXC when known.
        #[serde(default)]
        guest_kind: Option<GuestKind>,
        /// Name when known (display only).
        #[serde(default)]
        name: String,
    },
    /// A container on a Docker host.
    Container {
        /// Docker host.
        node: String,
        /// Container name.
        container: String,
    },
    /// A mounted filesystem.
    Filesystem {
        /// Node.
        node: String,
        /// Mount point.
        mount: String,
    },
    /// A ZFS pool.
    Pool {
        /// Node.
        node: String,
        /// Pool.
        pool: String,
    },
    /// A disk.
    Disk {
        /// Node.
        node: String,
        /// Device.
        device: String,
    },
    /// A systemd unit.
    Service {
        /// Node.
        node: String,
        /// Unit name.
        unit: String,
    },
    /// A kind of PVE task, optionally for one guest.
    Task {
        /// Node.
        node: String,
        /// Task type.
        task_type: String,
        /// Guest.
        #[serde(default)]
        guest_id: Option<u32>,
    },
    /// One log template from one source.
    LogTemplate {
        /// Node.
        node: String,
        /// `journal:<unit>`, `file:<path>` or `container:<name>`.
        source: String,
        /// Template id.
        template_id: u64,
    },
    /// A host resource (`cpu`, `memory`, `io`).
    Resource {
        /// Node.
        node: String,
        /// Resource.
        resource: String,
    },
    /// A certificate.
    Certificate {
        /// Node.
        node: String,
        /// Subject or file.
        subject: String,
    },
}

impl Subject {
    /// The node this subject lives on.
    pub fn node(&self) -> &str {
        match self {
            Self::Node { node }
            | Self::Guest { node, .. }
            | Self::Container { node, .. }
            | Self::Filesystem { node, .. }
            | Self::Pool { node, .. }
            | Self::Disk { node, .. }
            | Self::Service { node, .. }
            | Self::Task { node, .. }
            | Self::LogTemplate { node, .. }
            | Self::Resource { node, .. }
            | Self::Certificate { node, .. } => node,
        }
    }

    /// Stable identity used in fingerprints.
    pub fn key(&self) -> String {
        match self {
            Self::Node { node } => format!("node/{node}"),
            Self::Guest { node, guest_id, .. } => format!("guest/{node}/{guest_id}"),
            Self::Container { node, container } => format!("container/{node}/{container}"),
            Self::Filesystem { node, mount } => format!("fs/{node}:{mount}"),
            Self::Pool { node, pool } => format!("pool/{node}/{pool}"),
            Self::Disk { node, device } => format!("disk/{node}:{device}"),
            Self::Service { node, unit } => format!("unit/{node}/{unit}"),
            Self::Task {
                node,
                task_type,
                guest_id: Some(g),
            } => format!("task/{node}/{task_type}/{g}"),
            Self::Task {
                node, task_type, ..
            } => format!("task/{node}/{task_type}"),
            Self::LogTemplate {
                node,
                source,
                template_id,
            } => format!("log/{node}/{source}/{template_id:016x}"),
            Self::Resource { node, resource } => format!("resource/{node}/{resource}"),
            Self::Certificate { node, subject } => format!("cert/{node}/{subject}"),
        }
    }

    /// Human-readable name, e.g. `vm 100 (web) on pve1`.
    pub fn display(&self) -> String {
        match self {
            Self::Node { node } => format!("node {node}"),
            Self::Guest {
                node,
                guest_id,
                guest_kind,
                name,
            } => {
                let kind = guest_kind.map_or("guest", GuestKind::short);
                if name.is_empty() {
                    format!("{kind} {guest_id} on {node}")
                } else {
                    format!("{kind} {guest_id} ({name}) on {node}")
                }
            }
            Self::Container { node, container } => format!("container {container} on {node}"),
            Self::Filesystem { node, mount } => format!("{node}:{mount}"),
            Self::Pool { node, pool } => format!("ZFS pool {pool} on {node}"),
            Self::Disk { node, device } => format!("disk {device} on {node}"),
            Self::Service { node, unit } => format!("{unit} on {node}"),
            Self::Task {
                node,
                task_type,
                guest_id: Some(g),
            } => format!("{task_type} task for guest {g} on {node}"),
            Self::Task {
                node, task_type, ..
            } => format!("{task_type} task on {node}"),
            Self::LogTemplate { node, source, .. } => format!("{source} on {node}"),
            Self::Resource { node, resource } => format!("{resource} on {node}"),
            Self::Certificate { node, subject } => format!("certificate {subject} on {node}"),
        }
    }

    /// The guest, if this subject is one.
    pub(crate) fn guest(&self) -> Option<GuestRef> {
        match self {
            Self::Guest { node, guest_id, .. } => Some(GuestRef {
                node: node.clone(),
                guest_id: *guest_id,
            }),
            Self::Task {
                node,
                guest_id: Some(g),
                ..
            } => Some(GuestRef {
                node: node.clone(),
                guest_id: *g,
            }),
            _ => None,
        }
    }

    /// The container, if this subject is one.
    pub(crate) fn container(&self) -> Option<ContainerRef> {
        match self {
            Self::Container { node, container } => Some(ContainerRef {
                node: node.clone(),
                container: container.clone(),
            }),
            _ => None,
        }
    }
}

/// A guest reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GuestRef {
    /// Node.
    pub node: String,
    /// VMID.
    pub guest_id: u32,
}

/// A container reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContainerRef {
    /// Docker host.
    pub node: String,
    /// Container name.
    pub container: String,
}

/// An identifier that ties evidence back to the signal it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ref", rename_all = "snake_case")]
pub enum EvidenceRef {
    /// A log template.
    Template {
        /// Template id.
        template_id: u64,
    },
    /// A PVE task.
    Task {
        /// UPID.
        upid: String,
    },
    /// A container exit code.
    ExitCode {
        /// Code.
        exit_code: i64,
    },
}

/// One piece of evidence attached to an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Number within the incident, from 1; stable even after middle entries
    /// are dropped, so a narrative can cite `[E3]`.
    pub n: u64,
    /// Observation time of the first signal, Unix ms.
    pub at_ms: i64,
    /// Observation time of the last identical repeat.
    pub last_at_ms: i64,
    /// Identical consecutive observations folded into this entry.
    pub count: u32,
    /// Detector.
    pub detector: Detector,
    /// Severity of this observation.
    pub severity: Severity,
    /// Condition fingerprint.
    pub fingerprint: String,
    /// What was observed, built from facts and masked templates only.
    pub summary: String,
    /// Signal references.
    #[serde(default)]
    pub refs: Vec<EvidenceRef>,
}

/// Who did something and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// User name, or `wingman` for the engine itself.
    pub by: String,
    /// Hub time, Unix ms.
    pub at_ms: i64,
}

/// Kinds of timeline entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimelineEvent {
    /// Incident opened.
    Opened,
    /// Another condition joined (correlation, offline suppression, storm).
    Joined,
    /// Severity went up.
    Escalated,
    /// Acknowledged.
    Acknowledged,
    /// Resolved.
    Resolved,
    /// Reopened.
    Reopened,
}

/// A state change of an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// Hub time, Unix ms.
    pub at_ms: i64,
    /// What happened.
    pub event: TimelineEvent,
    /// Who (`wingman` for the engine).
    pub by: String,
    /// Short detail.
    #[serde(default)]
    pub detail: String,
}

/// A condition attached to an incident, as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionView {
    /// Fingerprint: `<detector>:<subject key>`.
    pub fingerprint: String,
    /// Detector.
    pub detector: Detector,
    /// Subject.
    pub subject: Subject,
    /// Current severity.
    pub severity: Severity,
    /// One-line title.
    pub title: String,
    /// Still firing.
    pub active: bool,
    /// Firing but muted by a manual resolve (unmutes when it clears).
    #[serde(default)]
    pub muted: bool,
    /// First activation, hub time.
    pub since_ms: i64,
    /// Last refresh or occurrence, hub time.
    pub last_seen_ms: i64,
    /// Times it became active (flapping shows as > 1).
    pub activations: u32,
}

/// An incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// `inc-<n>`, from a counter that `restore` advances past.
    pub id: String,
    /// Fingerprint of the condition that opened it (`storm` for a storm).
    pub fingerprint: String,
    /// Title.
    pub title: String,
    /// Worst evidence since it (re)opened.
    pub severity: Severity,
    /// Lifecycle state.
    pub state: IncidentState,
    /// Who acknowledged it.
    #[serde(default)]
    pub acknowledged: Option<Actor>,
    /// Who resolved it (`wingman` when automatic).
    #[serde(default)]
    pub resolved: Option<Actor>,
    /// Opened, hub time.
    pub opened_at_ms: i64,
    /// Last change, hub time.
    pub updated_at_ms: i64,
    /// Resolved, hub time.
    #[serde(default)]
    pub resolved_at_ms: Option<i64>,
    /// Earliest evidence, observation time.
    pub since_ms: i64,
    /// Nodes involved.
    pub nodes: Vec<String>,
    /// Guests involved.
    #[serde(default)]
    pub guests: Vec<GuestRef>,
    /// Containers involved.
    #[serde(default)]
    pub containers: Vec<ContainerRef>,
    /// Detectors that fired.
    pub detectors: Vec<Detector>,
    /// Attached conditions (bounded).
    pub conditions: Vec<ConditionView>,
    /// Conditions not listed.
    #[serde(default)]
    pub conditions_omitted: u64,
    /// Likely cause, from the causal rules.
    #[serde(default)]
    pub likely_cause: Option<String>,
    /// Fingerprint of the likely-cause condition.
    #[serde(default)]
    pub cause_fingerprint: Option<String>,
    /// Detectors from cause to effects.
    #[serde(default)]
    pub cause_chain: Vec<Detector>,
    /// What is affected.
    #[serde(default)]
    pub affected: Vec<String>,
    /// Evidence (first `evidence_head` and last `evidence_tail`).
    pub evidence: Vec<Evidence>,
    /// Evidence entries ever attached.
    pub evidence_total: u64,
    /// Evidence entries dropped from the middle.
    #[serde(default)]
    pub evidence_omitted: u64,
    /// State changes.
    pub timeline: Vec<TimelineEntry>,
    /// Throttling merged new problems into this incident.
    #[serde(default)]
    pub storm: bool,
    /// Problems merged into this storm.
    #[serde(default)]
    pub merged_count: u64,
    /// Times it reopened.
    #[serde(default)]
    pub reopen_count: u32,
    /// Deterministic narrative built from the evidence.
    pub narrative: String,
}

/// Why a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyKind {
    /// New incident.
    Opened,
    /// Severity went up.
    Escalated,
    /// It came back.
    Reopened,
    /// It is over (only sent when something was sent before).
    Resolved,
}

/// A request to notify people; the shell routes it to channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Incident.
    pub incident_id: String,
    /// Severity at the time.
    pub severity: Severity,
    /// Why.
    pub kind: NotifyKind,
    /// Incident title.
    pub title: String,
    /// Storm incident.
    pub storm: bool,
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", content = "data", rename_all = "snake_case")]
pub enum Action {
    /// Persist a new incident.
    IncidentOpened(Incident),
    /// Persist a change.
    IncidentUpdated(Incident),
    /// Persist a resolution.
    IncidentResolved(Incident),
    /// Persist a reopen.
    IncidentReopened(Incident),
    /// Notify.
    Notify(Notification),
}

/// Operator commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Someone is on it.
    Acknowledge {
        /// Incident.
        incident_id: String,
        /// User.
        by: String,
    },
    /// Close it now.
    Resolve {
        /// Incident.
        incident_id: String,
        /// User.
        by: String,
    },
    /// Open a resolved incident again.
    Reopen {
        /// Incident.
        incident_id: String,
        /// User.
        by: String,
    },
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum CommandError {
    /// No such incident in memory.
    NotFound {
        /// Incident.
        incident_id: String,
    },
    /// The command does not apply in this state.
    InvalidTransition {
        /// Incident.
        incident_id: String,
        /// Current state.
        state: IncidentState,
        /// Command name.
        command: String,
    },
    /// `by` was empty.
    MissingActor,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound { incident_id } => write!(f, "incident {incident_id} not found"),
            Self::InvalidTransition {
                incident_id,
                state,
                command,
            } => write!(
                f,
                "cannot {command} incident {incident_id}: it is {}",
                state.as_str()
            ),
            Self::MissingActor => f.write_str("the acting user is missing"),
        }
    }
}

impl std::error::Error for CommandError {}

/// Counters; loss and oddities are never silent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStats {
    /// Signals passed to `handle_signal`.
    pub signals: u64,
    /// Signals that reached the detectors.
    pub accepted: u64,
    /// Older than the newest signal with the same key (dropped).
    pub out_of_order: u64,
    /// Same key, time and content as one already seen (dropped).
    pub duplicates: u64,
    /// Slightly in the future; time clamped to now.
    pub future_clamped: u64,
    /// Too far in the future (dropped).
    pub future_dropped: u64,
    /// Older than `max_signal_age_ms` (dropped).
    pub stale_dropped: u64,
    /// NaN or infinite values, or empty names (dropped).
    pub invalid: u64,
    /// Signals from nodes not registered (see `UnknownNodePolicy`).
    pub unknown_node: u64,
    /// Of those, dropped.
    pub unknown_node_dropped: u64,
    /// `now` went backwards; the engine kept its own later time.
    pub clock_regressions: u64,
    /// Incidents opened (storms included).
    pub incidents_opened: u64,
    /// Incidents reopened (by recurrence or command).
    pub incidents_reopened: u64,
    /// Incidents resolved automatically.
    pub incidents_auto_resolved: u64,
    /// Incidents resolved by an operator.
    pub incidents_manually_resolved: u64,
    /// Problems that matched an existing condition's incident.
    pub deduplicated: u64,
    /// Problems that joined a related open incident.
    pub correlated: u64,
    /// Problems attached to an offline node's incident.
    pub suppressed_offline: u64,
    /// Problems merged into a storm incident by throttling.
    pub throttled_merged: u64,
    /// Evidence entries dropped from the middle of incidents.
    pub evidence_dropped: u64,
    /// Notifications emitted.
    pub notifications: u64,
    /// Notifications held back by `renotify_min_interval_ms` or an ack.
    pub notifications_suppressed: u64,
    /// Commands refused.
    pub commands_rejected: u64,
    /// Resolved incidents dropped from memory after the reopen window.
    pub incidents_evicted: u64,
}
