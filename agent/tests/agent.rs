//! The agent's integration tests, in one binary: the command line on bad
//! input, and the Docker integration against the real engine.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    clippy::print_stdout,
    unreachable_pub
)]

mod cli;
mod docker_engine;
mod pve;
mod pve_server;
mod support;
