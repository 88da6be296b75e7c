//! The notification shell: one task owns the pure [`Notifier`] and the
//! [`Dispatcher`]. It receives incident transitions from the engine task,
//! reloads the channel configuration when an operator saves it in the
//! dashboard, sends test messages, and drives the policy's timers (digests
//! after quiet hours).
//!
//! Where the configuration comes from: the `notify` setting saved in the
//! dashboard (stored in the database, secrets included) when there is one,
//! else the `[notify]` table of `hub.toml`. Secrets are write-only: the API
//! shows `{"set": true}` for them, and a saved document that sends
//! `{"set": true}` back keeps the stored value ([`merge_write_only`]).
//!
//! Overflow policy of the event channel: drop the newest event and count it
//! (`events_dropped`); incident handling never waits for notifications.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::policy::NotifierStats;
use super::{DeliveryRecord, Dispatcher, Egress, IncidentEvent, Notifier, NotifyConfig};

/// The settings key of the dashboard-saved document.
pub const SETTING_KEY: &str = "notify";

/// Where the active configuration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigSource {
    /// `[notify]` in `hub.toml` (or the defaults: no channels).
    File,
    /// Saved in the dashboard.
    Dashboard,
}

/// What the notification task receives.
#[derive(Debug)]
pub enum NotifyInput {
    /// An incident transition.
    Event(Box<IncidentEvent>),
    /// Replace the configuration; the reply says whether it was accepted.
    Reload {
        /// The new configuration.
        config: Box<NotifyConfig>,
        /// Where it came from.
        source: ConfigSource,
        /// Outcome (the error sentence names the channel).
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Send a test message to one channel.
    Test {
        /// Channel name.
        channel: String,
        /// Outcome: the HTTP or SMTP status, or the error sentence.
        reply: oneshot::Sender<Result<u16, String>>,
    },
    /// A snapshot for the API and settings page.
    View(oneshot::Sender<NotifyView>),
}

/// The state the API and settings page show.
#[derive(Debug, Clone, Serialize)]
pub struct NotifyView {
    /// Where the active configuration came from.
    pub source: ConfigSource,
    /// The configuration with every secret as `{"set": true|false}`.
    pub config: Value,
    /// Recent delivery outcomes, newest first.
    pub deliveries: Vec<DeliveryRecord>,
    /// Policy counters (sent, rate-limited, held, deduplicated).
    pub stats: NotifierStats,
    /// Events dropped because the notification task was behind.
    pub events_dropped: u64,
    /// Deliveries dropped because the delivery queue was full.
    pub deliveries_dropped: u64,
}

/// Handle to the notification task; cheap to clone.
#[derive(Debug, Clone)]
pub struct Notify {
    tx: mpsc::Sender<NotifyInput>,
    dropped: Arc<AtomicU64>,
}

impl Notify {
    /// Creates the handle and the receiver [`run`] consumes.
    pub fn new() -> (Self, mpsc::Receiver<NotifyInput>) {
        let (tx, rx) = mpsc::channel(256);
        (
            Self {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    /// Queues a transition; never waits (overflow: dropped and counted).
    pub fn event(&self, event: IncidentEvent) {
        if self
            .tx
            .try_send(NotifyInput::Event(Box::new(event)))
            .is_err()
        {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            warn!(
                events_dropped = n,
                "notification task is behind; event dropped"
            );
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> NotifyInput) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.ok()?;
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .ok()?
            .ok()
    }

    /// Replaces the configuration (validated and built first).
    pub async fn reload(&self, config: NotifyConfig, source: ConfigSource) -> Result<(), String> {
        self.ask(|reply| NotifyInput::Reload {
            config: Box::new(config),
            source,
            reply,
        })
        .await
        .unwrap_or_else(|| Err("the notification service is not running".into()))
    }

    /// Sends a test message to `channel`.
    pub async fn test(&self, channel: &str) -> Result<u16, String> {
        let channel = channel.to_string();
        self.ask(|reply| NotifyInput::Test { channel, reply })
            .await
            .unwrap_or_else(|| Err("the notification service is not running".into()))
    }

    /// The current state.
    pub async fn view(&self) -> Option<NotifyView> {
        let mut v = self.ask(NotifyInput::View).await?;
        v.events_dropped = self.dropped.load(Ordering::Relaxed);
        Some(v)
    }
}

/// Merges write-only secrets: in `new` (a `[notify]` document as JSON), a
/// channel field whose value is `{"set": true}` takes the value the same
/// channel (same name and kind) has in `old`; `{"set": false}` removes the
/// field. Fails, naming the channel and field, when there is nothing to keep.
pub fn merge_write_only(new: &mut Value, old: Option<&Value>) -> Result<(), String> {
    let old_channels: Vec<&Value> = old
        .and_then(|o| o.get("channels"))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let Some(channels) = new.get_mut("channels").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for ch in channels {
        let Some(obj) = ch.as_object_mut() else {
            return Err("each entry of \"channels\" must be an object".into());
        };
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let previous = old_channels.iter().find(|c| {
            c.get("name").and_then(Value::as_str) == Some(name.as_str())
                && c.get("kind").and_then(Value::as_str) == Some(kind.as_str())
        });
        let keys: Vec<String> = obj.keys().cloned().collect();
        for key in keys {
            let marker = obj
                .get(&key)
                .and_then(Value::as_object)
                .filter(|o| o.len() == 1)
                .and_then(|o| o.get("set"))
                .and_then(Value::as_bool);
            match marker {
                Some(false) => {
                    obj.remove(&key);
                }
                Some(true) => match previous.and_then(|p| p.get(&key)).filter(|v| v.is_string()) {
                    Some(v) => {
                        obj.insert(key, v.clone());
                    }
                    None => {
                        return Err(format!(
                            "channel \"{name}\": {key} has no stored value to keep; enter it again"
                        ));
                    }
                },
                None => {}
            }
        }
    }
    Ok(())
}

struct Active {
    notifier: Notifier,
    dispatcher: Arc<Dispatcher>,
    config: NotifyConfig,
    source: ConfigSource,
}

fn build(config: NotifyConfig, source: ConfigSource, egress: &Egress) -> Result<Active, String> {
    let channels = config.build_channels(egress).map_err(|e| e.to_string())?;
    let notifier = Notifier::new(config.policy()).map_err(|e| e.to_string())?;
    let dispatcher = Arc::new(Dispatcher::start(channels, config.delivery));
    Ok(Active {
        notifier,
        dispatcher,
        config,
        source,
    })
}

/// Runs the notification task until `shutdown`.
pub async fn run(
    initial: NotifyConfig,
    source: ConfigSource,
    mut rx: mpsc::Receiver<NotifyInput>,
    shutdown: CancellationToken,
) {
    let egress = match Egress::new() {
        Ok(e) => e,
        Err(error) => {
            warn!(%error, "notifications disabled: cannot set up outbound TLS");
            return;
        }
    };
    let mut active = match build(initial, source, &egress) {
        Ok(a) => a,
        Err(error) => {
            warn!(%error, "notification settings rejected; notifications are off until they are fixed");
            match build(NotifyConfig::default(), ConfigSource::File, &egress) {
                Ok(a) => a,
                Err(error) => {
                    warn!(%error, "notifications disabled");
                    return;
                }
            }
        }
    };
    info!(
        channels = active.config.channels.len(),
        source = ?active.source,
        "notifications ready"
    );
    loop {
        let wake = active.notifier.poll_timeout();
        let sleep = async {
            match wake {
                Some(t) => {
                    let d = t - OffsetDateTime::now_utc();
                    let d = Duration::try_from(d).unwrap_or(Duration::ZERO);
                    tokio::time::sleep(d).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = sleep => {
                let due = active.notifier.on_timeout(OffsetDateTime::now_utc());
                active.dispatcher.enqueue_all(due);
            }
            input = rx.recv() => {
                let Some(input) = input else { break };
                match input {
                    NotifyInput::Event(mut ev) => {
                        if let (None, Some(base)) = (&ev.incident.url, &active.config.dashboard_url) {
                            ev.incident.url = Some(format!("{}/incidents/{}", base.trim_end_matches('/'), ev.incident.id));
                        }
                        let out = active.notifier.on_event(OffsetDateTime::now_utc(), &ev);
                        active.dispatcher.enqueue_all(out);
                    }
                    NotifyInput::Reload { config, source, reply } => {
                        let r = build(*config, source, &egress).map(|next| {
                            info!(channels = next.config.channels.len(), source = ?source, "notification settings reloaded");
                            // In-flight deliveries of the old dispatcher finish on their own.
                            active = next;
                        });
                        let _ = reply.send(r);
                    }
                    NotifyInput::Test { channel, reply } => {
                        let d = active.dispatcher.clone();
                        tokio::spawn(async move {
                            let r = d.send_test(&channel).await.map(|s| s.status).map_err(|e| e.to_string());
                            let _ = reply.send(r);
                        });
                    }
                    NotifyInput::View(reply) => {
                        let mut deliveries = active.dispatcher.records();
                        deliveries.reverse();
                        let _ = reply.send(NotifyView {
                            source: active.source,
                            config: active.config.public_view(),
                            deliveries,
                            stats: active.notifier.stats(),
                            events_dropped: 0,
                            deliveries_dropped: active.dispatcher.dropped_overflow(),
                        });
                    }
                }
            }
        }
    }
    if let Ok(d) = Arc::try_unwrap(active.dispatcher) {
        d.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::merge_write_only;

    #[test]
    fn markers_keep_remove_or_refuse() {
        let old =
            json!({"channels": [{"kind": "ntfy", "name": "p", "token": "tk1", "password": "pw"}]});
        let mut new = json!({"channels": [{"kind": "ntfy", "name": "p", "token": {"set": true}, "password": {"set": false}}]});
        merge_write_only(&mut new, Some(&old)).unwrap();
        assert_eq!(new["channels"][0]["token"], "tk1");
        assert!(new["channels"][0].get("password").is_none());
        // A renamed or re-kinded channel has nothing to keep.
        let mut other =
            json!({"channels": [{"kind": "gotify", "name": "p", "token": {"set": true}}]});
        let e = merge_write_only(&mut other, Some(&old)).unwrap_err();
        assert!(e.contains("\"p\"") && e.contains("token"), "{e}");
        // A new value replaces the old one.
        let mut fresh = json!({"channels": [{"kind": "ntfy", "name": "p", "token": "tk2"}]});
        merge_write_only(&mut fresh, Some(&old)).unwrap();
        assert_eq!(fresh["channels"][0]["token"], "tk2");
    }
}
