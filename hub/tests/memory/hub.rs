//! Retrieval inside a running hub (embedded index in the hub's SQLite, the
//! model-free hashed embedder): skills are indexed at start, incidents as
//! the engine opens and resolves them, similar past incidents come back for
//! a new one, and with the embedder down the search API answers 503 with
//! Retry-After while the incident page still renders.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use wingman_hub::engine::{PoolHealth, Signal, SignalBody};

use crate::common::{TestHub, eventually, http_client};

fn zfs(node: &str, health: PoolHealth) -> Signal {
    Signal::new(
        wingman_agent::now_ms(),
        SignalBody::ZfsPool {
            node: node.into(),
            pool: "tank".into(),
            health,
            scrub_errors: 3,
        },
    )
}

async fn get(th: &TestHub, key: &str, path: &str) -> (StatusCode, Value, Option<String>) {
    let r = http_client()
        .get(th.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, r.json().await.unwrap_or(Value::Null), retry)
}

async fn incident_for(th: &TestHub, key: &str, node: &str) -> String {
    eventually(Duration::from_secs(10), "incident", || async move {
        let (_, v, _) = get(th, key, &format!("/api/v1/incidents?node={node}")).await;
        v["incidents"][0]["id"].as_str().map(str::to_string)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn similar_past_incidents_and_search_in_a_running_hub() {
    let mut th = TestHub::start(|_| {}).await;
    let key = th.api_key().await;
    // Skills are indexed at start.
    let hits = eventually(Duration::from_secs(20), "skill hits", || {
        let (th, key) = (&th, key.clone());
        async move {
            let (s, v, _) = get(
                th,
                &key,
                "/api/v1/search?q=zfs%20pool%20degraded&kind=skill",
            )
            .await;
            let hits = v["hits"].as_array().cloned().unwrap_or_default();
            (s == StatusCode::OK && !hits.is_empty()).then_some(hits)
        }
    })
    .await;
    assert!(
        hits.iter().any(|h| h["ref_id"] == "zfs-pool-degraded"),
        "{hits:?}"
    );

    // A degraded pool on nas1, resolved by an operator; noise elsewhere.
    th.hub
        .incidents
        .submit(vec![zfs("nas1", PoolHealth::Degraded)]);
    let first = incident_for(&th, &key, "nas1").await;
    th.hub.incidents.submit(vec![Signal::new(
        wingman_agent::now_ms(),
        SignalBody::PendingUpdates {
            node: "web1".into(),
            security: 4,
            total: 12,
        },
    )]);
    th.hub
        .incidents
        .command(wingman_hub::engine::Command::Resolve {
            incident_id: first.clone(),
            by: "alice".into(),
        })
        .await
        .unwrap();
    // The same problem on nas2 finds nas1's incident and its outcome.
    th.hub
        .incidents
        .submit(vec![zfs("nas2", PoolHealth::Degraded)]);
    let second = incident_for(&th, &key, "nas2").await;
    let similar = eventually(Duration::from_secs(20), "similar incidents", || {
        let (th, key, second) = (&th, key.clone(), second.clone());
        async move {
            let (_, v, _) = get(th, &key, &format!("/api/v1/incidents/{second}/similar")).await;
            let s = v["similar"].as_array().cloned().unwrap_or_default();
            s.iter().any(|h| h["kind"] == "outcome").then_some(s)
        }
    })
    .await;
    assert_eq!(similar[0]["ref_id"], first.as_str(), "{similar:?}");
    assert!(similar.iter().all(|h| h["ref_id"] != second.as_str()));
    let outcome = similar.iter().find(|h| h["kind"] == "outcome").unwrap();
    assert!(
        outcome["text"].as_str().unwrap().contains("alice"),
        "{outcome}"
    );
    // Bad input: an unknown kind is a 400 with a sentence.
    let (s, v, _) = get(&th, &key, "/api/v1/search?q=x&kind=logs").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    th.shutdown.cancel();
    th.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedder_down_gives_503_with_retry_after_and_pages_still_render() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut th = TestHub::start(move |c| {
        c.memory.embedder = wingman_hub::recall::EmbedderKind::Ollama;
        c.memory.embed_url = format!("http://127.0.0.1:{port}");
        c.memory.embed_dim = 16;
    })
    .await;
    let key = th.api_key().await;
    let (s, _, retry) = get(&th, &key, "/api/v1/search?q=disk%20full").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry.is_some_and(|r| r.parse::<u64>().unwrap() >= 1));
    // Incident creation never waits for the index.
    th.hub
        .incidents
        .submit(vec![zfs("nas9", PoolHealth::Faulted)]);
    let id = incident_for(&th, &key, "nas9").await;
    let (s, _, _) = get(&th, &key, &format!("/api/v1/incidents/{id}/similar")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let (s, _, _) = get(&th, &key, &format!("/api/v1/incidents/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    // The indexer keeps the work queued for when the embedder returns.
    let stats = th.hub.memory.as_ref().unwrap().indexer.stats();
    assert!(stats.queued + stats.retries > 0, "{stats:?}");
    th.shutdown.cancel();
    th.stop().await;
}
