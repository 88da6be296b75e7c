//! The agent's enrollment state on disk: identity (certificate and key), the
//! hub's CA, and the enrollment record. Every file is written atomically; the
//! key file and the directory are private to the agent's user.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::{ensure_private_dir, write_atomic};

/// File holding the client certificate and private key (PEM, mode 0600).
pub const IDENTITY_FILE: &str = "identity.pem";
/// File holding the hub's CA certificate (PEM).
pub const CA_FILE: &str = "hub-ca.pem";
/// File holding the enrollment record (TOML).
pub const ENROLLMENT_FILE: &str = "enrollment.toml";

/// Errors reading or writing agent state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The node is not enrolled yet.
    #[error(
        "this node is not enrolled (no {0}); run `wingman-agent enroll --hub HOST:PORT --token TOKEN --ca-sha256 FINGERPRINT` first"
    )]
    NotEnrolled(PathBuf),
    /// A state file could not be read or written.
    #[error("cannot access agent state {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A state file is corrupt.
    #[error("agent state file {path} is invalid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The enrollment record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// Address of the hub's QUIC listener (`HOST:PORT`).
    pub hub: String,
    /// The agent id the hub assigned.
    pub agent_id: String,
    /// The fact stream id.
    pub stream_id: u64,
    /// When the current certificate expires, Unix milliseconds.
    pub cert_not_after_ms: i64,
    /// When the current certificate was issued, Unix milliseconds.
    pub cert_issued_at_ms: i64,
    /// The hub's Ed25519 command key (hex), pinned at enrollment. Signed
    /// action commands from any other key are refused; without one (nodes
    /// enrolled by an older hub) every action is refused until re-enrolled.
    #[serde(default)]
    pub command_key: Option<String>,
}

/// Everything the agent needs to connect.
#[derive(Clone)]
pub struct Identity {
    /// The enrollment record.
    pub enrollment: Enrollment,
    /// Client certificate, DER.
    pub cert_der: Vec<u8>,
    /// Private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
    /// Hub CA certificate, DER.
    pub ca_der: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("enrollment", &self.enrollment)
            .field("key_der", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> StateError {
    StateError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn pem_of(tag: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(tag, der.to_vec()))
}

impl Identity {
    /// Loads the identity from `dir`.
    pub fn load(dir: &Path) -> Result<Self, StateError> {
        let rec_path = dir.join(ENROLLMENT_FILE);
        let rec_text = match std::fs::read_to_string(&rec_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotEnrolled(rec_path));
            }
            Err(e) => return Err(io_err(&rec_path)(e)),
        };
        let enrollment: Enrollment =
            toml::from_str(&rec_text).map_err(|e| invalid(&rec_path, e.message().to_string()))?;
        let id_path = dir.join(IDENTITY_FILE);
        let id_text = std::fs::read_to_string(&id_path).map_err(io_err(&id_path))?;
        let blocks = pem::parse_many(&id_text).map_err(|e| invalid(&id_path, e.to_string()))?;
        let cert_der = blocks
            .iter()
            .find(|p| p.tag() == "CERTIFICATE")
            .map(|p| p.contents().to_vec())
            .ok_or_else(|| invalid(&id_path, "no CERTIFICATE block"))?;
        let key_der = blocks
            .iter()
            .find(|p| p.tag() == "PRIVATE KEY")
            .map(|p| p.contents().to_vec())
            .ok_or_else(|| invalid(&id_path, "no PRIVATE KEY block"))?;
        let ca_path = dir.join(CA_FILE);
        let ca_text = std::fs::read_to_string(&ca_path).map_err(io_err(&ca_path))?;
        let ca_der = pem::parse(&ca_text)
            .map_err(|e| invalid(&ca_path, e.to_string()))?
            .contents()
            .to_vec();
        if !crate::tls::cert_matches_key(&cert_der, &key_der) {
            return Err(invalid(&id_path, "certificate does not match private key"));
        }
        Ok(Self {
            enrollment,
            cert_der,
            key_der,
            ca_der,
        })
    }

    /// Writes the identity into `dir`, each file atomically; the identity file
    /// last-but-one and the enrollment record last, so a crash leaves either the
    /// old enrollment or the complete new one.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        ensure_private_dir(dir).map_err(io_err(dir))?;
        let ca_path = dir.join(CA_FILE);
        write_atomic(
            &ca_path,
            pem_of("CERTIFICATE", &self.ca_der).as_bytes(),
            0o644,
        )
        .map_err(io_err(&ca_path))?;
        self.save_identity(dir)?;
        let rec_path = dir.join(ENROLLMENT_FILE);
        let text =
            toml::to_string(&self.enrollment).map_err(|e| invalid(&rec_path, e.to_string()))?;
        write_atomic(&rec_path, text.as_bytes(), 0o600).map_err(io_err(&rec_path))?;
        Ok(())
    }

    /// Writes only the certificate and key (after a renewal), then the record.
    pub fn save_renewed(&self, dir: &Path) -> Result<(), StateError> {
        self.save_identity(dir)?;
        let rec_path = dir.join(ENROLLMENT_FILE);
        let text =
            toml::to_string(&self.enrollment).map_err(|e| invalid(&rec_path, e.to_string()))?;
        write_atomic(&rec_path, text.as_bytes(), 0o600).map_err(io_err(&rec_path))
    }

    fn save_identity(&self, dir: &Path) -> Result<(), StateError> {
        let id_path = dir.join(IDENTITY_FILE);
        let mut text = pem_of("CERTIFICATE", &self.cert_der);
        text.push_str(&pem_of("PRIVATE KEY", &self.key_der));
        write_atomic(&id_path, text.as_bytes(), 0o600).map_err(io_err(&id_path))
    }
}

/// Checks that `dir` can hold agent state: it exists or can be created, and a
/// file can be written there. Used before enrollment touches the network.
pub fn check_writable(dir: &Path) -> Result<(), StateError> {
    ensure_private_dir(dir).map_err(io_err(dir))?;
    let probe = dir.join(".write-probe");
    write_atomic(&probe, b"ok", 0o600).map_err(io_err(dir))?;
    std::fs::remove_file(&probe).map_err(io_err(&probe))?;
    Ok(())
}
