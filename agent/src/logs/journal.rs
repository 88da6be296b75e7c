//! The systemd journal, read from `journalctl --output=export`.
//!
//! The agent spawns `journalctl` with [`journalctl_args`] and feeds its
//! stdout, in whatever chunks the pipe delivers, into an [`ExportParser`].
//! Complete entries come out as [`JournalEntry`] values that keep only the
//! handful of fields the summariser needs; everything else is dropped while
//! parsing and never buffered.
//!
//! # Export format (<https://systemd.io/JOURNAL_EXPORT_FORMATS/>)
//!
//! * An entry is a run of fields ended by an empty line.
//! * A printable field is `NAME=value\n`.
//! * Any other field (newline, control bytes, invalid UTF-8) is
//!   `NAME\n` + 64-bit little-endian length + raw bytes + `\n`.
//! * `journalctl` writes `__CURSOR`, `__REALTIME_TIMESTAMP`,
//!   `__MONOTONIC_TIMESTAMP` and `_BOOT_ID` first, then the data fields.
//!
//! # Robustness
//!
//! * **Bounded memory.** Kept fields are capped ([`ParserConfig`]); the excess
//!   is dropped and counted. Unkept fields are streamed past without copying.
//!   A binary length above [`ParserConfig::max_binary_len`] is treated as
//!   garbage, never as an allocation size.
//! * **Resynchronisation.** A malformed line before the first field of an
//!   entry is skipped alone (so a stray banner line costs nothing); a
//!   malformed line or a bad binary field inside an entry drops the entry and
//!   skips to the next empty line. Each incident yields one
//!   [`ParseError`] and is counted in [`ParserStats`].
//! * **Chunking.** Results do not depend on how the input is split
//!   (tested byte-by-byte and with random chunk sizes).
//!
//! # Where to start (first start vs. resume)
//!
//! With a saved cursor the agent resumes with `--after-cursor=<c>`: the
//! entry the cursor names was already processed, the next one is the first
//! new one, so a restart neither skips nor double-counts. `--no-tail` is
//! needed with it: in follow mode `journalctl` otherwise limits the first
//! burst to 10 entries (`arg_lines`), delaying the rest until a new entry
//! arrives.
//!
//! Without a cursor (first start, or the cursor was rejected) the agent
//! starts **at the end** with `--lines=0`: it must not summarise years of
//! history on install. `--lines=0` seeks to the tail without depending on
//! the clock, unlike `--since=now`, which would also lose entries written
//! between "now" and the seek on a slow start.
//!
//! Persist `entry.cursor` only after the facts derived from the entry are in
//! the spool (security design §2.3 rule 2).

use std::borrow::Cow;
use std::fmt;

/// Field names kept from each entry, passed as `--output-fields` so
/// journalctl does not even send the rest (`_CMDLINE`, `COREDUMP`, …).
/// `__CURSOR`, `__REALTIME_TIMESTAMP` and `_BOOT_ID` are always printed by
/// `journalctl -o export`, so they need not be listed. Needs systemd ≥ 236
/// (Debian 10 / PVE 6 and later); the parser drops unlisted fields anyway.
pub const OUTPUT_FIELDS: &str = "MESSAGE,PRIORITY,_SYSTEMD_UNIT,SYSLOG_IDENTIFIER,_PID,_TRANSPORT";

/// Longest field name accepted (journald's own limit is 64).
const MAX_NAME_LEN: usize = 64;

/// Builds the `journalctl` argument list (without the program name).
///
/// * Always: `--output=export --output-fields=… --follow --no-pager --quiet`.
///   `--quiet` keeps banner lines (`-- Logs begin at …`, printed to stdout by
///   some versions in follow mode) out of the stream.
/// * Resuming (`cursor` is a plausible cursor): `--no-tail
///   --after-cursor=<cursor>`.
/// * Otherwise: `--lines=0` (start at the end; see the module docs).
/// * One `--unit=<u>` per configured unit (OR-ed by journalctl); empty names
///   and names with NUL or newline are dropped. Each value is a separate
///   argv element, so no shell quoting is involved.
///
/// If `journalctl` exits at once with "Failed to seek to cursor", the cursor
/// is unusable: drop it, report it, and restart without one.
pub fn journalctl_args(cursor: Option<&str>, units: &[String]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--output=export".into(),
        format!("--output-fields={OUTPUT_FIELDS}"),
        "--follow".into(),
        "--no-pager".into(),
        "--quiet".into(),
    ];
    match cursor.filter(|c| is_plausible_cursor(c)) {
        Some(c) => {
            args.push("--no-tail".into());
            args.push(format!("--after-cursor={c}"));
        }
        None => args.push("--lines=0".into()),
    }
    for unit in units {
        if !unit.is_empty() && !unit.bytes().any(|b| b == 0 || b == b'\n') {
            args.push(format!("--unit={unit}"));
        }
    }
    args
}

