//! Follows the on-node task directory `/var/log/pve/tasks/` and turns it
//! into [`PveTask`] facts when tasks start and finish.
//!
//! # Layout (what this module reads)
//!
//! Sources: `pve-common/src/PVE/INotify.pm` (`read_active_workers`,
//! `write_active_workers`), `PVE/RESTEnvironment.pm` (`active_workers`:
//! archive, rotation, 25-entry cap), `PVE/UPID.pm` (log path, `read_status`);
//! summarised in `integrations.md` §3.3.
//!
//! | path | content |
//! | --- | --- |
//! | `active` | All running tasks plus up to 25 recently finished ones, one per line: `<UPID> <saved 0\|1>` while running, `<UPID> <saved> <endtime %08X> <status>` once finished. Rewritten atomically (tmp file + rename) on every start/finish. Parsed with `^(\S+)\s(0\|1)(\s([0-9A-Za-z]{8})(\s(\s*\S.*))?)?$`. |
//! | `index` | Archive, appended when a finished task is saved: `<UPID> <endtime %08X> <status>`. Renamed to `index.1` when larger than 50 000 bytes (one old generation). |
//! | `<H>/<UPID>` | The task log; `<H>` is the last hex digit (uppercase) of the UPID's starttime. Its last line is `TASK OK`, `TASK WARNINGS: <n>` or `TASK ERROR: <message>`. |
//!
//! `<status>` is `OK`, `WARNINGS: <n>`, the error message, or
//! `unexpected status`.
//!
//! # How it follows
//!
//! Poll-based (the directory changes on every task, so a 1-2 s poll is as
//! good as inotify and works everywhere): each [`TaskDirFollower::poll`]
//! tails `index` from a persisted byte offset (following a rotation to
//! `index.1` by inode), then re-reads `active` and diffs it against what was
//! already reported. Every UPID is reported at most once as started and once
//! as finished (bounded memory). Lines that do not parse are skipped and
//! counted, never fatal. Failure texts are summarised from the task log
//! (short, single line) and must still go through the redactor.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::facts::{PveTask, TaskStatus, Upid};
use super::upid::parse_upid;

/// Default task directory on a PVE node.
pub const DEFAULT_TASK_DIR: &str = "/var/log/pve/tasks";
/// Longest failure summary, bytes.
pub const MAX_SUMMARY_LEN: usize = 300;
/// How much of a task log's tail is read for a summary.
const LOG_TAIL_BYTES: u64 = 16 * 1024;
/// Most index bytes consumed per poll (the rest comes next poll).
const MAX_INDEX_CHUNK: u64 = 4 * 1024 * 1024;
/// Longest line considered (longer lines are skipped and counted).
const MAX_LINE_LEN: usize = 8 * 1024;
/// UPIDs remembered for de-duplication.
const REMEMBERED: usize = 4096;

/// Maps a PVE status string (index/active/`exitstatus`/API `status`) to a
/// [`TaskStatus`]. Mirrors `UPID::normalize_status_type`: `OK` → ok,
/// `WARNINGS: n` → warnings, empty or `unexpected status` → unknown,
/// anything else is the error text.
pub fn parse_status(s: &str) -> TaskStatus {
    let s = s.trim();
    if s == "OK" {
        return TaskStatus::Ok;
    }
    if s.eq_ignore_ascii_case("running") {
        return TaskStatus::Running;
    }
    if let Some(n) = s.strip_prefix("WARNINGS: ")
        && let Ok(n) = n.trim().parse()
    {
        return TaskStatus::Warnings(n);
    }
    if s.is_empty() || s == "unexpected status" {
        return TaskStatus::Unknown(clean(s, MAX_SUMMARY_LEN));
    }
    TaskStatus::Failed(clean(s, MAX_SUMMARY_LEN))
}

