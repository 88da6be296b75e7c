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
}

impl FactBody {
    /// Stable kind name used by the store and API.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Host(_) => "host",
            Self::LogSummary(_) => "log_summary",
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
