//! Wingman's wire protocol: the messages agents and the hub exchange and the
//! length-prefixed framing that carries them.
//!
//! This crate is pure, in the manner of `quinn-proto`: no I/O, no tokio, no clock.
//! Both the agent and the hub call [`frame::encode`] and [`frame::FrameDecoder`]
//! on the bytes their QUIC streams carry.
//!
//! # Compatibility rules
//! - The encoding is postcard 1.x, which is not self-describing. Wire types never
//!   use `#[serde(untagged)]`, `flatten`, `skip*`, `tag` or `other`.
//! - Enum variants are only ever appended, never reordered or removed.
//! - Every stream starts with a versioned handshake ([`messages::Hello`] or
//!   [`messages::EnrollRequest`]); the hub refuses versions it does not speak.
//! - Golden byte fixtures under `protocol/tests/golden/` fail the build when the
//!   encoding of an existing message changes by accident.
//! - Raw log lines never appear in a protocol type: log-derived data can only travel
//!   as summaries (templates and counts).

pub mod docker;
pub mod facts;
pub mod frame;
pub mod logs;
pub mod messages;
pub mod pve;

pub use facts::*;
pub use frame::{DecodeError, EncodeError, FrameDecoder, MAX_FRAME_LEN, decode, encode};
pub use messages::*;

/// The protocol version this build speaks. Bumped only for incompatible changes.
pub const PROTOCOL_VERSION: u16 = 1;

/// ALPN for an enrolled agent's mutual-TLS session.
pub const ALPN_AGENT: &[u8] = b"wingman/1";

/// ALPN for enrollment: the only exchange a client without a certificate may make.
pub const ALPN_ENROLL: &[u8] = b"wingman-enroll/1";

/// The DNS name in the hub's server certificate. Agents always verify the hub
/// against this name plus the pinned CA, whatever address they dial.
pub const HUB_SERVER_NAME: &str = "hub.wingman.internal";

/// The URI prefix of the agent identity placed in client certificates' SAN.
pub const AGENT_URI_PREFIX: &str = "urn:wingman:agent:";
