//! The agent's uplink: one mutual-TLS QUIC session at a time to the hub, with
//! reconnects (jittered exponential backoff), heartbeats, fact batches awaiting
//! acknowledgement, busy handling and certificate renewal.
//!
//! [`run`] is the agent's one event loop: a `select!` over shutdown, the
//! heartbeat and facts timers, the renewal deadline and frames from the hub.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use wingman_protocol::{
    ActionOutcome, AgentHealth, AgentMessage, CommandBody, CommandResult, Fact, FactBatch,
    FactBody, FrameDecoder, HUB_SERVER_NAME, Heartbeat, Hello, HostFacts, HostKind, HubMessage,
    PROTOCOL_VERSION, RenewRequest, RenewResponse,
};

use crate::config::AgentConfig;
use crate::facts::{HostCollector, changed_materially};
use crate::logs::cursor::CursorStore;
use crate::logs::sources::LogBatch;
use crate::outbox::{CHECKPOINT_SEQ_KEY, Outbox};
use crate::state::{Identity, StateError};

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Enrollment state is missing or unreadable.
    #[error(transparent)]
    State(#[from] StateError),
    /// Host facts cannot be collected on this system.
    #[error("cannot read host facts: {0}")]
    Facts(String),
    /// The QUIC endpoint could not be created.
    #[error("cannot open a UDP socket for the uplink: {0}")]
    Socket(std::io::Error),
    /// The spool cannot be opened.
    #[error("cannot open the spool in {0}: {1}")]
    Spool(PathBuf, String),
}

/// Why a session ended.
#[derive(Debug)]
enum Outcome {
    Shutdown,
    Renewed,
    Lost(String),
    Refused(String),
}

/// Counters the agent exposes about its link and spool.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LinkStats {
    /// Sessions established (welcomed by the hub).
    pub sessions: u64,
    /// Batches sent (including resends).
    pub batches_sent: u64,
    /// Highest sequence number the hub acknowledged.
    pub acked_seq: u64,
    /// Batches appended to the spool (including gap batches).
    pub batches_spooled: u64,
    /// Facts appended to the spool, not counting gap facts.
    pub facts_spooled: u64,
    /// Batches sent again after a reconnect or a busy reply.
    pub replayed_batches: u64,
    /// Batches waiting in the spool for an ack.
    pub spool_depth: u64,
    /// Batches the spool dropped (size cap).
    pub dropped_batches: u64,
    /// Facts the spool dropped (size cap).
    pub dropped_facts: u64,
    /// Batches lost to corrupt or vanished spool data.
    pub corrupt_batches: u64,
    /// Gap facts appended (each reports one loss to the hub).
    pub gap_facts: u64,
    /// Spool write or read failures.
    pub spool_errors: u64,
    /// The last spool error, while the spool is failing.
    pub spool_error: Option<String>,
    /// Busy replies received.
    pub busy_replies: u64,
    /// Certificates renewed.
    pub renewals: u64,
}

/// Jittered exponential backoff.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let exp = self
            .min
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let jitter: f64 = 0.5 + rand::random::<f64>() * 0.5;
        exp.mul_f64(jitter)
    }
    fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The state the event loop carries across sessions.
struct Agent {
    config: AgentConfig,
    state_dir: PathBuf,
    identity: Identity,
    kind: HostKind,
    collector: Arc<Mutex<HostCollector>>,
    outbox: Outbox,
    /// A batch the spool could not take (disk full, read-only, deleted); no
    /// more batches are taken from the collectors until it is stored, so the
    /// sources keep their positions and nothing is lost.
    stalled: Option<LogBatch>,
    last_sent: Option<(Instant, HostFacts)>,
    stats: Arc<Mutex<LinkStats>>,
    cursors: CursorStore,
    logs: Option<mpsc::Receiver<LogBatch>>,
    action_tx: mpsc::Sender<ActionDone>,
    action_rx: mpsc::Receiver<ActionDone>,
    /// Signed-command and audit-head checks.
    guard: crate::guard::Guard,
}

/// How often the spool's group commit and retries run.
const MAINTAIN_EVERY: Duration = Duration::from_millis(100);