/// A cheap sanity check of a saved cursor: non-empty printable ASCII of sane
/// length. (Real cursors look like `s=…;i=…;b=…;m=…;t=…;x=…`; journalctl is
/// the judge of the rest.)
pub fn is_plausible_cursor(cursor: &str) -> bool {
    !cursor.is_empty() && cursor.len() <= 1024 && cursor.bytes().all(|b| b.is_ascii_graphic())
}

/// One journal entry, reduced to the fields Wingman uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// `__CURSOR`: persist it to resume after this entry.
    pub cursor: String,
    /// `__REALTIME_TIMESTAMP`: microseconds since the Unix epoch.
    pub realtime_us: u64,
    /// `MESSAGE`, raw (may be invalid UTF-8); empty when absent.
    pub message: Vec<u8>,
    /// `true` when `MESSAGE` was longer than the cap and was cut.
    pub message_truncated: bool,
    /// `PRIORITY` 0 (emerg) ..= 7 (debug), when present and valid.
    pub priority: Option<u8>,
    /// `_SYSTEMD_UNIT`.
    pub unit: Option<String>,
    /// `SYSLOG_IDENTIFIER`.
    pub identifier: Option<String>,
    /// `_PID`.
    pub pid: Option<u32>,
    /// `_TRANSPORT` (`kernel`, `syslog`, `journal`, `stdout`, `audit`, `driver`).
    pub transport: Option<String>,
    /// `_BOOT_ID`.
    pub boot_id: Option<String>,
}

impl JournalEntry {
    /// The message as text, replacing invalid UTF-8.
    pub fn message_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.message)
    }
}

/// Why an entry (or a stretch of input) was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// A line that is neither `NAME=value` nor a binary field header.
    MalformedLine,
    /// A binary field declared a length above the configured maximum.
    OversizeLength {
        /// The declared length.
        len: u64,
    },
    /// The byte after a binary field's data was not `\n`.
    BadBinaryTerminator,
    /// A new entry (`__CURSOR`) started before the previous one ended;
    /// journalctl does this when it cannot read an entry to the end.
    UnterminatedEntry,
    /// A required field is absent.
    MissingField(&'static str),
    /// A required field is unusable (not a number, not UTF-8, truncated).
    InvalidField(&'static str),
    /// The input ended in the middle of an entry (see [`ExportParser::finish`]).
    UnexpectedEof,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MalformedLine => f.write_str("malformed line in journal export stream"),
            Self::OversizeLength { len } => {
                write!(f, "binary field length {len} exceeds the maximum")
            }
            Self::BadBinaryTerminator => f.write_str("binary field not followed by newline"),
            Self::UnterminatedEntry => f.write_str("entry ended without an empty line"),
            Self::MissingField(name) => write!(f, "entry has no {name} field"),
            Self::InvalidField(name) => write!(f, "entry has an invalid {name} field"),
            Self::UnexpectedEof => f.write_str("input ended inside an entry"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Limits for [`ExportParser`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParserConfig {
    /// Bytes of `MESSAGE` kept; the rest is dropped and counted.
    pub max_message_len: usize,
    /// Bytes kept of each other kept field (cursor, unit, …).
    pub max_meta_len: usize,
    /// Largest binary field length believed; a larger one is garbage and
    /// triggers resynchronisation. journald itself caps fields below 1 GiB.
    pub max_binary_len: u64,
}

impl Default for ParserConfig {
    fn default() -> Self {
        Self {
            max_message_len: 64 * 1024,
            max_meta_len: 4 * 1024,
            max_binary_len: 1 << 30,
        }
    }
}

/// Counters, monotonically increasing over the parser's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParserStats {
    /// Entries returned as `Ok`.
    pub entries_parsed: u64,
    /// Kept fields cut to their cap.
    pub fields_truncated: u64,
    /// Bytes dropped from those fields.
    pub bytes_truncated: u64,
    /// Bytes discarded while resynchronising after an error.
    pub bytes_skipped: u64,
    /// `Err` results returned.
    pub parse_errors: u64,
}

/// The fields we keep, as indices into [`Partial::fields`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Cursor = 0,
    Realtime,
    Message,
    Priority,
    Unit,
    Identifier,
    Pid,
    Transport,
    BootId,
}

const SLOTS: usize = 9;

impl Slot {
    fn from_name(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"__CURSOR" => Self::Cursor,
            b"__REALTIME_TIMESTAMP" => Self::Realtime,
            b"MESSAGE" => Self::Message,
            b"PRIORITY" => Self::Priority,
            b"_SYSTEMD_UNIT" => Self::Unit,
            b"SYSLOG_IDENTIFIER" => Self::Identifier,
            b"_PID" => Self::Pid,
            b"_TRANSPORT" => Self::Transport,
            b"_BOOT_ID" => Self::BootId,
            _ => return None,
        })
    }
}

