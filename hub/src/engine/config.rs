//! Engine configuration: every threshold, window and limit, with documented
//! defaults. All durations are milliseconds.
//!
//! Every struct is `#[serde(default)]`, so a TOML section or a test fixture
//! only names the values it changes; unknown keys are rejected.

use serde::{Deserialize, Serialize};

use super::model::Severity;

/// Minute in milliseconds.
pub const MINUTE_MS: i64 = 60_000;
/// Hour in milliseconds.
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
/// Day in milliseconds.
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// What to do with a signal from a node the engine has not been told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownNodePolicy {
    /// Count it once (`stats.unknown_node`), then treat the node as known.
    /// The hub only forwards signals from enrolled agents, so an unknown node
    /// is a registration-order race rather than an attack; dropping would lose
    /// real evidence.
    Accept,
    /// Count and drop every signal until `NodeRegistered` arrives.
    Drop,
}

/// Top-level engine configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Signals observed up to this far ahead of `now` are clamped to `now`
    /// (counted as `future_clamped`); further ahead they are dropped
    /// (`future_dropped`). Default 5 min.
    pub max_future_skew_ms: i64,
    /// Signals observed longer ago than this are dropped (`stale_dropped`).
    /// Also the retention of the duplicate/out-of-order memory, so anything
    /// older than it can never be mistaken for new. Default 24 h.
    pub max_signal_age_ms: i64,
    /// Unknown-node handling. Default `accept`.
    pub unknown_nodes: UnknownNodePolicy,
    /// A new problem joins an open incident on the same node or guest whose
    /// last evidence is at most this old. Default 10 min.
    pub correlation_window_ms: i64,
    /// An incident whose conditions have all cleared resolves only after this
    /// quiet time; a recurrence inside it keeps the incident open, so a
    /// flapping node stays one incident. Default 5 min.
    pub resolve_hold_down_ms: i64,
    /// A problem that recurs this soon after its incident resolved reopens
    /// that incident instead of opening a new one. Default 60 min.
    pub reopen_window_ms: i64,
    /// Event-like conditions (OOM kill, failed task, error burst, crash loop,
    /// service failure, fencing) clear after this long without a recurrence.
    /// Default 30 min.
    pub event_quiet_ms: i64,
    /// Conditions derived from periodic samples (pressure, storage, quorum,
    /// guest state, time drift) clear when not refreshed for this long, unless
    /// their node is offline (then they are frozen). Default 15 min.
    pub stale_after_ms: i64,
    /// As `stale_after_ms` for slowly polled facts (certificates, updates,
    /// SMART, ZFS). Default 48 h.
    pub slow_stale_after_ms: i64,
    /// A failed backup stays a problem until a later backup of the same guest
    /// succeeds, or for at most this long. Default 7 days.
    pub backup_clear_ms: i64,
    /// Incident-creation throttling.
    pub throttle: ThrottleConfig,
    /// Evidence entries kept from the start of an incident. Default 10.
    pub evidence_head: usize,
    /// Evidence entries kept from the end of an incident. Default 20.
    pub evidence_tail: usize,
    /// Timeline entries kept (oldest dropped first, the first entry is
    /// always kept). Default 50.
    pub timeline_max: usize,
    /// Conditions listed on an incident (a storm may hold thousands; the
    /// rest are counted in `conditions_omitted`). Default 100.
    pub max_conditions_listed: usize,
    /// Affected entries listed on an incident. Default 50.
    pub max_affected_listed: usize,
    /// Incidents below this severity open silently (no `Notify`).
    /// Default `warning`.
    pub notify_min_severity: Severity,
    /// Minimum time between escalation/reopen notifications of one incident.
    /// Default 15 min.
    pub renotify_min_interval_ms: i64,
    /// How often `handle_timeout` prunes detector and duplicate memory.
    /// Default 1 min.
    pub housekeeping_interval_ms: i64,
    /// Detector thresholds.
    pub detectors: DetectorConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_future_skew_ms: 5 * MINUTE_MS,
            max_signal_age_ms: DAY_MS,
            unknown_nodes: UnknownNodePolicy::Accept,
            correlation_window_ms: 10 * MINUTE_MS,
            resolve_hold_down_ms: 5 * MINUTE_MS,
            reopen_window_ms: HOUR_MS,
            event_quiet_ms: 30 * MINUTE_MS,
            stale_after_ms: 15 * MINUTE_MS,
            slow_stale_after_ms: 2 * DAY_MS,
            backup_clear_ms: 7 * DAY_MS,
            throttle: ThrottleConfig::default(),
            evidence_head: 10,
            evidence_tail: 20,
            timeline_max: 50,
            max_conditions_listed: 100,
            max_affected_listed: 50,
            notify_min_severity: Severity::Warning,
            renotify_min_interval_ms: 15 * MINUTE_MS,
            housekeeping_interval_ms: MINUTE_MS,
            detectors: DetectorConfig::default(),
        }
    }
}

/// A GCRA limit: a sustained rate of one per `period_ms` with bursts of up
/// to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcraConfig {
    /// Emission interval. Values below 1 are treated as 1.
    pub period_ms: i64,
    /// Burst size. Values below 1 are treated as 1.
    pub burst: u32,
}

impl Default for GcraConfig {
    fn default() -> Self {
        Self {
            period_ms: 10_000,
            burst: 10,
        }
    }
}

