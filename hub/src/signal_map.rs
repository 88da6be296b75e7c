//! Maps committed facts to incident-engine signals. Most facts map one to
//! one; a few need memory of what the node reported before (a guest that was
//! running and is now stopped with no operator stop task in between is
//! stopped unexpectedly; an HA service that moved off a fenced node was
//! recovered), which [`FactMapper`] keeps per agent session.

use std::collections::{HashMap, HashSet};

use wingman_protocol::docker::ContainerEventKind as DockerEventKind;
use wingman_protocol::pve::{PveFact, PveGuest, PveHaStatus, SmartHealth};
use wingman_protocol::{Fact, FactBody};

use crate::engine::{
    ContainerEventKind, FsSample, GuestKind, GuestStatus, LogSourceKind, PoolHealth, Signal,
    SignalBody,
};

/// Task types that stop or shut a guest down on an operator's request
/// (directly, through HA, or a backup in stop mode is not one of them).
const STOP_TASKS: &[&str] = &[
    "qmstop",
    "qmshutdown",
    "vzstop",
    "vzshutdown",
    "hastop",
    "qmsuspend",
    "vzsuspend",
    "qmdestroy",
    "vzdestroy",
    "qmigrate",
    "vzmigrate",
    "hamigrate",
];
/// Task types that start a guest.
const START_TASKS: &[&str] = &["qmstart", "vzstart", "hastart", "qmresume", "vzresume"];

/// What the mapper remembers about one guest.
#[derive(Debug, Clone, Copy, Default)]
struct GuestMemory {
    /// It was seen running.
    was_running: bool,
    /// An operator stop/shutdown/migrate task was seen since.
    stopped_by_operator: bool,
}

/// Stateful fact-to-signal mapping for one node's stream.
#[derive(Debug, Default)]
pub struct FactMapper {
    guests: HashMap<u32, GuestMemory>,
    /// HA service id -> node it ran on.
    ha_services: HashMap<String, String>,
    /// Nodes reported fenced.
    fenced: HashSet<String>,
}

/// Maps committed facts of one node to engine signals, without memory of
/// earlier batches (a guest's first observation is never "unexpected").
pub fn signals_from_facts(node: &str, facts: &[Fact]) -> Vec<Signal> {
    FactMapper::default().map(node, facts)
}

fn guest_status(s: &str) -> GuestStatus {
    match s {
        "running" => GuestStatus::Running,
        "stopped" => GuestStatus::Stopped,
        "paused" => GuestStatus::Paused,
        "suspended" | "prelaunch" => GuestStatus::Suspended,
        "io-error" | "internal-error" => GuestStatus::IoError,
        _ => GuestStatus::Unknown,
    }
}

fn guest_kind(k: wingman_protocol::pve::GuestKind) -> GuestKind {
    match k {
        wingman_protocol::pve::GuestKind::Qemu => GuestKind::Qemu,
        wingman_protocol::pve::GuestKind::Lxc => GuestKind::Lxc,
    }
}

fn pool_health(s: &str) -> PoolHealth {
    match s.to_ascii_uppercase().as_str() {
        "ONLINE" => PoolHealth::Online,
        "DEGRADED" => PoolHealth::Degraded,
        "FAULTED" => PoolHealth::Faulted,
        "OFFLINE" => PoolHealth::Offline,
        "UNAVAIL" => PoolHealth::Unavail,
        "REMOVED" => PoolHealth::Removed,
        "SUSPENDED" => PoolHealth::Suspended,
        _ => PoolHealth::Unknown,
    }
}

/// The VMID of an HA service id such as `vm:101` or `ct:105`.
fn sid_vmid(sid: &str) -> Option<u32> {
    sid.split_once(':').and_then(|(_, id)| id.parse().ok())
}

impl FactMapper {
    /// Maps one committed batch.
    pub fn map(&mut self, node: &str, facts: &[Fact]) -> Vec<Signal> {
        let mut out = Vec::new();
        for f in facts {
            self.map_one(node, f, &mut out);
        }
        out
    }