/// Collapses whitespace, drops control characters and truncates to `max`
/// bytes on a character boundary (appending "…" when cut).
pub fn clean(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max + 4));
    let mut space = false;
    for c in s.chars() {
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if c.is_control() {
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    if out.len() > max {
        let mut cut = max.saturating_sub(3);
        while cut > 0 && !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// One parsed line of `active`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveEntry {
    /// The task.
    pub upid: Upid,
    /// The UPID exactly as written (file names use it verbatim).
    pub raw: String,
    /// Whether it is already in `index`.
    pub saved: bool,
    /// End time (Unix s) once finished.
    pub endtime: Option<u64>,
    /// Status text once finished.
    pub status: Option<String>,
}

/// One parsed line of `index`/`index.1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// The task.
    pub upid: Upid,
    /// The UPID exactly as written.
    pub raw: String,
    /// End time, Unix s.
    pub endtime: u64,
    /// Status text.
    pub status: String,
}

/// Parses one `active` line (without the newline).
pub fn parse_active_line(line: &str) -> Option<ActiveEntry> {
    let (raw, rest) = line.split_once(' ')?;
    let upid = parse_upid(raw).ok()?;
    let (saved, rest) = match rest.split_once(' ') {
        Some((s, r)) => (s, Some(r)),
        None => (rest, None),
    };
    let saved = match saved {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    let (endtime, status) = match rest {
        None => (None, None),
        Some(r) => {
            let (end, status) = match r.split_once(' ') {
                Some((e, s)) => (e, Some(s)),
                None => (r, None),
            };
            if end.len() != 8 {
                return None;
            }
            let end = u64::from_str_radix(end, 16).ok()?;
            let status = status.map(str::trim).filter(|s| !s.is_empty());
            (Some(end), status.map(str::to_owned))
        }
    };
    Some(ActiveEntry {
        upid,
        raw: raw.to_owned(),
        saved,
        endtime,
        status,
    })
}

/// Parses one `index` line (without the newline).
pub fn parse_index_line(line: &str) -> Option<IndexEntry> {
    let (raw, rest) = line.split_once(' ')?;
    let upid = parse_upid(raw).ok()?;
    let (end, status) = rest.split_once(' ').unwrap_or((rest, ""));
    if end.len() != 8 {
        return None;
    }
    let endtime = u64::from_str_radix(end, 16).ok()?;
    Some(IndexEntry {
        upid,
        raw: raw.to_owned(),
        endtime,
        status: status.trim().to_owned(),
    })
}

/// What a task log says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskLogSummary {
    /// Status from the final `TASK …` line, if present.
    pub status: Option<TaskStatus>,
    /// Up to three recent lines that mention an error (cleaned).
    pub error_lines: Vec<String>,
    /// Lines that were skipped: not UTF-8, control characters, oversize, a
    /// malformed `TASK` line, or anything after the final status line.
    pub unexpected_lines: usize,
}

/// Summarises a task log (whole file or its tail).
///
/// Error lines are picked in two tiers: lines that are errors by PVE's
/// conventions (`ERROR:` prefix as written by vzdump and `warn`/`die`
/// helpers, `error:`, `… failed - …`), else lines that merely mention
/// "error"/"failed". The last three of the best tier are kept.
pub fn summarize_log<S: AsRef<str>>(lines: &[S]) -> TaskLogSummary {
    let mut out = TaskLogSummary::default();
    let mut strong: VecDeque<String> = VecDeque::new();
    let mut weak: VecDeque<String> = VecDeque::new();
    let push = |q: &mut VecDeque<String>, l: &str| {
        let c = clean(l, 160);
        if !c.is_empty() && !q.contains(&c) {
            q.push_back(c);
            if q.len() > 3 {
                q.pop_front();
            }
        }
    };
    for line in lines {
        let line = line.as_ref().trim_end_matches(['\r', '\n']);
        if out.status.is_some() {
            // Nothing follows the status line in a real log.
            if !line.trim().is_empty() {
                out.unexpected_lines += 1;
            }
            continue;
        }
        if line.len() > MAX_LINE_LEN
            || line.contains('\u{FFFD}')
            || line.chars().any(|c| c.is_control() && c != '\t')
        {
            out.unexpected_lines += 1;
            continue;
        }
        if let Some(rest) = line.strip_prefix("TASK ") {
            if rest == "OK" {
                out.status = Some(TaskStatus::Ok);
            } else if let Some(msg) = rest.strip_prefix("ERROR: ") {
                out.status = Some(TaskStatus::Failed(clean(msg, MAX_SUMMARY_LEN)));
            } else if let Some(n) = rest
                .strip_prefix("WARNINGS: ")
                .and_then(|n| n.trim().parse().ok())
            {
                out.status = Some(TaskStatus::Warnings(n));
            } else {
                out.unexpected_lines += 1;
            }
            continue;
        }
        let t = line.trim_start();
        let lower = t.to_ascii_lowercase();
        if t.starts_with("ERROR") || lower.contains("error:") || lower.contains(" failed - ") {
            push(&mut strong, t);
        } else if lower.contains("error") || lower.contains("failed") {
            push(&mut weak, t);
        }
    }
    out.error_lines = if strong.is_empty() { weak } else { strong }.into();
    out
}

/// Builds the one-line failure summary: the `TASK ERROR` message, then up to
/// two earlier error lines from the log that add information.
pub fn failure_summary(status_text: &str, log: &TaskLogSummary) -> String {
    let head = clean(status_text, MAX_SUMMARY_LEN);
    let mut parts = vec![head.clone()];
    for l in log.error_lines.iter().rev() {
        if parts.len() >= 3 {
            break;
        }
        if head.is_empty() || !l.contains(head.as_str()) {
            parts.push(l.clone());
        }
    }
    let parts: Vec<String> = parts.into_iter().filter(|p| !p.is_empty()).collect();
    clean(&parts.join(" | "), MAX_SUMMARY_LEN)
}

/// Reads the last `max_bytes` of a task log as lines (lossy UTF-8; a
/// partial first line is dropped when the file was cut).
pub fn read_log_tail(path: &Path, max_bytes: u64) -> io::Result<Vec<String>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(max_bytes);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(max_bytes).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    Ok(lines)
}

