//! The log pipeline's pure core: raw lines in, template summaries out.
//!
//! Each line is decoded (lossily, counted), checked for binary garbage and
//! length, redacted, and handed to the template [`Miner`]. Counts accumulate
//! per source in windows (default 10 s); [`Pipeline::poll_summaries`] closes
//! windows that ended and returns one [`LogSummary`] per source. Nothing here
//! does I/O or reads a clock: callers pass `now`.
//!
//! Raw text never leaves this module: a summary carries only
//! [`MaskedTemplate`]s (and, for sources that opted in, [`RedactedExample`]s),
//! which the protocol crate builds itself from redacted, masked text.

use std::collections::{BTreeMap, HashMap};

use wingman_protocol::logs::{
    LogSource, LogSummary, MaskedTemplate, RedactConfig, RedactedExample, Redactor, Severity,
    SkipCounts, TemplateCount,
};

use super::miner::{Miner, MinerConfig, TemplateId};

/// Pipeline settings.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Summary window length.
    pub window_ms: i64,
    /// Lines longer than this are cut (and counted).
    pub max_line_bytes: usize,
    /// A window is a burst when an error template's count is at least this
    /// many times its own baseline (an average over earlier windows)...
    pub burst_factor: f64,
    /// ...and at least this many lines.
    pub burst_min_count: u32,
    /// Redacted examples kept per template and window for opted-in sources.
    pub max_examples: usize,
    /// Redaction rules.
    pub redact: RedactConfig,
    /// Miner settings.
    pub miner: MinerConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            window_ms: 10_000,
            max_line_bytes: 16 * 1024,
            burst_factor: 5.0,
            burst_min_count: 10,
            max_examples: 3,
            redact: RedactConfig::default(),
            miner: MinerConfig::default(),
        }
    }
}

/// What the source knows about a line.
#[derive(Debug, Clone)]
pub struct LineMeta<'a> {
    /// Where it came from.
    pub source: &'a LogSource,
    /// When it was logged (source timestamp), Unix ms.
    pub ts_ms: i64,
    /// Severity from the source (journald `PRIORITY`), if any.
    pub severity: Option<Severity>,
    /// Whether this source may send redacted examples.
    pub examples: bool,
}

#[derive(Debug)]
struct Acc {
    count: u32,
    severity: Severity,
    first: i64,
    last: i64,
    new: bool,
    examples: Vec<RedactedExample>,
}

#[derive(Debug)]
struct Window {
    start_ms: i64,
    lines: u64,
    templates: BTreeMap<u64, Acc>,
    skipped: SkipCounts,
}

#[derive(Debug, Clone, Copy)]
struct Baseline {
    avg: f64,
    seen_in_flush: u64,
}

/// Running totals, for the agent's own health reporting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Lines handled.
    pub lines: u64,
    /// Secrets redacted.
    pub redactions: u64,
    /// Lines with invalid UTF-8.
    pub invalid_utf8: u64,
    /// Lines cut for length.
    pub oversize: u64,
    /// Lines dropped as binary.
    pub binary: u64,
    /// Summaries produced.
    pub summaries: u64,
}

