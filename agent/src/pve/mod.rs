//! Proxmox VE integration: facts from the PVE API and the on-node task
//! directory, and policy-checked guest actions.
//!
//! * [`facts`]: wire-type drafts (postcard-friendly) for everything below.
//! * [`upid`]: task id parsing/formatting.
//! * [`tasks`]: follows `/var/log/pve/tasks/` (started/finished tasks).
//! * [`client`]: the REST client (API token, pinned certificate).
//! * [`collect`](mod@collect): one sweep over the API → facts (+ storage time-to-full,
//!   backup outcomes).
//! * [`actions`] and [`policy`]: typed actions, risk, local policy, execution
//!   that follows tasks and HA chains to the real outcome.
//!
//! Typical wiring: a [`tasks::run_follower`] task feeds finished tasks into
//! the event loop, which turns them into facts, asks
//! [`collect::Collector::backup_outcomes`] for `vzdump` tasks and triggers a
//! [`collect::Collector::sweep`] (also run every
//! [`collect::DEFAULT_INTERVAL`]). If the task directory is unreadable, set
//! [`collect::CollectorConfig::tasks_via_api`].

pub mod actions;
pub mod agent_task;
pub mod client;
pub mod collect;
pub use wingman_protocol::pve as facts;
pub mod policy;
pub mod tasks;
pub use wingman_protocol::pve::upid;

pub use actions::{
    BackupMode, ExecOptions, GuestRef, PveAction, PveActionExt, PveActionOp, execute,
};
pub use client::{PveClient, PveClientConfig, PveError};
pub use collect::{Collector, CollectorConfig, collect};
pub use facts::*;
pub use policy::{LocalPolicy, Refusal, Risk};
pub use tasks::{StartAt, TaskDirFollower};
