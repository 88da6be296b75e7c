//! Incident latency (a bench binary, not a timed test), against an
//! in-process hub on SQLite on 127.0.0.1:
//!
//! * **hub**: a fact batch handed to the hub's ingest queue (the step after
//!   the QUIC read) until the incident is visible through the API, and until
//!   the server-sent event reaches an open dashboard connection;
//! * **end to end**: a line appended to a file an agent follows (default
//!   settings: 10 s window, `urgent_flush_ms` 1 s) until the same two.
//!
//! Each round opens (or reopens) the incident, then resolves it through the
//! API so the next round is a fresh state change.
//!
//! Run: `cargo bench -p wingman-hub --bench incident_latency [-- ROUNDS]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wingman_agent::enroll::{EnrollOptions, enroll};
use wingman_hub::store::{AgentRow, FactRecord, IngestItem};
use wingman_hub::{Hub, HubConfig, Listeners};
use wingman_protocol::docker::RestartLoop;
use wingman_protocol::{Fact, FactBody, HostKind};

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let n = v.len();
    let p = |q: f64| v[((n as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e3;
    println!(
        "{name}: n={n} p50={:.1}ms p95={:.1}ms p99={:.1}ms max={:.1}ms",
        p(0.5),
        p(0.95),
        p(0.99),
        p(1.0)
    );
}

/// Reads `/api/v1/events` and forwards each incident event with its arrival time.
fn sse(url: String, key: String) -> mpsc::UnboundedReceiver<(Instant, Value)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut resp = reqwest::Client::new()
            .get(url)
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let mut buf = String::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:"))
                    && let Ok(v) = serde_json::from_str::<Value>(data.trim())
                {
                    let _ = tx.send((Instant::now(), v));
                }
            }
        }
    });
    rx
}

struct Ctx {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Ctx {
    async fn open_incident(&self, node: &str) -> Option<String> {
        let v: Value = self
            .http
            .get(format!(
                "{}/api/v1/incidents?state=open&node={node}",
                self.base
            ))
            .bearer_auth(&self.key)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["incidents"][0]["id"].as_str().map(str::to_string)
    }

