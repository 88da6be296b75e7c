//! Wire-type drafts for the Docker/Podman integration, meant to move into
//! `wingman-protocol`.
//!
//! Postcard rules apply: plain `Serialize`/`Deserialize` derives only (no
//! `untagged`, `flatten`, `skip*`, `tag` or `other`), and enum variants are
//! only ever appended. Nothing here carries raw log lines.

use serde::{Deserialize, Serialize};

/// Which engine answers on the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EngineKind {
    /// Docker Engine (moby).
    Docker,
    /// Podman through its Docker-compatible API.
    Podman,
}

/// The engine the agent talks to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineInfo {
    /// Docker or Podman.
    pub kind: EngineKind,
    /// Engine version as reported, e.g. "20.10.24" or "4.9.3".
    pub version: String,
    /// The API version the client speaks after negotiation, e.g. "1.41".
    pub api_version: String,
}

/// Everything the agent knows about the engine's containers and images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInventory {
    /// The engine.
    pub engine: EngineInfo,
    /// All containers, including stopped ones, sorted by name then id.
    pub containers: Vec<ContainerFacts>,
    /// Local images, sorted by id.
    pub images: Vec<ImageFacts>,
}

/// A container's lifecycle state. Variants are only appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ContainerRunState {
    /// The engine reported a state this build does not know.
    Unknown,
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Waiting to be restarted by its restart policy.
    Restarting,
    /// Being removed.
    Removing,
    /// Exited.
    Exited,
    /// Dead (removal failed half-way).
    Dead,
    /// Being stopped (newer Docker).
    Stopping,
}

/// Health-check state. Variants are only appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HealthState {
    /// No health check configured.
    None,
    /// Health check configured, no verdict yet.
    Starting,
    /// Last checks passed.
    Healthy,
    /// Failed `retries` checks in a row.
    Unhealthy,
}

/// A container's restart policy. Variants are only appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Never restarted by the engine (also: unset).
    No,
    /// Always restarted.
    Always,
    /// Restarted unless an operator stopped it.
    UnlessStopped,
    /// Restarted when it exits non-zero, at most `max_retries` times (0 = unlimited).
    OnFailure {
        /// Retry limit; 0 means no limit.
        max_retries: u32,
    },
}

/// One container as seen through list + inspect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerFacts {
    /// Full container id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Image reference the container was created from (as the user wrote it).
    pub image: String,
    /// Lifecycle state.
    pub state: ContainerRunState,
    /// Health-check state.
    pub health: HealthState,
    /// Restarts performed by the engine's restart policy.
    pub restart_count: u32,
    /// Exit code of the last run, for exited, dead or restarting containers.
    pub exit_code: Option<i64>,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
    /// Last start time, Unix milliseconds; `None` if never started.
    pub started_ms: Option<i64>,
    /// Compose project (Docker Compose or podman-compose label).
    pub compose_project: Option<String>,
    /// Compose service.
    pub compose_service: Option<String>,
    /// Memory limit in bytes; `None` when unlimited.
    pub memory_limit: Option<u64>,
    /// CPU limit in nano-CPUs (1e9 = one CPU); `None` when unlimited.
    pub cpu_limit: Option<u64>,
    /// Restart policy.
    pub restart_policy: RestartPolicy,
}

/// One local image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFacts {
    /// Image id (`sha256:...`).
    pub id: String,
    /// Repository tags, e.g. `nginx:1.27`; empty for dangling images.
    pub tags: Vec<String>,
    /// Size in bytes.
    pub size: u64,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
}

/// What happened to a container. Variants are only appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ContainerEventKind {
    /// Started (also by the restart policy).
    Start,
    /// Stopped on request.
    Stop,
    /// Main process exited.
    Die,
    /// Killed by the kernel OOM killer.
    Oom,
    /// Signal sent through the API.
    Kill,
    /// Restarted through the API.
    Restart,
    /// Removed.
    Destroy,
    /// Health state changed; see [`ContainerEvent::health`].
    HealthStatus,
}

/// One container event from the engine's event stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerEvent {
    /// Engine time of the event, Unix milliseconds.
    pub at_ms: i64,
    /// Full container id.
    pub container_id: String,
    /// Container name (without `/`).
    pub name: String,
    /// What happened.
    pub kind: ContainerEventKind,
    /// Exit code, for `Die`.
    pub exit_code: Option<i64>,
    /// New health state ("healthy", "unhealthy", "starting"), for `HealthStatus`.
    pub health: Option<String>,
    /// Signal name or number, for `Kill`.
    pub signal: Option<String>,
}

/// A container that keeps dying: reported once per episode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartLoop {
    /// Full container id.
    pub container_id: String,
    /// Container name.
    pub name: String,
    /// Deaths counted inside the window when the loop was declared.
    pub restarts: u32,
    /// The window, seconds.
    pub window_s: u32,
    /// Exit code of the last death, if known.
    pub last_exit_code: Option<i64>,
}

/// Whether the agent can talk to the engine, with a human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerStatus {
    /// True when connected and the event stream is up.
    pub reachable: bool,
    /// E.g. "socket missing: /var/run/docker.sock", "permission denied: ...",
    /// "unsupported API version 1.12 (need >= 1.40)", "connected to Docker 20.10.24 (API 1.41)".
    pub message: String,
}

/// How much harm an action can do. Variants are only appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Risk {
    /// Brings something up or bounces it (start, restart).
    Low,
    /// Takes a service down until someone starts it again (stop).
    Medium,
    /// Cannot be undone (remove).
    Destructive,
}

/// An action on one container, as requested by the hub. Variants are only appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DockerAction {
    /// Start a stopped container.
    Start {
        /// Name or id.
        container: String,
    },
    /// Stop: SIGTERM, then SIGKILL after `timeout_s`.
    Stop {
        /// Name or id.
        container: String,
        /// Seconds to wait before SIGKILL; `None` = the container's default.
        timeout_s: Option<u32>,
    },
    /// Restart: stop (with `timeout_s`) then start.
    Restart {
        /// Name or id.
        container: String,
        /// Seconds to wait before SIGKILL; `None` = the container's default.
        timeout_s: Option<u32>,
    },
    /// Remove the container (`force` also kills a running one).
    Remove {
        /// Name or id.
        container: String,
        /// Kill it first if it is running.
        force: bool,
    },
}

impl DockerAction {
    /// The risk class used by policy.
    pub fn risk(&self) -> Risk {
        match self {
            Self::Start { .. } | Self::Restart { .. } => Risk::Low,
            Self::Stop { .. } => Risk::Medium,
            Self::Remove { .. } => Risk::Destructive,
        }
    }

    /// Stable action name: "start", "stop", "restart", "remove".
    pub fn name(&self) -> &'static str {
        match self {
            Self::Start { .. } => "start",
            Self::Stop { .. } => "stop",
            Self::Restart { .. } => "restart",
            Self::Remove { .. } => "remove",
        }
    }

    /// The container the action targets, as given.
    pub fn container(&self) -> &str {
        match self {
            Self::Start { container }
            | Self::Stop { container, .. }
            | Self::Restart { container, .. }
            | Self::Remove { container, .. } => container,
        }
    }
}

impl Risk {
    /// Stable lowercase name: "low", "medium", "destructive".
    pub fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::Destructive => "destructive",
        }
    }
}

/// The outcome of one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    /// True when the engine carried the action out.
    pub ok: bool,
    /// True when local policy refused it (it was then not executed).
    pub refused: bool,
    /// What happened, e.g. "restarted web (3f2a...)" or the refusal reason.
    pub detail: String,
    /// Wall time spent, milliseconds.
    pub duration_ms: u64,
}
