//! Enrollment: generate a key on the node, verify the hub by its pinned CA
//! fingerprint, exchange a one-time token and a CSR for a client certificate.
//!
//! The token is only sent after the TLS handshake has proven the hub holds a
//! certificate chained to the pinned CA; with a wrong pin the handshake fails
//! first and nothing is sent.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, DnType, KeyPair};
use wingman_protocol::{
    EnrollRequest, EnrollResponse, HUB_SERVER_NAME, HostKind, MAX_FRAME_LEN, PROTOCOL_VERSION,
};

use crate::state::{Enrollment, Identity, StateError};
use crate::tls::{self, PinnedCaVerifier};

/// How long enrollment waits for the hub.
pub const ENROLL_TIMEOUT: Duration = Duration::from_secs(10);

/// Enrollment failures, each a sentence the CLI prints as is.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The `--ca-sha256` value is not a SHA-256 fingerprint.
    #[error(
        "--ca-sha256 must be a 64-character hex SHA-256 fingerprint as printed by `wingman-hub token create`"
    )]
    BadFingerprint,
    /// The token is empty or malformed.
    #[error(
        "the enrollment token is malformed; copy it exactly as printed by `wingman-hub token create`"
    )]
    BadToken,
    /// The hub address cannot be resolved.
    #[error("cannot resolve hub address {addr}: {reason}")]
    Resolve {
        /// What was given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The node is already enrolled.
    #[error(
        "this node is already enrolled as agent {agent_id} (state in {dir}); pass --force to enroll again"
    )]
    AlreadyEnrolled {
        /// The existing id.
        agent_id: String,
        /// The state dir.
        dir: String,
    },
    /// The hub presented a CA other than the pinned one.
    #[error(
        "the hub's CA fingerprint is {observed}, not the pinned {expected}; refusing to send the token (wrong hub, or a man in the middle)"
    )]
    PinMismatch {
        /// What `--ca-sha256` said.
        expected: String,
        /// What the hub presented.
        observed: String,
    },
    /// The hub could not be reached.
    #[error("cannot reach the hub at {addr}: {reason}")]
    Unreachable {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The hub refused the enrollment.
    #[error("the hub refused enrollment: {0}")]
    Refused(String),
    /// The hub answered something unexpected.
    #[error("the hub sent an invalid enrollment response: {0}")]
    Protocol(String),
    /// Key or CSR generation failed.
    #[error("cannot generate the agent key: {0}")]
    Key(String),
    /// State could not be written.
    #[error(transparent)]
    State(#[from] StateError),
}

/// What enrollment needs.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// `HOST:PORT` of the hub's QUIC listener.
    pub hub: String,
    /// The one-time token.
    pub token: String,
    /// The CA fingerprint to pin.
    pub ca_sha256: String,
    /// Where to keep state.
    pub state_dir: std::path::PathBuf,
    /// Replace an existing enrollment.
    pub force: bool,
    /// Node kind to report.
    pub host_kind: HostKind,
    /// Hostname to report.
    pub hostname: String,
}

/// Resolves `HOST:PORT` to a socket address.
pub async fn resolve(addr: &str) -> Result<SocketAddr, EnrollError> {
    let mut it = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| EnrollError::Resolve {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
    it.next().ok_or_else(|| EnrollError::Resolve {
        addr: addr.to_string(),
        reason: "no addresses".into(),
    })
}

/// Creates a new key pair and a CSR for it. Returns (pkcs8 key DER, CSR DER).
pub fn new_key_and_csr(hostname: &str) -> Result<(Vec<u8>, Vec<u8>), EnrollError> {
    let key = KeyPair::generate().map_err(|e| EnrollError::Key(e.to_string()))?;
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| EnrollError::Key(e.to_string()))?;
    params.distinguished_name.push(DnType::CommonName, hostname);
    let csr = params
        .serialize_request(&key)
        .map_err(|e| EnrollError::Key(e.to_string()))?;
    Ok((key.serialize_der(), csr.der().to_vec()))
}

