//! Enrollment and the agent link, end to end on 127.0.0.1.

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use wingman_agent::enroll::{EnrollError, enroll};
use wingman_agent::state::Identity;
use wingman_hub::store::NewToken;
use wingman_protocol::HUB_SERVER_NAME;

use crate::common::{TestAgent, TestHub, eventually, http_client};

async fn node_json(th: &TestHub, key: &str, id: &str) -> Option<Value> {
    let resp = http_client()
        .get(th.url(&format!("/api/v1/nodes/{id}")))
        .bearer_auth(key)
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolled_agent_streams_facts_goes_offline_and_returns() {
    let mut th = TestHub::start(|_| {}).await;
    let key = th.api_key().await;
    let agent_dir = th.dir.path().join("agent");
    let started = std::time::Instant::now();
    let id = th.enroll(&agent_dir).await;
    let agent_id = id.enrollment.agent_id.clone();

    // Key file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(agent_dir.join("identity.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let mut agent = TestAgent::start(&agent_dir);
    // The node appears with host facts within 5 s of enrollment starting.
    let node = eventually(Duration::from_secs(5), "node with host facts", || {
        let (th, key, agent_id) = (&th, &key, &agent_id);
        async move {
            let v = node_json(th, key, agent_id).await?;
            (v["node"]["online"] == true && v["facts"]["host"]["body"]["cpu_count"].as_u64()? >= 1)
                .then_some(v)
        }
    })
    .await;
    eprintln!("node visible with facts after {:?}", started.elapsed());
    assert_eq!(node["node"]["kind"], "plain");
    assert!(node["facts"]["host"]["body"]["mem_total"].as_u64().unwrap() > 0);

    // The list endpoint shows it too, with indicators.
    let list: Value = http_client()
        .get(th.url("/api/v1/nodes"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = list["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == agent_id.as_str())
        .unwrap();
    assert!(entry["host"]["mem_used_pct"].as_f64().unwrap() > 0.0);

    // Stop the agent: offline after the heartbeat timeout (1 s here).
    agent.stop().await;
    let stopped = std::time::Instant::now();
    eventually(Duration::from_secs(5), "node offline", || {
        let (th, key, agent_id) = (&th, &key, &agent_id);
        async move {
            let v = node_json(th, key, agent_id).await?;
            (v["node"]["online"] == false).then_some(())
        }
    })
    .await;
    assert!(
        stopped.elapsed() >= Duration::from_millis(500),
        "went offline before the timeout"
    );

    // Back again: online.
    let mut agent = TestAgent::start(&agent_dir);
    let v = eventually(Duration::from_secs(5), "node online again", || {
        let (th, key, agent_id) = (&th, &key, &agent_id);
        async move {
            let v = node_json(th, key, agent_id).await?;
            (v["node"]["online"] == true).then_some(v)
        }
    })
    .await;
    let transitions: Vec<bool> = v["presence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["online"].as_bool().unwrap())
        .collect();
    assert_eq!(&transitions[..3], &[true, false, true], "{transitions:?}");
    // Sequence numbers resume after the committed one, so nothing is stored twice.
    let before = th.hub.store.fact_count(&agent_id).await.unwrap();
    eventually(Duration::from_secs(5), "more facts", || {
        let th = &th;
        let agent_id = &agent_id;
        async move { (th.hub.store.fact_count(agent_id).await.ok()? > before).then_some(()) }
    })
    .await;
    agent.stop().await;
    th.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_single_use_and_expire() {
    let mut th = TestHub::start(|_| {}).await;
    let token = th.token().await;
    let fp = th.hub.pki.fingerprint().to_string();
    let a = th.dir.path().join("a");
    enroll(&th.enroll_opts(&a, &token, &fp)).await.unwrap();

    // Reused token.
    let b = th.dir.path().join("b");
    let err = enroll(&th.enroll_opts(&b, &token, &fp)).await.unwrap_err();
    assert!(
        matches!(&err, EnrollError::Refused(r) if r.contains("already been used")),
        "{err}"
    );
    assert!(
        !b.join("identity.pem").exists(),
        "nothing written on refusal"
    );

    // Expired token.
    let minted = wingman_hub::auth::mint_token();
    let now = wingman_agent::now_ms();
    th.hub
        .store
        .create_enrollment_token(&NewToken {
            id: minted.id.clone(),
            secret_hash: minted.secret_hash.clone(),
            created_at: now - 7_200_000,
            expires_at: now - 3_600_000,
        })
        .await
        .unwrap();
    let err = enroll(&th.enroll_opts(&b, &minted.token, &fp))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EnrollError::Refused(r) if r.contains("expired")),
        "{err}"
    );

    // Unknown and malformed tokens.
    let err = enroll(&th.enroll_opts(&b, "wmt_0123456789ab.AAAAAAAAAAAAAAAAAAAAAAAA", &fp))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EnrollError::Refused(r) if r.contains("not valid")),
        "{err}"
    );
    let err = enroll(&th.enroll_opts(&b, "not a token", &fp))
        .await
        .unwrap_err();
    assert!(matches!(err, EnrollError::BadToken), "{err}");

    // 20 parallel enrollments with one token: exactly one succeeds.
    let token = th.token().await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let opts = th.enroll_opts(&th.dir.path().join(format!("p{i}")), &token, &fp);
        tasks.push(tokio::spawn(async move { enroll(&opts).await.is_ok() }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }
    assert_eq!(ok, 1);
    th.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_pin_is_refused_before_the_token_is_sent() {
    let mut th = TestHub::start(|_| {}).await;
    let token = th.token().await;
    let dir = th.dir.path().join("a");
    let wrong = "ab".repeat(32);
    let err = enroll(&th.enroll_opts(&dir, &token, &wrong))
        .await
        .unwrap_err();
    match &err {
        EnrollError::PinMismatch { expected, observed } => {
            assert_eq!(expected, &wrong);
            assert_eq!(observed, th.hub.pki.fingerprint());
        }
        other => panic!("expected a pin mismatch, got {other}"),
    }
    assert!(err.to_string().contains("refusing to send the token"));
    // The token never reached the hub: it still works with the right pin.
    enroll(&th.enroll_opts(&dir, &token, th.hub.pki.fingerprint()))
        .await
        .unwrap();
    // A malformed fingerprint is rejected with a clear message.
    let err = enroll(&th.enroll_opts(&dir, &token, "xyz"))
        .await
        .unwrap_err();
    assert!(matches!(err, EnrollError::BadFingerprint));
    // Re-enrolling an enrolled node needs --force.
    let err = enroll(&th.enroll_opts(&dir, &th.token().await, th.hub.pki.fingerprint()))
        .await
        .unwrap_err();
    assert!(matches!(err, EnrollError::AlreadyEnrolled { .. }), "{err}");
    th.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_hub_and_unwritable_state_dir_are_clear_errors() {
    wingman_agent::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on this port: a timeout with a clear sentence.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    drop(sock);
    let opts = wingman_agent::enroll::EnrollOptions {
        hub: addr.to_string(),
        token: "wmt_0123456789ab.AAAAAAAAAAAAAAAAAAAAAAAA".into(),
        ca_sha256: "ab".repeat(32),
        state_dir: dir.path().join("s"),
        force: false,
        host_kind: wingman_protocol::HostKind::Plain,
        hostname: "n".into(),
    };
    let err = enroll(&opts).await.unwrap_err();
    assert!(matches!(err, EnrollError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("cannot reach the hub"), "{err}");

    // A state dir under a regular file cannot be created.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let opts = wingman_agent::enroll::EnrollOptions {
        state_dir: file.join("state"),
        ..opts
    };
    let err = enroll(&opts).await.unwrap_err();
    assert!(
        err.to_string().contains("cannot access agent state"),
        "{err}"
    );

    let opts = wingman_agent::enroll::EnrollOptions {
        hub: "no-such-host.invalid:4433".into(),
        state_dir: dir.path().join("s2"),
        ..opts
    };
    let err = enroll(&opts).await.unwrap_err();
    assert!(
        err.to_string().contains("cannot resolve hub address"),
        "{err}"
    );
}

fn client_config(
    ca_der: &[u8],
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> quinn::ClientConfig {
    wingman_agent::tls::agent_client_config(ca_der, chain, key).unwrap()
}

async fn dial(th: &TestHub, cfg: quinn::ClientConfig) -> Result<quinn::Connection, String> {
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = ep
        .connect_with(cfg, th.quic, HUB_SERVER_NAME)
        .unwrap()
        .await
        .map_err(|e| e.to_string())?;
    // With TLS 1.3 the server checks the client certificate after the client
    // considers the handshake done; a refused certificate shows up as the
    // connection closing right away.
    match tokio::time::timeout(Duration::from_millis(500), conn.closed()).await {
        Ok(reason) => Err(reason.to_string()),
        Err(_) => Ok(conn),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_ca_client_certificates_are_refused() {
    let mut th = TestHub::start(|_| {}).await;
    // A rogue CA and a client certificate it signed.
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "rogue");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&leaf_key, &ca).unwrap();
    let cfg = client_config(
        th.hub.pki.ca_der(),
        vec![cert.der().clone(), ca.der().clone()],
        PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    );
    let err = dial(&th, cfg).await.unwrap_err();
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("handshake"),
        "{err}"
    );

    // A certificate for this CA's key that the hub never issued (for example,
    // a copy forged with a stolen CA key) is refused too: only issued
    // certificates are accepted.
    let dir = th.dir.path().join("a");
    let id = th.enroll(&dir).await;
    let (key2, csr2) = wingman_agent::enroll::new_key_and_csr("x").unwrap();
    let pki2 = wingman_hub::pki::HubPki::load_or_create(&th.dir.path().join("hub")).unwrap();
    let (forged, _) = pki2
        .sign_agent_csr(
            &csr2,
            &id.enrollment.agent_id,
            3600,
            wingman_agent::now_ms(),
        )
        .unwrap();
    let cfg = client_config(
        th.hub.pki.ca_der(),
        vec![CertificateDer::from(forged)],
        PrivateKeyDer::Pkcs8(key2.into()),
    );
    assert!(dial(&th, cfg).await.is_err());
    th.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_agent_is_disconnected_and_refused() {
    let mut th = TestHub::start(|_| {}).await;
    let dir = th.dir.path().join("a");
    let id = th.enroll(&dir).await;
    let agent_id = id.enrollment.agent_id.clone();
    let mut agent = TestAgent::start(&dir);
    eventually(Duration::from_secs(5), "agent connected", || {
        let th = &th;
        async move { (th.hub.registry.connected() == 1).then_some(()) }
    })
    .await;
    let sessions_before = agent.stats().sessions;

    // Revoke through the CLI path (store + registry), as `wingman-hub agent revoke` does.
    wingman_hub::commands::revoke_agent(&th.hub, &agent_id)
        .await
        .unwrap();
    let t = std::time::Instant::now();
    eventually(Duration::from_secs(1), "live link closed", || {
        let th = &th;
        async move { (th.hub.registry.connected() == 0).then_some(()) }
    })
    .await;
    eprintln!("revoked link closed after {:?}", t.elapsed());

    // The agent keeps retrying, but every handshake fails.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(th.hub.registry.connected(), 0);
    assert_eq!(
        agent.stats().sessions,
        sessions_before,
        "no new session after revocation"
    );
    let identity = Identity::load(&dir).unwrap();
    let cfg = client_config(
        &identity.ca_der,
        vec![CertificateDer::from(identity.cert_der.clone())],
        PrivateKeyDer::Pkcs8(identity.key_der.clone().into()),
    );
    assert!(dial(&th, cfg).await.is_err());
    let row = th.hub.store.get_agent(&agent_id).await.unwrap().unwrap();
    assert!(row.revoked_at.is_some());
    assert!(!row.online);
    agent.stop().await;
    th.stop().await;
}

async fn raw_session(th: &TestHub, dir: &std::path::Path) -> quinn::Connection {
    let identity = Identity::load(dir).unwrap();
    let cfg = client_config(
        &identity.ca_der,
        vec![CertificateDer::from(identity.cert_der.clone())],
        PrivateKeyDer::Pkcs8(identity.key_der.clone().into()),
    );
    dial(th, cfg).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_close_only_that_connection() {
    let mut th = TestHub::start(|_| {}).await;
    let good_dir = th.dir.path().join("good");
    let good = th.enroll(&good_dir).await;
    let mut agent = TestAgent::start(&good_dir);
    let good_id = good.enrollment.agent_id.clone();
    eventually(Duration::from_secs(5), "good agent facts", || {
        let (th, id) = (&th, &good_id);
        async move { (th.hub.store.fact_count(id).await.ok()? >= 1).then_some(()) }
    })
    .await;

    let bad_dir = th.dir.path().join("bad");
    th.enroll(&bad_dir).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage body", {
            let mut v = 6u32.to_be_bytes().to_vec();
            v.extend_from_slice(&[0xff; 6]);
            v
        }),
        ("oversized length", {
            let mut v = (64u32 << 20).to_be_bytes().to_vec();
            v.extend_from_slice(&[0; 16]);
            v
        }),
        ("facts before hello", {
            wingman_protocol::encode(&wingman_protocol::AgentMessage::Heartbeat(
                wingman_protocol::Heartbeat { sent_at_ms: 0 },
            ))
            .unwrap()
        }),
    ];
    for (name, bytes) in cases {
        let conn = raw_session(&th, &bad_dir).await;
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(&bytes).await.unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .unwrap_or_else(|_| panic!("{name}: hub did not close the connection"));
        match reason {
            quinn::ConnectionError::ApplicationClosed(c) => {
                assert_eq!(c.error_code, quinn::VarInt::from_u32(2), "{name}: {c:?}")
            }
            other => panic!("{name}: unexpected close {other:?}"),
        }
    }
    // The well-behaved agent is still served.
    let before = th.hub.store.fact_count(&good_id).await.unwrap();
    eventually(Duration::from_secs(5), "good agent still ingesting", || {
        let (th, id) = (&th, &good_id);
        async move { (th.hub.store.fact_count(id).await.ok()? > before).then_some(()) }
    })
    .await;
    assert_eq!(agent.stats().sessions, 1, "good agent never reconnected");
    agent.stop().await;
    th.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_renew_automatically_over_the_link() {
    let mut th = TestHub::start(|c| c.agents.cert_lifetime_secs = 10).await;
    let dir = th.dir.path().join("a");
    let id = th.enroll(&dir).await;
    let first_cert = id.cert_der.clone();
    let mut agent = TestAgent::start(&dir);
    // Renewal happens at 60-75% of 10 s.
    let stats = eventually(Duration::from_secs(12), "renewal", || {
        let agent = &agent;
        async move {
            let s = agent.stats();
            (s.renewals >= 1 && s.sessions >= 2).then_some(s)
        }
    })
    .await;
    assert!(stats.renewals >= 1);
    let renewed = Identity::load(&dir).unwrap();
    assert_ne!(renewed.cert_der, first_cert);
    assert_ne!(renewed.key_der, id.key_der, "renewal re-keys");
    assert_eq!(renewed.enrollment.agent_id, id.enrollment.agent_id);
    // The new session uses the new certificate and facts keep flowing.
    let n = th
        .hub
        .store
        .fact_count(&id.enrollment.agent_id)
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "facts after renewal", || {
        let (th, aid) = (&th, &id.enrollment.agent_id);
        async move { (th.hub.store.fact_count(aid).await.ok()? > n).then_some(()) }
    })
    .await;
    agent.stop().await;
    th.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_certificate_renewal_is_overdue_opens_an_incident() {
    let mut th = TestHub::start(|c| c.agents.cert_lifetime_secs = 10).await;
    let key = th.api_key().await;
    // Enrolled, but never connects, so it cannot renew.
    th.enroll(&th.dir.path().join("silent")).await;
    let title = eventually(Duration::from_secs(20), "certificate incident", || {
        let (th, key) = (&th, key.clone());
        async move {
            let v: serde_json::Value = crate::common::http_client()
                .get(th.url("/api/v1/incidents"))
                .bearer_auth(&key)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            v["incidents"].as_array()?.iter().find_map(|i| {
                let t = i["title"].as_str()?;
                t.contains("wingman agent certificate")
                    .then(|| t.to_string())
            })
        }
    })
    .await;
    assert!(title.contains("expire"), "{title}");
    th.shutdown.cancel();
    th.stop().await;
}
