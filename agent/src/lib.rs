//! `wingman-agent`: the daemon on each Proxmox VE node and Docker/Podman host.
//!
//! It enrolls with the hub ([`enroll`]), then keeps one mutual-TLS QUIC session
//! open ([`link`]) over which it sends host facts ([`facts`]) and heartbeats.
//! It sends facts, never raw log lines. The binary in `main.rs` only parses the
//! command line and calls into this library.

pub mod command_sig;
pub mod config;
pub mod diagnose;
pub mod docker;
pub mod enroll;
pub mod facts;
pub mod fsutil;
pub mod guard;
pub mod layer;
pub mod link;
pub mod logs;
pub mod outbox;
pub mod pve;
pub mod spool;
pub mod state;
pub mod tls;

pub use config::AgentConfig;
pub use link::{AgentError, LinkStats, run};

/// Wall clock in Unix milliseconds (saturating; 0 before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
