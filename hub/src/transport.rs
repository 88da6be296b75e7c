//! The agent link on the hub side: the QUIC endpoint with mutual TLS, the
//! client-certificate verifier that consults revocations, the enrollment
//! exchange, and one session task per connected agent.
//!
//! **Invariant:** the agent id of everything an agent sends comes from the
//! certificate it authenticated with (looked up by the certificate's SHA-256),
//! never from the payload.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::DistinguishedName;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::metrics::BatchOutcome;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use wingman_protocol::logs::MaskedTemplate;
use wingman_protocol::{
    ALPN_AGENT, ALPN_ENROLL, Ack, ActionOutcome, AgentMessage, Busy, Command, CommandBody,
    CommandResult, EnrollRequest, EnrollResponse, Fact, FactBody, FrameDecoder, HubMessage,
    MAX_FRAME_LEN, PROTOCOL_VERSION, Refused, RenewResponse, Welcome,
};

use crate::Hub;
use crate::store::{AgentRow, FactRecord, TemplateRecord, TokenUse};

/// QUIC application error codes used when the hub closes a connection.
pub mod close_code {
    /// Normal close.
    pub const OK: u32 = 0;
    /// The peer sent a malformed or oversized frame.
    pub const PROTOCOL: u32 = 2;
    /// The agent was revoked.
    pub const REVOKED: u32 = 3;
    /// The hub is shutting down.
    pub const SHUTDOWN: u32 = 4;
    /// The connection is not allowed (wrong ALPN/credential combination).
    pub const FORBIDDEN: u32 = 5;
}

/// Live identity state shared by the verifier, sessions and the revocation watcher.
#[derive(Debug, Default)]
pub struct Registry {
    certs: RwLock<BTreeMap<String, String>>,
    revoked: RwLock<BTreeSet<String>>,
    conns: Mutex<BTreeMap<String, Vec<quinn::Connection>>>,
    commands: Mutex<BTreeMap<String, mpsc::Sender<PendingCommand>>>,
}

/// What an agent answered to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentReply {
    /// A plain result.
    Result(CommandResult),
    /// An action's outcome (executed, failed or refused by local policy).
    Action(ActionOutcome),
}

/// What goes to the agent.
#[derive(Debug)]
enum Outgoing {
    /// An unsigned command (`Ping`; agents refuse unsigned actions).
    Plain(CommandBody),
    /// A hub-signed action of an approved plan step.
    Signed(Box<wingman_protocol::SignedCommand>),
}

/// A command waiting to be written to an agent's session.
#[derive(Debug)]
pub struct PendingCommand {
    body: Outgoing,
    reply: oneshot::Sender<AgentReply>,
}

/// Why a command could not be delivered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    /// The agent has no live session.
    #[error("agent {0} is not connected")]
    NotConnected(String),
    /// The session ended or the agent did not answer in time.
    #[error("agent {0} did not answer in time")]
    Timeout(String),
}

impl Registry {
    /// Replaces the known certificates and revocations.
    pub fn load(&self, certs: Vec<(String, String)>, revoked: Vec<String>) {
        if let Ok(mut c) = self.certs.write() {
            *c = certs.into_iter().collect();
        }
        if let Ok(mut r) = self.revoked.write() {
            *r = revoked.into_iter().collect();
        }
    }

    /// Adds an issued certificate.
    pub fn add_cert(&self, fingerprint: String, agent_id: String) {
        if let Ok(mut c) = self.certs.write() {
            c.insert(fingerprint, agent_id);
        }
    }

    /// The agent a certificate belongs to, if it is known and not revoked.
    pub fn agent_for(&self, cert_der: &[u8]) -> Option<String> {
        let fp = wingman_agent::tls::fingerprint(cert_der);
        let id = self.certs.read().ok()?.get(&fp).cloned()?;
        let revoked = self.revoked.read().ok()?.contains(&id);
        (!revoked).then_some(id)
    }

