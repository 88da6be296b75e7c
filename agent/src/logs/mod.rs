//! The agent's log pipeline: sources (the journal, plain files) feed raw lines
//! into the pure [`pipeline`], which redacts, mines templates and emits
//! window summaries. Raw lines stay on the node; only [`wingman_protocol::logs::LogSummary`]
//! facts leave it.

pub mod cursor;
pub mod journal;
pub mod miner;
pub mod pipeline;
pub mod raw;
pub mod sources;
pub mod tail;
