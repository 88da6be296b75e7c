//! Link benchmarks (a bench binary, not a timed test): enrollment time and the
//! hub's mutual-TLS session handshakes per second, on 127.0.0.1 against an
//! in-process hub on SQLite.
//!
//! Run: `cargo bench -p wingman-hub --bench link`
//!
//! A "handshake" here is what an agent does to get a working session: QUIC +
//! TLS 1.3 with client certificate, open a stream, send `Hello`, receive
//! `Welcome` (which includes the hub's store update marking the node online).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;
use wingman_agent::enroll::{EnrollOptions, enroll};
use wingman_agent::state::Identity;
use wingman_hub::{Hub, HubConfig, Listeners};
use wingman_protocol::{AgentMessage, FrameDecoder, HUB_SERVER_NAME, Hello, HostKind, HubMessage};

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let n = v.len();
    let sum: Duration = v.iter().sum();
    let p = |q: f64| v[((n as f64 - 1.0) * q).round() as usize];
    format!(
        "n={n} mean={:.1}ms p50={:.1}ms p95={:.1}ms max={:.1}ms",
        (sum / n as u32).as_secs_f64() * 1e3,
        p(0.5).as_secs_f64() * 1e3,
        p(0.95).as_secs_f64() * 1e3,
        p(1.0).as_secs_f64() * 1e3
    )
}

async fn handshake(ep: &quinn::Endpoint, cfg: quinn::ClientConfig, addr: std::net::SocketAddr) {
    let conn = ep
        .connect_with(cfg, addr, HUB_SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = AgentMessage::Hello(Hello {
        protocol_version: wingman_protocol::PROTOCOL_VERSION,
        agent_version: "bench".into(),
        host_kind: HostKind::Plain,
        hostname: "bench".into(),
        stream_id: 1,
    });
    send.write_all(&wingman_protocol::encode(&hello).unwrap())
        .await
        .unwrap();
    let mut dec = FrameDecoder::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(m) = dec.next_frame::<HubMessage>().unwrap() {
            assert!(matches!(m, HubMessage::Welcome(_)), "{m:?}");
            break;
        }
        let n = recv.read(&mut buf).await.unwrap().unwrap();
        dec.push(&buf[..n]);
    }
    conn.close(0u32.into(), b"bench");
}

fn main() {
    wingman_agent::tls::install_default_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = HubConfig {
            data_dir: dir.path().join("hub"),
            ..HubConfig::default()
        };
        config.quic.listen = "127.0.0.1:0".parse().unwrap();
        config.http.listen = "127.0.0.1:0".parse().unwrap();
        let listeners = Listeners::bind(&config).await.unwrap();
        let quic = listeners.quic_addr().unwrap();
        let hub = Hub::open(config).await.unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(wingman_hub::run(hub.clone(), listeners, shutdown.clone()));

        // Enrollment: token creation on the hub is excluded; the agent side
        // (key generation, pinned handshake, CSR, signing, state written with
        // fsync) is included.
        let mut times = Vec::new();
        let mut last_dir = None;
        for i in 0..30 {
            let token = wingman_hub::commands::create_token(&hub, 600, &quic.to_string())
                .await
                .unwrap()
                .token;
            let state = dir.path().join(format!("agent{i}"));
            let opts = EnrollOptions {
                hub: quic.to_string(),
                token,
                ca_sha256: hub.pki.fingerprint().to_string(),
                state_dir: state.clone(),
                force: false,
                host_kind: HostKind::Plain,
                hostname: format!("bench{i}"),
            };
            let t = Instant::now();
            enroll(&opts).await.unwrap();
            times.push(t.elapsed());
            last_dir = Some(state);
        }
        println!("enrollment: {}", stats(times));

        let id = Identity::load(&last_dir.unwrap()).unwrap();
        let cfg = wingman_agent::tls::agent_client_config(
            &id.ca_der,
            vec![CertificateDer::from(id.cert_der.clone())],
            PrivateKeyDer::Pkcs8(id.key_der.clone().into()),
        )
        .unwrap();

        // Sequential handshakes from one client endpoint.
        let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        for _ in 0..20 {
            handshake(&ep, cfg.clone(), quic).await;
        }
        let n = 300;
        let t = Instant::now();
        for _ in 0..n {
            handshake(&ep, cfg.clone(), quic).await;
        }
        let el = t.elapsed();
        println!(
            "handshakes sequential: {n} in {:.2}s = {:.0}/s",
            el.as_secs_f64(),
            n as f64 / el.as_secs_f64()
        );

        // Concurrent handshakes: 16 clients.
        let clients = 16;
        let per = 40;
        let t = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let cfg = cfg.clone();
            tasks.push(tokio::spawn(async move {
                let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
                for _ in 0..per {
                    handshake(&ep, cfg.clone(), quic).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let el = t.elapsed();
        let total = clients * per;
        println!(
            "handshakes concurrent ({clients} clients, client and hub share 2 cores): {total} in {:.2}s = {:.0}/s",
            el.as_secs_f64(),
            total as f64 / el.as_secs_f64()
        );
        shutdown.cancel();
        task.await.unwrap().unwrap();
    });
}