    /// Marks an agent revoked and closes its live connections. Returns how
    /// many connections were closed.
    pub fn revoke(&self, agent_id: &str) -> usize {
        if let Ok(mut r) = self.revoked.write() {
            r.insert(agent_id.to_string());
        }
        let conns = self
            .conns
            .lock()
            .ok()
            .and_then(|mut m| m.remove(agent_id))
            .unwrap_or_default();
        for c in &conns {
            c.close(close_code::REVOKED.into(), b"agent revoked");
        }
        conns.len()
    }

    /// Whether an agent is revoked.
    pub fn is_revoked(&self, agent_id: &str) -> bool {
        self.revoked
            .read()
            .map(|r| r.contains(agent_id))
            .unwrap_or(true)
    }

    fn register(&self, agent_id: &str, conn: &quinn::Connection) {
        if let Ok(mut m) = self.conns.lock() {
            m.entry(agent_id.to_string())
                .or_default()
                .push(conn.clone());
        }
    }

    fn unregister(&self, agent_id: &str, conn: &quinn::Connection) {
        if let Ok(mut m) = self.commands.lock()
            && m.get(agent_id).is_some_and(mpsc::Sender::is_closed)
        {
            m.remove(agent_id);
        }
        if let Ok(mut m) = self.conns.lock()
            && let Some(v) = m.get_mut(agent_id)
        {
            v.retain(|c| c.stable_id() != conn.stable_id());
            if v.is_empty() {
                m.remove(agent_id);
            }
        }
    }

    /// Sends an unsigned command (agents only answer `Ping`; they refuse
    /// unsigned actions) and waits for the answer.
    pub async fn send_command(
        &self,
        agent_id: &str,
        body: CommandBody,
        timeout: Duration,
    ) -> Result<AgentReply, CommandError> {
        self.send(agent_id, Outgoing::Plain(body), timeout).await
    }

    /// Sends a signed action command and waits for the agent's outcome.
    pub async fn send_signed(
        &self,
        agent_id: &str,
        cmd: wingman_protocol::SignedCommand,
        timeout: Duration,
    ) -> Result<AgentReply, CommandError> {
        self.send(agent_id, Outgoing::Signed(Box::new(cmd)), timeout)
            .await
    }

    async fn send(
        &self,
        agent_id: &str,
        body: Outgoing,
        timeout: Duration,
    ) -> Result<AgentReply, CommandError> {
        let tx = self
            .commands
            .lock()
            .ok()
            .and_then(|m| m.get(agent_id).cloned())
            .ok_or_else(|| CommandError::NotConnected(agent_id.to_string()))?;
        let (reply, rx) = oneshot::channel();
        tx.send(PendingCommand { body, reply })
            .await
            .map_err(|_| CommandError::NotConnected(agent_id.to_string()))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => Ok(r),
            _ => Err(CommandError::Timeout(agent_id.to_string())),
        }
    }

    /// Number of agents with a live connection.
    pub fn connected(&self) -> usize {
        self.conns.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// Accepts client certificates chained to the hub CA whose fingerprint belongs
/// to a non-revoked agent. Clients without a certificate get through the
/// handshake but may only enroll (checked after the handshake by ALPN).
#[derive(Debug)]
struct AgentCertVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    registry: Arc<Registry>,
}

impl ClientCertVerifier for AgentCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.registry.agent_for(end_entity.as_ref()).is_none() {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        Ok(ok)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Builds the QUIC server config: TLS 1.3 only, no 0-RTT, both ALPNs.
pub fn server_config(hub: &Hub) -> anyhow::Result<quinn::ServerConfig> {
    let provider: Arc<CryptoProvider> = wingman_agent::tls::provider();
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(hub.pki.ca_der().to_vec()))?;
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let verifier = Arc::new(AgentCertVerifier {
        inner,
        registry: hub.registry.clone(),
    });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(hub.pki.server_chain(), hub.pki.server_key())?;
    tls.alpn_protocols = vec![ALPN_AGENT.to_vec(), ALPN_ENROLL.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_uni_streams(0u32.into());
    transport.max_concurrent_bidi_streams(2u32.into());
    transport.max_idle_timeout(Some(quinn::IdleTimeout::try_from(Duration::from_secs(30))?));
    transport.stream_receive_window((2 * MAX_FRAME_LEN as u32).into());
    transport.receive_window((4 * MAX_FRAME_LEN as u32).into());
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

/// Accepts connections until `shutdown`, each handled in `tracker`.
pub async fn serve(
    hub: Hub,
    endpoint: quinn::Endpoint,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(hub.config.quic.max_connections));
    loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => break,
            i = endpoint.accept() => i,
        };
        let Some(incoming) = incoming else { break };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            incoming.refuse();
            warn!("connection refused: quic.max_connections reached");
            continue;
        };
        let hub = hub.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            handle_incoming(hub, incoming, shutdown).await;
        });
    }
    endpoint.close(close_code::SHUTDOWN.into(), b"hub shutting down");
}

