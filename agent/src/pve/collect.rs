//! The collector: one sweep over the PVE API turns the node's state into
//! [`PveFact`]s. Call [`Collector::sweep`] every [`DEFAULT_INTERVAL`] and
//! after a task finishes.
//!
//! A sweep never fails: a fatal problem (bad token, API down, certificate
//! mismatch, timeout) yields a single [`PveFact::Status`] and the next sweep
//! simply tries again; a 403 on one endpoint yields a status naming the
//! missing privilege and the sweep goes on with the others. Every successful
//! sweep ends with a `Status` whose problem is `None` (or the 403s).
//!
//! Pure helpers (tested without I/O): [`estimate_time_to_full`],
//! [`parse_vzdump_log`], [`parse_zfs_scan`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::client::{
    ClusterResource, GuestRow, HaStatusRow, PveClient, PveError, TaskQuery, ZfsDetail, ZfsVdev,
};
use super::facts::{
    BackupOutcome, ClusterNode, GuestKind, GuestSnapshots, HaFencing, HaLrm, HaService,
    PackageUpdates, PveClusterStatus, PveFact, PveGuest, PveHaStatus, PveNode, PveProblem,
    PveStatus, PveStorage, PveTask, ScrubResult, SmartDisk, SmartHealth, TaskStatus, Upid,
    VdevProblem, ZfsPool,
};
use super::tasks::{self, clean, failure_summary, parse_status, summarize_log};
use super::upid::parse_upid;

/// Default sweep interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// Collector settings.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// This node's name (as PVE knows it).
    pub node: String,
    /// Query `/nodes/{node}/apt/update` (needs `Sys.Modify`; switched off
    /// automatically after the first 403).
    pub collect_apt: bool,
    /// Query `/nodes/{node}/disks/list` and ZFS pools.
    pub collect_disks: bool,
    /// Report tasks from `GET /nodes/{node}/tasks` (the fallback when the
    /// task directory is not readable; otherwise use the follower).
    pub tasks_via_api: bool,
    /// Task directory, to read `vzdump` logs from disk when possible.
    pub task_dir: Option<PathBuf>,
    /// History window for the storage fill-rate estimate.
    pub storage_window: Duration,
    /// How far back the first API task listing looks.
    pub task_lookback: Duration,
    /// Most log lines read for one `vzdump` task.
    pub max_backup_log_lines: u64,
    /// Re-read every guest's snapshot list every this many sweeps (0: only
    /// on the first sweep, after snapshot tasks and while a guest is locked).
    pub snapshot_every_sweeps: u64,
}

impl CollectorConfig {
    /// Defaults for `node`.
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            collect_apt: true,
            collect_disks: true,
            tasks_via_api: false,
            task_dir: None,
            storage_window: Duration::from_secs(6 * 3600),
            task_lookback: Duration::from_secs(3600),
            max_backup_log_lines: 20_000,
            snapshot_every_sweeps: 10,
        }
    }
}

/// One storage usage sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageSample {
    /// When, Unix ms.
    pub t_ms: i64,
    /// Used bytes.
    pub used: u64,
    /// Total bytes.
    pub total: u64,
}

/// Least-squares fill rate over `samples` → seconds until `total` is
/// reached. `None` with fewer than 2 samples, less than a minute of
/// history, a flat or shrinking trend, or more than five years to go.
pub fn estimate_time_to_full(samples: &[StorageSample]) -> Option<u64> {
    let last = samples.last()?;
    let first = samples.first()?;
    if last.total == 0 {
        return None;
    }
    if last.used >= last.total {
        return Some(0);
    }
    if samples.len() < 2 || last.t_ms.saturating_sub(first.t_ms) < 60_000 {
        return None;
    }
    let n = samples.len() as f64;
    let xs: Vec<f64> = samples
        .iter()
        .map(|s| (s.t_ms - first.t_ms) as f64 / 1000.0)
        .collect();
    let ys: Vec<f64> = samples.iter().map(|s| s.used as f64).collect();
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, y) in xs.iter().zip(&ys) {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
    }
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx; // bytes per second
    if !slope.is_finite() || slope <= 0.0 {
        return None;
    }
    let secs = (last.total - last.used) as f64 / slope;
    const FIVE_YEARS: f64 = 5.0 * 365.0 * 86_400.0;
    (secs.is_finite() && secs <= FIVE_YEARS).then(|| secs.round() as u64)
}

/// Usage history of one storage.
#[derive(Debug, Clone, Default)]
pub struct StorageHistory {
    samples: VecDeque<StorageSample>,
}

impl StorageHistory {
    /// Adds a sample (dropping old ones, and all history after a resize or
    /// a clean-up of more than 1 % of the size) and returns the estimate.
    pub fn push(&mut self, s: StorageSample, window: Duration) -> Option<u64> {
        if let Some(prev) = self.samples.back() {
            let dropped = prev.used.saturating_sub(s.used) > s.total / 100;
            if prev.total != s.total || dropped || s.t_ms < prev.t_ms {
                self.samples.clear();
            }
        }
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        while self
            .samples
            .front()
            .is_some_and(|f| s.t_ms.saturating_sub(f.t_ms) > window_ms)
        {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
        while self.samples.len() > 2048 {
            self.samples.pop_front();
        }
        let v: Vec<StorageSample> = self.samples.iter().copied().collect();
        estimate_time_to_full(&v)
    }
}

/// Parses a ZFS size ("0B", "1.23G", "512K"; 1024-based).
fn parse_zfs_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let idx = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(idx);
    let n: f64 = num.parse().ok()?;
    let mul = match unit.trim().trim_end_matches(['B', 'b', 'i']) {
        "" => 1.0,
        "K" | "k" => 1024.0,
        "M" => 1024.0_f64.powi(2),
        "G" => 1024.0_f64.powi(3),
        "T" => 1024.0_f64.powi(4),
        "P" => 1024.0_f64.powi(5),
        "E" => 1024.0_f64.powi(6),
        _ => return None,
    };
    let v = n * mul;
    (v.is_finite() && v >= 0.0).then(|| v.round() as u64)
}