    fn guest(&mut self, at: i64, node: &str, g: &PveGuest, out: &mut Vec<Signal>) {
        if g.template {
            return;
        }
        let status = guest_status(&g.status);
        let ha_state = g.ha_state.as_deref().unwrap_or("");
        let ha_managed = !ha_state.is_empty();
        let mem = self.guests.entry(g.vmid).or_default();
        // HA wants it started: stopped is unexpected whatever came before.
        let ha_wants_running = ha_state == "started";
        let expected_running = ha_wants_running || (mem.was_running && !mem.stopped_by_operator);
        match status {
            GuestStatus::Running => {
                mem.was_running = true;
                mem.stopped_by_operator = false;
            }
            GuestStatus::Stopped => {}
            _ => {}
        }
        out.push(Signal::new(
            at,
            SignalBody::GuestState {
                node: g.node.clone().if_empty(node),
                guest_id: g.vmid,
                guest_kind: guest_kind(g.kind),
                name: g.name.clone(),
                status,
                expected_running: status == GuestStatus::Stopped && expected_running,
                ha_managed,
            },
        ));
        if status == GuestStatus::Stopped {
            // Reported once; a later start makes it expected again.
            let mem = self.guests.entry(g.vmid).or_default();
            mem.was_running = false;
            mem.stopped_by_operator = false;
        }
    }

    fn ha(&mut self, at: i64, node: &str, h: &PveHaStatus, out: &mut Vec<Signal>) {
        for f in &h.fencing {
            self.fenced.insert(f.node.clone());
            out.push(Signal::new(
                at,
                SignalBody::HaFencing {
                    node: node.to_string(),
                    fenced_node: f.node.clone(),
                },
            ));
        }
        for s in &h.services {
            let prev = self.ha_services.insert(s.sid.clone(), s.node.clone());
            if let (Some(prev), Some(vmid)) = (prev, sid_vmid(&s.sid))
                && prev != s.node
                && self.fenced.contains(&prev)
                && s.state == "started"
            {
                out.push(Signal::new(
                    at,
                    SignalBody::HaRecovery {
                        node: s.node.clone(),
                        from_node: prev,
                        guest_id: vmid,
                    },
                ));
            }
        }
    }

    fn map_one(&mut self, node: &str, f: &Fact, out: &mut Vec<Signal>) {
        let at = f.observed_at_ms;
        let n = || node.to_string();
        match &f.body {
            FactBody::Pve(PveFact::Guest(g)) => self.guest(at, node, g, out),
            FactBody::Pve(PveFact::Task(t)) => {
                let vmid: Option<u32> = t.upid.id.parse().ok();
                if let Some(vmid) = vmid {
                    let ty = t.upid.task_type.as_str();
                    let mem = self.guests.entry(vmid).or_default();
                    if STOP_TASKS.contains(&ty) {
                        mem.stopped_by_operator = true;
                    } else if START_TASKS.contains(&ty) && t.status.is_success() {
                        mem.was_running = true;
                        mem.stopped_by_operator = false;
                    }
                }
                if t.status.is_finished() {
                    out.push(Signal::new(
                        t.end_ms.unwrap_or(at),
                        SignalBody::TaskFinished {
                            node: n(),
                            upid: t.upid.to_string(),
                            task_type: t.upid.task_type.clone(),
                            guest_id: vmid,
                            ok: t.status.is_success(),
                            status_text: t.status.to_string(),
                        },
                    ));
                }
            }
            FactBody::Pve(PveFact::Ha(h)) => self.ha(at, node, h, out),
            FactBody::Pve(PveFact::Cluster(c)) => {
                if c.node_count > 1 || c.cluster_name.is_some() {
                    out.push(Signal::new(
                        at,
                        SignalBody::Quorum {
                            node: n(),
                            quorate: c.quorate,
                            members: c.nodes.iter().filter(|m| m.online).count() as u32,
                        },
                    ));
                }
            }
            FactBody::Pve(PveFact::Storage(s)) => {
                if s.active && s.enabled && s.total > 0 {
                    out.push(Signal::new(
                        at,
                        SignalBody::StorageSample {
                            node: s.node.clone().if_empty(node),
                            storage: s.storage.clone(),
                            total_bytes: s.total,
                            avail_bytes: s.total.saturating_sub(s.used),
                        },
                    ));
                }
            }
            FactBody::Pve(PveFact::Zfs(p)) => out.push(Signal::new(
                at,
                SignalBody::ZfsPool {
                    node: p.node.clone().if_empty(node),
                    pool: p.name.clone(),
                    health: pool_health(&p.health),
                    scrub_errors: p.scrub.as_ref().map_or(0, |s| s.errors),
                },
            )),
            FactBody::Pve(PveFact::Smart(d)) if d.health != SmartHealth::Unknown => {
                out.push(Signal::new(
                    at,
                    SignalBody::SmartDisk {
                        node: d.node.clone().if_empty(node),
                        device: d.devpath.clone(),
                        passed: d.health == SmartHealth::Passed,
                        reallocated: 0,
                        pending: 0,
                    },
                ));
            }
            FactBody::Pve(PveFact::Updates(u)) => out.push(Signal::new(
                at,
                SignalBody::PendingUpdates {
                    node: u.node.clone().if_empty(node),
                    security: u.security.unwrap_or(0),
                    total: u.total,
                },
            )),
            FactBody::Pve(PveFact::Backup(b)) if !b.ok => out.push(Signal::new(
                b.end_ms.unwrap_or(at),
                SignalBody::TaskFinished {
                    node: n(),
                    upid: format!("{}:{}", b.upid, b.vmid),
                    task_type: "vzdump".to_string(),
                    guest_id: Some(b.vmid),
                    ok: false,
                    status_text: b
                        .error_summary
                        .clone()
                        .unwrap_or_else(|| "backup failed".to_string()),
                },
            )),
            FactBody::Pressure(p) => out.push(Signal::new(
                at,
                SignalBody::IoPressure {
                    node: node.to_string(),
                    some_pct: p.io_some,
                    full_pct: p.io_full,
                },
            )),
            _ => self.map_plain(node, f, out),
        }
    }