async fn handle_incoming(hub: Hub, incoming: quinn::Incoming, shutdown: CancellationToken) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(error) => {
            info!(%remote, %error, "agent handshake refused");
            return;
        }
    };
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    let peer_cert = conn
        .peer_identity()
        .and_then(|p| p.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|v| v.first().map(|c| c.as_ref().to_vec()));
    match (alpn.as_deref(), peer_cert) {
        (Some(a), None) if a == ALPN_ENROLL => enroll(&hub, &conn).await,
        (Some(a), Some(cert)) if a == ALPN_AGENT => {
            let Some(agent_id) = hub.registry.agent_for(&cert) else {
                conn.close(
                    close_code::REVOKED.into(),
                    b"unknown or revoked certificate",
                );
                return;
            };
            hub.registry.register(&agent_id, &conn);
            let result = session(&hub, &conn, &agent_id, &shutdown).await;
            hub.registry.unregister(&agent_id, &conn);
            match result {
                Ok(()) => debug!(%agent_id, "session ended"),
                Err(reason) => info!(%agent_id, %remote, %reason, "session ended"),
            }
        }
        _ => conn.close(close_code::FORBIDDEN.into(), b"not allowed"),
    }
}

async fn enroll(hub: &Hub, conn: &quinn::Connection) {
    let remote = conn.remote_address();
    let exchange = async {
        let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let bytes = recv
            .read_to_end(MAX_FRAME_LEN + 4)
            .await
            .map_err(|e| e.to_string())?;
        let req = match wingman_protocol::decode::<EnrollRequest>(&bytes) {
            Ok(Some((req, _))) => req,
            Ok(None) => return Err("truncated enrollment request".to_string()),
            Err(e) => return Err(e.to_string()),
        };
        let resp = enroll_response(hub, &req, remote).await;
        let frame = wingman_protocol::encode(&resp).map_err(|e| e.to_string())?;
        send.write_all(&frame).await.map_err(|e| e.to_string())?;
        let _ = send.finish();
        Ok::<(), String>(())
    };
    match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Ok(Ok(())) => {
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
        }
        Ok(Err(reason)) => {
            warn!(%remote, %reason, "bad enrollment request");
            conn.close(close_code::PROTOCOL.into(), b"bad enrollment request");
        }
        Err(_) => conn.close(close_code::PROTOCOL.into(), b"enrollment timed out"),
    }
}

