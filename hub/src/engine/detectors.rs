//! Detectors: turn one accepted signal into observations about conditions.
//!
//! A detector says "this problem is present" ([`ObsKind::Raise`]), "this
//! problem is gone" ([`ObsKind::Clear`]) or "this subject is affected"
//! ([`ObsKind::Affected`], used while its node is offline). It knows nothing
//! about incidents; the engine decides what a raise means (new incident,
//! evidence, escalation, reopen). Detector state is limited to sliding
//! windows (pressure sustain clocks, storage trends, crash and restart
//! counts), all keyed in `BTreeMap`s and pruned by `prune`.
//!
//! All times here are observation times (`Signal::at_ms`).

use std::collections::{BTreeMap, VecDeque};

use super::config::DetectorConfig;
use super::model::{Detector, EvidenceRef, Severity, Subject};
use super::signals::{ContainerEventKind, GuestKind, GuestStatus, PoolHealth, SignalBody};

/// What a detector saw.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ObsKind {
    /// The problem is present.
    Raise {
        /// Severity now.
        severity: Severity,
        /// One-line title for the condition.
        title: String,
        /// Evidence text (facts and masked templates only).
        summary: String,
        /// Signal references.
        refs: Vec<EvidenceRef>,
        /// A discrete new event (always evidence; unmutes a muted
        /// condition). `false` for a periodic "still bad" sample.
        occurrence: bool,
    },
    /// The problem is gone.
    Clear {
        /// Evidence text.
        summary: String,
    },
    /// The subject is affected by whatever is wrong with its node.
    Affected,
}

/// One observation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Observation {
    pub(crate) detector: Detector,
    pub(crate) subject: Subject,
    pub(crate) kind: ObsKind,
}

impl Observation {
    fn raise(
        detector: Detector,
        subject: Subject,
        severity: Severity,
        title: String,
        summary: String,
        occurrence: bool,
    ) -> Self {
        Self {
            detector,
            subject,
            kind: ObsKind::Raise {
                severity,
                title,
                summary,
                refs: Vec::new(),
                occurrence,
            },
        }
    }

    fn with_ref(mut self, r: EvidenceRef) -> Self {
        if let ObsKind::Raise { refs, .. } = &mut self.kind {
            refs.push(r);
        }
        self
    }

    fn clear(detector: Detector, subject: Subject, summary: String) -> Self {
        Self {
            detector,
            subject,
            kind: ObsKind::Clear { summary },
        }
    }
}

/// Host resources watched by `resource_pressure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Resource {
    Cpu,
    Memory,
    Io,
}

impl Resource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Memory => "memory",
            Self::Io => "io",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Cpu => "CPU",
            Self::Memory => "memory",
            Self::Io => "I/O",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Pressure {
    above_since: Option<i64>,
    last_at: i64,
}

#[derive(Debug, Clone, Default)]
struct FsTrend {
    /// (observation time, used bytes)
    samples: VecDeque<(i64, f64)>,
}

#[derive(Debug, Clone, Default)]
struct ContainerTrack {
    exits: VecDeque<i64>,
    stop_requested_at: Option<i64>,
    last_at: i64,
}

#[derive(Debug, Clone, Default)]
struct ServiceTrack {
    /// (observation time, restarts in that summary)
    restarts: VecDeque<(i64, u32)>,
}

/// Sliding-window detector state.
#[derive(Debug, Default)]
pub(crate) struct Detectors {
    pressure: BTreeMap<(String, Resource), Pressure>,
    fs: BTreeMap<(String, String), FsTrend>,
    containers: BTreeMap<(String, String), ContainerTrack>,
    services: BTreeMap<(String, String), ServiceTrack>,
}

const MAX_WINDOW_ENTRIES: usize = 256;
const TEMPLATE_CHARS: usize = 160;

