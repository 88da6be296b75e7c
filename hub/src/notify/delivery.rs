//! The async delivery shell: a bounded queue in front of the channels,
//! bounded concurrency, retries with exponential backoff for retryable
//! failures (timeouts, connection errors, HTTP 5xx/429, SMTP 4xx), a record
//! of every outcome, and "send test".
//!
//! Overflow policy: [`OverflowPolicy::DropNewest`] — when the queue is
//! full, the delivery being enqueued is dropped and counted
//! ([`Dispatcher::dropped_overflow`]); queued work is never displaced.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use time::OffsetDateTime;
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio::task::{JoinHandle, JoinSet};

use super::channel::{Channel, ChannelKind, SendError, Sent};
use super::message::Notification;
use super::policy::Delivery;

/// What to do when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Drop the delivery being enqueued and count it.
    #[default]
    DropNewest,
}

fn d_queue() -> usize {
    256
}
fn d_attempts() -> u32 {
    4
}
fn d_initial_ms() -> u64 {
    2_000
}
fn d_max_ms() -> u64 {
    60_000
}
fn d_in_flight() -> usize {
    4
}
fn d_history() -> usize {
    500
}

/// `[notify.delivery]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchConfig {
    /// Queue capacity (deliveries waiting to be sent).
    #[serde(default = "d_queue")]
    pub queue_capacity: usize,
    /// Overflow policy.
    #[serde(default)]
    pub overflow: OverflowPolicy,
    /// Attempts per delivery, including the first.
    #[serde(default = "d_attempts")]
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles each time.
    #[serde(default = "d_initial_ms")]
    pub initial_backoff_ms: u64,
    /// Longest wait between attempts.
    #[serde(default = "d_max_ms")]
    pub max_backoff_ms: u64,
    /// Deliveries in flight at once.
    #[serde(default = "d_in_flight")]
    pub max_in_flight: usize,
    /// Records kept in memory.
    #[serde(default = "d_history")]
    pub history: usize,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            queue_capacity: d_queue(),
            overflow: OverflowPolicy::default(),
            max_attempts: d_attempts(),
            initial_backoff_ms: d_initial_ms(),
            max_backoff_ms: d_max_ms(),
            max_in_flight: d_in_flight(),
            history: d_history(),
        }
    }
}

impl DispatchConfig {
    /// Wait after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u64 << attempt.saturating_sub(1).min(20);
        Duration::from_millis(
            self.initial_backoff_ms
                .saturating_mul(factor)
                .min(self.max_backoff_ms),
        )
    }
}

fn unix<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_i64(t.unix_timestamp())
}

/// The outcome of one delivery (after its retries) or one test send.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryRecord {
    /// Channel name.
    pub channel: String,
    /// Channel kind (absent for an unknown channel).
    pub kind: Option<ChannelKind>,
    /// Incident id, for incident notifications.
    pub incident_id: Option<String>,
    /// Notification id.
    pub notification_id: String,
    /// Whether it was delivered.
    pub ok: bool,
    /// Last HTTP status or SMTP code seen.
    pub status: Option<u16>,
    /// The error sentence, when it failed.
    pub error: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// When it finished (serialized as Unix seconds).
    #[serde(serialize_with = "unix")]
    pub at: OffsetDateTime,
}

/// Result of [`Dispatcher::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// Queued.
    Queued,
    /// The queue was full: dropped (drop-newest) and counted.
    DroppedOverflow,
    /// No channel by that name: dropped and recorded as failed.
    UnknownChannel,
    /// The dispatcher is shutting down.
    Closed,
}

struct Inner {
    channels: HashMap<String, Arc<dyn Channel>>,
    cfg: DispatchConfig,
    records: Mutex<VecDeque<DeliveryRecord>>,
    dropped: AtomicU64,
    events: broadcast::Sender<DeliveryRecord>,
}

impl Inner {
    fn record(&self, rec: DeliveryRecord) {
        if let Ok(mut r) = self.records.lock() {
            if r.len() >= self.cfg.history.max(1) {
                r.pop_front();
            }
            r.push_back(rec.clone());
        }
        let _ = self.events.send(rec);
    }

    fn finish(
        &self,
        channel: &str,
        kind: Option<ChannelKind>,
        n: &Notification,
        attempts: u32,
        result: &Result<Sent, SendError>,
    ) {
        let (ok, status, error) = match result {
            Ok(sent) => (true, Some(sent.status), None),
            Err(e) => (false, e.status(), Some(e.to_string())),
        };
        self.record(DeliveryRecord {
            channel: channel.to_owned(),
            kind,
            incident_id: n.incident_id().map(str::to_owned),
            notification_id: n.id.clone(),
            ok,
            status,
            error,
            attempts,
            at: OffsetDateTime::now_utc(),
        });
    }