/// The entry being assembled.
#[derive(Debug, Default)]
struct Partial {
    fields: [Option<Vec<u8>>; SLOTS],
    truncated: [bool; SLOTS],
    /// At least one complete field (kept or not) was seen.
    has_fields: bool,
}

impl Partial {
    fn is_free(&self, s: Slot) -> bool {
        matches!(self.fields.get(s as usize), Some(None))
    }

    fn take(&mut self, s: Slot) -> Option<Vec<u8>> {
        self.fields.get_mut(s as usize).and_then(Option::take)
    }

    fn was_truncated(&self, s: Slot) -> bool {
        self.truncated.get(s as usize).copied().unwrap_or(false)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    LineStart,
    /// Reading a field name into `name`.
    Name,
    /// Reading a text value up to `\n`.
    Text { slot: Option<Slot> },
    /// Reading the 8 length bytes of a binary field into `len_buf`.
    BinLen { slot: Option<Slot>, have: usize },
    /// Reading binary data.
    BinData { slot: Option<Slot>, remaining: u64 },
    /// Expecting the `\n` after binary data.
    BinEnd { slot: Option<Slot> },
    /// Discarding input. `line_only`: up to the end of the current line;
    /// otherwise up to the next empty line (`at_line_start` tracks it).
    Skip {
        line_only: bool,
        at_line_start: bool,
    },
}

/// Incremental parser of the journal export format.
///
/// `push` input chunks, then call `next_entry` until it returns `None`.
/// Raw input is held only until `next_entry` consumes it, so memory is the
/// unconsumed input plus the capped kept fields of one entry.
#[derive(Debug)]
pub struct ExportParser {
    config: ParserConfig,
    buf: Vec<u8>,
    pos: usize,
    state: State,
    name: Vec<u8>,
    len_buf: [u8; 8],
    value: Vec<u8>,
    entry: Partial,
    stats: ParserStats,
}

impl Default for ExportParser {
    fn default() -> Self {
        Self::new(ParserConfig::default())
    }
}

impl ExportParser {
    /// A parser with the given limits.
    pub fn new(config: ParserConfig) -> Self {
        Self {
            config,
            buf: Vec::new(),
            pos: 0,
            state: State::LineStart,
            name: Vec::with_capacity(MAX_NAME_LEN),
            len_buf: [0; 8],
            value: Vec::new(),
            entry: Partial::default(),
            stats: ParserStats::default(),
        }
    }

