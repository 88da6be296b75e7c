//! Delivery fault tests with exact counts: lines written on the node versus
//! template counts at the hub (a duplicate would inflate them, a loss shrink
//! them), and facts spooled on the agent versus facts committed plus facts
//! the agent's gap reports account for. Faults: the hub killed with SIGKILL
//! and restarted, the agent killed with SIGKILL and restarted, a 60 s network
//! cut, the spool cap reached during an outage, a corrupted spool segment,
//! and a store commit that fails (no ack without a commit).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use wingman_agent::AgentConfig;
use wingman_agent::config::FileSourceConfig;
use wingman_hub::{Hub, HubConfig};

use crate::common::{TestAgent, TestHub, eventually};

/// Appends `n` probe lines numbered from `start`; they mine to one template.
fn write_lines(path: &Path, start: u64, n: u64) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for i in start..start + n {
        writeln!(f, "delivery probe {i} reached stage {} of 9", i % 9).unwrap();
    }
    f.sync_all().unwrap();
}

/// Letters only (no digits, no hex-looking runs), unique per `i`.
fn word(mut i: u64) -> String {
    let mut s = String::from("w");
    loop {
        s.push(char::from(b'g' + (i % 20) as u8));
        i /= 20;
        if i == 0 {
            return s;
        }
    }
}

/// Appends `n` lines that each mine to their own template (big summaries).
fn write_distinct(path: &Path, start: u64, n: u64) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for i in start..start + n {
        writeln!(
            f,
            "{} unit reported a {} condition",
            word(i),
            word(i * 7 + 3)
        )
        .unwrap();
    }
    f.sync_all().unwrap();
}

async fn probe_lines(store: &wingman_hub::store::DynStore, agent: &str) -> i64 {
    store
        .log_templates(agent, 100_000)
        .await
        .unwrap()
        .iter()
        .filter(|t| t.template.contains("delivery probe"))
        .map(|t| t.count)
        .sum()
}

/// Facts committed for `agent`, not counting gap facts.
async fn committed_facts(store: &wingman_hub::store::DynStore, agent: &str) -> u64 {
    let all = store.fact_count(agent).await.unwrap();
    let gaps = store
        .recent_facts(agent, "gap", 100_000)
        .await
        .unwrap()
        .len() as i64;
    (all - gaps) as u64
}

fn file_source(path: &Path) -> impl Fn(&mut AgentConfig) + '_ {
    move |cfg: &mut AgentConfig| {
        cfg.logs.files = vec![FileSourceConfig {
            path: path.to_path_buf(),
            examples: false,
            raw: false,
        }];
        cfg.logs.window_ms = 200;
        cfg.link.health_interval_ms = 1_000;
        // Only the log lines move: one host sample, no container facts.
        cfg.facts.sample_interval_ms = 60_000;
        cfg.facts.max_interval_ms = 600_000;
        cfg.docker.enabled = false;
    }
}

fn free_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p = s.local_addr().unwrap().port();
    drop(t);
    p
}

/// A UDP relay between the agent and the hub that can drop every datagram
/// (a network cut) and let them through again.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(hub: SocketAddr) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let cut2 = cut.clone();
        let task = tokio::spawn(async move {
            // One upstream socket per agent address (a new one per reconnect).
            let mut uplinks: std::collections::HashMap<SocketAddr, Arc<UdpSocket>> =
                std::collections::HashMap::new();
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((n, from)) = front.recv_from(&mut buf).await else {
                    return;
                };
                if cut2.load(Ordering::SeqCst) {
                    continue;
                }
                let up = match uplinks.get(&from) {
                    Some(u) => u.clone(),
                    None => {
                        let u = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                        u.connect(hub).await.unwrap();
                        let (u2, front2, cut3) = (u.clone(), front.clone(), cut2.clone());
                        tokio::spawn(async move {
                            let mut b = vec![0u8; 65_536];
                            while let Ok(n) = u2.recv(&mut b).await {
                                if !cut3.load(Ordering::SeqCst) {
                                    let _ = front2.send_to(&b[..n], from).await;
                                }
                            }
                        });
                        uplinks.insert(from, u.clone());
                        u
                    }
                };
                let _ = up.send(&buf[..n]).await;
            }
        });
        Self { addr, cut, task }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until the agent's spool is drained and everything is acknowledged.