    async fn deliver(&self, job: Delivery) {
        let Some(ch) = self.channels.get(&job.channel).cloned() else {
            return;
        };
        let n = &job.notification;
        let max = self.cfg.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = ch.send(n).await;
            match &result {
                Ok(sent) => {
                    tracing::info!(channel = %job.channel, kind = %ch.kind(), notification = %n.id,
                        incident = n.incident_id().unwrap_or("-"), status = sent.status, attempt,
                        "notification delivered");
                }
                Err(e) if e.is_retryable() && attempt < max => {
                    let wait = self.cfg.backoff(attempt);
                    tracing::warn!(channel = %job.channel, kind = %ch.kind(), notification = %n.id,
                        attempt, error = %e, retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "notification failed; will retry");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(channel = %job.channel, kind = %ch.kind(), notification = %n.id,
                        attempt, error = %e, "notification not delivered");
                }
            }
            self.finish(&job.channel, Some(ch.kind()), n, attempt, &result);
            return;
        }
    }
}

/// The delivery shell. Create inside a Tokio runtime.
pub struct Dispatcher {
    tx: mpsc::Sender<Delivery>,
    inner: Arc<Inner>,
    worker: JoinHandle<()>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("channels", &self.inner.channels.keys().collect::<Vec<_>>())
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// Starts the worker for `channels` (names must be unique; a later
    /// duplicate replaces an earlier one).
    pub fn start(channels: Vec<Arc<dyn Channel>>, cfg: DispatchConfig) -> Self {
        let channels = channels
            .into_iter()
            .map(|c| (c.name().to_owned(), c))
            .collect();
        let (events, _) = broadcast::channel(64);
        let inner = Arc::new(Inner {
            channels,
            cfg,
            records: Mutex::new(VecDeque::new()),
            dropped: AtomicU64::new(0),
            events,
        });
        let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
        let worker = tokio::spawn(run(rx, inner.clone()));
        Self { tx, inner, worker }
    }

    /// Queues one delivery without waiting.
    pub fn enqueue(&self, delivery: Delivery) -> EnqueueOutcome {
        if !self.inner.channels.contains_key(&delivery.channel) {
            let err = SendError::UnknownChannel(delivery.channel.clone());
            tracing::warn!(channel = %delivery.channel, "notification for unknown channel dropped");
            self.inner.finish(
                &delivery.channel,
                None,
                &delivery.notification,
                0,
                &Err(err),
            );
            return EnqueueOutcome::UnknownChannel;
        }
        match self.tx.try_send(delivery) {
            Ok(()) => EnqueueOutcome::Queued,
            Err(mpsc::error::TrySendError::Full(d)) => {
                let total = self.inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(channel = %d.channel, notification = %d.notification.id,
                    dropped_total = total, policy = "drop_newest", "notification queue full; dropped");
                EnqueueOutcome::DroppedOverflow
            }
            Err(mpsc::error::TrySendError::Closed(_)) => EnqueueOutcome::Closed,
        }
    }

    /// Queues several deliveries; returns how many were queued.
    pub fn enqueue_all(&self, deliveries: impl IntoIterator<Item = Delivery>) -> usize {
        deliveries
            .into_iter()
            .filter(|d| self.enqueue(d.clone()) == EnqueueOutcome::Queued)
            .count()
    }

    /// Deliveries dropped because the queue was full.
    pub fn dropped_overflow(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// The most recent records, oldest first.
    pub fn records(&self) -> Vec<DeliveryRecord> {
        self.inner
            .records
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A live feed of records (for persisting them).
    pub fn subscribe(&self) -> broadcast::Receiver<DeliveryRecord> {
        self.inner.events.subscribe()
    }

    /// Sends a test message to `channel` now, once, bypassing the queue and
    /// the policy. The error's `Display` is the sentence to show the user.
    pub async fn send_test(&self, channel: &str) -> Result<Sent, SendError> {
        let Some(ch) = self.inner.channels.get(channel).cloned() else {
            return Err(SendError::UnknownChannel(channel.to_owned()));
        };
        let n = Notification::test(OffsetDateTime::now_utc());
        let result = ch.send(&n).await;
        match &result {
            Ok(sent) => {
                tracing::info!(channel, kind = %ch.kind(), status = sent.status, "test notification delivered")
            }
            Err(e) => {
                tracing::warn!(channel, kind = %ch.kind(), error = %e, "test notification failed")
            }
        }
        self.inner.finish(channel, Some(ch.kind()), &n, 1, &result);
        result
    }

    /// Stops accepting work, finishes what is queued and in flight.
    pub async fn shutdown(self) {
        drop(self.tx);
        if let Err(e) = self.worker.await {
            tracing::error!(error = %e, "notification worker ended abnormally");
        }
    }
}

async fn run(mut rx: mpsc::Receiver<Delivery>, inner: Arc<Inner>) {
    let sem = Arc::new(Semaphore::new(inner.cfg.max_in_flight.max(1)));
    let mut tasks = JoinSet::new();
    // Take a permit before taking a job, so waiting jobs stay in the queue
    // and `queue_capacity` is exactly how many may wait.
    loop {
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let Some(job) = rx.recv().await else {
            break;
        };
        let inner = inner.clone();
        tasks.spawn(async move {
            inner.deliver(job).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}
