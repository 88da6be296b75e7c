//! Retention: a task that deletes facts, webhook events, log template
//! summaries and resolved incidents older than the `[retention]` settings,
//! once at start and then every `prune_interval_secs`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Hub;
use crate::config::RetentionConfig;
use crate::store::{PruneCounts, PruneCutoffs};

const DAY_MS: i64 = 86_400_000;

/// The cut-offs for `now_ms` (pure).
pub fn cutoffs(cfg: &RetentionConfig, now_ms: i64) -> PruneCutoffs {
    let days = |d: u32| now_ms.saturating_sub(i64::from(d) * DAY_MS);
    PruneCutoffs {
        facts_before: days(cfg.facts_days),
        summaries_before: days(cfg.summaries_days),
        incidents_before: days(cfg.resolved_incidents_days),
    }
}

/// Prunes once; returns what was deleted.
pub async fn prune_once(hub: &Hub, now_ms: i64) -> Result<PruneCounts, crate::store::StoreError> {
    let cut = cutoffs(&hub.config.retention, now_ms);
    let counts = hub.store.prune(&cut).await?;
    if let Some(m) = &hub.memory {
        m.prune(&cut).await;
    }
    if counts != PruneCounts::default() {
        info!(
            facts = counts.facts,
            summaries = counts.summaries,
            incidents = counts.incidents,
            "retention: old rows deleted"
        );
    }
    Ok(counts)
}

/// Runs until `shutdown`.
pub async fn run(hub: Hub, shutdown: CancellationToken) {
    let every = Duration::from_secs(hub.config.retention.prune_interval_secs.max(10));
    loop {
        if let Err(error) = prune_once(&hub, wingman_agent::now_ms()).await {
            warn!(%error, "retention: prune failed; retrying at the next interval");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