    fn map_plain(&mut self, node: &str, f: &Fact, out: &mut Vec<Signal>) {
        let n = || node.to_string();
        let pct = |used: u64, total: u64| {
            if total == 0 {
                0.0
            } else {
                (used as f64 / total as f64 * 100.0) as f32
            }
        };
        let at = f.observed_at_ms;
        match &f.body {
            FactBody::Host(h) => out.push(Signal::new(
                at,
                SignalBody::HostSample {
                    node: n(),
                    cpu_pct: h.cpu_usage_pct,
                    mem_pct: pct(h.mem_used, h.mem_total),
                    swap_pct: pct(h.swap_used, h.swap_total),
                    load1: h.load[0],
                    cpu_count: h.cpu_count,
                    iowait_pct: None,
                    filesystems: h
                        .filesystems
                        .iter()
                        .map(|fs| FsSample {
                            mount: fs.mount.clone(),
                            total_bytes: fs.total,
                            avail_bytes: fs.available,
                        })
                        .collect(),
                },
            )),
            FactBody::LogSummary(s) => {
                let kind = match s.source.kind {
                    wingman_protocol::logs::LogSourceKind::Journal => LogSourceKind::Journal,
                    wingman_protocol::logs::LogSourceKind::File => LogSourceKind::File,
                    wingman_protocol::logs::LogSourceKind::Container => LogSourceKind::Container,
                };
                for t in &s.templates {
                    out.push(Signal::new(
                        t.last_seen_ms,
                        SignalBody::LogTemplate {
                            node: n(),
                            source_kind: kind,
                            source: s.source.name.clone(),
                            template_id: t.template_id,
                            template: t.template.as_str().to_string(),
                            count: t.count,
                            severity: t.severity.priority(),
                            new_template: t.new_template,
                            burst: t.burst,
                        },
                    ));
                }
            }
            FactBody::ContainerEvent(e) => {
                let kind = match e.kind {
                    DockerEventKind::Die => ContainerEventKind::Die,
                    DockerEventKind::Oom => ContainerEventKind::Oom,
                    DockerEventKind::Restart => ContainerEventKind::Restart,
                    DockerEventKind::Start => ContainerEventKind::Start,
                    DockerEventKind::Stop => ContainerEventKind::Stop,
                    DockerEventKind::Kill => ContainerEventKind::Kill,
                    DockerEventKind::Destroy => ContainerEventKind::Destroy,
                    DockerEventKind::HealthStatus => match e.health.as_deref() {
                        Some("unhealthy") => ContainerEventKind::Unhealthy,
                        Some("healthy") => ContainerEventKind::Healthy,
                        _ => ContainerEventKind::Other,
                    },
                };
                out.push(Signal::new(
                    e.at_ms,
                    SignalBody::ContainerEvent {
                        node: n(),
                        container: e.name.clone(),
                        kind,
                        exit_code: e.exit_code,
                    },
                ));
            }
            FactBody::RestartLoop(r) => out.push(Signal::new(
                at,
                SignalBody::ContainerRestartLoop {
                    node: n(),
                    container: r.name.clone(),
                    restarts: r.restarts,
                    window_s: r.window_s,
                },
            )),
            _ => {}
        }
    }
}

