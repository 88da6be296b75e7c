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

use crate::Hub;
use crate::engine::{Action, Command, Engine, Incident, Signal, SignalBody};
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

pub use crate::signal_map::{FactMapper, signals_from_facts};

/// The notifier's view of an engine notification.
fn notify_event(engine: &Engine, n: &crate::engine::Notification) -> crate::notify::IncidentEvent {
    use crate::engine::NotifyKind;
    use crate::notify::Transition;
    let incident = engine.incident(&n.incident_id);
    crate::notify::IncidentEvent {
        incident: crate::notify::Incident {
            id: n.incident_id.clone(),
            title: n.title.clone(),
            severity: n.severity,
            nodes: incident.map(|i| i.nodes.clone()).unwrap_or_default(),
            narrative: incident.map(|i| i.narrative.clone()).unwrap_or_default(),
            // Filled in by the notification task from its `dashboard_url`.
            url: None,
        },
        transition: match n.kind {
            NotifyKind::Opened => Transition::Opened,
            NotifyKind::Escalated => Transition::Escalated,
            NotifyKind::Reopened => Transition::Reopened,
            NotifyKind::Resolved => Transition::Resolved,
        },
    }
}

/// Runs the engine until `shutdown`.
pub async fn run(hub: Hub, mut rx: mpsc::Receiver<EngineInput>, shutdown: CancellationToken) {
    let mut engine = Engine::new(hub.config.incidents.clone());
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
                    hub.notify.event(notify_event(&engine, &n));
                    continue;
                }
            };
            if let Err(error) = hub.store.upsert_incident(&row(&incident)).await {
                warn!(%error, incident = %incident.id, "cannot store incident");
            }
            if let Some(m) = &hub.memory {
                // The outcome record says what was done through plans.
                let lines = if incident.state == crate::engine::IncidentState::Resolved {
                    hub.control.outcome_lines(&incident.id).await
                } else {
                    Vec::new()
                };
                m.index_incident(&incident, &lines);
            }
            // Never waits: a full reasoner queue drops by its overflow policy.
            hub.reasoner.offer(&incident);
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
