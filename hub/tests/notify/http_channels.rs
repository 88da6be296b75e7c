//! Every HTTP service against a loopback server that checks the exact
//! path, headers and body.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use base64::Engine as _;
use ring::hmac;
use serde_json::json;
use std::sync::{Arc, Mutex};

use super::common::{channel, now, recording_server, sample, serve};
use super::subject::{ChannelKind, Notification, SendError, Severity, Transition};

const BODY: &str =
    "Severity: critical | Nodes: pve1\n\nThe pool rpool is 93% full.\nBackups will fail tonight.";

#[tokio::test]
async fn ntfy_publish_with_token() {
    let (addr, rec) = recording_server("/wingman-alerts").await;
    let ch = channel(&format!(
        r#"kind = "ntfy"
name = "phone"
server = "http://{addr}"
topic = "wingman-alerts"
token = "tk_abc123"
allow_loopback = true"#
    ));
    assert_eq!(ch.kind(), ChannelKind::Ntfy);
    let sent = ch
        .send(&sample(Severity::Critical, Transition::Opened))
        .await
        .unwrap();
    assert_eq!(sent.status, 200);
    let reqs = rec.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/wingman-alerts");
    assert_eq!(r.header("title"), Some("Opened: Disk almost full on pve1"));
    assert_eq!(r.header("priority"), Some("5"));
    assert_eq!(r.header("tags"), Some("rotating_light,wingman,pve1"));
    assert_eq!(
        r.header("click"),
        Some("https://wingman.lan/incidents/inc-42")
    );
    assert_eq!(r.header("authorization"), Some("Bearer tk_abc123"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.text(), BODY);
}

#[tokio::test]
async fn ntfy_basic_auth_priorities_and_utf8_title() {
    let (addr, rec) = recording_server("/ntfy/alerts").await;
    let ch = channel(&format!(
        r#"kind = "ntfy"
name = "phone"
server = "http://{addr}/ntfy/"
topic = "alerts"
username = "wingman"
password = "p@ss"
allow_loopback = true"#
    ));
    let mut resolved = sample(Severity::Critical, Transition::Resolved);
    resolved.title = "Resolved: Überhitzung auf pve1".to_owned();
    ch.send(&resolved).await.unwrap();
    ch.send(&sample(Severity::Warning, Transition::Escalated))
        .await
        .unwrap();
    ch.send(&sample(Severity::Info, Transition::Opened))
        .await
        .unwrap();
    let reqs = rec.requests();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("wingman:p@ss")
    );
    assert_eq!(reqs[0].header("authorization"), Some(basic.as_str()));
    assert_eq!(reqs[0].header("priority"), Some("2"));
    assert_eq!(
        reqs[0].header("tags"),
        Some("white_check_mark,wingman,pve1")
    );
    let title = reqs[0].header("title").unwrap();
    let b64 = title
        .strip_prefix("=?UTF-8?B?")
        .and_then(|t| t.strip_suffix("?="))
        .unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(
        String::from_utf8(decoded).unwrap(),
        "Resolved: Überhitzung auf pve1"
    );
    assert_eq!(reqs[1].header("priority"), Some("4"));
    assert_eq!(reqs[1].header("tags"), Some("warning,wingman,pve1"));
    assert_eq!(reqs[2].header("priority"), Some("3"));
}

#[tokio::test]
async fn gotify_message() {
    let (addr, rec) = recording_server("/message").await;
    let ch = channel(&format!(
        r#"kind = "gotify"
name = "lan-gotify"
server = "http://{addr}"
token = "AppTokenXYZ"
allow_loopback = true"#
    ));
    ch.send(&sample(Severity::Critical, Transition::Opened))
        .await
        .unwrap();
    let mut test = Notification::test(now());
    test.url = None;
    ch.send(&test).await.unwrap();
    let reqs = rec.requests();
    assert_eq!(reqs[0].path, "/message");
    assert_eq!(reqs[0].header("x-gotify-key"), Some("AppTokenXYZ"));
    assert_eq!(reqs[0].header("content-type"), Some("application/json"));
    assert_eq!(
        reqs[0].json(),
        json!({
            "title": "Opened: Disk almost full on pve1",
            "message": BODY,
            "priority": 8,
            "extras": { "client::notification": { "click": { "url": "https://wingman.lan/incidents/inc-42" } } }
        })
    );
    assert_eq!(
        reqs[1].json(),
        json!({
            "title": "Wingman test notification",
            "message": "If you can read this, the channel works.",
            "priority": 4
        })
    );
}

