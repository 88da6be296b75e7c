//! The agent's uplink: one mutual-TLS QUIC session at a time to the hub, with
//! reconnects (jittered exponential backoff), heartbeats, fact batches awaiting
//! acknowledgement, busy handling and certificate renewal.
//!
//! [`run`] is the agent's one event loop: a `select!` over shutdown, the
//! heartbeat and facts timers, the renewal deadline and frames from the hub.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use wingman_protocol::{
    ActionOutcome, AgentMessage, CommandBody, CommandResult, Fact, FactBatch, FactBody,
    FrameDecoder, HUB_SERVER_NAME, Heartbeat, Hello, HostFacts, HostKind, HubMessage,
    PROTOCOL_VERSION, RenewRequest, RenewResponse,
};

use crate::config::AgentConfig;
use crate::facts::{HostCollector, changed_materially};
use crate::logs::cursor::CursorStore;
use crate::logs::sources::LogBatch;
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
}

/// Why a session ended.
#[derive(Debug)]
enum Outcome {
    Shutdown,
    Renewed,
    Lost(String),
    Refused(String),
}

/// Batches sent but not yet acknowledged. Bounded: beyond `cap` the oldest
/// batch is dropped and counted (overflow policy: drop oldest).
/// Source positions covered by a batch, persisted once it is acknowledged.
type Checkpoint = Vec<(String, String)>;

#[derive(Debug)]
struct Outbox {
    next_seq: u64,
    sent_upto: u64,
    unacked: VecDeque<(FactBatch, Checkpoint)>,
    cap: usize,
    dropped_batches: u64,
}

impl Outbox {
    fn push(&mut self, stream_id: u64, facts: Vec<Fact>, checkpoint: Checkpoint) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.unacked.len() >= self.cap {
            self.unacked.pop_front();
            self.dropped_batches += 1;
        }
        self.unacked.push_back((
            FactBatch {
                stream_id,
                seq,
                facts,
            },
            checkpoint,
        ));
    }

    /// Drops acknowledged batches and returns their checkpoints, oldest first.
    fn ack(&mut self, seq: u64) -> Vec<Checkpoint> {
        let mut done = Vec::new();
        while self.unacked.front().is_some_and(|(b, _)| b.seq <= seq) {
            if let Some((_, c)) = self.unacked.pop_front()
                && !c.is_empty()
            {
                done.push(c);
            }
        }
        done
    }

    fn on_welcome(&mut self, committed: u64) -> Vec<Checkpoint> {
        let done = self.ack(committed);
        self.next_seq = self.next_seq.max(committed + 1);
        self.sent_upto = committed;
        done
    }
}

