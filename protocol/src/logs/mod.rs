//! Log summaries: the only shape in which log-derived data crosses the wire.
//!
//! A [`MaskedTemplate`] can only be made by [`MaskedTemplate::mask`], which
//! redacts secrets and then masks every variable token; a [`RedactedExample`]
//! (opt-in per source) only by [`RedactedExample::redact`]. Neither type has
//! another constructor, so a raw log line cannot be placed into a protocol
//! message by accident: the compiler refuses it.
//!
//! ```compile_fail
//! // A raw line cannot become a template: the field is private.
//! let t = wingman_protocol::logs::MaskedTemplate("Failed password for root from 10.0.0.1".to_string());
//! ```
//!
//! ```compile_fail
//! // Nor can a String stand in for one in a summary.
//! let c = wingman_protocol::logs::TemplateCount {
//!     template_id: 1, template: String::from("raw line"), count: 1,
//!     severity: wingman_protocol::logs::Severity::Info, first_seen_ms: 0, last_seen_ms: 0,
//!     new_template: false, burst: false, examples: vec![],
//! };
//! ```
//!
//! ```compile_fail
//! let e = wingman_protocol::logs::RedactedExample(String::from("password=hunter2"));
//! ```
//!
//! The only way in is through the redactor and the masker:
//!
//! ```
//! use wingman_protocol::logs::{MaskedTemplate, RedactConfig, Redactor};
//! let r = Redactor::new(&RedactConfig::default());
//! let (t, redactions) = MaskedTemplate::mask("login failed for bob from 10.0.0.7 password=hunter2", &r);
//! assert_eq!(redactions, 1);
//! assert!(!t.as_str().contains("hunter2") && !t.as_str().contains("10.0.0.7"));
//! ```

pub mod mask;
pub mod redact;

use serde::{Deserialize, Serialize};

pub use redact::{RedactConfig, Redacted, Redactor};

/// Where a summary's lines came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LogSourceKind {
    /// The systemd journal; the name is the unit or syslog identifier.
    Journal,
    /// A plain log file; the name is its path.
    File,
    /// A container's output; the name is the container name.
    Container,
}

impl LogSourceKind {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Journal => "journal",
            Self::File => "file",
            Self::Container => "container",
        }
    }
}

/// A log source: its kind and name (unit, path or container).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogSource {
    /// Kind.
    pub kind: LogSourceKind,
    /// Unit, path or container name.
    pub name: String,
}

/// Syslog severity (journald `PRIORITY`): 0 emergency ... 7 debug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    /// 0.
    Emergency,
    /// 1.
    Alert,
    /// 2.
    Critical,
    /// 3.
    Error,
    /// 4.
    Warning,
    /// 5.
    Notice,
    /// 6.
    Info,
    /// 7.
    Debug,
}

impl Severity {
    /// From a syslog priority number; out-of-range values are `Info`.
    pub fn from_priority(p: u8) -> Self {
        match p {
            0 => Self::Emergency,
            1 => Self::Alert,
            2 => Self::Critical,
            3 => Self::Error,
            4 => Self::Warning,
            5 => Self::Notice,
            7 => Self::Debug,
            _ => Self::Info,
        }
    }

    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Emergency => "emergency",
            Self::Alert => "alert",
            Self::Critical => "critical",
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Notice => "notice",
            Self::Info => "info",
            Self::Debug => "debug",
        }
    }

    /// The priority number.
    pub fn priority(self) -> u8 {
        self as u8
    }

    /// Error or worse.
    pub fn is_error(self) -> bool {
        self <= Self::Error
    }
}

/// A log template whose variables are masked (`<*>`) and whose secrets are
/// redacted. The only constructor is [`MaskedTemplate::mask`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MaskedTemplate(String);

impl MaskedTemplate {
    /// Redacts secrets in `text`, then masks its variable tokens. Applying it
    /// to a template that is already masked leaves the template unchanged
    /// (placeholders stay placeholders).
    /// Returns the template and the number of secrets redacted.
    pub fn mask(text: &str, redactor: &Redactor) -> (Self, u32) {
        let redacted = redactor.redact(text);
        let masked = mask::mask(&redacted.text);
        (Self(masked), redacted.total())
    }

    /// The template text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The template's stable id: FNV-1a 64 of its text, the same on every node.
    pub fn id(&self) -> u64 {
        template_id(&self.0)
    }
}

/// FNV-1a 64 of a template text.
pub fn template_id(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// An example line with secrets redacted but values kept; sent only for
/// sources where the operator opted in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedactedExample(String);

impl RedactedExample {
    /// Redacts `line` (and cuts it to 512 bytes).
    pub fn redact(line: &str, redactor: &Redactor) -> Self {
        let r = redactor.redact(line);
        let mut s = r.text.into_owned();
        if s.len() > 512 {
            let mut cut = 512;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
        }
        Self(s)
    }

    /// The example text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One template's count in one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateCount {
    /// Stable id: FNV-1a 64 of the template text, equal on every node.
    pub template_id: u64,
    /// The masked template.
    pub template: MaskedTemplate,
    /// Lines in the window.
    pub count: u32,
    /// Worst severity seen.
    pub severity: Severity,
    /// First line in the window, Unix ms.
    pub first_seen_ms: i64,
    /// Last line in the window, Unix ms.
    pub last_seen_ms: i64,
    /// The first time this template appeared on this node.
    pub new_template: bool,
    /// Error lines far above the template's own baseline rate.
    pub burst: bool,
    /// Redacted examples (empty unless the source opted in).
    pub examples: Vec<RedactedExample>,
}

/// What the pipeline skipped or changed in a window; loss is never silent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipCounts {
    /// Lines that were not valid UTF-8 (summarised after lossy decoding).
    pub invalid_utf8: u32,
    /// Lines cut because they exceeded the maximum length.
    pub oversize: u32,
    /// Lines dropped as binary garbage.
    pub binary: u32,
    /// Entries the source could not parse.
    pub unparsable: u32,
    /// Secrets redacted.
    pub redactions: u32,
    /// Templates evicted from the capped store since the last summary.
    pub evicted_templates: u32,
}

/// Template counts for one source over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogSummary {
    /// The source.
    pub source: LogSource,
    /// Window start, Unix ms.
    pub window_start_ms: i64,
    /// Window end, Unix ms.
    pub window_end_ms: i64,
    /// Lines summarised.
    pub lines: u64,
    /// Per-template counts.
    pub templates: Vec<TemplateCount>,
    /// What was skipped.
    pub skipped: SkipCounts,
}