/// Runs the agent until `shutdown` fires.
pub async fn run(
    config: AgentConfig,
    kind: HostKind,
    stats: Arc<Mutex<LinkStats>>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let state_dir = config.state_dir.clone();
    let identity = Identity::load(&state_dir)?;
    let collector = HostCollector::new(kind).map_err(|e| AgentError::Facts(e.to_string()))?;
    let stream_id = identity.enrollment.stream_id;
    let spool_cfg = config.spool.spool_config(&state_dir, stream_id);
    let spool_dir = spool_cfg.dir.clone();
    let (mut outbox, report) = Outbox::open(
        spool_cfg,
        stream_id,
        config.link.max_inflight_batches,
        crate::now_ms(),
    )
    .map_err(|e| AgentError::Spool(spool_dir.clone(), e.to_string()))?;
    if report.torn_records > 0 || !report.quarantined.is_empty() || !report.gaps.is_empty() {
        warn!(
            dir = %spool_dir.display(),
            torn = report.torn_records,
            quarantined = report.quarantined.len(),
            gaps = report.gaps.len(),
            "the spool was repaired at start-up; losses are reported to the hub"
        );
    }
    info!(
        dir = %spool_dir.display(),
        recovered = report.recovered_records,
        cursor = ?report.ack_cursor,
        "spool open"
    );
    let (mut cursors, status) = CursorStore::open(state_dir.join("cursors"));
    if let Some(w) = status.warning() {
        warn!(warning = %w, "log source positions could not be loaded; sources start from the end");
    }
    // Positions of batches already in the spool win over the cursor store:
    // those lines must not be read again.
    let saved_seq = cursors
        .get(CHECKPOINT_SEQ_KEY)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    match outbox.recovered_positions(saved_seq) {
        Ok((positions, upto)) if !positions.is_empty() => {
            for (k, v) in positions {
                cursors.set(k, v);
            }
            cursors.set(CHECKPOINT_SEQ_KEY, upto.to_string());
            if let Err(error) = cursors.save_if_dirty() {
                warn!(%error, "cannot save log source positions");
            }
        }
        Ok(_) => {}
        Err(error) => warn!(%error, "cannot read source positions from the spool"),
    }
    outbox.drain_gaps(crate::now_ms());
    let saved: BTreeMap<String, String> = cursors
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // Every collector feeds one bounded channel (overflow policy: block; the
    // sources keep their positions, so nothing is lost while the spool is
    // unavailable).
    let (batch_tx, batch_rx) = mpsc::channel::<LogBatch>(64);
    let lines = config.logs.enabled.then(|| {
        crate::logs::sources::spawn(
            &config.logs,
            &state_dir,
            &saved,
            batch_tx.clone(),
            shutdown.clone(),
        )
    });
    let docker_socket = config
        .docker
        .socket
        .clone()
        .or_else(|| crate::docker::detect_socket().ok());
    if config.docker.enabled && docker_socket.is_some() {
        let mut section = config.docker.clone();
        section.socket = docker_socket;
        crate::docker::collector::spawn(
            &section,
            &saved,
            batch_tx.clone(),
            lines,
            shutdown.clone(),
        );
    }
    if config.proxmox.enabled && kind == HostKind::Proxmox {
        let node = config
            .proxmox
            .node
            .clone()
            .or_else(|| sysinfo::System::host_name().ok())
            .unwrap_or_else(|| "localhost".into());
        crate::pve::agent_task::spawn(
            &config.proxmox,
            node,
            &state_dir,
            batch_tx.clone(),
            shutdown.clone(),
        );
    }
    drop(batch_tx);
    let (action_tx, action_rx) = mpsc::channel::<ActionDone>(16);
    let guard = crate::guard::Guard::new(
        &identity.enrollment.agent_id,
        identity.enrollment.command_key.as_deref(),
        crate::now_ms() / 1000,
        Some(&state_dir),
    );
    if !guard.has_key() {
        warn!(
            "no hub command key is pinned (enrolled by an older hub): hub actions will be refused; re-enroll to accept them"
        );
    }
    let mut agent = Agent {
        guard,
        action_tx,
        action_rx,
        cursors,
        logs: Some(batch_rx),
        outbox,
        stalled: None,
        config,
        state_dir,
        identity,
        kind,
        collector: Arc::new(Mutex::new(collector)),
        last_sent: None,
        stats,
    };
    agent.publish_stats();
    let mut backoff = Backoff {
        min: Duration::from_millis(agent.config.link.reconnect_min_ms),
        max: Duration::from_millis(agent.config.link.reconnect_max_ms),
        attempt: 0,
    };
    info!(agent_id = %agent.identity.enrollment.agent_id, kind = kind.as_str(), "agent starting");
    let mut endpoint: Option<(std::net::SocketAddr, quinn::Endpoint)> = None;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        // Reload state each attempt so a renewed certificate is used at once.
        match Identity::load(&agent.state_dir) {
            Ok(id) => {
                agent.guard.set_key(id.enrollment.command_key.as_deref());
                agent.identity = id;
            }
            Err(error) => warn!(%error, "cannot reload agent identity; using the one in memory"),
        }
        let hub = agent
            .config
            .hub
            .clone()
            .unwrap_or_else(|| agent.identity.enrollment.hub.clone());
        let started = Instant::now();
        let identity = agent.identity.clone();
        // Keep spooling while the handshake runs.
        let connected = agent
            .offline(connect(&hub, &identity, &mut endpoint), &shutdown)
            .await;
        let outcome = match connected {
            None => Outcome::Shutdown,
            Some(Ok(conn)) => agent.session(conn, &shutdown).await,
            Some(Err(reason)) => Outcome::Lost(reason),
        };
        match outcome {
            Outcome::Shutdown => break,
            Outcome::Renewed => {
                backoff.reset();
                continue;
            }
            Outcome::Lost(reason) => {
                if started.elapsed() > Duration::from_secs(10) {
                    backoff.reset();
                }
                warn!(%hub, %reason, "link to hub lost; reconnecting");
            }
            Outcome::Refused(reason) => {
                warn!(%hub, %reason, "hub refused this agent");
            }
        }
        let delay = backoff.next();
        debug!(?delay, "waiting before reconnect");
        if agent
            .offline(tokio::time::sleep(delay), &shutdown)
            .await
            .is_none()
        {
            break;
        }
    }
    agent.shutdown_spool();
    if let Some((_, ep)) = endpoint {
        ep.close(0u32.into(), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(2), ep.wait_idle()).await;
    }
    info!("agent stopped");
    Ok(())
}

