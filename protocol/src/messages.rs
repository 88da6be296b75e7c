//! Session and enrollment messages.
//!
//! An enrolled agent opens one bidirectional stream per connection. It sends
//! [`AgentMessage::Hello`] first; the hub answers [`HubMessage::Welcome`] or
//! [`HubMessage::Refused`]. After that the agent sends heartbeats, fact batches and
//! certificate renewals; the hub sends acks, busy replies, certificates and
//! signed action commands and audit heads. Variants are only ever appended.

use serde::{Deserialize, Serialize};

use crate::facts::Fact;

/// What kind of node the agent runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostKind {
    /// A Proxmox VE node.
    Proxmox,
    /// A Docker or Podman host.
    Docker,
    /// Any other Linux host.
    Plain,
}

impl HostKind {
    /// Stable lowercase name used in the store, API and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proxmox => "proxmox",
            Self::Docker => "docker",
            Self::Plain => "plain",
        }
    }

    /// Parses the stable name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "proxmox" => Some(Self::Proxmox),
            "docker" => Some(Self::Docker),
            "plain" => Some(Self::Plain),
            _ => None,
        }
    }
}

/// First message of an agent session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// [`crate::PROTOCOL_VERSION`] of the agent.
    pub protocol_version: u16,
    /// The agent's package version.
    pub agent_version: String,
    /// The node kind the agent detected.
    pub host_kind: HostKind,
    /// The node's hostname.
    pub hostname: String,
    /// The fact stream this agent's sequence numbers belong to (random, created
    /// with the agent's spool).
    pub stream_id: u64,
}

/// Liveness signal; the hub marks a node offline after missed heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Agent wall clock in Unix milliseconds, for clock-skew display.
    pub sent_at_ms: i64,
}

/// A batch of facts with its per-agent, per-stream sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactBatch {
    /// The stream announced in [`Hello::stream_id`].
    pub stream_id: u64,
    /// Monotonic sequence number of this batch within the stream, from 1.
    pub seq: u64,
    /// The facts.
    pub facts: Vec<Fact>,
}

/// A certificate renewal request carrying a fresh CSR (re-keying is allowed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewRequest {
    /// PKCS#10 certificate signing request, DER.
    pub csr_der: Vec<u8>,
}

/// A command from the hub. Reserved: the control plane adds variants later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandBody {
    /// Asks the agent to answer; used to test the channel.
    Ping,
    /// A container action; the agent's own policy decides whether it runs.
    Docker(crate::docker::DockerAction),
    /// A Proxmox VE guest action; the agent's own policy decides whether it
    /// runs. The agent answers with a `PveFact::Action` fact and a
    /// `CommandResult`.
    Pve(crate::pve::PveAction),
    /// A read-only diagnostic of an approved plan step; the agent answers
    /// with a summary (states and counts, log lines as masked templates with
    /// counts, secrets redacted), never raw lines.
    Diagnose(Diagnostic),
}

/// A read-only diagnostic. Variants are only appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Diagnostic {
    /// A container's state, health, restarts, exit code and limits.
    DockerInspect {
        /// Name or id.
        container: String,
    },
    /// A container's recent log lines as templates with counts.
    DockerLogs {
        /// Name or id.
        container: String,
        /// How far back, seconds.
        since_s: u32,
    },
    /// A Proxmox VE task's log as templates with counts.
    PveTaskLog {
        /// The task id.
        upid: String,
    },
    /// A guest's configuration keys (values redacted where secret).
    PveGuestConfig {
        /// The guest.
        guest: crate::pve::GuestRef,
    },
    /// A systemd unit's state.
    UnitStatus {
        /// The unit name.
        unit: String,
    },
}

/// A hub-to-agent command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Hub-assigned id echoed in the result.
    pub id: u64,
    /// What to do.
    pub body: CommandBody,
}

/// The result of a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The command's id.
    pub id: u64,
    /// Whether it succeeded.
    pub ok: bool,
    /// A short human-readable outcome.
    pub detail: String,
}

