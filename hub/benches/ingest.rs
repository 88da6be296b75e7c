//! Ingest benchmarks (a bench binary, not a timed test).
//!
//! 1. Store ingest: batches of realistic facts (log summaries with their
//!    template rows, container events, host snapshots updating the latest
//!    state) committed through `Store::ingest_batch` from several agents at
//!    once, on SQLite and, when `WINGMAN_TEST_PG_URL` is set, PostgreSQL.
//! 2. Replay after an outage: an agent whose spool holds a 10-minute backlog
//!    (written through the agent's own outbox) connects to an in-process hub
//!    and drains it; reports facts/s and the drain time, plus the agent's
//!    spool bytes written per fact with the default fsync policy.
//!
//! Run: `cargo bench -p wingman-hub --bench ingest`
//! (`WINGMAN_TEST_PG_URL=postgres://... cargo bench ...` adds PostgreSQL).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wingman_hub::store::{DynStore, FactRecord, TemplateRecord};
use wingman_hub::{Hub, HubConfig, Listeners};
use wingman_protocol::{Fact, FactBody, HostKind};

fn batch(agent: usize, seq: u64, size: usize) -> (Vec<FactRecord>, Vec<TemplateRecord>) {
    let mut facts = Vec::with_capacity(size);
    let mut templates = Vec::new();
    for i in 0..size {
        let t = 1_700_000_000_000 + seq as i64 * 1000 + i as i64;
        match i % 10 {
            0 => facts.push(FactRecord {
                kind: "host".into(),
                observed_at: t,
                latest: true,
                body: format!(
                    r#"{{"hostname":"node{agent}","load":[0.5,0.4,0.3],"mem_used":{},"mem_total":17179869184,"cpu_usage_pct":12.5}}"#,
                    1_000_000 + i
                ),
            }),
            1..=3 => facts.push(FactRecord {
                kind: "container_event".into(),
                observed_at: t,
                latest: false,
                body: format!(
                    r#"{{"id":"c{i:04}","name":"app{}","kind":"Die","exit_code":137,"at_ms":{t}}}"#,
                    i % 7
                ),
            }),
            _ => {
                let id = (i % 50) as u64;
                facts.push(FactRecord {
                    kind: "log_summary".into(),
                    observed_at: t,
                    latest: false,
                    body: format!(
                        r#"{{"source":{{"kind":"File","name":"/var/log/app.log"}},"window_start_ms":{t},"window_end_ms":{},"templates":[{{"template_id":{id},"template":"upstream <*> timed out after <*> ms","count":7}}]}}"#,
                        t + 10_000
                    ),
                });
                templates.push(TemplateRecord {
                    source_kind: "file".into(),
                    source_name: "/var/log/app.log".into(),
                    template_id: id,
                    template: format!("upstream <*> timed out after <*> ms ({id})"),
                    severity: 3,
                    count: 7,
                    burst: false,
                    first_seen: t,
                    last_seen: t + 9_000,
                });
            }
        }
    }
    (facts, templates)
}