async fn drained(agent: &TestAgent) {
    eventually(Duration::from_secs(60), "spool drained", || async {
        let s = agent.stats();
        (s.spool_depth == 0 && s.batches_spooled > 0).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------
// The hub killed with SIGKILL mid-stream.
// ---------------------------------------------------------------------------

struct HubProcess {
    child: Child,
}

impl HubProcess {
    fn spawn(data_dir: &Path, quic: SocketAddr, http: SocketAddr) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_wingman-hub"))
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "serve",
                "--quic",
                &quic.to_string(),
                "--http",
                &http.to_string(),
            ])
            .env("WINGMAN_HUB_CONFIG", data_dir.join("none.toml"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { child }
    }

    fn sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_killed_with_sigkill_mid_stream_loses_and_duplicates_nothing() {
    wingman_agent::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let quic: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // Create the CA and a token in-process, then run the real binary.
    let mut config = HubConfig {
        data_dir: data.clone(),
        ..HubConfig::default()
    };
    config.quic.listen = quic;
    let hub = Hub::open(config.clone()).await.unwrap();
    let token = wingman_hub::commands::create_token(&hub, 600, &quic.to_string())
        .await
        .unwrap()
        .token;
    let fp = hub.pki.fingerprint().to_string();
    let store = hub.store.clone();
    drop(hub);
    std::fs::write(data.join("none.toml"), "").unwrap();
    let mut proc = HubProcess::spawn(&data, quic, http);

    let agent_dir = dir.path().join("agent");
    let log = dir.path().join("app.log");
    // An existing file is followed from its end, a new one from its start.
    std::fs::write(&log, "").unwrap();
    let id = eventually(Duration::from_secs(10), "enrolled", || {
        let opts = wingman_agent::enroll::EnrollOptions {
            hub: quic.to_string(),
            token: token.clone(),
            ca_sha256: fp.clone(),
            state_dir: agent_dir.clone(),
            force: false,
            host_kind: wingman_protocol::HostKind::Plain,
            hostname: "kill-hub".into(),
        };
        async move { wingman_agent::enroll::enroll(&opts).await.ok() }
    })
    .await;
    let agent_id = id.enrollment.agent_id.clone();
    let mut agent = TestAgent::start_with(&agent_dir, file_source(&log));
    eventually(Duration::from_secs(10), "connected", || async {
        (agent.stats().sessions >= 1).then_some(())
    })
    .await;

    let mut written = 0u64;
    for round in 0..30 {
        write_lines(&log, written, 40);
        written += 40;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if round == 10 {
            // Mid-stream: batches are in flight and in the spool.
            proc.sigkill();
        }
        if round == 20 {
            proc = HubProcess::spawn(&data, quic, http);
        }
    }
    let expected = written as i64;
    let ok = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let got = probe_lines(&store, &agent_id).await;
            assert!(
                got <= expected,
                "duplicates: {got} lines counted, {expected} written"
            );
            if got == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if ok.is_err() {
        let rows = store
            .recent_facts(&agent_id, "log_summary", 10_000)
            .await
            .unwrap();
        let mut seqs = Vec::new();
        for (_, body) in rows {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let n: u64 = v["templates"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["count"].as_u64().unwrap())
                .sum();
            seqs.push((v["window_start_ms"].clone(), n));
        }
        panic!(
            "missing lines: {} of {expected}; agent {:?}; gaps {:?}; summaries {seqs:?}",
            probe_lines(&store, &agent_id).await,
            agent.stats(),
            store.gap_accounting(&agent_id).await.unwrap()
        );
    }
    drained(&agent).await;
    let stats = agent.stats();
    assert!(stats.sessions >= 2, "the agent reconnected: {stats:?}");
    assert_eq!(
        committed_facts(&store, &agent_id).await,
        stats.facts_spooled
    );
    agent.stop().await;
    assert_eq!(probe_lines(&store, &agent_id).await, expected);
}

// ---------------------------------------------------------------------------
// The agent killed with SIGKILL mid-stream: it runs as a child process (this
// test binary re-executed into `agent_child`).
// ---------------------------------------------------------------------------

/// Not a test on its own: runs an agent from `WINGMAN_TEST_AGENT_CONFIG`
/// until killed. Returns at once when the variable is not set.
#[tokio::test]
#[ignore = "child process of agent_killed_with_sigkill_mid_stream_..."]
async fn agent_child() {
    let Some(path) = std::env::var_os("WINGMAN_TEST_AGENT_CONFIG") else {
        return;
    };
    wingman_agent::tls::install_default_provider();
    let cfg = AgentConfig::load(Some(PathBuf::from(path))).unwrap();
    let stats = Arc::new(std::sync::Mutex::new(wingman_agent::LinkStats::default()));
    let shutdown = tokio_util::sync::CancellationToken::new();
    wingman_agent::run(cfg, wingman_protocol::HostKind::Plain, stats, shutdown)
        .await
        .unwrap();
}

fn spawn_agent_child(config: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "delivery::agent_child",
            "--ignored",
            "--nocapture",
        ])
        .env("WINGMAN_TEST_AGENT_CONFIG", config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_with_sigkill_mid_stream_loses_and_duplicates_nothing() {
    let th = TestHub::start(|_| {}).await;
    let agent_dir = th.dir.path().join("agent");
    let id = th.enroll(&agent_dir).await;
    let agent_id = id.enrollment.agent_id.clone();
    let log = th.dir.path().join("app.log");
    std::fs::write(&log, "").unwrap();
    let cfg = th.dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = {:?}\n[link]\nreconnect_min_ms = 100\nreconnect_max_ms = 400\nhealth_interval_ms = 1000\n\
             [logs]\nwindow_ms = 200\n[logs.journal]\nenabled = false\n[[logs.files]]\npath = {:?}\n\
             [docker]\nenabled = false\n",
            agent_dir.display().to_string(),
            log.display().to_string()
        ),
    )
    .unwrap();
    let mut child = spawn_agent_child(&cfg);
    eventually(Duration::from_secs(20), "agent child connected", || async {
        (th.hub.registry.connected() == 1).then_some(())
    })
    .await;
    let mut written = 0u64;
    let mut kills = 0;
    for round in 0..40 {
        write_lines(&log, written, 25);
        written += 25;
        tokio::time::sleep(Duration::from_millis(60)).await;
        if round % 10 == 7 {
            // SIGKILL at an arbitrary point: between reads, appends, syncs and acks.
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
            child = spawn_agent_child(&cfg);
        }
    }
    let expected = written as i64;
    let store = th.hub.store.clone();
    let result = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let got = probe_lines(&store, &agent_id).await;
            if got >= expected {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // Give a duplicate the chance to show up before judging.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let _ = child.kill();
    let _ = child.wait();
    let got = probe_lines(&store, &agent_id).await;
    assert!(
        result.is_ok(),
        "lines missing after {kills} kills: {got} of {expected}"
    );
    assert_eq!(got, expected, "after {kills} SIGKILLs");
    assert_eq!(
        th.hub
            .store
            .gap_accounting(&agent_id)
            .await
            .unwrap()
            .lost_facts,
        0
    );
}

// ---------------------------------------------------------------------------
// Network cut for 60 s.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_cut_for_sixty_seconds_then_everything_arrives_once() {
    let th = TestHub::start(|_| {}).await;
    let relay = Relay::start(th.quic).await;
    let agent_dir = th.dir.path().join("agent");
    let id = th.enroll(&agent_dir).await;
    let agent_id = id.enrollment.agent_id.clone();
    let log = th.dir.path().join("app.log");
    std::fs::write(&log, "").unwrap();
    let relay_addr = relay.addr.to_string();
    let agent = TestAgent::start_with(&agent_dir, |cfg| {
        file_source(&log)(cfg);
        cfg.hub = Some(relay_addr.clone());
    });
    eventually(
        Duration::from_secs(10),
        "connected through the relay",
        || async { (agent.stats().sessions >= 1).then_some(()) },
    )
    .await;
    write_lines(&log, 0, 100);
    let mut written = 100u64;
    tokio::time::sleep(Duration::from_millis(400)).await;
    relay.set_cut(true);
    let cut_at = std::time::Instant::now();
    let mut max_depth = 0;
    while cut_at.elapsed() < Duration::from_secs(60) {
        write_lines(&log, written, 50);
        written += 50;
        tokio::time::sleep(Duration::from_millis(500)).await;
        max_depth = max_depth.max(agent.stats().spool_depth);
    }
    let sessions_before = agent.stats().sessions;
    relay.set_cut(false);
    let expected = written as i64;
    let store = th.hub.store.clone();
    eventually(Duration::from_secs(60), "every line after the cut", || {
        let (s, a) = (&store, &agent_id);
        async move {
            let got = probe_lines(s, a).await;
            assert!(got <= expected, "duplicates: {got} of {expected}");
            (got == expected).then_some(())
        }
    })
    .await;
    drained(&agent).await;
    let s = agent.stats();
    assert!(
        max_depth > 20,
        "the spool held the outage: depth {max_depth}"
    );
    assert!(s.sessions > sessions_before, "reconnected after the cut");
    assert_eq!(committed_facts(&store, &agent_id).await, s.facts_spooled);
    assert_eq!(probe_lines(&store, &agent_id).await, expected);
}

// ---------------------------------------------------------------------------
// Spool cap reached during an outage: the gap is counted exactly.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_cap_during_an_outage_reports_the_exact_gap() {
    let th = TestHub::start(|_| {}).await;
    let relay = Relay::start(th.quic).await;
    let agent_dir = th.dir.path().join("agent");
    let id = th.enroll(&agent_dir).await;
    let agent_id = id.enrollment.agent_id.clone();
    let log = th.dir.path().join("app.log");
    std::fs::write(&log, "").unwrap();
    let relay_addr = relay.addr.to_string();
    let mut agent = TestAgent::start_with(&agent_dir, |cfg| {
        file_source(&log)(cfg);
        cfg.hub = Some(relay_addr.clone());
        cfg.spool.max_bytes = 64 * 1024;
        cfg.spool.segment_bytes = 8 * 1024;
    });
    eventually(Duration::from_secs(10), "connected", || async {
        (agent.stats().sessions >= 1).then_some(())
    })
    .await;
    relay.set_cut(true);
    let mut written = 0;
    while agent.stats().dropped_batches < 3 {
        write_distinct(&log, written, 150);
        written += 150;
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(written < 200_000, "the spool never overflowed");
    }
    relay.set_cut(false);
    let store = th.hub.store.clone();
    drained(&agent).await;
    // The gap facts are committed and account for exactly what was dropped.
    let s = agent.stats();
    let acc = eventually(Duration::from_secs(30), "gap reports", || {
        let (st, a, want) = (&store, &agent_id, s.dropped_facts);
        async move {
            let acc = st.gap_accounting(a).await.unwrap();
            (acc.reported_facts >= want).then_some(acc)
        }
    })
    .await;
    assert!(s.gap_facts >= 1);
    assert_eq!(acc.reported_facts, s.dropped_facts);
    assert_eq!(
        committed_facts(&store, &agent_id).await + acc.lost_facts,
        s.facts_spooled,
        "committed + lost == generated ({acc:?}, {s:?})"
    );
    // The API and /metrics show the loss.
    let key = th.api_key().await;
    let client = crate::common::http_client();
    let node: serde_json::Value = client
        .get(th.url(&format!("/api/v1/nodes/{agent_id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(node["delivery"]["gaps"]["lost_facts"], acc.lost_facts);
    let metrics = client
        .get(th.url("/metrics"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("wingman_agent_lost_facts_total{{agent_id=\"{agent_id}\",");
    let line = metrics
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("{prefix} not in:\n{metrics}"));
    assert!(line.ends_with(&format!(" {}", acc.lost_facts)), "{line}");
    assert!(metrics.contains("wingman_agent_spool_depth_batches{"));
    agent.stop().await;
}

// ---------------------------------------------------------------------------
// A corrupted spool segment: detected by checksum, skipped and counted.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_spool_segment_is_skipped_counted_and_the_agent_goes_on() {
    let th = TestHub::start(|_| {}).await;
    let relay = Relay::start(th.quic).await;
    let agent_dir = th.dir.path().join("agent");
    let id = th.enroll(&agent_dir).await;
    let agent_id = id.enrollment.agent_id.clone();
    let stream_id = id.enrollment.stream_id;
    let log = th.dir.path().join("app.log");
    std::fs::write(&log, "").unwrap();
    let relay_addr = relay.addr.to_string();
    let tweak = |cfg: &mut AgentConfig| {
        file_source(&log)(cfg);
        cfg.hub = Some(relay_addr.clone());
        cfg.spool.segment_bytes = 8 * 1024;
    };
    relay.set_cut(true);
    let mut agent = TestAgent::start_with(&agent_dir, tweak);
    let mut written = 0;
    let spool = agent_dir.join("spool").join(format!("{stream_id:016x}"));
    let segments = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&spool)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.retain(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seg-"))
        });
        v.sort();
        v
    };
    while segments().len() < 4 {
        write_distinct(&log, written, 100);
        written += 100;
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(written < 100_000, "no segments appeared");
    }
    agent.stop().await;
    let first_run = agent.stats();
    // Flip one byte inside a record of the second segment.
    let victim = segments()[1].clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    let at = 56 + 28 + 10;
    bytes[at] ^= 0x5a;
    std::fs::write(&victim, bytes).unwrap();

    relay.set_cut(false);
    let mut agent = TestAgent::start_with(&agent_dir, tweak);
    drained(&agent).await;
    write_lines(&log, 0, 30);
    let store = th.hub.store.clone();
    eventually(
        Duration::from_secs(30),
        "new lines after the corruption",
        || {
            let (s, a) = (&store, &agent_id);
            async move { (probe_lines(s, a).await == 30).then_some(()) }
        },
    )
    .await;
    drained(&agent).await;
    let second_run = agent.stats();
    let acc = store.gap_accounting(&agent_id).await.unwrap();
    assert!(acc.reports >= 1, "the corruption was reported: {acc:?}");
    assert!(acc.lost_facts >= 1);
    assert_eq!(
        committed_facts(&store, &agent_id).await + acc.lost_facts,
        first_run.facts_spooled + second_run.facts_spooled,
        "committed + lost == generated ({acc:?})"
    );
    assert!(
        std::fs::read_dir(spool.join("quarantine")).unwrap().count() >= 1,
        "the bad bytes were kept for inspection"
    );
    agent.stop().await;
}

