//! The hub's enrollment CA: created on first start (key file mode 0600),
//! signs the hub's QUIC server certificate and agents' client certificates.
//!
//! Agent identity is assigned here, never taken from the CSR: the certificate
//! carries `urn:wingman:agent:<id>` as its only SAN and clientAuth as its only
//! extended key usage.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use time::OffsetDateTime;
use wingman_agent::fsutil::{ensure_private_dir, write_atomic};
use wingman_protocol::{AGENT_URI_PREFIX, HUB_SERVER_NAME};

/// CA key file name in the data dir.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// CA certificate file name in the data dir.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File holding the hub's Ed25519 command-signing key (PKCS#8 DER, mode 0600).
pub const COMMAND_KEY_FILE: &str = "command-key.pk8";

/// PKI errors.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is corrupt.
    #[error("{path} is not a valid {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What it should be.
        what: &'static str,
    },
    /// A CSR is invalid (bad encoding or signature).
    #[error("invalid certificate signing request")]
    BadCsr,
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),
}

fn gen_err(e: rcgen::Error) -> PkiError {
    PkiError::Generate(e.to_string())
}

/// The CA plus the hub's current server identity.
pub struct HubPki {
    issuer: Issuer<'static, KeyPair>,
    ca_der: Vec<u8>,
    fingerprint: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key_der: Vec<u8>,
    command_key: ring::signature::Ed25519KeyPair,
}

impl std::fmt::Debug for HubPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubPki")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn odt(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Loads the command key, creating it (0600) when absent.
fn load_or_create_command_key(path: &Path) -> Result<ring::signature::Ed25519KeyPair, PkiError> {
    use ring::signature::Ed25519KeyPair;
    let invalid = || PkiError::Invalid {
        path: path.to_path_buf(),
        what: "command key",
    };
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        let der = std::fs::read(path).map_err(io)?;
        return Ed25519KeyPair::from_pkcs8(&der).map_err(|_| invalid());
    }
    let rng = ring::rand::SystemRandom::new();
    let doc = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| PkiError::Generate("cannot generate the command key".into()))?;
    write_atomic(path, doc.as_ref(), 0o600).map_err(io)?;
    Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|_| invalid())
}