async fn connect(
    hub: &str,
    identity: &Identity,
    endpoint: &mut Option<(std::net::SocketAddr, quinn::Endpoint)>,
) -> Result<quinn::Connection, String> {
    let addr = crate::enroll::resolve(hub)
        .await
        .map_err(|e| e.to_string())?;
    let need_new = endpoint
        .as_ref()
        .is_none_or(|(a, _)| a.is_ipv6() != addr.is_ipv6());
    if need_new {
        let ep = crate::enroll::client_endpoint(addr).map_err(|e| e.to_string())?;
        *endpoint = Some((addr, ep));
    }
    let Some((_, ep)) = endpoint.as_ref() else {
        return Err("no endpoint".into());
    };
    let cfg = crate::tls::agent_client_config(
        &identity.ca_der,
        vec![CertificateDer::from(identity.cert_der.clone())],
        PrivateKeyDer::Pkcs8(identity.key_der.clone().into()),
    )
    .map_err(|e| e.to_string())?;
    let connecting = ep
        .connect_with(cfg, addr, HUB_SERVER_NAME)
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(10), connecting).await {
        Err(_) => Err("handshake timed out".into()),
        Ok(Err(e)) => Err(format!("handshake failed: {e}")),
        Ok(Ok(c)) => Ok(c),
    }
}

/// The next summary batch, or never when the log pipeline is off.
async fn recv_logs(rx: &mut Option<mpsc::Receiver<LogBatch>>) -> Option<LogBatch> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn send(stream: &mut quinn::SendStream, msg: &AgentMessage) -> Result<(), String> {
    let frame = wingman_protocol::encode(msg).map_err(|e| e.to_string())?;
    stream.write_all(&frame).await.map_err(|e| e.to_string())
}

/// Reads the next frame from the hub; `None` when the stream ended.
async fn read_frame(
    recv: &mut quinn::RecvStream,
    decoder: &mut FrameDecoder,
) -> Result<Option<HubMessage>, String> {
    loop {
        if let Some(msg) = decoder
            .next_frame::<HubMessage>()
            .map_err(|e| e.to_string())?
        {
            return Ok(Some(msg));
        }
        let mut buf = vec![0u8; decoder.wanted().clamp(4, 64 * 1024)];
        match recv.read(&mut buf).await.map_err(|e| e.to_string())? {
            None => return Ok(None),
            Some(n) => decoder.push(buf.get(..n).unwrap_or_default()),
        }
    }
}

