//! The incident engine: a pure state machine that turns normalised signals
//! into incidents.
//!
//! Sans-IO in the style of `quinn-proto`: the shell feeds inputs with the
//! current time and drains outputs; the engine never reads a clock, the
//! database or the network.
//!
//! - inputs: [`Engine::handle_signal`], [`Engine::handle_command`],
//!   [`Engine::handle_timeout`];
//! - outputs: [`Engine::poll_action`] (persist / notify) and
//!   [`Engine::poll_timeout`] (when to call `handle_timeout` next).
//!
//! # Model
//!
//! Detectors (`detectors.rs`) turn each accepted signal into observations
//! about *conditions*: a detector plus a subject, identified by a fingerprint
//! such as `storage_full:fs/pve1:/var/lib/vz`. A condition that becomes active
//! is routed to an incident, in this order:
//!
//! 1. the incident it already belongs to (deduplication; a resolved one is
//!    reopened when it resolved less than `reopen_window_ms` ago);
//! 2. the incident of its node's `node_silent` condition while the node is
//!    offline (offline suppression: guests and containers become affected);
//! 3. an open incident on the same node (or, for cluster-level detectors,
//!    any open cluster-level incident) with evidence newer than
//!    `correlation_window_ms` (correlation);
//! 4. a new incident, if the per-node and global GCRA limits allow it;
//!    otherwise the current storm incident (throttling never drops).
//!
//! An incident resolves automatically `resolve_hold_down_ms` after its last
//! active condition cleared, so flapping stays one incident. Severity is the
//! worst evidence since it (re)opened; the title, likely cause, affected list
//! and narrative are recomputed from its conditions and evidence.
//!
//! # Invariants
//!
//! - Deterministic: `BTreeMap`/`BTreeSet` only, ids from counters, no clock.
//! - Total: no input panics; time arithmetic saturates.
//! - Bounded: evidence, timeline and listed conditions are capped per
//!   incident; resolved incidents, duplicate memory and detector windows are
//!   pruned by housekeeping.
//! - Incident actions carry the incident as it is when polled; a burst of
//!   changes between two polls yields one `IncidentUpdated`.

mod config;
mod correlate;
mod detectors;
mod model;
mod narrative;
mod signals;
mod throttle;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub use config::{
    DAY_MS, DetectorConfig, EngineConfig, GcraConfig, HOUR_MS, MINUTE_MS, ThrottleConfig,
    UnknownNodePolicy,
};
pub use model::{
    Action, Actor, Command, CommandError, ConditionView, ContainerRef, Detector, EngineStats,
    Evidence, EvidenceRef, GuestRef, Incident, IncidentState, Notification, NotifyKind, Severity,
    Subject, TimelineEntry, TimelineEvent,
};
pub use signals::{
    ContainerEventKind, FsSample, GuestKind, GuestStatus, LogSourceKind, PoolHealth, Signal,
    SignalBody,
};

use correlate::{CondInfo, likely_cause};
use detectors::{Detectors, ObsKind, Observation, duration};
use model::Lifetime;
use throttle::Gcra;

/// The actor name the engine uses for its own actions.
pub const ENGINE_ACTOR: &str = "wingman";

/// Same key and time as a remembered signal: this many bodies are kept to
/// tell duplicates from distinct simultaneous events.
const MAX_BODIES_PER_INSTANT: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Housekeeping,
    Cond(u64),
    Resolve(u64),
}

#[derive(Debug, Clone)]
struct Cond {
    fingerprint: String,
    detector: Detector,
    subject: Subject,
    severity: Severity,
    title: String,
    active: bool,
    muted: bool,
    since_ms: i64,
    last_seen_ms: i64,
    activations: u32,
    incident: Option<u64>,
    expires_at: Option<i64>,
}

#[derive(Debug, Clone)]
struct Tracked {
    inc: Incident,
    conds: BTreeSet<u64>,
    /// Member conditions with `active == true`.
    active: usize,
    nodes: BTreeSet<String>,
    guests: BTreeSet<GuestRef>,
    containers: BTreeSet<ContainerRef>,
    detectors: BTreeSet<Detector>,
    extra_affected: BTreeSet<String>,
    cluster: bool,
    standalone: bool,
    resolve_at: Option<i64>,
    last_activity_ms: i64,
    auto_resolve_armed: bool,
    last_notified_ms: Option<i64>,
    notified: bool,
    /// Set by resolve/reopen: the next evidence starts a new entry even if
    /// it repeats the last one.
    fold_barrier: bool,
}

#[derive(Debug, Clone)]
enum Pending {
    Opened(u64),
    Updated(u64),
    Resolved(u64),
    Reopened(u64),
    Notify {
        slot: u64,
        kind: NotifyKind,
        severity: Severity,
    },
}

#[derive(Debug, Clone)]
struct OrderMark {
    at_ms: i64,
    bodies: Vec<SignalBody>,
}

/// Evidence before it is numbered into an incident.
#[derive(Debug, Clone)]
struct Draft {
    at_ms: i64,
    detector: Detector,
    severity: Severity,
    fingerprint: String,
    summary: String,
    refs: Vec<EvidenceRef>,
}

/// The incident engine.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    now_ms: Option<i64>,
    next_id: u64,
    next_slot: u64,
    next_cond: u64,
    incidents: BTreeMap<u64, Tracked>,
    ids: BTreeMap<String, u64>,
    conds: BTreeMap<u64, Cond>,
    cond_index: BTreeMap<String, u64>,
    open_by_node: BTreeMap<String, BTreeSet<u64>>,
    open_cluster: BTreeSet<u64>,
    silent_nodes: BTreeSet<String>,
    frozen: BTreeSet<u64>,
    timers: BTreeSet<(i64, Timer)>,
    housekeeping_armed: bool,
    detectors: Detectors,
    obs_buf: Vec<Observation>,
    order: BTreeMap<String, OrderMark>,
    known_nodes: BTreeSet<String>,
    gcra_global: Gcra,
    gcra_nodes: BTreeMap<String, Gcra>,
    storm: Option<u64>,
    actions: VecDeque<Pending>,
    queued: BTreeMap<u64, u32>,
    dirty: BTreeSet<u64>,
    restored: Vec<u64>,
    stats: EngineStats,
}

fn fingerprint(d: Detector, s: &Subject) -> String {
    let key = s.key();
    let mut fp = String::with_capacity(d.as_str().len() + 1 + key.len());
    fp.push_str(d.as_str());
    fp.push(':');
    fp.push_str(&key);
    fp
}

