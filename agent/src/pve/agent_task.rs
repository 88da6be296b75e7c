//! The agent-side shell of the Proxmox VE integration: follows the task
//! directory (event-driven: a task ending triggers a sweep), sweeps the local
//! API on an interval, and turns everything into facts for the link.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wingman_protocol::pve::{PveFact, PveProblem, PveStatus};
use wingman_protocol::{Fact, FactBody};

use super::client::{PveClient, PveClientConfig, parse_fingerprint};
use super::collect::{Collector, CollectorConfig};
use super::tasks::{StartAt, TaskDirFollower, run_follower};
use crate::config::ProxmoxSection;
use crate::logs::sources::LogBatch;

fn batch(facts: Vec<PveFact>) -> LogBatch {
    let now = crate::now_ms();
    LogBatch {
        facts: facts
            .into_iter()
            .map(|f| Fact {
                observed_at_ms: now,
                body: FactBody::Pve(f),
            })
            .collect(),
        checkpoint: Vec::new(),
    }
}

fn status(node: &str, message: String) -> PveFact {
    PveFact::Status(PveStatus {
        node: node.to_string(),
        reachable: false,
        problem: PveProblem::BadResponse,
        endpoint: None,
        message,
    })
}

/// Starts the integration; facts go to `batches`.
pub fn spawn(
    cfg: &ProxmoxSection,
    node: String,
    state_dir: &std::path::Path,
    batches: mpsc::Sender<LogBatch>,
    shutdown: CancellationToken,
) {
    let cfg = cfg.clone();
    let state_path = state_dir.join("pve-tasks.json");
    tokio::spawn(async move {
        let client = match (
            cfg.token_id.as_deref(),
            cfg.token_secret.as_ref(),
            cfg.fingerprint
                .as_deref()
                .and_then(|f| parse_fingerprint(f).ok()),
        ) {
            (Some(id), Some(secret), Some(fp)) => {
                let mut c = PveClientConfig::new(id, secret.expose(), fp);
                c.base_url = cfg.base_url.clone();
                match PveClient::new(&c) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        let _ = batches
                            .send(batch(vec![status(&node, e.to_string())]))
                            .await;
                        None
                    }
                }
            }
            _ => {
                let msg = "the Proxmox API is not configured: set [proxmox] token_id, token_secret and fingerprint in agent.toml".to_string();
                warn!("{msg}");
                let _ = batches.send(batch(vec![status(&node, msg)])).await;
                None
            }
        };
        let (task_tx, mut task_rx) = mpsc::channel(256);
        let follower = TaskDirFollower::new(cfg.tasks_dir.clone(), Some(state_path), StartAt::End);
        tokio::spawn(run_follower(
            follower,
            Duration::from_secs(2),
            task_tx,
            shutdown.clone(),
        ));
        let mut collector = Collector::new(CollectorConfig {
            task_dir: Some(cfg.tasks_dir.clone()),
            ..CollectorConfig::new(node.clone())
        });
        let mut tick = tokio::time::interval(Duration::from_secs(cfg.interval_secs.max(5)));
        info!(%node, api = client.is_some(), "following Proxmox VE");
        loop {
            let facts = tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => match &client {
                    Some(c) => collector.sweep(c).await,
                    None => Vec::new(),
                },
                t = task_rx.recv() => {
                    let Some(task) = t else { return };
                    let mut facts: Vec<PveFact> = collector
                        .backup_outcomes(client.as_ref(), &task)
                        .await
                        .into_iter()
                        .map(PveFact::Backup)
                        .collect();
                    let finished = task.status.is_finished();
                    collector.note_task(&task);
                    facts.insert(0, PveFact::Task(task));
                    if finished && let Some(c) = &client {
                        // Event-driven: a finished task changes guests and storage.
                        facts.extend(collector.sweep(c).await);
                    }
                    facts
                }
            };
            if facts.is_empty() {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                r = batches.send(batch(facts)) => if r.is_err() { return },
            }
        }
    });
}