/// Binds a client endpoint of the right address family for `remote`.
pub fn client_endpoint(remote: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let local: SocketAddr = if remote.is_ipv6() {
        "[::]:0".parse().map_err(std::io::Error::other)?
    } else {
        "0.0.0.0:0".parse().map_err(std::io::Error::other)?
    };
    quinn::Endpoint::client(local)
}

/// Runs enrollment and writes the identity into `opts.state_dir`.
pub async fn enroll(opts: &EnrollOptions) -> Result<Identity, EnrollError> {
    let pin = tls::parse_fingerprint(&opts.ca_sha256).ok_or(EnrollError::BadFingerprint)?;
    let token = opts.token.trim();
    if token.is_empty()
        || token.len() > 256
        || !token.is_ascii()
        || token.contains(char::is_whitespace)
    {
        return Err(EnrollError::BadToken);
    }
    if !opts.force
        && let Ok(existing) = Identity::load(&opts.state_dir)
    {
        return Err(EnrollError::AlreadyEnrolled {
            agent_id: existing.enrollment.agent_id,
            dir: opts.state_dir.display().to_string(),
        });
    }
    crate::state::check_writable(&opts.state_dir)?;
    let addr = resolve(&opts.hub).await?;
    let (key_der, csr_der) = new_key_and_csr(&opts.hostname)?;

    let verifier = Arc::new(PinnedCaVerifier::new(pin, tls::provider()));
    let cfg = tls::enroll_client_config(verifier.clone())
        .map_err(|e| EnrollError::Protocol(e.to_string()))?;
    let endpoint = client_endpoint(addr).map_err(|e| EnrollError::Unreachable {
        addr: opts.hub.clone(),
        reason: e.to_string(),
    })?;
    let unreachable = |reason: String| EnrollError::Unreachable {
        addr: opts.hub.clone(),
        reason,
    };
    let connecting = endpoint
        .connect_with(cfg, addr, HUB_SERVER_NAME)
        .map_err(|e| unreachable(e.to_string()))?;
    let conn = match tokio::time::timeout(ENROLL_TIMEOUT, connecting).await {
        Err(_) => {
            return Err(unreachable(format!(
                "no answer within {} s (is the hub running, and is its UDP port open?)",
                ENROLL_TIMEOUT.as_secs()
            )));
        }
        Ok(Err(e)) => {
            let observed = verifier.observed.lock().ok().and_then(|o| o.clone());
            if let Some(observed) = observed {
                return Err(EnrollError::PinMismatch {
                    expected: hex::encode(pin),
                    observed,
                });
            }
            return Err(unreachable(e.to_string()));
        }
        Ok(Ok(c)) => c,
    };
    let ca_der = verifier
        .ca_der
        .lock()
        .ok()
        .and_then(|c| c.clone())
        .ok_or_else(|| EnrollError::Protocol("pinned CA not seen in handshake".into()))?;

    let req = EnrollRequest {
        protocol_version: PROTOCOL_VERSION,
        token: token.to_string(),
        csr_der,
        hostname: opts.hostname.clone(),
        host_kind: opts.host_kind,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let exchange = async {
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let frame =
            wingman_protocol::encode(&req).map_err(|e| EnrollError::Protocol(e.to_string()))?;
        send.write_all(&frame)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = send.finish();
        let bytes = recv
            .read_to_end(MAX_FRAME_LEN + 4)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (resp, _) = wingman_protocol::decode::<EnrollResponse>(&bytes)
            .map_err(|e| EnrollError::Protocol(e.to_string()))?
            .ok_or_else(|| EnrollError::Protocol("truncated response".into()))?;
        Ok::<_, EnrollError>(resp)
    };
    let resp = tokio::time::timeout(ENROLL_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            unreachable("the hub did not answer the enrollment request in time".into())
        })??;
    conn.close(0u32.into(), b"enrolled");
    endpoint.wait_idle().await;

    let (agent_id, cert_der, not_after_ms, command_key) = match resp {
        EnrollResponse::Enrolled {
            agent_id,
            cert_der,
            not_after_ms,
        } => (agent_id, cert_der, not_after_ms, None),
        EnrollResponse::EnrolledWithKey {
            agent_id,
            cert_der,
            not_after_ms,
            command_key,
        } => {
            if command_key.len() != 32 {
                return Err(EnrollError::Protocol(format!(
                    "the hub's command key has {} bytes, expected 32",
                    command_key.len()
                )));
            }
            (
                agent_id,
                cert_der,
                not_after_ms,
                Some(hex::encode(command_key)),
            )
        }
        EnrollResponse::Refused { reason } => return Err(EnrollError::Refused(reason)),
    };
    if !tls::cert_matches_key(&cert_der, &key_der) {
        return Err(EnrollError::Protocol(
            "the issued certificate does not match the agent's key".into(),
        ));
    }
    let identity = Identity {
        enrollment: Enrollment {
            hub: opts.hub.clone(),
            agent_id,
            stream_id: rand::random::<u64>(),
            cert_not_after_ms: not_after_ms,
            cert_issued_at_ms: crate::now_ms(),
            command_key,
        },
        cert_der,
        key_der,
        ca_der,
    };
    identity.save(&opts.state_dir)?;
    Ok(identity)
}