async fn enroll_response(
    hub: &Hub,
    req: &EnrollRequest,
    remote: std::net::SocketAddr,
) -> EnrollResponse {
    let refuse = |reason: &str| EnrollResponse::Refused {
        reason: reason.to_string(),
    };
    if req.protocol_version != PROTOCOL_VERSION {
        return refuse(&format!(
            "protocol version {} is not supported (the hub speaks {PROTOCOL_VERSION})",
            req.protocol_version
        ));
    }
    let Some((token_id, secret_hash)) = crate::auth::parse_token(&req.token) else {
        return refuse("the token is malformed");
    };
    let agent_id = uuid::Uuid::now_v7().to_string();
    let now = wingman_agent::now_ms();
    // Sign first so a bad CSR does not burn the token.
    let (cert_der, not_after) = match hub.pki.sign_agent_csr(
        &req.csr_der,
        &agent_id,
        hub.config.agents.cert_lifetime_secs,
        now,
    ) {
        Ok(x) => x,
        Err(e) => return refuse(&e.to_string()),
    };
    match hub
        .store
        .consume_enrollment_token(&token_id, &secret_hash, &agent_id, now)
        .await
    {
        Ok(TokenUse::Consumed) => {}
        Ok(TokenUse::Unknown) => {
            warn!(%remote, token_id, "enrollment with an unknown token");
            return refuse("the token is not valid");
        }
        Ok(TokenUse::Used) => {
            warn!(%remote, token_id, "enrollment with a token that was already used");
            return refuse("the token has already been used");
        }
        Ok(TokenUse::Expired) => return refuse("the token has expired"),
        Err(error) => {
            warn!(%error, "store error during enrollment");
            return refuse("the hub could not check the token; try again");
        }
    }
    let fp = wingman_agent::tls::fingerprint(&cert_der);
    let hostname: String = req.hostname.chars().take(253).collect();
    let row = AgentRow {
        id: agent_id.clone(),
        hostname: hostname.clone(),
        kind: req.host_kind.as_str().to_string(),
        agent_version: req.agent_version.chars().take(64).collect(),
        enrolled_at: now,
        revoked_at: None,
        last_seen: None,
        online: false,
        cert_not_after: not_after,
    };
    if let Err(error) = hub.store.create_agent(&row, &fp).await {
        warn!(%error, "store error while recording a new agent");
        return refuse("the hub could not record the agent; create a new token and try again");
    }
    hub.registry.add_cert(fp, agent_id.clone());
    info!(%agent_id, %hostname, %remote, "agent enrolled");
    EnrollResponse::EnrolledWithKey {
        agent_id,
        cert_der,
        not_after_ms: not_after,
        command_key: hub.pki.command_public_key(),
    }
}

async fn write(send: &mut quinn::SendStream, msg: &HubMessage) -> Result<(), String> {
    let frame = wingman_protocol::encode(msg).map_err(|e| e.to_string())?;
    send.write_all(&frame).await.map_err(|e| e.to_string())
}

enum Read {
    Msg(Box<AgentMessage>),
    End,
    Malformed(String),
}

async fn read(recv: &mut quinn::RecvStream, decoder: &mut FrameDecoder) -> Result<Read, String> {
    loop {
        match decoder.next_frame::<AgentMessage>() {
            Ok(Some(m)) => return Ok(Read::Msg(Box::new(m))),
            Ok(None) => {}
            Err(e) => return Ok(Read::Malformed(e.to_string())),
        }
        let mut buf = vec![0u8; decoder.wanted().clamp(4, 64 * 1024)];
        match recv.read(&mut buf).await.map_err(|e| e.to_string())? {
            None => return Ok(Read::End),
            Some(n) => decoder.push(buf.get(..n).unwrap_or_default()),
        }
    }
}

