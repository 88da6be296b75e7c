//! Following plain log files: a poll-driven, std-only `tail -F`.
//!
//! A [`FileTailer`] follows one path. The caller calls
//! [`poll`](FileTailer::poll) on a timer (and again at once while
//! [`caught_up`](FileTailer::caught_up) is `false`), processes the returned
//! lines, writes the derived facts to the spool, and only then persists
//! [`position`](FileTailer::position) (security design §2.3 rule 2). A crash
//! then re-reads at most the last batch; it never skips.
//!
//! # Identity and positions
//!
//! A file is identified by `(dev, inode)` plus a [`Fingerprint`] (hash of its
//! first [`TailConfig::fingerprint_len`] bytes) that catches inode reuse and
//! in-place rewrites. A [`Position`] is that identity plus the byte offset
//! just after the last *complete* line returned; a held partial line is not
//! counted, so it is re-read after a restart.
//!
//! # Rotation
//!
//! * **Rename** (`app.log` → `app.log.1`, new `app.log`): the path's inode
//!   changes. The old handle stays open and is read to its end first; it is
//!   closed once it is at EOF and either the new file has data (the writer
//!   has moved on) or it stayed idle for [`TailConfig::rotated_idle_polls`]
//!   polls. Then the new file is read from offset 0. If the path vanished
//!   (renamed, nothing new yet), the old file is followed until a new one
//!   appears; if it was deleted, it is closed once drained and idle.
//! * **Copytruncate**: the file shrinks below the offset, or its fingerprint
//!   changes: reading restarts at 0 and [`TailStats::truncations`] counts it.
//! * **Restart during rotation**: if the saved inode is no longer at the path,
//!   siblings named `<file name>*` in the same directory are searched for it
//!   (e.g. `app.log.1`) and drained before the new file.
//!
//! # Lines
//!
//! Split on `\n`, one trailing `\r` stripped. A line longer than
//! [`TailConfig::max_line_len`] is returned cut to that length with
//! `truncated` set, and the rest of it is skipped. Lines are raw bytes;
//! `valid_utf8` says whether they decode.
//!
//! # Caveats
//!
//! * Inode reuse with an identical first `fingerprint_len` bytes (and a size
//!   not below the old offset) cannot be told apart from the old file.
//! * Lines a writer appends to a rotated file *after* the tailer closed it
//!   are lost (the writer kept writing to the old file after the new file got
//!   data, or after `rotated_idle_polls` idle polls).
//! * Two rotations between polls skip the middle generation.
//! * Copytruncate loses whatever the writer appended between the copy and
//!   the truncate (inherent to copytruncate) and may split a line that was
//!   being written at that moment.
//! * If a restart happens while the rest of an over-long line is being
//!   skipped, that rest comes back as a line of its own.
//! * With `start_at_end`, the first line read may be the end of a line that
//!   was being written at start-up.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::cursor::fnv1a64;

/// Upper bound for [`TailConfig::fingerprint_len`]; a saved fingerprint
/// claiming more is treated as a mismatch (never allocated).
pub const MAX_FINGERPRINT_LEN: usize = 64 * 1024;

/// Limits and policies of a [`FileTailer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailConfig {
    /// Longest line returned whole; longer lines are cut and flagged.
    pub max_line_len: usize,
    /// Most bytes read per `poll`, over all files, so a backlog cannot starve
    /// the event loop.
    pub max_bytes_per_poll: usize,
    /// Size of each `read` call.
    pub read_chunk: usize,
    /// Bytes hashed at the start of a file to recognise it (at most
    /// [`MAX_FINGERPRINT_LEN`]).
    pub fingerprint_len: usize,
    /// On the very first start (no saved position, file already there),
    /// skip existing content instead of reading the whole file. Files that
    /// appear later and rotated files are always read from the start.
    pub start_at_end: bool,
    /// Idle polls at EOF after which a rotated file is closed even though the
    /// new file is still empty (or, for a deleted file, at all).
    pub rotated_idle_polls: u32,
}

impl Default for TailConfig {
    fn default() -> Self {
        Self {
            max_line_len: 64 * 1024,
            max_bytes_per_poll: 1024 * 1024,
            read_chunk: 64 * 1024,
            fingerprint_len: 256,
            start_at_end: true,
            rotated_idle_polls: 3,
        }
    }
}

/// Hash of the first `len` bytes of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// Bytes covered (less than the configured length for short files).
    pub len: u32,
    /// FNV-1a 64 of those bytes.
    pub hash: u64,
}

impl Fingerprint {
    /// The fingerprint of an empty prefix (matches any file).
    pub const EMPTY: Self = Self {
        len: 0,
        hash: 0xcbf2_9ce4_8422_2325,
    };
}

/// Where to resume: file identity plus the offset after the last complete
/// line returned. Persist it with `to_string()`, load it with `parse()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// `st_dev` of the file.
    pub dev: u64,
    /// `st_ino` of the file.
    pub inode: u64,
    /// Byte offset just after the last complete line returned.
    pub offset: u64,
    /// Hash of the file's first bytes.
    pub fingerprint: Fingerprint,
}

