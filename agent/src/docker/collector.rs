//! The agent-side shell of the Docker/Podman integration: runs the event
//! task, turns its output into facts for the link, and follows the logs of
//! running containers into the log pipeline (summaries only; resume positions
//! are engine timestamps, persisted once the hub acknowledged them).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use wingman_protocol::logs::{LogSource, LogSourceKind};
use wingman_protocol::{Fact, FactBody};

use super::{ContainerRunState, DockerConfig, DockerOutput, LogStart, follow_logs, run_events};
use crate::config::DockerSection;
use crate::logs::sources::{LogBatch, SourceEvent, SourceLine};

/// Cursor-store key of a container's log position.
pub fn container_key(name: &str) -> String {
    format!("container:{name}")
}

fn fact(body: FactBody) -> Fact {
    Fact {
        observed_at_ms: crate::now_ms(),
        body,
    }
}

/// Starts the integration. Facts go to `batches`; container log lines go to
/// `lines` (the log pipeline) when `cfg.container_logs` is set.
pub fn spawn(
    cfg: &DockerSection,
    saved: &BTreeMap<String, String>,
    batches: mpsc::Sender<LogBatch>,
    lines: Option<mpsc::Sender<SourceEvent>>,
    shutdown: CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel::<DockerOutput>(256);
    let dcfg = DockerConfig {
        socket: cfg.socket.clone(),
        ..DockerConfig::default()
    };
    tokio::spawn(run_events(dcfg, tx, shutdown.clone()));
    let saved = saved.clone();
    let socket = cfg.socket.clone();
    let follow = cfg.container_logs;
    tokio::spawn(async move {
        let mut followers: BTreeMap<String, JoinHandle<()>> = BTreeMap::new();
        loop {
            let out = tokio::select! {
                () = shutdown.cancelled() => break,
                o = rx.recv() => o,
            };
            let Some(out) = out else { break };
            if let (DockerOutput::Inventory(inv), Some(lines)) = (&out, lines.as_ref())
                && follow
            {
                followers.retain(|_, h| !h.is_finished());
                let running: BTreeSet<String> = inv
                    .containers
                    .iter()
                    .filter(|c| c.state == ContainerRunState::Running)
                    .map(|c| c.name.clone())
                    .collect();
                for name in running {
                    if followers.contains_key(&name) {
                        continue;
                    }
                    let start = saved
                        .get(&container_key(&name))
                        .and_then(|p| p.parse::<i64>().ok())
                        .map_or(LogStart::Now, LogStart::SinceNs);
                    let handle = tokio::spawn(follow_container(
                        socket.clone(),
                        name.clone(),
                        start,
                        lines.clone(),
                        shutdown.clone(),
                    ));
                    followers.insert(name, handle);
                }
            }
            let body = match out {
                DockerOutput::Inventory(i) => FactBody::ContainerInventory(i),
                DockerOutput::Event(e) => FactBody::ContainerEvent(e),
                DockerOutput::RestartLoop(r) => FactBody::RestartLoop(r),
                DockerOutput::Status(s) => FactBody::DockerStatus(s),
            };
            let batch = LogBatch {
                facts: vec![fact(body)],
                checkpoint: Vec::new(),
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                r = batches.send(batch) => if r.is_err() { break },
            }
        }
        for (_, h) in followers {
            h.abort();
        }
    });
}

async fn follow_container(
    socket: Option<std::path::PathBuf>,
    name: String,
    start: LogStart,
    lines: mpsc::Sender<SourceEvent>,
    shutdown: CancellationToken,
) {
    let engine = match super::connect(socket.as_deref(), Duration::from_secs(10)).await {
        Ok(e) => e,
        Err(error) => {
            warn!(container = %name, %error, "cannot follow container logs");
            return;
        }
    };
    let source = LogSource {
        kind: LogSourceKind::Container,
        name: name.clone(),
    };
    let mut stream = Box::pin(follow_logs(&engine.docker, &name, start));
    let mut batch: Vec<SourceLine> = Vec::new();
    let mut last_ns: Option<i64> = None;
    let mut flush_at = tokio::time::Instant::now() + Duration::from_millis(200);
    loop {
        let item = tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep_until(flush_at), if !batch.is_empty() => None,
            i = stream.next() => match i {
                Some(i) => Some(i),
                None => {
                    // The container stopped; flush and end (a new inventory restarts us).
                    if !batch.is_empty() {
                        let _ = send(&lines, &name, &source, &mut batch, last_ns).await;
                    }
                    debug!(container = %name, "container log stream ended");
                    return;
                }
            },
        };
        match item {
            Some(Ok(line)) => {
                last_ns = Some(line.ts_ns);
                batch.push(SourceLine {
                    source: source.clone(),
                    ts_ms: line.ts_ms,
                    severity: None,
                    bytes: line.line,
                });
                if batch.len() < 256 {
                    continue;
                }
            }
            Some(Err(error)) => {
                warn!(container = %name, %error, "container log stream failed");
                return;
            }
            None => {}
        }
        if !send(&lines, &name, &source, &mut batch, last_ns).await {
            return;
        }
        flush_at = tokio::time::Instant::now() + Duration::from_millis(200);
    }
}

async fn send(
    lines: &mpsc::Sender<SourceEvent>,
    name: &str,
    source: &LogSource,
    batch: &mut Vec<SourceLine>,
    last_ns: Option<i64>,
) -> bool {
    let ev = SourceEvent {
        key: container_key(name),
        position: last_ns.map(|n| n.to_string()),
        lines: std::mem::take(batch),
        unparsable: 0,
        source: source.clone(),
        examples: false,
        raw: false,
    };
    lines.send(ev).await.is_ok()
}