/// Checks a state dir for an enrollment without loading the key.
pub fn is_enrolled(dir: &Path) -> bool {
    dir.join(crate::state::ENROLLMENT_FILE).exists()
}

/// The user the packaged service runs as (`packaging/agent/wingman-agent.sysusers`).
pub const SERVICE_USER: &str = "wingman";

/// A local account: its uid and primary gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// Finds `name` in passwd-format text (`name:x:uid:gid:gecos:home:shell`).
pub fn account_in(passwd: &str, name: &str) -> Option<Account> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != name {
            return None;
        }
        let _password = f.next()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some(Account { uid, gid })
    })
}

/// Looks `name` up in `/etc/passwd`. Service users created by sysusers.d,
/// `adduser --system` or `useradd --system` are local, so NSS is not needed.
pub fn system_account(name: &str) -> Option<Account> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    account_in(&passwd, name)
}

/// Whether this process runs as root (the owner of `/proc/self`, no libc needed).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Gives `dir` and everything below it to `account`. Symbolic links are
/// changed themselves, never followed.
pub fn chown_tree(dir: &Path, account: Account) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(account.uid), Some(account.gid))?;
    if std::fs::symlink_metadata(dir)?.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            chown_tree(&entry?.path(), account)?;
        }
    }
    Ok(())
}

/// After `enroll` ran as root: hands the state directory to [`SERVICE_USER`]
/// when that user exists (the package creates it), so the service, which runs
/// as that user, can read its key and write renewals. Returns the user name
/// when it changed the owner.
pub fn hand_over_state(dir: &Path) -> std::io::Result<Option<&'static str>> {
    if !running_as_root() {
        return Ok(None);
    }
    let Some(account) = system_account(SERVICE_USER) else {
        return Ok(None);
    };
    chown_tree(dir, account)?;
    Ok(Some(SERVICE_USER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_accounts_in_passwd_text() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      wingman-hub:x:998:997:Wingman hub:/var/lib/wingman-hub:/usr/sbin/nologin\n\
                      wingman:x:999:999:Wingman node agent:/var/lib/wingman-agent:/usr/sbin/nologin\n";
        assert_eq!(
            account_in(passwd, "wingman"),
            Some(Account { uid: 999, gid: 999 })
        );
        assert_eq!(
            account_in(passwd, "wingman-hub"),
            Some(Account { uid: 998, gid: 997 })
        );
        assert_eq!(account_in(passwd, "wing"), None);
        assert_eq!(account_in("broken:x:abc:1::/:/bin/sh", "broken"), None);
    }

    #[test]
    fn chown_tree_to_self_walks_without_following_links() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("raw")).unwrap();
        std::fs::write(d.path().join("raw/seg"), b"x").unwrap();
        std::os::unix::fs::symlink("/nonexistent", d.path().join("dangling")).unwrap();
        let m = std::fs::metadata(d.path()).unwrap();
        let me = Account {
            uid: m.uid(),
            gid: m.gid(),
        };
        chown_tree(d.path(), me).unwrap();
        assert_eq!(
            std::fs::metadata(d.path().join("raw/seg")).unwrap().uid(),
            me.uid
        );
    }
}
