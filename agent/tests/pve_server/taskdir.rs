//! Generates a `/var/log/pve/tasks/` directory in the real on-disk layout,
//! mimicking what PVE writes (`PVE/RESTEnvironment.pm` `active_workers`,
//! `pve-common` `INotify.pm` `write_active_workers`, `UPID.pm`):
//!
//! * `<H>/<UPID>`: the task log, `H` = last hex digit of the starttime field;
//!   the last line is `TASK OK` / `TASK WARNINGS: n` / `TASK ERROR: msg`.
//! * `active`: `<UPID> <saved>` per running task, `<UPID> <saved> <END> <status>`
//!   per recently finished one (≤ 25), rewritten via `active.tmp.<pid>` + rename.
//! * `index`: `<UPID> <END> <status>` appended when a finished task is saved;
//!   renamed to `index.1` once larger than 50 000 bytes.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Encodes a UPID exactly like `UPID.pm`.
pub fn upid_string(
    node: &str,
    pid: u32,
    pstart: u64,
    starttime: u64,
    task_type: &str,
    id: &str,
    user: &str,
) -> String {
    format!("UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{task_type}:{id}:{user}:")
}

/// Log sub-directory of a UPID (last hex digit of the starttime field).
pub fn subdir(upid: &str) -> String {
    upid.split(':')
        .nth(4)
        .and_then(|s| s.chars().last())
        .map(|c| c.to_ascii_uppercase().to_string())
        .unwrap_or_else(|| "0".to_owned())
}

#[derive(Debug, Clone)]
struct Entry {
    upid: String,
    saved: bool,
    end: Option<(u64, String)>,
}

/// A task directory plus PVE's bookkeeping of the `active` list.
#[derive(Debug)]
pub struct TaskDirSim {
    root: PathBuf,
    entries: Vec<Entry>,
    /// Rotation threshold for `index` (PVE: 50 000 bytes).
    pub max_index_bytes: u64,
}

impl TaskDirSim {
    /// Creates `root` and its 16 log sub-directories.
    pub fn create(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        for h in "0123456789ABCDEF".chars() {
            fs::create_dir_all(root.join(h.to_string()))?;
        }
        Ok(Self {
            root,
            entries: Vec::new(),
            max_index_bytes: 50_000,
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a task's log.
    pub fn log_path(&self, upid: &str) -> PathBuf {
        self.root.join(subdir(upid)).join(upid)
    }

    /// Writes (replaces) a task log.
    pub fn write_log(&self, upid: &str, lines: &[String]) -> io::Result<()> {
        let mut text = lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        fs::write(self.log_path(upid), text)
    }

    /// Appends raw bytes to a task log (for garbage tests).
    pub fn append_log_bytes(&self, upid: &str, bytes: &[u8]) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(upid))?;
        f.write_all(bytes)
    }

    /// A task started: log file with its first lines, `active` gains it.
    pub fn start(&mut self, upid: &str, first_lines: &[String]) -> io::Result<()> {
        self.write_log(upid, first_lines)?;
        self.entries.push(Entry {
            upid: upid.to_owned(),
            saved: false,
            end: None,
        });
        self.write_active()
    }

    /// A task finished: final log lines, archived to `index`, kept in
    /// `active` as finished (≤ 25 finished entries).
    pub fn finish(
        &mut self,
        upid: &str,
        endtime: u64,
        status: &str,
        log: &[String],
    ) -> io::Result<()> {
        self.write_log(upid, log)?;
        let line = format!("{upid} {endtime:08X} {status}\n");
        let index = self.root.join("index");
        {
            let mut f = OpenOptions::new().create(true).append(true).open(&index)?;
            f.write_all(line.as_bytes())?;
        }
        if fs::metadata(&index)?.len() > self.max_index_bytes {
            fs::rename(&index, self.root.join("index.1"))?;
        }
        match self.entries.iter_mut().find(|e| e.upid == upid) {
            Some(e) => {
                e.saved = true;
                e.end = Some((endtime, status.to_owned()));
            }
            None => self.entries.push(Entry {
                upid: upid.to_owned(),
                saved: true,
                end: Some((endtime, status.to_owned())),
            }),
        }
        // Keep all running tasks and the 25 newest finished ones.
        let mut finished: Vec<Entry> = self
            .entries
            .iter()
            .filter(|e| e.end.is_some())
            .cloned()
            .collect();
        if finished.len() > 25 {
            let drop = finished.len() - 25;
            finished.drain(..drop);
        }
        let running = self.entries.iter().filter(|e| e.end.is_none()).cloned();
        self.entries = running.chain(finished).collect();
        self.write_active()
    }

    /// Rewrites `active` atomically (tmp + rename), as `INotify.pm` does.
    pub fn write_active(&self) -> io::Result<()> {
        let mut raw = String::new();
        for e in &self.entries {
            let saved = u8::from(e.saved);
            match &e.end {
                None => raw.push_str(&format!("{} {saved}\n", e.upid)),
                Some((end, status)) => {
                    raw.push_str(&format!("{} {saved} {end:08X} {status}\n", e.upid))
                }
            }
        }
        let tmp = self.root.join(format!("active.tmp.{}", std::process::id()));
        fs::write(&tmp, raw)?;
        fs::rename(tmp, self.root.join("active"))
    }

    /// Appends a raw line to `active` (for garbage tests).
    pub fn append_active_raw(&self, line: &str) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("active"))?;
        f.write_all(line.as_bytes())
    }

    /// Appends a raw line to `index` (for garbage tests).
    pub fn append_index_raw(&self, line: &str) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("index"))?;
        f.write_all(line.as_bytes())
    }

    /// Forces a rotation (`index` → `index.1`).
    pub fn rotate(&self) -> io::Result<()> {
        fs::rename(self.root.join("index"), self.root.join("index.1"))
    }
}
