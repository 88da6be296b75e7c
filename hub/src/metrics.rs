//! Delivery counters of the hub (batches and facts committed, duplicates
//! dropped by the `(agent, stream, seq)` dedup, busy replies, ingest errors),
//! kept per agent in memory since the hub started, and their Prometheus text
//! rendering for `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Per-agent delivery counters since the hub started.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentDelivery {
    /// Batches committed.
    pub batches: u64,
    /// Facts committed.
    pub facts: u64,
    /// Batches received again and dropped by the dedup.
    pub duplicates: u64,
    /// Busy replies sent.
    pub busy: u64,
    /// Unsequenced (current-state) batches received.
    pub ephemeral: u64,
    /// Highest committed sequence number seen.
    pub committed_seq: u64,
}

/// The hub's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    batches: AtomicU64,
    facts: AtomicU64,
    duplicates: AtomicU64,
    busy: AtomicU64,
    ingest_errors: AtomicU64,
    http_shed: AtomicU64,
    webhooks_accepted: AtomicU64,
    webhooks_refused: AtomicU64,
    ingest_micros: AtomicU64,
    per_agent: Mutex<BTreeMap<String, AgentDelivery>>,
}

/// What happened to one received batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Committed, with its fact count and the time the commit took.
    Committed {
        /// Facts in the batch.
        facts: u64,
        /// Commit time in microseconds.
        micros: u64,
        /// The stream's committed seq afterwards.
        seq: u64,
    },
    /// A replay of a committed batch: dropped.
    Duplicate,
    /// Refused with a busy reply.
    Busy,
    /// Unsequenced: only the current state was updated.
    Ephemeral,
    /// The store failed; nothing was acknowledged.
    Error,
}