    /// Appends a chunk of `journalctl` output.
    pub fn push(&mut self, data: &[u8]) {
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes pushed but not yet consumed by [`next_entry`](Self::next_entry).
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next complete entry or error; `None` when more input is needed.
    pub fn next_entry(&mut self) -> Option<Result<JournalEntry, ParseError>> {
        while self.pos < self.buf.len() {
            if let Some(result) = self.step() {
                return Some(result);
            }
        }
        self.buf.clear();
        self.pos = 0;
        None
    }

    /// Signals end of input (journalctl exited). Returns the last entry if
    /// the stream stopped right after a complete field without the closing
    /// empty line, or [`ParseError::UnexpectedEof`] if it stopped inside a
    /// field. Call it until it returns `None`; the parser is then ready for a
    /// new stream (statistics are kept).
    pub fn finish(&mut self) -> Option<Result<JournalEntry, ParseError>> {
        // Drain anything still buffered first (callers may skip next_entry).
        if let Some(r) = self.next_entry() {
            return Some(r);
        }
        let state = std::mem::replace(&mut self.state, State::LineStart);
        self.name.clear();
        self.value.clear();
        match state {
            State::LineStart if self.entry.has_fields => Some(self.complete_entry()),
            State::LineStart | State::Skip { .. } => {
                self.entry = Partial::default();
                None
            }
            _ => {
                self.entry = Partial::default();
                Some(self.error(ParseError::UnexpectedEof))
            }
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> ParserStats {
        self.stats
    }

    /// The limits in use.
    pub fn config(&self) -> &ParserConfig {
        &self.config
    }

    /// Consumes some input; returns a result when one is complete.
    fn step(&mut self) -> Option<Result<JournalEntry, ParseError>> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let first = *rest.first()?;
        match self.state {
            State::LineStart => {
                if first == b'\n' {
                    self.pos += 1;
                    if self.entry.has_fields {
                        return Some(self.complete_entry());
                    }
                    // Blank line between entries: harmless.
                    return None;
                }
                self.name.clear();
                self.state = State::Name;
                None
            }
            State::Name => {
                let limit = MAX_NAME_LEN.saturating_sub(self.name.len());
                let window = rest.get(..rest.len().min(limit + 1)).unwrap_or_default();
                let end = window.iter().position(|&b| b == b'=' || b == b'\n');
                match end {
                    Some(i) => {
                        self.name
                            .extend_from_slice(window.get(..i).unwrap_or_default());
                        let binary = window.get(i) == Some(&b'\n');
                        self.pos += i + 1;
                        self.end_of_name(binary)
                    }
                    None if window.len() > limit => {
                        // Longer than any field name: garbage.
                        self.name
                            .extend_from_slice(window.get(..limit).unwrap_or_default());
                        self.pos += limit;
                        Some(self.malformed(false))
                    }
                    None => {
                        self.name.extend_from_slice(window);
                        self.pos += window.len();
                        None
                    }
                }
            }
            State::Text { slot } => {
                let (seg, done) = match memchr(b'\n', rest) {
                    Some(i) => (rest.get(..i).unwrap_or_default(), true),
                    None => (rest, false),
                };
                let n = seg.len();
                self.append(slot, n);
                self.pos += n;
                if done {
                    self.pos += 1;
                    self.commit(slot);
                    self.state = State::LineStart;
                }
                None
            }
            State::BinLen { slot, have } => {
                let take = (8 - have).min(rest.len());
                if let (Some(dst), Some(src)) =
                    (self.len_buf.get_mut(have..have + take), rest.get(..take))
                {
                    dst.copy_from_slice(src);
                }
                self.pos += take;
                let have = have + take;
                if have < 8 {
                    self.state = State::BinLen { slot, have };
                    return None;
                }
                let len = u64::from_le_bytes(self.len_buf);
                if len > self.config.max_binary_len {
                    return Some(self.resync(ParseError::OversizeLength { len }, false, false));
                }
                self.value.clear();
                self.state = if len == 0 {
                    State::BinEnd { slot }
                } else {
                    State::BinData {
                        slot,
                        remaining: len,
                    }
                };
                None
            }
            State::BinData { slot, remaining } => {
                let n = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(rest.len());
                self.append(slot, n);
                self.pos += n;
                let remaining = remaining - n as u64;
                self.state = if remaining == 0 {
                    State::BinEnd { slot }
                } else {
                    State::BinData { slot, remaining }
                };
                None
            }
            State::BinEnd { slot } => {
                if first == b'\n' {
                    self.pos += 1;
                    self.commit(slot);
                    self.state = State::LineStart;
                    None
                } else {
                    // Do not consume: the skipper accounts for the byte.
                    Some(self.resync(ParseError::BadBinaryTerminator, false, false))
                }
            }
            State::Skip {
                line_only,
                mut at_line_start,
            } => {
                let mut used = 0;
                let mut done = false;
                if line_only {
                    match memchr(b'\n', rest) {
                        Some(i) => {
                            used = i + 1;
                            done = true;
                        }
                        None => used = rest.len(),
                    }
                } else {
                    for &b in rest {
                        used += 1;
                        if b == b'\n' && at_line_start {
                            done = true;
                            break;
                        }
                        at_line_start = b == b'\n';
                    }
                }
                self.pos += used;
                self.stats.bytes_skipped += used as u64;
                self.state = if done {
                    State::LineStart
                } else {
                    State::Skip {
                        line_only,
                        at_line_start,
                    }
                };
                None
            }
        }
    }

    /// The name is complete (`binary`: it ended with `\n`, not `=`).
    fn end_of_name(&mut self, binary: bool) -> Option<Result<JournalEntry, ParseError>> {
        if !valid_name(&self.name) {
            return Some(self.malformed(binary));
        }
        let mut early = None;
        if self.name == b"__CURSOR" && self.entry.has_fields {
            // journalctl aborted the previous entry mid-way (EBADMSG).
            self.entry = Partial::default();
            early = Some(self.error(ParseError::UnterminatedEntry));
        }
        // First occurrence wins; repeated kept fields are ignored.
        let slot = Slot::from_name(&self.name).filter(|s| self.entry.is_free(*s));
        self.value.clear();
        self.state = if binary {
            State::BinLen { slot, have: 0 }
        } else {
            State::Text { slot }
        };
        early
    }

    /// A malformed line. `at_line_start`: its `\n` was already consumed.
    fn malformed(&mut self, at_line_start: bool) -> Result<JournalEntry, ParseError> {
        // Before the first field of an entry, drop just the line; inside an
        // entry, the entry is suspect: drop it up to the next empty line.
        let line_only = !self.entry.has_fields;
        self.stats.bytes_skipped += self.name.len() as u64;
        self.resync(ParseError::MalformedLine, line_only, at_line_start)
    }

    fn resync(
        &mut self,
        err: ParseError,
        line_only: bool,
        at_line_start: bool,
    ) -> Result<JournalEntry, ParseError> {
        self.name.clear();
        self.value.clear();
        self.entry = Partial::default();
        self.state = if line_only && at_line_start {
            State::LineStart
        } else {
            State::Skip {
                line_only,
                at_line_start,
            }
        };
        self.error(err)
    }

    fn error(&mut self, err: ParseError) -> Result<JournalEntry, ParseError> {
        self.stats.parse_errors += 1;
        Err(err)
    }

    /// Appends the next `n` input bytes to the value if the field is kept.
    fn append(&mut self, slot: Option<Slot>, n: usize) {
        let Some(slot) = slot else { return };
        let cap = match slot {
            Slot::Message => self.config.max_message_len,
            _ => self.config.max_meta_len,
        };
        let room = cap.saturating_sub(self.value.len());
        let keep = n.min(room);
        if let Some(src) = self.buf.get(self.pos..self.pos + keep) {
            self.value.extend_from_slice(src);
        }
        if keep < n {
            if let Some(t) = self.entry.truncated.get_mut(slot as usize)
                && !*t
            {
                *t = true;
                self.stats.fields_truncated += 1;
            }
            self.stats.bytes_truncated += (n - keep) as u64;
        }
    }

    fn commit(&mut self, slot: Option<Slot>) {
        self.entry.has_fields = true;
        if let Some(slot) = slot {
            let value = std::mem::take(&mut self.value);
            if let Some(f) = self.entry.fields.get_mut(slot as usize) {
                *f = Some(value);
            }
        }
    }

    fn complete_entry(&mut self) -> Result<JournalEntry, ParseError> {
        let mut p = std::mem::take(&mut self.entry);
        let result = build_entry(&mut p);
        match result {
            Ok(_) => self.stats.entries_parsed += 1,
            Err(_) => self.stats.parse_errors += 1,
        }
        result
    }
}

fn build_entry(p: &mut Partial) -> Result<JournalEntry, ParseError> {
    let cursor = p
        .take(Slot::Cursor)
        .ok_or(ParseError::MissingField("__CURSOR"))?;
    let realtime = p
        .take(Slot::Realtime)
        .ok_or(ParseError::MissingField("__REALTIME_TIMESTAMP"))?;
    if p.was_truncated(Slot::Cursor) {
        return Err(ParseError::InvalidField("__CURSOR"));
    }
    let cursor = String::from_utf8(cursor)
        .ok()
        .filter(|c| is_plausible_cursor(c))
        .ok_or(ParseError::InvalidField("__CURSOR"))?;
    let realtime_us =
        parse_ascii::<u64>(&realtime).ok_or(ParseError::InvalidField("__REALTIME_TIMESTAMP"))?;
    let text = |v: Option<Vec<u8>>| v.map(|v| String::from_utf8_lossy(&v).into_owned());
    Ok(JournalEntry {
        cursor,
        realtime_us,
        message: p.take(Slot::Message).unwrap_or_default(),
        message_truncated: p.was_truncated(Slot::Message),
        priority: p
            .take(Slot::Priority)
            .as_deref()
            .and_then(parse_ascii::<u8>)
            .filter(|p| *p <= 7),
        unit: text(p.take(Slot::Unit)),
        identifier: text(p.take(Slot::Identifier)),
        pid: p.take(Slot::Pid).as_deref().and_then(parse_ascii::<u32>),
        transport: text(p.take(Slot::Transport)),
        boot_id: text(p.take(Slot::BootId)),
    })
}

fn parse_ascii<T: std::str::FromStr>(v: &[u8]) -> Option<T> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Journal field names: `[A-Z0-9_]+`, not starting with a digit.
fn valid_name(name: &[u8]) -> bool {
    match name.first() {
        None => false,
        Some(f) if f.is_ascii_digit() => false,
        Some(_) => name
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_'),
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A text field line.
    fn text(out: &mut Vec<u8>, name: &str, value: &str) {
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }

    /// A binary field.
    fn bin(out: &mut Vec<u8>, name: &str, value: &[u8]) {
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
    }

    fn header(out: &mut Vec<u8>, n: u32) {
        text(out, "__CURSOR", &format!("s=5a;i={n:x};b=b00;m=1;t=2;x=3"));
        text(
            out,
            "__REALTIME_TIMESTAMP",
            &format!("{}", 1_700_000_000_000_000u64 + u64::from(n)),
        );
        text(out, "__MONOTONIC_TIMESTAMP", "12345");
        text(out, "_BOOT_ID", "0123456789abcdef0123456789abcdef");
    }

    /// The main fixture: text fields, binary fields, a multi-line message,
    /// invalid UTF-8, unknown fields, an oversize message and an entry with a
    /// hostile binary length followed by a good entry.
    fn fixture() -> Vec<u8> {
        let mut f = Vec::new();
        // 1: plain text entry with every kept field.
        header(&mut f, 1);
        text(&mut f, "PRIORITY", "3");
        text(&mut f, "_SYSTEMD_UNIT", "pveproxy.service");
        text(&mut f, "SYSLOG_IDENTIFIER", "pveproxy");
        text(&mut f, "_PID", "4242");
        text(&mut f, "_TRANSPORT", "journal");
        text(&mut f, "_CMDLINE", "secret stuff we must not keep");
        text(&mut f, "MESSAGE", "worker 1234 finished");
        f.push(b'\n');
        // 2: binary MESSAGE with an embedded newline, binary unknown field.
        header(&mut f, 2);
        bin(&mut f, "MESSAGE", b"line one\nline two");
        bin(&mut f, "COREDUMP_BLOB", &[0, 1, 2, b'\n', b'\n', 255]);
        text(&mut f, "PRIORITY", "not-a-number");
        f.push(b'\n');
        // 3: invalid UTF-8 message, kernel transport, out-of-range priority.
        header(&mut f, 3);
        bin(&mut f, "MESSAGE", b"bad \xff\xfe bytes");
        text(&mut f, "_TRANSPORT", "kernel");
        text(&mut f, "PRIORITY", "9");
        f.push(b'\n');
        // 4: oversize MESSAGE (text form) and oversize unit (binary form).
        header(&mut f, 4);
        text(&mut f, "MESSAGE", &"x".repeat(100_000));
        bin(&mut f, "_SYSTEMD_UNIT", &[b'u'; 5000]);
        f.push(b'\n');
        // 5: hostile length: must not allocate, must resync at the empty line.
        header(&mut f, 5);
        f.extend_from_slice(b"MESSAGE\n");
        f.extend_from_slice(&u64::MAX.to_le_bytes());
        f.extend_from_slice(b"whatever\nMORE=stuff\n\n");
        // 6: a good entry after the resync; repeated MESSAGE keeps the first.
        header(&mut f, 6);
        text(&mut f, "MESSAGE", "after resync");
        text(&mut f, "MESSAGE", "second value ignored");
        f.push(b'\n');
        f
    }

    fn parse_chunks(
        input: &[u8],
        sizes: &mut dyn FnMut() -> usize,
    ) -> (Vec<Result<JournalEntry, ParseError>>, ParserStats) {
        let mut p = ExportParser::default();
        let mut out = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let n = sizes().clamp(1, rest.len());
            let (chunk, tail) = rest.split_at(n);
            p.push(chunk);
            rest = tail;
            while let Some(r) = p.next_entry() {
                out.push(r);
            }
            assert!(p.buffered() == 0);
        }
        if let Some(r) = p.finish() {
            out.push(r);
        }
        (out, p.stats())
    }

    fn parse_all(input: &[u8]) -> (Vec<Result<JournalEntry, ParseError>>, ParserStats) {
        parse_chunks(input, &mut || usize::MAX)
    }

    #[test]
    fn fixture_parses_to_expected_entries() {
        let (out, stats) = parse_all(&fixture());
        assert_eq!(out.len(), 6, "{out:#?}");

        let e1 = out[0].as_ref().unwrap();
        assert_eq!(e1.cursor, "s=5a;i=1;b=b00;m=1;t=2;x=3");
        assert_eq!(e1.realtime_us, 1_700_000_000_000_001);
        assert_eq!(e1.message, b"worker 1234 finished");
        assert!(!e1.message_truncated);
        assert_eq!(e1.priority, Some(3));
        assert_eq!(e1.unit.as_deref(), Some("pveproxy.service"));
        assert_eq!(e1.identifier.as_deref(), Some("pveproxy"));
        assert_eq!(e1.pid, Some(4242));
        assert_eq!(e1.transport.as_deref(), Some("journal"));
        assert_eq!(
            e1.boot_id.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );

        let e2 = out[1].as_ref().unwrap();
        assert_eq!(e2.message, b"line one\nline two");
        assert_eq!(e2.priority, None, "unparsable priority is dropped");
        assert_eq!(e2.unit, None);

        let e3 = out[2].as_ref().unwrap();
        assert_eq!(e3.message, b"bad \xff\xfe bytes");
        assert_eq!(e3.message_lossy(), "bad \u{fffd}\u{fffd} bytes");
        assert_eq!(e3.transport.as_deref(), Some("kernel"));
        assert_eq!(e3.priority, None, "priority above 7 is dropped");

        let e4 = out[3].as_ref().unwrap();
        assert_eq!(e4.message.len(), 64 * 1024);
        assert!(e4.message_truncated);
        assert_eq!(e4.unit.as_ref().map(String::len), Some(4 * 1024));

        assert_eq!(out[4], Err(ParseError::OversizeLength { len: u64::MAX }));

        let e6 = out[5].as_ref().unwrap();
        assert_eq!(e6.message, b"after resync");
        assert_eq!(e6.cursor, "s=5a;i=6;b=b00;m=1;t=2;x=3");

        assert_eq!(stats.entries_parsed, 5);
        assert_eq!(stats.parse_errors, 1);
        assert_eq!(stats.fields_truncated, 2);
        assert_eq!(
            stats.bytes_truncated,
            (100_000 - 64 * 1024) + (5000 - 4 * 1024)
        );
        // Hostile entry: "whatever\nMORE=stuff\n\n" is skipped.
        assert_eq!(stats.bytes_skipped, 21);
    }

    /// xorshift64*: deterministic chunk sizes without a rand dependency.
    fn rng(seed: u64) -> impl FnMut() -> usize {
        let mut s = seed.max(1);
        move || {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            (s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize
        }
    }

    #[test]
    fn chunking_does_not_change_results() {
        let input = fixture();
        let whole = parse_all(&input);
        let bytewise = parse_chunks(&input, &mut || 1);
        assert_eq!(whole, bytewise);
        for seed in 1..=20u64 {
            let mut r = rng(seed);
            let max = [3usize, 17, 100, 4096, 70_000][(seed % 5) as usize];
            let chunked = parse_chunks(&input, &mut || r() % max + 1);
            assert_eq!(whole, chunked, "seed {seed}");
        }
    }

    #[test]
    fn garbage_lines_are_counted_and_resynchronised() {
        let mut f = Vec::new();
        // A banner line before any entry: dropped alone.
        f.extend_from_slice(b"-- Logs begin at Mon 2024-01-01. --\n");
        header(&mut f, 1);
        text(&mut f, "MESSAGE", "kept");
        f.push(b'\n');
        // Garbage inside an entry: the entry is dropped up to the empty line.
        header(&mut f, 2);
        f.extend_from_slice(b"this is not a field\n");
        text(&mut f, "MESSAGE", "lost with its entry");
        f.push(b'\n');
        // Lowercase name with '=' inside an entry.
        header(&mut f, 3);
        text(&mut f, "bad name", "x");
        f.push(b'\n');
        // An overlong name without '=' or newline.
        header(&mut f, 4);
        f.extend_from_slice(&[b'A'; 200]);
        f.extend_from_slice(b"\n\n");
        header(&mut f, 5);
        text(&mut f, "MESSAGE", "fine again");
        f.push(b'\n');

        let (out, stats) = parse_all(&f);
        let oks: Vec<_> = out.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(oks.len(), 2);
        assert_eq!(oks[0].message, b"kept");
        assert_eq!(oks[1].message, b"fine again");
        let errs: Vec<_> = out.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(errs, vec![&ParseError::MalformedLine; 4]);
        assert_eq!(stats.parse_errors, 4);
        assert!(stats.bytes_skipped > 0);
        assert_eq!(parse_chunks(&f, &mut || 1), (out, stats));
    }

    #[test]
    fn bad_binary_terminator_resyncs() {
        let mut f = Vec::new();
        header(&mut f, 1);
        f.extend_from_slice(b"MESSAGE\n");
        f.extend_from_slice(&3u64.to_le_bytes());
        f.extend_from_slice(b"abcX\n\n"); // 'X' where '\n' belongs
        header(&mut f, 2);
        text(&mut f, "MESSAGE", "ok");
        f.push(b'\n');
        let (out, _) = parse_all(&f);
        assert_eq!(out[0], Err(ParseError::BadBinaryTerminator));
        assert_eq!(out[1].as_ref().unwrap().message, b"ok");
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn missing_and_invalid_required_fields_are_errors() {
        let mut f = Vec::new();
        text(&mut f, "MESSAGE", "no cursor");
        f.push(b'\n');
        text(&mut f, "__CURSOR", "s=1");
        text(&mut f, "MESSAGE", "no timestamp");
        f.push(b'\n');
        text(&mut f, "__CURSOR", "s=1");
        text(&mut f, "__REALTIME_TIMESTAMP", "yesterday");
        f.push(b'\n');
        bin(&mut f, "__CURSOR", b"s=\xff");
        text(&mut f, "__REALTIME_TIMESTAMP", "1");
        f.push(b'\n');
        let (out, stats) = parse_all(&f);
        assert_eq!(
            out,
            vec![
                Err(ParseError::MissingField("__CURSOR")),
                Err(ParseError::MissingField("__REALTIME_TIMESTAMP")),
                Err(ParseError::InvalidField("__REALTIME_TIMESTAMP")),
                Err(ParseError::InvalidField("__CURSOR")),
            ]
        );
        assert_eq!(stats.parse_errors, 4);
        assert_eq!(stats.entries_parsed, 0);
    }

    #[test]
    fn truncated_cursor_is_rejected_not_half_used() {
        let mut p = ExportParser::new(ParserConfig {
            max_meta_len: 8,
            ..ParserConfig::default()
        });
        let mut f = Vec::new();
        header(&mut f, 1);
        f.push(b'\n');
        p.push(&f);
        assert_eq!(
            p.next_entry(),
            Some(Err(ParseError::InvalidField("__CURSOR")))
        );
    }

    #[test]
    fn new_cursor_inside_an_entry_starts_a_new_entry() {
        let mut f = Vec::new();
        header(&mut f, 1);
        text(&mut f, "MESSAGE", "cut short, no empty line");
        header(&mut f, 2);
        text(&mut f, "MESSAGE", "complete");
        f.push(b'\n');
        let (out, _) = parse_all(&f);
        assert_eq!(out[0], Err(ParseError::UnterminatedEntry));
        let e = out[1].as_ref().unwrap();
        assert_eq!(e.cursor, "s=5a;i=2;b=b00;m=1;t=2;x=3");
        assert_eq!(e.message, b"complete");
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn end_of_stream_handling() {
        // Complete fields but no closing empty line: the entry is returned.
        let mut f = Vec::new();
        header(&mut f, 1);
        text(&mut f, "MESSAGE", "last");
        let (out, _) = parse_all(&f);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ref().unwrap().message, b"last");

        // Stopped inside a binary field.
        let mut g = Vec::new();
        header(&mut g, 1);
        g.extend_from_slice(b"MESSAGE\n");
        g.extend_from_slice(&10u64.to_le_bytes());
        g.extend_from_slice(b"abc");
        let (out, stats) = parse_all(&g);
        assert_eq!(out, vec![Err(ParseError::UnexpectedEof)]);
        assert_eq!(stats.parse_errors, 1);

        // The parser is reusable after finish().
        let mut p = ExportParser::default();
        p.push(&g);
        assert_eq!(p.next_entry(), None);
        assert_eq!(p.finish(), Some(Err(ParseError::UnexpectedEof)));
        let mut h = Vec::new();
        header(&mut h, 2);
        h.push(b'\n');
        p.push(&h);
        assert!(p.next_entry().unwrap().is_ok());
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn huge_unkept_binary_field_is_streamed_not_buffered() {
        let mut p = ExportParser::default();
        let mut f = Vec::new();
        header(&mut f, 1);
        f.extend_from_slice(b"COREDUMP\n");
        let big = 8u64 * 1024 * 1024;
        f.extend_from_slice(&big.to_le_bytes());
        p.push(&f);
        assert_eq!(p.next_entry(), None);
        let chunk = vec![0u8; 64 * 1024];
        for _ in 0..(big / chunk.len() as u64) {
            p.push(&chunk);
            assert_eq!(p.next_entry(), None);
            assert!(
                p.value.capacity() < 64 * 1024,
                "unkept bytes must not be copied"
            );
        }
        p.push(b"\nMESSAGE=after core\n\n");
        let e = p.next_entry().unwrap().unwrap();
        assert_eq!(e.message, b"after core");
        assert_eq!(p.stats().fields_truncated, 0);
    }

    #[test]
    fn blank_lines_between_entries_are_ignored() {
        let mut f = b"\n\n".to_vec();
        header(&mut f, 1);
        f.extend_from_slice(b"\n\n\n");
        let (out, stats) = parse_all(&f);
        assert_eq!(out.len(), 1);
        assert!(out[0].is_ok());
        assert_eq!(stats.parse_errors, 0);
    }

    #[test]
    fn args_start_at_end_without_cursor() {
        let args = journalctl_args(None, &[]);
        assert_eq!(
            args,
            vec![
                "--output=export".to_string(),
                format!("--output-fields={OUTPUT_FIELDS}"),
                "--follow".into(),
                "--no-pager".into(),
                "--quiet".into(),
                "--lines=0".into(),
            ]
        );
        assert!(!args.iter().any(|a| a.starts_with("--after-cursor")));
    }

    #[test]
    fn args_resume_after_cursor_with_units() {
        let units = vec![
            "pveproxy.service".to_string(),
            String::new(),
            "bad\nunit".to_string(),
            "corosync.service".to_string(),
        ];
        let args = journalctl_args(Some("s=abc;i=1f;b=00;m=1;t=2;x=3"), &units);
        assert!(args.contains(&"--no-tail".to_string()));
        assert!(args.contains(&"--after-cursor=s=abc;i=1f;b=00;m=1;t=2;x=3".to_string()));
        assert!(!args.contains(&"--lines=0".to_string()));
        let unit_args: Vec<_> = args.iter().filter(|a| a.starts_with("--unit=")).collect();
        assert_eq!(
            unit_args,
            vec!["--unit=pveproxy.service", "--unit=corosync.service"]
        );
    }

    #[test]
    fn implausible_cursor_falls_back_to_tail() {
        for bad in ["", "has space", "nul\0", "new\nline"] {
            let args = journalctl_args(Some(bad), &[]);
            assert!(args.contains(&"--lines=0".to_string()), "{bad:?}");
            assert!(!args.iter().any(|a| a.starts_with("--after-cursor")));
        }
    }

    #[test]
    fn output_fields_cover_every_kept_slot() {
        for name in OUTPUT_FIELDS.split(',') {
            assert!(Slot::from_name(name.as_bytes()).is_some(), "{name}");
        }
    }
}
