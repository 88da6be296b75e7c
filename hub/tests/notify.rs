//! Integration tests for the notify module: loopback servers for every
//! service (ntfy, Gotify, Discord, Slack, signed webhook, SMTP), the SSRF
//! guard, the policy driven from TOML, secret redaction and the delivery
//! shell. Only loopback addresses are ever contacted.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    unreachable_pub
)]

/// The module under test; the only line naming the crate.
use wingman_hub::notify as subject;

mod common;
mod delivery;
mod http_channels;
mod policy;
mod secrets;
mod service;
mod smtp;
mod ssrf;
mod tls;