/// Reads a whole task log (up to `max_bytes` from its start), for parsers
/// that need the beginning (e.g. vzdump's job line).
pub fn read_log(path: &Path, max_bytes: u64) -> io::Result<Vec<String>> {
    let f = File::open(path)?;
    let mut buf = Vec::new();
    f.take(max_bytes).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// Where a fresh follower (no persisted state) starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Skip history: start at the end of `index`, report only tasks that are
    /// running now and everything after.
    End,
    /// Replay `index` (and finished tasks in `active`) from the start.
    Beginning,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FollowerStats {
    /// Polls done.
    pub polls: u64,
    /// Tasks reported as started.
    pub started: u64,
    /// Tasks reported as finished.
    pub finished: u64,
    /// Lines of `active`/`index` that did not parse.
    pub bad_lines: u64,
    /// Unexpected lines seen in task logs.
    pub bad_log_lines: u64,
    /// Task logs that could not be read.
    pub unreadable_logs: u64,
    /// `index` rotations followed.
    pub rotations: u64,
}

/// Why a poll failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum FollowerError {
    /// The directory cannot be read (missing, permission): fall back to the
    /// API (`GET /nodes/{node}/tasks`).
    #[error("task directory {path} is not readable: {source}")]
    Unreadable {
        /// Directory.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Persisted {
    index_ino: u64,
    index_offset: u64,
    finished: Vec<String>,
}

/// A bounded insertion-ordered set.
#[derive(Debug, Default)]
struct Remembered {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Remembered {
    fn contains(&self, k: &str) -> bool {
        self.set.contains(k)
    }
    fn insert(&mut self, k: String) -> bool {
        if !self.set.insert(k.clone()) {
            return false;
        }
        self.order.push_back(k);
        while self.order.len() > REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
    fn remove(&mut self, k: &str) {
        if self.set.remove(k) {
            self.order.retain(|x| x != k);
        }
    }
}

/// Follows one task directory. Sync I/O; see [`run_follower`] for the async
/// driver.
#[derive(Debug)]
pub struct TaskDirFollower {
    dir: PathBuf,
    state_path: Option<PathBuf>,
    start_at: StartAt,
    initialised: bool,
    index_ino: u64,
    index_offset: u64,
    finished: Remembered,
    running: Remembered,
    stats: FollowerStats,
    /// What was last written to `state_path` (skip identical writes).
    last_persisted: Option<(u64, u64, Option<String>)>,
}

impl TaskDirFollower {
    /// Follows `dir`; persists its position in `state_path` if given (loaded
    /// here if it exists).
    pub fn new(dir: impl Into<PathBuf>, state_path: Option<PathBuf>, start_at: StartAt) -> Self {
        let mut f = Self {
            dir: dir.into(),
            state_path,
            start_at,
            initialised: false,
            index_ino: 0,
            index_offset: 0,
            finished: Remembered::default(),
            running: Remembered::default(),
            stats: FollowerStats::default(),
            last_persisted: None,
        };
        if let Some(p) = &f.state_path {
            match fs::read(p) {
                Ok(bytes) => match serde_json::from_slice::<Persisted>(&bytes) {
                    Ok(st) => {
                        f.index_ino = st.index_ino;
                        f.index_offset = st.index_offset;
                        for u in st.finished {
                            f.finished.insert(u);
                        }
                        f.initialised = true;
                    }
                    Err(e) => {
                        tracing::warn!(path = %p.display(), error = %e, "ignoring corrupt task follower state")
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "cannot read task follower state")
                }
            }
        }
        f
    }

    /// The followed directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counters.
    pub fn stats(&self) -> FollowerStats {
        self.stats
    }

    /// One poll: returns tasks that started or finished since the last poll
    /// (finished ones carry their end time and, on failure, a summary).
    pub fn poll(&mut self) -> Result<Vec<PveTask>, FollowerError> {
        self.stats.polls += 1;
        if let Err(source) = fs::read_dir(&self.dir) {
            return Err(FollowerError::Unreadable {
                path: self.dir.clone(),
                source,
            });
        }
        let mut out = Vec::new();
        let first = !self.initialised;
        if first {
            self.initialised = true;
            if self.start_at == StartAt::End {
                self.skip_history();
            }
        }
        for e in self.read_index_updates() {
            self.report_finished(&e.upid, &e.raw, Some(e.endtime), &e.status, &mut out);
        }
        self.read_active(first && self.start_at == StartAt::End, &mut out);
        self.persist();
        Ok(out)
    }

    /// Starts at the end of `index` and marks finished `active` entries as
    /// already reported.
    fn skip_history(&mut self) {
        if let Ok(md) = fs::metadata(self.dir.join("index")) {
            self.index_ino = md.ino();
            self.index_offset = md.len();
        }
    }

    fn read_index_updates(&mut self) -> Vec<IndexEntry> {
        let index = self.dir.join("index");
        let md = match fs::metadata(&index) {
            Ok(md) => Some(md),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::debug!(error = %e, "cannot stat task index");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        let cur_ino = md.as_ref().map(MetadataExt::ino);
        if self.index_ino != 0 && cur_ino != Some(self.index_ino) {
            // Rotated (or recreated): finish the old generation if it is
            // `index.1`, then start the new file from 0.
            if let Ok(old) = fs::metadata(self.dir.join("index.1"))
                && old.ino() == self.index_ino
            {
                let (lines, _) = self.read_lines_from(&self.dir.join("index.1"), self.index_offset);
                out.extend(self.parse_index_lines(&lines));
                self.stats.rotations += 1;
            }
            self.index_offset = 0;
            self.index_ino = cur_ino.unwrap_or(0);
        }
        let Some(md) = md else {
            return out;
        };
        self.index_ino = md.ino();
        if md.len() < self.index_offset {
            // Truncated in place.
            self.index_offset = 0;
        }
        if md.len() > self.index_offset {
            let (lines, consumed) = self.read_lines_from(&index, self.index_offset);
            self.index_offset += consumed;
            out.extend(self.parse_index_lines(&lines));
        }
        out
    }

    /// Complete lines from `offset`; returns them and the bytes consumed.
    fn read_lines_from(&self, path: &Path, offset: u64) -> (Vec<String>, u64) {
        let mut buf = Vec::new();
        let res = File::open(path).and_then(|mut f| {
            f.seek(SeekFrom::Start(offset))?;
            f.take(MAX_INDEX_CHUNK).read_to_end(&mut buf)
        });
        if let Err(e) = res {
            tracing::debug!(path = %path.display(), error = %e, "cannot read task index");
            return (Vec::new(), 0);
        }
        let Some(last_nl) = buf.iter().rposition(|b| *b == b'\n') else {
            // No complete line yet (or one giant line filling the chunk).
            if buf.len() as u64 >= MAX_INDEX_CHUNK {
                return (vec![String::new()], buf.len() as u64);
            }
            return (Vec::new(), 0);
        };
        let complete = &buf[..=last_nl];
        let lines = complete
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        (lines, complete.len() as u64)
    }

    fn parse_index_lines(&mut self, lines: &[String]) -> Vec<IndexEntry> {
        let mut out = Vec::new();
        for l in lines {
            match parse_index_line(l) {
                Some(e) => out.push(e),
                None => {
                    self.stats.bad_lines += 1;
                    tracing::debug!(line = %clean(l, 120), "skipping unparsable task index line");
                }
            }
        }
        out
    }

    fn read_active(&mut self, quiet_finished: bool, out: &mut Vec<PveTask>) {
        let text = match fs::read(self.dir.join("active")) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::debug!(error = %e, "cannot read active task list");
                }
                return;
            }
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Some(e) = parse_active_line(line) else {
                self.stats.bad_lines += 1;
                tracing::debug!(line = %clean(line, 120), "skipping unparsable active task line");
                continue;
            };
            match e.endtime {
                None => {
                    if !self.finished.contains(&e.raw) && self.running.insert(e.raw.clone()) {
                        self.stats.started += 1;
                        out.push(PveTask {
                            start_ms: e.upid.start_ms(),
                            upid: e.upid,
                            status: TaskStatus::Running,
                            end_ms: None,
                        });
                    }
                }
                Some(end) => {
                    if quiet_finished {
                        self.finished.insert(e.raw.clone());
                        continue;
                    }
                    let status = e.status.clone().unwrap_or_default();
                    self.report_finished(&e.upid, &e.raw, Some(end), &status, out);
                }
            }
        }
    }

    fn report_finished(
        &mut self,
        upid: &Upid,
        raw: &str,
        endtime: Option<u64>,
        status_text: &str,
        out: &mut Vec<PveTask>,
    ) {
        if !self.finished.insert(raw.to_owned()) {
            return;
        }
        self.running.remove(raw);
        let mut status = parse_status(status_text);
        let needs_log = matches!(status, TaskStatus::Failed(_) | TaskStatus::Unknown(_));
        if needs_log {
            match read_log_tail(&upid.log_path(&self.dir), LOG_TAIL_BYTES) {
                Ok(lines) => {
                    let summary = summarize_log(&lines);
                    self.stats.bad_log_lines += summary.unexpected_lines as u64;
                    status = match (&status, &summary.status) {
                        // Index has no status text: trust the log.
                        (TaskStatus::Unknown(s), Some(from_log)) if s.is_empty() => {
                            match from_log {
                                TaskStatus::Failed(msg) => {
                                    TaskStatus::Failed(failure_summary(msg, &summary))
                                }
                                other => other.clone(),
                            }
                        }
                        (TaskStatus::Failed(msg), _) => {
                            TaskStatus::Failed(failure_summary(msg, &summary))
                        }
                        (s, _) => s.clone(),
                    };
                }
                Err(e) => {
                    self.stats.unreadable_logs += 1;
                    tracing::debug!(upid = %raw, error = %e, "cannot read task log");
                }
            }
        }
        self.stats.finished += 1;
        out.push(PveTask {
            start_ms: upid.start_ms(),
            upid: upid.clone(),
            status,
            end_ms: endtime.map(|e| i64::try_from(e).unwrap_or(0).saturating_mul(1000)),
        });
    }

    fn persist(&mut self) {
        let Some(path) = &self.state_path else {
            return;
        };
        let key = (
            self.index_ino,
            self.index_offset,
            self.finished.order.back().cloned(),
        );
        if self.last_persisted.as_ref() == Some(&key) {
            return;
        }
        let st = Persisted {
            index_ino: self.index_ino,
            index_offset: self.index_offset,
            // The index offset already prevents replays; this only covers
            // `active`, which holds at most ~25 finished tasks.
            finished: self
                .finished
                .order
                .iter()
                .rev()
                .take(256)
                .rev()
                .cloned()
                .collect(),
        };
        match write_atomic(path, &st) {
            Ok(()) => self.last_persisted = Some(key),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot persist task follower state");
            }
        }
    }
}