/// Parses "HH:MM:SS" or "N days HH:MM:SS".
fn parse_duration(s: &str) -> Option<u64> {
    let mut parts = s.split_whitespace().collect::<Vec<_>>();
    let hms = parts.pop()?;
    let days: u64 = match parts.as_slice() {
        [] => 0,
        [d, unit] if unit.starts_with("day") => d.parse().ok()?,
        _ => return None,
    };
    let f: Vec<&str> = hms.split(':').collect();
    let [h, m, sec] = f.as_slice() else {
        return None;
    };
    let (h, m, sec): (u64, u64, u64) = (h.parse().ok()?, m.parse().ok()?, sec.parse().ok()?);
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

/// Days since 1970-01-01 for a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses a C `asctime` date ("Sun Jun  9 00:24:02 2024") as UTC → Unix ms.
fn parse_ctime(s: &str) -> Option<i64> {
    let t: Vec<&str> = s.split_whitespace().collect();
    let [_dow, mon, day, hms, year] = t.as_slice() else {
        return None;
    };
    let m = match *mon {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let d: i64 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let y: i64 = year.parse().ok().filter(|y| (1970..=9999).contains(y))?;
    let secs = i64::try_from(parse_duration(hms)?).ok()?;
    Some((days_from_civil(y, m, d) * 86_400 + secs) * 1000)
}

/// Parses the `scan:` text of `zpool status` (as returned in
/// `GET /nodes/{node}/disks/zfs/{name}` `scan`), e.g.
/// "scrub repaired 0B in 00:00:01 with 0 errors on Sun Jun  9 00:24:02 2024",
/// "resilvered 1.2G in 00:10:11 with 0 errors on …",
/// "scrub in progress since …". `None` for "none requested" or unknown text.
/// The date is the node's local time; it is read as UTC.
pub fn parse_zfs_scan(scan: &str) -> Option<ScrubResult> {
    let s = scan.trim();
    let first_line = s.lines().next().unwrap_or("").trim();
    let resilver = first_line.starts_with("resilver");
    if first_line.starts_with("scrub in progress") || first_line.starts_with("resilver in progress")
    {
        return Some(ScrubResult {
            resilver,
            in_progress: true,
            errors: 0,
            repaired: 0,
            finished_ms: None,
            duration_s: None,
        });
    }
    let rest = first_line
        .strip_prefix("scrub repaired ")
        .or_else(|| first_line.strip_prefix("resilvered "))?;
    // "<size> in <duration> with <n> errors on <date>"
    let (size, rest) = rest.split_once(" in ")?;
    let (dur, rest) = rest.split_once(" with ")?;
    let (errors, date) = match rest.split_once(" errors on ") {
        Some((e, d)) => (e, Some(d)),
        None => (rest.trim_end_matches(" errors"), None),
    };
    Some(ScrubResult {
        resilver,
        in_progress: false,
        errors: errors.trim().parse().ok()?,
        repaired: parse_zfs_size(size)?,
        finished_ms: date.and_then(parse_ctime),
        duration_s: parse_duration(dur),
    })
}

/// Parses vzdump's `format_size` output ("189MB", "1.23GB"; 1024-based).
fn parse_vzdump_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = if let Some(n) = s.strip_suffix("TB") {
        (n, 1024.0_f64.powi(4))
    } else if let Some(n) = s.strip_suffix("GB") {
        (n, 1024.0_f64.powi(3))
    } else if let Some(n) = s.strip_suffix("MB") {
        (n, 1024.0_f64.powi(2))
    } else if let Some(n) = s.strip_suffix("KB") {
        (n, 1024.0)
    } else {
        return None;
    };
    let v: f64 = num.trim().parse().ok()?;
    let v = v * mul;
    (v.is_finite() && v >= 0.0).then(|| v.round() as u64)
}

/// Strips an optional "YYYY-MM-DD HH:MM:SS " prefix (per-guest vzdump logs)
/// and returns the message after "INFO: "/"ERROR: "/"WARN: ".
fn vzdump_msg(line: &str) -> Option<(&str, &str)> {
    for level in ["INFO: ", "ERROR: ", "WARN: "] {
        if let Some(i) = line.find(level)
            && (i == 0 || line[..i].ends_with(' '))
        {
            return Some((level.trim_end_matches(": "), &line[i + level.len()..]));
        }
    }
    None
}

/// Per-guest outcomes of a finished `vzdump` task from its log.
///
/// Log lines (`PVE/VZDump.pm`, `debugmsg` prints `INFO: `/`ERROR: `):
/// `starting new backup job: vzdump <vmids> --storage <s> …`,
/// `Starting Backup of VM <vmid> (<qemu|lxc>)`, `archive file size: <n>MB`,
/// `Finished Backup of VM <vmid> (HH:MM:SS)`,
/// `ERROR: Backup of VM <vmid> failed - <reason>`. A guest that started but
/// neither finished nor failed counts as failed. Without any per-guest lines
/// the task id (= vmid for single-guest jobs) and task status are used.
pub fn parse_vzdump_log<S: AsRef<str>>(
    upid: &Upid,
    lines: &[S],
    status: &TaskStatus,
    end_ms: Option<i64>,
) -> Vec<BackupOutcome> {
    #[derive(Default)]
    struct Partial {
        ok: Option<bool>,
        size: Option<u64>,
        duration: Option<u64>,
        error: Option<String>,
    }
    let mut storage: Option<String> = None;
    let mut order: Vec<u32> = Vec::new();
    let mut guests: HashMap<u32, Partial> = HashMap::new();
    let mut current: Option<u32> = None;
    for line in lines {
        let Some((level, msg)) = vzdump_msg(line.as_ref()) else {
            continue;
        };
        if let Some(cmd) = msg.strip_prefix("starting new backup job: ") {
            let mut it = cmd.split_whitespace();
            while let Some(tok) = it.next() {
                if tok == "--storage" {
                    storage = it.next().map(str::to_owned);
                } else if let Some(v) = tok.strip_prefix("--storage=") {
                    storage = Some(v.to_owned());
                }
            }
        } else if let Some(rest) = msg.strip_prefix("Starting Backup of VM ") {
            if let Some(vmid) = rest.split_whitespace().next().and_then(|v| v.parse().ok()) {
                if !guests.contains_key(&vmid) {
                    order.push(vmid);
                }
                guests.entry(vmid).or_default();
                current = Some(vmid);
            }
        } else if let Some(size) = msg.strip_prefix("archive file size: ") {
            if let Some(g) = current.and_then(|c| guests.get_mut(&c)) {
                g.size = parse_vzdump_size(size);
            }
        } else if let Some(rest) = msg.strip_prefix("Finished Backup of VM ") {
            let mut it = rest.splitn(2, ' ');
            if let Some(vmid) = it.next().and_then(|v| v.parse::<u32>().ok()) {
                let dur = it
                    .next()
                    .and_then(|r| r.trim().strip_prefix('('))
                    .and_then(|r| r.split([')', ',']).next())
                    .and_then(parse_duration);
                if !guests.contains_key(&vmid) {
                    order.push(vmid);
                }
                let g = guests.entry(vmid).or_default();
                g.ok = Some(true);
                g.duration = dur;
                current = None;
            }
        } else if level == "ERROR"
            && let Some(rest) = msg.strip_prefix("Backup of VM ")
            && let Some((vmid, reason)) = rest.split_once(" failed - ")
            && let Ok(vmid) = vmid.trim().parse::<u32>()
        {
            if !guests.contains_key(&vmid) {
                order.push(vmid);
            }
            let g = guests.entry(vmid).or_default();
            g.ok = Some(false);
            g.error = Some(clean(reason, tasks::MAX_SUMMARY_LEN));
            current = None;
        }
    }
    if order.is_empty() {
        let Some(vmid) = upid.vmid() else {
            return Vec::new();
        };
        return vec![BackupOutcome {
            vmid,
            upid: upid.clone(),
            ok: status.is_success(),
            size_bytes: None,
            duration_s: None,
            storage,
            error_summary: match status {
                TaskStatus::Failed(s) | TaskStatus::Unknown(s) => Some(s.clone()),
                _ => None,
            },
            end_ms,
        }];
    }
    order
        .into_iter()
        .filter_map(|vmid| {
            let g = guests.remove(&vmid)?;
            let ok = g.ok.unwrap_or(false);
            let error_summary = if ok {
                None
            } else {
                Some(g.error.unwrap_or_else(|| match status {
                    TaskStatus::Failed(s) => format!("backup did not finish: {s}"),
                    _ => "backup did not finish".to_owned(),
                }))
            };
            Some(BackupOutcome {
                vmid,
                upid: upid.clone(),
                ok,
                size_bytes: g.size,
                duration_s: g.duration,
                storage: storage.clone(),
                error_summary,
                end_ms,
            })
        })
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn split_tags(t: Option<&str>) -> Vec<String> {
    t.unwrap_or("")
        .split([';', ',', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

fn f32_of(v: Option<f64>) -> f32 {
    v.unwrap_or(0.0) as f32
}

fn u32_of(v: Option<u64>) -> u32 {
    u32::try_from(v.unwrap_or(0)).unwrap_or(u32::MAX)
}

fn guest_from_resource(r: &ClusterResource, kind: GuestKind) -> Option<PveGuest> {
    Some(PveGuest {
        node: r.node.clone().unwrap_or_default(),
        vmid: u32::try_from(r.vmid?).ok()?,
        kind,
        name: r.name.clone().unwrap_or_default(),
        status: r.status.clone().unwrap_or_else(|| "unknown".to_owned()),
        uptime_s: r.uptime.unwrap_or(0),
        cpu: f32_of(r.cpu),
        mem: r.mem.unwrap_or(0),
        maxmem: r.maxmem.unwrap_or(0),
        disk: r.disk.unwrap_or(0),
        maxdisk: r.maxdisk.unwrap_or(0),
        ha_state: r.hastate.clone().filter(|s| !s.is_empty()),
        lock: r.lock.clone().filter(|s| !s.is_empty()),
        tags: split_tags(r.tags.as_deref()),
        template: r.template.unwrap_or(false),
    })
}

fn guest_from_row(node: &str, r: &GuestRow, kind: GuestKind) -> Option<PveGuest> {
    Some(PveGuest {
        node: node.to_owned(),
        vmid: u32::try_from(r.vmid?).ok()?,
        kind,
        name: r.name.clone().unwrap_or_default(),
        status: r.status.clone().unwrap_or_else(|| "unknown".to_owned()),
        uptime_s: r.uptime.unwrap_or(0),
        cpu: f32_of(r.cpu),
        mem: r.mem.unwrap_or(0),
        maxmem: r.maxmem.unwrap_or(0),
        disk: r.disk.unwrap_or(0),
        maxdisk: r.maxdisk.unwrap_or(0),
        ha_state: None,
        lock: r.lock.clone().filter(|s| !s.is_empty()),
        tags: split_tags(r.tags.as_deref()),
        template: r.template.unwrap_or(false),
    })
}

/// Builds the HA fact from `/cluster/ha/status/current` rows
/// (`pve-ha-manager` `API2/HA/Status.pm`): `quorum`, `master`, one `lrm`
/// per node, one `service` per resource, and on 9.x a `fencing` entry for
/// the watchdog arm state. A node being fenced shows as its services in
/// state (and `crm_state`) `fence`.
pub fn ha_from_rows(rows: &[HaStatusRow]) -> PveHaStatus {
    let mut ha = PveHaStatus {
        quorate: true,
        manager_status: String::new(),
        master_node: None,
        lrms: Vec::new(),
        services: Vec::new(),
        fencing: Vec::new(),
        armed_state: None,
    };
    for r in rows {
        let node = r.node.clone().unwrap_or_default();
        match r.kind.as_deref() {
            Some("quorum") => ha.quorate = r.quorate.unwrap_or(false),
            Some("master") => {
                ha.manager_status = clean(r.status.as_deref().unwrap_or(""), 200);
                ha.master_node = Some(node);
            }
            Some("lrm") => ha.lrms.push(HaLrm {
                node,
                status: clean(r.status.as_deref().unwrap_or(""), 200),
            }),
            Some("service") => {
                let sid = r
                    .sid
                    .clone()
                    .or_else(|| {
                        r.id.as_deref()
                            .and_then(|i| i.strip_prefix("service:"))
                            .map(str::to_owned)
                    })
                    .unwrap_or_default();
                let state = r.state.clone().unwrap_or_default();
                let fencing = state == "fence" || r.crm_state.as_deref() == Some("fence");
                if fencing {
                    ha.fencing.push(HaFencing {
                        node: node.clone(),
                        sid: Some(sid.clone()),
                        detail: format!("{sid} waits for node {node} to be fenced"),
                    });
                }
                ha.services.push(HaService {
                    sid,
                    state,
                    node,
                    request_state: r.request_state.clone(),
                    crm_state: r.crm_state.clone(),
                });
            }
            // 9.x watchdog entry: "armed (CRM watchdog active)", or
            // "disarmed, resource mode: freeze (…)".
            Some("fencing") => ha.armed_state.clone_from(&r.armed_state),
            _ => {}
        }
    }
    ha
}

fn smart_health(raw: &str) -> SmartHealth {
    let up = raw.trim().to_ascii_uppercase();
    if up.contains("FAIL") {
        SmartHealth::Failed
    } else if up == "PASSED" || up == "OK" {
        SmartHealth::Passed
    } else {
        SmartHealth::Unknown
    }
}

fn collect_vdev_problems(pool: &str, v: &ZfsVdev, out: &mut Vec<VdevProblem>) {
    let name = v.name.clone().unwrap_or_default();
    let state = v.state.clone().unwrap_or_default();
    let (read, write, cksum) = (
        v.read.unwrap_or(0),
        v.write.unwrap_or(0),
        v.cksum.unwrap_or(0),
    );
    let bad_state = !state.is_empty() && !matches!(state.as_str(), "ONLINE" | "AVAIL" | "INUSE");
    if name != pool && (bad_state || read + write + cksum > 0) && out.len() < 64 {
        out.push(VdevProblem {
            name,
            state,
            read,
            write,
            cksum,
            msg: clean(v.msg.as_deref().unwrap_or(""), 200),
        });
    }
    for c in &v.children {
        collect_vdev_problems(pool, c, out);
    }
}

/// Builds the ZFS fact from the list row and the detail (if readable).
fn zfs_pool(node: &str, list: &super::client::ZfsListRow, detail: Option<&ZfsDetail>) -> ZfsPool {
    let name = list.name.clone().unwrap_or_default();
    let mut problems = Vec::new();
    if let Some(d) = detail {
        for c in &d.children {
            collect_vdev_problems(&name, c, &mut problems);
        }
    }
    let opt = |s: Option<&String>| s.map(|s| clean(s, 400)).filter(|s| !s.is_empty());
    ZfsPool {
        node: node.to_owned(),
        health: detail
            .and_then(|d| d.state.clone())
            .or_else(|| list.health.clone())
            .unwrap_or_else(|| "UNKNOWN".to_owned()),
        size: list.size.unwrap_or(0),
        alloc: list.alloc.unwrap_or(0),
        free: list.free.unwrap_or(0),
        frag: u32_of(list.frag),
        status: opt(detail.and_then(|d| d.status.as_ref())),
        action: opt(detail.and_then(|d| d.action.as_ref())),
        errors: opt(detail.and_then(|d| d.errors.as_ref())),
        scrub: detail
            .and_then(|d| d.scan.as_deref())
            .and_then(parse_zfs_scan),
        problems,
        name,
    }
}

/// Bounded set of strings (insertion order).
#[derive(Debug, Default)]
struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    fn insert(&mut self, k: &str) -> bool {
        if !self.set.insert(k.to_owned()) {
            return false;
        }
        self.order.push_back(k.to_owned());
        if self.order.len() > 4096
            && let Some(o) = self.order.pop_front()
        {
            self.set.remove(&o);
        }
        true
    }
}

/// Stateful collector (keeps storage history, API task position and
/// de-duplication sets between sweeps).
#[derive(Debug)]
pub struct Collector {
    cfg: CollectorConfig,
    storage: HashMap<String, StorageHistory>,
    apt_disabled: bool,
    task_since: Option<u64>,
    running: HashMap<String, Upid>,
    finished: Seen,
    backups: Seen,
    /// Snapshot names last reported, per guest.
    snapshots: HashMap<u32, Vec<String>>,
    /// Guests whose snapshot list must be read on the next sweep.
    snapshots_due: HashSet<u32>,
    /// Guests seen locked on the last sweep.
    locked: HashSet<u32>,
    sweeps: u64,
}

enum Step<T> {
    Got(T),
    Skip,
}

impl Collector {
    /// A collector for `cfg.node`.
    pub fn new(cfg: CollectorConfig) -> Self {
        Self {
            cfg,
            storage: HashMap::new(),
            apt_disabled: false,
            task_since: None,
            running: HashMap::new(),
            finished: Seen::default(),
            backups: Seen::default(),
            snapshots: HashMap::new(),
            snapshots_due: HashSet::new(),
            locked: HashSet::new(),
            sweeps: 0,
        }
    }

    /// A task that changes a guest's snapshots (create, delete, rollback)
    /// makes the next sweep read that guest's snapshot list.
    pub fn note_task(&mut self, task: &PveTask) {
        let t = task.upid.task_type.as_str();
        if matches!(
            t,
            "qmsnapshot"
                | "vzsnapshot"
                | "qmdelsnapshot"
                | "vzdelsnapshot"
                | "qmrollback"
                | "vzrollback"
        ) && let Ok(vmid) = task.upid.id.parse::<u32>()
        {
            self.snapshots_due.insert(vmid);
        }
    }

    /// Reads the snapshot lists that are due: every guest on the first
    /// sweep and every `snapshot_every_sweeps`, guests named by snapshot
    /// tasks, and guests that are or just were locked. A list is reported
    /// when it changed. A failing read is skipped (retried next time).
    async fn sweep_snapshots(&mut self, client: &PveClient, out: &mut Vec<PveFact>) {
        let every = self.cfg.snapshot_every_sweeps;
        let all = self.sweeps == 1 || (every > 0 && self.sweeps.is_multiple_of(every));
        let guests: Vec<(u32, GuestKind, bool)> = out
            .iter()
            .filter_map(|f| match f {
                PveFact::Guest(g) => Some((g.vmid, g.kind, g.lock.is_some())),
                _ => None,
            })
            .collect();
        let mut locked_now = HashSet::new();
        for (vmid, kind, locked) in guests {
            if locked {
                locked_now.insert(vmid);
            }
            let due = all
                || locked
                || self.locked.contains(&vmid)
                || self.snapshots_due.contains(&vmid)
                || !self.snapshots.contains_key(&vmid);
            if !due {
                continue;
            }
            match client.snapshots(&self.cfg.node, kind, vmid).await {
                Ok(names) => {
                    self.snapshots_due.remove(&vmid);
                    if self.snapshots.get(&vmid) != Some(&names) {
                        self.snapshots.insert(vmid, names.clone());
                        out.push(PveFact::Snapshots(GuestSnapshots {
                            node: self.cfg.node.clone(),
                            vmid,
                            kind,
                            names,
                        }));
                    }
                }
                Err(e) => {
                    tracing::debug!(vmid, error = %e, "cannot read the snapshot list");
                }
            }
        }
        self.locked = locked_now;
    }

    /// Settings.
    pub fn config(&self) -> &CollectorConfig {
        &self.cfg
    }

    /// Switches the API task fallback on or off (e.g. when the task
    /// directory turns out to be unreadable).
    pub fn set_tasks_via_api(&mut self, on: bool) {
        self.cfg.tasks_via_api = on;
    }

    /// One sweep now.
    pub async fn sweep(&mut self, client: &PveClient) -> Vec<PveFact> {
        self.sweep_at(client, now_ms()).await
    }

    fn step<T>(
        &self,
        r: Result<T, PveError>,
        endpoint: &str,
        problems: &mut Vec<PveStatus>,
    ) -> Result<Step<T>, Box<PveStatus>> {
        match r {
            Ok(v) => Ok(Step::Got(v)),
            Err(e) if e.is_fatal() => Err(Box::new(e.to_status(&self.cfg.node, endpoint))),
            Err(e @ PveError::Forbidden { .. }) => {
                problems.push(e.to_status(&self.cfg.node, endpoint));
                Ok(Step::Skip)
            }
            Err(e) => {
                tracing::warn!(endpoint, error = %e, "PVE endpoint failed");
                Ok(Step::Skip)
            }
        }
    }

    /// One sweep with an explicit clock (Unix ms), for tests.
    pub async fn sweep_at(&mut self, client: &PveClient, now_ms: i64) -> Vec<PveFact> {
        match self.sweep_inner(client, now_ms).await {
            Ok(facts) => facts,
            Err(status) => vec![PveFact::Status(*status)],
        }
    }

    async fn sweep_inner(
        &mut self,
        client: &PveClient,
        now_ms: i64,
    ) -> Result<Vec<PveFact>, Box<PveStatus>> {
        let node = self.cfg.node.clone();
        let mut out = Vec::new();
        let mut problems = Vec::new();

        let version = match client.version().await {
            Ok(v) => v,
            Err(e) => {
                let mut st = e.to_status(&node, "/version");
                // Whatever stops /version from answering means "API down"
                // for the operator (unless it is auth/TLS).
                if matches!(e, PveError::Api { .. } | PveError::BadResponse(_)) {
                    st.reachable = false;
                    st.problem = PveProblem::ApiDown;
                }
                return Err(Box::new(st));
            }
        };

        // Cluster first: the node fact carries the cluster name.
        let mut cluster_name = None;
        if let Step::Got(rows) = self.step(
            client.cluster_status().await,
            "/cluster/status",
            &mut problems,
        )? {
            let mut cs = PveClusterStatus {
                cluster_name: None,
                quorate: true,
                node_count: 0,
                config_version: None,
                nodes: Vec::new(),
            };
            let mut saw_cluster = false;
            for r in &rows {
                match r.kind.as_deref() {
                    Some("cluster") => {
                        saw_cluster = true;
                        cs.cluster_name = r.name.clone();
                        cs.quorate = r.quorate.unwrap_or(false);
                        cs.node_count = u32_of(r.nodes);
                        cs.config_version = r.version;
                    }
                    Some("node") => cs.nodes.push(ClusterNode {
                        name: r.name.clone().unwrap_or_default(),
                        online: r.online.unwrap_or(false),
                        local: r.local.unwrap_or(false),
                        nodeid: r.nodeid.and_then(|n| u32::try_from(n).ok()),
                        ip: r.ip.clone(),
                    }),
                    _ => {}
                }
            }
            if !saw_cluster {
                cs.node_count = u32::try_from(cs.nodes.len()).unwrap_or(u32::MAX);
            }
            cluster_name.clone_from(&cs.cluster_name);
            out.push(PveFact::Cluster(cs));
        }

        if let Step::Got(st) = self.step(
            client.node_status(&node).await,
            &format!("/nodes/{node}/status"),
            &mut problems,
        )? {
            let mut load = [0.0f32; 3];
            for (slot, v) in load.iter_mut().zip(&st.loadavg) {
                *slot = super::client::lenient::as_f64(v).unwrap_or(0.0) as f32;
            }
            let kernel = st
                .current_kernel
                .as_ref()
                .and_then(|k| k.release.clone())
                .or_else(|| {
                    st.kversion
                        .as_deref()
                        .and_then(|k| k.split_whitespace().nth(1))
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            let mem = st.memory.clone().unwrap_or_default();
            let rootfs = st.rootfs.clone().unwrap_or_default();
            out.push(PveFact::Node(PveNode {
                node: node.clone(),
                pve_version: st
                    .pveversion
                    .clone()
                    .or_else(|| version.version.clone())
                    .unwrap_or_default(),
                kernel,
                uptime_s: st.uptime.unwrap_or(0),
                cpu: f32_of(st.cpu),
                cpus: u32_of(st.cpuinfo.as_ref().and_then(|c| c.cpus)),
                load,
                mem_used: mem.used.unwrap_or(0),
                mem_total: mem.total.unwrap_or(0),
                rootfs_used: rootfs.used.unwrap_or(0),
                rootfs_total: rootfs.total.unwrap_or(0),
                cluster_name,
            }));
        }

        // Guests: one cheap call; per-node lists as fallback.
        let mut guests_done = false;
        if let Step::Got(rows) = self.step(
            client.cluster_resources_vm().await,
            "/cluster/resources",
            &mut problems,
        )? {
            for r in &rows {
                if r.node.as_deref() != Some(node.as_str()) {
                    continue;
                }
                let Some(kind) = r.kind.as_deref().and_then(GuestKind::parse) else {
                    continue;
                };
                if let Some(g) = guest_from_resource(r, kind) {
                    out.push(PveFact::Guest(g));
                }
            }
            guests_done = true;
        }
        if !guests_done {
            for (kind, res, ep) in [
                (
                    GuestKind::Qemu,
                    client.qemu_list(&node).await,
                    format!("/nodes/{node}/qemu"),
                ),
                (
                    GuestKind::Lxc,
                    client.lxc_list(&node).await,
                    format!("/nodes/{node}/lxc"),
                ),
            ] {
                if let Step::Got(rows) = self.step(res, &ep, &mut problems)? {
                    out.extend(
                        rows.iter()
                            .filter_map(|r| guest_from_row(&node, r, kind))
                            .map(PveFact::Guest),
                    );
                }
            }
        }

        self.sweeps += 1;
        self.sweep_snapshots(client, &mut out).await;

        if let Step::Got(rows) = self.step(
            client.ha_status().await,
            "/cluster/ha/status/current",
            &mut problems,
        )? {
            out.push(PveFact::Ha(ha_from_rows(&rows)));
        }

        if let Step::Got(rows) = self.step(
            client.storage(&node).await,
            &format!("/nodes/{node}/storage"),
            &mut problems,
        )? {
            for r in rows {
                let Some(id) = r.storage.clone() else {
                    continue;
                };
                let used = r.used.unwrap_or(0);
                let total = r.total.unwrap_or(0);
                let active = r.active.unwrap_or(false);
                let ttf = if active && total > 0 {
                    self.storage.entry(id.clone()).or_default().push(
                        StorageSample {
                            t_ms: now_ms,
                            used,
                            total,
                        },
                        self.cfg.storage_window,
                    )
                } else {
                    None
                };
                out.push(PveFact::Storage(PveStorage {
                    node: node.clone(),
                    storage: id,
                    kind: r.kind.clone().unwrap_or_default(),
                    content: r
                        .content
                        .as_deref()
                        .unwrap_or("")
                        .split(',')
                        .map(str::trim)
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    used,
                    total,
                    active,
                    enabled: r.enabled.unwrap_or(true),
                    shared: r.shared.unwrap_or(false),
                    time_to_full_s: ttf,
                }));
            }
        }

        if self.cfg.collect_disks {
            let ep = format!("/nodes/{node}/disks/zfs");
            if let Step::Got(pools) =
                self.step(client.zfs_pools(&node).await, &ep, &mut problems)?
            {
                for p in &pools {
                    let Some(name) = p.name.as_deref() else {
                        continue;
                    };
                    let detail = match self.step(
                        client.zfs_pool(&node, name).await,
                        &format!("{ep}/{name}"),
                        &mut problems,
                    )? {
                        Step::Got(d) => Some(d),
                        Step::Skip => None,
                    };
                    out.push(PveFact::Zfs(zfs_pool(&node, p, detail.as_ref())));
                }
            }
            if let Step::Got(disks) = self.step(
                client.disks(&node).await,
                &format!("/nodes/{node}/disks/list"),
                &mut problems,
            )? {
                for d in disks {
                    let raw = d.health.clone().unwrap_or_else(|| "UNKNOWN".to_owned());
                    out.push(PveFact::Smart(SmartDisk {
                        node: node.clone(),
                        devpath: d.devpath.clone().unwrap_or_default(),
                        model: d.model.clone().unwrap_or_default(),
                        serial: d.serial.clone().unwrap_or_default(),
                        disk_type: d.kind.clone().unwrap_or_else(|| "unknown".to_owned()),
                        health: smart_health(&raw),
                        health_raw: clean(&raw, 64),
                        wearout: d
                            .wearout
                            .as_deref()
                            .and_then(|w| w.trim().parse::<f64>().ok())
                            .filter(|w| (0.0..=100.0).contains(w))
                            .map(|w| w.round() as u8),
                    }));
                }
            }
        }

        if self.cfg.collect_apt && !self.apt_disabled {
            let ep = format!("/nodes/{node}/apt/update");
            match client.apt_updates(&node).await {
                Ok(rows) => {
                    let mut names: Vec<String> =
                        rows.iter().filter_map(|r| r.package.clone()).collect();
                    names.sort();
                    names.dedup();
                    let total = u32::try_from(names.len()).unwrap_or(u32::MAX);
                    names.truncate(64);
                    out.push(PveFact::Updates(PackageUpdates {
                        node: node.clone(),
                        total,
                        security: None,
                        packages: names,
                    }));
                }
                Err(e @ PveError::Forbidden { .. }) => {
                    // Expected with the read-only role: report once, stop asking.
                    self.apt_disabled = true;
                    let mut st = e.to_status(&node, &ep);
                    st.message = format!(
                        "{}; listing pending updates needs Sys.Modify on /nodes/{node}, so the agent stops asking and relies on PVE's package-updates notification",
                        st.message
                    );
                    problems.push(st);
                }
                Err(e) => {
                    let _ = self.step::<()>(Err(e), &ep, &mut problems)?;
                }
            }
        }

        if self.cfg.tasks_via_api {
            self.api_tasks(client, now_ms, &mut out, &mut problems)
                .await?;
        }

        if problems.is_empty() {
            out.push(PveFact::Status(PveStatus {
                node,
                reachable: true,
                problem: PveProblem::None,
                endpoint: None,
                message: format!(
                    "PVE API reachable (pve-manager {})",
                    version.version.as_deref().unwrap_or("?")
                ),
            }));
        } else {
            out.extend(problems.into_iter().map(PveFact::Status));
        }
        Ok(out)
    }

    /// Task fallback over the API: new and finished tasks since the last
    /// successful listing, plus backup outcomes of finished `vzdump` tasks.
    async fn api_tasks(
        &mut self,
        client: &PveClient,
        now_ms: i64,
        out: &mut Vec<PveFact>,
        problems: &mut Vec<PveStatus>,
    ) -> Result<(), Box<PveStatus>> {
        let node = self.cfg.node.clone();
        let now_s = u64::try_from(now_ms / 1000).unwrap_or(0);
        let since = self
            .task_since
            .unwrap_or_else(|| now_s.saturating_sub(self.cfg.task_lookback.as_secs()));
        let q = TaskQuery {
            since: Some(since),
            limit: Some(500),
            source: Some("all"),
            ..TaskQuery::default()
        };
        let Step::Got(rows) = self.step(
            client.tasks(&node, &q).await,
            &format!("/nodes/{node}/tasks"),
            problems,
        )?
        else {
            return Ok(());
        };
        // Oldest first so facts come out in order.
        let mut rows: Vec<_> = rows
            .into_iter()
            .filter_map(|r| {
                let raw = r.upid.clone()?;
                let upid = parse_upid(&raw).ok()?;
                Some((raw, upid, r))
            })
            .collect();
        rows.sort_by_key(|(_, u, r)| (u.starttime, r.endtime.unwrap_or(u64::MAX)));
        let mut listed: HashSet<String> = HashSet::new();
        for (raw, upid, r) in rows {
            listed.insert(raw.clone());
            let status_text = r.status.clone().unwrap_or_default();
            let running = r.endtime.is_none() || status_text.eq_ignore_ascii_case("running");
            if running {
                if !self.running.contains_key(&raw) && !self.finished.set.contains(&raw) {
                    self.running.insert(raw, upid.clone());
                    out.push(PveFact::Task(PveTask {
                        start_ms: upid.start_ms(),
                        upid,
                        status: TaskStatus::Running,
                        end_ms: None,
                    }));
                }
                continue;
            }
            let end_ms = r
                .endtime
                .map(|e| i64::try_from(e).unwrap_or(0).saturating_mul(1000));
            self.finish_api_task(client, &raw, upid, &status_text, end_ms, out)
                .await;
        }
        // Long-running tasks that fell out of the `since` window.
        let lingering: Vec<(String, Upid)> = self
            .running
            .iter()
            .filter(|(raw, _)| !listed.contains(*raw))
            .map(|(r, u)| (r.clone(), u.clone()))
            .collect();
        for (raw, upid) in lingering {
            match client.task_status(&upid).await {
                Ok(st) if st.status.as_deref() == Some("stopped") => {
                    let text = st.exitstatus.clone().unwrap_or_default();
                    self.finish_api_task(client, &raw, upid, &text, Some(now_ms), out)
                        .await;
                }
                Ok(_) => {}
                Err(e) if e.is_fatal() => {
                    return Err(Box::new(e.to_status(
                        &node,
                        &format!("/nodes/{}/tasks/{{upid}}/status", upid.node),
                    )));
                }
                Err(_) => {
                    // Gone (e.g. 500 "no such task"): stop tracking it.
                    self.running.remove(&raw);
                }
            }
        }
        self.task_since = Some(now_s.saturating_sub(60).max(since.min(now_s)));
        Ok(())
    }

    async fn finish_api_task(
        &mut self,
        client: &PveClient,
        raw: &str,
        upid: Upid,
        status_text: &str,
        end_ms: Option<i64>,
        out: &mut Vec<PveFact>,
    ) {
        if !self.finished.insert(raw) {
            return;
        }
        self.running.remove(raw);
        let mut status = parse_status(status_text);
        if let TaskStatus::Failed(msg) = &status
            && let Ok(lines) = client.task_log_tail(&upid, 50).await
        {
            status = TaskStatus::Failed(failure_summary(msg, &summarize_log(&lines)));
        }
        let task = PveTask {
            start_ms: upid.start_ms(),
            upid,
            status,
            end_ms,
        };
        out.push(PveFact::Task(task.clone()));
        out.extend(
            self.backup_outcomes(Some(client), &task)
                .await
                .into_iter()
                .map(PveFact::Backup),
        );
    }

    /// Backup outcomes for a finished `vzdump` task (once per UPID): reads
    /// the log from the task directory if configured and readable, else
    /// over the API. Empty for other tasks.
    pub async fn backup_outcomes(
        &mut self,
        client: Option<&PveClient>,
        task: &PveTask,
    ) -> Vec<BackupOutcome> {
        if task.upid.task_type != "vzdump" || !task.status.is_finished() {
            return Vec::new();
        }
        if !self.backups.insert(&task.upid.to_string()) {
            return Vec::new();
        }
        let max_bytes = self.cfg.max_backup_log_lines.saturating_mul(512);
        let mut lines = None;
        if let Some(dir) = &self.cfg.task_dir {
            let path = task.upid.log_path(dir);
            lines = tokio::task::spawn_blocking(move || tasks::read_log(&path, max_bytes))
                .await
                .ok()
                .and_then(Result::ok);
        }
        if lines.is_none()
            && let Some(c) = client
        {
            match c
                .task_log_lines(&task.upid, self.cfg.max_backup_log_lines)
                .await
            {
                Ok(l) => lines = Some(l),
                Err(e) => {
                    tracing::warn!(upid = %task.upid, error = %e, "cannot read vzdump log");
                }
            }
        }
        parse_vzdump_log(
            &task.upid,
            lines.as_deref().unwrap_or(&[]),
            &task.status,
            task.end_ms,
        )
    }
}

/// One-shot convenience: a fresh collector's sweep (no storage history, so
/// no time-to-full estimate).
pub async fn collect(client: &PveClient, node: &str) -> Vec<PveFact> {
    Collector::new(CollectorConfig::new(node))
        .sweep(client)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t_s: i64, used: u64) -> StorageSample {
        StorageSample {
            t_ms: t_s * 1000,
            used,
            total: 1000,
        }
    }

    #[test]
    fn time_to_full() {
        assert_eq!(estimate_time_to_full(&[]), None);
        assert_eq!(estimate_time_to_full(&[s(0, 100)]), None);
        // 1 byte/s, 800 left.
        assert_eq!(estimate_time_to_full(&[s(0, 100), s(100, 200)]), Some(800));
        // Flat and shrinking.
        assert_eq!(estimate_time_to_full(&[s(0, 100), s(100, 100)]), None);
        assert_eq!(estimate_time_to_full(&[s(0, 200), s(100, 100)]), None);
        // Too little history.
        assert_eq!(estimate_time_to_full(&[s(0, 100), s(30, 200)]), None);
        // Full.
        assert_eq!(estimate_time_to_full(&[s(0, 1000)]), Some(0));
        // Noisy but rising: least squares.
        let v = [s(0, 100), s(60, 180), s(120, 220), s(180, 280)];
        let t = estimate_time_to_full(&v).unwrap();
        assert!((700..=800).contains(&t), "{t}");
    }

    #[test]
    fn history_resets_on_cleanup() {
        let mut h = StorageHistory::default();
        let w = Duration::from_secs(3600);
        assert_eq!(h.push(s(0, 100), w), None);
        assert_eq!(h.push(s(100, 200), w), Some(800));
        assert_eq!(h.push(s(200, 50), w), None);
        assert_eq!(h.push(s(300, 150), w), Some(850));
    }

    #[test]
    fn zfs_scan_texts() {
        let r = parse_zfs_scan(
            "scrub repaired 0B in 00:00:01 with 0 errors on Sun Jun  9 00:24:02 2024",
        )
        .unwrap();
        assert!(!r.resilver && !r.in_progress);
        assert_eq!((r.errors, r.repaired, r.duration_s), (0, 0, Some(1)));
        assert_eq!(r.finished_ms, Some(1_717_892_642_000));
        let r = parse_zfs_scan(
            "resilvered 1.50G in 1 days 00:10:00 with 3 errors on Mon Jan  1 00:00:00 2024",
        )
        .unwrap();
        assert!(r.resilver);
        assert_eq!(r.errors, 3);
        assert_eq!(r.repaired, 1_610_612_736);
        assert_eq!(r.duration_s, Some(87_000));
        assert_eq!(r.finished_ms, Some(1_704_067_200_000));
        let r = parse_zfs_scan(
            "scrub in progress since Sun Jun  9 00:24:01 2024\n\t1.2G scanned at 100M/s",
        )
        .unwrap();
        assert!(r.in_progress);
        assert_eq!(parse_zfs_scan("none requested"), None);
        assert_eq!(parse_zfs_scan("scrub repaired ?? in x with y errors"), None);
    }

    #[test]
    fn vzdump_log() {
        let upid: Upid = "UPID:pve1:00001234:00ABCDEF:6650C3E1:vzdump::root@pam:"
            .parse()
            .unwrap();
        let lines = [
            "INFO: starting new backup job: vzdump 100 101 102 --mode snapshot --storage local --remove 0",
            "INFO: Starting Backup of VM 100 (qemu)",
            "INFO: creating vzdump archive '/var/lib/vz/dump/vzdump-qemu-100-2024_06_09-00_00_01.vma.zst'",
            "INFO: archive file size: 1.50GB",
            "INFO: Finished Backup of VM 100 (00:01:05)",
            "INFO: Starting Backup of VM 101 (lxc)",
            "ERROR: Backup of VM 101 failed - unable to open file '/etc/pve/nodes/pve1/lxc/101.conf.tmp.1234' - Permission denied",
            "INFO: Starting Backup of VM 102 (qemu)",
            "INFO: Backup job finished with errors",
            "TASK ERROR: job errors",
        ];
        let out = parse_vzdump_log(
            &upid,
            &lines,
            &TaskStatus::Failed("job errors".into()),
            Some(5),
        );
        assert_eq!(out.len(), 3);
        assert!(out[0].ok);
        assert_eq!(out[0].size_bytes, Some(1_610_612_736));
        assert_eq!(out[0].duration_s, Some(65));
        assert_eq!(out[0].storage.as_deref(), Some("local"));
        assert!(!out[1].ok);
        assert!(
            out[1]
                .error_summary
                .as_deref()
                .unwrap()
                .starts_with("unable to open file")
        );
        assert!(!out[2].ok);
        assert_eq!(
            out[2].error_summary.as_deref(),
            Some("backup did not finish: job errors")
        );
        // No per-guest lines: task id is the vmid.
        let single: Upid = "UPID:pve1:00001234:00ABCDEF:6650C3E1:vzdump:105:root@pam:"
            .parse()
            .unwrap();
        let out = parse_vzdump_log(&single, &["TASK OK"], &TaskStatus::Ok, None);
        assert_eq!(out.len(), 1);
        assert!(out[0].ok && out[0].vmid == 105);
        // Per-guest log file lines carry a timestamp prefix.
        let out = parse_vzdump_log(
            &single,
            &[
                "2024-06-09 00:00:01 INFO: Starting Backup of VM 105 (lxc)",
                "2024-06-09 00:00:09 INFO: Finished Backup of VM 105 (00:00:08)",
            ],
            &TaskStatus::Ok,
            None,
        );
        assert_eq!((out[0].ok, out[0].duration_s), (true, Some(8)));
    }

    #[test]
    fn smart_health_values() {
        assert_eq!(smart_health("PASSED"), SmartHealth::Passed);
        assert_eq!(smart_health("OK"), SmartHealth::Passed);
        assert_eq!(smart_health("FAILED!"), SmartHealth::Failed);
        assert_eq!(smart_health("UNKNOWN"), SmartHealth::Unknown);
        assert_eq!(smart_health("SMART Disabled"), SmartHealth::Unknown);
    }
}