/// The outcome of an action command, as the agent's adapter reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionOutcome {
    /// The command's id.
    pub id: u64,
    /// What the adapter reports.
    pub result: crate::docker::ActionResult,
}

/// Messages an enrolled agent sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentMessage {
    /// Session handshake.
    Hello(Hello),
    /// Liveness.
    Heartbeat(Heartbeat),
    /// Facts.
    Facts(FactBatch),
    /// Certificate renewal.
    Renew(RenewRequest),
    /// Result of a hub command.
    CommandResult(CommandResult),
    /// Result of an action command (executed or refused by local policy).
    ActionOutcome(ActionOutcome),
    /// The audit head this agent kept from an earlier [`HubMessage::AuditHead`],
    /// sent once after [`Welcome`]: the hub checks that its chain still
    /// holds exactly this entry, so a rewritten chain is detected.
    AuditHeadKept(AuditHead),
}

/// The hub's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version the hub speaks on this session.
    pub protocol_version: u16,
    /// The agent id, as taken from the agent's verified certificate.
    pub agent_id: String,
    /// The hub's package version.
    pub hub_version: String,
    /// How often the agent must send a heartbeat.
    pub heartbeat_interval_ms: u32,
    /// Highest sequence number of [`Hello::stream_id`] the hub has committed;
    /// the agent resumes after it.
    pub committed_seq: u64,
}

/// Acknowledges that every batch up to `seq` is committed to the hub's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The stream.
    pub stream_id: u64,
    /// Highest committed sequence number.
    pub seq: u64,
}

/// The hub is overloaded: keep the batch and retry later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Busy {
    /// The batch that was not accepted.
    pub seq: u64,
    /// How long to wait before sending again.
    pub retry_after_ms: u32,
}

/// Outcome of a [`RenewRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RenewResponse {
    /// A new certificate, DER, and its expiry.
    Issued {
        /// The certificate.
        cert_der: Vec<u8>,
        /// Its `notAfter`, Unix milliseconds.
        not_after_ms: i64,
    },
    /// Renewal refused, with the reason.
    Refused {
        /// Why.
        reason: String,
    },
}

/// Why the hub refused or ended a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// A short human-readable reason.
    pub reason: String,
}

/// Messages the hub sends to an enrolled agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HubMessage {
    /// Session accepted.
    Welcome(Welcome),
    /// Batches committed.
    Ack(Ack),
    /// Slow down.
    Busy(Busy),
    /// Renewal outcome.
    Renewed(RenewResponse),
    /// A command (reserved for the control plane).
    Command(Command),
    /// Session refused or ended.
    Refused(Refused),
    /// An action of an approved plan step, signed with the hub's command key
    /// (pinned by the agent at enrollment). The agent verifies it, applies its
    /// own policy, and answers with [`AgentMessage::ActionOutcome`].
    Signed(SignedCommand),
    /// The hub's current audit-chain head; the agent keeps it.
    AuditHead(AuditHead),
}

/// A hub-signed action command.
///
/// The signature covers every field except `id` (a session-local
/// correlation number): see [`SignedCommand::signing_input`]. Signing and
/// verification live in the agent crate (`wingman_agent::command_sig`); this
/// crate only defines the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCommand {
    /// Session-local id echoed in the outcome (not signed).
    pub id: u64,
    /// The encoded command body (postcard of [`CommandBody`]); decode it only
    /// after the signature and binding were verified.
    pub body_bytes: Vec<u8>,
    /// The agent id the command is for.
    pub audience: String,
    /// SHA-256 of the approved plan.
    pub plan_hash: [u8; 32],
    /// SHA-256 of the approved step.
    pub step_hash: [u8; 32],
    /// When the hub signed it, Unix seconds.
    pub issued_at: i64,
    /// Not valid after this, Unix seconds.
    pub expires_at: i64,
    /// Random, unique per command.
    pub nonce: [u8; 16],
    /// Which hub key signed it: the first 8 bytes of the SHA-256 of the
    /// Ed25519 public key, hex.
    pub key_id: String,
    /// Ed25519 signature over [`SignedCommand::signing_input`].
    pub signature: Vec<u8>,
}