fn write_atomic(path: &Path, st: &Persisted) -> io::Result<()> {
    let bytes = serde_json::to_vec(st).map_err(io::Error::other)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// Drives a follower: polls every `interval` on the blocking pool and sends
/// each task to `tx`. Returns when `cancel` fires or the receiver is gone.
/// A poll error (directory unreadable) is logged and retried; the caller
/// decides when to fall back to the API.
pub async fn run_follower(
    mut follower: TaskDirFollower,
    interval: Duration,
    tx: mpsc::Sender<PveTask>,
    cancel: CancellationToken,
) -> TaskDirFollower {
    let (dir, state_path, start_at) = (
        follower.dir.clone(),
        follower.state_path.clone(),
        follower.start_at,
    );
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return follower,
            _ = tick.tick() => {}
        }
        let joined = tokio::task::spawn_blocking(move || {
            let res = follower.poll();
            (follower, res)
        })
        .await;
        let (f, res) = match joined {
            Ok(v) => v,
            Err(e) => {
                // Only a bug can get here; restart from the persisted state.
                tracing::error!(error = %e, "task follower poll panicked");
                (
                    TaskDirFollower::new(dir.clone(), state_path.clone(), start_at),
                    Ok(Vec::new()),
                )
            }
        };
        follower = f;
        match res {
            Ok(tasks) => {
                for t in tasks {
                    if tx.send(t).await.is_err() {
                        return follower;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "task follower poll failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_strings() {
        assert_eq!(parse_status("OK"), TaskStatus::Ok);
        assert_eq!(parse_status("WARNINGS: 2"), TaskStatus::Warnings(2));
        assert_eq!(parse_status("RUNNING"), TaskStatus::Running);
        assert_eq!(
            parse_status("unexpected status"),
            TaskStatus::Unknown("unexpected status".into())
        );
        assert_eq!(
            parse_status("VM 100 not running"),
            TaskStatus::Failed("VM 100 not running".into())
        );
        assert_eq!(
            parse_status("WARNINGS: x"),
            TaskStatus::Failed("WARNINGS: x".into())
        );
    }

    #[test]
    fn active_and_index_lines() {
        let u = "UPID:pve1:000A1B2C:0042F1A0:6650C3E1:qmstart:100:root@pam:";
        let e = parse_active_line(&format!("{u} 0")).unwrap();
        assert!(!e.saved && e.endtime.is_none() && e.status.is_none());
        let e = parse_active_line(&format!("{u} 1 6650C3F0 OK")).unwrap();
        assert_eq!(
            (e.saved, e.endtime, e.status.as_deref()),
            (true, Some(0x6650_C3F0), Some("OK"))
        );
        let e =
            parse_active_line(&format!("{u} 0 6650C3F0 can't lock file - got timeout")).unwrap();
        assert_eq!(e.status.as_deref(), Some("can't lock file - got timeout"));
        assert!(parse_active_line(&format!("{u} 2")).is_none());
        assert!(parse_active_line(&format!("{u} 0 66 OK")).is_none());
        assert!(parse_active_line("garbage").is_none());
        let i = parse_index_line(&format!("{u} 6650C3F0 WARNINGS: 1")).unwrap();
        assert_eq!((i.endtime, i.status.as_str()), (0x6650_C3F0, "WARNINGS: 1"));
        assert!(parse_index_line(&format!("{u} 6650C3FZ OK")).is_none());
    }

    #[test]
    fn log_summary_and_failure_text() {
        let lines = [
            "trying to acquire lock...",
            "ERROR: Backup of VM 101 failed - unable to find VM '101'",
            "INFO: Backup job finished with errors",
            "TASK ERROR: job errors",
        ];
        let s = summarize_log(&lines);
        assert_eq!(s.status, Some(TaskStatus::Failed("job errors".into())));
        assert_eq!(s.unexpected_lines, 0);
        let text = failure_summary("job errors", &s);
        assert_eq!(
            text,
            "job errors | ERROR: Backup of VM 101 failed - unable to find VM '101'"
        );
        assert!(text.len() <= MAX_SUMMARY_LEN);
    }

    #[test]
    fn clean_truncates_on_char_boundary() {
        let s = "é".repeat(400);
        let c = clean(&s, 100);
        assert!(c.len() <= 100);
        assert!(c.ends_with('…'));
        assert_eq!(clean("  a \t b\u{7}\n c ", 50), "a b c");
    }
}
