//! The delivery shell: retries with backoff, records, drop-newest overflow
//! with an exact counter, and send_test sentences.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Semaphore, mpsc};

use super::common::{channel, now, recording_server, sample};
use super::subject::{
    Channel, ChannelKind, Delivery, DispatchConfig, Dispatcher, EnqueueOutcome, Notification,
    SendError, Sent, Severity, Transition,
};

fn fast() -> DispatchConfig {
    DispatchConfig {
        initial_backoff_ms: 10,
        max_backoff_ms: 40,
        ..DispatchConfig::default()
    }
}

fn delivery(channel: &str, id: &str) -> Delivery {
    let mut n = sample(Severity::Warning, Transition::Opened);
    n.id = id.to_owned();
    Delivery {
        channel: channel.to_owned(),
        notification: n,
    }
}

async fn ntfy_with(codes: &[u16]) -> (Arc<dyn Channel>, super::common::Recorder) {
    let (addr, rec) = recording_server("/t").await;
    rec.script(codes);
    let ch = channel(&format!(
        "kind = \"ntfy\"\nname = \"phone\"\nserver = \"http://{addr}\"\ntopic = \"t\"\nallow_loopback = true"
    ));
    (ch, rec)
}

#[tokio::test]
async fn retries_5xx_then_succeeds() {
    let (ch, rec) = ntfy_with(&[500, 503]).await;
    let d = Dispatcher::start(vec![ch], fast());
    let mut feed = d.subscribe();
    assert_eq!(d.enqueue(delivery("phone", "n-1")), EnqueueOutcome::Queued);
    let r = tokio::time::timeout(Duration::from_secs(10), feed.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(r.attempts, 3);
    assert_eq!(r.status, Some(200));
    assert_eq!(r.channel, "phone");
    assert_eq!(r.kind, Some(ChannelKind::Ntfy));
    assert_eq!(r.incident_id.as_deref(), Some("inc-42"));
    assert_eq!(r.notification_id, "n-1");
    assert_eq!(rec.requests().len(), 3);
    d.shutdown().await;
}

#[tokio::test]
async fn gives_up_after_max_attempts_and_not_on_4xx() {
    let (ch, rec) = ntfy_with(&[502, 502, 502, 502, 403]).await;
    let cfg = DispatchConfig {
        max_in_flight: 1,
        ..fast()
    };
    let d = Dispatcher::start(vec![ch], cfg);
    let mut feed = d.subscribe();
    d.enqueue(delivery("phone", "a"));
    d.enqueue(delivery("phone", "b"));
    let mut records = Vec::new();
    for _ in 0..2 {
        let r = tokio::time::timeout(Duration::from_secs(10), feed.recv())
            .await
            .unwrap()
            .unwrap();
        records.push(r);
    }
    d.shutdown().await;
    assert_eq!(rec.requests().len(), 5);
    let (a, b) = (&records[0], &records[1]);
    assert_eq!(
        (a.notification_id.as_str(), a.ok, a.attempts, a.status),
        ("a", false, 4, Some(502))
    );
    assert_eq!(
        a.error.as_deref(),
        Some(
            "ntfy answered 502 Bad Gateway: the service had an internal error; it will be retried"
        )
    );
    assert_eq!(
        (b.notification_id.as_str(), b.ok, b.attempts, b.status),
        ("b", false, 1, Some(403))
    );
}

/// A channel that blocks in `send` until released.
#[derive(Debug)]
struct Gate {
    started: mpsc::UnboundedSender<String>,
    release: Arc<Semaphore>,
}

#[async_trait]
impl Channel for Gate {
    fn name(&self) -> &str {
        "gate"
    }
    fn kind(&self) -> ChannelKind {
        ChannelKind::Webhook
    }
    async fn send(&self, n: &Notification) -> Result<Sent, SendError> {
        let _ = self.started.send(n.id.clone());
        self.release.acquire().await.unwrap().forget();
        Ok(Sent { status: 200 })
    }
}

#[tokio::test]
async fn overflow_drops_newest_and_counts_exactly() {
    let (started, mut started_rx) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let gate = Arc::new(Gate {
        started,
        release: release.clone(),
    });
    let cfg = DispatchConfig {
        queue_capacity: 2,
        max_in_flight: 1,
        ..fast()
    };
    let d = Dispatcher::start(vec![gate], cfg);
    assert_eq!(d.enqueue(delivery("gate", "1")), EnqueueOutcome::Queued);
    assert_eq!(started_rx.recv().await.unwrap(), "1");
    // One in flight (blocked); the queue holds exactly two more.
    assert_eq!(d.enqueue(delivery("gate", "2")), EnqueueOutcome::Queued);
    assert_eq!(d.enqueue(delivery("gate", "3")), EnqueueOutcome::Queued);
    assert_eq!(
        d.enqueue(delivery("gate", "4")),
        EnqueueOutcome::DroppedOverflow
    );
    assert_eq!(
        d.enqueue(delivery("gate", "5")),
        EnqueueOutcome::DroppedOverflow
    );
    assert_eq!(
        d.enqueue(delivery("nope", "6")),
        EnqueueOutcome::UnknownChannel
    );
    assert_eq!(d.dropped_overflow(), 2);
    release.add_permits(3);
    let records_before = d.records().len();
    assert_eq!(
        records_before, 1,
        "the unknown channel is recorded as failed"
    );
    d.shutdown().await;
    assert_eq!(started_rx.recv().await.unwrap(), "2");
    assert_eq!(started_rx.recv().await.unwrap(), "3");
    assert!(started_rx.recv().await.is_none());
}

#[tokio::test]
async fn send_test_sentences() {
    let (ch, rec) = ntfy_with(&[401]).await;
    let d = Dispatcher::start(vec![ch], fast());
    let err = d.send_test("phone").await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("ntfy answered 401 Unauthorized: check the token"),
        "{err}"
    );
    let ok = d.send_test("phone").await.unwrap();
    assert_eq!(ok.status, 200);
    let reqs = rec.requests();
    assert_eq!(reqs[1].header("title"), Some("Wingman test notification"));
    assert_eq!(reqs[1].header("tags"), Some("test_tube,wingman"));
    let err = d.send_test("nope").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "there is no notification channel named \"nope\""
    );
    let recs = d.records();
    assert_eq!(recs.len(), 2);
    assert!(!recs[0].ok && recs[1].ok);
    assert_eq!(recs[0].incident_id, None);
    let _ = Notification::test(now());
    d.shutdown().await;
}
