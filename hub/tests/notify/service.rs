//! The notification service inside a running hub: settings saved through
//! the API (secrets write-only, kept with `{"set": true}`), "send test",
//! the SSRF guard refusing a loopback receiver until the admin allows it,
//! an incident transition delivered to a loopback ntfy, and non-admins
//! refused.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::common::recording_server;
use crate::common::{TestHub, eventually, http_client};

const TOKEN: &str = "tk_canary_notify_token_42";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_test_send_and_incident_delivery_through_the_hub() {
    let (addr, rec) = recording_server("/homelab").await;
    let mut th = TestHub::start(|c| {
        c.pve.webhook_secret = Some(wingman_hub::notify::Secret::new(
            "webhook-secret-0123456789",
        ));
    })
    .await;
    let key = th.api_key().await;
    let c = http_client();
    let get = || async {
        c.get(th.url("/api/v1/notifications"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let put = |doc: Value, key: String| {
        c.put(th.url("/api/v1/notifications"))
            .bearer_auth(key)
            .json(&doc)
            .send()
    };
    let v = get().await;
    assert_eq!(v["source"], "file", "{v}");
    assert_eq!(v["config"]["channels"].as_array().unwrap().len(), 0);

    // A loopback receiver without allow_loopback: saved, but sending is refused.
    let server = format!("http://{addr}");
    let doc = json!({
        "channels": [{"kind": "ntfy", "name": "phone", "server": server, "topic": "homelab", "token": TOKEN}],
        "routes": [{"name": "all", "channels": ["phone"], "min_severity": "warning"}],
        "dashboard_url": "https://wingman.test"
    });
    let r = put(doc.clone(), key.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let r = c
        .post(th.url("/api/v1/notifications/channels/phone/test"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("loopback"));
    assert!(rec.requests().is_empty());

    // The admin allows it; the token is kept with {"set": true}.
    let v = get().await;
    assert_eq!(v["source"], "dashboard");
    let mut ch = v["config"]["channels"][0].clone();
    assert_eq!(ch["token"], json!({"set": true}));
    assert!(!v.to_string().contains(TOKEN), "{v}");
    ch["allow_loopback"] = json!(true);
    let mut doc2 = v["config"].clone();
    doc2["channels"] = json!([ch]);
    let r = put(doc2, key.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let r: Value = c
        .post(th.url("/api/v1/notifications/channels/phone/test"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let reqs = rec.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    // A marker with no stored value is refused with a sentence.
    let bad = json!({"channels": [{"kind": "ntfy", "name": "other", "server": "https://ntfy.sh", "topic": "x", "token": {"set": true}}]});
    let r = put(bad, key.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("enter it again"));

    // A non-admin may look but not change or test.
    wingman_hub::commands::add_user(&th.hub, "viewer", "correct-horse-viewer", "viewer", false)
        .await
        .unwrap();
    let viewer = wingman_hub::commands::create_api_key(&th.hub, "v", "viewer", 1)
        .await
        .unwrap();
    let r = put(json!({"channels": []}), viewer.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // An incident (a failed backup pushed by PVE) is delivered.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let r = c
        .post(th.url("/ingest/pve/notify"))
        .header("authorization", "Bearer webhook-secret-0123456789")
        .json(&json!({"title": "vzdump backup status (pve3): backup failed", "message": "ERROR: Backup of VM 300 failed - job aborted",
               "severity": "error", "timestamp": now_s, "fields": {"type": "vzdump", "hostname": "pve3"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let n = eventually(Duration::from_secs(10), "incident notification", || {
        let rec = rec.clone();
        async move { rec.requests().into_iter().nth(1) }
    })
    .await;
    let body = n.text();
    assert!(body.contains("pve3"), "{body}");
    assert!(
        n.header("click")
            .unwrap_or("")
            .starts_with("https://wingman.test/incidents/"),
        "{:?}",
        n.headers
    );
    let v = get().await;
    assert!(v["deliveries"].as_array().unwrap().len() >= 2, "{v}");
    // The stored document holds the secret (the database is the service's);
    // the API never shows it.
    let stored = th.hub.store.get_setting("notify").await.unwrap().unwrap();
    assert!(stored.value.contains(TOKEN));
    assert!(!v.to_string().contains(TOKEN));
    th.shutdown.cancel();
    th.stop().await;
}