async fn session(
    hub: &Hub,
    conn: &quinn::Connection,
    agent_id: &str,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let (mut send, mut recv) = tokio::time::timeout(Duration::from_secs(10), conn.accept_bi())
        .await
        .map_err(|_| "no stream opened".to_string())?
        .map_err(|e| e.to_string())?;
    let mut decoder = FrameDecoder::new();
    let protocol_error = |reason: String| {
        conn.close(close_code::PROTOCOL.into(), b"malformed frame");
        reason
    };
    let hello = match tokio::time::timeout(Duration::from_secs(10), read(&mut recv, &mut decoder))
        .await
        .map_err(|_| "no hello".to_string())??
    {
        Read::Msg(m) => match *m {
            AgentMessage::Hello(h) => h,
            _ => return Err(protocol_error("first message was not hello".into())),
        },
        Read::End => return Err("stream ended before hello".into()),
        Read::Malformed(e) => return Err(protocol_error(format!("malformed hello: {e}"))),
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        let reason = format!(
            "protocol version {} is not supported (the hub speaks {PROTOCOL_VERSION})",
            hello.protocol_version
        );
        write(
            &mut send,
            &HubMessage::Refused(Refused {
                reason: reason.clone(),
            }),
        )
        .await?;
        let _ = send.finish();
        return Err(reason);
    }
    let now = wingman_agent::now_ms();
    let hostname: String = hello.hostname.chars().take(253).collect();
    let version: String = hello.agent_version.chars().take(64).collect();
    hub.store
        .agent_connected(agent_id, &hostname, hello.host_kind.as_str(), &version, now)
        .await
        .map_err(|e| e.to_string())?;
    let committed = hub
        .store
        .committed_seq(agent_id, hello.stream_id)
        .await
        .map_err(|e| e.to_string())?;
    write(
        &mut send,
        &HubMessage::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            agent_id: agent_id.to_string(),
            hub_version: env!("CARGO_PKG_VERSION").to_string(),
            heartbeat_interval_ms: hub.config.agents.heartbeat_interval_ms,
            committed_seq: committed,
        }),
    )
    .await?;
    info!(%agent_id, %hostname, kind = hello.host_kind.as_str(), committed, "agent connected");
    // The audit head goes to the agent now and after every append; it keeps it.
    let mut audit_head = hub.audit.subscribe_head();
    let first_head = audit_head.borrow_and_update().clone();
    if let Some(h) = first_head {
        write(
            &mut send,
            &HubMessage::AuditHead(wingman_protocol::AuditHead {
                seq: h.seq,
                hash: h.hash,
            }),
        )
        .await?;
    }
    let mut mapper = crate::signal_map::FactMapper::default();
    hub.incidents.submit(vec![
        crate::engine::Signal::new(
            now,
            crate::engine::SignalBody::NodeRegistered {
                node: hostname.clone(),
            },
        ),
        crate::engine::Signal::new(
            now,
            crate::engine::SignalBody::NodeOnline {
                node: hostname.clone(),
            },
        ),
    ]);
    // Commands for this agent arrive here (bounded; senders wait when full).
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<PendingCommand>(16);
    if let Ok(mut m) = hub.registry.commands.lock() {
        m.insert(agent_id.to_string(), cmd_tx);
    }
    let mut pending: BTreeMap<u64, oneshot::Sender<AgentReply>> = BTreeMap::new();
    let mut next_cmd: u64 = 1;
    let mut busy_from: Option<u64> = None;
    let mut commits: std::collections::VecDeque<InFlight> = std::collections::VecDeque::new();
    loop {
        let msg = tokio::select! {
            () = shutdown.cancelled() => {
                conn.close(close_code::SHUTDOWN.into(), b"hub shutting down");
                return Ok(());
            }
            cmd = cmd_rx.recv() => {
                let Some(cmd) = cmd else { continue };
                let id = next_cmd;
                next_cmd += 1;
                pending.retain(|_, r| !r.is_closed());
                pending.insert(id, cmd.reply);
                let msg = match cmd.body {
                    Outgoing::Plain(body) => HubMessage::Command(Command { id, body }),
                    Outgoing::Signed(mut signed) => {
                        signed.id = id;
                        HubMessage::Signed(*signed)
                    }
                };
                write(&mut send, &msg).await?;
                continue;
            }
            changed = audit_head.changed() => {
                if changed.is_err() {
                    continue;
                }
                let head = audit_head.borrow_and_update().clone();
                if let Some(h) = head {
                    write(&mut send, &HubMessage::AuditHead(wingman_protocol::AuditHead { seq: h.seq, hash: h.hash })).await?;
                }
                continue;
            }
            done = next_commit(&mut commits), if !commits.is_empty() => {
                let Some(f) = commits.pop_front() else { continue };
                let outcome = match done {
                    Ok(o) => o,
                    Err(e) => {
                        // Nothing is acknowledged; the agent replays after reconnecting.
                        hub.metrics.record(agent_id, BatchOutcome::Error);
                        warn!(%agent_id, seq = f.seq, error = %e, "cannot commit a fact batch; closing the session");
                        return Err(e.to_string());
                    }
                };
                if f.seq == 0 {
                    hub.metrics.record(agent_id, BatchOutcome::Ephemeral);
                    continue;
                }
                if outcome.duplicate {
                    hub.metrics.record(agent_id, BatchOutcome::Duplicate);
                } else {
                    hub.metrics.record(
                        agent_id,
                        BatchOutcome::Committed {
                            facts: f.facts.len() as u64,
                            micros: u64::try_from(f.started.elapsed().as_micros()).unwrap_or(u64::MAX),
                            seq: outcome.committed_seq,
                        },
                    );
                    hub.incidents.submit(mapper.map(&hostname, &f.facts));
                }
                // Ack only after the commit above.
                write(
                    &mut send,
                    &HubMessage::Ack(Ack { stream_id: f.stream_id, seq: outcome.committed_seq }),
                )
                .await?;
                continue;
            }
            r = read(&mut recv, &mut decoder), if commits.len() < MAX_SESSION_COMMITS => r?,
        };
        let msg = match msg {
            Read::Msg(m) => *m,
            Read::End => return Ok(()),
            Read::Malformed(e) => return Err(protocol_error(format!("malformed frame: {e}"))),
        };
        if hub.registry.is_revoked(agent_id) {
            conn.close(close_code::REVOKED.into(), b"agent revoked");
            return Err("agent revoked".into());
        }
        match msg {
            AgentMessage::Heartbeat(_) => {
                hub.store
                    .touch_agent(agent_id, wingman_agent::now_ms())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            AgentMessage::Facts(batch) => {
                if batch.stream_id != hello.stream_id {
                    return Err(protocol_error(
                        "batch for a stream not announced in hello".into(),
                    ));
                }
                // After a busy reply the agent sends again from the refused seq;
                // later batches already in flight are refused too, so the
                // stream is committed in order and nothing is skipped.
                let refused_earlier = busy_from.is_some_and(|b| batch.seq != 0 && batch.seq != b);
                let queued = if refused_earlier {
                    None
                } else {
                    let (records, templates) = ingest_records(hub, &batch.facts);
                    hub.ingest
                        .try_submit(crate::store::IngestItem {
                            agent_id: agent_id.to_string(),
                            stream_id: batch.stream_id,
                            seq: batch.seq,
                            facts: records,
                            templates,
                        })
                        .ok()
                };
                let Some(committed) = queued else {
                    if batch.seq == 0 {
                        // Current-state facts: the next report replaces them.
                        continue;
                    }
                    busy_from = Some(busy_from.unwrap_or(batch.seq));
                    hub.metrics.record(agent_id, BatchOutcome::Busy);
                    write(
                        &mut send,
                        &HubMessage::Busy(Busy {
                            seq: batch.seq,
                            retry_after_ms: hub.config.agents.busy_retry_ms,
                        }),
                    )
                    .await?;
                    continue;
                };
                if busy_from == Some(batch.seq) {
                    busy_from = None;
                }
                // The commit completes in the writer; the session reads on
                // (pipelining) and acks in order as commits finish.
                commits.push_back(InFlight {
                    seq: batch.seq,
                    stream_id: batch.stream_id,
                    facts: batch.facts,
                    reply: committed,
                    started: std::time::Instant::now(),
                });
            }
            AgentMessage::Renew(req) => {
                let now = wingman_agent::now_ms();
                let resp = match hub.pki.sign_agent_csr(
                    &req.csr_der,
                    agent_id,
                    hub.config.agents.cert_lifetime_secs,
                    now,
                ) {
                    Ok((cert_der, not_after)) => {
                        let fp = wingman_agent::tls::fingerprint(&cert_der);
                        hub.store
                            .add_certificate(agent_id, &fp, now, not_after)
                            .await
                            .map_err(|e| e.to_string())?;
                        hub.registry.add_cert(fp, agent_id.to_string());
                        info!(%agent_id, not_after, "certificate renewed");
                        RenewResponse::Issued {
                            cert_der,
                            not_after_ms: not_after,
                        }
                    }
                    Err(e) => RenewResponse::Refused {
                        reason: e.to_string(),
                    },
                };
                write(&mut send, &HubMessage::Renewed(resp)).await?;
            }
            AgentMessage::CommandResult(r) => {
                debug!(%agent_id, id = r.id, ok = r.ok, "command result");
                if let Some(tx) = pending.remove(&r.id) {
                    let _ = tx.send(AgentReply::Result(r));
                }
            }
            AgentMessage::ActionOutcome(o) => {
                info!(%agent_id, id = o.id, ok = o.result.ok, refused = o.result.refused, "action outcome");
                if let Some(tx) = pending.remove(&o.id) {
                    let _ = tx.send(AgentReply::Action(o));
                }
            }
            AgentMessage::AuditHeadKept(kept) => {
                if let Err(problem) = hub.audit.check_kept_head(agent_id, &kept).await {
                    warn!(%agent_id, %problem, "agent holds an audit head the chain does not");
                }
            }
            AgentMessage::Hello(_) => {
                return Err(protocol_error("second hello".into()));
            }
        }
    }
}

