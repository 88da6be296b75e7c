//! Facts: what agents observe and report. Never raw log lines.

use serde::{Deserialize, Serialize};

use crate::messages::HostKind;

/// One observation with the time the agent made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    /// Agent wall clock, Unix milliseconds.
    pub observed_at_ms: i64,
    /// What was observed.
    pub body: FactBody,
}

/// The kinds of fact. Variants are only appended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FactBody {
    /// Host indicators from the node itself.
    Host(HostFacts),
    /// Template counts of one log source over one window.
    LogSummary(crate::logs::LogSummary),
    /// Batches the agent lost (spool cap reached, corruption), so loss is
    /// never silent.
    Gap(Gap),
    /// The agent's own health: spool, link and pipeline counters.
    AgentHealth(AgentHealth),
    /// Containers and images of a Docker or Podman host.
    ContainerInventory(crate::docker::ContainerInventory),
    /// One container lifecycle event (die, oom, health, restart, ...).
    ContainerEvent(crate::docker::ContainerEvent),
    /// A container restart loop, detected on the node, reported once.
    RestartLoop(crate::docker::RestartLoop),
    /// Whether the container engine is reachable, and why not.
    DockerStatus(crate::docker::DockerStatus),
    /// A Proxmox VE observation (node, guest, task, storage, ZFS, ...).
    Pve(crate::pve::PveFact),
    /// Linux pressure stall information (`/proc/pressure/*`), sent with the
    /// host sample where the kernel provides it.
    Pressure(Pressure),
    /// What the node's own policy allows (sent with the health report), so
    /// the hub can show a refusal before asking; the agent still decides.
    AgentPolicy(AgentPolicy),
}

/// The node's local action policy, as the agent applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPolicy {
    /// A hub command key is pinned: signed actions can be accepted at all.
    pub command_key_pinned: bool,
    /// Container actions are enabled.
    pub docker_actions: bool,
    /// `[docker.policy] allow_destructive`.
    pub docker_allow_destructive: bool,
    /// Proxmox VE actions are enabled.
    pub pve_actions: bool,
    /// `[proxmox.policy] allow_destructive`.
    pub pve_allow_destructive: bool,
}

/// Pressure stall information: the share of the last 10 s in which some
/// (or all) tasks waited for the resource, percent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pressure {
    /// `cpu` `some avg10`.
    pub cpu_some: f32,
    /// `memory` `some avg10`.
    pub memory_some: f32,
    /// `io` `some avg10`.
    pub io_some: f32,
    /// `io` `full avg10`.
    pub io_full: f32,
}

/// Why batches were lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GapReason {
    /// The spool reached its size cap and dropped its oldest segment.
    Overflow,
    /// A spool record or segment failed its checksum.
    Corrupt,
    /// A spool segment disappeared.
    Missing,
}

impl GapReason {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Overflow => "overflow",
            Self::Corrupt => "corrupt",
            Self::Missing => "missing",
        }
    }
}

/// A range of batches of a stream that will never arrive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The stream.
    pub stream_id: u64,
    /// First lost sequence number.
    pub from_seq: u64,
    /// Last lost sequence number.
    pub to_seq: u64,
    /// Batches lost.
    pub batches: u64,
    /// Facts lost.
    pub facts: u64,
    /// Why.
    pub reason: GapReason,
}

/// Counters the agent reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentHealth {
    /// Batches in the spool not yet acknowledged.
    pub spool_depth_batches: u64,
    /// Bytes in the spool.
    pub spool_bytes: u64,
    /// Age of the oldest unacknowledged batch, ms.
    pub oldest_unacked_ms: u64,
    /// Batches sent again after a reconnect.
    pub replayed_batches: u64,
    /// Batches dropped (spool cap, corruption).
    pub dropped_batches: u64,
    /// Facts in dropped batches.
    pub dropped_facts: u64,
    /// Torn or corrupt spool records detected.
    pub corrupt_records: u64,
    /// Spool write failures (disk full, read-only, deleted).
    pub spool_errors: u64,
    /// Log lines summarised.
    pub log_lines: u64,
    /// Secrets redacted.
    pub redactions: u64,
    /// Log lines skipped or cut (binary, oversize, invalid UTF-8, unparsable).
    pub log_skipped: u64,
    /// Templates evicted from the capped store.
    pub templates_evicted: u64,
}

impl FactBody {
    /// Stable kind name used by the store and API.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Host(_) => "host",
            Self::LogSummary(_) => "log_summary",
            Self::Gap(_) => "gap",
            Self::AgentHealth(_) => "agent_health",
            Self::ContainerInventory(_) => "docker_inventory",
            Self::ContainerEvent(_) => "container_event",
            Self::RestartLoop(_) => "restart_loop",
            Self::DockerStatus(_) => "docker_status",
            Self::Pve(p) => p.kind(),
            Self::Pressure(_) => "pressure",
            Self::AgentPolicy(_) => "agent_policy",
        }
    }
}

/// Host facts: identity, OS, load, memory, filesystems and interfaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    /// Hostname.
    pub hostname: String,
    /// Node kind as detected.
    pub kind: HostKind,
    /// OS name and version, e.g. "Debian GNU/Linux 12 (bookworm)".
    pub os: String,
    /// Kernel version.
    pub kernel: String,
    /// Seconds since boot.
    pub uptime_s: u64,
    /// Logical CPUs.
    pub cpu_count: u32,
    /// CPU busy share over the last interval, 0-100.
    pub cpu_usage_pct: f32,
    /// 1, 5 and 15 minute load averages.
    pub load: [f32; 3],
    /// Memory total in bytes.
    pub mem_total: u64,
    /// Memory in use (total minus available) in bytes.
    pub mem_used: u64,
    /// Swap total in bytes.
    pub swap_total: u64,
    /// Swap in use in bytes.
    pub swap_used: u64,
    /// Mounted filesystems.
    pub filesystems: Vec<Filesystem>,
    /// Network interfaces.
    pub interfaces: Vec<NetInterface>,
}

/// A mounted filesystem's usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filesystem {
    /// Mount point.
    pub mount: String,
    /// Filesystem type, e.g. ext4, zfs.
    pub fs_type: String,
    /// Size in bytes.
    pub total: u64,
    /// Available bytes.
    pub available: u64,
}

/// A network interface with its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetInterface {
    /// Interface name.
    pub name: String,
    /// MAC address, lowercase colon-separated.
    pub mac: String,
    /// Addresses with prefix length, e.g. "192.168.1.10/24".
    pub addrs: Vec<String>,
    /// Bytes received since boot.
    pub rx_bytes: u64,
    /// Bytes transmitted since boot.
    pub tx_bytes: u64,
}
