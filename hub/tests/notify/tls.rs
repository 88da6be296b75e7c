//! The TLS path (rustls with ring): an https URL is pinned to the checked
//! address but verified against the host name, and an untrusted
//! certificate is refused with a clear message (HTTP and SMTP).

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::common::{channel, sample};
use super::subject::{SendError, Severity, Transition};

/// A TLS listener with a self-signed certificate for `localhost`.
async fn self_signed_server() -> SocketAddr {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(sock).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_untrusted_certificate_refused() {
    let addr = self_signed_server().await;
    let ch = channel(&format!(
        "kind = \"ntfy\"\nname = \"phone\"\nserver = \"https://localhost:{}\"\ntopic = \"t\"\nallow_loopback = true",
        addr.port()
    ));
    let err = ch
        .send(&sample(Severity::Warning, Transition::Opened))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SendError::Connect { .. }), "{msg}");
    assert!(
        msg.starts_with("could not connect to ntfy at localhost: TLS failed: "),
        "{msg}"
    );
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");
}

#[tokio::test]
async fn smtp_implicit_tls_untrusted_certificate_refused() {
    let addr = self_signed_server().await;
    let ch = channel(&format!(
        r#"kind = "email"
name = "mail"
host = "localhost"
port = {}
tls = "implicit"
username = "u"
password = "p"
from = "wingman@lab.example"
to = ["ops@lab.example"]
allow_loopback = true"#,
        addr.port()
    ));
    let err = ch
        .send(&sample(Severity::Warning, Transition::Opened))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("could not connect to SMTP server at localhost: TLS failed"),
        "{msg}"
    );
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");
}