/// Batches of one session queued for commit but not yet acknowledged.
const MAX_SESSION_COMMITS: usize = 64;

/// A batch of this session waiting for the ingest writer.
struct InFlight {
    seq: u64,
    stream_id: u64,
    facts: Vec<Fact>,
    reply: oneshot::Receiver<crate::store::StoreResult<crate::store::IngestOutcome>>,
    started: std::time::Instant,
}

/// The outcome of the oldest queued commit (commits finish in queue order).
async fn next_commit(
    commits: &mut std::collections::VecDeque<InFlight>,
) -> crate::store::StoreResult<crate::store::IngestOutcome> {
    match commits.front_mut() {
        Some(f) => match (&mut f.reply).await {
            Ok(r) => r,
            Err(_) => Err(crate::store::StoreError::Backend(
                "the ingest writer stopped".into(),
            )),
        },
        None => std::future::pending().await,
    }
}

fn fact_json(body: &FactBody) -> String {
    let inner = match body {
        FactBody::Host(h) => serde_json::to_string(h),
        FactBody::LogSummary(s) => serde_json::to_string(s),
        FactBody::Gap(g) => serde_json::to_string(g),
        FactBody::AgentHealth(h) => serde_json::to_string(h),
        FactBody::ContainerInventory(i) => serde_json::to_string(i),
        FactBody::ContainerEvent(e) => serde_json::to_string(e),
        FactBody::RestartLoop(r) => serde_json::to_string(r),
        FactBody::DockerStatus(d) => serde_json::to_string(d),
        FactBody::Pve(p) => serde_json::to_string(p),
        FactBody::Pressure(p) => serde_json::to_string(p),
        FactBody::AgentPolicy(p) => serde_json::to_string(p),
    };
    inner.unwrap_or_else(|_| "null".into())
}