    /// Polls the API every 2 ms until an open incident for `node` shows.
    async fn wait_api(&self, node: &str, t0: Instant) -> (String, Duration) {
        loop {
            if let Some(id) = self.open_incident(node).await {
                return (id, t0.elapsed());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no incident for {node}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn resolve(&self, id: &str, events: &mut mpsc::UnboundedReceiver<(Instant, Value)>) {
        let r = self
            .http
            .post(format!("{}/api/v1/incidents/{id}/resolve", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        while let Some((_, e)) = events.recv().await {
            if e["id"] == id && e["state"] == "resolved" {
                break;
            }
        }
    }
}

/// The arrival of the first `open` event for `id` at or after `t0`.
async fn wait_push(
    events: &mut mpsc::UnboundedReceiver<(Instant, Value)>,
    id: &str,
    t0: Instant,
) -> Duration {
    loop {
        let (at, e) = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("no event")
            .expect("event stream ended");
        if at >= t0 && e["id"] == id && e["state"] == "open" {
            return at - t0;
        }
    }
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
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
        let (quic, http) = (listeners.quic_addr().unwrap(), listeners.http_addr().unwrap());
        let hub = Hub::open(config).await.unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(wingman_hub::run(hub.clone(), listeners, shutdown.clone()));
        wingman_hub::commands::add_user(&hub, "admin", "correct-horse-battery", "admin", false)
            .await
            .unwrap();
        let key = wingman_hub::commands::create_api_key(&hub, "bench", "admin", 1)
            .await
            .unwrap();
        let ctx = Ctx {
            http: reqwest::Client::new(),
            base: format!("http://{http}"),
            key: key.clone(),
        };
        let mut events = sse(format!("{}/api/v1/events", ctx.base), key.clone());
        tokio::time::sleep(Duration::from_millis(300)).await;

        // Hub path: a batch handed to the ingest queue.
        let now = wingman_agent::now_ms();
        hub.store
            .create_agent(
                &AgentRow {
                    id: "bench-agent".into(),
                    hostname: "bench-hub".into(),
                    kind: "docker".into(),
                    agent_version: "bench".into(),
                    enrolled_at: now,
                    revoked_at: None,
                    last_seen: None,
                    online: true,
                    cert_not_after: now + 3_600_000,
                },
                "bench-fingerprint",
            )
            .await
            .unwrap();
        let (mut api, mut push) = (Vec::new(), Vec::new());
        for seq in 1..=rounds as u64 {
            let fact = Fact {
                observed_at_ms: wingman_agent::now_ms(),
                body: FactBody::RestartLoop(RestartLoop {
                    container_id: "c0ffee".into(),
                    name: "web".into(),
                    restarts: 5,
                    window_s: 60,
                    last_exit_code: Some(1),
                }),
            };
            let t0 = Instant::now();
            let item = IngestItem {
                agent_id: "bench-agent".into(),
                stream_id: 1,
                seq,
                facts: vec![FactRecord {
                    kind: fact.body.kind().to_string(),
                    observed_at: fact.observed_at_ms,
                    latest: false,
                    body: serde_json::to_string(&fact.body).unwrap(),
                }],
                templates: Vec::new(),
            };
            let rx = hub.ingest.try_submit(item).expect("ingest queue full");
            rx.await.unwrap().unwrap();
            hub.incidents
                .submit(wingman_hub::signal_map::FactMapper::default().map("bench-hub", &[fact]));
            let (id, a) = ctx.wait_api("bench-hub", t0).await;
            api.push(a);
            push.push(wait_push(&mut events, &id, t0).await);
            ctx.resolve(&id, &mut events).await;
        }
        stats("hub: fact batch -> incident visible in API", api);
        stats("hub: fact batch -> event pushed to dashboard", push);

        // End to end: a line in a file an agent follows, default log settings.
        let token = wingman_hub::commands::create_token(&hub, 600, &quic.to_string())
            .await
            .unwrap()
            .token;
        let state = dir.path().join("agent");
        enroll(&EnrollOptions {
            hub: quic.to_string(),
            token,
            ca_sha256: hub.pki.fingerprint().to_string(),
            state_dir: state.clone(),
            force: false,
            host_kind: HostKind::Plain,
            hostname: "bench-e2e".into(),
        })
        .await
        .unwrap();
        let log = dir.path().join("app.log");
        std::fs::write(&log, "").unwrap();
        let mut cfg = wingman_agent::AgentConfig {
            state_dir: state,
            node_name: Some("bench-e2e".into()),
            ..wingman_agent::AgentConfig::default()
        };
        cfg.logs.journal.enabled = false;
        cfg.logs.files = vec![wingman_agent::config::FileSourceConfig {
            path: log.clone(),
            examples: false,
            raw: false,
        }];
        let agent_stop = CancellationToken::new();
        let stats_handle = std::sync::Arc::new(std::sync::Mutex::new(Default::default()));
        let agent = tokio::spawn(wingman_agent::run(
            cfg,
            HostKind::Plain,
            stats_handle,
            agent_stop.clone(),
        ));
        while hub.registry.connected() == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let e2e_rounds = rounds.min(40);
        let (mut api, mut push) = (Vec::new(), Vec::new());
        for i in 0..e2e_rounds {
            let t0 = Instant::now();
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            writeln!(
                f,
                "kernel: Out of memory: Killed process {} (java) total-vm:8000000kB, anon-rss:4000000kB",
                4000 + i
            )
            .unwrap();
            drop(f);
            let (id, a) = ctx.wait_api("bench-e2e", t0).await;
            api.push(a);
            push.push(wait_push(&mut events, &id, t0).await);
            ctx.resolve(&id, &mut events).await;
        }
        stats("end to end: log line -> incident visible in API", api);
        stats("end to end: log line -> event pushed to dashboard", push);
        agent_stop.cancel();
        let _ = agent.await;
        shutdown.cancel();
        let _ = task.await;
    });
}