impl Detectors {
    /// Feeds one accepted signal; appends observations to `out`.
    pub(crate) fn observe(
        &mut self,
        cfg: &DetectorConfig,
        at: i64,
        body: &SignalBody,
        out: &mut Vec<Observation>,
    ) {
        match body {
            SignalBody::NodeRegistered { .. } | SignalBody::NodeRemoved { .. } => {}
            SignalBody::NodeOnline { node } => {
                let subject = Subject::Node { node: node.clone() };
                out.push(Observation::clear(
                    Detector::NodeSilent,
                    subject.clone(),
                    format!("agent on {node} reporting again"),
                ));
                out.push(Observation::clear(
                    Detector::HaFencing,
                    subject,
                    format!("{node} back online after fencing"),
                ));
            }
            SignalBody::NodeOffline { node } => out.push(Observation::raise(
                Detector::NodeSilent,
                Subject::Node { node: node.clone() },
                Severity::Critical,
                format!("Node {node} is offline"),
                format!("agent on {node} stopped reporting (presence lost)"),
                true,
            )),
            SignalBody::HostSample {
                node,
                cpu_pct,
                mem_pct,
                swap_pct,
                load1,
                cpu_count,
                iowait_pct,
                filesystems,
            } => {
                let cpu_note = format!("load {load1:.1} on {cpu_count} CPUs");
                self.pressure(cfg, node, at, Resource::Cpu, *cpu_pct, &cpu_note, out);
                let mem_note = format!("swap {swap_pct:.0}% used");
                self.pressure(cfg, node, at, Resource::Memory, *mem_pct, &mem_note, out);
                if let Some(io) = iowait_pct {
                    self.pressure(cfg, node, at, Resource::Io, *io, &cpu_note, out);
                }
                for fs in filesystems {
                    self.filesystem(
                        cfg,
                        node,
                        at,
                        &fs.mount,
                        fs.total_bytes,
                        fs.avail_bytes,
                        out,
                    );
                }
            }
            SignalBody::LogTemplate {
                node,
                source_kind,
                source,
                template_id,
                template,
                count,
                severity,
                new_template,
                burst,
            } => {
                let log = LogInput {
                    node,
                    source_label: format!("{}:{source}", source_kind.as_str()),
                    source,
                    template_id: *template_id,
                    template,
                    count: *count,
                    severity: *severity,
                    new_template: *new_template,
                    burst: *burst,
                };
                self.log_template(cfg, at, &log, out);
            }
            SignalBody::GuestState {
                node,
                guest_id,
                guest_kind,
                name,
                status,
                expected_running,
                ha_managed,
            } => guest_state(
                node,
                *guest_id,
                *guest_kind,
                name,
                *status,
                *expected_running,
                *ha_managed,
                out,
            ),
            SignalBody::GuestCrashed {
                node,
                guest_id,
                guest_kind,
                name,
                reason,
            } => {
                let subject = guest_subject(node, *guest_id, Some(*guest_kind), name);
                let who = subject.display();
                let reason = if reason.is_empty() {
                    "process exited ungracefully".to_string()
                } else {
                    truncate(reason, TEMPLATE_CHARS)
                };
                out.push(Observation::raise(
                    Detector::GuestCrashed,
                    subject,
                    Severity::Critical,
                    format!("{} crashed", capitalize(&who)),
                    format!("{who} crashed: {reason}"),
                    true,
                ));
            }
            SignalBody::ContainerEvent {
                node,
                container,
                kind,
                exit_code,
            } => self.container_event(cfg, at, node, container, *kind, *exit_code, out),
            SignalBody::ContainerRestartLoop {
                node,
                container,
                restarts,
                window_s,
            } => {
                if *restarts >= cfg.crash_loop_min_exits {
                    let severity = if *restarts >= cfg.crash_loop_critical_exits {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    };
                    out.push(Observation::raise(
                        Detector::ContainerCrashLoop,
                        container_subject(node, container),
                        severity,
                        format!("Container {container} on {node} is crash-looping"),
                        format!(
                            "container {container} on {node} restarted {restarts} times in {window_s} s"
                        ),
                        true,
                    ));
                }
            }
            SignalBody::TaskFinished {
                node,
                upid,
                task_type,
                guest_id,
                ok,
                status_text,
            } => task_finished(cfg, node, upid, task_type, *guest_id, *ok, status_text, out),
            SignalBody::ZfsPool {
                node,
                pool,
                health,
                scrub_errors,
            } => zfs(node, pool, *health, *scrub_errors, out),
            SignalBody::SmartDisk {
                node,
                device,
                passed,
                reallocated,
                pending,
            } => smart(cfg, node, device, *passed, *reallocated, *pending, out),
            SignalBody::HaFencing { node, fenced_node } => out.push(Observation::raise(
                Detector::HaFencing,
                Subject::Node {
                    node: fenced_node.clone(),
                },
                Severity::Critical,
                format!("HA fenced node {fenced_node}"),
                format!("{node} reported that HA fenced {fenced_node}"),
                true,
            )),
            SignalBody::HaRecovery {
                node,
                from_node,
                guest_id,
            } => {
                let subject = guest_subject(from_node, *guest_id, None, "");
                out.push(Observation::raise(
                    Detector::HaFencing,
                    subject.clone(),
                    Severity::Info,
                    format!("HA recovered guest {guest_id} from {from_node}"),
                    format!("HA recovered guest {guest_id} from {from_node} onto {node}"),
                    true,
                ));
                out.push(Observation::clear(
                    Detector::GuestCrashed,
                    subject,
                    format!("guest {guest_id} recovered by HA onto {node}"),
                ));
            }
            SignalBody::Quorum {
                node,
                quorate,
                members,
            } => {
                let subject = Subject::Node { node: node.clone() };
                if *quorate {
                    out.push(Observation::clear(
                        Detector::QuorumLost,
                        subject,
                        format!("{node} is quorate again ({members} members)"),
                    ));
                } else {
                    out.push(Observation::raise(
                        Detector::QuorumLost,
                        subject,
                        Severity::Critical,
                        format!("Node {node} lost cluster quorum"),
                        format!("{node} sees {members} member(s) and is not quorate"),
                        false,
                    ));
                }
            }
            SignalBody::CertExpiry {
                node,
                subject,
                not_after_ms,
            } => cert(cfg, at, node, subject, *not_after_ms, out),
            SignalBody::PendingUpdates {
                node,
                security,
                total,
            } => {
                let subject = Subject::Node { node: node.clone() };
                if *security > 0 {
                    out.push(Observation::raise(
                        Detector::SecurityUpdates,
                        subject,
                        Severity::Info,
                        format!("Security updates pending on {node}"),
                        format!(
                            "{security} security update(s) pending on {node} ({total} in total)"
                        ),
                        false,
                    ));
                } else {
                    out.push(Observation::clear(
                        Detector::SecurityUpdates,
                        subject,
                        format!("no security updates pending on {node}"),
                    ));
                }
            }
            SignalBody::IoPressure {
                node,
                some_pct,
                full_pct,
            } => {
                let note = format!("I/O stalls {full_pct:.0}% of the time for all tasks");
                self.pressure(cfg, node, at, Resource::Io, *some_pct, &note, out);
            }
            SignalBody::StorageSample {
                node,
                storage,
                total_bytes,
                avail_bytes,
            } => self.filesystem(
                cfg,
                node,
                at,
                &format!("storage {storage}"),
                *total_bytes,
                *avail_bytes,
                out,
            ),
            SignalBody::TimeDrift { node, offset_ms } => {
                let abs = offset_ms.saturating_abs();
                let subject = Subject::Node { node: node.clone() };
                let severity = if abs >= cfg.time_drift_critical_ms {
                    Some(Severity::Critical)
                } else if abs >= cfg.time_drift_warn_ms {
                    Some(Severity::Warning)
                } else {
                    None
                };
                if let Some(severity) = severity {
                    out.push(Observation::raise(
                        Detector::TimeDrift,
                        subject,
                        severity,
                        format!("Clock drift on {node}"),
                        format!("clock on {node} is off by {offset_ms} ms"),
                        false,
                    ));
                } else if abs < cfg.time_drift_warn_ms / 2 {
                    out.push(Observation::clear(
                        Detector::TimeDrift,
                        subject,
                        format!("clock on {node} within {offset_ms} ms"),
                    ));
                }
            }
        }
    }