#[tokio::test]
async fn discord_embed() {
    let (addr, rec) = recording_server("/api/webhooks/123/tokSECRET").await;
    let ch = channel(&format!(
        r#"kind = "discord"
name = "discord"
webhook_url = "http://{addr}/api/webhooks/123/tokSECRET"
allow_loopback = true"#
    ));
    ch.send(&sample(Severity::Critical, Transition::Opened))
        .await
        .unwrap();
    ch.send(&sample(Severity::Warning, Transition::Resolved))
        .await
        .unwrap();
    let reqs = rec.requests();
    assert_eq!(reqs[0].path, "/api/webhooks/123/tokSECRET");
    assert_eq!(reqs[0].header("content-type"), Some("application/json"));
    assert_eq!(
        reqs[0].json(),
        json!({
            "embeds": [{
                "title": "Opened: Disk almost full on pve1",
                "description": BODY,
                "color": 0xE74C3C,
                "url": "https://wingman.lan/incidents/inc-42"
            }],
            "allowed_mentions": { "parse": [] }
        })
    );
    assert_eq!(reqs[1].json()["embeds"][0]["color"], json!(0x2ECC71));
    assert!(!format!("{ch:?}").contains("tokSECRET"));
}

#[tokio::test]
async fn slack_blocks_escaped() {
    let (addr, rec) = recording_server("/services/T000/B000/XXXX").await;
    let ch = channel(&format!(
        r#"kind = "slack"
name = "slack"
webhook_url = "http://{addr}/services/T000/B000/XXXX"
allow_loopback = true"#
    ));
    let mut n = sample(Severity::Warning, Transition::Opened);
    n.title = "Opened: <script> & friends".to_owned();
    ch.send(&n).await.unwrap();
    let r = &rec.requests()[0];
    assert_eq!(r.path, "/services/T000/B000/XXXX");
    assert_eq!(
        r.json(),
        json!({
            "text": ":warning: Opened: <script> & friends",
            "blocks": [
                { "type": "section", "text": { "type": "mrkdwn",
                  "text": ":warning: *<https://wingman.lan/incidents/inc-42|Opened: &lt;script&gt; &amp; friends>*" } },
                { "type": "section", "text": { "type": "mrkdwn",
                  "text": "Severity: warning | Nodes: pve1\n\nThe pool rpool is 93% full.\nBackups will fail tonight." } }
            ]
        })
    );
}

/// What the HMAC-checking webhook receiver saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(HeaderMap, serde_json::Value)>>>);

const HOOK_SECRET: &[u8] = b"shared-hmac-secret";

/// A receiver that verifies the signature itself (independently of the
/// crate's helper) and rejects stale timestamps.
async fn verifying_hook(
    State(seen): State<Seen>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let ts = headers
        .get("x-wingman-timestamp")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let sig = headers
        .get("x-wingman-signature")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|v| hex::decode(v).ok());
    let (Some(ts), Some(sig)) = (ts, sig) else {
        return StatusCode::UNAUTHORIZED;
    };
    let age = time::OffsetDateTime::now_utc().unix_timestamp() - ts;
    if !(-300..=300).contains(&age) {
        return StatusCode::UNAUTHORIZED;
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, HOOK_SECRET);
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(&body);
    if hmac::verify(&key, &signed, &sig).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    seen.0
        .lock()
        .unwrap()
        .push((headers, serde_json::from_slice(&body).unwrap()));
    StatusCode::NO_CONTENT
}