async fn store_ingest(label: &str, store: DynStore, agents: usize, batches_per_agent: u64) {
    let size = if batches_per_agent > 1000 { 20 } else { 500 };
    // Pre-build the batches so only the commits are timed.
    let mut work = Vec::new();
    for a in 0..agents {
        let mut v = Vec::new();
        for s in 1..=batches_per_agent {
            v.push((s, batch(a, s, size)));
        }
        let id = format!("bench-agent-{label}-{a}-{}", std::process::id());
        store
            .create_agent(
                &wingman_hub::store::AgentRow {
                    id: id.clone(),
                    hostname: format!("node{a}"),
                    kind: "plain".into(),
                    agent_version: "bench".into(),
                    enrolled_at: 0,
                    revoked_at: None,
                    last_seen: None,
                    online: false,
                    cert_not_after: i64::MAX,
                },
                &format!("fp-{id}"),
            )
            .await
            .unwrap();
        work.push((id, v));
    }
    // Through the hub's ingest path: one bounded queue, one writer that
    // commits groups; each agent keeps up to 64 batches queued (as a session does).
    let writers = if store.backend() == "postgres" { 2 } else { 1 };
    let (queue, rxs) = wingman_hub::ingest::IngestQueue::sharded(512, writers);
    let stop = CancellationToken::new();
    let writer_tasks: Vec<_> = rxs
        .into_iter()
        .map(|rx| tokio::spawn(wingman_hub::ingest::writer(store.clone(), rx, stop.clone())))
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (agent, batches) in work {
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let mut inflight = std::collections::VecDeque::new();
            for (seq, (facts, templates)) in batches {
                let item = wingman_hub::store::IngestItem {
                    agent_id: agent.clone(),
                    stream_id: 42,
                    seq,
                    facts,
                    templates,
                };
                let mut item = Some(item);
                while let Some(it) = item.take() {
                    match queue.try_submit(it) {
                        Ok(r) => inflight.push_back(r),
                        Err(back) => {
                            // Busy: wait for our oldest commit, then retry.
                            item = Some(back);
                            if let Some(r) = inflight.pop_front() {
                                r.await.unwrap().unwrap();
                            }
                        }
                    }
                }
                if inflight.len() >= 64
                    && let Some(r) = inflight.pop_front()
                {
                    r.await.unwrap().unwrap();
                }
            }
            for r in inflight {
                r.await.unwrap().unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    stop.cancel();
    for w in writer_tasks {
        w.await.unwrap();
    }
    let facts = agents as f64 * batches_per_agent as f64 * size as f64;
    println!(
        "store ingest {label} ({writers} writer(s)): {agents} agents x {batches_per_agent} batches x {size} facts = {facts:.0} facts in {secs:.2}s -> {:.0} facts/s",
        facts / secs
    );
}

fn health_fact(i: u64) -> Fact {
    // A realistic small log summary (one template) as the agent would spool it.
    let template = wingman_protocol::logs::TemplateCount {
        template_id: i % 40,
        template: wingman_protocol::logs::MaskedTemplate::mask(
            &format!("worker {i} finished job in 12 ms"),
            &wingman_protocol::logs::Redactor::new(&Default::default()),
        )
        .0,
        severity: wingman_protocol::logs::Severity::Info,
        count: 3,
        burst: false,
        new_template: false,
        first_seen_ms: 1_700_000_000_000,
        last_seen_ms: 1_700_000_009_000,
        examples: Vec::new(),
    };
    Fact {
        observed_at_ms: 1_700_000_000_000 + i as i64,
        body: FactBody::LogSummary(wingman_protocol::logs::LogSummary {
            source: wingman_protocol::logs::LogSource {
                kind: wingman_protocol::logs::LogSourceKind::Journal,
                name: "nginx.service".into(),
            },
            window_start_ms: 1_700_000_000_000,
            window_end_ms: 1_700_000_010_000,
            lines: 3,
            templates: vec![template],
            skipped: Default::default(),
        }),
    }
}

async fn replay(facts_per_sec: u64, facts_per_batch: u64) {
    wingman_agent::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let mut config = HubConfig {
        data_dir: dir.path().join("hub"),
        ..HubConfig::default()
    };
    config.quic.listen = "127.0.0.1:0".parse().unwrap();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    let listeners = Listeners::bind(&config).await.unwrap();
    let quic = listeners.quic_addr().unwrap();
    let hub = Hub::open(config).await.unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(wingman_hub::run(hub.clone(), listeners, shutdown.clone()));
    let token = wingman_hub::commands::create_token(&hub, 600, &quic.to_string())
        .await
        .unwrap()
        .token;
    let state = dir.path().join("agent");
    let id = wingman_agent::enroll::enroll(&wingman_agent::enroll::EnrollOptions {
        hub: quic.to_string(),
        token,
        ca_sha256: hub.pki.fingerprint().to_string(),
        state_dir: state.clone(),
        force: false,
        host_kind: HostKind::Plain,
        hostname: "bench".into(),
    })
    .await
    .unwrap();
    // Ten minutes of backlog written through the agent's own outbox.
    let mut cfg = wingman_agent::AgentConfig {
        state_dir: state.clone(),
        ..wingman_agent::AgentConfig::default()
    };
    cfg.logs.enabled = false;
    cfg.docker.enabled = false;
    cfg.facts.sample_interval_ms = 600_000;
    cfg.facts.max_interval_ms = 6_000_000;
    let total = facts_per_sec * 600;
    let batches = total / facts_per_batch;
    let spool_cfg = cfg.spool.spool_config(&state, id.enrollment.stream_id);
    let (mut ob, _) = wingman_agent::outbox::Outbox::open(
        spool_cfg,
        id.enrollment.stream_id,
        cfg.link.max_inflight_batches,
        0,
    )
    .unwrap();
    let started = Instant::now();
    let mut n = 0u64;
    for b in 0..batches {
        let facts: Vec<Fact> = (0..facts_per_batch).map(|i| health_fact(n + i)).collect();
        n += facts_per_batch;
        // One batch every 100 ms of (simulated) agent time.
        let now = b as i64 * 100;
        ob.append(&facts, &Vec::new(), now).unwrap();
        ob.flush_due(now);
    }
    ob.flush_due(i64::MAX / 2);
    let append_secs = started.elapsed().as_secs_f64();
    let written = ob.spool_stats().bytes_written;
    let fsyncs = ob.spool_stats().fsyncs;
    drop(ob);
    println!(
        "agent spool: {n} facts in {batches} batches appended in {append_secs:.2}s; {written} bytes written = {:.1} bytes/fact, {fsyncs} fsyncs (default policy: group commit 256 batches / 200 ms)",
        written as f64 / n as f64
    );
    let stats = Arc::new(Mutex::new(wingman_agent::LinkStats::default()));
    let agent_stop = CancellationToken::new();
    let started = Instant::now();
    let agent = tokio::spawn(wingman_agent::run(
        cfg,
        HostKind::Plain,
        stats.clone(),
        agent_stop.clone(),
    ));
    loop {
        let s = stats.lock().unwrap().clone();
        if s.acked_seq >= batches && s.spool_depth == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "replay stalled: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let committed = hub.store.fact_count(&id.enrollment.agent_id).await.unwrap();
    println!(
        "replay: 10-minute backlog at {facts_per_sec} facts/s ({total} facts, {batches} batches of {facts_per_batch}) drained in {secs:.2}s -> {:.0} facts/s end to end (store has {committed})",
        total as f64 / secs
    );
    agent_stop.cancel();
    agent.await.unwrap().unwrap();
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let store = wingman_hub::store::open(&url).await.unwrap();
        store_ingest("sqlite", store.clone(), 4, 100).await;
        store_ingest("sqlite, 20-fact batches", store, 4, 2500).await;
        if let Ok(pg) = std::env::var("WINGMAN_TEST_PG_URL") {
            let store = wingman_hub::store::open(&pg).await.unwrap();
            store_ingest("postgres", store.clone(), 4, 100).await;
            store_ingest("postgres, 20-fact batches", store, 4, 2500).await;
        }
        replay(200, 20).await;
    });
}