    /// Forgets everything about a node.
    pub(crate) fn forget_node(&mut self, node: &str) {
        self.pressure.retain(|(n, _), _| n != node);
        self.fs.retain(|(n, _), _| n != node);
        self.containers.retain(|(n, _), _| n != node);
        self.services.retain(|(n, _), _| n != node);
    }

    /// Drops state last touched before `horizon` (observation time).
    pub(crate) fn prune(&mut self, horizon: i64) {
        self.pressure.retain(|_, p| p.last_at >= horizon);
        self.fs
            .retain(|_, t| t.samples.back().is_some_and(|(at, _)| *at >= horizon));
        self.containers.retain(|_, c| c.last_at >= horizon);
        self.services
            .retain(|_, s| s.restarts.back().is_some_and(|(at, _)| *at >= horizon));
    }

    /// Entries held (tests check that state stays bounded).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pressure.len() + self.fs.len() + self.containers.len() + self.services.len()
    }

    #[allow(clippy::too_many_arguments)]
    fn pressure(
        &mut self,
        cfg: &DetectorConfig,
        node: &str,
        at: i64,
        res: Resource,
        value: f32,
        note: &str,
        out: &mut Vec<Observation>,
    ) {
        let threshold = match res {
            Resource::Cpu => cfg.pressure_cpu_pct,
            Resource::Memory => cfg.pressure_mem_pct,
            Resource::Io => cfg.pressure_iowait_pct,
        };
        let st = self
            .pressure
            .entry((node.to_string(), res))
            .or_insert_with(|| Pressure {
                above_since: None,
                last_at: at,
            });
        if at.saturating_sub(st.last_at) > cfg.pressure_max_gap_ms {
            st.above_since = None;
        }
        st.last_at = at;
        let subject = Subject::Resource {
            node: node.to_string(),
            resource: res.as_str().to_string(),
        };
        if value >= threshold {
            let since = *st.above_since.get_or_insert(at);
            let held = at.saturating_sub(since);
            if held >= cfg.pressure_sustain_ms {
                let severity = if res != Resource::Io && value >= cfg.pressure_critical_pct {
                    Severity::Critical
                } else {
                    Severity::Warning
                };
                out.push(Observation::raise(
                    Detector::ResourcePressure,
                    subject,
                    severity,
                    format!("Sustained {} pressure on {node}", res.label()),
                    format!(
                        "{} at {value:.1}% for {} min on {node} (threshold {threshold:.0}%, {note})",
                        res.label(),
                        held / 60_000
                    ),
                    false,
                ));
            }
        } else if value < threshold - cfg.pressure_hysteresis_pct {
            st.above_since = None;
            out.push(Observation::clear(
                Detector::ResourcePressure,
                subject,
                format!("{} back to {value:.1}% on {node}", res.label()),
            ));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn filesystem(
        &mut self,
        cfg: &DetectorConfig,
        node: &str,
        at: i64,
        mount: &str,
        total: u64,
        avail: u64,
        out: &mut Vec<Observation>,
    ) {
        if total == 0 || mount.is_empty() {
            return;
        }
        let avail = avail.min(total);
        let used = total - avail;
        let pct = used as f64 * 100.0 / total as f64;
        let subject = Subject::Filesystem {
            node: node.to_string(),
            mount: mount.to_string(),
        };
        let facts = format!(
            "{mount} on {node} is {pct:.1}% full ({} free of {})",
            bytes(avail),
            bytes(total)
        );
        if pct >= f64::from(cfg.storage_full_pct) {
            out.push(Observation::raise(
                Detector::StorageFull,
                subject.clone(),
                Severity::Critical,
                format!("Storage full on {node}:{mount}"),
                facts.clone(),
                false,
            ));
        } else if pct < f64::from(cfg.storage_full_clear_pct) {
            out.push(Observation::clear(
                Detector::StorageFull,
                subject.clone(),
                facts.clone(),
            ));
        }

        // Trend: least squares of used bytes over observation time.
        let trend = self
            .fs
            .entry((node.to_string(), mount.to_string()))
            .or_default();
        if trend.samples.back().is_some_and(|(t, _)| *t >= at) {
            return;
        }
        trend.samples.push_back((at, used as f64));
        let horizon = at.saturating_sub(cfg.storage_trend_window_ms);
        while trend.samples.front().is_some_and(|(t, _)| *t < horizon) {
            trend.samples.pop_front();
        }
        while trend.samples.len() > cfg.storage_trend_max_samples.max(2) {
            trend.samples.pop_front();
        }
        let Some(&(first_at, _)) = trend.samples.front() else {
            return;
        };
        if trend.samples.len() < cfg.storage_trend_min_samples.max(2)
            || at.saturating_sub(first_at) < cfg.storage_trend_min_span_ms
        {
            return;
        }
        let slope = slope_per_ms(&trend.samples);
        let ttf_ms = if slope > 0.0 {
            Some(avail as f64 / slope)
        } else {
            None
        };
        match ttf_ms {
            Some(ttf) if ttf < cfg.storage_ttf_warn_ms as f64 => {
                let severity = if ttf < cfg.storage_ttf_critical_ms as f64 {
                    Severity::Critical
                } else {
                    Severity::Warning
                };
                let rate_per_h = slope * 3_600_000.0;
                out.push(Observation::raise(
                    Detector::StorageFilling,
                    subject,
                    severity,
                    format!("Storage filling up on {node}:{mount}"),
                    format!(
                        "{mount} on {node} grows {}/h and is projected full in {} ({pct:.1}% used)",
                        bytes(rate_per_h.max(0.0) as u64),
                        duration(ttf as i64)
                    ),
                    false,
                ));
            }
            Some(ttf) if ttf < 2.0 * cfg.storage_ttf_warn_ms as f64 => {}
            _ => out.push(Observation::clear(
                Detector::StorageFilling,
                subject,
                format!("{mount} on {node} no longer projected to fill soon ({pct:.1}% used)"),
            )),
        }
    }

    fn log_template(
        &mut self,
        cfg: &DetectorConfig,
        at: i64,
        log: &LogInput<'_>,
        out: &mut Vec<Observation>,
    ) {
        let t = log.template;
        let node = log.node;
        let shown = truncate(t, TEMPLATE_CHARS);
        let times = if log.count > 1 {
            format!(" (x{})", log.count)
        } else {
            String::new()
        };
        let tref = EvidenceRef::Template {
            template_id: log.template_id,
        };

        // Kernel OOM killer.
        if t.contains("Out of memory: Killed process")
            || t.contains("out of memory: Killed process")
            || t.contains("oom-kill:")
            || t.contains("invoked oom-killer")
        {
            let comm = oom_comm(t);
            let (severity, what) = match comm.as_deref() {
                Some("kvm") | Some("qemu-system-x86_64") => (
                    Severity::Critical,
                    "the OOM killer killed a QEMU guest process (kvm)".to_string(),
                ),
                Some(c) => (Severity::Warning, format!("the OOM killer killed {c}")),
                None => (Severity::Warning, "the OOM killer ran".to_string()),
            };
            out.push(
                Observation::raise(
                    Detector::OomKill,
                    Subject::Node {
                        node: node.to_string(),
                    },
                    severity,
                    format!("OOM kill on {node}"),
                    format!("{what} on {node}: \"{shown}\"{times}"),
                    true,
                )
                .with_ref(tref),
            );
            return;
        }

        // systemd unit failures and restart loops.
        let gave_up = t.contains("Start request repeated too quickly");
        let restart = t.contains("Scheduled restart job, restart counter is at");
        let failed = t.contains("Failed with result")
            || t.contains("Main process exited, code=")
            || t.starts_with("Failed to start ");
        if gave_up || restart || failed {
            let unit = unit_of(t, log.source);
            let subject = Subject::Service {
                node: node.to_string(),
                unit: unit.clone(),
            };
            if gave_up {
                out.push(
                    Observation::raise(
                        Detector::ServiceFailing,
                        subject,
                        Severity::Critical,
                        format!("Service {unit} on {node} keeps failing"),
                        format!("systemd gave up restarting {unit} on {node}: \"{shown}\"{times}"),
                        true,
                    )
                    .with_ref(tref),
                );
            } else if restart {
                let track = self
                    .services
                    .entry((node.to_string(), unit.clone()))
                    .or_default();
                track.restarts.push_back((at, log.count.max(1)));
                let horizon = at.saturating_sub(cfg.service_window_ms);
                while track.restarts.front().is_some_and(|(t, _)| *t < horizon)
                    || track.restarts.len() > MAX_WINDOW_ENTRIES
                {
                    track.restarts.pop_front();
                }
                let n: u32 = track
                    .restarts
                    .iter()
                    .fold(0u32, |a, (_, c)| a.saturating_add(*c));
                if n >= cfg.service_restart_loop_min {
                    out.push(
                        Observation::raise(
                            Detector::ServiceFailing,
                            subject,
                            Severity::Warning,
                            format!("Service {unit} on {node} is restart-looping"),
                            format!(
                                "{unit} on {node} restarted {n} times in {} min: \"{shown}\"",
                                cfg.service_window_ms / 60_000
                            ),
                            true,
                        )
                        .with_ref(tref),
                    );
                }
            } else {
                out.push(
                    Observation::raise(
                        Detector::ServiceFailing,
                        subject,
                        Severity::Warning,
                        format!("Service {unit} on {node} failed"),
                        format!("{unit} on {node} failed: \"{shown}\"{times}"),
                        true,
                    )
                    .with_ref(tref),
                );
            }
            return;
        }

        let subject = Subject::LogTemplate {
            node: node.to_string(),
            source: log.source_label.clone(),
            template_id: log.template_id,
        };
        let severity = if log.severity <= 2 {
            Severity::Critical
        } else {
            Severity::Warning
        };

        // Storage I/O errors (kernel, filesystems): always worth a look.
        if is_io_error(t) && log.severity <= 4 {
            out.push(
                Observation::raise(
                    Detector::LogErrorBurst,
                    subject,
                    severity,
                    format!("I/O errors on {node}"),
                    format!(
                        "I/O errors from {} on {node}: \"{shown}\"{times}",
                        log.source_label
                    ),
                    true,
                )
                .with_ref(tref),
            );
            return;
        }

        // New or bursting error templates.
        if log.severity <= cfg.log_error_max_priority
            && (log.burst || (log.new_template && log.count >= cfg.log_new_template_min_count))
        {
            let what = if log.burst {
                "error burst"
            } else {
                "new error template"
            };
            out.push(
                Observation::raise(
                    Detector::LogErrorBurst,
                    subject,
                    severity,
                    format!("Error burst from {} on {node}", log.source_label),
                    format!(
                        "{what} from {} on {node}: \"{shown}\"{times}",
                        log.source_label
                    ),
                    true,
                )
                .with_ref(tref),
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn container_event(
        &mut self,
        cfg: &DetectorConfig,
        at: i64,
        node: &str,
        container: &str,
        kind: ContainerEventKind,
        exit_code: Option<i64>,
        out: &mut Vec<Observation>,
    ) {
        let subject = container_subject(node, container);
        let key = (node.to_string(), container.to_string());
        match kind {
            ContainerEventKind::Die => {
                let track = self.containers.entry(key).or_default();
                track.last_at = at;
                let intentional = track
                    .stop_requested_at
                    .is_some_and(|s| at.saturating_sub(s) <= cfg.stop_grace_ms);
                let Some(code) = exit_code.filter(|c| *c != 0) else {
                    return;
                };
                if intentional {
                    return;
                }
                track.exits.push_back(at);
                let horizon = at.saturating_sub(cfg.crash_loop_window_ms);
                while track.exits.front().is_some_and(|t| *t < horizon)
                    || track.exits.len() > MAX_WINDOW_ENTRIES
                {
                    track.exits.pop_front();
                }
                let n = u32::try_from(track.exits.len()).unwrap_or(u32::MAX);
                if n >= cfg.crash_loop_min_exits {
                    let severity = if n >= cfg.crash_loop_critical_exits {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    };
                    out.push(
                        Observation::raise(
                            Detector::ContainerCrashLoop,
                            subject,
                            severity,
                            format!("Container {container} on {node} is crash-looping"),
                            format!(
                                "container {container} on {node} exited with code {code} ({n} non-zero exits in {} min)",
                                cfg.crash_loop_window_ms / 60_000
                            ),
                            true,
                        )
                        .with_ref(EvidenceRef::ExitCode { exit_code: code }),
                    );
                }
            }
            ContainerEventKind::Oom => {
                self.containers.entry(key).or_default().last_at = at;
                out.push(Observation::raise(
                    Detector::OomKill,
                    subject,
                    Severity::Warning,
                    format!("OOM kill in container {container} on {node}"),
                    format!("the OOM killer killed a process in container {container} on {node}"),
                    true,
                ));
            }
            ContainerEventKind::Unhealthy => out.push(Observation::raise(
                Detector::ContainerUnhealthy,
                subject,
                Severity::Warning,
                format!("Container {container} on {node} is unhealthy"),
                format!("health check of container {container} on {node} failing"),
                true,
            )),
            ContainerEventKind::Healthy => out.push(Observation::clear(
                Detector::ContainerUnhealthy,
                subject,
                format!("container {container} on {node} healthy again"),
            )),
            ContainerEventKind::Stop | ContainerEventKind::Kill => {
                let track = self.containers.entry(key).or_default();
                track.last_at = at;
                track.stop_requested_at = Some(at);
                if kind == ContainerEventKind::Stop {
                    out.push(Observation::clear(
                        Detector::ContainerUnhealthy,
                        subject,
                        format!("container {container} on {node} stopped"),
                    ));
                }
            }
            ContainerEventKind::Destroy => {
                self.containers.remove(&key);
                for d in [
                    Detector::ContainerUnhealthy,
                    Detector::ContainerCrashLoop,
                    Detector::OomKill,
                ] {
                    out.push(Observation::clear(
                        d,
                        subject.clone(),
                        format!("container {container} on {node} removed"),
                    ));
                }
            }
            ContainerEventKind::Start | ContainerEventKind::Restart | ContainerEventKind::Other => {
            }
        }
    }
}

struct LogInput<'a> {
    node: &'a str,
    source_label: String,
    source: &'a str,
    template_id: u64,
    template: &'a str,
    count: u32,
    severity: u8,
    new_template: bool,
    burst: bool,
}

fn guest_subject(node: &str, guest_id: u32, kind: Option<GuestKind>, name: &str) -> Subject {
    Subject::Guest {
        node: node.to_string(),
        guest_id,
        guest_kind: kind,
        name: name.to_string(),
    }
}

fn container_subject(node: &str, container: &str) -> Subject {
    Subject::Container {
        node: node.to_string(),
        container: container.to_string(),
    }
}

#[allow(clippy::too_many_arguments)]
fn guest_state(
    node: &str,
    guest_id: u32,
    kind: GuestKind,
    name: &str,
    status: GuestStatus,
    expected_running: bool,
    ha_managed: bool,
    out: &mut Vec<Observation>,
) {
    let subject = guest_subject(node, guest_id, Some(kind), name);
    let who = subject.display();
    match status {
        GuestStatus::Running => out.push(Observation::clear(
            Detector::GuestCrashed,
            subject,
            format!("{who} is running"),
        )),
        GuestStatus::IoError => out.push(Observation::raise(
            Detector::GuestCrashed,
            subject,
            Severity::Critical,
            format!("{} paused on I/O error", capitalize(&who)),
            format!("{who} was paused by QEMU because of a storage I/O error"),
            false,
        )),
        GuestStatus::Stopped if expected_running => {
            let severity = if ha_managed {
                Severity::Critical
            } else {
                Severity::Warning
            };
            let ha = if ha_managed { " (HA-managed)" } else { "" };
            out.push(Observation::raise(
                Detector::GuestCrashed,
                subject,
                severity,
                format!("{} stopped unexpectedly", capitalize(&who)),
                format!("{who}{ha} is stopped but expected to run"),
                false,
            ));
        }
        GuestStatus::Stopped => {
            out.push(Observation::clear(
                Detector::GuestCrashed,
                subject.clone(),
                format!("{who} stopped as intended"),
            ));
            out.push(Observation {
                detector: Detector::GuestCrashed,
                subject,
                kind: ObsKind::Affected,
            });
        }
        GuestStatus::Paused | GuestStatus::Suspended | GuestStatus::Unknown => {
            out.push(Observation {
                detector: Detector::GuestCrashed,
                subject,
                kind: ObsKind::Affected,
            });
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn task_finished(
    cfg: &DetectorConfig,
    node: &str,
    upid: &str,
    task_type: &str,
    guest_id: Option<u32>,
    ok: bool,
    status_text: &str,
    out: &mut Vec<Observation>,
) {
    if cfg.task_ignore_types.iter().any(|t| t == task_type) {
        return;
    }
    let status = truncate(status_text, TEMPLATE_CHARS);
    let status = if status.is_empty() {
        "no status".to_string()
    } else {
        status
    };
    let r = EvidenceRef::Task {
        upid: upid.to_string(),
    };
    if task_type == "vzdump" {
        let subject = match guest_id {
            Some(g) => guest_subject(node, g, None, ""),
            None => Subject::Task {
                node: node.to_string(),
                task_type: task_type.to_string(),
                guest_id: None,
            },
        };
        let what = match guest_id {
            Some(g) => format!("guest {g}"),
            None => "the backup job".to_string(),
        };
        if ok {
            out.push(Observation::clear(
                Detector::BackupFailed,
                subject,
                format!("backup of {what} on {node} succeeded"),
            ));
        } else {
            let title = match guest_id {
                Some(g) => format!("Backup of guest {g} on {node} failed"),
                None => format!("Backup job on {node} failed"),
            };
            out.push(
                Observation::raise(
                    Detector::BackupFailed,
                    subject,
                    Severity::Warning,
                    title,
                    format!("vzdump of {what} on {node} failed: {status}"),
                    true,
                )
                .with_ref(r),
            );
        }
        return;
    }
    let subject = Subject::Task {
        node: node.to_string(),
        task_type: task_type.to_string(),
        guest_id,
    };
    let what = match guest_id {
        Some(g) => format!("{task_type} of guest {g}"),
        None => task_type.to_string(),
    };
    if ok {
        out.push(Observation::clear(
            Detector::TaskFailed,
            subject,
            format!("{what} on {node} succeeded"),
        ));
    } else {
        out.push(
            Observation::raise(
                Detector::TaskFailed,
                subject,
                Severity::Warning,
                format!("Task {what} on {node} failed"),
                format!("task {what} on {node} failed: {status}"),
                true,
            )
            .with_ref(r),
        );
    }
}

fn zfs(node: &str, pool: &str, health: PoolHealth, scrub_errors: u64, out: &mut Vec<Observation>) {
    let subject = Subject::Pool {
        node: node.to_string(),
        pool: pool.to_string(),
    };
    let severity = match health {
        PoolHealth::Online if scrub_errors == 0 => None,
        PoolHealth::Online
        | PoolHealth::Degraded
        | PoolHealth::Offline
        | PoolHealth::Removed
        | PoolHealth::Unknown => Some(Severity::Warning),
        PoolHealth::Faulted | PoolHealth::Unavail | PoolHealth::Suspended => {
            Some(Severity::Critical)
        }
    };
    match severity {
        None => out.push(Observation::clear(
            Detector::ZfsDegraded,
            subject,
            format!("ZFS pool {pool} on {node} is ONLINE"),
        )),
        Some(severity) => {
            let title = if health == PoolHealth::Online {
                format!("ZFS pool {pool} on {node} has scrub errors")
            } else {
                format!("ZFS pool {pool} on {node} is {}", health.as_str())
            };
            out.push(Observation::raise(
                Detector::ZfsDegraded,
                subject,
                severity,
                title,
                format!(
                    "zpool {pool} on {node}: health {}, {scrub_errors} scrub error(s)",
                    health.as_str()
                ),
                false,
            ));
        }
    }
}

fn smart(
    cfg: &DetectorConfig,
    node: &str,
    device: &str,
    passed: bool,
    reallocated: u64,
    pending: u64,
    out: &mut Vec<Observation>,
) {
    let subject = Subject::Disk {
        node: node.to_string(),
        device: device.to_string(),
    };
    let facts = format!(
        "{device} on {node}: SMART {}, {reallocated} reallocated, {pending} pending sector(s)",
        if passed { "passed" } else { "FAILED" }
    );
    if !passed {
        out.push(Observation::raise(
            Detector::SmartFailing,
            subject,
            Severity::Critical,
            format!("Disk {device} on {node} is failing"),
            facts,
            false,
        ));
    } else if reallocated >= cfg.smart_reallocated_warn.max(1)
        || pending >= cfg.smart_pending_warn.max(1)
    {
        out.push(Observation::raise(
            Detector::SmartFailing,
            subject,
            Severity::Warning,
            format!("Disk {device} on {node} has bad sectors"),
            facts,
            false,
        ));
    } else {
        out.push(Observation::clear(Detector::SmartFailing, subject, facts));
    }
}

fn cert(
    cfg: &DetectorConfig,
    at: i64,
    node: &str,
    subject_name: &str,
    not_after_ms: i64,
    out: &mut Vec<Observation>,
) {
    let subject = Subject::Certificate {
        node: node.to_string(),
        subject: subject_name.to_string(),
    };
    let left = not_after_ms.saturating_sub(at);
    let severity = if left < cfg.cert_critical_ms {
        Some(Severity::Critical)
    } else if left < cfg.cert_warn_ms {
        Some(Severity::Warning)
    } else {
        None
    };
    match severity {
        Some(severity) => {
            let when = if left <= 0 {
                "has expired".to_string()
            } else {
                format!("expires in {}", duration(left))
            };
            out.push(Observation::raise(
                Detector::CertExpiring,
                subject,
                severity,
                format!("Certificate {subject_name} on {node} {when}"),
                format!("certificate {subject_name} on {node} {when}"),
                false,
            ));
        }
        None => out.push(Observation::clear(
            Detector::CertExpiring,
            subject,
            format!(
                "certificate {subject_name} on {node} valid for {}",
                duration(left)
            ),
        )),
    }
}

fn is_io_error(t: &str) -> bool {
    t.contains("I/O error")
        || t.contains("EXT4-fs error")
        || t.contains("blk_update_request")
        || t.contains("critical medium error")
        || t.contains("No space left on device")
}

/// The process name in `Killed process <*> (<comm>)` or `<comm> invoked
/// oom-killer`.
fn oom_comm(t: &str) -> Option<String> {
    if let Some(i) = t.find("Killed process ") {
        let rest = t.get(i..)?;
        let open = rest.find('(')?;
        let after = rest.get(open + 1..)?;
        let close = after.find(')')?;
        let comm = after.get(..close)?;
        if !comm.is_empty() && comm != "<*>" {
            return Some(truncate(comm, 32));
        }
        return None;
    }
    if let Some(i) = t.find(" invoked oom-killer") {
        let comm = t.get(..i)?.rsplit(' ').next()?;
        if !comm.is_empty() && comm != "<*>" {
            return Some(truncate(comm, 32));
        }
    }
    None
}

const UNIT_SUFFIXES: [&str; 6] = [
    ".service", ".socket", ".timer", ".mount", ".scope", ".target",
];

/// The unit a systemd message is about: the `<unit>:` prefix, the unit after
/// `Failed to start `, or the log source.
fn unit_of(t: &str, source: &str) -> String {
    let is_unit = |s: &str| UNIT_SUFFIXES.iter().any(|x| s.ends_with(x)) && !s.contains(' ');
    if let Some((head, _)) = t.split_once(": ")
        && is_unit(head)
    {
        return truncate(head, 96);
    }
    if let Some(rest) = t.strip_prefix("Failed to start ") {
        let word = rest.split(' ').next().unwrap_or("");
        let word = word.trim_end_matches('.');
        if is_unit(word) {
            return truncate(word, 96);
        }
    }
    if source.is_empty() {
        "unknown unit".to_string()
    } else {
        truncate(source, 96)
    }
}

/// Least-squares slope (units per ms) of `(t, y)` samples.
fn slope_per_ms(samples: &VecDeque<(i64, f64)>) -> f64 {
    let Some(&(t0, _)) = samples.front() else {
        return 0.0;
    };
    let n = samples.len() as f64;
    let (mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0);
    for &(t, y) in samples {
        let x = t.saturating_sub(t0) as f64;
        sx += x;
        sy += y;
        sxx += x * x;
        sxy += x * y;
    }
    let den = n * sxx - sx * sx;
    if den.abs() < f64::EPSILON {
        return 0.0;
    }
    let s = (n * sxy - sx * sy) / den;
    if s.is_finite() { s } else { 0.0 }
}

/// At most `max` characters, cut on a char boundary, with `...` when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((i, _)) => {
            let mut out = s.get(..i).unwrap_or("").to_string();
            out.push_str("...");
            out
        }
    }
}

/// Sentence case for titles; guest kinds become `VM`/`CT`.
fn capitalize(s: &str) -> String {
    for (short, long) in [("vm ", "VM "), ("ct ", "CT ")] {
        if let Some(rest) = s.strip_prefix(short) {
            return format!("{long}{rest}");
        }
    }
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `1.5 GiB` style sizes.
pub(crate) fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    let unit = UNITS.get(u).copied().unwrap_or("B");
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {unit}")
    }
}

/// `3 d 4 h`, `5 h 10 min`, `12 min` style durations.
pub(crate) fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    let min = ms / 60_000;
    let (d, h, m) = (min / 1440, (min / 60) % 24, min % 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else {
        format!("{m} min")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_parsing() {
        assert_eq!(
            unit_of(
                "nginx.service: Failed with result 'exit-code'.",
                "init.scope"
            ),
            "nginx.service"
        );
        assert_eq!(
            unit_of(
                "Failed to start nginx.service - A high performance web server.",
                "systemd"
            ),
            "nginx.service"
        );
        assert_eq!(
            unit_of(
                "Main process exited, code=exited, status=<*>",
                "pveproxy.service"
            ),
            "pveproxy.service"
        );
    }

    #[test]
    fn oom_comm_parsing() {
        assert_eq!(
            oom_comm("Out of memory: Killed process <*> (kvm) total-vm:<*>").as_deref(),
            Some("kvm")
        );
        assert_eq!(
            oom_comm("java invoked oom-killer: gfp_mask=<*>").as_deref(),
            Some("java")
        );
        assert_eq!(oom_comm("Killed process <*> (<*>)"), None);
        assert_eq!(oom_comm("Killed process ("), None);
    }

    #[test]
    fn slope_and_formatting() {
        let s: VecDeque<(i64, f64)> = [(0, 0.0), (1000, 10.0), (2000, 20.0)].into();
        assert!((slope_per_ms(&s) - 0.01).abs() < 1e-9);
        assert_eq!(slope_per_ms(&VecDeque::new()), 0.0);
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(duration(90 * 60_000), "1 h 30 min");
        assert_eq!(duration(-5), "0 min");
        assert_eq!(truncate("héllo", 2), "hé...");
        assert_eq!(truncate("ab", 2), "ab");
    }
}
