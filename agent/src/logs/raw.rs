//! The opt-in local store of raw log lines. Raw lines never leave the node:
//! this store is only read by `wingman-agent logs` on the node itself.
//!
//! One file per UTC day under `<state_dir>/raw/` (`day-<N>.tsv`, N = days
//! since 1970), each record `ts_ms TAB kind TAB source TAB priority TAB line`
//! with tabs, newlines and backslashes escaped. Retention (days) and a size
//! cap (oldest files removed first) run by themselves from the pipeline task.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const DAY_MS: i64 = 86_400_000;

/// A record read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// Line time, Unix ms.
    pub ts_ms: i64,
    /// journal, file or container.
    pub kind: String,
    /// Unit, path or container.
    pub source: String,
    /// Syslog priority, if known.
    pub priority: Option<u8>,
    /// The line.
    pub line: String,
}

/// The raw line store.
#[derive(Debug)]
pub struct RawStore {
    dir: PathBuf,
    retention_days: u32,
    max_bytes: u64,
    open_day: Option<(i64, fs::File)>,
}

fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

impl RawStore {
    /// Opens (creating, mode 0700) the store in `dir`.
    pub fn open(dir: &Path, retention_days: u32, max_bytes: u64) -> std::io::Result<Self> {
        crate::fsutil::ensure_private_dir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            retention_days: retention_days.max(1),
            max_bytes,
            open_day: None,
        })
    }

    fn day_file(&self, day: i64) -> PathBuf {
        self.dir.join(format!("day-{day}.tsv"))
    }

    /// Appends one line.
    pub fn append(
        &mut self,
        ts_ms: i64,
        kind: &str,
        source: &str,
        priority: Option<u8>,
        line: &str,
    ) -> std::io::Result<()> {
        let day = ts_ms.div_euclid(DAY_MS);
        if self.open_day.as_ref().is_none_or(|(d, _)| *d != day) {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(self.day_file(day))?;
            self.open_day = Some((day, f));
        }
        let mut rec = format!("{ts_ms}\t");
        escape(kind, &mut rec);
        rec.push('\t');
        escape(source, &mut rec);
        rec.push('\t');
        if let Some(p) = priority {
            rec.push_str(&p.to_string());
        }
        rec.push('\t');
        escape(line, &mut rec);
        rec.push('\n');
        if let Some((_, f)) = self.open_day.as_mut() {
            f.write_all(rec.as_bytes())?;
        }
        Ok(())
    }

    fn files(&self) -> Vec<(i64, PathBuf, u64)> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut v: Vec<(i64, PathBuf, u64)> = rd
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let day = name
                    .strip_prefix("day-")?
                    .strip_suffix(".tsv")?
                    .parse()
                    .ok()?;
                let len = e.metadata().ok()?.len();
                Some((day, e.path(), len))
            })
            .collect();
        v.sort();
        v
    }

    /// Applies retention and the size cap; returns the files removed.
    pub fn enforce(&mut self, now_ms: i64) -> usize {
        let today = now_ms.div_euclid(DAY_MS);
        let oldest_kept = today - i64::from(self.retention_days) + 1;
        let mut removed = 0;
        let mut files = self.files();
        files.retain(|(day, path, _)| {
            if *day < oldest_kept && fs::remove_file(path).is_ok() {
                removed += 1;
                return false;
            }
            true
        });
        let mut total: u64 = files.iter().map(|f| f.2).sum();
        for (day, path, len) in &files {
            if total <= self.max_bytes || *day == today {
                break;
            }
            if fs::remove_file(path).is_ok() {
                total = total.saturating_sub(*len);
                removed += 1;
            }
        }
        if self
            .open_day
            .as_ref()
            .is_some_and(|(d, _)| !self.day_file(*d).exists())
        {
            self.open_day = None;
        }
        removed
    }

    /// Reads records at or after `since_ms` matching `source` (a unit, path or
    /// container name; `None` for all), oldest first.
    pub fn read(
        dir: &Path,
        since_ms: i64,
        source: Option<&str>,
    ) -> std::io::Result<Vec<RawRecord>> {
        let store = Self {
            dir: dir.to_path_buf(),
            retention_days: 1,
            max_bytes: u64::MAX,
            open_day: None,
        };
        let mut out = Vec::new();
        for (day, path, _) in store.files() {
            if (day + 1) * DAY_MS < since_ms {
                continue;
            }
            let f = fs::File::open(path)?;
            for line in BufReader::new(f).lines() {
                let line = line?;
                let mut parts = line.splitn(5, '\t');
                let (Some(ts), Some(kind), Some(src), Some(prio), Some(text)) = (
                    parts.next(),
                    parts.next(),
                    parts.next(),
                    parts.next(),
                    parts.next(),
                ) else {
                    continue;
                };
                let Ok(ts_ms) = ts.parse::<i64>() else {
                    continue;
                };
                let src = unescape(src);
                if ts_ms < since_ms || source.is_some_and(|s| s != src) {
                    continue;
                }
                out.push(RawRecord {
                    ts_ms,
                    kind: unescape(kind),
                    source: src,
                    priority: prio.parse().ok(),
                    line: unescape(text),
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_filter_and_retention() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("raw");
        let mut s = RawStore::open(&dir, 2, u64::MAX).unwrap();
        let now = 100 * DAY_MS + 5_000;
        s.append(
            now - 3 * DAY_MS,
            "journal",
            "old.service",
            Some(6),
            "ancient",
        )
        .unwrap();
        s.append(
            now - 1000,
            "journal",
            "nginx.service",
            Some(3),
            "tab\there\nnewline \\ back",
        )
        .unwrap();
        s.append(now, "file", "/var/log/x.log", None, "plain")
            .unwrap();
        let all = RawStore::read(&dir, 0, None).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].line, "tab\there\nnewline \\ back");
        let nginx = RawStore::read(&dir, now - 3_600_000, Some("nginx.service")).unwrap();
        assert_eq!(nginx.len(), 1);
        assert_eq!(nginx[0].priority, Some(3));
        assert_eq!(s.enforce(now), 1, "the 3-day-old file goes");
        assert_eq!(RawStore::read(&dir, 0, None).unwrap().len(), 2);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn size_cap_removes_oldest_days_first() {
        let d = tempfile::tempdir().unwrap();
        let mut s = RawStore::open(d.path(), 30, 100).unwrap();
        let now = 50 * DAY_MS;
        for day in 0..3 {
            s.append(now - (3 - day) * DAY_MS, "file", "f", None, &"x".repeat(80))
                .unwrap();
        }
        s.append(now, "file", "f", None, "today").unwrap();
        s.enforce(now);
        let left = RawStore::read(d.path(), 0, None).unwrap();
        assert!(left.iter().any(|r| r.line == "today"));
        assert!(left.len() <= 2, "{}", left.len());
    }
}