impl fmt::Display for Position {
    /// `v1 <dev> <inode> <offset> <fingerprint len> <fingerprint hash hex>`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "v1 {} {} {} {} {:016x}",
            self.dev, self.inode, self.offset, self.fingerprint.len, self.fingerprint.hash
        )
    }
}

/// A persisted position string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsePositionError;

impl fmt::Display for ParsePositionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid file position string")
    }
}

impl std::error::Error for ParsePositionError {}

impl FromStr for Position {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut it = s.split(' ');
        let (Some("v1"), Some(dev), Some(ino), Some(off), Some(len), Some(hash), None) = (
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
        ) else {
            return Err(ParsePositionError);
        };
        let num = |t: &str| t.parse::<u64>().map_err(|_| ParsePositionError);
        Ok(Self {
            dev: num(dev)?,
            inode: num(ino)?,
            offset: num(off)?,
            fingerprint: Fingerprint {
                len: len.parse().map_err(|_| ParsePositionError)?,
                hash: u64::from_str_radix(hash, 16).map_err(|_| ParsePositionError)?,
            },
        })
    }
}

/// One line read from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The line without `\n` (and without a trailing `\r`).
    pub bytes: Vec<u8>,
    /// The line was cut: longer than `max_line_len`, or left incomplete by a
    /// copytruncate.
    pub truncated: bool,
    /// The bytes are valid UTF-8.
    pub valid_utf8: bool,
}

/// What the tailer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailState {
    /// No file at the path (yet); it is picked up when it appears.
    Missing,
    /// Following the file at the path.
    Active,
    /// Finishing a rotated-away file before moving to the new one.
    Draining,
    /// The path exists but cannot be read; reported once, retried each poll.
    Unreadable(io::ErrorKind),
}

/// Counters, monotonically increasing over the tailer's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TailStats {
    /// Lines returned.
    pub lines: u64,
    /// Bytes read from files.
    pub bytes_read: u64,
    /// Rotations noticed (the path now names another file, or none).
    pub rotations: u64,
    /// Copytruncate-style restarts from offset 0.
    pub truncations: u64,
    /// Lines cut to `max_line_len`.
    pub long_lines: u64,
    /// Lines that are not valid UTF-8.
    pub non_utf8_lines: u64,
    /// Saved positions that could not be used (file replaced, inode reused,
    /// rotated file gone): reading restarted at offset 0.
    pub resume_fallbacks: u64,
}

/// An open file being read.
#[derive(Debug)]
struct Tracked {
    file: File,
    dev: u64,
    ino: u64,
    /// Bytes consumed from the file.
    offset: u64,
    fp: Fingerprint,
    /// Partial line waiting for its `\n`.
    pending: Vec<u8>,
    /// Skipping the rest of an over-long line.
    discarding: bool,
    /// Consecutive polls that read nothing.
    idle_polls: u32,
}

impl Tracked {
    fn position(&self) -> Position {
        let held = if self.discarding {
            0
        } else {
            self.pending.len() as u64
        };
        Position {
            dev: self.dev,
            inode: self.ino,
            offset: self.offset.saturating_sub(held),
            fingerprint: self.fp,
        }
    }
}

/// `(dev, inode, size)` of what the path names now.
#[derive(Debug, Clone, Copy)]
struct PathId {
    dev: u64,
    ino: u64,
    size: u64,
    is_file: bool,
}

/// Follows one log file across rotations and restarts.
#[derive(Debug)]
pub struct FileTailer {
    path: PathBuf,
    config: TailConfig,
    file: Option<Tracked>,
    /// `file` is no longer the file at `path`.
    rotated: bool,
    /// Saved position not yet matched to a file.
    resume: Option<Position>,
    /// Position of the last file closed, for `position()` while missing.
    last_position: Option<Position>,
    started: bool,
    caught_up: bool,
    state: TailState,
    last_error: Option<io::ErrorKind>,
    scratch: Vec<u8>,
    stats: TailStats,
}