/// Incident-creation throttling (security-design §6.2): over the limit, new
/// problems are merged into one storm incident; nothing is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Per node. Default 6 per minute, burst 10.
    pub per_node: GcraConfig,
    /// Across all nodes. Default 60 per minute, burst 20.
    pub global: GcraConfig,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            per_node: GcraConfig {
                period_ms: 10_000,
                burst: 10,
            },
            global: GcraConfig {
                period_ms: 1_000,
                burst: 20,
            },
        }
    }
}

/// Detector thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// `resource_pressure`: CPU busy percentage. Default 90.
    pub pressure_cpu_pct: f32,
    /// `resource_pressure`: memory used percentage. Default 90.
    pub pressure_mem_pct: f32,
    /// `resource_pressure`: I/O wait percentage. Default 20.
    pub pressure_iowait_pct: f32,
    /// `resource_pressure`: CPU or memory at or above this is critical.
    /// Default 98.
    pub pressure_critical_pct: f32,
    /// `resource_pressure`: the level must hold this long. Default 5 min.
    pub pressure_sustain_ms: i64,
    /// `resource_pressure`: clears this many points below the threshold.
    /// Default 5.
    pub pressure_hysteresis_pct: f32,
    /// `resource_pressure`: a gap between samples longer than this restarts
    /// the sustain clock. Default 3 min.
    pub pressure_max_gap_ms: i64,
    /// `storage_full`: used percentage. Default 95.
    pub storage_full_pct: f32,
    /// `storage_full`: clears below this used percentage. Default 93.
    pub storage_full_clear_pct: f32,
    /// `storage_filling`: warn when the projected time to full is below
    /// this. Default 24 h.
    pub storage_ttf_warn_ms: i64,
    /// `storage_filling`: critical below this time to full. Default 4 h.
    pub storage_ttf_critical_ms: i64,
    /// `storage_filling`: samples older than this are not used for the
    /// trend. Default 6 h.
    pub storage_trend_window_ms: i64,
    /// `storage_filling`: samples needed for a trend. Default 4.
    pub storage_trend_min_samples: usize,
    /// `storage_filling`: the samples must span at least this. Default
    /// 30 min.
    pub storage_trend_min_span_ms: i64,
    /// `storage_filling`: samples kept per filesystem. Default 64.
    pub storage_trend_max_samples: usize,
    /// `container_crash_loop`: window for counting non-zero exits. Default
    /// 10 min.
    pub crash_loop_window_ms: i64,
    /// `container_crash_loop`: exits in the window that make a loop.
    /// Default 3.
    pub crash_loop_min_exits: u32,
    /// `container_crash_loop`: exits in the window that make it critical.
    /// Default 10.
    pub crash_loop_critical_exits: u32,
    /// A `die` this soon after a `stop`/`kill` request is intentional.
    /// Default 30 s.
    pub stop_grace_ms: i64,
    /// `service_failing`: window for counting restarts. Default 10 min.
    pub service_window_ms: i64,
    /// `service_failing`: scheduled restarts in the window that make a
    /// restart loop. Default 3.
    pub service_restart_loop_min: u32,
    /// `log_error_burst`: templates at this syslog priority or more severe
    /// count as errors. Default 3 (err).
    pub log_error_max_priority: u8,
    /// `log_error_burst`: a template seen for the first time must occur this
    /// often in its window (a `burst` flag alone always suffices). Default 3.
    pub log_new_template_min_count: u32,
    /// `cert_expiring`: warning when fewer than this remains. Default 14 d.
    pub cert_warn_ms: i64,
    /// `cert_expiring`: critical when fewer than this remains. Default 3 d.
    pub cert_critical_ms: i64,
    /// `smart_failing`: reallocated sectors at or above this warn.
    /// Default 10.
    pub smart_reallocated_warn: u64,
    /// `smart_failing`: pending sectors at or above this warn. Default 1.
    pub smart_pending_warn: u64,
    /// `time_drift`: absolute offset that warns. Default 1 s.
    pub time_drift_warn_ms: i64,
    /// `time_drift`: absolute offset that is critical. Default 10 s.
    pub time_drift_critical_ms: i64,
    /// `task_failed`: task types never reported (console proxies).
    pub task_ignore_types: Vec<String>,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            pressure_cpu_pct: 90.0,
            pressure_mem_pct: 90.0,
            pressure_iowait_pct: 20.0,
            pressure_critical_pct: 98.0,
            pressure_sustain_ms: 5 * MINUTE_MS,
            pressure_hysteresis_pct: 5.0,
            pressure_max_gap_ms: 3 * MINUTE_MS,
            storage_full_pct: 95.0,
            storage_full_clear_pct: 93.0,
            storage_ttf_warn_ms: DAY_MS,
            storage_ttf_critical_ms: 4 * HOUR_MS,
            storage_trend_window_ms: 6 * HOUR_MS,
            storage_trend_min_samples: 4,
            storage_trend_min_span_ms: 30 * MINUTE_MS,
            storage_trend_max_samples: 64,
            crash_loop_window_ms: 10 * MINUTE_MS,
            crash_loop_min_exits: 3,
            crash_loop_critical_exits: 10,
            stop_grace_ms: 30_000,
            service_window_ms: 10 * MINUTE_MS,
            service_restart_loop_min: 3,
            log_error_max_priority: 3,
            log_new_template_min_count: 3,
            cert_warn_ms: 14 * DAY_MS,
            cert_critical_ms: 3 * DAY_MS,
            smart_reallocated_warn: 10,
            smart_pending_warn: 1,
            time_drift_warn_ms: 1_000,
            time_drift_critical_ms: 10_000,
            task_ignore_types: ["vncproxy", "vncshell", "spiceproxy", "termproxy"]
                .iter()
                .map(|s| (*s).to_string())
                .collect(),
        }
    }
}
