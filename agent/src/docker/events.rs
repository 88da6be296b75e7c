//! The long-lived event task: connect, report status and inventory, follow the
//! engine's container events, resume after any interruption from the last event
//! time (nanoseconds, boundary de-duplicated), detect restart loops.
//!
//! Engine differences handled here (integration reference §4.5):
//! - Podman: no server-side `event` filter (only `type=container`), filtering is
//!   done here; `died`/`containerExitCode`; `remove` for destroy; `health_status`
//!   without the `: <state>` suffix (the state is then read with `inspect`).
//! - Podman reports `health_status` on every check: unchanged health is not repeated.
//! - An `oom` event the engine did not send (Podman, some cgroup setups) is
//!   synthesised from `State.OOMKilled` after a non-zero `die`.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{EventsOptions, InspectContainerOptions};
use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::engine::{DockerError, Engine, connect};
use super::facts::{
    ContainerEvent, ContainerEventKind, ContainerInventory, DockerStatus, EngineKind,
};
use super::inventory::{changed, inventory};
use super::restart_loop::RestartLoopDetector;
use super::timefmt::{now_ms, now_ns, since_arg};
use super::{DockerConfig, DockerOutput};

/// Actions asked of the engine's server-side filter (Docker).
pub const EVENT_ACTIONS: &[&str] = &[
    "start",
    "die",
    "oom",
    "kill",
    "stop",
    "restart",
    "health_status",
    "destroy",
];

/// How long a real and a synthesised `oom` for one container are treated as the same.
const OOM_DEDUPE_MS: i64 = 10_000;

/// One engine event, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalised {
    /// The event as reported upstream.
    pub event: ContainerEvent,
    /// Engine time, Unix nanoseconds (the resume cursor).
    pub time_ns: i64,
    /// The raw action string (part of the de-duplication key).
    pub action: String,
    /// Health event without the state: read it with `inspect`.
    pub needs_health_lookup: bool,
}

/// Engine time of a message in nanoseconds (`timeNano`, else `time`).
pub fn event_time_ns(msg: &EventMessage) -> Option<i64> {
    msg.time_nano
        .filter(|&t| t > 0)
        .or_else(|| msg.time.and_then(|t| t.checked_mul(1_000_000_000)))
}

/// Turns one engine message into a [`ContainerEvent`], or `None` if it is not a
/// container event of interest. Handles Docker's and Podman's spellings.
pub fn normalise_event(msg: &EventMessage) -> Option<Normalised> {
    if msg
        .typ
        .is_some_and(|t| t != EventMessageTypeEnum::CONTAINER)
    {
        return None;
    }
    let action = msg.action.as_deref()?.trim().to_owned();
    let (base, suffix) = match action.split_once(':') {
        Some((b, s)) => (b.trim(), Some(s.trim()).filter(|s| !s.is_empty())),
        None => (action.as_str(), None),
    };
    let kind = match base {
        "start" => ContainerEventKind::Start,
        "stop" => ContainerEventKind::Stop,
        "die" | "died" => ContainerEventKind::Die,
        "oom" => ContainerEventKind::Oom,
        "kill" => ContainerEventKind::Kill,
        "restart" => ContainerEventKind::Restart,
        "destroy" | "remove" => ContainerEventKind::Destroy,
        "health_status" => ContainerEventKind::HealthStatus,
        _ => return None,
    };
    let actor = msg.actor.as_ref()?;
    let container_id = actor.id.clone().filter(|id| !id.is_empty())?;
    let empty = HashMap::new();
    let attrs = actor.attributes.as_ref().unwrap_or(&empty);
    let attr = |k: &str| attrs.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let time_ns = event_time_ns(msg).unwrap_or_else(now_ns);
    let exit_code = (kind == ContainerEventKind::Die)
        .then(|| {
            attr("exitCode")
                .or_else(|| attr("containerExitCode"))
                .and_then(|v| v.parse::<i64>().ok())
        })
        .flatten();
    let signal = (kind == ContainerEventKind::Kill)
        .then(|| attr("signal").map(str::to_owned))
        .flatten();
    let health = (kind == ContainerEventKind::HealthStatus)
        .then(|| {
            suffix
                .or_else(|| attr("health_status"))
                .or_else(|| attr("healthStatus"))
                .map(str::to_ascii_lowercase)
        })
        .flatten();
    Some(Normalised {
        needs_health_lookup: kind == ContainerEventKind::HealthStatus && health.is_none(),
        event: ContainerEvent {
            at_ms: time_ns / 1_000_000,
            container_id,
            name: attr("name")
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            kind,
            exit_code,
            health,
            signal,
        },
        time_ns,
        action,
    })
}

