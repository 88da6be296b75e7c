//! Restart-loop detection: a pure state machine over container events.
//!
//! A container that dies `threshold` times within `window` is in a restart loop.
//! Each loop episode is reported once; the detector re-arms after the container
//! has gone a whole window without dying. Deaths that follow an API `kill` (an
//! operator's stop or restart) within [`RestartLoopConfig::kill_grace_ms`] do
//! not count.

use std::collections::{HashMap, VecDeque};

use super::facts::{ContainerEvent, ContainerEventKind, RestartLoop};

/// Tuning for [`RestartLoopDetector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartLoopConfig {
    /// Deaths within `window_ms` that make a loop (default 3).
    pub threshold: u32,
    /// The window, milliseconds (default 5 minutes).
    pub window_ms: i64,
    /// A death this soon after an API kill is the operator's doing (default 30 s).
    pub kill_grace_ms: i64,
}

impl Default for RestartLoopConfig {
    fn default() -> Self {
        Self {
            threshold: 3,
            window_ms: 5 * 60 * 1000,
            kill_grace_ms: 30_000,
        }
    }
}

#[derive(Debug, Default)]
struct Track {
    name: String,
    deaths: VecDeque<i64>,
    last_death_ms: i64,
    last_exit_code: Option<i64>,
    last_kill_ms: Option<i64>,
    reported: bool,
}

/// Per-container death counter. Feed it every [`ContainerEvent`].
#[derive(Debug, Default)]
pub struct RestartLoopDetector {
    cfg: RestartLoopConfig,
    tracks: HashMap<String, Track>,
}

impl RestartLoopDetector {
    /// A detector with the given tuning.
    pub fn new(cfg: RestartLoopConfig) -> Self {
        Self {
            cfg: RestartLoopConfig {
                threshold: cfg.threshold.max(1),
                window_ms: cfg.window_ms.max(1),
                kill_grace_ms: cfg.kill_grace_ms.max(0),
            },
            tracks: HashMap::new(),
        }
    }