/// `s`, or `fallback` when `s` is empty.
trait IfEmpty {
    fn if_empty(self, fallback: &str) -> String;
}

impl IfEmpty for String {
    fn if_empty(self, fallback: &str) -> String {
        if self.is_empty() {
            fallback.to_string()
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use wingman_protocol::pve::{GuestKind as PGuestKind, PveTask, TaskStatus, Upid};

    use super::*;

    fn guest(vmid: u32, status: &str, ha: Option<&str>) -> Fact {
        Fact {
            observed_at_ms: 1_000,
            body: FactBody::Pve(PveFact::Guest(PveGuest {
                node: "pve1".into(),
                vmid,
                kind: PGuestKind::Qemu,
                name: "web".into(),
                status: status.into(),
                uptime_s: 0,
                cpu: 0.0,
                mem: 0,
                maxmem: 0,
                disk: 0,
                maxdisk: 0,
                ha_state: ha.map(str::to_string),
                lock: None,
                tags: Vec::new(),
                template: false,
            })),
        }
    }

    fn task(vmid: u32, ty: &str) -> Fact {
        Fact {
            observed_at_ms: 1_000,
            body: FactBody::Pve(PveFact::Task(PveTask {
                upid: Upid {
                    node: "pve1".into(),
                    pid: 1,
                    pstart: 1,
                    starttime: 1,
                    task_type: ty.into(),
                    id: vmid.to_string(),
                    user: "root@pam".into(),
                },
                status: TaskStatus::Ok,
                start_ms: 1_000,
                end_ms: Some(1_000),
            })),
        }
    }

    fn expected(signals: &[Signal]) -> Vec<bool> {
        signals
            .iter()
            .filter_map(|s| match &s.body {
                SignalBody::GuestState {
                    expected_running, ..
                } => Some(*expected_running),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_guest_that_stops_without_an_operator_task_is_unexpected() {
        let mut m = FactMapper::default();
        assert_eq!(
            expected(&m.map("pve1", &[guest(100, "stopped", None)])),
            [false]
        );
        assert_eq!(
            expected(&m.map("pve1", &[guest(100, "running", None)])),
            [false]
        );
        assert_eq!(
            expected(&m.map("pve1", &[guest(100, "stopped", None)])),
            [true]
        );
        // Reported once; still stopped later is not a new surprise.
        assert_eq!(
            expected(&m.map("pve1", &[guest(100, "stopped", None)])),
            [false]
        );
    }

    #[test]
    fn operator_stops_are_expected_and_ha_started_guests_are_not() {
        let mut m = FactMapper::default();
        m.map("pve1", &[guest(101, "running", None)]);
        let s = m.map(
            "pve1",
            &[task(101, "qmshutdown"), guest(101, "stopped", None)],
        );
        assert_eq!(expected(&s), [false]);
        // HA wants it started: stopped is unexpected even on first sight.
        let s = m.map("pve1", &[guest(102, "stopped", Some("started"))]);
        assert_eq!(expected(&s), [true]);
    }

    #[test]
    fn ha_service_moving_off_a_fenced_node_is_a_recovery() {
        use wingman_protocol::pve::{HaFencing, HaService};
        let ha = |node: &str, fenced: bool| Fact {
            observed_at_ms: 1_000,
            body: FactBody::Pve(PveFact::Ha(PveHaStatus {
                quorate: true,
                manager_status: "active".into(),
                master_node: Some("pve1".into()),
                lrms: Vec::new(),
                services: vec![HaService {
                    sid: "vm:200".into(),
                    state: "started".into(),
                    node: node.into(),
                    request_state: None,
                    crm_state: None,
                }],
                fencing: if fenced {
                    vec![HaFencing {
                        node: "pve2".into(),
                        sid: None,
                        detail: String::new(),
                    }]
                } else {
                    Vec::new()
                },
                armed_state: None,
            })),
        };
        let mut m = FactMapper::default();
        let s = m.map("pve1", &[ha("pve2", true)]);
        assert!(s.iter().any(|s| matches!(&s.body, SignalBody::HaFencing { fenced_node, .. } if fenced_node == "pve2")));
        let s = m.map("pve1", &[ha("pve1", false)]);
        assert!(s.iter().any(|s| matches!(&s.body,
            SignalBody::HaRecovery { node, from_node, guest_id: 200 } if node == "pve1" && from_node == "pve2")));
    }
}