impl Agent {
    /// Runs `fut` while no session is up, spooling what the collectors
    /// produce meanwhile. `None` when shutdown fired first.
    async fn offline<T>(
        &mut self,
        fut: impl std::future::Future<Output = T>,
        shutdown: &CancellationToken,
    ) -> Option<T> {
        tokio::pin!(fut);
        let mut facts_tick =
            tokio::time::interval(Duration::from_millis(self.config.facts.sample_interval_ms));
        let mut maintain = tokio::time::interval(MAINTAIN_EVERY);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return None,
                r = &mut fut => return Some(r),
                _ = facts_tick.tick() => self.sample_facts().await,
                _ = maintain.tick() => self.maintain(),
                batch = recv_logs(&mut self.logs), if self.stalled.is_none() => self.take_batch(batch),
            }
        }
    }

    async fn session(&mut self, conn: quinn::Connection, shutdown: &CancellationToken) -> Outcome {
        match self.session_inner(&conn, shutdown).await {
            Ok(outcome) | Err(outcome) => {
                let reason: &[u8] = match &outcome {
                    Outcome::Shutdown => b"shutdown",
                    Outcome::Renewed => b"renewed",
                    _ => b"closing",
                };
                conn.close(0u32.into(), reason);
                outcome
            }
        }
    }

    async fn session_inner(
        &mut self,
        conn: &quinn::Connection,
        shutdown: &CancellationToken,
    ) -> Result<Outcome, Outcome> {
        let lost = |e: String| Outcome::Lost(e);
        let (mut tx, mut rx) = conn.open_bi().await.map_err(|e| lost(e.to_string()))?;
        let hello = AgentMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            host_kind: self.kind,
            hostname: self.config.node_name(self.kind),
            stream_id: self.identity.enrollment.stream_id,
        });
        send(&mut tx, &hello).await.map_err(lost)?;
        let mut decoder = FrameDecoder::new();
        let welcome =
            tokio::time::timeout(Duration::from_secs(10), read_frame(&mut rx, &mut decoder))
                .await
                .map_err(|_| lost("no welcome from hub".into()))?
                .map_err(lost)?;
        let welcome = match welcome {
            Some(HubMessage::Welcome(w)) => w,
            Some(HubMessage::Refused(r)) => return Err(Outcome::Refused(r.reason)),
            Some(other) => return Err(lost(format!("unexpected first message {other:?}"))),
            None => return Err(lost("hub closed the stream".into())),
        };
        info!(agent_id = %welcome.agent_id, committed_seq = welcome.committed_seq, "connected to hub");
        if let Ok(mut s) = self.stats.lock() {
            s.sessions += 1;
        }
        // Everything up to the hub's committed seq is safe; the rest is replayed.
        self.persist_positions();
        if let Err(error) = self.outbox.on_welcome(welcome.committed_seq) {
            warn!(%error, "cannot record the hub's committed sequence number in the spool");
        }
        // The audit head kept from earlier sessions: the hub checks that its
        // chain still holds it.
        if let Some(head) = self.guard.kept_head() {
            send(&mut tx, &AgentMessage::AuditHeadKept(head))
                .await
                .map_err(lost)?;
        }
        let hb_every = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(100)));
        let mut heartbeat = tokio::time::interval(hb_every);
        let mut facts_tick =
            tokio::time::interval(Duration::from_millis(self.config.facts.sample_interval_ms));
        let mut health_tick =
            tokio::time::interval(Duration::from_millis(self.config.link.health_interval_ms));
        let mut maintain = tokio::time::interval(MAINTAIN_EVERY);
        let mut paused_until: Option<Instant> = None;
        let mut renew_at = self.renewal_deadline();
        let mut pending_key: Option<Vec<u8>> = None;
        self.last_sent = None;
        self.pump(&mut tx, paused_until).await.map_err(lost)?;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = tx.finish();
                    return Ok(Outcome::Shutdown);
                }
                _ = heartbeat.tick() => {
                    let hb = AgentMessage::Heartbeat(Heartbeat { sent_at_ms: crate::now_ms() });
                    send(&mut tx, &hb).await.map_err(lost)?;
                }
                _ = facts_tick.tick() => {
                    self.sample_facts().await;
                }
                _ = health_tick.tick() => {
                    // Health is a current-state fact: sent unsequenced (seq 0), not spooled,
                    // so it still reaches the hub when the spool is failing.
                    let batch = FactBatch {
                        stream_id: self.outbox.stream_id(),
                        seq: 0,
                        facts: vec![
                            Fact { observed_at_ms: crate::now_ms(), body: FactBody::AgentHealth(self.health()) },
                            Fact { observed_at_ms: crate::now_ms(), body: FactBody::AgentPolicy(self.local_policy()) },
                        ],
                    };
                    send(&mut tx, &AgentMessage::Facts(batch)).await.map_err(lost)?;
                }
                _ = maintain.tick() => {
                    self.maintain();
                    if paused_until.is_some_and(|t| t <= Instant::now()) {
                        paused_until = None;
                    }
                }
                done = self.action_rx.recv() => match done {
                    Some(ActionDone::Docker(outcome)) => {
                        info!(id = outcome.id, ok = outcome.result.ok, refused = outcome.result.refused, "action finished");
                        send(&mut tx, &AgentMessage::ActionOutcome(outcome)).await.map_err(lost)?;
                    }
                    Some(ActionDone::Pve(id, result)) => {
                        let reply = pve_command_result(id, &result);
                        let refused = result.outcome == wingman_protocol::pve::ActionOutcome::Refused;
                        let duration_ms = result.duration_ms;
                        info!(id, ok = reply.ok, outcome = ?result.outcome, "Proxmox action finished");
                        // The full result (UPID, task chain, HA state) is a
                        // fact: spooled like any other, so it is never lost.
                        self.take_batch(Some(LogBatch {
                            facts: vec![Fact {
                                observed_at_ms: crate::now_ms(),
                                body: FactBody::Pve(wingman_protocol::pve::PveFact::Action(*result)),
                            }],
                            checkpoint: Vec::new(),
                        }));
                        let outcome = ActionOutcome {
                            id,
                            result: wingman_protocol::docker::ActionResult {
                                ok: reply.ok,
                                refused,
                                detail: reply.detail,
                                duration_ms,
                            },
                        };
                        send(&mut tx, &AgentMessage::ActionOutcome(outcome)).await.map_err(lost)?;
                    }
                    None => {}
                },
                batch = recv_logs(&mut self.logs), if self.stalled.is_none() => self.take_batch(batch),
                () = tokio::time::sleep_until(renew_at), if pending_key.is_none() => {
                    match crate::enroll::new_key_and_csr(&self.identity.enrollment.agent_id) {
                        Ok((key, csr_der)) => {
                            send(&mut tx, &AgentMessage::Renew(RenewRequest { csr_der })).await.map_err(lost)?;
                            pending_key = Some(key);
                            info!("requested certificate renewal");
                        }
                        Err(error) => warn!(%error, "cannot create renewal key"),
                    }
                    renew_at = Instant::now() + Duration::from_secs(60);
                }
                msg = read_frame(&mut rx, &mut decoder) => {
                    let Some(msg) = msg.map_err(lost)? else {
                        return Err(lost("hub closed the stream".into()));
                    };
                    match msg {
                        HubMessage::Ack(ack) => {
                            // Positions first: once acked, records may leave the spool.
                            self.persist_positions();
                            if let Err(error) = self.outbox.ack(ack.seq) {
                                warn!(%error, "cannot record an acknowledgement in the spool");
                            }
                            if let Ok(mut s) = self.stats.lock() { s.acked_seq = s.acked_seq.max(ack.seq); }
                        }
                        HubMessage::Busy(busy) => {
                            let wait = Duration::from_millis(u64::from(busy.retry_after_ms));
                            paused_until = Some(Instant::now() + wait);
                            self.outbox.on_busy(busy.seq);
                            if let Ok(mut s) = self.stats.lock() { s.busy_replies += 1; }
                            debug!(?wait, seq = busy.seq, "hub is busy; holding batches in the spool");
                        }
                        HubMessage::Renewed(RenewResponse::Issued { cert_der, not_after_ms }) => {
                            let Some(key) = pending_key.take() else { continue };
                            if !crate::tls::cert_matches_key(&cert_der, &key) {
                                warn!("renewed certificate does not match the new key; keeping the old one");
                                continue;
                            }
                            let mut id = self.identity.clone();
                            id.cert_der = cert_der;
                            id.key_der = key;
                            id.enrollment.cert_not_after_ms = not_after_ms;
                            id.enrollment.cert_issued_at_ms = crate::now_ms();
                            if let Err(error) = id.save_renewed(&self.state_dir) {
                                warn!(%error, "cannot store renewed certificate");
                                continue;
                            }
                            self.identity = id;
                            if let Ok(mut s) = self.stats.lock() { s.renewals += 1; }
                            info!(not_after_ms, "certificate renewed; reconnecting with it");
                            let _ = tx.finish();
                            return Ok(Outcome::Renewed);
                        }
                        HubMessage::Renewed(RenewResponse::Refused { reason }) => {
                            pending_key = None;
                            warn!(%reason, "hub refused certificate renewal");
                        }
                        HubMessage::Command(cmd) => match cmd.body {
                            CommandBody::Ping => {
                                let result = CommandResult { id: cmd.id, ok: true, detail: "pong".into() };
                                send(&mut tx, &AgentMessage::CommandResult(result)).await.map_err(lost)?;
                            }
                            CommandBody::Docker(_) | CommandBody::Pve(_) | CommandBody::Diagnose(_) => {
                                // Actions run only from a signed, approved plan step.
                                warn!(id = cmd.id, "refused an unsigned action command");
                                let outcome = refused_outcome(cmd.id, "refused: actions must be signed by the hub (an approved plan step); unsigned action commands are not executed".into());
                                send(&mut tx, &AgentMessage::ActionOutcome(outcome)).await.map_err(lost)?;
                            }
                        },
                        HubMessage::Signed(cmd) => {
                            let now = crate::now_ms() / 1000;
                            match self.guard.admit(&cmd, now) {
                                Ok(crate::guard::Admitted::Docker(action)) => {
                                    info!(id = cmd.id, action = action.name(), "signed container action admitted");
                                    self.spawn_docker_action(cmd.id, action);
                                }
                                Ok(crate::guard::Admitted::Diagnose(d)) => {
                                    info!(id = cmd.id, "signed diagnostic admitted");
                                    self.spawn_diagnostic(cmd.id, d);
                                }
                                Ok(crate::guard::Admitted::Pve(action)) => {
                                    info!(id = cmd.id, action = action.name(), "signed Proxmox action admitted");
                                    self.spawn_pve_action(cmd.id, action);
                                }
                                Err(reason) => {
                                    warn!(id = cmd.id, %reason, "signed command refused");
                                    send(&mut tx, &AgentMessage::ActionOutcome(refused_outcome(cmd.id, reason))).await.map_err(lost)?;
                                }
                            }
                        }
                        HubMessage::AuditHead(head) => {
                            if let Err(reason) = self.guard.on_head(&head) {
                                warn!(%reason, seq = head.seq, "audit head refused");
                            }
                        }
                        HubMessage::Refused(r) => return Err(Outcome::Refused(r.reason)),
                        HubMessage::Welcome(_) => return Err(lost("unexpected second welcome".into())),
                    }
                }
            }
            self.pump(&mut tx, paused_until).await.map_err(lost)?;
        }
    }

    /// Renewal happens at a random point between 60% and 75% of the lifetime.
    fn renewal_deadline(&self) -> Instant {
        let e = &self.identity.enrollment;
        let lifetime = (e.cert_not_after_ms - e.cert_issued_at_ms).max(0) as f64;
        let at_ms = e.cert_issued_at_ms as f64 + lifetime * (0.60 + rand::random::<f64>() * 0.15);
        let wait_ms = (at_ms - crate::now_ms() as f64).max(0.0);
        Instant::now() + Duration::from_millis(wait_ms as u64)
    }

    async fn sample_facts(&mut self) {
        if self.stalled.is_some() {
            // The spool is failing; a later sample replaces this one.
            return;
        }
        let collector = self.collector.clone();
        let sampled =
            tokio::task::spawn_blocking(move || collector.lock().ok().map(|mut c| c.sample()))
                .await;
        let Ok(Some(facts)) = sampled else {
            warn!("host facts sample failed");
            return;
        };
        let max_age = Duration::from_millis(self.config.facts.max_interval_ms);
        let due = match &self.last_sent {
            None => true,
            Some((at, old)) => at.elapsed() >= max_age || changed_materially(old, &facts),
        };
        if due {
            self.last_sent = Some((Instant::now(), facts.clone()));
            let now = crate::now_ms();
            let mut batch = vec![Fact {
                observed_at_ms: now,
                body: FactBody::Host(facts),
            }];
            if let Some(p) = crate::facts::read_pressure(std::path::Path::new("/")) {
                batch.push(Fact {
                    observed_at_ms: now,
                    body: FactBody::Pressure(p),
                });
            }
            self.take_batch(Some(LogBatch {
                facts: batch,
                checkpoint: Vec::new(),
            }));
        }
    }

    /// Appends a collector batch to the spool; on failure holds it (and stops
    /// taking more) until the spool works again.
    fn take_batch(&mut self, batch: Option<LogBatch>) {
        let Some(batch) = batch else {
            self.logs = None;
            return;
        };
        if batch.facts.is_empty() {
            self.outbox.note_positions(&batch.checkpoint);
            return;
        }
        match self
            .outbox
            .append(&batch.facts, &batch.checkpoint, crate::now_ms())
        {
            Ok(_) => {}
            Err(error) => {
                tracing::error!(
                    %error,
                    "cannot write to the spool; collectors are paused until it works again"
                );
                self.stalled = Some(batch);
            }
        }
        self.outbox.drain_gaps(crate::now_ms());
        self.publish_stats();
    }

    /// Group commit, retry of a stalled batch, and saving source positions.
    fn maintain(&mut self) {
        let now = crate::now_ms();
        self.outbox.flush_due(now);
        if let Some(batch) = self.stalled.take() {
            match self.outbox.append(&batch.facts, &batch.checkpoint, now) {
                Ok(_) => info!("the spool accepts writes again; collectors resume"),
                Err(_) => self.stalled = Some(batch),
            }
        }
        self.outbox.drain_gaps(now);
        self.persist_positions();
        self.publish_stats();
    }

    /// Saves the source positions of synced spool records.
    fn persist_positions(&mut self) {
        let Some((positions, seq)) = self.outbox.take_synced_positions() else {
            return;
        };
        for (k, v) in positions {
            self.cursors.set(k, v);
        }
        self.cursors.set(CHECKPOINT_SEQ_KEY, seq.to_string());
        if let Err(error) = self.cursors.save_if_dirty() {
            warn!(%error, "cannot save log source positions");
        }
    }

    /// Takes what the collectors already produced, then syncs the spool and
    /// the positions.
    fn shutdown_spool(&mut self) {
        if let Some(rx) = self.logs.as_mut() {
            let mut drained = Vec::new();
            while let Ok(b) = rx.try_recv() {
                drained.push(b);
            }
            for b in drained {
                if self.stalled.is_some() {
                    break;
                }
                self.take_batch(Some(b));
            }
        }
        self.persist_positions();
        self.publish_stats();
    }

    /// Sends spooled batches while the in-flight window has room.
    async fn pump(
        &mut self,
        tx: &mut quinn::SendStream,
        paused_until: Option<Instant>,
    ) -> Result<(), String> {
        if paused_until.is_some_and(|t| t > Instant::now()) {
            return Ok(());
        }
        loop {
            let batches = match self.outbox.next_to_send() {
                Ok(b) => b,
                Err(error) => {
                    warn!(%error, "cannot read from the spool");
                    return Ok(());
                }
            };
            if batches.is_empty() {
                break;
            }
            for batch in batches {
                let seq = batch.seq;
                send(tx, &AgentMessage::Facts(batch)).await?;
                self.outbox.mark_sent(seq);
                if let Ok(mut s) = self.stats.lock() {
                    s.batches_sent += 1;
                }
            }
        }
        self.publish_stats();
        Ok(())
    }

    /// The agent's health fact.
    fn health(&self) -> AgentHealth {
        let sp = self.outbox.spool_stats();
        let c = self.outbox.counters();
        AgentHealth {
            spool_depth_batches: sp.depth_records,
            spool_bytes: sp.depth_bytes,
            oldest_unacked_ms: sp.oldest_unacked_ms.map_or(0, |t| {
                u64::try_from(crate::now_ms().saturating_sub(t)).unwrap_or(0)
            }),
            replayed_batches: c.replayed_batches,
            dropped_batches: sp.dropped_batches + sp.corrupt_records + sp.missing_records,
            dropped_facts: sp.dropped_facts,
            corrupt_records: sp.corrupt_records + sp.torn_records,
            spool_errors: c.spool_errors,
            ..AgentHealth::default()
        }
    }

    fn publish_stats(&self) {
        let sp = self.outbox.spool_stats();
        let c = self.outbox.counters();
        if let Ok(mut s) = self.stats.lock() {
            s.batches_spooled = c.batches_spooled;
            s.facts_spooled = c.facts_spooled;
            s.replayed_batches = c.replayed_batches;
            s.spool_depth = sp.depth_records;
            s.dropped_batches = sp.dropped_batches;
            s.dropped_facts = sp.dropped_facts;
            s.corrupt_batches = sp.corrupt_records + sp.missing_records;
            s.gap_facts = c.gap_facts;
            s.spool_errors = c.spool_errors;
            s.spool_error = self.outbox.last_error().map(str::to_string);
        }
    }

    /// What this node's own policy allows, for the hub's early refusals.
    fn local_policy(&self) -> wingman_protocol::AgentPolicy {
        wingman_protocol::AgentPolicy {
            command_key_pinned: self.guard.has_key(),
            docker_actions: self.config.docker.enabled,
            docker_allow_destructive: self.config.docker.enabled
                && self.config.docker.policy.allows_destructive(),
            pve_actions: self.config.proxmox.enabled && self.kind == HostKind::Proxmox,
            pve_allow_destructive: self.config.proxmox.enabled
                && self.kind == HostKind::Proxmox
                && self.config.proxmox.policy.allow_destructive,
        }
    }

    /// Runs a container action off the event loop, under the node's own
    /// policy (a refused action is reported, never executed).
    fn spawn_docker_action(&self, id: u64, action: wingman_protocol::docker::DockerAction) {
        let policy = self.config.docker.policy.clone();
        let socket = self.config.docker.socket.clone();
        let enabled = self.config.docker.enabled;
        let tx = self.action_tx.clone();
        tokio::spawn(async move {
            let refused = |detail: String| wingman_protocol::docker::ActionResult {
                ok: false,
                refused: true,
                detail,
                duration_ms: 0,
            };
            let result = if !enabled {
                refused("the Docker integration is disabled on this node".into())
            } else if let Err(r) = policy.check(&action) {
                refused(r.reason)
            } else {
                match crate::docker::connect(socket.as_deref(), Duration::from_secs(10)).await {
                    Ok(engine) => crate::docker::execute(&engine, &policy, &action).await,
                    Err(e) => wingman_protocol::docker::ActionResult {
                        ok: false,
                        refused: false,
                        detail: e.to_string(),
                        duration_ms: 0,
                    },
                }
            };
            let _ = tx
                .send(ActionDone::Docker(ActionOutcome { id, result }))
                .await;
        });
    }

    /// Runs a read-only diagnostic off the event loop.
    fn spawn_diagnostic(&self, id: u64, d: wingman_protocol::Diagnostic) {
        let cfg = self.config.clone();
        let kind = self.kind;
        let tx = self.action_tx.clone();
        tokio::spawn(async move {
            let result = crate::diagnose::run(&cfg, kind, &d).await;
            let _ = tx
                .send(ActionDone::Docker(ActionOutcome { id, result }))
                .await;
        });
    }

    /// Runs a Proxmox VE guest action under the node's `[proxmox.policy]`.
    fn spawn_pve_action(&self, id: u64, action: wingman_protocol::pve::PveAction) {
        let cfg = self.config.proxmox.clone();
        let is_pve = self.kind == HostKind::Proxmox;
        let tx = self.action_tx.clone();
        tokio::spawn(async move {
            let result = run_pve_action(&cfg, is_pve, &action).await;
            let _ = tx.send(ActionDone::Pve(id, Box::new(result))).await;
        });
    }
}