async fn hook_server() -> (std::net::SocketAddr, Seen) {
    let seen = Seen::default();
    let router = Router::new()
        .route("/hooks/wingman", post(verifying_hook))
        .with_state(seen.clone());
    (serve(router).await, seen)
}

#[tokio::test]
async fn webhook_signed_and_verified_by_receiver() {
    let (addr, seen) = hook_server().await;
    let ch = channel(&format!(
        r#"kind = "webhook"
name = "hook"
url = "http://{addr}/hooks/wingman"
secret = "shared-hmac-secret"
allow_loopback = true"#
    ));
    let sent = ch
        .send(&sample(Severity::Critical, Transition::Escalated))
        .await
        .unwrap();
    assert_eq!(sent.status, 204);
    let seen = seen.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (headers, body) = &seen[0];
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(headers["x-wingman-event"], "incident");
    assert_eq!(headers["x-wingman-delivery"], "n-1");
    assert_eq!(
        *body,
        json!({
            "version": 1,
            "id": "n-1",
            "type": "incident",
            "created": 1_767_571_200,
            "title": "Escalated: Disk almost full on pve1",
            "text": "Severity: critical | Nodes: pve1\n\nThe pool rpool is 93% full.\nBackups will fail tonight.",
            "severity": "critical",
            "url": "https://wingman.lan/incidents/inc-42",
            "incident": {
                "id": "inc-42",
                "title": "Disk almost full on pve1",
                "severity": "critical",
                "nodes": ["pve1"],
                "narrative": "The pool rpool is 93% full.\nBackups will fail tonight.",
                "url": "https://wingman.lan/incidents/inc-42"
            },
            "transition": "escalated"
        })
    );
}

#[tokio::test]
async fn webhook_wrong_secret_is_a_clear_error() {
    let (addr, seen) = hook_server().await;
    let ch = channel(&format!(
        r#"kind = "webhook"
name = "hook"
url = "http://{addr}/hooks/wingman"
secret = "not-the-secret"
allow_loopback = true"#
    ));
    let err = ch
        .send(&sample(Severity::Warning, Transition::Opened))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "webhook answered 401 Unauthorized: check the shared secret on both sides \
         (and the receiver's clock, the timestamp is signed)"
    );
    assert!(!err.is_retryable());
    assert!(seen.0.lock().unwrap().is_empty());
}

#[tokio::test]
async fn webhook_helpers_roundtrip() {
    use super::subject::channels::webhook::{signature, verify_signature};
    let sig = signature(b"k", 1700, b"{}");
    assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
    assert!(verify_signature(b"k", 1700, b"{}", &sig));
    assert!(!verify_signature(b"k", 1701, b"{}", &sig));
    assert!(!verify_signature(b"other", 1700, b"{}", &sig));
}

#[tokio::test]
async fn ntfy_401_sentence_and_redirect_not_followed() {
    let (addr, rec) = recording_server("/alerts").await;
    rec.script(&[401, 302]);
    let ch = channel(&format!(
        r#"kind = "ntfy"
name = "phone"
server = "http://{addr}"
topic = "alerts"
token = "tk_wrong"
allow_loopback = true"#
    ));
    let n = sample(Severity::Warning, Transition::Opened);
    let err = ch.send(&n).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("ntfy answered 401 Unauthorized: check the token"),
        "{err}"
    );
    let err = ch.send(&n).await.unwrap_err();
    assert!(matches!(err, SendError::Status { status: 302, .. }));
    assert!(
        err.to_string().contains("redirects are not followed"),
        "{err}"
    );
    assert_eq!(rec.requests().len(), 2);
}

#[tokio::test]
async fn wrong_path_is_reported_as_not_found() {
    let (addr, _rec) = recording_server("/message").await;
    let ch = channel(&format!(
        r#"kind = "gotify"
name = "g"
server = "http://{addr}/gotify"
token = "t"
allow_loopback = true"#
    ));
    let err = ch
        .send(&sample(Severity::Warning, Transition::Opened))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Gotify answered 404 Not Found: check the server URL"
    );
}