    /// Number of containers currently tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.tracks.len()
    }

    /// Handles one event. Times come from the event (`at_ms`), so replayed events
    /// count correctly; `now_ms` is used when the event has no time and to forget
    /// containers that have been stable for a whole window.
    pub fn handle(&mut self, now_ms: i64, ev: &ContainerEvent) -> Option<RestartLoop> {
        let window = self.cfg.window_ms;
        let t = if ev.at_ms > 0 { ev.at_ms } else { now_ms };
        // Forget containers that have not died for a window (this also re-arms them).
        self.tracks.retain(|id, tr| {
            id == &ev.container_id
                || tr.last_kill_ms.is_some_and(|k| now_ms - k < window)
                || now_ms - tr.last_death_ms < window
        });
        match ev.kind {
            ContainerEventKind::Destroy => {
                self.tracks.remove(&ev.container_id);
                None
            }
            ContainerEventKind::Kill => {
                let tr = self.tracks.entry(ev.container_id.clone()).or_default();
                tr.last_kill_ms = Some(t);
                None
            }
            ContainerEventKind::Die => self.on_death(t, ev),
            _ => None,
        }
    }

    fn on_death(&mut self, t: i64, ev: &ContainerEvent) -> Option<RestartLoop> {
        let cfg = self.cfg;
        let tr = self.tracks.entry(ev.container_id.clone()).or_default();
        tr.name.clone_from(&ev.name);
        if let Some(k) = tr.last_kill_ms.take()
            && t >= k
            && t - k <= cfg.kill_grace_ms
        {
            return None;
        }
        if tr.reported && t - tr.last_death_ms >= cfg.window_ms {
            // Stable for a whole window since the last death: a new episode may start.
            tr.reported = false;
            tr.deaths.clear();
        }
        tr.deaths.push_back(t);
        tr.last_death_ms = tr.last_death_ms.max(t);
        tr.last_exit_code = ev.exit_code;
        while tr.deaths.front().is_some_and(|&d| t - d >= cfg.window_ms) {
            tr.deaths.pop_front();
        }
        let count = u32::try_from(tr.deaths.len()).unwrap_or(u32::MAX);
        if tr.reported || count < cfg.threshold {
            return None;
        }
        tr.reported = true;
        Some(RestartLoop {
            container_id: ev.container_id.clone(),
            name: tr.name.clone(),
            restarts: count,
            window_s: u32::try_from(cfg.window_ms / 1000).unwrap_or(u32::MAX),
            last_exit_code: tr.last_exit_code,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, kind: ContainerEventKind, at_ms: i64, exit: Option<i64>) -> ContainerEvent {
        ContainerEvent {
            at_ms,
            container_id: id.to_owned(),
            name: format!("name-{id}"),
            kind,
            exit_code: exit,
            health: None,
            signal: None,
        }
    }

    fn die(id: &str, at_ms: i64) -> ContainerEvent {
        ev(id, ContainerEventKind::Die, at_ms, Some(3))
    }

    #[test]
    fn reports_once_per_episode_and_rearms_after_stable_window() {
        let mut d = RestartLoopDetector::new(RestartLoopConfig::default());
        let mut reports = Vec::new();
        // 10 deaths, one per second: exactly one report, at the third.
        for i in 0..10 {
            let t = 1_000_000 + i * 1000;
            if let Some(r) = d.handle(t, &die("a", t)) {
                reports.push((i, r));
            }
        }
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].0, 2);
        let r = &reports[0].1;
        assert_eq!(
            (r.restarts, r.window_s, r.last_exit_code),
            (3, 300, Some(3))
        );
        assert_eq!(r.name, "name-a");
        // Slow deaths (every 4 minutes) keep it reported but never re-report.
        let mut t = 1_009_000;
        for _ in 0..3 {
            t += 4 * 60_000;
            assert!(d.handle(t, &die("a", t)).is_none());
        }
        // Stable for 5 minutes, then a new burst: reported again.
        t += 5 * 60_000;
        let mut again = 0;
        for i in 0..5 {
            let ti = t + i * 500;
            again += usize::from(d.handle(ti, &die("a", ti)).is_some());
        }
        assert_eq!(again, 1);
    }

    #[test]
    fn spread_out_deaths_are_not_a_loop() {
        let mut d = RestartLoopDetector::new(RestartLoopConfig::default());
        for i in 0..10 {
            let t = i * 151_000; // 2 per 5 minutes at most
            assert!(d.handle(t, &die("a", t)).is_none());
        }
    }

    #[test]
    fn operator_kills_do_not_count_and_containers_are_independent() {
        let mut d = RestartLoopDetector::new(RestartLoopConfig::default());
        for i in 0..5 {
            let t = i * 2000;
            assert!(
                d.handle(t, &ev("a", ContainerEventKind::Kill, t, None))
                    .is_none()
            );
            assert!(
                d.handle(
                    t + 500,
                    &ev("a", ContainerEventKind::Die, t + 500, Some(137))
                )
                .is_none()
            );
        }
        assert!(d.handle(20_000, &die("b", 20_000)).is_none());
        assert!(d.handle(20_100, &die("c", 20_100)).is_none());
        assert!(d.handle(20_200, &die("b", 20_200)).is_none());
        assert!(d.handle(20_300, &die("b", 20_300)).is_some());
    }

    #[test]
    fn forgets_stable_and_destroyed_containers() {
        let mut d = RestartLoopDetector::new(RestartLoopConfig::default());
        d.handle(0, &die("a", 0));
        d.handle(0, &die("b", 0));
        assert_eq!(d.tracked(), 2);
        d.handle(1, &ev("b", ContainerEventKind::Destroy, 1, None));
        assert_eq!(d.tracked(), 1);
        d.handle(400_000, &ev("c", ContainerEventKind::Start, 400_000, None));
        assert_eq!(d.tracked(), 0);
    }

    #[test]
    fn missing_event_time_uses_now() {
        let mut d = RestartLoopDetector::new(RestartLoopConfig {
            threshold: 2,
            ..Default::default()
        });
        assert!(d.handle(1000, &die("a", 0)).is_none());
        assert!(d.handle(2000, &die("a", 0)).is_some());
    }
}
