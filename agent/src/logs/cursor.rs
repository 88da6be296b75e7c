//! Persisted source positions: journal cursors and file offsets.
//!
//! A [`CursorStore`] is a small string → string map saved to one file. Keys
//! name a source (`journal`, `file:/var/log/syslog`); values are opaque
//! position strings (a journald `__CURSOR`, a [`super::tail::Position`]).
//!
//! # Crash consistency
//!
//! [`CursorStore::save`] writes a temporary file in the same directory with
//! mode 0600, fsyncs it, renames it over the target and fsyncs the directory.
//! A crash leaves either the old or the new file, never a mix. The caller must
//! save a position only *after* the facts derived from the lines before it are
//! in the spool (security design §2.3 rule 2): a crash then re-reads a little
//! (at-least-once), it never skips.
//!
//! # File format (version 1)
//!
//! ```text
//! wingman-cursors v1
//! <key>\t<value>
//! ...
//! end <entry count> <FNV-1a 64 of every preceding byte, 16 hex digits>
//! ```
//!
//! Keys and values escape `\` as `\\`, tab as `\t`, LF as `\n`, CR as `\r`
//! and other ASCII control bytes as `\xHH`, so any string round-trips and
//! every record is one line. The trailer catches truncation and bit flips.
//!
//! # Corrupt or missing files
//!
//! [`CursorStore::open`] never fails: a missing file is a first start, a
//! corrupt or unreadable one starts fresh, and the returned [`LoadStatus`]
//! says which so the caller can log a warning. A corrupt file is moved aside
//! to `<path>.corrupt` (best effort) so it can be inspected and the next save
//! does not destroy the evidence.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// First line of a version-1 file.
const HEADER: &str = "wingman-cursors v1";

/// Files larger than this are treated as corrupt (positions are tiny; a huge
/// file means something else was written there).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// File mode of the saved file and its temporary.
const FILE_MODE: u32 = 0o600;

/// What [`CursorStore::open`] found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadStatus {
    /// The file was read and verified.
    Loaded {
        /// Number of positions loaded.
        entries: usize,
    },
    /// No file: first start. Not a warning.
    Missing,
    /// The file exists but failed to parse or verify; starting fresh.
    Corrupt {
        /// Human-readable reason, including where the file was moved.
        reason: String,
    },
    /// The file could not be read (permissions, I/O error); starting fresh.
    Unreadable {
        /// The I/O error as text.
        error: String,
    },
}

impl LoadStatus {
    /// A warning to log, or `None` when loading went as expected.
    pub fn warning(&self) -> Option<String> {
        match self {
            Self::Loaded { .. } | Self::Missing => None,
            Self::Corrupt { reason } => {
                Some(format!("cursor file corrupt, starting fresh: {reason}"))
            }
            Self::Unreadable { error } => {
                Some(format!("cursor file unreadable, starting fresh: {error}"))
            }
        }
    }

    /// `true` when positions were lost (corrupt or unreadable file).
    pub fn is_fresh_start_after_error(&self) -> bool {
        matches!(self, Self::Corrupt { .. } | Self::Unreadable { .. })
    }
}

/// A string → string map of source positions, saved atomically.
#[derive(Debug, Clone)]
pub struct CursorStore {
    path: PathBuf,
    entries: BTreeMap<String, String>,
    dirty: bool,
}

impl CursorStore {
    /// Loads the store at `path`. Never fails; see [`LoadStatus`].
    pub fn open(path: impl Into<PathBuf>) -> (Self, LoadStatus) {
        let path = path.into();
        let (entries, status) = match read_bounded(&path) {
            Ok(None) => (BTreeMap::new(), LoadStatus::Missing),
            Ok(Some(bytes)) => match decode(&bytes) {
                Ok(entries) => {
                    let n = entries.len();
                    (entries, LoadStatus::Loaded { entries: n })
                }
                Err(why) => {
                    let reason = quarantine(&path, &why);
                    (BTreeMap::new(), LoadStatus::Corrupt { reason })
                }
            },
            Err(e) if e.kind() == io::ErrorKind::FileTooLarge => {
                let reason = quarantine(&path, &e.to_string());
                (BTreeMap::new(), LoadStatus::Corrupt { reason })
            }
            Err(e) => (
                BTreeMap::new(),
                LoadStatus::Unreadable {
                    error: e.to_string(),
                },
            ),
        };
        let store = Self {
            path,
            entries,
            dirty: false,
        };
        (store, status)
    }