const SIGNING_DOMAIN: &[u8] = b"wingman-command-v1\0";

fn put_len_prefixed(buf: &mut Vec<u8>, bytes: &[u8]) {
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(bytes);
}

impl SignedCommand {
    /// The exact bytes the signature covers:
    /// `"wingman-command-v1\0" ‖ L(key_id) ‖ L(audience) ‖ plan_hash ‖
    /// step_hash ‖ issued_at ‖ expires_at ‖ nonce ‖ L(body_bytes)`, where
    /// `L(x)` is `x`'s length as a big-endian u64 followed by `x`, and the
    /// times are big-endian i64.
    pub fn signing_input(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(SIGNING_DOMAIN.len() + 160 + self.body_bytes.len());
        buf.extend_from_slice(SIGNING_DOMAIN);
        put_len_prefixed(&mut buf, self.key_id.as_bytes());
        put_len_prefixed(&mut buf, self.audience.as_bytes());
        buf.extend_from_slice(&self.plan_hash);
        buf.extend_from_slice(&self.step_hash);
        buf.extend_from_slice(&self.issued_at.to_be_bytes());
        buf.extend_from_slice(&self.expires_at.to_be_bytes());
        buf.extend_from_slice(&self.nonce);
        put_len_prefixed(&mut buf, &self.body_bytes);
        buf
    }
}

/// The newest audit entry's position and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Its sequence number (1, 2, ...).
    pub seq: u64,
    /// Its hash, lowercase hex.
    pub hash: String,
}

/// The single request a client without a certificate may send, on [`crate::ALPN_ENROLL`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// [`crate::PROTOCOL_VERSION`] of the agent.
    pub protocol_version: u16,
    /// The one-time enrollment token.
    pub token: String,
    /// PKCS#10 CSR for the key the agent generated; the key never leaves the node.
    pub csr_der: Vec<u8>,
    /// The node's hostname (informational; the hub assigns the agent id).
    pub hostname: String,
    /// The node kind.
    pub host_kind: HostKind,
    /// The agent's package version.
    pub agent_version: String,
}

/// The hub's answer to an [`EnrollRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollResponse {
    /// Enrolled: the agent's identity and client certificate.
    Enrolled {
        /// The agent id the hub assigned.
        agent_id: String,
        /// The signed client certificate, DER.
        cert_der: Vec<u8>,
        /// Its `notAfter`, Unix milliseconds.
        not_after_ms: i64,
    },
    /// Refused, with the reason.
    Refused {
        /// Why.
        reason: String,
    },
    /// Enrolled, with the hub's command-signing key for the agent to pin.
    EnrolledWithKey {
        /// The agent id the hub assigned.
        agent_id: String,
        /// The signed client certificate, DER.
        cert_der: Vec<u8>,
        /// Its `notAfter`, Unix milliseconds.
        not_after_ms: i64,
        /// The hub's Ed25519 command public key (32 bytes); the agent accepts
        /// signed commands from this key only.
        command_key: Vec<u8>,
    },
}

/// Encodes a [`CommandBody`] for [`SignedCommand::body_bytes`] (plain
/// postcard, no frame).
pub fn encode_body(body: &CommandBody) -> Result<Vec<u8>, crate::EncodeError> {
    postcard::to_stdvec(body).map_err(|e| crate::EncodeError::Serialize(e.to_string()))
}

/// Decodes [`SignedCommand::body_bytes`]; trailing bytes are an error.
pub fn decode_body(bytes: &[u8]) -> Result<CommandBody, crate::DecodeError> {
    let (body, rest) = postcard::take_from_bytes::<CommandBody>(bytes)
        .map_err(|e| crate::DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(crate::DecodeError::TrailingBytes(rest.len()));
    }
    Ok(body)
}