/// Turns a batch into store records. Log templates get a second redaction
/// scan here (defence in depth: the agent already redacted and masked them).
fn ingest_records(hub: &Hub, facts: &[Fact]) -> (Vec<FactRecord>, Vec<TemplateRecord>) {
    let mut records = Vec::with_capacity(facts.len());
    let mut templates = Vec::new();
    for f in facts {
        let mut body = f.body.clone();
        if let FactBody::LogSummary(summary) = &mut body {
            let mut rescanned = 0u32;
            for t in &mut summary.templates {
                if hub.redactor.contains_secret(t.template.as_str()) {
                    let (clean, _) = MaskedTemplate::mask(t.template.as_str(), &hub.redactor);
                    t.template = clean;
                    rescanned += 1;
                }
                templates.push(TemplateRecord {
                    source_kind: summary.source.kind.as_str().to_string(),
                    source_name: summary.source.name.chars().take(512).collect(),
                    template_id: t.template_id,
                    template: t.template.as_str().chars().take(4096).collect(),
                    severity: i64::from(t.severity.priority()),
                    count: i64::from(t.count),
                    burst: t.burst,
                    first_seen: t.first_seen_ms,
                    last_seen: t.last_seen_ms,
                });
            }
            if rescanned > 0 {
                warn!(
                    rescanned,
                    "hub redaction scan changed templates an agent sent"
                );
            }
        }
        records.push(FactRecord {
            kind: body.kind().to_string(),
            observed_at: f.observed_at_ms,
            latest: matches!(
                body,
                FactBody::Host(_)
                    | FactBody::Pressure(_)
                    | FactBody::AgentPolicy(_)
                    | FactBody::AgentHealth(_)
                    | FactBody::ContainerInventory(_)
                    | FactBody::DockerStatus(_)
                    | FactBody::Pve(
                        wingman_protocol::pve::PveFact::Node(_)
                            | wingman_protocol::pve::PveFact::Cluster(_)
                            | wingman_protocol::pve::PveFact::Ha(_)
                            | wingman_protocol::pve::PveFact::Updates(_)
                            | wingman_protocol::pve::PveFact::Status(_)
                    )
            ),
            body: fact_json(&body),
        });
    }
    (records, templates)
}