/// The pipeline state machine.
pub struct Pipeline {
    cfg: PipelineConfig,
    redactor: Redactor,
    miner: Miner,
    windows: BTreeMap<LogSource, Window>,
    baselines: HashMap<u64, Baseline>,
    flushes: u64,
    urgent_since: Option<i64>,
    evicted_reported: u64,
    stats: PipelineStats,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("windows", &self.windows.len())
            .field("templates", &self.miner.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

const MAX_BASELINES: usize = 20_000;

/// Guesses a severity from level words near the start of a line
/// (`ERROR`, `[warn]`, `level=error`, ...). `None` when there is none.
pub fn detect_severity(line: &str) -> Option<Severity> {
    let head = line.get(..line.len().min(160)).unwrap_or(line);
    for raw in head.split(|c: char| c.is_whitespace() || "[]():=|,\"<>".contains(c)) {
        let sev = match raw {
            "EMERG" | "emerg" | "PANIC" | "panic" => Severity::Emergency,
            "ALERT" | "alert" => Severity::Alert,
            "CRIT" | "crit" | "CRITICAL" | "critical" | "FATAL" | "fatal" | "Fatal" => {
                Severity::Critical
            }
            "ERROR" | "error" | "Error" | "ERR" | "err" | "E" => Severity::Error,
            "WARN" | "warn" | "Warn" | "WARNING" | "warning" | "Warning" | "W" => Severity::Warning,
            "NOTICE" | "notice" => Severity::Notice,
            "INFO" | "info" | "Info" | "I" => Severity::Info,
            "DEBUG" | "debug" | "Debug" | "TRACE" | "trace" | "D" => Severity::Debug,
            _ => continue,
        };
        return Some(sev);
    }
    None
}

/// Phrases of problems the hub's detectors act on, for lines that carry no
/// severity word (the kernel's OOM report, systemd's unit failures).
const URGENT_PHRASES: &[&str] = &[
    "out of memory",
    "oom-kill",
    "killed process",
    "segfault",
    "i/o error",
    "failed to start",
    "entered failed state",
    "start request repeated too quickly",
    "failed with result",
    "blocked for more than",
    "no space left on device",
    "quorum",
    "fencing",
];

/// Whether a line should close its window early (see
/// [`Pipeline::urgent_since`]): error severity or a known problem phrase.
pub fn is_urgent(severity: Severity, line: &str) -> bool {
    if severity.is_error() {
        return true;
    }
    let head = line.get(..line.len().min(300)).unwrap_or(line);
    let lower = head.to_ascii_lowercase();
    URGENT_PHRASES.iter().any(|p| lower.contains(p))
}

fn looks_binary(bytes: &[u8]) -> bool {
    if bytes.contains(&0) {
        return true;
    }
    let control = bytes
        .iter()
        .filter(|&&b| b < 0x20 && b != b'\t' && b != 0x1b)
        .count();
    control * 10 > bytes.len()
}

impl Pipeline {
    /// Creates a pipeline.
    pub fn new(cfg: PipelineConfig) -> Self {
        Self {
            redactor: Redactor::new(&cfg.redact),
            miner: Miner::new(cfg.miner.clone()),
            cfg,
            windows: BTreeMap::new(),
            baselines: HashMap::new(),
            flushes: 0,
            urgent_since: None,
            evicted_reported: 0,
            stats: PipelineStats::default(),
        }
    }

    /// Running totals.
    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    /// Templates currently held by the miner.
    pub fn templates(&self) -> usize {
        self.miner.len()
    }

    fn window(&mut self, source: &LogSource, now_ms: i64) -> &mut Window {
        self.windows
            .entry(source.clone())
            .or_insert_with(|| Window {
                start_ms: now_ms,
                lines: 0,
                templates: BTreeMap::new(),
                skipped: SkipCounts::default(),
            })
    }

    /// Counts entries a source could not parse.
    pub fn note_unparsable(&mut self, now_ms: i64, source: &LogSource, n: u32) {
        let w = self.window(source, now_ms);
        w.skipped.unparsable = w.skipped.unparsable.saturating_add(n);
    }

    /// Handles one line (without its trailing newline).
    /// When the oldest error-severity line of the open windows arrived
    /// (cleared when the windows are flushed); the shell flushes early.
    pub fn urgent_since(&self) -> Option<i64> {
        self.urgent_since
    }

    /// Handles one line.
    pub fn handle_line(&mut self, now_ms: i64, meta: &LineMeta<'_>, bytes: &[u8]) {
        self.stats.lines += 1;
        let max = self.cfg.max_line_bytes;
        let mut skipped = SkipCounts::default();
        let bytes = if bytes.len() > max {
            skipped.oversize = 1;
            self.stats.oversize += 1;
            bytes.get(..max).unwrap_or(bytes)
        } else {
            bytes
        };
        if looks_binary(bytes) {
            self.stats.binary += 1;
            let w = self.window(meta.source, now_ms);
            w.skipped.binary = w.skipped.binary.saturating_add(1);
            w.skipped.oversize = w.skipped.oversize.saturating_add(skipped.oversize);
            return;
        }
        let text = String::from_utf8_lossy(bytes);
        if matches!(text, std::borrow::Cow::Owned(_)) {
            skipped.invalid_utf8 = 1;
            self.stats.invalid_utf8 += 1;
        }
        let text = text.trim_end_matches(['\r', '\n']);
        let redacted = self.redactor.redact(text);
        let redactions = redacted.total();
        self.stats.redactions += u64::from(redactions);
        let obs = self.miner.observe(&redacted.text);
        let severity = meta
            .severity
            .or_else(|| detect_severity(text))
            .unwrap_or(Severity::Info);
        if self.urgent_since.is_none() && is_urgent(severity, text) {
            self.urgent_since = Some(now_ms);
        }
        let example = (meta.examples && self.cfg.max_examples > 0)
            .then(|| RedactedExample::redact(&redacted.text, &self.redactor));
        let max_examples = self.cfg.max_examples;
        let w = self.window(meta.source, now_ms);
        w.lines += 1;
        w.skipped.oversize = w.skipped.oversize.saturating_add(skipped.oversize);
        w.skipped.invalid_utf8 = w.skipped.invalid_utf8.saturating_add(skipped.invalid_utf8);
        w.skipped.redactions = w.skipped.redactions.saturating_add(redactions);
        let acc = w.templates.entry(obs.id.0).or_insert(Acc {
            count: 0,
            severity,
            first: meta.ts_ms,
            last: meta.ts_ms,
            new: false,
            examples: Vec::new(),
        });
        acc.count = acc.count.saturating_add(1);
        acc.severity = acc.severity.min(severity);
        acc.first = acc.first.min(meta.ts_ms);
        acc.last = acc.last.max(meta.ts_ms);
        acc.new |= obs.is_new;
        if let Some(ex) = example
            && acc.examples.len() < max_examples
        {
            acc.examples.push(ex);
        }
    }

    /// The earliest time a window closes, if any is open.
    pub fn poll_timeout(&self) -> Option<i64> {
        self.windows
            .values()
            .map(|w| w.start_ms + self.cfg.window_ms)
            .min()
    }

    /// Closes the windows that ended by `now_ms`.
    pub fn poll_summaries(&mut self, now_ms: i64) -> Vec<LogSummary> {
        let due: Vec<LogSource> = self
            .windows
            .iter()
            .filter(|(_, w)| w.start_ms + self.cfg.window_ms <= now_ms)
            .map(|(s, _)| s.clone())
            .collect();
        self.close(due, now_ms)
    }

    /// Closes every open window (shutdown).
    pub fn flush(&mut self, now_ms: i64) -> Vec<LogSummary> {
        self.urgent_since = None;
        let all: Vec<LogSource> = self.windows.keys().cloned().collect();
        self.close(all, now_ms)
    }

    fn close(&mut self, sources: Vec<LogSource>, now_ms: i64) -> Vec<LogSummary> {
        if sources.is_empty() {
            return Vec::new();
        }
        self.flushes += 1;
        let evicted_now = self.miner.evicted();
        let mut evicted = evicted_now.saturating_sub(self.evicted_reported);
        self.evicted_reported = evicted_now;
        let mut out = Vec::new();
        for source in sources {
            let Some(w) = self.windows.remove(&source) else {
                continue;
            };
            // Templates may have generalised during the window: merge the
            // counts of observations that now resolve to the same template.
            let mut merged: BTreeMap<String, Acc> = BTreeMap::new();
            for (id, acc) in w.templates {
                let current = self.miner.resolve(TemplateId(id));
                let text = self
                    .miner
                    .template(current)
                    .unwrap_or("<evicted template>")
                    .to_string();
                match merged.get_mut(&text) {
                    Some(m) => {
                        m.count = m.count.saturating_add(acc.count);
                        m.severity = m.severity.min(acc.severity);
                        m.first = m.first.min(acc.first);
                        m.last = m.last.max(acc.last);
                        m.new |= acc.new;
                        for e in acc.examples {
                            if m.examples.len() < self.cfg.max_examples {
                                m.examples.push(e);
                            }
                        }
                    }
                    None => {
                        merged.insert(text, acc);
                    }
                }
            }
            let mut templates = Vec::with_capacity(merged.len());
            for (text, acc) in merged {
                let (template, _) = MaskedTemplate::mask(&text, &self.redactor);
                let id = template.id();
                let burst = self.update_baseline(id, acc.count, acc.severity);
                templates.push(TemplateCount {
                    template_id: id,
                    template,
                    count: acc.count,
                    severity: acc.severity,
                    first_seen_ms: acc.first,
                    last_seen_ms: acc.last,
                    new_template: acc.new,
                    burst,
                    examples: acc.examples,
                });
            }
            templates.sort_by(|a, b| {
                b.count
                    .cmp(&a.count)
                    .then(a.template_id.cmp(&b.template_id))
            });
            let mut skipped = w.skipped;
            skipped.evicted_templates = u32::try_from(evicted).unwrap_or(u32::MAX);
            evicted = 0;
            self.stats.summaries += 1;
            out.push(LogSummary {
                source,
                window_start_ms: w.start_ms,
                window_end_ms: now_ms.max(w.start_ms),
                lines: w.lines,
                templates,
                skipped,
            });
        }
        self.prune_baselines();
        out
    }

    /// Updates a template's baseline and says whether this window is a burst.
    fn update_baseline(&mut self, id: u64, count: u32, severity: Severity) -> bool {
        let flush = self.flushes;
        let b = self.baselines.entry(id).or_insert(Baseline {
            avg: 0.0,
            seen_in_flush: flush,
        });
        let reference = b.avg.max(1.0);
        let burst = severity.is_error()
            && count >= self.cfg.burst_min_count
            && f64::from(count) >= self.cfg.burst_factor * reference;
        b.avg = if b.avg == 0.0 {
            f64::from(count)
        } else {
            0.8 * b.avg + 0.2 * f64::from(count)
        };
        b.seen_in_flush = flush;
        burst
    }

    fn prune_baselines(&mut self) {
        if self.baselines.len() <= MAX_BASELINES {
            return;
        }
        let mut ages: Vec<u64> = self.baselines.values().map(|b| b.seen_in_flush).collect();
        ages.sort_unstable();
        let cutoff = ages.get(ages.len() / 2).copied().unwrap_or(0);
        self.baselines.retain(|_, b| b.seen_in_flush > cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wingman_protocol::logs::LogSourceKind;

    fn src(name: &str) -> LogSource {
        LogSource {
            kind: LogSourceKind::File,
            name: name.into(),
        }
    }

    fn feed(p: &mut Pipeline, s: &LogSource, now: i64, line: &str, examples: bool) {
        let meta = LineMeta {
            source: s,
            ts_ms: now,
            severity: None,
            examples,
        };
        p.handle_line(now, &meta, line.as_bytes());
    }

    #[test]
    fn windows_summarise_templates_and_never_carry_values() {
        let mut p = Pipeline::new(PipelineConfig::default());
        let s = src("/var/log/app.log");
        for i in 0..5 {
            feed(
                &mut p,
                &s,
                1_000 + i,
                &format!(
                    "ERROR connection to 10.0.0.{i}:5432 failed after {i}ms password=hunter2-{i}"
                ),
                false,
            );
        }
        feed(&mut p, &s, 1_010, "service started", false);
        assert!(p.poll_summaries(5_000).is_empty(), "window still open");
        let out = p.poll_summaries(11_000);
        assert_eq!(out.len(), 1);
        let sum = &out[0];
        assert_eq!(sum.lines, 6);
        assert_eq!(sum.skipped.redactions, 5);
        let top = &sum.templates[0];
        assert_eq!(top.count, 5);
        assert_eq!(top.severity, Severity::Error);
        assert!(top.new_template);
        let json = format!("{out:?}");
        assert!(!json.contains("hunter2"), "{json}");
        assert!(!json.contains("10.0.0.3"), "{json}");
        assert!(top.examples.is_empty());
        assert_eq!(top.template_id, top.template.id());
        // The same template in the next window is no longer new.
        feed(
            &mut p,
            &s,
            20_000,
            "ERROR connection to 10.9.9.9:5432 failed after 7ms password=hunter2-7",
            false,
        );
        let out = p.poll_summaries(31_000);
        assert!(
            !out[0].templates[0].new_template,
            "{:?} vs {:?}",
            out[0].templates[0].template, top.template
        );
    }

    #[test]
    fn garbage_long_and_invalid_lines_are_counted_not_shipped() {
        let mut p = Pipeline::new(PipelineConfig::default());
        let s = src("x");
        let meta = LineMeta {
            source: &s,
            ts_ms: 0,
            severity: Some(Severity::Warning),
            examples: false,
        };
        p.handle_line(0, &meta, &[0, 1, 2, 3, 0xff, 0xfe]);
        p.handle_line(0, &meta, b"caf\xe9 ol\xe9 request failed");
        let long = "A".repeat(1 << 20);
        p.handle_line(0, &meta, long.as_bytes());
        let out = p.flush(1);
        let sk = &out[0].skipped;
        assert_eq!((sk.binary, sk.invalid_utf8, sk.oversize), (1, 1, 1));
        assert_eq!(out[0].lines, 2);
        assert!(format!("{out:?}").len() < 40_000);
    }

    #[test]
    fn bursts_are_relative_to_the_templates_own_baseline() {
        let mut p = Pipeline::new(PipelineConfig::default());
        let s = src("x");
        let mut now = 0;
        // A steady 12 errors per window is its baseline, not a burst after the first.
        let mut bursts = Vec::new();
        for _ in 0..5 {
            for i in 0..12 {
                feed(&mut p, &s, now, &format!("ERROR disk {i} timeout"), false);
            }
            now += 10_000;
            bursts.push(p.poll_summaries(now)[0].templates[0].burst);
        }
        assert_eq!(bursts, vec![true, false, false, false, false]);
        for i in 0..200 {
            feed(&mut p, &s, now, &format!("ERROR disk {i} timeout"), false);
        }
        now += 10_000;
        assert!(p.poll_summaries(now)[0].templates[0].burst);
    }

    #[test]
    fn examples_only_when_opted_in_and_redacted() {
        let mut p = Pipeline::new(PipelineConfig::default());
        let s = src("x");
        feed(
            &mut p,
            &s,
            0,
            "login ok for alice token=abcd1234secret",
            true,
        );
        let out = p.flush(1);
        let ex = &out[0].templates[0].examples;
        assert_eq!(ex.len(), 1);
        assert!(ex[0].as_str().contains("alice"));
        assert!(!ex[0].as_str().contains("abcd1234secret"));
    }

    #[test]
    fn severity_words() {
        assert_eq!(detect_severity("2024-01-01 ERROR x"), Some(Severity::Error));
        assert_eq!(detect_severity("[warn] y"), Some(Severity::Warning));
        assert_eq!(detect_severity("level=debug msg=z"), Some(Severity::Debug));
        assert_eq!(detect_severity("nothing here"), None);
    }
}

#[cfg(test)]
mod urgent_tests {
    use super::*;

    #[test]
    fn problems_are_urgent_and_chatter_is_not() {
        let sev = |l: &str| detect_severity(l).unwrap_or(Severity::Info);
        for l in [
            "kernel: Out of memory: Killed process 4242 (java)",
            "systemd[1]: nginx.service: Failed with result 'exit-code'.",
            "ERROR connection refused",
            "kernel: blk_update_request: I/O error, dev sda, sector 42",
        ] {
            assert!(is_urgent(sev(l), l), "{l}");
        }
        for l in [
            "GET /index.html 200",
            "INFO worker started",
            "WARN slow query took 2s",
        ] {
            assert!(!is_urgent(sev(l), l), "{l}");
        }
    }
}