// ---------------------------------------------------------------------------
// Commit/ack ordering: a failing commit is never acknowledged.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_is_not_acknowledged_and_is_replayed_after_recovery() {
    use sqlx::Connection;
    let th = TestHub::start(|_| {}).await;
    let agent_dir = th.dir.path().join("agent");
    let id = th.enroll(&agent_dir).await;
    let agent_id = id.enrollment.agent_id.clone();
    let log = th.dir.path().join("app.log");
    std::fs::write(&log, "").unwrap();
    let db = format!(
        "sqlite://{}",
        th.dir.path().join("hub/wingman.db").display()
    );
    let mut conn = sqlx::SqliteConnection::connect(&db).await.unwrap();
    // Any batch from seq 4 on fails at the very end of its transaction.
    sqlx::query(
        "CREATE TRIGGER inject_commit_failure BEFORE INSERT ON streams WHEN NEW.committed_seq >= 4 \
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let agent = TestAgent::start_with(&agent_dir, file_source(&log));
    eventually(Duration::from_secs(10), "connected", || async {
        (agent.stats().sessions >= 1).then_some(())
    })
    .await;
    for i in 0..10 {
        write_lines(&log, i * 20, 20);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eventually(Duration::from_secs(20), "failed commits", || async {
        (th.hub.metrics.totals().4 >= 2).then_some(())
    })
    .await;
    let store = th.hub.store.clone();
    let committed = store
        .committed_seq(&agent_id, id.enrollment.stream_id)
        .await
        .unwrap();
    assert_eq!(committed, 3, "nothing past the failure is committed");
    assert!(agent.stats().acked_seq <= 3, "no ack without a commit");
    // The failed transactions left nothing behind.
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM facts WHERE seq >= 4")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, 0, "a failed batch was partly written");
    sqlx::query("DROP TRIGGER inject_commit_failure")
        .execute(&mut conn)
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "every line after recovery", || {
        let (s, a) = (&store, &agent_id);
        async move { (probe_lines(s, a).await == 200).then_some(()) }
    })
    .await;
    drained(&agent).await;
    assert_eq!(
        committed_facts(&store, &agent_id).await,
        agent.stats().facts_spooled
    );
}

