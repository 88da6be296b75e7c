//! Incidents end to end: a line on the agent's node becomes a log summary,
//! the engine opens an incident with a narrative and skill suggestions, the
//! API lists it (filtered, paginated), and acknowledging it works with an API
//! key and is refused without a CSRF token from a browser session.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use wingman_agent::config::FileSourceConfig;

use crate::common::{TestAgent, TestHub, eventually, http_client};

pub(crate) fn append(path: &Path, lines: &[&str]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    f.sync_all().unwrap();
}

/// Starts a hub and an agent following `app.log`; returns them and the log path.
pub(crate) async fn hub_with_logging_agent() -> (TestHub, TestAgent, String, std::path::PathBuf) {
    hub_with_logging_agent_tweaked(|_| {}).await
}

/// Like [`hub_with_logging_agent`], with the hub config tweaked first.
pub(crate) async fn hub_with_logging_agent_tweaked(
    tweak: impl FnOnce(&mut wingman_hub::HubConfig),
) -> (TestHub, TestAgent, String, std::path::PathBuf) {
    let th = TestHub::start(tweak).await;
    let dir = th.dir.path().join("agent");
    let id = th.enroll(&dir).await;
    let log = th.dir.path().join("app.log");
    let log2 = log.clone();
    let agent = TestAgent::start_with(&dir, move |c| {
        c.logs.files = vec![FileSourceConfig {
            path: log2,
            examples: false,
            raw: false,
        }];
    });
    eventually(Duration::from_secs(5), "agent connected", || {
        let th = &th;
        async move { (th.hub.registry.connected() == 1).then_some(()) }
    })
    .await;
    (th, agent, id.enrollment.agent_id, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_line_opens_an_incident_with_narrative_and_skills() {
    let (mut th, mut agent, _agent_id, log) = hub_with_logging_agent().await;
    let key = th.api_key().await;
    let c = http_client();
    let t0 = Instant::now();
    append(
        &log,
        &[
            "kernel: Out of memory: Killed process 4242 (java) total-vm:8000000kB, anon-rss:4000000kB",
        ],
    );
    let list: Value = eventually(Duration::from_secs(10), "incident via the API", || {
        let (c, th, key) = (&c, &th, &key);
        async move {
            let v: Value = c
                .get(th.url("/api/v1/incidents"))
                .bearer_auth(key)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (v["total"].as_i64()? >= 1).then_some(v)
        }
    })
    .await;
    eprintln!(
        "line written -> incident visible through the API: {:?}",
        t0.elapsed()
    );
    let id = list["incidents"][0]["id"].as_str().unwrap().to_string();
    let v: Value = c
        .get(th.url(&format!("/api/v1/incidents/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let inc = &v["incident"];
    assert!(inc["detectors"].to_string().contains("oom_kill"), "{inc}");
    let narrative = inc["narrative"].as_str().unwrap();
    assert!(!narrative.is_empty());
    assert!(
        !narrative.contains("4242"),
        "values never reach the narrative: {narrative}"
    );
    let skills: Vec<&str> = v["suggested_skills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(
        skills.contains(&"node-oom-kills") || skills.contains(&"container-oom-killed"),
        "{skills:?}"
    );

    // Filters and pagination.
    let v: Value = c
        .get(th.url("/api/v1/incidents?state=resolved"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["total"], 0);
    let r = c
        .get(th.url("/api/v1/incidents?severity=bogus"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Acknowledge with an API key (no CSRF needed: browsers never send it cross-site).
    let r = c
        .post(th.url(&format!("/api/v1/incidents/{id}/ack")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = eventually(Duration::from_secs(5), "acknowledged", || {
        let (c, th, key, id) = (&c, &th, &key, &id);
        async move {
            let v: Value = c
                .get(th.url(&format!("/api/v1/incidents/{id}")))
                .bearer_auth(key)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (v["incident"]["state"] == "acknowledged").then_some(v)
        }
    })
    .await;
    assert_eq!(v["incident"]["acknowledged"]["by"], "admin");
    // Resolve, then acknowledging a resolved incident is a clear 400, not a crash.
    let r = c
        .post(th.url(&format!("/api/v1/incidents/{id}/resolve")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .post(th.url(&format!("/api/v1/incidents/{id}/ack")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c
        .post(th.url("/api/v1/incidents/inc-nope/ack"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    agent.stop().await;
    th.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledging_is_audited_and_a_rewritten_chain_is_detected() {
    let (mut th, mut agent, _agent_id, log) = hub_with_logging_agent().await;
    let key = th.api_key().await;
    let c = http_client();
    append(
        &log,
        &[
            "kernel: Out of memory: Killed process 777 (postgres) total-vm:9000000kB, anon-rss:5000000kB",
        ],
    );
    let id = eventually(Duration::from_secs(10), "incident", || {
        let (c, th, key) = (&c, &th, key.clone());
        async move {
            let v: Value = c
                .get(th.url("/api/v1/incidents"))
                .bearer_auth(&key)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            v["incidents"][0]["id"].as_str().map(str::to_string)
        }
    })
    .await;
    for action in ["ack", "resolve"] {
        let r = c
            .post(th.url(&format!("/api/v1/incidents/{id}/{action}")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    // Per incident, in the API and the export.
    let v: Value = c
        .get(th.url(&format!("/api/v1/incidents/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = v["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["incident_acknowledged", "incident_resolved"], "{v}");
    assert_eq!(v["audit"][0]["actor"], "user:admin");
    let jsonl = c
        .get(th.url("/api/v1/audit"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(jsonl.lines().count(), 2, "{jsonl}");
    let ok: Value = c
        .get(th.url("/api/v1/audit/verify"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(ok["entries"], 2);
    // Someone with the database file drops the guard and rewrites entry 1.
    let url = th.hub.config.database_url();
    {
        use sqlx::Connection;
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("DROP TRIGGER audit_log_no_update")
            .execute(&mut db)
            .await
            .unwrap();
        sqlx::query("UPDATE audit_log SET actor = 'user:mallory' WHERE seq = 1")
            .execute(&mut db)
            .await
            .unwrap();
    }
    let bad: Value = c
        .get(th.url("/api/v1/audit/verify"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bad["ok"], false, "{bad}");
    assert_eq!(bad["broken_at"], 1, "{bad}");
    let e = wingman_hub::audit::verify(&th.hub.store).await.unwrap_err();
    assert!(e.to_string().contains("entry 1"), "{e}");
    agent.stop().await;
    th.shutdown.cancel();
    th.stop().await;
}