impl Engine {
    /// A new engine with no incidents.
    pub fn new(config: EngineConfig) -> Self {
        Self {
            cfg: config,
            now_ms: None,
            next_id: 1,
            next_slot: 0,
            next_cond: 0,
            incidents: BTreeMap::new(),
            ids: BTreeMap::new(),
            conds: BTreeMap::new(),
            cond_index: BTreeMap::new(),
            open_by_node: BTreeMap::new(),
            open_cluster: BTreeSet::new(),
            silent_nodes: BTreeSet::new(),
            frozen: BTreeSet::new(),
            timers: BTreeSet::new(),
            housekeeping_armed: false,
            detectors: Detectors::default(),
            obs_buf: Vec::new(),
            order: BTreeMap::new(),
            known_nodes: BTreeSet::new(),
            gcra_global: Gcra::default(),
            gcra_nodes: BTreeMap::new(),
            storm: None,
            actions: VecDeque::new(),
            queued: BTreeMap::new(),
            dirty: BTreeSet::new(),
            restored: Vec::new(),
            stats: EngineStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Feeds one signal observed at `signal.at_ms`, at hub time `now_ms`.
    pub fn handle_signal(&mut self, now_ms: i64, signal: Signal) {
        let now = self.advance(now_ms);
        self.stats.signals += 1;
        let Signal { at_ms, body } = signal;
        let Some(at) = self.admit(now, at_ms, &body) else {
            return;
        };
        match &body {
            SignalBody::NodeRegistered { node } => {
                self.known_nodes.insert(node.clone());
                return;
            }
            SignalBody::NodeRemoved { node } => {
                self.remove_node(now, at, node);
                self.flush();
                return;
            }
            _ => {}
        }
        let mut obs = std::mem::take(&mut self.obs_buf);
        obs.clear();
        self.detectors
            .observe(&self.cfg.detectors, at, &body, &mut obs);
        for o in obs.drain(..) {
            self.apply(now, at, o);
        }
        self.obs_buf = obs;
        self.flush();
    }

    /// Applies an operator command.
    pub fn handle_command(&mut self, now_ms: i64, cmd: Command) -> Result<(), CommandError> {
        let now = self.advance(now_ms);
        let r = self.command(now, cmd);
        if r.is_err() {
            self.stats.commands_rejected += 1;
        }
        self.flush();
        r
    }

    /// Runs everything due at or before `now_ms`: auto-resolve after the
    /// hold-down, condition expiry (quiet or stale), housekeeping.
    pub fn handle_timeout(&mut self, now_ms: i64) {
        let now = self.advance(now_ms);
        // Only what is due now; timers armed while processing (even for
        // `now` itself, after saturation) wait for the next call, so this
        // always terminates.
        let mut due = Vec::new();
        while let Some(&(deadline, timer)) = self.timers.first() {
            if deadline > now {
                break;
            }
            self.timers.pop_first();
            due.push((deadline, timer));
        }
        for (deadline, timer) in due {
            match timer {
                Timer::Housekeeping => {
                    self.housekeeping(now);
                    let next = now.saturating_add(self.cfg.housekeeping_interval_ms.max(1));
                    if next > now {
                        self.timers.insert((next, Timer::Housekeeping));
                    }
                }
                Timer::Cond(cid) => {
                    let current = match self.conds.get_mut(&cid) {
                        Some(c) if c.expires_at == Some(deadline) => {
                            c.expires_at = None;
                            true
                        }
                        _ => false,
                    };
                    if current {
                        self.expire_cond(now, cid);
                    }
                }
                Timer::Resolve(slot) => {
                    let due = match self.incidents.get_mut(&slot) {
                        Some(t) if t.resolve_at == Some(deadline) => {
                            t.resolve_at = None;
                            t.inc.state != IncidentState::Resolved
                                && t.active == 0
                                && t.auto_resolve_armed
                        }
                        _ => false,
                    };
                    if due {
                        self.resolve(slot, now, ENGINE_ACTOR, true);
                    }
                }
            }
        }
        self.flush();
    }

    /// The next action for the shell, oldest first.
    pub fn poll_action(&mut self) -> Option<Action> {
        while let Some(p) = self.actions.pop_front() {
            let slot = match &p {
                Pending::Opened(s)
                | Pending::Updated(s)
                | Pending::Resolved(s)
                | Pending::Reopened(s) => *s,
                Pending::Notify { slot, .. } => *slot,
            };
            if !matches!(p, Pending::Notify { .. })
                && let Some(q) = self.queued.get_mut(&slot)
            {
                *q = q.saturating_sub(1);
                if *q == 0 {
                    self.queued.remove(&slot);
                }
            }
            let Some(t) = self.incidents.get(&slot) else {
                continue;
            };
            let action = match p {
                Pending::Opened(_) => Action::IncidentOpened(t.inc.clone()),
                Pending::Updated(_) => Action::IncidentUpdated(t.inc.clone()),
                Pending::Resolved(_) => Action::IncidentResolved(t.inc.clone()),
                Pending::Reopened(_) => Action::IncidentReopened(t.inc.clone()),
                Pending::Notify { kind, severity, .. } => Action::Notify(Notification {
                    incident_id: t.inc.id.clone(),
                    severity,
                    kind,
                    title: t.inc.title.clone(),
                    storm: t.inc.storm,
                }),
            };
            return Some(action);
        }
        None
    }

    /// When `handle_timeout` must run next (hub time), if ever.
    pub fn poll_timeout(&self) -> Option<i64> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Incidents in memory (open ones and those resolved within the reopen
    /// window), in creation order.
    pub fn incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.values().map(|t| &t.inc)
    }

    /// One incident by id.
    pub fn incident(&self, id: &str) -> Option<&Incident> {
        self.ids
            .get(id)
            .and_then(|s| self.incidents.get(s))
            .map(|t| &t.inc)
    }

    /// Counters.
    pub fn stats(&self) -> EngineStats {
        self.stats.clone()
    }

    /// Nodes the engine considers known.
    pub fn known_nodes(&self) -> impl Iterator<Item = &str> {
        self.known_nodes.iter().map(String::as_str)
    }

    /// Reloads incidents after a hub restart (call on a fresh engine, before
    /// any signal). Open incidents resume with their conditions; resolved
    /// ones are kept for the reopen window. The id counter moves past every
    /// `inc-<n>`; duplicate ids are ignored. Conditions beyond the listed
    /// ones (`conditions_omitted`) are not restored. Emits no actions.
    pub fn restore(&mut self, incidents: Vec<Incident>) {
        for inc in incidents {
            if self.ids.contains_key(&inc.id) {
                continue;
            }
            if let Some(n) = inc
                .id
                .strip_prefix("inc-")
                .and_then(|s| s.parse::<u64>().ok())
            {
                self.next_id = self.next_id.max(n.saturating_add(1));
            }
            let slot = self.next_slot;
            self.next_slot += 1;
            let resolved = inc.state == IncidentState::Resolved;
            let mut t = Tracked {
                conds: BTreeSet::new(),
                active: 0,
                nodes: inc.nodes.iter().cloned().collect(),
                guests: inc.guests.iter().cloned().collect(),
                containers: inc.containers.iter().cloned().collect(),
                detectors: inc.detectors.iter().copied().collect(),
                extra_affected: BTreeSet::new(),
                cluster: inc.detectors.iter().any(|d| d.cluster_scoped()),
                standalone: inc
                    .conditions
                    .first()
                    .is_some_and(|c| c.detector.standalone()),
                resolve_at: None,
                last_activity_ms: inc.updated_at_ms,
                auto_resolve_armed: true,
                last_notified_ms: None,
                notified: inc.severity >= self.cfg.notify_min_severity,
                fold_barrier: true,
                inc,
            };
            for v in &t.inc.conditions {
                if self.cond_index.contains_key(&v.fingerprint) {
                    continue;
                }
                let cid = self.next_cond;
                self.next_cond += 1;
                let node = v.subject.node().to_string();
                if v.active {
                    t.active += 1;
                    if v.detector == Detector::NodeSilent && !resolved {
                        self.silent_nodes.insert(node.clone());
                    }
                }
                self.known_nodes.insert(node);
                self.cond_index.insert(v.fingerprint.clone(), cid);
                self.conds.insert(
                    cid,
                    Cond {
                        fingerprint: v.fingerprint.clone(),
                        detector: v.detector,
                        subject: v.subject.clone(),
                        severity: v.severity,
                        title: v.title.clone(),
                        active: v.active,
                        muted: v.active && (v.muted || resolved),
                        since_ms: v.since_ms,
                        last_seen_ms: v.last_seen_ms,
                        activations: v.activations,
                        incident: Some(slot),
                        expires_at: None,
                    },
                );
                t.conds.insert(cid);
                if v.active {
                    self.restored.push(cid);
                }
            }
            for n in &t.nodes {
                self.known_nodes.insert(n.clone());
            }
            if !resolved {
                for n in &t.nodes {
                    self.open_by_node.entry(n.clone()).or_default().insert(slot);
                }
                if t.cluster {
                    self.open_cluster.insert(slot);
                }
                if t.inc.storm {
                    self.storm = Some(slot);
                }
            }
            let hold = (!resolved && t.active == 0).then(|| {
                t.inc
                    .updated_at_ms
                    .saturating_add(self.cfg.resolve_hold_down_ms)
            });
            self.ids.insert(t.inc.id.clone(), slot);
            self.incidents.insert(slot, t);
            if let Some(at) = hold {
                self.set_resolve_timer(slot, Some(at));
            }
            self.refresh(slot);
        }
    }

    // ----- input hygiene -------------------------------------------------

    fn advance(&mut self, now: i64) -> i64 {
        let now = match self.now_ms {
            Some(prev) if now < prev => {
                self.stats.clock_regressions += 1;
                prev
            }
            _ => {
                self.now_ms = Some(now);
                now
            }
        };
        if !self.housekeeping_armed {
            self.housekeeping_armed = true;
            let at = now.saturating_add(self.cfg.housekeeping_interval_ms.max(1));
            self.timers.insert((at, Timer::Housekeeping));
        }
        if !self.restored.is_empty() {
            let restored = std::mem::take(&mut self.restored);
            for cid in restored {
                self.arm_restored(now, cid);
            }
        }
        now
    }

    fn admit(&mut self, now: i64, at: i64, body: &SignalBody) -> Option<i64> {
        if at > now.saturating_add(self.cfg.max_future_skew_ms) {
            self.stats.future_dropped += 1;
            return None;
        }
        let at = if at > now {
            self.stats.future_clamped += 1;
            now
        } else {
            at
        };
        if at < now.saturating_sub(self.cfg.max_signal_age_ms) {
            self.stats.stale_dropped += 1;
            return None;
        }
        let node = body.node();
        if node.is_empty() || body.has_bad_float() {
            self.stats.invalid += 1;
            return None;
        }
        let registration = matches!(
            body,
            SignalBody::NodeRegistered { .. } | SignalBody::NodeRemoved { .. }
        );
        if !registration && !self.known_nodes.contains(node) {
            self.stats.unknown_node += 1;
            match self.cfg.unknown_nodes {
                UnknownNodePolicy::Accept => {
                    self.known_nodes.insert(node.to_string());
                }
                UnknownNodePolicy::Drop => {
                    self.stats.unknown_node_dropped += 1;
                    return None;
                }
            }
        }
        if let Some(key) = body.order_key() {
            match self.order.get_mut(&key) {
                Some(mark) if at < mark.at_ms => {
                    self.stats.out_of_order += 1;
                    return None;
                }
                Some(mark) if at == mark.at_ms => {
                    if mark.bodies.contains(body) {
                        self.stats.duplicates += 1;
                        return None;
                    }
                    if mark.bodies.len() < MAX_BODIES_PER_INSTANT {
                        mark.bodies.push(body.clone());
                    }
                }
                Some(mark) => {
                    mark.at_ms = at;
                    mark.bodies.clear();
                    mark.bodies.push(body.clone());
                }
                None => {
                    self.order.insert(
                        key,
                        OrderMark {
                            at_ms: at,
                            bodies: vec![body.clone()],
                        },
                    );
                }
            }
        }
        self.stats.accepted += 1;
        Some(at)
    }

    // ----- observations ----------------------------------------------------

    fn apply(&mut self, now: i64, at: i64, o: Observation) {
        match o.kind {
            ObsKind::Affected => self.affected(o.subject),
            ObsKind::Clear { summary } => {
                let fp = fingerprint(o.detector, &o.subject);
                if let Some(&cid) = self.cond_index.get(&fp) {
                    self.deactivate(now, at, cid, summary);
                }
            }
            ObsKind::Raise {
                severity,
                title,
                summary,
                refs,
                occurrence,
            } => {
                let fp = fingerprint(o.detector, &o.subject);
                let draft = Draft {
                    at_ms: at,
                    detector: o.detector,
                    severity,
                    fingerprint: fp,
                    summary,
                    refs,
                };
                self.raise(now, o.subject, title, occurrence, draft);
            }
        }
    }

    fn affected(&mut self, subject: Subject) {
        let node = subject.node();
        if !self.silent_nodes.contains(node) {
            return;
        }
        let Some(slot) = self.silent_incident(node) else {
            return;
        };
        let guest = subject.guest();
        let container = subject.container();
        let Some(t) = self.incidents.get_mut(&slot) else {
            return;
        };
        let mut changed = t.extra_affected.insert(subject.display());
        if let Some(g) = guest {
            changed |= t.guests.insert(g);
        }
        if let Some(c) = container {
            changed |= t.containers.insert(c);
        }
        if changed {
            self.dirty.insert(slot);
        }
    }

    fn raise(&mut self, now: i64, subject: Subject, title: String, occurrence: bool, ev: Draft) {
        let cid = match self.cond_index.get(&ev.fingerprint) {
            Some(&c) => c,
            None => {
                let cid = self.next_cond;
                self.next_cond += 1;
                self.cond_index.insert(ev.fingerprint.clone(), cid);
                self.conds.insert(
                    cid,
                    Cond {
                        fingerprint: ev.fingerprint.clone(),
                        detector: ev.detector,
                        subject: subject.clone(),
                        severity: ev.severity,
                        title: title.clone(),
                        active: false,
                        muted: false,
                        since_ms: now,
                        last_seen_ms: now,
                        activations: 0,
                        incident: None,
                        expires_at: None,
                    },
                );
                cid
            }
        };
        let expiry = self.expiry_for(ev.detector, subject.node(), now, cid);
        self.set_cond_timer(cid, expiry);
        let Some(c) = self.conds.get_mut(&cid) else {
            return;
        };
        c.last_seen_ms = now;
        if c.subject != subject {
            c.subject = subject;
        }
        if !c.active {
            c.muted = false;
            c.activations = c.activations.saturating_add(1);
            if c.activations == 1 {
                c.since_ms = now;
            }
            c.severity = ev.severity;
            c.title = title;
            if ev.detector == Detector::NodeSilent {
                self.silent_nodes.insert(c.subject.node().to_string());
            }
            self.set_active(cid, true);
            self.route(now, cid, ev);
            return;
        }
        if c.muted {
            if occurrence {
                c.muted = false;
                c.severity = ev.severity;
                c.title = title;
                self.route(now, cid, ev);
            }
            return;
        }
        let changed = ev.severity != c.severity;
        c.severity = ev.severity;
        if changed {
            c.title = title;
        }
        if (occurrence || changed)
            && let Some(slot) = c.incident
        {
            self.add_evidence(slot, now, ev, occurrence, false);
        }
    }

    fn deactivate(&mut self, now: i64, at: i64, cid: u64, summary: String) {
        let Some(c) = self.conds.get_mut(&cid) else {
            return;
        };
        if !c.active {
            return;
        }
        c.muted = false;
        c.last_seen_ms = now;
        let detector = c.detector;
        let node = c.subject.node().to_string();
        let slot = c.incident;
        let fp = c.fingerprint.clone();
        self.set_cond_timer(cid, None);
        self.frozen.remove(&cid);
        self.set_active(cid, false);
        if detector == Detector::NodeSilent {
            self.silent_nodes.remove(&node);
            self.unfreeze(now, &node);
        }
        if let Some(slot) = slot {
            let live = self
                .incidents
                .get(&slot)
                .is_some_and(|t| t.inc.state != IncidentState::Resolved);
            if live {
                let draft = Draft {
                    at_ms: at,
                    detector,
                    severity: Severity::Info,
                    fingerprint: fp,
                    summary: format!("cleared: {summary}"),
                    refs: Vec::new(),
                };
                self.add_evidence(slot, now, draft, false, false);
                self.check_resolve(slot, now);
            }
        }
    }

    fn expire_cond(&mut self, now: i64, cid: u64) {
        let Some(c) = self.conds.get(&cid) else {
            return;
        };
        if !c.active {
            return;
        }
        let life = c.detector.lifetime();
        let node = c.subject.node();
        if matches!(life, Lifetime::Snapshot | Lifetime::Slow) && self.silent_nodes.contains(node) {
            self.frozen.insert(cid);
            return;
        }
        let summary = match life {
            Lifetime::Event => format!("no recurrence for {}", duration(self.cfg.event_quiet_ms)),
            Lifetime::Backup => format!(
                "no new backup failure for {}",
                duration(self.cfg.backup_clear_ms)
            ),
            Lifetime::Snapshot | Lifetime::Slow | Lifetime::Explicit => {
                format!("{} not refreshed (stale)", c.subject.display())
            }
        };
        self.deactivate(now, now, cid, summary);
    }

    fn expiry_for(&mut self, d: Detector, node: &str, now: i64, cid: u64) -> Option<i64> {
        let life = match d.lifetime() {
            Lifetime::Explicit => return None,
            Lifetime::Event => self.cfg.event_quiet_ms,
            Lifetime::Backup => self.cfg.backup_clear_ms,
            Lifetime::Snapshot => self.cfg.stale_after_ms,
            Lifetime::Slow => self.cfg.slow_stale_after_ms,
        };
        if matches!(d.lifetime(), Lifetime::Snapshot | Lifetime::Slow)
            && self.silent_nodes.contains(node)
        {
            self.frozen.insert(cid);
            return None;
        }
        self.frozen.remove(&cid);
        Some(now.saturating_add(life))
    }

    fn unfreeze(&mut self, now: i64, node: &str) {
        let cids: Vec<u64> = self
            .frozen
            .iter()
            .copied()
            .filter(|cid| {
                self.conds
                    .get(cid)
                    .is_some_and(|c| c.subject.node() == node)
            })
            .collect();
        for cid in cids {
            self.frozen.remove(&cid);
            let d = match self.conds.get(&cid) {
                Some(c) if c.active => c.detector,
                _ => continue,
            };
            let at = self.expiry_for(d, node, now, cid);
            self.set_cond_timer(cid, at);
        }
    }

    fn arm_restored(&mut self, now: i64, cid: u64) {
        let Some(c) = self.conds.get(&cid) else {
            return;
        };
        if !c.active {
            return;
        }
        let node = c.subject.node().to_string();
        let grace = now.saturating_add(self.cfg.stale_after_ms);
        let at = match c.detector.lifetime() {
            Lifetime::Explicit => None,
            Lifetime::Event => Some(c.last_seen_ms.saturating_add(self.cfg.event_quiet_ms)),
            Lifetime::Backup => Some(c.last_seen_ms.saturating_add(self.cfg.backup_clear_ms)),
            Lifetime::Snapshot | Lifetime::Slow if self.silent_nodes.contains(&node) => {
                self.frozen.insert(cid);
                None
            }
            Lifetime::Snapshot => Some(grace),
            Lifetime::Slow => Some(
                c.last_seen_ms
                    .saturating_add(self.cfg.slow_stale_after_ms)
                    .max(grace),
            ),
        };
        self.set_cond_timer(cid, at);
    }

    // ----- routing -------------------------------------------------------

    fn route(&mut self, now: i64, cid: u64, ev: Draft) {
        let Some(c) = self.conds.get(&cid) else {
            return;
        };
        let detector = c.detector;
        let node = c.subject.node().to_string();
        let standalone = detector.standalone();

        // 1. The incident this condition already belongs to.
        if let Some(slot) = c.incident {
            let state = self
                .incidents
                .get(&slot)
                .map(|t| (t.inc.state, t.inc.resolved_at_ms));
            match state {
                Some((IncidentState::Open | IncidentState::Acknowledged, _)) => {
                    self.stats.deduplicated += 1;
                    self.attach(slot, cid, now, ev, false);
                    return;
                }
                Some((IncidentState::Resolved, resolved_at))
                    if resolved_at
                        .is_some_and(|r| now.saturating_sub(r) <= self.cfg.reopen_window_ms) =>
                {
                    self.stats.deduplicated += 1;
                    self.reopen(slot, now, ENGINE_ACTOR, &ev.fingerprint);
                    self.attach(slot, cid, now, ev, false);
                    return;
                }
                _ => self.set_incident(cid, None),
            }
        }

        // 2. Offline suppression.
        if !standalone
            && detector != Detector::NodeSilent
            && self.silent_nodes.contains(&node)
            && let Some(slot) = self.silent_incident(&node)
        {
            self.stats.suppressed_offline += 1;
            self.attach(slot, cid, now, ev, false);
            return;
        }

        // 3. Correlation.
        if !standalone && let Some(slot) = self.find_related(now, detector, &node) {
            self.stats.correlated += 1;
            self.attach(slot, cid, now, ev, false);
            return;
        }

        // 4. A new incident, or the storm.
        if self.throttle_allows(now, &node) {
            let slot = self.open_incident(now, ev.fingerprint.clone(), false, standalone);
            self.attach(slot, cid, now, ev, true);
            self.post_open(slot, now);
        } else {
            self.stats.throttled_merged += 1;
            let (slot, created) = match self.storm {
                Some(s)
                    if self
                        .incidents
                        .get(&s)
                        .is_some_and(|t| t.inc.state != IncidentState::Resolved) =>
                {
                    (s, false)
                }
                _ => {
                    let s = self.open_incident(now, "storm".to_string(), true, false);
                    self.storm = Some(s);
                    (s, true)
                }
            };
            if let Some(t) = self.incidents.get_mut(&slot) {
                t.inc.merged_count = t.inc.merged_count.saturating_add(1);
            }
            self.attach(slot, cid, now, ev, created);
            if created {
                self.post_open(slot, now);
            }
        }
    }

    fn silent_incident(&self, node: &str) -> Option<u64> {
        let fp = fingerprint(
            Detector::NodeSilent,
            &Subject::Node {
                node: node.to_string(),
            },
        );
        let c = self.conds.get(self.cond_index.get(&fp)?)?;
        if !c.active || c.muted {
            return None;
        }
        let slot = c.incident?;
        let t = self.incidents.get(&slot)?;
        (t.inc.state != IncidentState::Resolved).then_some(slot)
    }

    fn find_related(&self, now: i64, detector: Detector, node: &str) -> Option<u64> {
        let horizon = now.saturating_sub(self.cfg.correlation_window_ms);
        let by_node = self.open_by_node.get(node).into_iter().flatten();
        let cluster = detector
            .cluster_scoped()
            .then_some(&self.open_cluster)
            .into_iter()
            .flatten();
        let mut best: Option<(i64, u64)> = None;
        for &slot in by_node.chain(cluster) {
            let Some(t) = self.incidents.get(&slot) else {
                continue;
            };
            if t.standalone
                || t.inc.state == IncidentState::Resolved
                || t.last_activity_ms < horizon
            {
                continue;
            }
            let better = match best {
                None => true,
                Some((la, s)) => t.last_activity_ms > la || (t.last_activity_ms == la && slot < s),
            };
            if better {
                best = Some((t.last_activity_ms, slot));
            }
        }
        best.map(|(_, s)| s)
    }

    fn throttle_allows(&mut self, now: i64, node: &str) -> bool {
        let t = self.cfg.throttle;
        let node_cell = self.gcra_nodes.get(node).copied().unwrap_or_default();
        if !(node_cell.allows(t.per_node, now) && self.gcra_global.allows(t.global, now)) {
            return false;
        }
        self.gcra_nodes
            .entry(node.to_string())
            .or_default()
            .consume(t.per_node, now);
        self.gcra_global.consume(t.global, now);
        true
    }

    // ----- incident lifecycle ------------------------------------------

    fn open_incident(&mut self, now: i64, fp: String, storm: bool, standalone: bool) -> u64 {
        let n = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        let slot = self.next_slot;
        self.next_slot += 1;
        let id = format!("inc-{n}");
        let inc = Incident {
            id: id.clone(),
            fingerprint: fp,
            title: String::new(),
            severity: Severity::Info,
            state: IncidentState::Open,
            acknowledged: None,
            resolved: None,
            opened_at_ms: now,
            updated_at_ms: now,
            resolved_at_ms: None,
            since_ms: i64::MAX,
            nodes: Vec::new(),
            guests: Vec::new(),
            containers: Vec::new(),
            detectors: Vec::new(),
            conditions: Vec::new(),
            conditions_omitted: 0,
            likely_cause: None,
            cause_fingerprint: None,
            cause_chain: Vec::new(),
            affected: Vec::new(),
            evidence: Vec::new(),
            evidence_total: 0,
            evidence_omitted: 0,
            timeline: vec![TimelineEntry {
                at_ms: now,
                event: TimelineEvent::Opened,
                by: ENGINE_ACTOR.to_string(),
                detail: if storm {
                    "incident creation throttled: storm".to_string()
                } else {
                    String::new()
                },
            }],
            storm,
            merged_count: 0,
            reopen_count: 0,
            narrative: String::new(),
        };
        self.incidents.insert(
            slot,
            Tracked {
                inc,
                conds: BTreeSet::new(),
                active: 0,
                nodes: BTreeSet::new(),
                guests: BTreeSet::new(),
                containers: BTreeSet::new(),
                detectors: BTreeSet::new(),
                extra_affected: BTreeSet::new(),
                cluster: false,
                standalone,
                resolve_at: None,
                last_activity_ms: now,
                auto_resolve_armed: true,
                last_notified_ms: None,
                notified: false,
                fold_barrier: false,
            },
        );
        self.ids.insert(id, slot);
        self.stats.incidents_opened += 1;
        slot
    }

    fn post_open(&mut self, slot: u64, now: i64) {
        self.push_incident_action(Pending::Opened(slot), slot);
        self.notify(slot, NotifyKind::Opened, now);
    }

    fn push_incident_action(&mut self, p: Pending, slot: u64) {
        self.actions.push_back(p);
        *self.queued.entry(slot).or_default() += 1;
    }

    /// Makes `cid` a member of `slot` and records its evidence.
    fn attach(&mut self, slot: u64, cid: u64, now: i64, ev: Draft, opening: bool) {
        let Some(c) = self.conds.get(&cid) else {
            return;
        };
        let subject = c.subject.clone();
        let detector = c.detector;
        let fp = c.fingerprint.clone();
        let was_member = self
            .incidents
            .get(&slot)
            .is_some_and(|t| t.conds.contains(&cid));
        self.set_incident(cid, Some(slot));
        let Some(t) = self.incidents.get_mut(&slot) else {
            return;
        };
        let open = t.inc.state != IncidentState::Resolved;
        if !was_member && !opening {
            push_timeline(
                &mut t.inc,
                self.cfg.timeline_max,
                TimelineEntry {
                    at_ms: now,
                    event: TimelineEvent::Joined,
                    by: ENGINE_ACTOR.to_string(),
                    detail: fp,
                },
            );
        }
        let node = subject.node().to_string();
        if t.nodes.insert(node.clone()) && open {
            self.open_by_node.entry(node).or_default().insert(slot);
        }
        if let Some(g) = subject.guest() {
            t.guests.insert(g);
        }
        if let Some(ct) = subject.container() {
            t.containers.insert(ct);
        }
        t.detectors.insert(detector);
        if detector.cluster_scoped() {
            t.cluster = true;
            if open {
                self.open_cluster.insert(slot);
            }
        }
        self.add_evidence(slot, now, ev, true, opening);
    }

    /// Adds evidence; `activity` refreshes the correlation window and
    /// cancels a pending auto-resolve.
    fn add_evidence(&mut self, slot: u64, now: i64, ev: Draft, activity: bool, opening: bool) {
        let head = self.cfg.evidence_head;
        let cap = head.saturating_add(self.cfg.evidence_tail).max(1);
        let Some(t) = self.incidents.get_mut(&slot) else {
            return;
        };
        let barrier = std::mem::take(&mut t.fold_barrier);
        let inc = &mut t.inc;
        let folded = match inc.evidence.last_mut() {
            Some(last)
                if !barrier
                    && last.fingerprint == ev.fingerprint
                    && last.summary == ev.summary
                    && last.severity == ev.severity =>
            {
                last.count = last.count.saturating_add(1);
                last.last_at_ms = last.last_at_ms.max(ev.at_ms);
                true
            }
            _ => false,
        };
        if !folded {
            inc.evidence_total = inc.evidence_total.saturating_add(1);
            inc.evidence.push(Evidence {
                n: inc.evidence_total,
                at_ms: ev.at_ms,
                last_at_ms: ev.at_ms,
                count: 1,
                detector: ev.detector,
                severity: ev.severity,
                fingerprint: ev.fingerprint,
                summary: ev.summary,
                refs: ev.refs,
            });
            if inc.evidence.len() > cap {
                let i = head.min(inc.evidence.len().saturating_sub(1));
                inc.evidence.remove(i);
                inc.evidence_omitted = inc.evidence_omitted.saturating_add(1);
                self.stats.evidence_dropped += 1;
            }
        }
        inc.since_ms = inc.since_ms.min(ev.at_ms);
        inc.updated_at_ms = now;
        let escalated = ev.severity > inc.severity;
        if escalated {
            inc.severity = ev.severity;
            if !opening {
                push_timeline(
                    inc,
                    self.cfg.timeline_max,
                    TimelineEntry {
                        at_ms: now,
                        event: TimelineEvent::Escalated,
                        by: ENGINE_ACTOR.to_string(),
                        detail: ev.severity.as_str().to_string(),
                    },
                );
            }
        }
        if activity {
            t.last_activity_ms = now;
            t.auto_resolve_armed = true;
        }
        self.dirty.insert(slot);
        if activity {
            self.set_resolve_timer(slot, None);
        }
        if escalated && !opening {
            self.notify(slot, NotifyKind::Escalated, now);
        }
    }

    fn check_resolve(&mut self, slot: u64, now: i64) {
        let due = self.incidents.get(&slot).is_some_and(|t| {
            t.inc.state != IncidentState::Resolved && t.active == 0 && t.auto_resolve_armed
        });
        if due {
            let at = now.saturating_add(self.cfg.resolve_hold_down_ms);
            self.set_resolve_timer(slot, Some(at));
        }
    }

    fn resolve(&mut self, slot: u64, now: i64, by: &str, auto: bool) {
        let Some(t) = self.incidents.get_mut(&slot) else {
            return;
        };
        t.inc.state = IncidentState::Resolved;
        t.fold_barrier = true;
        t.inc.resolved = Some(Actor {
            by: by.to_string(),
            at_ms: now,
        });
        t.inc.resolved_at_ms = Some(now);
        t.inc.updated_at_ms = now;
        push_timeline(
            &mut t.inc,
            self.cfg.timeline_max,
            TimelineEntry {
                at_ms: now,
                event: TimelineEvent::Resolved,
                by: by.to_string(),
                detail: if auto {
                    "signals cleared".to_string()
                } else {
                    "resolved manually".to_string()
                },
            },
        );
        for n in &t.nodes {
            if let Some(set) = self.open_by_node.get_mut(n) {
                set.remove(&slot);
                if set.is_empty() {
                    self.open_by_node.remove(n);
                }
            }
        }
        self.open_cluster.remove(&slot);
        if !auto {
            for cid in &t.conds {
                if let Some(c) = self.conds.get_mut(cid)
                    && c.active
                {
                    c.muted = true;
                }
            }
        }
        if auto {
            self.stats.incidents_auto_resolved += 1;
        } else {
            self.stats.incidents_manually_resolved += 1;
        }
        if self.storm == Some(slot) {
            self.storm = None;
        }
        self.set_resolve_timer(slot, None);
        self.dirty.insert(slot);
        self.push_incident_action(Pending::Resolved(slot), slot);
        self.notify(slot, NotifyKind::Resolved, now);
    }

    fn reopen(&mut self, slot: u64, now: i64, by: &str, detail: &str) {
        let manual = by != ENGINE_ACTOR;
        let Some(t) = self.incidents.get_mut(&slot) else {
            return;
        };
        t.inc.state = IncidentState::Open;
        t.fold_barrier = true;
        t.inc.acknowledged = None;
        t.inc.resolved = None;
        t.inc.resolved_at_ms = None;
        t.inc.reopen_count = t.inc.reopen_count.saturating_add(1);
        t.inc.updated_at_ms = now;
        push_timeline(
            &mut t.inc,
            self.cfg.timeline_max,
            TimelineEntry {
                at_ms: now,
                event: TimelineEvent::Reopened,
                by: by.to_string(),
                detail: detail.to_string(),
            },
        );
        for n in &t.nodes {
            self.open_by_node.entry(n.clone()).or_default().insert(slot);
        }
        if t.cluster {
            self.open_cluster.insert(slot);
        }
        if manual {
            for cid in &t.conds {
                if let Some(c) = self.conds.get_mut(cid) {
                    c.muted = false;
                }
            }
            t.auto_resolve_armed = t.active > 0;
            t.last_activity_ms = now;
        } else {
            t.auto_resolve_armed = true;
        }
        if t.inc.storm && self.storm.is_none() {
            self.storm = Some(slot);
        }
        self.stats.incidents_reopened += 1;
        self.dirty.insert(slot);
        self.push_incident_action(Pending::Reopened(slot), slot);
        if !manual {
            self.notify(slot, NotifyKind::Reopened, now);
        }
    }

    fn notify(&mut self, slot: u64, kind: NotifyKind, now: i64) {
        let min = self.cfg.notify_min_severity;
        let interval = self.cfg.renotify_min_interval_ms;
        let Some(t) = self.incidents.get_mut(&slot) else {
            return;
        };
        let severity = t.inc.severity;
        let recently = t
            .last_notified_ms
            .is_some_and(|l| now.saturating_sub(l) < interval);
        let send = match kind {
            NotifyKind::Opened => severity >= min,
            NotifyKind::Escalated => {
                if severity < min {
                    false
                } else if t.inc.state == IncidentState::Acknowledged || (t.notified && recently) {
                    self.stats.notifications_suppressed += 1;
                    false
                } else {
                    true
                }
            }
            NotifyKind::Reopened => {
                if severity < min {
                    false
                } else if recently {
                    self.stats.notifications_suppressed += 1;
                    false
                } else {
                    true
                }
            }
            NotifyKind::Resolved => t.notified,
        };
        if send {
            if kind != NotifyKind::Resolved {
                t.notified = true;
                t.last_notified_ms = Some(now);
            }
            self.stats.notifications += 1;
            self.actions.push_back(Pending::Notify {
                slot,
                kind,
                severity,
            });
        }
    }

    fn command(&mut self, now: i64, cmd: Command) -> Result<(), CommandError> {
        let (id, by, name) = match &cmd {
            Command::Acknowledge { incident_id, by } => (incident_id, by, "acknowledge"),
            Command::Resolve { incident_id, by } => (incident_id, by, "resolve"),
            Command::Reopen { incident_id, by } => (incident_id, by, "reopen"),
        };
        if by.trim().is_empty() {
            return Err(CommandError::MissingActor);
        }
        let Some(&slot) = self.ids.get(id) else {
            return Err(CommandError::NotFound {
                incident_id: id.clone(),
            });
        };
        let Some(state) = self.incidents.get(&slot).map(|t| t.inc.state) else {
            return Err(CommandError::NotFound {
                incident_id: id.clone(),
            });
        };
        let invalid = || CommandError::InvalidTransition {
            incident_id: id.clone(),
            state,
            command: name.to_string(),
        };
        match (&cmd, state) {
            (Command::Acknowledge { .. }, IncidentState::Open) => {
                if let Some(t) = self.incidents.get_mut(&slot) {
                    t.inc.state = IncidentState::Acknowledged;
                    t.inc.acknowledged = Some(Actor {
                        by: by.clone(),
                        at_ms: now,
                    });
                    t.inc.updated_at_ms = now;
                    push_timeline(
                        &mut t.inc,
                        self.cfg.timeline_max,
                        TimelineEntry {
                            at_ms: now,
                            event: TimelineEvent::Acknowledged,
                            by: by.clone(),
                            detail: String::new(),
                        },
                    );
                    self.dirty.insert(slot);
                }
                Ok(())
            }
            (Command::Acknowledge { .. }, IncidentState::Acknowledged)
            | (Command::Resolve { .. }, IncidentState::Resolved) => Ok(()),
            (Command::Resolve { .. }, _) => {
                let by = by.clone();
                self.resolve(slot, now, &by, false);
                Ok(())
            }
            (Command::Reopen { .. }, IncidentState::Resolved) => {
                let by = by.clone();
                self.reopen(slot, now, &by, "reopened manually");
                Ok(())
            }
            _ => Err(invalid()),
        }
    }

    fn remove_node(&mut self, now: i64, at: i64, node: &str) {
        self.known_nodes.remove(node);
        let cids: Vec<u64> = self
            .conds
            .iter()
            .filter(|(_, c)| c.active && c.subject.node() == node)
            .map(|(id, _)| *id)
            .collect();
        for cid in cids {
            self.deactivate(now, at, cid, format!("node {node} removed"));
        }
        self.detectors.forget_node(node);
        self.gcra_nodes.remove(node);
    }

    fn housekeeping(&mut self, now: i64) {
        let horizon = now.saturating_sub(self.cfg.reopen_window_ms);
        let evict: Vec<u64> = self
            .incidents
            .iter()
            .filter(|(s, t)| {
                t.inc.state == IncidentState::Resolved
                    && t.inc.resolved_at_ms.is_some_and(|r| r < horizon)
                    && !self.queued.contains_key(s)
            })
            .map(|(s, _)| *s)
            .collect();
        for slot in evict {
            let Some(t) = self.incidents.remove(&slot) else {
                continue;
            };
            self.ids.remove(&t.inc.id);
            self.dirty.remove(&slot);
            if let Some(at) = t.resolve_at {
                self.timers.remove(&(at, Timer::Resolve(slot)));
            }
            for cid in t.conds {
                let keep = match self.conds.get_mut(&cid) {
                    Some(c) if c.active => {
                        c.incident = None;
                        true
                    }
                    _ => false,
                };
                if !keep {
                    self.drop_cond(cid);
                }
            }
            self.stats.incidents_evicted += 1;
        }
        // Orphans: inactive conditions with no incident.
        let orphans: Vec<u64> = self
            .conds
            .iter()
            .filter(|(_, c)| !c.active && c.incident.is_none())
            .map(|(id, _)| *id)
            .collect();
        for cid in orphans {
            self.drop_cond(cid);
        }
        let age = now.saturating_sub(self.cfg.max_signal_age_ms);
        self.order.retain(|_, m| m.at_ms >= age);
        self.detectors.prune(age);
        self.gcra_nodes.retain(|_, g| !g.idle(now));
    }

    fn drop_cond(&mut self, cid: u64) {
        if let Some(c) = self.conds.remove(&cid) {
            self.cond_index.remove(&c.fingerprint);
            if let Some(at) = c.expires_at {
                self.timers.remove(&(at, Timer::Cond(cid)));
            }
            self.frozen.remove(&cid);
        }
    }

    // ----- bookkeeping ---------------------------------------------------

    fn set_active(&mut self, cid: u64, active: bool) {
        let Some(c) = self.conds.get_mut(&cid) else {
            return;
        };
        if c.active == active {
            return;
        }
        c.active = active;
        if let Some(slot) = c.incident
            && let Some(t) = self.incidents.get_mut(&slot)
        {
            if active {
                t.active += 1;
            } else {
                t.active = t.active.saturating_sub(1);
            }
        }
    }

    fn set_incident(&mut self, cid: u64, slot: Option<u64>) {
        let Some(c) = self.conds.get_mut(&cid) else {
            return;
        };
        let old = c.incident;
        if old == slot {
            return;
        }
        c.incident = slot;
        let active = c.active;
        if let Some(o) = old
            && let Some(t) = self.incidents.get_mut(&o)
        {
            t.conds.remove(&cid);
            if active {
                t.active = t.active.saturating_sub(1);
            }
        }
        if let Some(n) = slot
            && let Some(t) = self.incidents.get_mut(&n)
        {
            t.conds.insert(cid);
            if active {
                t.active += 1;
            }
        }
    }

    fn set_cond_timer(&mut self, cid: u64, at: Option<i64>) {
        let Some(c) = self.conds.get_mut(&cid) else {
            return;
        };
        if c.expires_at == at {
            return;
        }
        if let Some(old) = c.expires_at.take() {
            self.timers.remove(&(old, Timer::Cond(cid)));
        }
        c.expires_at = at;
        if let Some(at) = at {
            self.timers.insert((at, Timer::Cond(cid)));
        }
    }

    fn set_resolve_timer(&mut self, slot: u64, at: Option<i64>) {
        let Some(t) = self.incidents.get_mut(&slot) else {
            return;
        };
        if t.resolve_at == at {
            return;
        }
        if let Some(old) = t.resolve_at.take() {
            self.timers.remove(&(old, Timer::Resolve(slot)));
        }
        t.resolve_at = at;
        if let Some(at) = at {
            self.timers.insert((at, Timer::Resolve(slot)));
        }
    }

    /// Recomputes derived fields of dirty incidents and queues one update
    /// per incident that has no action pending.
    fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for slot in dirty {
            self.refresh(slot);
            if !self.queued.contains_key(&slot) && self.incidents.contains_key(&slot) {
                self.push_incident_action(Pending::Updated(slot), slot);
            }
        }
    }

    fn refresh(&mut self, slot: u64) {
        let max_listed = self.cfg.max_conditions_listed;
        let max_affected = self.cfg.max_affected_listed;
        let conds = &self.conds;
        let Some(t) = self.incidents.get_mut(&slot) else {
            return;
        };
        let mut views = Vec::with_capacity(t.conds.len().min(max_listed));
        let mut infos = Vec::with_capacity(t.conds.len().min(max_listed));
        for cid in t.conds.iter().take(max_listed) {
            let Some(c) = conds.get(cid) else {
                continue;
            };
            views.push(ConditionView {
                fingerprint: c.fingerprint.clone(),
                detector: c.detector,
                subject: c.subject.clone(),
                severity: c.severity,
                title: c.title.clone(),
                active: c.active,
                muted: c.muted,
                since_ms: c.since_ms,
                last_seen_ms: c.last_seen_ms,
                activations: c.activations,
            });
            infos.push(CondInfo {
                id: *cid,
                detector: c.detector,
                subject: &c.subject,
                since_ms: c.since_ms,
            });
        }
        let cause = likely_cause(&infos, |id| conds.get(&id).map_or("", |c| c.title.as_str()));
        let cause_cond = cause.as_ref().and_then(|c| conds.get(&c.cond));
        let mut affected: BTreeSet<String> = BTreeSet::new();
        for v in &views {
            if cause_cond.is_some_and(|c| c.fingerprint == v.fingerprint) {
                continue;
            }
            affected.insert(v.subject.display());
        }
        affected.extend(t.extra_affected.iter().cloned());
        if let Some(c) = cause_cond {
            let own = c.subject.display();
            if affected.is_empty() {
                affected.insert(own);
            } else {
                affected.remove(&own);
            }
        }
        let inc = &mut t.inc;
        inc.conditions_omitted =
            u64::try_from(t.conds.len().saturating_sub(views.len())).unwrap_or(u64::MAX);
        inc.title = if inc.storm {
            let nodes: Vec<&str> = t.nodes.iter().take(3).map(String::as_str).collect();
            let more = t.nodes.len().saturating_sub(3);
            let more = if more > 0 {
                format!(" +{more}")
            } else {
                String::new()
            };
            format!(
                "Incident storm: {} new problem(s) merged ({}{more})",
                inc.merged_count,
                nodes.join(", ")
            )
        } else {
            let base = cause_cond.map_or_else(String::new, |c| c.title.clone());
            let others = t.conds.len().saturating_sub(1);
            if others > 0 {
                format!("{base} (+{others} related)")
            } else {
                base
            }
        };
        inc.conditions = views;
        inc.likely_cause = cause.as_ref().map(|c| c.text.clone());
        inc.cause_fingerprint = cause_cond.map(|c| c.fingerprint.clone());
        inc.cause_chain = cause.map(|c| c.chain).unwrap_or_default();
        inc.affected = affected.into_iter().take(max_affected).collect();
        inc.nodes = t.nodes.iter().cloned().collect();
        inc.guests = t.guests.iter().cloned().collect();
        inc.containers = t.containers.iter().cloned().collect();
        inc.detectors = t.detectors.iter().copied().collect();
        if inc.since_ms == i64::MAX {
            inc.since_ms = inc.opened_at_ms;
        }
        inc.narrative = narrative::render(inc);
    }

    /// Checks internal bookkeeping; used by tests after every step.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        for (slot, t) in &self.incidents {
            let active = t
                .conds
                .iter()
                .filter(|c| self.conds.get(c).is_some_and(|c| c.active))
                .count();
            if active != t.active {
                return Err(format!("{}: active {} != {}", t.inc.id, t.active, active));
            }
            for cid in &t.conds {
                let owner = self.conds.get(cid).and_then(|c| c.incident);
                if owner != Some(*slot) {
                    return Err(format!("{}: cond {cid} owned by {owner:?}", t.inc.id));
                }
            }
            let indexed = t
                .nodes
                .iter()
                .all(|n| self.open_by_node.get(n).is_some_and(|s| s.contains(slot)));
            if (t.inc.state != IncidentState::Resolved) != indexed && !t.nodes.is_empty() {
                return Err(format!("{}: node index out of sync", t.inc.id));
            }
        }
        for (fp, cid) in &self.cond_index {
            if self.conds.get(cid).map(|c| &c.fingerprint) != Some(fp) {
                return Err(format!("index {fp} -> {cid} broken"));
            }
        }
        if self.detectors.len() > 1_000_000 {
            return Err("detector state unbounded".into());
        }
        Ok(())
    }
}

fn push_timeline(inc: &mut Incident, max: usize, e: TimelineEntry) {
    inc.timeline.push(e);
    if inc.timeline.len() > max.max(2) {
        inc.timeline.remove(1);
    }
}