// ---------------------------------------------------------------------------
// The spool directory deleted while the agent runs: reported, recovered.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_directory_deleted_while_running_is_recreated_and_the_loss_counted() {
    let th = TestHub::start(|_| {}).await;
    let relay = Relay::start(th.quic).await;
    let agent_dir = th.dir.path().join("agent");
    let id = th.enroll(&agent_dir).await;
    let agent_id = id.enrollment.agent_id.clone();
    let log = th.dir.path().join("app.log");
    std::fs::write(&log, "").unwrap();
    let relay_addr = relay.addr.to_string();
    let mut agent = TestAgent::start_with(&agent_dir, |cfg| {
        file_source(&log)(cfg);
        cfg.hub = Some(relay_addr.clone());
    });
    eventually(Duration::from_secs(10), "connected", || async {
        (agent.stats().sessions >= 1).then_some(())
    })
    .await;
    // Batches pile up in the spool while the hub is unreachable...
    relay.set_cut(true);
    let mut written = 0;
    while agent.stats().spool_depth < 5 {
        write_lines(&log, written, 20);
        written += 20;
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(written < 20_000, "nothing spooled");
    }
    // ...and the whole spool directory disappears.
    std::fs::remove_dir_all(agent_dir.join("spool")).unwrap();
    write_lines(&log, written, 20);
    written += 20;
    tokio::time::sleep(Duration::from_millis(600)).await;
    relay.set_cut(false);
    let store = th.hub.store.clone();
    drained(&agent).await;
    let s = agent.stats();
    let acc = eventually(Duration::from_secs(30), "the loss reported", || {
        let (st, a) = (&store, &agent_id);
        async move {
            let acc = st.gap_accounting(a).await.unwrap();
            (acc.reports >= 1).then_some(acc)
        }
    })
    .await;
    assert!(
        agent_dir.join("spool").is_dir(),
        "the spool directory was recreated"
    );
    assert_eq!(
        committed_facts(&store, &agent_id).await + acc.lost_facts,
        s.facts_spooled,
        "committed + lost == generated ({acc:?}, {s:?})"
    );
    // Lines written after the deletion arrive.
    write_lines(&log, written, 20);
    let before = probe_lines(&store, &agent_id).await;
    eventually(Duration::from_secs(30), "lines after recovery", || {
        let (st, a) = (&store, &agent_id);
        async move { (probe_lines(st, a).await >= before + 20).then_some(()) }
    })
    .await;
    agent.stop().await;
}