impl FileTailer {
    /// A tailer for `path`, resuming from `saved` if given. Does no I/O; the
    /// first [`poll`](Self::poll) opens the file.
    pub fn open(path: impl Into<PathBuf>, saved: Option<Position>, config: TailConfig) -> Self {
        let config = TailConfig {
            max_line_len: config.max_line_len.max(1),
            max_bytes_per_poll: config.max_bytes_per_poll.max(1),
            read_chunk: config.read_chunk.max(1),
            fingerprint_len: config.fingerprint_len.min(MAX_FINGERPRINT_LEN),
            ..config
        };
        Self {
            path: path.into(),
            file: None,
            rotated: false,
            resume: saved,
            last_position: None,
            started: false,
            caught_up: false,
            state: TailState::Missing,
            last_error: None,
            scratch: Vec::new(),
            stats: TailStats::default(),
            config,
        }
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configuration in use.
    pub fn config(&self) -> &TailConfig {
        &self.config
    }

    /// Current state (after the last poll).
    pub fn state(&self) -> TailState {
        self.state
    }

    /// Counters so far.
    pub fn stats(&self) -> TailStats {
        self.stats
    }

    /// `true` when the last poll reached the end of the file; `false` when
    /// the per-poll byte budget ran out first (poll again soon).
    pub fn caught_up(&self) -> bool {
        self.caught_up
    }

    /// What to persist: the position after the last line returned. `None`
    /// only before any file was ever seen (and nothing was saved).
    pub fn position(&self) -> Option<Position> {
        match &self.file {
            Some(t) => Some(t.position()),
            None => self.resume.or(self.last_position),
        }
    }

    /// Reads new complete lines into `out` (appending).
    ///
    /// A missing file is not an error (see [`state`](Self::state)). Other
    /// I/O errors are returned once per streak of the same error kind and
    /// then only reflected in `state`, so a caller can log every `Err`
    /// without spamming. Lines appended to `out` before an error are valid
    /// and already reflected in [`position`](Self::position).
    pub fn poll(&mut self, out: &mut Vec<LogLine>) -> io::Result<()> {
        match self.poll_inner(out) {
            Ok(()) => {
                // Only a successful poll ends the "first start" (an error on
                // the first poll must not turn start-at-end into read-all).
                self.started = true;
                self.last_error = None;
                self.state = match (&self.file, self.rotated) {
                    (None, _) => TailState::Missing,
                    (Some(_), false) => TailState::Active,
                    (Some(_), true) => TailState::Draining,
                };
                Ok(())
            }
            Err(e) => {
                let kind = e.kind();
                self.state = TailState::Unreadable(kind);
                // Nothing more to do until the next tick; a caller looping
                // "while !caught_up()" must not spin on a persistent error.
                self.caught_up = true;
                if self.last_error == Some(kind) {
                    Ok(())
                } else {
                    self.last_error = Some(kind);
                    Err(e)
                }
            }
        }
    }

    fn poll_inner(&mut self, out: &mut Vec<LogLine>) -> io::Result<()> {
        let first_poll = !self.started;
        self.caught_up = false;
        if self.scratch.len() != self.config.read_chunk {
            self.scratch = vec![0; self.config.read_chunk];
        }
        let mut budget = self.config.max_bytes_per_poll;
        let at_path = stat_path(&self.path)?;

        if let Some(t) = &self.file {
            let at_path_is_ours = at_path.is_some_and(|a| a.dev == t.dev && a.ino == t.ino);
            if !self.rotated && !at_path_is_ours {
                self.rotated = true;
                self.stats.rotations += 1;
            } else if self.rotated && at_path_is_ours {
                // Renamed back (or the rotation was undone): keep following
                // it as the live file instead of re-reading the path from 0.
                self.rotated = false;
            }
        }
        if self.file.is_none() {
            self.acquire(at_path, first_poll)?;
        }

        loop {
            let Some(t) = self.file.as_mut() else {
                // Nothing to read: missing counts as caught up.
                self.caught_up = true;
                return Ok(());
            };
            if !self.rotated {
                check_truncation(t, &self.config, &mut self.stats, out)?;
            }
            let (eof, n) = read_available(
                t,
                &mut budget,
                &mut self.scratch,
                &self.config,
                &mut self.stats,
                out,
            )?;
            t.idle_polls = if n == 0 {
                t.idle_polls.saturating_add(1)
            } else {
                0
            };
            if !eof {
                return Ok(()); // budget exhausted, more to read
            }
            if !self.rotated {
                self.caught_up = true;
                return Ok(());
            }
            // A rotated file at EOF: is it finished?
            let idle_enough = t.idle_polls >= self.config.rotated_idle_polls;
            let finished = match at_path {
                Some(a) => a.size > 0 || idle_enough,
                None => idle_enough && t.file.metadata()?.nlink() == 0,
            };
            if !finished {
                self.caught_up = true;
                return Ok(());
            }
            if let Some(mut old) = self.file.take() {
                flush_final_line(&mut old, &mut self.stats, out);
                self.last_position = Some(old.position());
            }
            self.rotated = false;
            if at_path.is_none() {
                self.caught_up = true;
                return Ok(());
            }
            // Move on to the file now at the path, from the start.
            self.acquire(at_path, false)?;
        }
    }

    /// Opens the file to follow when none is open: the saved position's file
    /// (at the path, or rotated next to it), else the file at the path.
    fn acquire(&mut self, at_path: Option<PathId>, first_poll: bool) -> io::Result<()> {
        if let Some(saved) = self.resume
            && !at_path.is_some_and(|a| a.dev == saved.dev && a.ino == saved.inode)
            && let Some(t) = self.open_rotated_sibling(&saved)?
        {
            self.resume = None;
            self.file = Some(t);
            self.rotated = true;
            self.stats.rotations += 1;
            return Ok(());
        }
        let Some(id) = at_path else {
            return Ok(());
        };
        if !id.is_file {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let Some(mut t) = open_tracked(&self.path, self.config.fingerprint_len)? else {
            return Ok(()); // vanished between stat and open
        };
        let start = match self.resume.take() {
            Some(saved) if saved.dev == t.dev && saved.inode == t.ino => {
                if id.size < saved.offset {
                    self.stats.truncations += 1; // truncated while we were down
                    0
                } else if fingerprint_matches(&t.file, saved.fingerprint)? {
                    saved.offset
                } else {
                    self.stats.resume_fallbacks += 1; // inode reused / rewritten
                    0
                }
            }
            Some(_) => {
                self.stats.resume_fallbacks += 1; // replaced; old file not found
                0
            }
            None if first_poll && self.config.start_at_end => t.file.metadata()?.len(),
            None => 0,
        };
        if start > 0 {
            t.file.seek(SeekFrom::Start(start))?;
            t.offset = start;
        }
        self.file = Some(t);
        self.rotated = false;
        Ok(())
    }

    /// Looks for the saved file under a rotated name (`<name>*` in the same
    /// directory) and opens it at the saved offset if it still matches.
    fn open_rotated_sibling(&self, saved: &Position) -> io::Result<Option<Tracked>> {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return Ok(None);
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let Ok(entries) = fs::read_dir(dir) else {
            return Ok(None);
        };
        for entry in entries.take(4096).flatten() {
            let fname = entry.file_name();
            if fname == name || !fname.as_bytes().starts_with(name.as_bytes()) {
                continue;
            }
            let candidate = entry.path();
            let Ok(meta) = fs::metadata(&candidate) else {
                continue;
            };
            if !meta.is_file() || meta.dev() != saved.dev || meta.ino() != saved.inode {
                continue;
            }
            let Some(mut t) = open_tracked(&candidate, self.config.fingerprint_len)? else {
                continue;
            };
            if t.dev != saved.dev
                || t.ino != saved.inode
                || meta.len() < saved.offset
                || !fingerprint_matches(&t.file, saved.fingerprint)?
            {
                return Ok(None);
            }
            t.file.seek(SeekFrom::Start(saved.offset))?;
            t.offset = saved.offset;
            return Ok(Some(t));
        }
        Ok(None)
    }
}

fn stat_path(path: &Path) -> io::Result<Option<PathId>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(PathId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            is_file: m.is_file(),
        })),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Opens a regular file at offset 0; `None` if it does not exist.