/// The resume point: the newest engine time seen, and which events at exactly
/// that nanosecond were already delivered (the engine replays `time >= since`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventCursor {
    last_ns: Option<i64>,
    at_last: Vec<(String, String)>,
}

impl EventCursor {
    /// The `since` argument for the next subscription, if any event was seen.
    pub fn since(&self) -> Option<String> {
        self.last_ns.map(since_arg)
    }

    /// The newest engine time seen.
    pub fn last_ns(&self) -> Option<i64> {
        self.last_ns
    }

    /// Moves the cursor to at least `ns` without recording an event (used to skip
    /// past an undecodable message).
    pub fn skip_to(&mut self, ns: i64) {
        if self.last_ns.is_none_or(|l| ns > l) {
            self.last_ns = Some(ns);
            self.at_last.clear();
        }
    }

    /// Records an event; returns false if it was already delivered.
    ///
    /// Only events at exactly the cursor's nanosecond can be replays. An event
    /// older than the cursor (wall clock stepped back) is delivered but does not
    /// move the cursor back.
    pub fn accept(&mut self, time_ns: i64, id: &str, action: &str) -> bool {
        match self.last_ns {
            Some(l) if time_ns == l => {
                if self.at_last.iter().any(|(i, a)| i == id && a == action) {
                    return false;
                }
                self.at_last.push((id.to_owned(), action.to_owned()));
                true
            }
            Some(l) if time_ns < l => true,
            _ => {
                self.last_ns = Some(time_ns);
                self.at_last.clear();
                self.at_last.push((id.to_owned(), action.to_owned()));
                true
            }
        }
    }
}

enum Stop {
    Shutdown,
    ReceiverGone,
}

enum SessionEnd {
    Stop(Stop),
    Failed {
        err: DockerError,
        streamed_for: Duration,
    },
}

struct EventTask {
    cfg: DockerConfig,
    tx: mpsc::Sender<DockerOutput>,
    shutdown: CancellationToken,
    cursor: EventCursor,
    detector: RestartLoopDetector,
    last_inventory: Option<ContainerInventory>,
    last_status: Option<DockerStatus>,
    /// container id -> time (ms) of the last oom delivered, and whether it was synthesised.
    last_oom: HashMap<String, (i64, bool)>,
    /// container id -> last health delivered (Podman repeats it on every check).
    last_health: HashMap<String, String>,
}

/// Runs the Docker/Podman event task until `shutdown` is cancelled or the
/// receiver is dropped. Never returns an error and never panics on engine input:
/// every failure becomes a [`DockerOutput::Status`] (sent when it changes) plus a
/// tracing line, and the task reconnects with exponential backoff.
///
/// Output order per session: `Status` (connected), `Inventory` (on start and
/// whenever it changes), then `Event`s and `RestartLoop`s as they happen. The
/// channel is bounded; when it is full the task waits (no event is dropped).
pub async fn run_events(
    cfg: DockerConfig,
    tx: mpsc::Sender<DockerOutput>,
    shutdown: CancellationToken,
) {
    let mut task = EventTask {
        detector: RestartLoopDetector::new(cfg.restart_loop),
        cfg,
        tx,
        shutdown,
        cursor: EventCursor::default(),
        last_inventory: None,
        last_status: None,
        last_oom: HashMap::new(),
        last_health: HashMap::new(),
    };
    task.run().await;
}

