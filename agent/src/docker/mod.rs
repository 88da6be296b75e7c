//! Docker/Podman integration through bollard: inventory, the container event
//! stream with restart-loop detection, log plumbing and policy-gated actions.
//!
//! Entry points:
//! - [`run_events`]: the long-lived task; emits [`DockerOutput`] on a bounded channel.
//! - [`connect`] + [`inventory`], [`follow_logs`], [`execute`]: one-shot helpers.
//!
//! Nothing here panics on engine input; every failure is a [`DockerError`] that maps
//! to a [`DockerStatus`].

pub mod actions;
pub mod collector;
pub mod engine;
pub mod events;
pub use wingman_protocol::docker as facts;
pub mod inventory;
pub mod logs;
pub mod policy;
pub mod restart_loop;
pub mod timefmt;

use std::path::PathBuf;
use std::time::Duration;

pub use actions::execute;
pub use engine::{DockerError, Engine, connect, detect_socket, socket_candidates};
pub use events::{EventCursor, normalise_event, run_events};
pub use facts::*;
pub use inventory::{changed, inventory};
pub use logs::{LogLine, LogStart, LogStream, follow_logs};
pub use policy::{LocalPolicy, PolicyRule, Refusal};
pub use restart_loop::{RestartLoopConfig, RestartLoopDetector};

/// What the event task emits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerOutput {
    /// Full inventory: sent after each (re)connect and whenever it changes.
    Inventory(ContainerInventory),
    /// One container event.
    Event(ContainerEvent),
    /// A restart loop was detected (once per episode).
    RestartLoop(RestartLoop),
    /// Reachability changed (sent only when it differs from the last one).
    Status(DockerStatus),
}

/// Settings for the event task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// Engine socket; `None` = auto-detect (see [`socket_candidates`]).
    pub socket: Option<PathBuf>,
    /// Wait for response headers of ordinary requests (streams are not cut).
    pub request_timeout: Duration,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// A session that streamed this long resets the backoff.
    pub healthy_after: Duration,
    /// After container events, the inventory is refreshed at most this often.
    pub inventory_debounce: Duration,
    /// The inventory is refreshed at least this often (catches changes without events).
    pub inventory_interval: Duration,
    /// Restart-loop thresholds.
    pub restart_loop: RestartLoopConfig,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            socket: None,
            request_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(30),
            inventory_debounce: Duration::from_secs(2),
            inventory_interval: Duration::from_secs(60),
            restart_loop: RestartLoopConfig::default(),
        }
    }
}
