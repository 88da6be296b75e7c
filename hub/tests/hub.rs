//! Integration tests for the hub: enrollment, the mutual-TLS link, presence,
//! refusals, the HTTP API's authentication and the store suite on SQLite and
//! PostgreSQL. One test binary, so the workspace links the world once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    unreachable_pub
)]

mod browser;
mod common;
mod delivery;
mod docker;
mod http_auth;
mod incidents;
mod init;
mod link;
mod llm;
mod logs;
mod memory;
mod notify;
mod plans;
mod pve;
#[path = "../../agent/tests/pve_server/mod.rs"]
mod pve_server;
mod reasoner;
mod skills;
mod store_suite;