impl EventTask {
    async fn run(&mut self) {
        let mut backoff = self.cfg.backoff_min;
        loop {
            match self.session().await {
                SessionEnd::Stop(Stop::Shutdown) => {
                    tracing::debug!("docker: event task shut down");
                    return;
                }
                SessionEnd::Stop(Stop::ReceiverGone) => {
                    tracing::info!("docker: output receiver dropped; event task ends");
                    return;
                }
                SessionEnd::Failed { err, streamed_for } => {
                    if streamed_for >= self.cfg.healthy_after {
                        backoff = self.cfg.backoff_min;
                    }
                    tracing::warn!(error = %err, retry_in = ?backoff, "docker: engine unavailable");
                    if self.status(err.status()).await.is_err() {
                        return;
                    }
                    tokio::select! {
                        () = self.shutdown.cancelled() => return,
                        () = self.tx.closed() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = backoff.saturating_mul(2).min(self.cfg.backoff_max);
                }
            }
        }
    }

    async fn send(&self, out: DockerOutput) -> Result<(), Stop> {
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => Err(Stop::Shutdown),
            r = self.tx.send(out) => r.map_err(|_| Stop::ReceiverGone),
        }
    }

    /// Sends a status only when it differs from the last one sent.
    async fn status(&mut self, st: DockerStatus) -> Result<(), Stop> {
        if self.last_status.as_ref() == Some(&st) {
            return Ok(());
        }
        self.last_status = Some(st.clone());
        self.send(DockerOutput::Status(st)).await
    }

    async fn refresh_inventory(&mut self, engine: &Engine) -> Result<(), Stop> {
        match inventory(engine).await {
            Ok(inv) => {
                // Forget per-container state of containers that are gone (missed destroys).
                let ids: std::collections::HashSet<&str> =
                    inv.containers.iter().map(|c| c.id.as_str()).collect();
                self.last_oom.retain(|id, _| ids.contains(id.as_str()));
                self.last_health.retain(|id, _| ids.contains(id.as_str()));
                if self
                    .last_inventory
                    .as_ref()
                    .is_none_or(|old| changed(old, &inv))
                {
                    self.last_inventory = Some(inv.clone());
                    self.send(DockerOutput::Inventory(inv)).await?;
                }
            }
            Err(e) => tracing::warn!(error = %e, "docker: inventory failed"),
        }
        Ok(())
    }

    async fn session(&mut self) -> SessionEnd {
        let engine = tokio::select! {
            () = self.shutdown.cancelled() => return SessionEnd::Stop(Stop::Shutdown),
            () = self.tx.closed() => return SessionEnd::Stop(Stop::ReceiverGone),
            r = connect(self.cfg.socket.as_deref(), self.cfg.request_timeout) => match r {
                Ok(e) => e,
                Err(err) => return SessionEnd::Failed { err, streamed_for: Duration::ZERO },
            },
        };
        tracing::info!(engine = ?engine.info, socket = %engine.socket.display(), "docker: connected");
        // On the very first connect, start from now (the inventory covers the past);
        // the cursor keeps that point so a session that ends before its first
        // event still resumes from it.
        if self.cursor.last_ns().is_none() {
            self.cursor.skip_to(now_ns());
        }
        let since = self.cursor.since().unwrap_or_else(|| since_arg(now_ns()));
        if let Err(s) = self.status(engine.connected_status()).await {
            return SessionEnd::Stop(s);
        }
        if let Err(s) = self.refresh_inventory(&engine).await {
            return SessionEnd::Stop(s);
        }
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        filters.insert("type".to_owned(), vec!["container".to_owned()]);
        if engine.info.kind == EngineKind::Docker {
            filters.insert(
                "event".to_owned(),
                EVENT_ACTIONS.iter().map(|s| (*s).to_owned()).collect(),
            );
        }
        let opts = EventsOptions {
            since: Some(since),
            until: None,
            filters: Some(filters),
        };
        let mut stream = engine.docker.events(Some(opts));
        let started = Instant::now();
        let mut inventory_dirty = false;
        let mut last_refresh = Instant::now();
        // `interval` panics on a zero period: keep a floor.
        let mut tick =
            tokio::time::interval(self.cfg.inventory_debounce.max(Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return SessionEnd::Stop(Stop::Shutdown),
                () = self.tx.closed() => return SessionEnd::Stop(Stop::ReceiverGone),
                item = stream.next() => match item {
                    None => {
                        return SessionEnd::Failed {
                            err: DockerError::Unreachable(format!(
                                "{}: event stream ended", engine.socket.display()
                            )),
                            streamed_for: started.elapsed(),
                        };
                    }
                    Some(Err(e)) => {
                        let err = engine.err(e);
                        if let DockerError::Protocol(m) = &err {
                            // The decoder stops after a bad message and would see it again
                            // on resume: skip past it and resynchronise the inventory.
                            tracing::warn!(error = %m, "docker: undecodable event skipped; resynchronising");
                            self.cursor.skip_to(now_ns());
                        }
                        return SessionEnd::Failed { err, streamed_for: started.elapsed() };
                    }
                    Some(Ok(msg)) => {
                        match self.handle_message(&engine, &msg).await {
                            Ok(relevant) => inventory_dirty |= relevant,
                            Err(s) => return SessionEnd::Stop(s),
                        }
                    }
                },
                _ = tick.tick() => {
                    let due = last_refresh.elapsed() >= self.cfg.inventory_interval;
                    if inventory_dirty || due {
                        inventory_dirty = false;
                        last_refresh = Instant::now();
                        if let Err(s) = self.refresh_inventory(&engine).await {
                            return SessionEnd::Stop(s);
                        }
                    }
                }
            }
        }
    }