    /// The file this store saves to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The position saved under `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// Records a position in memory; call [`save`](Self::save) to persist.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        if self.entries.get(&key) != Some(&value) {
            self.entries.insert(key, value);
            self.dirty = true;
        }
    }

    /// Forgets a position (for a source removed from the configuration).
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let old = self.entries.remove(key);
        if old.is_some() {
            self.dirty = true;
        }
        old
    }

    /// All positions, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of positions.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` when no position is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `true` when there are changes not yet saved.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Writes the store atomically (tmp 0600 → fsync → rename → fsync dir).
    ///
    /// On error the previous file is intact and the store stays dirty.
    pub fn save(&mut self) -> io::Result<()> {
        let bytes = encode(&self.entries);
        write_atomic(&self.path, &bytes)?;
        self.dirty = false;
        Ok(())
    }

    /// Saves only when something changed; returns whether it wrote.
    pub fn save_if_dirty(&mut self) -> io::Result<bool> {
        if self.dirty {
            self.save()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }
}

/// Reads at most [`MAX_FILE_BYTES`]; `Ok(None)` when the file does not exist.
fn read_bounded(path: &Path) -> io::Result<Option<Vec<u8>>> {
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
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    Ok(Some(bytes))
}

/// Moves a corrupt file to `<path>.corrupt` and returns the reason text.
fn quarantine(path: &Path, why: &str) -> String {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".corrupt");
    let aside = PathBuf::from(aside);
    match fs::rename(path, &aside) {
        Ok(()) => format!("{why} (moved to {})", aside.display()),
        Err(e) => format!("{why} (could not move aside: {e})"),
    }
}

/// Serialises entries in the version-1 format.
fn encode(entries: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = String::with_capacity(64 + entries.len() * 64);
    out.push_str(HEADER);
    out.push('\n');
    for (k, v) in entries {
        escape_into(&mut out, k);
        out.push('\t');
        escape_into(&mut out, v);
        out.push('\n');
    }
    let sum = fnv1a64(out.as_bytes());
    // Writing to a String cannot fail.
    let _ = writeln!(out, "end {} {sum:016x}", entries.len());
    out.into_bytes()
}

/// Parses and verifies a version-1 file.
fn decode(bytes: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let body_end = text
        .strip_suffix('\n')
        .and_then(|t| t.rfind('\n'))
        .map(|i| i + 1)
        .ok_or_else(|| "too short or truncated".to_string())?;
    let (body, trailer) = text.split_at(body_end);
    let trailer = trailer.trim_end_matches('\n');
    let mut parts = trailer.split(' ');
    let (Some("end"), Some(count), Some(sum), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("missing end trailer (truncated?)".into());
    };
    let count: usize = count.parse().map_err(|_| "bad entry count".to_string())?;
    let sum = u64::from_str_radix(sum, 16).map_err(|_| "bad checksum field".to_string())?;
    if fnv1a64(body.as_bytes()) != sum {
        return Err("checksum mismatch".into());
    }
    let mut lines = body.split_terminator('\n');
    if lines.next() != Some(HEADER) {
        return Err("unknown header or version".into());
    }
    let mut entries = BTreeMap::new();
    for (i, line) in lines.enumerate() {
        let (k, v) = line
            .split_once('\t')
            .ok_or_else(|| format!("record {} has no tab", i + 1))?;
        let k = unescape(k).ok_or_else(|| format!("record {} key: bad escape", i + 1))?;
        let v = unescape(v).ok_or_else(|| format!("record {} value: bad escape", i + 1))?;
        if entries.insert(k, v).is_some() {
            return Err(format!("record {} duplicates a key", i + 1));
        }
    }
    if entries.len() != count {
        return Err(format!(
            "trailer says {count} records, found {}",
            entries.len()
        ));
    }
    Ok(entries)
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c.is_ascii_control() {
            return None; // raw control bytes are never written
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '\\' => out.push('\\'),
            't' => out.push('\t'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            'x' => {
                let hi = chars.next()?.to_digit(16)?;
                let lo = chars.next()?.to_digit(16)?;
                let b = u8::try_from(hi * 16 + lo).ok()?;
                if !b.is_ascii_control() {
                    return None;
                }
                out.push(char::from(b));
            }
            _ => return None,
        }
    }
    Some(out)
}