impl Metrics {
    /// Counts one batch of `agent_id`.
    pub fn record(&self, agent_id: &str, outcome: BatchOutcome) {
        let Ok(mut map) = self.per_agent.lock() else {
            return;
        };
        let a = map.entry(agent_id.to_string()).or_default();
        match outcome {
            BatchOutcome::Committed { facts, micros, seq } => {
                self.batches.fetch_add(1, Ordering::Relaxed);
                self.facts.fetch_add(facts, Ordering::Relaxed);
                self.ingest_micros.fetch_add(micros, Ordering::Relaxed);
                a.batches += 1;
                a.facts += facts;
                a.committed_seq = a.committed_seq.max(seq);
            }
            BatchOutcome::Duplicate => {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
                a.duplicates += 1;
            }
            BatchOutcome::Busy => {
                self.busy.fetch_add(1, Ordering::Relaxed);
                a.busy += 1;
            }
            BatchOutcome::Ephemeral => a.ephemeral += 1,
            BatchOutcome::Error => {
                self.ingest_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts an HTTP request answered 503 by the load shedder.
    pub fn http_shed(&self) {
        self.http_shed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a PVE webhook request, accepted or refused (auth or body).
    pub fn webhook(&self, accepted: bool) {
        let c = if accepted {
            &self.webhooks_accepted
        } else {
            &self.webhooks_refused
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters of one agent.
    pub fn agent(&self, agent_id: &str) -> AgentDelivery {
        self.per_agent
            .lock()
            .ok()
            .and_then(|m| m.get(agent_id).cloned())
            .unwrap_or_default()
    }

    /// Hub-wide totals: (batches, facts, duplicates, busy, errors).
    pub fn totals(&self) -> (u64, u64, u64, u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.facts.load(Ordering::Relaxed),
            self.duplicates.load(Ordering::Relaxed),
            self.busy.load(Ordering::Relaxed),
            self.ingest_errors.load(Ordering::Relaxed),
        )
    }

    /// Renders the hub-wide and per-agent counters in the Prometheus text
    /// format; `agents` adds per-agent gauges from the agents' own health
    /// reports and the store's gap accounting.
    pub fn render(&self, agents: &[AgentGauges], ingest_available: usize) -> String {
        let mut out = String::with_capacity(4096);
        let (batches, facts, dups, busy, errors) = self.totals();
        let counters = [
            (
                "wingman_hub_batches_committed_total",
                "Fact batches committed to the store.",
                batches,
            ),
            (
                "wingman_hub_facts_committed_total",
                "Facts committed to the store.",
                facts,
            ),
            (
                "wingman_hub_duplicate_batches_total",
                "Replayed batches dropped by the (agent, stream, seq) dedup.",
                dups,
            ),
            (
                "wingman_hub_busy_replies_total",
                "Busy replies sent to agents (back-pressure).",
                busy,
            ),
            (
                "wingman_hub_ingest_errors_total",
                "Batches the store failed to commit (not acknowledged).",
                errors,
            ),
            (
                "wingman_hub_http_shed_total",
                "HTTP requests answered 503 by the load shedder.",
                self.http_shed.load(Ordering::Relaxed),
            ),
            (
                "wingman_hub_pve_webhooks_accepted_total",
                "PVE notification webhooks accepted (stored or duplicate).",
                self.webhooks_accepted.load(Ordering::Relaxed),
            ),
            (
                "wingman_hub_pve_webhooks_refused_total",
                "PVE notification webhooks refused (wrong secret or body).",
                self.webhooks_refused.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let secs = self.ingest_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "# HELP wingman_hub_ingest_seconds_total Time spent committing batches.\n# TYPE wingman_hub_ingest_seconds_total counter\nwingman_hub_ingest_seconds_total {secs}"
        );
        let _ = writeln!(
            out,
            "# HELP wingman_hub_ingest_queue_available Free slots in the ingest queue; 0 means agents get busy replies.\n# TYPE wingman_hub_ingest_queue_available gauge\nwingman_hub_ingest_queue_available {ingest_available}"
        );
        let map = self.per_agent.lock().map(|m| m.clone()).unwrap_or_default();
        type Pick = fn(&AgentGauges, &AgentDelivery) -> Option<f64>;
        let series: [(&str, &str, &str, Pick); 12] = [
            (
                "wingman_agent_online",
                "gauge",
                "1 when the agent's session is up.",
                |g, _| Some(f64::from(u8::from(g.online))),
            ),
            (
                "wingman_agent_batches_committed_total",
                "counter",
                "Batches of this agent committed since the hub started.",
                |_, d| Some(d.batches as f64),
            ),
            (
                "wingman_agent_facts_committed_total",
                "counter",
                "Facts of this agent committed since the hub started.",
                |_, d| Some(d.facts as f64),
            ),
            (
                "wingman_agent_duplicate_batches_total",
                "counter",
                "Replayed batches of this agent dropped by the dedup since the hub started.",
                |_, d| Some(d.duplicates as f64),
            ),
            (
                "wingman_agent_busy_replies_total",
                "counter",
                "Busy replies sent to this agent since the hub started.",
                |_, d| Some(d.busy as f64),
            ),
            (
                "wingman_agent_spool_depth_batches",
                "gauge",
                "Batches in the agent's spool awaiting an ack (agent report).",
                |g, _| g.health.as_ref().map(|h| h.spool_depth_batches as f64),
            ),
            (
                "wingman_agent_spool_bytes",
                "gauge",
                "Bytes in the agent's spool (agent report).",
                |g, _| g.health.as_ref().map(|h| h.spool_bytes as f64),
            ),
            (
                "wingman_agent_oldest_unacked_seconds",
                "gauge",
                "Age of the oldest unacknowledged batch (agent report).",
                |g, _| {
                    g.health
                        .as_ref()
                        .map(|h| h.oldest_unacked_ms as f64 / 1000.0)
                },
            ),
            (
                "wingman_agent_replayed_batches_total",
                "counter",
                "Batches the agent sent again (agent report).",
                |g, _| g.health.as_ref().map(|h| h.replayed_batches as f64),
            ),
            (
                "wingman_agent_spool_errors_total",
                "counter",
                "Spool write or read failures on the agent (agent report).",
                |g, _| g.health.as_ref().map(|h| h.spool_errors as f64),
            ),
            (
                "wingman_agent_lost_batches_total",
                "counter",
                "Batches reported lost by gap records, net of ones committed anyway.",
                |g, _| Some(g.lost_batches as f64),
            ),
            (
                "wingman_agent_lost_facts_total",
                "counter",
                "Facts reported lost by gap records, net of ones committed anyway.",
                |g, _| Some(g.lost_facts as f64),
            ),
        ];
        for (name, kind, help, pick) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for g in agents {
                let d = map.get(&g.agent_id).cloned().unwrap_or_default();
                if let Some(v) = pick(g, &d) {
                    let _ = writeln!(
                        out,
                        "{name}{{agent_id=\"{}\",node=\"{}\"}} {v}",
                        label(&g.agent_id),
                        label(&g.hostname)
                    );
                }
            }
        }
        out
    }
}

/// Per-agent values rendered next to the hub's counters.
#[derive(Debug, Clone, Default)]
pub struct AgentGauges {
    /// Agent id.
    pub agent_id: String,
    /// Hostname.
    pub hostname: String,
    /// Whether its session is up.
    pub online: bool,
    /// Its latest health report.
    pub health: Option<wingman_protocol::AgentHealth>,
    /// Batches lost per the gap accounting.
    pub lost_batches: u64,
    /// Facts lost per the gap accounting.
    pub lost_facts: u64,
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_escapes_labels() {
        let m = Metrics::default();
        m.record(
            "a1",
            BatchOutcome::Committed {
                facts: 3,
                micros: 10,
                seq: 1,
            },
        );
        m.record("a1", BatchOutcome::Duplicate);
        m.record("a1", BatchOutcome::Busy);
        let text = m.render(
            &[AgentGauges {
                agent_id: "a1".into(),
                hostname: "node\"1".into(),
                online: true,
                ..AgentGauges::default()
            }],
            7,
        );
        assert!(text.contains("wingman_hub_facts_committed_total 3\n"));
        assert!(text.contains("wingman_hub_duplicate_batches_total 1\n"));
        assert!(
            text.contains(
                "wingman_agent_busy_replies_total{agent_id=\"a1\",node=\"node\\\"1\"} 1\n"
            )
        );
        assert!(text.contains("wingman_hub_ingest_queue_available 7\n"));
        assert!(
            !text.contains("wingman_agent_spool_depth_batches{"),
            "no health report yet"
        );
    }
}

/// Delivery health of one node: the agent's own report, the hub's counters
/// since it started, and the losses its gap reports account for.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NodeDelivery {
    /// The agent's latest health report and when it was observed.
    pub agent: Option<wingman_protocol::AgentHealth>,
    /// When the report was made, Unix ms.
    pub reported_at: Option<i64>,
    /// The hub's counters for this agent since the hub started.
    pub hub: AgentDelivery,
    /// Losses the agent reported with gap facts.
    pub gaps: crate::store::GapAccounting,
}

/// Collects [`NodeDelivery`] for `agent_id`.
pub async fn node_delivery(
    hub: &crate::Hub,
    agent_id: &str,
    latest: &[crate::store::LatestFact],
) -> crate::store::StoreResult<NodeDelivery> {
    let health = latest.iter().find(|f| f.kind == "agent_health");
    Ok(NodeDelivery {
        agent: health.and_then(|f| serde_json::from_str(&f.body).ok()),
        reported_at: health.map(|f| f.observed_at),
        hub: hub.metrics.agent(agent_id),
        gaps: hub.store.gap_accounting(agent_id).await?,
    })
}

/// The `/metrics` text: hub counters plus per-agent gauges.
pub async fn scrape(hub: &crate::Hub) -> crate::store::StoreResult<String> {
    let mut gauges = Vec::new();
    for a in hub.store.list_agents().await? {
        if a.revoked_at.is_some() {
            continue;
        }
        let latest = hub.store.latest_facts(&a.id).await?;
        let d = node_delivery(hub, &a.id, &latest).await?;
        gauges.push(AgentGauges {
            online: a.online,
            hostname: a.hostname.clone(),
            agent_id: a.id,
            health: d.agent,
            lost_batches: d.gaps.lost_batches,
            lost_facts: d.gaps.lost_facts,
        });
    }
    let mut text = hub.metrics.render(&gauges, hub.ingest.available());
    let r = &hub.reasoner;
    let _ = writeln!(
        text,
        "# HELP wingman_hub_narratives_total Model narrative jobs finished (stored, skipped or fallen back).\n# TYPE wingman_hub_narratives_total counter\nwingman_hub_narratives_total {}\n\
         # HELP wingman_hub_reasoner_dropped_total Reasoner jobs dropped by the queue's overflow policy.\n# TYPE wingman_hub_reasoner_dropped_total counter\nwingman_hub_reasoner_dropped_total {}\n\
         # HELP wingman_hub_reasoner_queued Reasoner jobs waiting for a model.\n# TYPE wingman_hub_reasoner_queued gauge\nwingman_hub_reasoner_queued {}",
        r.completed(),
        r.dropped(),
        r.queued()
    );
    Ok(text)
}
