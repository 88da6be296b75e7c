//! The incident engine's async shell. One task owns the pure
//! [`crate::engine::Engine`]: it receives signals (mapped from committed
//! facts and presence changes) and operator commands over a bounded channel,
//! drives the engine's timers, persists every incident change, and pushes
//! updates to open dashboards (server-sent events).
//!
//! Overflow policy of the signal channel: drop the newest batch and count it
//! (`signals_dropped`), so ingest never blocks on the engine; the engine
//! itself handles well over 10k signals/s, so this is a last resort.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wingman_protocol::docker::ContainerEventKind as DockerEventKind;
use wingman_protocol::pve::PveFact;
use wingman_protocol::{Fact, FactBody};

use crate::Hub;
use crate::engine::{
    Action, Command, ContainerEventKind, Engine, EngineConfig, FsSample, Incident, LogSourceKind,
    Signal, SignalBody,
};
use crate::store::IncidentRow;

/// What the engine task receives.
#[derive(Debug)]
pub enum EngineInput {
    /// Signals to handle in order.
    Signals(Vec<Signal>),
    /// An operator command and where to send its outcome.
    Command(Command, oneshot::Sender<Result<(), String>>),
}

/// A change pushed to open dashboards.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentEvent {
    /// Incident id.
    pub id: String,
    /// open, acknowledged or resolved.
    pub state: String,
    /// info, warning or critical.
    pub severity: String,
    /// Title.
    pub title: String,
    /// Hub time of the change, ms.
    pub at_ms: i64,
}

/// Handle to the engine task; cheap to clone.
#[derive(Debug, Clone)]
pub struct Incidents {
    tx: mpsc::Sender<EngineInput>,
    /// Incident changes, for server-sent events (lagging receivers skip).
    pub events: broadcast::Sender<IncidentEvent>,
    dropped: Arc<AtomicU64>,
}

