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
use wingman_hub::transport::AgentReply;
use wingman_protocol::pve::{GuestKind, GuestRef, PveAction, PveActionOp};
use wingman_protocol::{CommandBody, HostKind};

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

async fn command(th: &TestHub, agent: &str, action: PveAction) -> wingman_protocol::CommandResult {
    match th
        .hub
        .registry
        .send_command(agent, CommandBody::Pve(action), Duration::from_secs(60))
        .await
        .unwrap()
    {
        AgentReply::Result(r) => r,
        other => panic!("unexpected reply {other:?}"),
    }
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

    // A medium action runs and comes back with its task UPID and status.
    let r = command(
        &th,
        &agent_id,
        PveAction {
            guest: GuestRef {
                node: "pve1".into(),
                vmid: 101,
                kind: GuestKind::Lxc,
            },
            op: PveActionOp::Shutdown {
                timeout_s: Some(30),
            },
        },
    )
    .await;
    assert!(r.ok, "{r:?}");
    assert!(r.detail.contains("UPID:pve1:"), "{}", r.detail);
    assert!(r.detail.contains("vzshutdown"), "{}", r.detail);
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

    // A destructive action is refused by the node and never reaches PVE.
    let r = command(
        &th,
        &agent_id,
        PveAction {
            guest: GuestRef {
                node: "pve1".into(),
                vmid: 100,
                kind: GuestKind::Qemu,
            },
            op: PveActionOp::Stop,
        },
    )
    .await;
    assert!(!r.ok);
    assert!(r.detail.contains("refused"), "{}", r.detail);
    assert!(
        pve.state()
            .requests_matching("/qemu/100/status/stop")
            .is_empty()
    );

    // Guest 100 stops with no operator task; the ZFS pool degrades.
    {
        let mut s = pve.state();
        let g = s.guest_mut(100).unwrap();
        g.status = "stopped".into();
        g.uptime = 0;
        s.zfs[0].health = "DEGRADED".into();
        s.zfs[0].detail = zfs_detail_degraded("rpool");
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
                let list = incidents(th, &key).await;
                let id = list
                    .iter()
                    .find(|i| i["title"].as_str().unwrap_or("").contains("rpool"))?["id"]
                    .as_str()?
                    .to_string();
                let d: Value = http_client()
                    .get(th.url(&format!("/api/v1/incidents/{id}")))
                    .bearer_auth(&key)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                d.to_string().contains("stopped unexpectedly").then_some(d)
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