/// Marks nodes offline after missed heartbeats. Runs until `shutdown`.
pub async fn presence_loop(hub: Hub, shutdown: CancellationToken) {
    let timeout = i64::try_from(hub.config.agents.offline_after_ms).unwrap_or(i64::MAX);
    let every = Duration::from_millis((hub.config.agents.offline_after_ms / 4).clamp(100, 5_000));
    let mut tick = tokio::time::interval(every);
    let mut overdue = std::collections::HashSet::new();
    let mut next_cert_check = 0i64;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = wingman_agent::now_ms();
        if now >= next_cert_check {
            // Every 5 min, or a tenth of a (test-sized) certificate lifetime.
            let lifetime = i64::try_from(hub.config.agents.cert_lifetime_secs).unwrap_or(i64::MAX);
            next_cert_check = now + (lifetime.saturating_mul(100)).clamp(1_000, 300_000);
            hub.incidents
                .submit(agent_cert_signals(&hub, now, &mut overdue).await);
        }
        match hub.store.mark_stale_offline(now - timeout, now).await {
            Ok(ids) => {
                let mut signals = Vec::new();
                for agent_id in ids {
                    info!(%agent_id, "node offline: heartbeats missed");
                    if let Ok(Some(a)) = hub.store.get_agent(&agent_id).await
                        && a.revoked_at.is_none()
                    {
                        signals.push(crate::engine::Signal::new(
                            now,
                            crate::engine::SignalBody::NodeOffline { node: a.hostname },
                        ));
                    }
                }
                hub.incidents.submit(signals);
            }
            Err(error) => warn!(%error, "presence sweep failed"),
        }
    }
}

/// Certificate-expiry signals for agents whose certificate renewal is
/// overdue: agents renew at 60-75% of the lifetime, so one with less than
/// 20% left has failed to; once it renews, one more signal clears it.
async fn agent_cert_signals(
    hub: &Hub,
    now: i64,
    overdue: &mut std::collections::HashSet<String>,
) -> Vec<crate::engine::Signal> {
    let lifetime_ms = i64::try_from(hub.config.agents.cert_lifetime_secs.saturating_mul(1000))
        .unwrap_or(i64::MAX);
    let Ok(agents) = hub.store.list_agents().await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for a in agents.iter().filter(|a| a.revoked_at.is_none()) {
        let late = a.cert_not_after - now < lifetime_ms / 5;
        if late || overdue.contains(&a.id) {
            if late {
                overdue.insert(a.id.clone());
                warn!(agent_id = %a.id, not_after_ms = a.cert_not_after, "agent certificate renewal is overdue");
            } else {
                overdue.remove(&a.id);
            }
            out.push(crate::engine::Signal::new(
                now,
                crate::engine::SignalBody::CertExpiry {
                    node: a.hostname.clone(),
                    subject: "wingman agent certificate".into(),
                    not_after_ms: a.cert_not_after,
                },
            ));
        }
    }
    out
}

/// Picks up revocations made by other processes (the CLI) and closes the
/// revoked agents' connections. Runs until `shutdown`.
pub async fn revocation_loop(hub: Hub, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match hub.store.revoked_agents().await {
            Ok(ids) => {
                for id in ids {
                    if !hub.registry.is_revoked(&id) {
                        let closed = hub.registry.revoke(&id);
                        info!(agent_id = %id, closed, "agent revoked; connections closed");
                    }
                }
            }
            Err(error) => warn!(%error, "revocation sweep failed"),
        }
    }
}