    /// Handles one message; returns whether it was a delivered container event.
    async fn handle_message(&mut self, engine: &Engine, msg: &EventMessage) -> Result<bool, Stop> {
        let Some(n) = normalise_event(msg) else {
            if let Some(t) = event_time_ns(msg) {
                self.cursor.skip_to(t);
            }
            return Ok(false);
        };
        if !self
            .cursor
            .accept(n.time_ns, &n.event.container_id, &n.action)
        {
            tracing::debug!(action = %n.action, id = %n.event.container_id, "docker: duplicate event after resume dropped");
            return Ok(false);
        }
        let mut ev = n.event;
        if n.needs_health_lookup {
            ev.health = self.inspect_health(engine, &ev.container_id).await;
        }
        match ev.kind {
            ContainerEventKind::HealthStatus => {
                if let Some(h) = &ev.health {
                    if self.last_health.get(&ev.container_id) == Some(h) {
                        return Ok(false);
                    }
                    self.last_health.insert(ev.container_id.clone(), h.clone());
                }
            }
            ContainerEventKind::Start => {
                // A restarted container's health starts over.
                self.last_health.remove(&ev.container_id);
            }
            ContainerEventKind::Oom => {
                if let Some(&(t, true)) = self.last_oom.get(&ev.container_id)
                    && (ev.at_ms - t).abs() < OOM_DEDUPE_MS
                {
                    // Already synthesised from inspect.
                    self.last_oom
                        .insert(ev.container_id.clone(), (ev.at_ms, false));
                    return Ok(true);
                }
                self.last_oom
                    .insert(ev.container_id.clone(), (ev.at_ms, false));
            }
            ContainerEventKind::Die if ev.exit_code.is_some_and(|c| c != 0) => {
                let recent = self
                    .last_oom
                    .get(&ev.container_id)
                    .is_some_and(|&(t, _)| (ev.at_ms - t).abs() < OOM_DEDUPE_MS);
                if !recent && self.inspect_oom_killed(engine, &ev.container_id).await {
                    let oom = ContainerEvent {
                        kind: ContainerEventKind::Oom,
                        exit_code: None,
                        health: None,
                        signal: None,
                        ..ev.clone()
                    };
                    self.last_oom
                        .insert(ev.container_id.clone(), (ev.at_ms, true));
                    self.deliver(oom).await?;
                }
            }
            ContainerEventKind::Destroy => {
                self.last_oom.remove(&ev.container_id);
                self.last_health.remove(&ev.container_id);
            }
            _ => {}
        }
        self.deliver(ev).await?;
        Ok(true)
    }

    async fn deliver(&mut self, ev: ContainerEvent) -> Result<(), Stop> {
        let lp = self.detector.handle(now_ms(), &ev);
        self.send(DockerOutput::Event(ev)).await?;
        if let Some(lp) = lp {
            tracing::warn!(container = %lp.name, restarts = lp.restarts, "docker: restart loop");
            self.send(DockerOutput::RestartLoop(lp)).await?;
        }
        Ok(())
    }

    async fn inspect_health(&self, engine: &Engine, id: &str) -> Option<String> {
        let i = engine
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .ok()?;
        let s = i.state?.health?.status?.to_string();
        (!s.is_empty()).then_some(s)
    }