/// FNV-1a, 64 bit: tiny, std-only, good enough to detect corruption.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// tmp (0600, same dir) → write → fsync → rename → fsync dir.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);

    let result = (|| {
        // A stale temporary from a crashed run with the same pid: remove it
        // and create afresh (create_new never follows a planted symlink).
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        // The umask can only remove bits; set the mode explicitly anyway.
        f.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    // Make the rename durable. Some file systems refuse fsync on a directory
    // (EINVAL); the data is already in place, so only real errors count.
    match File::open(dir).and_then(|d| d.sync_all()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn missing_file_is_a_quiet_fresh_start() {
        let d = dir();
        let (s, status) = CursorStore::open(d.path().join("cursors"));
        assert_eq!(status, LoadStatus::Missing);
        assert!(status.warning().is_none());
        assert!(s.is_empty());
        assert!(!s.is_dirty());
    }

    #[test]
    fn round_trips_awkward_keys_and_values() {
        let d = dir();
        let p = d.path().join("cursors");
        let pairs = [
            ("journal", "s=abc;i=1f;b=0123;m=9;t=5f0;x=77"),
            ("file:/var/log/a b\tc", "v1 2049 1234 99 256 00ff"),
            ("weird\nkey\\", "value with \r\n and \\x41 and \u{7f}\u{1}"),
            ("", ""),
            ("unicode ✓", "ünïcödé = ok"),
        ];
        let (mut s, _) = CursorStore::open(&p);
        for (k, v) in pairs {
            s.set(k, v);
        }
        assert!(s.is_dirty());
        s.save().unwrap();
        assert!(!s.is_dirty());

        let (s2, status) = CursorStore::open(&p);
        assert_eq!(status, LoadStatus::Loaded { entries: 5 });
        for (k, v) in pairs {
            assert_eq!(s2.get(k), Some(v), "key {k:?}");
        }
        // Every record is one line: header + 5 records + trailer.
        let text = fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 7);
    }

    #[test]
    fn save_sets_mode_0600_and_leaves_no_temp_files() {
        let d = dir();
        let p = d.path().join("cursors");
        let (mut s, _) = CursorStore::open(&p);
        s.set("journal", "c1");
        s.save().unwrap();
        s.set("journal", "c2");
        s.save().unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("cursors")]);
        assert_eq!(CursorStore::open(&p).0.get("journal"), Some("c2"));
    }

    #[test]
    fn stale_temp_file_from_a_crash_is_ignored_and_replaced() {
        let d = dir();
        let p = d.path().join("cursors");
        let stale = d
            .path()
            .join(format!(".cursors.tmp.{}", std::process::id()));
        fs::write(&stale, b"half written garbage").unwrap();
        let (mut s, status) = CursorStore::open(&p);
        assert_eq!(status, LoadStatus::Missing);
        s.set("k", "v");
        s.save().unwrap();
        assert!(!stale.exists());
        assert_eq!(CursorStore::open(&p).0.get("k"), Some("v"));
    }

    #[test]
    fn save_if_dirty_skips_unchanged_state() {
        let d = dir();
        let p = d.path().join("cursors");
        let (mut s, _) = CursorStore::open(&p);
        assert!(!s.save_if_dirty().unwrap());
        assert!(!p.exists());
        s.set("a", "1");
        assert!(s.save_if_dirty().unwrap());
        s.set("a", "1"); // same value: not dirty
        assert!(!s.save_if_dirty().unwrap());
        assert_eq!(s.remove("a").as_deref(), Some("1"));
        assert!(s.save_if_dirty().unwrap());
        assert_eq!(CursorStore::open(&p).1, LoadStatus::Loaded { entries: 0 });
    }

    fn assert_corrupt(bytes: &[u8]) {
        let d = dir();
        let p = d.path().join("cursors");
        fs::write(&p, bytes).unwrap();
        let (s, status) = CursorStore::open(&p);
        assert!(
            matches!(status, LoadStatus::Corrupt { .. }),
            "{status:?} for {:?}",
            String::from_utf8_lossy(bytes)
        );
        assert!(status.warning().is_some());
        assert!(status.is_fresh_start_after_error());
        assert!(s.is_empty());
        // Moved aside, so a later save cannot destroy the evidence.
        assert!(!p.exists());
        assert_eq!(fs::read(d.path().join("cursors.corrupt")).unwrap(), bytes);
    }

    #[test]
    fn corrupt_files_start_fresh_and_are_quarantined() {
        let mut good = BTreeMap::new();
        good.insert("journal".to_string(), "cursor".to_string());
        good.insert("file:x".to_string(), "pos".to_string());
        let good = encode(&good);

        assert_corrupt(b"");
        assert_corrupt(b"\xff\xfe binary");
        assert_corrupt(b"wingman-cursors v1\n");
        // Truncated anywhere.
        for cut in [1, 10, good.len() / 2, good.len() - 1] {
            assert_corrupt(&good[..cut]);
        }
        // A single flipped bit.
        let mut flipped = good.clone();
        flipped[22] ^= 0x01;
        assert_corrupt(&flipped);
        // Unknown version with a valid checksum.
        let body = "wingman-cursors v9\nk\tv\n";
        let v9 = format!("{body}end 1 {:016x}\n", fnv1a64(body.as_bytes()));
        assert_corrupt(v9.as_bytes());
        // Bad escape with a valid checksum.
        let body = "wingman-cursors v1\nk\tv\\q\n";
        let bad = format!("{body}end 1 {:016x}\n", fnv1a64(body.as_bytes()));
        assert_corrupt(bad.as_bytes());
        // Wrong count.
        let body = "wingman-cursors v1\nk\tv\n";
        let bad = format!("{body}end 2 {:016x}\n", fnv1a64(body.as_bytes()));
        assert_corrupt(bad.as_bytes());
    }

    #[test]
    fn oversized_file_is_corrupt_not_read_whole() {
        let d = dir();
        let p = d.path().join("cursors");
        let f = File::create(&p).unwrap();
        f.set_len(MAX_FILE_BYTES + 10).unwrap();
        let (_, status) = CursorStore::open(&p);
        assert!(matches!(status, LoadStatus::Corrupt { .. }), "{status:?}");
    }

    #[test]
    fn unreadable_path_starts_fresh_with_warning() {
        let d = dir();
        // A directory where the file should be.
        let p = d.path().join("cursors");
        fs::create_dir(&p).unwrap();
        let (mut s, status) = CursorStore::open(&p);
        assert!(
            matches!(status, LoadStatus::Unreadable { .. }),
            "{status:?}"
        );
        assert!(status.warning().is_some());
        s.set("k", "v");
        assert!(s.save().is_err());
        assert!(s.is_dirty(), "a failed save keeps the store dirty");
    }

    #[test]
    fn save_into_missing_directory_fails_cleanly() {
        let d = dir();
        let (mut s, _) = CursorStore::open(d.path().join("nope/cursors"));
        s.set("k", "v");
        assert!(s.save().is_err());
    }

    #[test]
    fn escape_round_trip_for_every_ascii_byte() {
        let all: String = (0u8..=127).map(char::from).collect();
        let mut esc = String::new();
        escape_into(&mut esc, &all);
        assert!(!esc.contains('\n') && !esc.contains('\t'));
        assert_eq!(unescape(&esc).as_deref(), Some(all.as_str()));
        assert_eq!(
            unescape("\\x41"),
            None,
            "printable bytes are never \\x-escaped"
        );
        assert_eq!(unescape("\\"), None);
        assert_eq!(unescape("\\x0"), None);
    }
}