fn open_tracked(path: &Path, fp_len: usize) -> io::Result<Option<Tracked>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let fp = compute_fingerprint(&file, fp_len)?;
    Ok(Some(Tracked {
        file,
        dev: meta.dev(),
        ino: meta.ino(),
        offset: 0,
        fp,
        pending: Vec::new(),
        discarding: false,
        idle_polls: 0,
    }))
}

/// Reads up to `len` bytes from offset 0 (fewer at EOF).
fn read_prefix(file: &File, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        let Some(dst) = buf.get_mut(filled..) else {
            break;
        };
        match file.read_at(dst, filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

fn compute_fingerprint(file: &File, fp_len: usize) -> io::Result<Fingerprint> {
    let prefix = read_prefix(file, fp_len)?;
    Ok(Fingerprint {
        len: u32::try_from(prefix.len()).unwrap_or(u32::MAX),
        hash: fnv1a64(&prefix),
    })
}

fn fingerprint_matches(file: &File, fp: Fingerprint) -> io::Result<bool> {
    let want = fp.len as usize;
    if want > MAX_FINGERPRINT_LEN {
        return Ok(false);
    }
    let prefix = read_prefix(file, want)?;
    Ok(prefix.len() == want && fnv1a64(&prefix) == fp.hash)
}

/// Detects copytruncate / in-place rewrite and restarts at 0; refreshes a
/// short fingerprint as the file grows.
fn check_truncation(
    t: &mut Tracked,
    config: &TailConfig,
    stats: &mut TailStats,
    out: &mut Vec<LogLine>,
) -> io::Result<()> {
    let size = t.file.metadata()?.len();
    let rewritten = size < t.offset || (t.fp.len > 0 && !fingerprint_matches(&t.file, t.fp)?);
    if rewritten {
        stats.truncations += 1;
        if !t.discarding && !t.pending.is_empty() {
            let bytes = std::mem::take(&mut t.pending);
            push_line(out, stats, bytes, true);
        }
        t.pending.clear();
        t.discarding = false;
        t.file.seek(SeekFrom::Start(0))?;
        t.offset = 0;
        t.fp = compute_fingerprint(&t.file, config.fingerprint_len)?;
    } else if (t.fp.len as usize) < config.fingerprint_len && size > u64::from(t.fp.len) {
        t.fp = compute_fingerprint(&t.file, config.fingerprint_len)?;
    }
    Ok(())
}

/// Reads until EOF or the budget is spent. Returns (reached EOF, bytes read).
fn read_available(
    t: &mut Tracked,
    budget: &mut usize,
    scratch: &mut [u8],
    config: &TailConfig,
    stats: &mut TailStats,
    out: &mut Vec<LogLine>,
) -> io::Result<(bool, usize)> {
    let mut total = 0;
    loop {
        if *budget == 0 {
            return Ok((false, total));
        }
        let want = (*budget).min(scratch.len());
        let Some(buf) = scratch.get_mut(..want) else {
            return Ok((false, total));
        };
        let n = match t.file.read(buf) {
            Ok(0) => return Ok((true, total)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        t.offset += n as u64;
        *budget = budget.saturating_sub(n);
        total += n;
        stats.bytes_read += n as u64;
        split_lines(
            t,
            buf.get(..n).unwrap_or_default(),
            config.max_line_len,
            stats,
            out,
        );
    }
}

/// Splits `data` into lines, holding a trailing partial line in `t.pending`.
fn split_lines(
    t: &mut Tracked,
    data: &[u8],
    max: usize,
    stats: &mut TailStats,
    out: &mut Vec<LogLine>,
) {
    let mut rest = data;
    while !rest.is_empty() {
        if let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let (seg, tail) = rest.split_at(i);
            rest = tail.get(1..).unwrap_or_default();
            if t.discarding {
                t.discarding = false; // the over-long line ends here
                continue;
            }
            complete_line(&mut t.pending, seg, max, stats, out);
        } else {
            if !t.discarding {
                let room = max.saturating_sub(t.pending.len());
                if rest.len() > room {
                    t.pending
                        .extend_from_slice(rest.get(..room).unwrap_or_default());
                    let bytes = std::mem::take(&mut t.pending);
                    stats.long_lines += 1;
                    push_line(out, stats, bytes, true);
                    t.discarding = true;
                } else {
                    t.pending.extend_from_slice(rest);
                }
            }
            break;
        }
    }
}

/// `pending + seg` is a complete line (its `\n` was consumed).
fn complete_line(
    pending: &mut Vec<u8>,
    seg: &[u8],
    max: usize,
    stats: &mut TailStats,
    out: &mut Vec<LogLine>,
) {
    let ends_cr = seg.last().or_else(|| pending.last()) == Some(&b'\r');
    let len = pending.len() + seg.len() - usize::from(ends_cr);
    let mut line = std::mem::take(pending);
    if len > max {
        let room = max.saturating_sub(line.len());
        line.extend_from_slice(seg.get(..room.min(seg.len())).unwrap_or_default());
        line.truncate(max);
        stats.long_lines += 1;
        push_line(out, stats, line, true);
    } else {
        line.extend_from_slice(seg);
        if ends_cr {
            line.pop();
        }
        push_line(out, stats, line, false);
    }
}

/// A rotated file is finished: its unterminated last line is complete.
fn flush_final_line(t: &mut Tracked, stats: &mut TailStats, out: &mut Vec<LogLine>) {
    if !t.discarding && !t.pending.is_empty() {
        let mut line = std::mem::take(&mut t.pending);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        push_line(out, stats, line, false);
    }
    t.discarding = false;
}

fn push_line(out: &mut Vec<LogLine>, stats: &mut TailStats, bytes: Vec<u8>, truncated: bool) {
    let valid_utf8 = std::str::from_utf8(&bytes).is_ok();
    stats.lines += 1;
    if !valid_utf8 {
        stats.non_utf8_lines += 1;
    }
    out.push(LogLine {
        bytes,
        truncated,
        valid_utf8,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::cursor::CursorStore;
    use std::io::Write;

    fn append(path: &Path, data: &[u8]) {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(data).unwrap();
    }

    fn cfg() -> TailConfig {
        TailConfig {
            start_at_end: false,
            ..TailConfig::default()
        }
    }

    fn poll(t: &mut FileTailer) -> Vec<String> {
        let mut out = Vec::new();
        t.poll(&mut out).unwrap();
        out.into_iter()
            .map(|l| String::from_utf8(l.bytes).unwrap())
            .collect()
    }

    /// Polls until caught up, collecting everything.
    fn drain(t: &mut FileTailer) -> Vec<String> {
        let mut all = Vec::new();
        for _ in 0..10_000 {
            all.extend(poll(t));
            if t.caught_up() {
                return all;
            }
        }
        panic!("never caught up");
    }

    #[test]
    fn appends_partial_lines_and_crlf() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("app.log");
        append(&p, b"one\ntwo\r\nthr");
        let mut t = FileTailer::open(&p, None, cfg());
        assert_eq!(poll(&mut t), ["one", "two"]);
        assert_eq!(t.state(), TailState::Active);
        // The partial line is held and not counted in the position.
        assert_eq!(t.position().unwrap().offset, 9);
        append(&p, b"ee");
        assert!(poll(&mut t).is_empty());
        append(&p, b"\r");
        assert!(poll(&mut t).is_empty());
        append(&p, b"\n\nfour\n");
        assert_eq!(poll(&mut t), ["three", "", "four"]);
        assert_eq!(
            t.position().unwrap().offset,
            fs::metadata(&p).unwrap().len()
        );
        assert!(t.caught_up());
        assert_eq!(t.stats().lines, 5);
    }

    #[test]
    fn first_start_skips_existing_content_by_default() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("app.log");
        append(&p, b"old history\n");
        let mut t = FileTailer::open(&p, None, TailConfig::default());
        assert!(poll(&mut t).is_empty());
        append(&p, b"new\n");
        assert_eq!(poll(&mut t), ["new"]);

        let mut t = FileTailer::open(&p, None, cfg());
        assert_eq!(poll(&mut t), ["old history", "new"]);
    }

    #[test]
    fn rename_rotation_drains_old_file_then_reads_new() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("app.log");
        let rotated = d.path().join("app.log.1");
        let mut writer = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .unwrap();
        writer.write_all(b"a1\na2\n").unwrap();
        let mut t = FileTailer::open(&p, None, cfg());
        assert_eq!(poll(&mut t), ["a1", "a2"]);

        fs::rename(&p, &rotated).unwrap();
        // The writer has not reopened yet: more lines go to the old file,
        // the last one without a newline.
        writer.write_all(b"a3\na4").unwrap();
        assert_eq!(poll(&mut t), ["a3"]);
        assert_eq!(t.state(), TailState::Draining);
        // Now the writer reopens: a new file at the path.
        writer.write_all(b" end\n").unwrap();
        drop(writer);
        append(&p, b"b1\nb2\n");
        assert_eq!(poll(&mut t), ["a4 end", "b1", "b2"]);
        assert_eq!(t.state(), TailState::Active);
        append(&p, b"b3\n");
        assert_eq!(poll(&mut t), ["b3"]);
        assert_eq!(t.stats().rotations, 1);
        let new_ino = fs::metadata(&p).unwrap().ino();
        assert_eq!(t.position().unwrap().inode, new_ino);
    }

    #[test]
    fn rotated_file_with_empty_successor_is_closed_after_idle_polls() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("app.log");
        append(&p, b"a1\n");
        let mut t = FileTailer::open(&p, None, cfg());
        assert_eq!(poll(&mut t), ["a1"]);
        fs::rename(&p, d.path().join("app.log.1")).unwrap();
        append(&d.path().join("app.log.1"), b"tail-without-newline");
        fs::File::create(&p).unwrap(); // new, empty file (logrotate `create`)
        assert_eq!(poll(&mut t), Vec::<String>::new());
        assert_eq!(t.state(), TailState::Draining);
        let mut got = Vec::new();
        for _ in 0..3 {
            got.extend(poll(&mut t));
        }
        assert_eq!(got, ["tail-without-newline"]);
        assert_eq!(t.state(), TailState::Active);
        append(&p, b"b1\n");
        assert_eq!(poll(&mut t), ["b1"]);
    }

    #[test]
    fn renamed_away_without_successor_keeps_following_old_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("app.log");
        let moved = d.path().join("app.log.old");
        append(&p, b"a1\n");
        let mut t = FileTailer::open(&p, None, cfg());
        assert_eq!(poll(&mut t), ["a1"]);
        fs::rename(&p, &moved).unwrap();
        for i in 0..5 {
            append(&moved, format!("x{i}\n").as_bytes());
            assert_eq!(poll(&mut t), [format!("x{i}")]);
            assert_eq!(t.state(), TailState::Draining);
        }
    }

    #[test]
    fn rename_and_rename_back_does_not_duplicate() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("app.log");
        let moved = d.path().join("app.log.tmp");
        append(&p, b"a1\n");
        let mut t = FileTailer::open(&p, None, cfg());
        assert_eq!(poll(&mut t), ["a1"]);
        fs::rename(&p, &moved).unwrap();
        assert!(poll(&mut t).is_empty());
        assert_eq!(t.state(), TailState::Draining);
        fs::rename(&moved, &p).unwrap();
        append(&p, b"a2\n");
        assert_eq!(poll(&mut t), ["a2"]);
        assert_eq!(t.state(), TailState::Active);
    }

    #[test]
    fn hostile_saved_position_is_harmless() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("app.log");
        append(&p, b"a1\n");
        let meta = fs::metadata(&p).unwrap();
        let saved = Position {
            dev: meta.dev(),
            inode: meta.ino(),
            offset: 0,
            fingerprint: Fingerprint {
                len: u32::MAX,
                hash: 0,
            },
        };
        let mut t = FileTailer::open(&p, Some(saved), cfg());
        assert_eq!(poll(&mut t), ["a1"]);
        assert_eq!(t.stats().resume_fallbacks, 1);
        let saved = Position {
            offset: u64::MAX,
            ..saved
        };
        let mut t = FileTailer::open(&p, Some(saved), cfg());
        assert_eq!(poll(&mut t), ["a1"]);
        assert_eq!(t.stats().truncations, 1);
    }

    #[test]
    fn copytruncate_restarts_from_zero() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("app.log");
        append(&p, b"first line that is long\nsecond line\npart");
        let mut t = FileTailer::open(&p, None, cfg());
        assert_eq!(poll(&mut t), ["first line that is long", "second line"]);
        // copytruncate: copy elsewhere, truncate in place, writer continues.
        fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&p, b"new 1\n");
        let mut out = Vec::new();
        t.poll(&mut out).unwrap();
        // The held partial line is flushed, flagged, then the new content.
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].bytes, b"part");
        assert!(out[0].truncated);
        assert_eq!(out[1].bytes, b"new 1");
        assert!(!out[1].truncated);
        assert_eq!(t.stats().truncations, 1);

        // Truncated and regrown past our offset between two polls: the
        // fingerprint catches it.
        fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&p, b"rewritten content that is longer than before\n");
        assert_eq!(
            poll(&mut t),
            ["rewritten content that is longer than before"]
        );
        assert_eq!(t.stats().truncations, 2);
        assert_eq!(t.stats().rotations, 0);
    }

    #[test]
    fn resume_after_restart_has_no_loss_and_no_duplicates() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("app.log");
        let store_path = d.path().join("cursors");
        append(&p, b"l1\nl2\nl3-part");
        let mut t = FileTailer::open(&p, None, cfg());
        assert_eq!(poll(&mut t), ["l1", "l2"]);
        let (mut store, _) = CursorStore::open(&store_path);
        store.set("file:app", t.position().unwrap().to_string());
        store.save().unwrap();
        drop(t); // "crash"

        append(&p, b"ial\nl4\n");
        let (store, status) = CursorStore::open(&store_path);
        assert_eq!(
            status,
            crate::logs::cursor::LoadStatus::Loaded { entries: 1 }
        );
        let pos: Position = store.get("file:app").unwrap().parse().unwrap();
        // start_at_end must not apply when resuming.
        let mut t = FileTailer::open(&p, Some(pos), TailConfig::default());
        assert_eq!(poll(&mut t), ["l3-partial", "l4"]);
        assert_eq!(t.stats().resume_fallbacks, 0);
    }

    #[test]
    fn resume_finds_the_rotated_file_and_drains_it_first() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("app.log");
        append(&p, b"a1\n");
        let mut t = FileTailer::open(&p, None, cfg());
        assert_eq!(poll(&mut t), ["a1"]);
        let pos = t.position().unwrap();
        drop(t);
        // While we were down: more lines, rotation, new file with lines.
        append(&p, b"a2\n");
        fs::rename(&p, d.path().join("app.log.1")).unwrap();
        append(&p, b"b1\n");
        let mut t = FileTailer::open(&p, Some(pos), cfg());
        assert_eq!(drain(&mut t), ["a2", "b1"]);
        assert_eq!(t.stats().resume_fallbacks, 0);
    }

    #[test]
    fn resume_against_a_different_file_starts_from_zero() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("app.log");
        append(&p, b"a1\na2\n");
        let mut t = FileTailer::open(&p, None, cfg());
        poll(&mut t);
        let pos = t.position().unwrap();
        drop(t);

        // Same inode, different content (as after inode reuse).
        let forged = Position {
            fingerprint: Fingerprint {
                len: pos.fingerprint.len,
                hash: pos.fingerprint.hash ^ 1,
            },
            ..pos
        };
        let mut t = FileTailer::open(&p, Some(forged), cfg());
        assert_eq!(poll(&mut t), ["a1", "a2"]);
        assert_eq!(t.stats().resume_fallbacks, 1);

        // Replaced by another file, old one gone.
        fs::remove_file(&p).unwrap();
        append(&p, b"c1\n");
        let mut t = FileTailer::open(&p, Some(pos), cfg());
        assert_eq!(poll(&mut t), ["c1"]);
        // A new inode is a fallback; a reused inode (common on tmpfs/ext4)
        // shows up as "shorter than the offset", i.e. a truncation.
        assert_eq!(t.stats().resume_fallbacks + t.stats().truncations, 1);

        // Same file, but shorter than the saved offset: truncated while down.
        let pos = t.position().unwrap();
        drop(t);
        fs::write(&p, b"").unwrap();
        append(&p, b"d\n");
        let mut t = FileTailer::open(&p, Some(pos), cfg());
        assert_eq!(poll(&mut t), ["d"]);
        assert_eq!(t.stats().truncations, 1);
    }

    #[test]
    fn missing_file_is_quiet_and_picked_up_when_it_appears() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("later.log");
        // Default config (start_at_end) must still read a file that appears
        // after start from its beginning.
        let mut t = FileTailer::open(&p, None, TailConfig::default());
        for _ in 0..3 {
            assert!(poll(&mut t).is_empty());
            assert_eq!(t.state(), TailState::Missing);
        }
        assert_eq!(t.position(), None);
        append(&p, b"hello\n");
        assert_eq!(poll(&mut t), ["hello"]);
        assert_eq!(t.state(), TailState::Active);

        // Deleted: drained, closed after idle polls, then missing; a new
        // file is read from the start.
        append(&p, b"bye\n");
        fs::remove_file(&p).unwrap();
        assert_eq!(poll(&mut t), ["bye"]);
        for _ in 0..3 {
            poll(&mut t);
        }
        assert_eq!(t.state(), TailState::Missing);
        assert!(t.position().is_some(), "last position is kept");
        append(&p, b"again\n");
        assert_eq!(poll(&mut t), ["again"]);

        // Missing parent directory is also just "missing".
        let mut t = FileTailer::open(d.path().join("no/such/dir.log"), None, cfg());
        assert!(poll(&mut t).is_empty());
        assert_eq!(t.state(), TailState::Missing);
    }

    #[test]
    fn one_megabyte_line_is_cut_flagged_and_bounded_per_poll() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big.log");
        let mut data = vec![b'a'; 1024 * 1024];
        data.extend_from_slice(b"\nnext\n");
        append(&p, &data);
        let config = TailConfig {
            max_bytes_per_poll: 100 * 1024,
            ..cfg()
        };
        let mut t = FileTailer::open(&p, None, config);
        let mut lines = Vec::new();
        let mut polls = 0;
        loop {
            let before = t.stats().bytes_read;
            t.poll(&mut lines).unwrap();
            assert!(t.stats().bytes_read - before <= 100 * 1024);
            polls += 1;
            if t.caught_up() {
                break;
            }
        }
        assert!(polls >= 10, "the budget must split the work: {polls}");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].bytes.len(), 64 * 1024);
        assert!(lines[0].truncated);
        assert_eq!(lines[1].bytes, b"next");
        assert!(!lines[1].truncated);
        assert_eq!(t.stats().long_lines, 1);
        assert_eq!(t.position().unwrap().offset, data.len() as u64);
    }

    #[test]
    fn line_of_exactly_max_len_is_not_flagged() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.log");
        let config = TailConfig {
            max_line_len: 8,
            ..cfg()
        };
        append(&p, b"12345678");
        let mut t = FileTailer::open(&p, None, config);
        let mut out = Vec::new();
        t.poll(&mut out).unwrap();
        assert!(out.is_empty());
        append(&p, b"\r\n123456789\n");
        t.poll(&mut out).unwrap();
        assert_eq!(out[0].bytes, b"12345678");
        assert!(!out[0].truncated);
        assert_eq!(out[1].bytes, b"12345678");
        assert!(out[1].truncated);
    }

    #[test]
    fn binary_garbage_round_trips_and_is_flagged() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("bin.log");
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let data: Vec<u8> = (0..200_000)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                // No '\r' so the reconstruction below is exact.
                match (s >> 24) as u8 {
                    b'\r' => 0,
                    b => b,
                }
            })
            .collect();
        append(&p, &data);
        append(&p, b"\n");
        let config = TailConfig {
            read_chunk: 777,
            max_bytes_per_poll: 10_000,
            ..cfg()
        };
        let mut t = FileTailer::open(&p, None, config);
        let mut lines = Vec::new();
        loop {
            t.poll(&mut lines).unwrap();
            if t.caught_up() {
                break;
            }
        }
        let mut rebuilt = Vec::new();
        for l in &lines {
            assert!(!l.truncated);
            rebuilt.extend_from_slice(&l.bytes);
            rebuilt.push(b'\n');
        }
        rebuilt.pop();
        assert_eq!(rebuilt, data);
        assert!(t.stats().non_utf8_lines > 0);
        assert_eq!(
            t.stats().non_utf8_lines,
            lines.iter().filter(|l| !l.valid_utf8).count() as u64
        );
    }

    #[test]
    fn unreadable_path_reports_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("dir.log");
        fs::create_dir(&p).unwrap();
        let mut t = FileTailer::open(&p, None, cfg());
        let mut out = Vec::new();
        assert!(t.poll(&mut out).is_err());
        assert_eq!(
            t.state(),
            TailState::Unreadable(io::ErrorKind::InvalidInput)
        );
        assert!(
            t.caught_up(),
            "callers looping on caught_up() must not spin"
        );
        for _ in 0..5 {
            assert!(t.poll(&mut out).is_ok(), "the same error is not repeated");
        }
        fs::remove_dir(&p).unwrap();
        append(&p, b"ok\n");
        assert_eq!(poll(&mut t), ["ok"]);
        assert_eq!(t.state(), TailState::Active);
    }

    #[test]
    fn position_string_round_trip_and_rejects_junk() {
        let pos = Position {
            dev: 2049,
            inode: u64::MAX,
            offset: 123_456,
            fingerprint: Fingerprint {
                len: 256,
                hash: 0x00ab_cdef_0123_4567,
            },
        };
        let s = pos.to_string();
        assert_eq!(
            s,
            "v1 2049 18446744073709551615 123456 256 00abcdef01234567"
        );
        assert_eq!(s.parse::<Position>(), Ok(pos));
        for junk in [
            "",
            "v2 1 2 3 4 5",
            "v1 1 2 3 4",
            "v1 1 2 3 4 5 6",
            "v1 -1 2 3 4 5",
            "v1 1 2 3 99999999999 5",
            "v1 1 2 3 4 xyz",
        ] {
            assert_eq!(
                junk.parse::<Position>(),
                Err(ParsePositionError),
                "{junk:?}"
            );
        }
    }
}