impl Incidents {
    /// Creates the handle and the receiver the engine task consumes.
    pub fn new() -> (Self, mpsc::Receiver<EngineInput>) {
        let (tx, rx) = mpsc::channel(1024);
        let (events, _) = broadcast::channel(256);
        (
            Self {
                tx,
                events,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    /// Queues signals; never waits (overflow: dropped and counted).
    pub fn submit(&self, signals: Vec<Signal>) {
        if signals.is_empty() {
            return;
        }
        if self.tx.try_send(EngineInput::Signals(signals)).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            warn!(
                dropped_batches = n,
                "incident engine is behind; signal batch dropped"
            );
        }
    }

    /// Signal batches dropped because the engine was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Runs an operator command (acknowledge, resolve, reopen).
    pub async fn command(&self, cmd: Command) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(EngineInput::Command(cmd, tx))
            .await
            .map_err(|_| "the incident engine is not running".to_string())?;
        match tokio::time::timeout(Duration::from_secs(5), rx).await {
            Ok(Ok(r)) => r,
            _ => Err("the incident engine did not answer".to_string()),
        }
    }
}

/// The store row of an incident.
pub fn row(i: &Incident) -> IncidentRow {
    IncidentRow {
        id: i.id.clone(),
        fingerprint: i.fingerprint.clone(),
        state: i.state.as_str().to_string(),
        severity: i.severity.as_str().to_string(),
        title: i.title.clone(),
        nodes: i.nodes.join(","),
        opened_at: i.opened_at_ms,
        updated_at: i.updated_at_ms,
        resolved_at: i.resolved_at_ms,
        body: serde_json::to_string(i).unwrap_or_else(|_| "{}".into()),
    }
}

/// Maps committed facts of one node to engine signals.
pub fn signals_from_facts(node: &str, facts: &[Fact]) -> Vec<Signal> {
    let n = || node.to_string();
    let pct = |used: u64, total: u64| {
        if total == 0 {
            0.0
        } else {
            (used as f64 / total as f64 * 100.0) as f32
        }
    };
    let mut out = Vec::new();
    for f in facts {
        let at = f.observed_at_ms;
        match &f.body {
            FactBody::Host(h) => out.push(Signal::new(
                at,
                SignalBody::HostSample {
                    node: n(),
                    cpu_pct: h.cpu_usage_pct,
                    mem_pct: pct(h.mem_used, h.mem_total),
                    swap_pct: pct(h.swap_used, h.swap_total),
                    load1: h.load[0],
                    cpu_count: h.cpu_count,
                    iowait_pct: None,
                    filesystems: h
                        .filesystems
                        .iter()
                        .map(|fs| FsSample {
                            mount: fs.mount.clone(),
                            total_bytes: fs.total,
                            avail_bytes: fs.available,
                        })
                        .collect(),
                },
            )),
            FactBody::LogSummary(s) => {
                let kind = match s.source.kind {
                    wingman_protocol::logs::LogSourceKind::Journal => LogSourceKind::Journal,
                    wingman_protocol::logs::LogSourceKind::File => LogSourceKind::File,
                    wingman_protocol::logs::LogSourceKind::Container => LogSourceKind::Container,
                };
                for t in &s.templates {
                    out.push(Signal::new(
                        t.last_seen_ms,
                        SignalBody::LogTemplate {
                            node: n(),
                            source_kind: kind,
                            source: s.source.name.clone(),
                            template_id: t.template_id,
                            template: t.template.as_str().to_string(),
                            count: t.count,
                            severity: t.severity.priority(),
                            new_template: t.new_template,
                            burst: t.burst,
                        },
                    ));
                }
            }
            FactBody::ContainerEvent(e) => {
                let kind = match e.kind {
                    DockerEventKind::Die => ContainerEventKind::Die,
                    DockerEventKind::Oom => ContainerEventKind::Oom,
                    DockerEventKind::Restart => ContainerEventKind::Restart,
                    DockerEventKind::Start => ContainerEventKind::Start,
                    DockerEventKind::Stop => ContainerEventKind::Stop,
                    DockerEventKind::Kill => ContainerEventKind::Kill,
                    DockerEventKind::Destroy => ContainerEventKind::Destroy,
                    DockerEventKind::HealthStatus => match e.health.as_deref() {
                        Some("unhealthy") => ContainerEventKind::Unhealthy,
                        Some("healthy") => ContainerEventKind::Healthy,
                        _ => ContainerEventKind::Other,
                    },
                };
                out.push(Signal::new(
                    e.at_ms,
                    SignalBody::ContainerEvent {
                        node: n(),
                        container: e.name.clone(),
                        kind,
                        exit_code: e.exit_code,
                    },
                ));
            }
            FactBody::RestartLoop(r) => out.push(Signal::new(
                at,
                SignalBody::ContainerRestartLoop {
                    node: n(),
                    container: r.name.clone(),
                    restarts: r.restarts,
                    window_s: r.window_s,
                },
            )),
            FactBody::Pve(PveFact::Task(t)) if t.status.is_finished() => {
                let status = t.status.to_string();
                out.push(Signal::new(
                    t.end_ms.unwrap_or(at),
                    SignalBody::TaskFinished {
                        node: n(),
                        upid: t.upid.to_string(),
                        task_type: t.upid.task_type.clone(),
                        guest_id: t.upid.id.parse().ok(),
                        ok: t.status.is_success(),
                        status_text: status,
                    },
                ));
            }
            _ => {}
        }
    }
    out
}

/// Runs the engine until `shutdown`.
pub async fn run(hub: Hub, mut rx: mpsc::Receiver<EngineInput>, shutdown: CancellationToken) {
    let mut engine = Engine::new(EngineConfig::default());
    let now = wingman_agent::now_ms();
    match hub.store.live_incidents(now - 7 * 86_400_000).await {
        Ok(rows) => {
            let restored: Vec<Incident> = rows
                .iter()
                .filter_map(|r| serde_json::from_str(&r.body).ok())
                .collect();
            info!(incidents = restored.len(), "incidents restored");
            engine.restore(restored);
        }
        Err(error) => warn!(%error, "cannot load incidents; starting empty"),
    }
    if let Ok(agents) = hub.store.list_agents().await {
        for a in agents.iter().filter(|a| a.revoked_at.is_none()) {
            engine.handle_signal(
                now,
                Signal::new(
                    now,
                    SignalBody::NodeRegistered {
                        node: a.hostname.clone(),
                    },
                ),
            );
        }
    }
    loop {
        let wake = engine.poll_timeout();
        let sleep = async {
            match wake {
                Some(t) => {
                    let ms = (t - wingman_agent::now_ms()).max(0);
                    tokio::time::sleep(Duration::from_millis(u64::try_from(ms).unwrap_or(0))).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            input = rx.recv() => {
                let Some(input) = input else { return };
                let now = wingman_agent::now_ms();
                match input {
                    EngineInput::Signals(signals) => {
                        for s in signals {
                            engine.handle_signal(now, s);
                        }
                    }
                    EngineInput::Command(cmd, reply) => {
                        let r = engine.handle_command(now, cmd).map_err(|e| e.to_string());
                        let _ = reply.send(r);
                    }
                }
            }
            () = sleep => engine.handle_timeout(wingman_agent::now_ms()),
        }
        while let Some(action) = engine.poll_action() {
            let incident = match action {
                Action::IncidentOpened(i)
                | Action::IncidentUpdated(i)
                | Action::IncidentResolved(i)
                | Action::IncidentReopened(i) => i,
                Action::Notify(n) => {
                    info!(incident = %n.incident_id, severity = n.severity.as_str(), kind = ?n.kind, "incident notification");
                    continue;
                }
            };
            if let Err(error) = hub.store.upsert_incident(&row(&incident)).await {
                warn!(%error, incident = %incident.id, "cannot store incident");
            }
            let _ = hub.incidents.events.send(IncidentEvent {
                id: incident.id.clone(),
                state: incident.state.as_str().to_string(),
                severity: incident.severity.as_str().to_string(),
                title: incident.title.clone(),
                at_ms: incident.updated_at_ms,
            });
        }
    }
}