impl HubPki {
    /// Loads the CA from `dir`, creating it on first start, and issues a fresh
    /// server certificate for this run.
    pub fn load_or_create(dir: &Path) -> Result<Self, PkiError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PkiError::Io { path, source }
        };
        ensure_private_dir(dir).map_err(io(dir))?;
        let key_path = dir.join(CA_KEY_FILE);
        let cert_path = dir.join(CA_CERT_FILE);
        let (issuer, ca_der) = if key_path.exists() {
            let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            let key = KeyPair::from_pem(&key_pem).map_err(|_| PkiError::Invalid {
                path: key_path.clone(),
                what: "CA private key",
            })?;
            let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            let invalid_cert = || PkiError::Invalid {
                path: cert_path.clone(),
                what: "CA certificate",
            };
            let der = pem::parse(&cert_pem)
                .map_err(|_| invalid_cert())?
                .into_contents();
            let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(der.clone()), key)
                .map_err(|_| invalid_cert())?;
            (issuer, der)
        } else {
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
            params
                .distinguished_name
                .push(DnType::CommonName, "Wingman hub CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let now = wingman_agent::now_ms();
            params.not_before = odt(now - 5 * 60 * 1000);
            params.not_after = odt(now + 20 * 365 * 24 * 3600 * 1000);
            let key = KeyPair::generate().map_err(gen_err)?;
            let key_pem = key.serialize_pem();
            let certified = CertifiedIssuer::self_signed(params.clone(), key).map_err(gen_err)?;
            let der = certified.der().to_vec();
            // The key is written first; a crash before the certificate is
            // written leaves a key without a certificate, which the next start
            // reports instead of silently replacing the CA.
            write_atomic(&key_path, key_pem.as_bytes(), 0o600).map_err(io(&key_path))?;
            let cert_pem = pem::encode(&pem::Pem::new("CERTIFICATE", der.clone()));
            write_atomic(&cert_path, cert_pem.as_bytes(), 0o644).map_err(io(&cert_path))?;
            let key = KeyPair::from_pem(&key_pem).map_err(gen_err)?;
            (Issuer::new(params, key), der)
        };
        let fingerprint = wingman_agent::tls::fingerprint(&ca_der);
        let command_key = load_or_create_command_key(&dir.join(COMMAND_KEY_FILE))?;
        let mut pki = Self {
            issuer,
            ca_der,
            fingerprint,
            server_chain: Vec::new(),
            server_key_der: Vec::new(),
            command_key,
        };
        pki.issue_server_cert()?;
        Ok(pki)
    }

    fn issue_server_cert(&mut self) -> Result<(), PkiError> {
        let mut params =
            CertificateParams::new(vec![HUB_SERVER_NAME.to_string()]).map_err(gen_err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, HUB_SERVER_NAME);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = wingman_agent::now_ms();
        params.not_before = odt(now - 5 * 60 * 1000);
        params.not_after = odt(now + 365 * 24 * 3600 * 1000);
        params.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
        let key = KeyPair::generate().map_err(gen_err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(gen_err)?;
        self.server_chain = vec![
            cert.der().clone(),
            CertificateDer::from(self.ca_der.clone()),
        ];
        self.server_key_der = key.serialize_der();
        Ok(())
    }

    /// The command-signing public key (raw Ed25519, 32 bytes) agents pin at
    /// enrollment.
    pub fn command_public_key(&self) -> Vec<u8> {
        use ring::signature::KeyPair as _;
        self.command_key.public_key().as_ref().to_vec()
    }

    /// Signs an action command for an agent.
    pub fn sign_command(
        &self,
        cmd: wingman_agent::command_sig::CommandToSign,
    ) -> wingman_protocol::SignedCommand {
        wingman_agent::command_sig::sign(&self.command_key, cmd)
    }

    /// SHA-256 fingerprint of the CA certificate, lowercase hex.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// The server chain (server certificate, then the CA).
    pub fn server_chain(&self) -> Vec<CertificateDer<'static>> {
        self.server_chain.clone()
    }

    /// The server key.
    pub fn server_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.server_key_der.clone().into())
    }

    /// Signs a client certificate for `agent_id` over the public key in
    /// `csr_der` (whose signature is verified). Everything else in the CSR is
    /// ignored. Returns (certificate DER, notAfter ms).
    pub fn sign_agent_csr(
        &self,
        csr_der: &[u8],
        agent_id: &str,
        lifetime_secs: u64,
        now_ms: i64,
    ) -> Result<(Vec<u8>, i64), PkiError> {
        let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(
            csr_der.to_vec(),
        ))
        .map_err(|_| PkiError::BadCsr)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
        params.distinguished_name.push(DnType::CommonName, agent_id);
        let uri = format!("{AGENT_URI_PREFIX}{agent_id}");
        params.subject_alt_names = vec![SanType::URI(uri.try_into().map_err(gen_err)?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let lifetime_ms = i64::try_from(lifetime_secs.saturating_mul(1000)).unwrap_or(i64::MAX / 2);
        let not_after = now_ms.saturating_add(lifetime_ms);
        params.not_before = odt(now_ms - 5 * 60 * 1000);
        params.not_after = odt(not_after);
        params.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
        let signed = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(gen_err)?;
        Ok((signed.der().to_vec(), not_after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_persists_and_signs_csrs() {
        let dir = tempfile::tempdir().unwrap();
        let a = HubPki::load_or_create(dir.path()).unwrap();
        let b = HubPki::load_or_create(dir.path()).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (key, csr) = wingman_agent::enroll::new_key_and_csr("node").unwrap();
        let (cert, _) = b.sign_agent_csr(&csr, "agent-1", 3600, 0).unwrap();
        assert!(wingman_agent::tls::cert_matches_key(&cert, &key));
        assert!(matches!(
            b.sign_agent_csr(b"garbage", "x", 1, 0),
            Err(PkiError::BadCsr)
        ));
    }
}
