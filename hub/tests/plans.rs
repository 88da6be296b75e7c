//! Remediation plans through the hub's API, and the signed-command guard on
//! a real agent: helpers the Docker and Proxmox end-to-end tests drive plans
//! with, plus the tests that need no engine: an expired, replayed, forged or
//! unsigned command is refused by the agent before anything runs; the audit
//! head the agent keeps exposes a rewritten chain; approving without the
//! CSRF token, with a stale hash or as a viewer is refused; Guide mode never
//! executes.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use wingman_hub::transport::AgentReply;
use wingman_protocol::CommandBody;
use wingman_protocol::docker::DockerAction;

use crate::common::{TestAgent, TestHub, eventually, http_client};

/// `PUT /api/v1/control/policy` with an API key.
pub async fn set_policy(th: &TestHub, key: &str, policy: Value) -> (StatusCode, Value) {
    let r = http_client()
        .put(th.url("/api/v1/control/policy"))
        .bearer_auth(key)
        .json(&policy)
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// `POST /api/v1/incidents/{id}/plans`.
pub async fn propose(th: &TestHub, key: &str, incident: &str, body: Value) -> (StatusCode, Value) {
    let r = http_client()
        .post(th.url(&format!("/api/v1/incidents/{incident}/plans")))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Approves step `n` (from 1) of `plan` as shown (its hashes).
pub async fn approve(
    th: &TestHub,
    key: &str,
    plan: &Value,
    n: usize,
    password: Option<&str>,
) -> (StatusCode, Value) {
    let id = plan["id"].as_str().unwrap();
    let r = http_client()
        .post(th.url(&format!("/api/v1/plans/{id}/steps/{n}/approve")))
        .bearer_auth(key)
        .json(&json!({
            "plan_hash": plan["plan_hash"],
            "step_hash": plan["steps"][n - 1]["step_hash"],
            "password": password.unwrap_or(""),
        }))
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// `POST /api/v1/plans/{id}/steps/{n}/{verb}` (`execute`, `done`).
pub async fn step(
    th: &TestHub,
    key: &str,
    plan: &str,
    n: usize,
    verb: &str,
) -> (StatusCode, Value) {
    let r = http_client()
        .post(th.url(&format!("/api/v1/plans/{plan}/steps/{n}/{verb}")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// `GET /api/v1/plans/{id}`.
pub async fn get_plan(th: &TestHub, key: &str, plan: &str) -> Value {
    let r: Value = http_client()
        .get(th.url(&format!("/api/v1/plans/{plan}")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["plan"].clone()
}

/// Waits until step `n` of the plan is in one of `states`; the plan.
pub async fn wait_step(th: &TestHub, key: &str, plan: &str, n: usize, states: &[&str]) -> Value {
    eventually(
        Duration::from_secs(90),
        &format!("plan {plan} step {n} in {states:?}"),
        || async move {
            let p = get_plan(th, key, plan).await;
            let s = p["steps"][n - 1]["state"].as_str()?.to_owned();
            states.contains(&s.as_str()).then_some(p)
        },
    )
    .await
}

/// The audit kinds recorded for a plan, in order.
pub async fn plan_audit(th: &TestHub, plan: &str) -> Vec<String> {
    let rows = th.hub.store.audit_entries(None, 0, 10_000).await.unwrap();
    rows.iter()
        .filter(|r| r.plan_id.as_deref() == Some(plan))
        .map(|r| r.kind.clone())
        .collect()
}

/// Opens a real incident (a node that stops reporting) and returns its id.
async fn offline_incident(th: &TestHub, key: &str, mut agent: TestAgent) -> String {
    agent.stop().await;
    eventually(
        Duration::from_secs(30),
        "node-offline incident",
        || async move {
            let r: Value = http_client()
                .get(th.url("/api/v1/incidents?limit=50"))
                .bearer_auth(key)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            r["incidents"]
                .as_array()?
                .first()?
                .get("id")?
                .as_str()
                .map(str::to_owned)
        },
    )
    .await
}

fn fast_presence(c: &mut wingman_hub::HubConfig) {
    c.agents.heartbeat_interval_ms = 200;
    c.agents.offline_after_ms = 1_000;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_refuses_unsigned_forged_expired_and_replayed_commands() {
    let mut th = TestHub::start(|_| {}).await;
    let dir = th.dir.path().join("agent");
    let id = th.enroll(&dir).await;
    let agent_id = id.enrollment.agent_id.clone();
    // The enrollment pinned the hub's command key.
    let pinned = id
        .enrollment
        .command_key
        .clone()
        .expect("command key pinned");
    assert_eq!(pinned, hex::encode(th.hub.pki.command_public_key()));
    let mut agent = TestAgent::start(&dir);
    eventually(Duration::from_secs(10), "agent online", || {
        let th = &th;
        async move { (th.hub.registry.connected() == 1).then_some(()) }
    })
    .await;
    let restart = CommandBody::Docker(DockerAction::Restart {
        container: "web".into(),
        timeout_s: None,
    });
    let outcome = |r: AgentReply| match r {
        AgentReply::Action(o) => o.result,
        other => panic!("unexpected reply {other:?}"),
    };
    let wait = Duration::from_secs(10);

    // Unsigned actions are refused.
    let r = th
        .hub
        .registry
        .send_command(&agent_id, restart.clone(), wait)
        .await
        .unwrap();
    let r = outcome(r);
    assert!(r.refused && !r.ok, "{r:?}");
    assert!(r.detail.contains("must be signed"), "{}", r.detail);

    let now = wingman_agent::now_ms() / 1000;
    let sign = |nonce: u8, issued_at: i64, expires_at: i64, audience: &str| {
        th.hub
            .pki
            .sign_command(wingman_agent::command_sig::CommandToSign {
                body_bytes: wingman_protocol::encode_body(&restart).unwrap(),
                audience: audience.into(),
                plan_hash: [1; 32],
                step_hash: [2; 32],
                issued_at,
                expires_at,
                nonce: [nonce; 16],
            })
    };
    let send = |cmd| {
        let th = &th;
        let agent_id = agent_id.clone();
        async move {
            outcome(
                th.hub
                    .registry
                    .send_signed(&agent_id, cmd, Duration::from_secs(10))
                    .await
                    .unwrap(),
            )
        }
    };
    // Expired.
    let r = send(sign(1, now - 300, now - 200, &agent_id)).await;
    assert!(r.refused && r.detail.contains("expired"), "{r:?}");
    // For another agent.
    let r = send(sign(2, now, now + 60, "someone-else")).await;
    assert!(
        r.refused && r.detail.contains("is for someone-else"),
        "{r:?}"
    );
    // Tampered after signing (the body changed: a restart became a remove).
    let mut forged = sign(3, now, now + 60, &agent_id);
    forged.body_bytes = wingman_protocol::encode_body(&CommandBody::Docker(DockerAction::Remove {
        container: "web".into(),
        force: true,
    }))
    .unwrap();
    let r = send(forged).await;
    assert!(
        r.refused && r.detail.contains("bad command signature"),
        "{r:?}"
    );
    // Signed by a key the agent never pinned.
    let other = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[9; 32]).unwrap();
    let foreign = wingman_agent::command_sig::sign(
        &other,
        wingman_agent::command_sig::CommandToSign {
            body_bytes: wingman_protocol::encode_body(&restart).unwrap(),
            audience: agent_id.clone(),
            plan_hash: [1; 32],
            step_hash: [2; 32],
            issued_at: now,
            expires_at: now + 60,
            nonce: [4; 16],
        },
    );
    let r = send(foreign).await;
    assert!(r.refused && r.detail.contains("unknown key"), "{r:?}");
    // A valid one passes the guard and reaches the executor (which finds
    // no such container, or no engine), and a replay of it is refused.
    let valid = sign(5, now, now + 60, &agent_id);
    let r = send(valid.clone()).await;
    assert!(!r.ok && !r.detail.starts_with("refused"), "{r:?}");
    let r = send(valid).await;
    assert!(r.refused && r.detail.contains("replayed"), "{r:?}");

    agent.stop().await;
    th.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_head_an_agent_keeps_exposes_a_rewritten_chain() {
    let mut th = TestHub::start(|_| {}).await;
    let dir = th.dir.path().join("agent");
    th.enroll(&dir).await;
    let mut agent = TestAgent::start(&dir);
    // Entries appended while the agent is connected reach it as heads.
    for n in 0..3 {
        th.hub
            .audit
            .record(
                "user:admin",
                wingman_hub::control::audit::AuditKind::IncidentAcknowledged,
                Some(&format!("inc-{n}")),
                json!({}),
            )
            .await
            .unwrap();
    }
    let kept = dir.join(wingman_agent::guard::AUDIT_HEAD_FILE);
    eventually(
        Duration::from_secs(10),
        "audit head kept by the agent",
        || {
            let kept = kept.clone();
            async move {
                let s = std::fs::read_to_string(&kept).ok()?;
                s.contains("seq = 3").then_some(())
            }
        },
    )
    .await;
    agent.stop().await;
    assert!(th.hub.audit.alerts().is_empty());

    // Rewrite the whole chain consistently (it verifies on its own): drop
    // the entries and append different ones, as someone with database access
    // could. Only the head the agent kept tells.
    let url = th.hub.config.database_url();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("DROP TRIGGER IF EXISTS audit_log_no_delete")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_log")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    th.stop().await;
    // The same hub (data dir) again, on a fresh port the agent is told of.
    let config = (*th.hub.config).clone();
    let old_addr = th.quic.to_string();
    let dir_keep = std::mem::replace(&mut th.dir, tempfile::tempdir().unwrap());
    let mut th = TestHub::start_with(config, dir_keep).await;
    let record = dir.join(wingman_agent::state::ENROLLMENT_FILE);
    let text = std::fs::read_to_string(&record).unwrap();
    std::fs::write(&record, text.replace(&old_addr, &th.quic.to_string())).unwrap();
    for n in 0..4 {
        th.hub
            .audit
            .record(
                "user:mallory",
                wingman_hub::control::audit::AuditKind::IncidentResolved,
                Some(&format!("inc-{n}")),
                json!({}),
            )
            .await
            .unwrap();
    }
    assert!(wingman_hub::audit::verify(&th.hub.store).await.is_ok());
    let mut agent = TestAgent::start(&dir);
    let alerts = eventually(Duration::from_secs(10), "rewrite detected", || {
        let th = &th;
        async move {
            let a = th.hub.audit.alerts();
            (!a.is_empty()).then_some(a)
        }
    })
    .await;
    assert!(alerts[0].contains("kept entry 3"), "{alerts:?}");
    agent.stop().await;
    th.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_requests_are_checked_at_the_http_edge() {
    let mut th = TestHub::start(fast_presence).await;
    let key = th.api_key().await;
    let dir = th.dir.path().join("agent");
    th.enroll(&dir).await;
    let agent = TestAgent::start(&dir);
    eventually(Duration::from_secs(10), "agent online", || {
        let th = &th;
        async move { (th.hub.registry.connected() == 1).then_some(()) }
    })
    .await;
    // The node's own policy reaches the inventory: by default it refuses
    // every destructive action, so the hub refuses them before asking.
    let allows = eventually(Duration::from_secs(10), "agent policy fact", || {
        let th = &th;
        async move {
            let inv = wingman_hub::plans::build_inventory(&th.hub.store)
                .await
                .ok()?;
            inv.nodes.values().next()?.agent_allows_destructive
        }
    })
    .await;
    assert!(!allows);
    let incident = offline_incident(&th, &key, agent).await;
    let node = th.hub.store.list_agents().await.unwrap()[0]
        .hostname
        .clone();

    // Guide mode (the default): the plan is a checklist; nothing executes.
    let manual = json!({"title": "Look at it", "steps": [
        {"manual": "Check the node's power", "node": node, "command": "ipmitool power status"},
        {"manual": "Write it down"}
    ]});
    let (s, p) = propose(&th, &key, &incident, manual.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let plan = p["plan"].clone();
    let pid = plan["id"].as_str().unwrap().to_owned();
    assert_eq!(plan["mode"], "guide");
    assert_eq!(plan["steps"][0]["command"], "ipmitool power status");
    let (s, e) = step(&th, &key, &pid, 1, "execute").await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let (s, _) = step(&th, &key, &pid, 1, "done").await;
    assert_eq!(s, StatusCode::OK);
    // Steps run in order: 2 before... is fine now; done twice is refused.
    let (s, e) = step(&th, &key, &pid, 1, "done").await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let (s, p) = step(&th, &key, &pid, 2, "done").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p["plan"]["status"], "completed");
    assert_eq!(
        plan_audit(&th, &pid).await,
        [
            "plan_created",
            "plan_validated",
            "execution_refused",
            "manual_step_done",
            "manual_done_refused",
            "manual_step_done",
            "plan_completed"
        ]
    );

    // Invalid plans are refused with every problem, and audited.
    let (s, e) = propose(
        &th,
        &key,
        &incident,
        json!({"title": "bad", "steps": [
            {"action": "docker.nuke", "params": {}},
            {"action": "docker.restart", "params": {"node": "nowhere", "container": "x", "timeout_s": null}}
        ]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let msg = e["error"].as_str().unwrap();
    assert!(msg.contains("step 1") && msg.contains("step 2"), "{msg}");
    let (s, _) = propose(&th, &key, "inc-nope", manual.clone()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = propose(&th, &key, &incident, json!({"skill": "x", "model": true})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Assist mode: approvals are bound to the hashes shown, and the CSRF
    // token is required from browser sessions.
    let (s, e) = set_policy(&th, &key, json!({"mode": "autonomous"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, _) = set_policy(&th, &key, json!({"mode": "assist"})).await;
    assert_eq!(s, StatusCode::OK);
    let (_, p) = propose(
        &th,
        &key,
        &incident,
        json!({"title": "restart", "steps": [{"manual": "power-cycle it"}]}),
    )
    .await;
    let pid2 = p["plan"]["id"].as_str().unwrap().to_owned();
    let (client, cookie) = th.browser_session().await;
    let form = [("plan_hash", "x"), ("step_hash", "y")];
    let r = client
        .post(th.url(&format!("/plans/{pid2}/steps/1/approve")))
        .header("cookie", &cookie)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "approve form without CSRF"
    );
    let r = client
        .post(th.url(&format!("/api/v1/plans/{pid2}/steps/1/approve")))
        .header("cookie", &cookie)
        .json(&json!({"plan_hash": "x", "step_hash": "y"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "API approve with a session, no CSRF header"
    );
    let r = client
        .post(th.url("/settings/policy"))
        .header("cookie", &cookie)
        .form(&[("mode", "guide"), ("approval_ttl_s", "900")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "policy form without CSRF"
    );
    // Bad bodies get a sentence, as JSON.
    for (path, body) in [
        (
            format!("/api/v1/plans/{pid2}/steps/1/approve"),
            "{\"plan_hash\": 1",
        ),
        (
            format!("/api/v1/plans/{pid2}/reject"),
            "{\"step\": \"one\"}",
        ),
        (format!("/api/v1/plans/{pid2}/revise"), "{\"steps\": \"x\"}"),
        (
            format!("/api/v1/incidents/{incident}/plans"),
            "{\"nope\": true}",
        ),
    ] {
        let r = http_client()
            .post(th.url(&path))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        let e: Value = r.json().await.unwrap();
        assert!(
            e["error"].as_str().unwrap().starts_with("invalid "),
            "{path}: {e}"
        );
    }
    // A manual step is never approved for execution.
    let (s, e) = approve(&th, &key, &p["plan"], 1, None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(e["error"].as_str().unwrap().contains("manual step"), "{e}");

    // A changed plan voids its approvals. The node is back online; approve
    // a read-only step, then revise the plan.
    let mut agent = TestAgent::start(&dir);
    eventually(Duration::from_secs(10), "node online again", || {
        let th = &th;
        async move {
            let a = th.hub.store.list_agents().await.ok()?;
            a.first()?.online.then_some(())
        }
    })
    .await;
    let (s, p) = propose(
        &th,
        &key,
        &incident,
        json!({"title": "check ssh", "steps": [
            {"action": "host.unit_status", "params": {"node": node, "unit": "ssh.service"}}
        ]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let v1 = p["plan"].clone();
    let v1_id = v1["id"].as_str().unwrap().to_owned();
    let (s, e) = approve(&th, &key, &v1, 1, None).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert_eq!(
        get_plan(&th, &key, &v1_id).await["steps"][0]["approved_by"],
        "admin"
    );
    let r = http_client()
        .post(th.url(&format!("/api/v1/plans/{v1_id}/revise")))
        .bearer_auth(&key)
        .json(&json!({"steps": [
            {"action": "host.unit_status", "params": {"node": node, "unit": "sshd.service"}}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v2: Value = r.json().await.unwrap();
    let v2 = v2["plan"].clone();
    let v2_id = v2["id"].as_str().unwrap().to_owned();
    assert_ne!(v2["plan_hash"], v1["plan_hash"]);
    assert!(v2["steps"][0]["approved_by"].is_null());
    let old = get_plan(&th, &key, &v1_id).await;
    assert_eq!(old["status"], "superseded", "{old}");
    assert!(old["steps"][0]["approved_by"].is_null(), "{old}");
    // The old approval, and the old version, can no longer be used.
    let (s, e) = step(&th, &key, &v1_id, 1, "execute").await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let (s, e) = approve(&th, &key, &v1, 1, None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let (s, e) = step(&th, &key, &v2_id, 1, "execute").await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("no valid approval"),
        "{e}"
    );
    let kinds = plan_audit(&th, &v1_id).await;
    assert!(
        kinds.contains(&"approvals_invalidated".to_string()),
        "{kinds:?}"
    );
    // A revision that changes nothing, or of a finished plan, is refused.
    let r = http_client()
        .post(th.url(&format!("/api/v1/plans/{v2_id}/revise")))
        .bearer_auth(&key)
        .json(&json!({"title": "check ssh", "steps": [
            {"action": "host.unit_status", "params": {"node": node, "unit": "sshd.service"}}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = http_client()
        .post(th.url(&format!("/api/v1/plans/{v1_id}/revise")))
        .bearer_auth(&key)
        .json(&json!({"steps": [{"manual": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    agent.stop().await;

    // The dashboard shows the plans; the policy page renders.
    let html = client
        .get(th.url(&format!("/incidents/{incident}")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(&pid) && html.contains(&pid2),
        "plans on the incident page"
    );
    assert!(html.contains("ipmitool power status"));
    let html = client
        .get(th.url("/settings/policy"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("docker.restart") && html.contains("Assist (approved steps run)"));
    // Rejection stops the plan, and is audited with the reason.
    let r = client
        .post(th.url(&format!("/plans/{pid2}/reject")))
        .header("cookie", &cookie)
        .form(&[("csrf", "csrf-test"), ("reason", "not now")])
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success() || r.status().is_redirection(),
        "{}",
        r.status()
    );
    let p = get_plan(&th, &key, &pid2).await;
    assert_eq!(p["status"], "stopped");
    assert!(p["status_detail"].as_str().unwrap().contains("not now"));
    assert!(
        plan_audit(&th, &pid2)
            .await
            .contains(&"plan_rejected".to_string())
    );
    th.stop().await;
}