/// A finished action, back to the event loop.
#[derive(Debug)]
enum ActionDone {
    /// A container action.
    Docker(ActionOutcome),
    /// A Proxmox VE guest action (command id, result).
    Pve(u64, Box<wingman_protocol::pve::ActionResult>),
}

/// An action refused before it ran.
fn refused_outcome(id: u64, detail: String) -> ActionOutcome {
    ActionOutcome {
        id,
        result: wingman_protocol::docker::ActionResult {
            ok: false,
            refused: true,
            detail,
            duration_ms: 0,
        },
    }
}

/// The short result the hub's command waiter gets for a PVE action.
fn pve_command_result(id: u64, r: &wingman_protocol::pve::ActionResult) -> CommandResult {
    use wingman_protocol::pve::ActionOutcome as O;
    let ok = r.outcome == O::Completed && r.status.is_success();
    let upid = r
        .upid
        .as_ref()
        .map(|u| u.to_string())
        .unwrap_or_else(|| "-".into());
    let what = match r.outcome {
        O::Completed => format!("{} ({})", r.status, upid),
        O::Refused => "refused by the node's policy".to_string(),
        O::RequestFailed => "the Proxmox API rejected the request".to_string(),
        O::TimedOut => format!("still running after the follow deadline ({upid})"),
    };
    let mut detail = format!("{} {} {}: {what}", r.action, r.kind.as_str(), r.vmid);
    if !r.message.is_empty() {
        detail.push_str(": ");
        detail.push_str(&r.message);
    }
    CommandResult { id, ok, detail }
}