    async fn inspect_oom_killed(&self, engine: &Engine, id: &str) -> bool {
        match engine
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(i) => i.state.and_then(|s| s.oom_killed).unwrap_or(false),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    fn msg(action: &str, attrs: &[(&str, &str)], time_nano: i64) -> EventMessage {
        EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.to_owned()),
            actor: Some(EventActor {
                id: Some("c1".to_owned()),
                attributes: Some(
                    attrs
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
            }),
            scope: None,
            time: Some(time_nano / 1_000_000_000),
            time_nano: Some(time_nano),
        }
    }

    #[test]
    fn docker_die_kill_health() {
        let n = normalise_event(&msg(
            "die",
            &[("exitCode", "3"), ("name", "web")],
            1_500_000_000_123,
        ))
        .unwrap();
        assert_eq!(n.event.kind, ContainerEventKind::Die);
        assert_eq!(n.event.exit_code, Some(3));
        assert_eq!(n.event.name, "web");
        assert_eq!(n.event.at_ms, 1_500_000);
        assert_eq!(n.time_ns, 1_500_000_000_123);
        let k = normalise_event(&msg("kill", &[("signal", "15")], 1)).unwrap();
        assert_eq!(k.event.signal.as_deref(), Some("15"));
        assert_eq!(k.event.exit_code, None);
        let h = normalise_event(&msg("health_status: unhealthy", &[], 1)).unwrap();
        assert_eq!(h.event.kind, ContainerEventKind::HealthStatus);
        assert_eq!(h.event.health.as_deref(), Some("unhealthy"));
        assert!(!h.needs_health_lookup);
    }

    #[test]
    fn podman_spellings() {
        let d = normalise_event(&msg("died", &[("containerExitCode", "137")], 1)).unwrap();
        assert_eq!(d.event.kind, ContainerEventKind::Die);
        assert_eq!(d.event.exit_code, Some(137));
        let h = normalise_event(&msg("health_status", &[], 1)).unwrap();
        assert!(h.needs_health_lookup);
        assert_eq!(h.event.health, None);
        let h2 =
            normalise_event(&msg("health_status", &[("health_status", "healthy")], 1)).unwrap();
        assert_eq!(h2.event.health.as_deref(), Some("healthy"));
        let r = normalise_event(&msg("remove", &[], 1)).unwrap();
        assert_eq!(r.event.kind, ContainerEventKind::Destroy);
    }

    #[test]
    fn ignores_noise_and_bad_shapes() {
        for a in ["exec_start: sh -c true", "exec_die", "create", "attach", ""] {
            assert!(normalise_event(&msg(a, &[], 1)).is_none(), "{a}");
        }
        let mut m = msg("die", &[("exitCode", "not-a-number")], 1);
        assert_eq!(normalise_event(&m).unwrap().event.exit_code, None);
        m.typ = Some(EventMessageTypeEnum::IMAGE);
        assert!(normalise_event(&m).is_none());
        let mut no_actor = msg("die", &[], 1);
        no_actor.actor = None;
        assert!(normalise_event(&no_actor).is_none());
        let mut no_time = msg("start", &[], 0);
        no_time.time = None;
        no_time.time_nano = None;
        assert!(normalise_event(&no_time).unwrap().time_ns > 0);
        let mut secs_only = msg("start", &[], 0);
        secs_only.time = Some(5);
        secs_only.time_nano = None;
        assert_eq!(normalise_event(&secs_only).unwrap().time_ns, 5_000_000_000);
    }

    #[test]
    fn cursor_dedupes_only_at_the_boundary() {
        let mut c = EventCursor::default();
        assert_eq!(c.since(), None);
        assert!(c.accept(10, "a", "die"));
        assert!(c.accept(10, "a", "stop"));
        assert!(c.accept(20, "a", "start"));
        assert!(c.accept(20, "b", "start"));
        assert_eq!(c.since().as_deref(), Some("0.000000020"));
        // replay after resume with since=20: both events at 20 are dropped
        assert!(!c.accept(20, "a", "start"));
        assert!(!c.accept(20, "b", "start"));
        assert!(c.accept(20, "c", "start"));
        assert!(c.accept(21, "a", "die"));
        // clock stepped back: delivered, cursor kept
        assert!(c.accept(5, "a", "start"));
        assert_eq!(c.last_ns(), Some(21));
        c.skip_to(15);
        assert_eq!(c.last_ns(), Some(21));
        c.skip_to(30);
        assert!(c.accept(30, "a", "die"));
    }
}
