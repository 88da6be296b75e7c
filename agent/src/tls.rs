//! TLS for the agent's QUIC link: the ring crypto provider, the pinned-CA
//! verifier used at enrollment, and client configs for both ALPNs.

use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

/// The one crypto provider of the workspace.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process-wide default provider; harmless if already set.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// SHA-256 of a DER certificate, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Parses a fingerprint as printed by the hub, also accepting `sha256:` and
/// colon-separated forms. Returns 32 bytes or `None`.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    let s = s
        .strip_prefix("sha256:")
        .or_else(|| s.strip_prefix("SHA256:"))
        .unwrap_or(s);
    let cleaned: String = s.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(cleaned).ok()?;
    bytes.try_into().ok()
}

/// Errors building TLS configs.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the configuration.
    #[error("TLS configuration error: {0}")]
    Rustls(#[from] rustls::Error),
    /// The QUIC layer refused the TLS configuration.
    #[error("QUIC TLS configuration error: {0}")]
    Quic(String),
    /// A certificate or key could not be used.
    #[error("invalid certificate or key: {0}")]
    Invalid(String),
}

/// Verifies the hub by a pinned CA fingerprint: the hub must present the CA in
/// its chain, the CA's SHA-256 must equal the pin, and the hub's certificate
/// must chain to it for [`wingman_protocol::HUB_SERVER_NAME`].
#[derive(Debug)]
pub struct PinnedCaVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
    /// The CA fingerprint the hub actually presented, for error messages.
    pub observed: Mutex<Option<String>>,
    /// The pinned CA certificate once seen, to be saved after enrollment.
    pub ca_der: Mutex<Option<Vec<u8>>>,
}

impl PinnedCaVerifier {
    /// Creates a verifier for `pin`.
    pub fn new(pin: [u8; 32], provider: Arc<CryptoProvider>) -> Self {
        Self {
            pin,
            provider,
            observed: Mutex::new(None),
            ca_der: Mutex::new(None),
        }
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let found = intermediates
            .iter()
            .find(|c| Sha256::digest(c.as_ref()).as_slice() == self.pin);
        let Some(ca) = found else {
            let seen = intermediates.last().map(|c| fingerprint(c.as_ref()));
            if let Ok(mut o) = self.observed.lock() {
                *o = seen.or_else(|| Some("(no CA certificate presented)".into()));
            }
            return Err(rustls::Error::General(
                "hub CA fingerprint does not match the pinned fingerprint".into(),
            ));
        };
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("pinned CA unusable: {e}")))?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verified =
            inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)?;
        if let Ok(mut slot) = self.ca_der.lock() {
            *slot = Some(ca.as_ref().to_vec());
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn quic_client(
    mut tls: rustls::ClientConfig,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, TlsError> {
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls.enable_early_data = false;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(std::time::Duration::from_secs(5)));
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(std::time::Duration::from_secs(30))
            .map_err(|e| TlsError::Quic(e.to_string()))?,
    ));
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

/// Client config for enrollment: no client certificate, hub pinned by CA hash.
pub fn enroll_client_config(
    verifier: Arc<PinnedCaVerifier>,
) -> Result<quinn::ClientConfig, TlsError> {
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    quic_client(tls, wingman_protocol::ALPN_ENROLL)
}

/// Client config for an enrolled agent: the hub must chain to `ca_der`, and the
/// agent authenticates with `chain` and `key`.
pub fn agent_client_config(
    ca_der: &[u8],
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .map_err(|e| TlsError::Invalid(format!("hub CA certificate: {e}")))?;
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    quic_client(tls, wingman_protocol::ALPN_AGENT)
}

/// Whether a certificate's public key matches the private key (PKCS#8 DER).
pub fn cert_matches_key(cert_der: &[u8], key_pkcs8_der: &[u8]) -> bool {
    let Ok(key) = provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(key_pkcs8_der.to_vec().into()))
    else {
        return false;
    };
    let ck = rustls::sign::CertifiedKey::new(vec![CertificateDer::from(cert_der.to_vec())], key);
    ck.keys_match().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_forms_parse() {
        let fp = fingerprint(b"abc");
        let raw = parse_fingerprint(&fp).unwrap();
        assert_eq!(hex::encode(raw), fp);
        let colons: Vec<String> = raw.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(
            parse_fingerprint(&format!("sha256:{}", colons.join(":"))),
            Some(raw)
        );
        assert_eq!(parse_fingerprint("abcd"), None);
        assert_eq!(parse_fingerprint("zz"), None);
    }
}