/// A client of the local Proxmox VE API from `[proxmox]`, or why not.
pub fn pve_client(cfg: &crate::config::ProxmoxSection) -> Result<crate::pve::PveClient, String> {
    let (Some(token_id), Some(secret), Some(fp)) = (
        cfg.token_id.as_deref(),
        cfg.token_secret.as_ref(),
        cfg.fingerprint
            .as_deref()
            .and_then(|f| crate::pve::client::parse_fingerprint(f).ok()),
    ) else {
        return Err("the Proxmox API is not configured: set [proxmox] token_id, token_secret and fingerprint".into());
    };
    let mut c = crate::pve::PveClientConfig::new(token_id, secret.expose(), fp);
    c.base_url = cfg.base_url.clone();
    crate::pve::PveClient::new(&c).map_err(|e| e.to_string())
}

/// Executes `action` through the local API, or explains why it cannot.
async fn run_pve_action(
    cfg: &crate::config::ProxmoxSection,
    is_pve: bool,
    action: &wingman_protocol::pve::PveAction,
) -> wingman_protocol::pve::ActionResult {
    use wingman_protocol::pve::{ActionOutcome as O, ActionResult, TaskStatus};
    let refuse = |outcome: O, message: String| ActionResult {
        action: action.name().to_string(),
        node: action.guest.node.clone(),
        vmid: action.guest.vmid,
        kind: action.guest.kind,
        outcome,
        upid: None,
        status: TaskStatus::Failed(message.clone()),
        chain: Vec::new(),
        ha_state: None,
        message,
        duration_ms: 0,
    };
    if !is_pve || !cfg.enabled {
        return refuse(
            O::Refused,
            "the Proxmox VE integration is not active on this node".into(),
        );
    }
    let mut result = match pve_client(cfg) {
        Ok(client) => {
            crate::pve::execute(
                &client,
                &cfg.policy,
                action,
                &crate::pve::ExecOptions::default(),
            )
            .await
        }
        Err(e) => refuse(O::RequestFailed, e),
    };
    // The message can come from a task log: redact before it leaves.
    let redactor = wingman_protocol::logs::Redactor::new(&Default::default());
    result.message = redactor.redact(&result.message).text.into_owned();
    if let TaskStatus::Failed(text) = &result.status {
        result.status = TaskStatus::Failed(redactor.redact(text).text.into_owned());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut b = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            attempt: 0,
        };
        let first = b.next();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            assert!(b.next() <= Duration::from_millis(1000));
        }
        b.reset();
        assert!(b.next() <= Duration::from_millis(100));
    }
}