/// Counters the agent exposes about its link.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LinkStats {
    /// Sessions established (welcomed by the hub).
    pub sessions: u64,
    /// Batches sent (including resends).
    pub batches_sent: u64,
    /// Batches acknowledged.
    pub acked_seq: u64,
    /// Batches dropped because the unacked queue was full.
    pub dropped_batches: u64,
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
    last_sent: Option<(Instant, HostFacts)>,
    stats: Arc<Mutex<LinkStats>>,
    cursors: CursorStore,
    logs: Option<mpsc::Receiver<LogBatch>>,
    action_tx: mpsc::Sender<ActionOutcome>,
    action_rx: mpsc::Receiver<ActionOutcome>,
}

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
    let (cursors, status) = CursorStore::open(state_dir.join("cursors"));
    if let Some(w) = status.warning() {
        warn!(warning = %w, "log source positions could not be loaded; sources start from the end");
    }
    let saved: BTreeMap<String, String> = cursors
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // Every collector feeds one bounded channel (overflow policy: block; the
    // sources keep their positions, so nothing is lost while the hub is away).
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
    let (action_tx, action_rx) = mpsc::channel::<ActionOutcome>(16);
    let mut agent = Agent {
        action_tx,
        action_rx,
        cursors,
        logs: Some(batch_rx),
        outbox: Outbox {
            next_seq: 1,
            sent_upto: 0,
            unacked: VecDeque::new(),
            cap: config.link.max_unacked_batches,
            dropped_batches: 0,
        },
        config,
        state_dir,
        identity,
        kind,
        collector: Arc::new(Mutex::new(collector)),
        last_sent: None,
        stats,
    };
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
            Ok(id) => agent.identity = id,
            Err(error) => warn!(%error, "cannot reload agent identity; using the one in memory"),
        }
        let hub = agent
            .config
            .hub
            .clone()
            .unwrap_or_else(|| agent.identity.enrollment.hub.clone());
        let started = Instant::now();
        let outcome = match connect(&hub, &agent.identity, &mut endpoint).await {
            Ok(conn) => agent.session(conn, &shutdown).await,
            Err(reason) => Outcome::Lost(reason),
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
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
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
            hostname: sysinfo::System::host_name().unwrap_or_else(|_| "unknown".into()),
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
        let done = self.outbox.on_welcome(welcome.committed_seq);
        self.persist(done);
        let hb_every = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(100)));
        let mut heartbeat = tokio::time::interval(hb_every);
        let mut facts_tick =
            tokio::time::interval(Duration::from_millis(self.config.facts.sample_interval_ms));
        let mut paused_until: Option<Instant> = None;
        let mut renew_at = self.renewal_deadline();
        let mut pending_key: Option<Vec<u8>> = None;
        self.last_sent = None;
        self.flush(&mut tx, paused_until).await.map_err(lost)?;
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
                    self.flush(&mut tx, paused_until).await.map_err(lost)?;
                }
                outcome = self.action_rx.recv() => {
                    if let Some(outcome) = outcome {
                        info!(id = outcome.id, ok = outcome.result.ok, refused = outcome.result.refused, "action finished");
                        send(&mut tx, &AgentMessage::ActionOutcome(outcome)).await.map_err(lost)?;
                    }
                }
                batch = recv_logs(&mut self.logs) => {
                    match batch {
                        Some(b) => {
                            self.outbox.push(self.identity.enrollment.stream_id, b.facts, b.checkpoint);
                            self.note_drops();
                            self.flush(&mut tx, paused_until).await.map_err(lost)?;
                        }
                        None => self.logs = None,
                    }
                }
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
                            let done = self.outbox.ack(ack.seq);
                            self.persist(done);
                            if let Ok(mut s) = self.stats.lock() { s.acked_seq = s.acked_seq.max(ack.seq); }
                        }
                        HubMessage::Busy(busy) => {
                            let wait = Duration::from_millis(u64::from(busy.retry_after_ms));
                            paused_until = Some(Instant::now() + wait);
                            self.outbox.sent_upto = self.outbox.sent_upto.min(busy.seq.saturating_sub(1));
                            debug!(?wait, "hub is busy; holding batches");
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
                            CommandBody::Docker(action) => {
                                self.spawn_docker_action(cmd.id, action);
                            }
                        },
                        HubMessage::Refused(r) => return Err(Outcome::Refused(r.reason)),
                        HubMessage::Welcome(_) => return Err(lost("unexpected second welcome".into())),
                    }
                    if paused_until.is_some_and(|t| t <= Instant::now()) {
                        paused_until = None;
                        self.flush(&mut tx, paused_until).await.map_err(lost)?;
                    }
                }
            }
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
            let fact = Fact {
                observed_at_ms: crate::now_ms(),
                body: FactBody::Host(facts),
            };
            self.outbox
                .push(self.identity.enrollment.stream_id, vec![fact], Vec::new());
            self.note_drops();
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
            let _ = tx.send(ActionOutcome { id, result }).await;
        });
    }

    fn note_drops(&self) {
        if let Ok(mut s) = self.stats.lock() {
            s.dropped_batches = self.outbox.dropped_batches;
        }
    }

    /// Persists the source positions of acknowledged batches.
    fn persist(&mut self, done: Vec<Checkpoint>) {
        if done.is_empty() {
            return;
        }
        for checkpoint in done {
            for (k, v) in checkpoint {
                self.cursors.set(k, v);
            }
        }
        if let Err(error) = self.cursors.save_if_dirty() {
            warn!(%error, "cannot save log source positions");
        }
    }

    async fn flush(
        &mut self,
        tx: &mut quinn::SendStream,
        paused_until: Option<Instant>,
    ) -> Result<(), String> {
        if paused_until.is_some_and(|t| t > Instant::now()) {
            return Ok(());
        }
        let pending: Vec<FactBatch> = self
            .outbox
            .unacked
            .iter()
            .map(|(b, _)| b)
            .filter(|b| b.seq > self.outbox.sent_upto)
            .cloned()
            .collect();
        for batch in pending {
            let seq = batch.seq;
            send(tx, &AgentMessage::Facts(batch)).await?;
            self.outbox.sent_upto = seq;
            if let Ok(mut s) = self.stats.lock() {
                s.batches_sent += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_drops_oldest_and_counts() {
        let mut o = Outbox {
            next_seq: 1,
            sent_upto: 0,
            unacked: VecDeque::new(),
            cap: 2,
            dropped_batches: 0,
        };
        for i in 0..3 {
            o.push(1, vec![], vec![("k".into(), format!("p{i}"))]);
        }
        assert_eq!(o.dropped_batches, 1);
        assert_eq!(
            o.unacked.iter().map(|(b, _)| b.seq).collect::<Vec<_>>(),
            vec![2, 3]
        );
        let done = o.ack(2);
        assert_eq!(done, vec![vec![("k".to_string(), "p1".to_string())]]);
        assert_eq!(o.unacked.len(), 1);
        o.on_welcome(10);
        assert!(o.unacked.is_empty());
        assert_eq!(o.next_seq, 11);
    }

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
