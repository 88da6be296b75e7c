//! Proxmox VE end to end at the hub: an agent on a (simulated) PVE node —
//! the PVE API test server that follows the 9.1 schema, with tasks written
//! in the real on-disk layout — reports guests, tasks and storage; the hub
//! sends guest actions over the authenticated link and gets the task UPID
//! back; a destructive action is refused by the node's own policy and never
//! reaches the API; a guest stopping with no operator task and a degraded
//! ZFS pool open incidents; the cluster view groups the nodes; and the PVE
//! notification webhook accepts the right secret only.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use wingman_protocol::HostKind;

use crate::common::{TestAgent, TestHub, eventually, http_client};
use crate::pve_server::{PveTestServer, SimState, zfs_detail_degraded};

const ACTOR: &str = "wingman@pve!actor";
const ACTOR_SECRET: &str = "22222222-2222-4222-8222-222222222222";

async fn incidents(th: &TestHub, key: &str) -> Vec<Value> {
    let r: Value = http_client()
        .get(th.url("/api/v1/incidents?limit=100"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["incidents"].as_array().cloned().unwrap_or_default()
}

/// The first incident whose detail mentions every word of `all`.
async fn incident_about(th: &TestHub, key: &str, all: &[&str]) -> Option<(String, Value)> {
    for i in incidents(th, key).await {
        let id = i["id"].as_str()?.to_owned();
        let d: Value = http_client()
            .get(th.url(&format!("/api/v1/incidents/{id}")))
            .bearer_auth(key)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let text = d.to_string();
        if all.iter().all(|w| text.contains(w)) {
            return Some((id, d));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_node_facts_actions_incidents_and_cluster_view() {
    let tasks = tempfile::tempdir().unwrap();
    let pve = PveTestServer::start(SimState::homelab()).await.unwrap();
    pve.attach_task_dir(tasks.path()).unwrap();
    let mut th = TestHub::start(|_| {}).await;
    let key = th.api_key().await;
    let dir = th.dir.path().join("agent");
    let id = th.enroll(&dir).await;
    let agent_id = id.enrollment.agent_id.clone();
    let (base, fp, tasks_dir) = (
        pve.base_url.clone(),
        wingman_agent::pve::client::format_fingerprint(&pve.fingerprint),
        tasks.path().to_path_buf(),
    );
    let mut agent = TestAgent::start_kind(&dir, HostKind::Proxmox, move |c| {
        c.proxmox.enabled = true;
        c.proxmox.base_url = base;
        c.proxmox.token_id = Some(ACTOR.into());
        c.proxmox.token_secret = Some(wingman_agent::config::Secret::new(ACTOR_SECRET));
        c.proxmox.fingerprint = Some(fp);
        c.proxmox.node = Some("pve1".into());
        c.proxmox.tasks_dir = tasks_dir;
        c.proxmox.interval_secs = 5;
        // Destructive actions are allowed on this node, except on VM 100.
        c.proxmox.policy.allow_destructive = true;
        c.proxmox.policy.denied_vmids = vec![100];
    });
    // Guests reach the hub (the node reports under its PVE name).
    eventually(Duration::from_secs(20), "guests at the hub", || {
        let th = &th;
        let agent_id = agent_id.clone();
        async move {
            let rows = th
                .hub
                .store
                .recent_facts(&agent_id, "pve_guest", 50)
                .await
                .ok()?;
            (rows.len() >= 4).then_some(())
        }
    })
    .await;
    let node = th.hub.store.get_agent(&agent_id).await.unwrap().unwrap();
    assert_eq!(node.hostname, "pve1");

    // The ZFS pool degrades: an incident opens on pve1.
    {
        let mut s = pve.state();
        s.zfs[0].health = "DEGRADED".into();
        s.zfs[0].detail = zfs_detail_degraded("rpool");
    }
    // (The incident may carry another title: the test machine's own load
    // can open a condition on pve1 first, which the pool then joins.)
    let incident = eventually(Duration::from_secs(30), "rpool incident", || {
        let th = &th;
        let key = key.clone();
        async move { incident_about(th, &key, &["rpool"]).await.map(|(id, _)| id) }
    })
    .await;
    // Assist mode; the hub even opts in to hard stops on pve1.
    let (s, e) = crate::plans::set_policy(
        &th,
        &key,
        json!({"mode": "assist", "destructive_opt_in": ["pve.stop on node:pve1"]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{e}");

    // A medium step (shut down CT 101, to relieve the pool) is approved,
    // signed, executed by the agent through the PVE API, and verified from
    // the guest facts that follow.
    let (s, p) = crate::plans::propose(
        &th,
        &key,
        &incident,
        json!({"title": "quiesce the DNS container", "steps": [
            {"action": "pve.snapshot_create", "params": {"node": "pve1", "vmid": 101, "name": "before_quiesce"}, "why": "a way back"},
            {"action": "pve.shutdown", "params": {"node": "pve1", "vmid": 101, "timeout_s": 30}, "why": "less I/O on rpool"}
        ]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let plan = p["plan"].clone();
    let pid = plan["id"].as_str().unwrap().to_owned();
    assert_eq!(plan["steps"][0]["risk"], "low");
    assert_eq!(plan["steps"][1]["risk"], "medium");
    assert_eq!(plan["steps"][1]["command"], "pct shutdown 101 --timeout 30");
    // Step 1: the snapshot, verified once the node reports it (the
    // snapshot task makes the agent re-read the guest's snapshot list).
    let (s, e) = crate::plans::approve(&th, &key, &plan, 1, None).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (s, e) = crate::plans::step(&th, &key, &pid, 1, "execute").await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let done = crate::plans::wait_step(&th, &key, &pid, 1, &["verified", "failed"]).await;
    assert_eq!(done["steps"][0]["state"], "verified", "{done}");
    let inv = wingman_hub::plans::build_inventory(&th.hub.store)
        .await
        .unwrap();
    let pve1 = &inv.nodes["pve1"];
    assert_eq!(pve1.guests[&101].snapshots, ["before_quiesce"]);
    assert_eq!(pve1.guests[&100].snapshots, ["before_upgrade"]);
    // The node reported its own policy: destructive actions allowed.
    assert_eq!(pve1.agent_allows_destructive, Some(true));
    // Step 2: the shutdown. An approval given before the policy changed is
    // void: executing needs a new one.
    let (s, e) = crate::plans::approve(&th, &key, &plan, 2, None).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (s, e) = crate::plans::set_policy(
        &th,
        &key,
        json!({"mode": "assist", "approval_ttl_s": 600, "destructive_opt_in": ["pve.stop on node:pve1"]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (s, e) = crate::plans::step(&th, &key, &pid, 2, "execute").await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("no valid approval"),
        "{e}"
    );
    assert!(
        crate::plans::plan_audit(&th, &pid)
            .await
            .contains(&"approvals_invalidated".to_string())
    );
    let (s, e) = crate::plans::approve(&th, &key, &plan, 2, None).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let t0 = std::time::Instant::now();
    let (s, e) = crate::plans::step(&th, &key, &pid, 2, "execute").await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let done = crate::plans::wait_step(&th, &key, &pid, 2, &["verified", "failed"]).await;
    eprintln!(
        "pve.shutdown: execute -> verified stopped from the guest facts in {:?}",
        t0.elapsed()
    );
    assert_eq!(done["steps"][1]["state"], "verified", "{done}");
    assert_eq!(done["status"], "completed");
    let audit = th.hub.store.audit_entries(None, 0, 1000).await.unwrap();
    let executed = audit
        .iter()
        .rfind(|r| r.plan_id.as_deref() == Some(pid.as_str()) && r.kind == "step_executed")
        .expect("step_executed entry");
    assert!(
        executed.detail.contains("UPID:pve1:"),
        "{}",
        executed.detail
    );
    assert!(
        executed.detail.contains("vzshutdown"),
        "{}",
        executed.detail
    );
    // Read-only diagnostics run on the node too: the guest's configuration
    // (secrets redacted) and the shutdown task's log (templates and counts).
    let upid = executed
        .detail
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == '"')
        .find(|w| w.starts_with("UPID:"))
        .expect("upid")
        .to_owned();
    let (s, p) = crate::plans::propose(
        &th,
        &key,
        &incident,
        json!({"title": "look closer", "steps": [
            {"action": "pve.guest_config", "params": {"node": "pve1", "vmid": 101}},
            {"action": "pve.task_log", "params": {"node": "pve1", "upid": upid}}
        ]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let plan = p["plan"].clone();
    let diag = plan["id"].as_str().unwrap().to_owned();
    assert_eq!(plan["steps"][0]["risk"], "read_only");
    for n in 1..=2 {
        let (s, e) = crate::plans::approve(&th, &key, &plan, n, None).await;
        assert_eq!(s, StatusCode::OK, "{e}");
        let (s, e) = crate::plans::step(&th, &key, &diag, n, "execute").await;
        assert_eq!(s, StatusCode::OK, "{e}");
        crate::plans::wait_step(&th, &key, &diag, n, &["verified", "failed"]).await;
    }
    let done = crate::plans::get_plan(&th, &key, &diag).await;
    assert_eq!(done["status"], "completed", "{done}");
    let config = done["steps"][0]["result"].as_str().unwrap();
    assert!(config.contains("hostname=dns"), "{config}");
    assert!(config.contains("password=<redacted>"), "{config}");
    assert!(!config.contains("s3cret-root-pw"), "{config}");
    let log = done["steps"][1]["result"].as_str().unwrap();
    assert!(log.contains(" lines, ") && log.contains(" × "), "{log}");

    // ... and the full result is a stored fact.
    eventually(Duration::from_secs(10), "action result fact", || {
        let th = &th;
        let agent_id = agent_id.clone();
        async move {
            let rows = th
                .hub
                .store
                .recent_facts(&agent_id, "action_result", 5)
                .await
                .ok()?;
            rows.iter()
                .any(|(_, b)| b.contains("vzshutdown"))
                .then_some(())
        }
    })
    .await;

    // A destructive step (hard stop of VM 100): the hub allows it (opt-in,
    // the node reports destructive actions allowed, password again), the
    // node's own deny list refuses it, and it never reaches the PVE API.
    let (s, p) = crate::plans::propose(
        &th,
        &key,
        &incident,
        json!({"title": "hard stop", "steps": [
            {"action": "pve.stop", "params": {"node": "pve1", "vmid": 100}}
        ]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let plan = p["plan"].clone();
    let pid = plan["id"].as_str().unwrap().to_owned();
    assert_eq!(plan["steps"][0]["destructive"], true);
    let (s, e) = crate::plans::approve(&th, &key, &plan, 1, Some("correct-horse-battery")).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (s, e) = crate::plans::step(&th, &key, &pid, 1, "execute").await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let done = crate::plans::wait_step(&th, &key, &pid, 1, &["failed", "verified"]).await;
    assert_eq!(done["steps"][0]["state"], "failed", "{done}");
    let why = done["status_detail"].as_str().unwrap();
    assert!(why.contains("refused by the agent on pve1"), "{why}");
    assert!(why.contains("deny list"), "{why}");
    assert!(
        pve.state()
            .requests_matching("/qemu/100/status/stop")
            .is_empty()
    );
    // Guide mode again: the same kind of plan is a checklist only.
    let (s, _) = crate::plans::set_policy(&th, &key, json!({"mode": "guide"})).await;
    assert_eq!(s, StatusCode::OK);
    let (_, p) = crate::plans::propose(
        &th,
        &key,
        &incident,
        json!({"title": "start it again", "steps": [
            {"action": "pve.start", "params": {"node": "pve1", "vmid": 101}}
        ]}),
    )
    .await;
    let plan = p["plan"].clone();
    assert_eq!(plan["mode"], "guide");
    assert_eq!(plan["steps"][0]["command"], "pct start 101");
    let (s, e) = crate::plans::approve(&th, &key, &plan, 1, None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(e["error"].as_str().unwrap().contains("Guide mode"), "{e}");
    assert!(
        pve.state()
            .requests_matching("/lxc/101/status/start")
            .is_empty()
    );

    // Guest 100 stops with no operator task.
    {
        let mut s = pve.state();
        let g = s.guest_mut(100).unwrap();
        g.status = "stopped".into();
        g.uptime = 0;
    }
    // One situation on pve1 (same node, same window): the degraded pool
    // and the guest that stopped, with no operator task behind it.
    let detail = eventually(
        Duration::from_secs(30),
        "incident for rpool and guest 100",
        || {
            let th = &th;
            let key = key.clone();
            async move {
                incident_about(th, &key, &["rpool", "stopped unexpectedly"])
                    .await
                    .map(|(_, d)| d)
            }
        },
    )
    .await;
    let text = detail.to_string();
    assert!(text.contains("VM 100"), "{text}");
    // The shut-down container (an operator task) is not "unexpected".
    assert!(
        !text.contains("101 (dns) on pve1 stopped unexpectedly"),
        "{text}"
    );
    assert!(
        !text.contains("CT 101 (dns) on pve1 is stopped but expected"),
        "{text}"
    );

    // The cluster view: homelab with pve1 (agent) and pve2 (no agent).
    let cl: Value = http_client()
        .get(th.url("/api/v1/clusters"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let c = &cl["clusters"][0];
    assert_eq!(c["name"], "homelab", "{cl}");
    assert_eq!(c["quorate"], true);
    let nodes = c["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{cl}");
    assert_eq!(nodes[0]["name"], "pve1");
    assert_eq!(nodes[0]["agent_id"], agent_id.as_str());
    assert!(nodes[0]["guests"].as_u64().unwrap() >= 3, "{cl}");
    assert!(nodes[0]["incidents"].as_u64().unwrap() >= 1, "{cl}");
    assert_eq!(nodes[1]["name"], "pve2");
    assert!(nodes[1]["agent_id"].is_null());
    // The node's API lists its open incidents (the badges on its page).
    let n: Value = http_client()
        .get(th.url(&format!("/api/v1/nodes/{agent_id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!n["incidents"].as_array().unwrap().is_empty(), "{n}");
    // The webhook is off without a secret.
    let r = http_client()
        .post(th.url("/ingest/pve/notify"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    agent.stop().await;
    th.shutdown.cancel();
    th.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_webhook_needs_the_secret_stores_events_and_opens_incidents() {
    const SECRET: &str = "s3cret-webhook-token-0123456789";
    let mut th = TestHub::start(|c| {
        c.pve.webhook_secret = Some(wingman_hub::notify::Secret::new(SECRET));
    })
    .await;
    let key = th.api_key().await;
    let c = http_client();
    let body = json!({
        "source": "pve",
        "title": "vzdump backup status (pve1.lan): backup failed",
        "message": "ERROR: Backup of VM 101 failed - storage 'backup-nfs' is not online\nINFO: Backup job finished with errors\n",
        "severity": "error",
        "timestamp": 1_764_000_000,
        "fields": {"type": "vzdump", "hostname": "pve1", "job-id": "backup-nightly"}
    });
    let post = |auth: Option<&str>, body: String| {
        let mut rb = c
            .post(th.url("/ingest/pve/notify"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        rb.send()
    };
    assert_eq!(
        post(None, body.to_string()).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(Some("Bearer wrong-secret-0000000000"), body.to_string())
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let bearer = format!("Bearer {SECRET}");
    let r = post(Some(&bearer), body.to_string()).await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.json::<Value>().await.unwrap()["stored"], true);
    // PVE has no retry, but a resend (same key) is not stored twice.
    let r = post(Some(&bearer), body.to_string()).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["duplicate"], true);
    // Not the template: 400 with a sentence.
    let r = post(Some(&bearer), "{\"hello\": 1}".into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("template"));
    // Stored as a fact, masked.
    let n: Value = c
        .get(th.url("/api/v1/pve/notifications?node=pve1"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = n["notifications"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{n}");
    assert_eq!(items[0]["kind"], "vzdump");
    assert_eq!(items[0]["fact"]["Notification"]["job_id"], "backup-nightly");
    // The failed backup opens an incident.
    eventually(Duration::from_secs(10), "backup incident", || {
        let th = &th;
        let key = key.clone();
        async move {
            incidents(th, &key)
                .await
                .iter()
                .any(|i| {
                    i["title"]
                        .as_str()
                        .unwrap_or("")
                        .contains("Backup job on pve1 failed")
                })
                .then_some(())
        }
    })
    .await;
    // Counted in /metrics.
    let m = c
        .get(th.url("/metrics"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("wingman_hub_pve_webhooks_accepted_total 2"),
        "{m}"
    );
    assert!(
        m.contains("wingman_hub_pve_webhooks_refused_total 3"),
        "{m}"
    );
    th.shutdown.cancel();
    th.stop().await;
}
