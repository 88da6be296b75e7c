//! The async shell around the log sources and the pipeline: a task per
//! source (a `journalctl` child process in export format, a poll-driven tailer
//! per file) sends line batches over a bounded channel (overflow policy:
//! block, so a slow pipeline slows the readers and nothing is dropped) to the
//! pipeline task, which emits summaries every window together with the
//! source positions they cover. The link persists those positions only once
//! the hub has acknowledged the summaries, so a restart neither skips lines
//! nor counts them twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wingman_protocol::logs::{LogSource, LogSourceKind, RedactConfig, Severity};
use wingman_protocol::{Fact, FactBody};

use super::journal::{ExportParser, journalctl_args};
use super::miner::MinerConfig;
use super::pipeline::{LineMeta, Pipeline, PipelineConfig};
use super::raw::RawStore;
use super::tail::{FileTailer, Position, TailConfig};
use crate::config::{FileSourceConfig, JournalConfig, LogsConfig};

/// Cursor-store key of the journal position.
pub const JOURNAL_KEY: &str = "journal";

/// Cursor-store key of a file's position.
pub fn file_key(path: &Path) -> String {
    format!("file:{}", path.display())
}

/// One line from a source.
#[derive(Debug)]
pub struct SourceLine {
    /// Where it came from.
    pub source: LogSource,
    /// When it was logged, Unix ms.
    pub ts_ms: i64,
    /// Source-provided severity.
    pub severity: Option<Severity>,
    /// The raw bytes.
    pub bytes: Vec<u8>,
}

/// A batch of lines from one source and the position after them.
#[derive(Debug)]
pub struct SourceEvent {
    /// Cursor-store key.
    pub key: String,
    /// Position after the last line, to persist once summarised and acked.
    pub position: Option<String>,
    /// The lines.
    pub lines: Vec<SourceLine>,
    /// Entries the source could not parse.
    pub unparsable: u32,
    /// The source for `unparsable` counts.
    pub source: LogSource,
    /// Send redacted examples for these lines.
    pub examples: bool,
    /// Keep these lines in the local raw store.
    pub raw: bool,
}

/// Summaries and the source positions they cover.
#[derive(Debug, Clone)]
pub struct LogBatch {
    /// Summary facts.
    pub facts: Vec<Fact>,
    /// (cursor-store key, position) to persist once acknowledged.
    pub checkpoint: Vec<(String, String)>,
}

/// Starts the sources and the pipeline; summaries go to `batch_tx`. Returns
/// a sender other sources (container logs) use to feed the pipeline.
pub fn spawn(
    cfg: &LogsConfig,
    state_dir: &Path,
    saved: &BTreeMap<String, String>,
    batch_tx: mpsc::Sender<LogBatch>,
    shutdown: CancellationToken,
) -> mpsc::Sender<SourceEvent> {
    let (line_tx, line_rx) = mpsc::channel::<SourceEvent>(256);
    if cfg.journal.enabled {
        tokio::spawn(journal_task(
            cfg.journal.clone(),
            cfg.max_line_bytes,
            saved.get(JOURNAL_KEY).cloned(),
            line_tx.clone(),
            shutdown.clone(),
        ));
    }
    for f in &cfg.files {
        let pos = saved
            .get(&file_key(&f.path))
            .and_then(|p| p.parse::<Position>().ok());
        tokio::spawn(file_task(
            f.clone(),
            cfg.max_line_bytes,
            pos,
            line_tx.clone(),
            shutdown.clone(),
        ));
    }
    tokio::spawn(pipeline_task(
        cfg.clone(),
        state_dir.join("raw"),
        line_rx,
        batch_tx,
        shutdown,
    ));
    line_tx
}

async fn send_event(
    tx: &mpsc::Sender<SourceEvent>,
    ev: SourceEvent,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        r = tx.send(ev) => r.is_ok(),
    }
}

async fn journal_task(
    cfg: JournalConfig,
    max_line: usize,
    mut cursor: Option<String>,
    tx: mpsc::Sender<SourceEvent>,
    shutdown: CancellationToken,
) {
    let generic = LogSource {
        kind: LogSourceKind::Journal,
        name: "journal".into(),
    };
    let mut delay = Duration::from_secs(1);
    loop {
        let mut args = journalctl_args(cursor.as_deref(), &cfg.units);
        if let Some(dir) = &cfg.directory {
            args.insert(0, format!("--directory={}", dir.display()));
        }
        let child = tokio::process::Command::new(&cfg.journalctl)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                warn!(program = %cfg.journalctl, "journalctl not found; the journal source is off");
                return;
            }
            Err(error) => {
                warn!(%error, "cannot start journalctl; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(60));
                continue;
            }
        };
        info!(resume = cursor.is_some(), "following the journal");
        let Some(mut stdout) = child.stdout.take() else {
            return;
        };
        let mut parser = ExportParser::new(super::journal::ParserConfig {
            max_message_len: max_line,
            ..Default::default()
        });
        let mut buf = vec![0u8; 64 * 1024];
        let mut got_any = false;
        loop {
            let n = tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = child.kill().await;
                    return;
                }
                r = stdout.read(&mut buf) => r,
            };
            let eof = !matches!(n, Ok(n) if n > 0);
            if let Ok(n) = n {
                parser.push(buf.get(..n).unwrap_or_default());
            }
            let mut ev = SourceEvent {
                key: JOURNAL_KEY.into(),
                position: None,
                lines: Vec::new(),
                unparsable: 0,
                source: generic.clone(),
                examples: cfg.examples,
                raw: cfg.raw,
            };
            loop {
                let next = if eof {
                    parser.finish()
                } else {
                    parser.next_entry()
                };
                let Some(entry) = next else { break };
                match entry {
                    Ok(e) => {
                        let name = e
                            .unit
                            .clone()
                            .or_else(|| e.identifier.clone())
                            .unwrap_or_else(|| "journal".into());
                        ev.position = Some(e.cursor.clone());
                        cursor = Some(e.cursor.clone());
                        ev.lines.push(SourceLine {
                            source: LogSource {
                                kind: LogSourceKind::Journal,
                                name,
                            },
                            ts_ms: i64::try_from(e.realtime_us / 1000).unwrap_or(i64::MAX),
                            severity: e.priority.map(Severity::from_priority),
                            bytes: e.message,
                        });
                    }
                    Err(_) => ev.unparsable += 1,
                }
            }
            if (!ev.lines.is_empty() || ev.unparsable > 0) && !send_event(&tx, ev, &shutdown).await
            {
                return;
            }
            if !eof {
                got_any = true;
                continue;
            }
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut err).await;
            }
            let status = child.wait().await;
            if err.contains("Failed to seek to cursor") {
                warn!("the saved journal cursor is no longer valid; following from the end");
                cursor = None;
            }
            warn!(?status, stderr = %err.trim(), "journalctl exited; restarting it");
            break;
        }
        if got_any {
            delay = Duration::from_secs(1);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

async fn file_task(
    cfg: FileSourceConfig,
    max_line: usize,
    saved: Option<Position>,
    tx: mpsc::Sender<SourceEvent>,
    shutdown: CancellationToken,
) {
    let source = LogSource {
        kind: LogSourceKind::File,
        name: cfg.path.display().to_string(),
    };
    let key = file_key(&cfg.path);
    let tail_cfg = TailConfig {
        max_line_len: max_line,
        ..TailConfig::default()
    };
    // A first start follows an existing file from its end; that starting
    // point is announced at once so a crash before the first summary does not
    // move it (a restart without a saved position would start at the end again).
    let mut announce = saved.is_none();
    let mut tailer = Some(FileTailer::open(cfg.path.clone(), saved, tail_cfg));
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        loop {
            let Some(mut t) = tailer.take() else { return };
            let joined = tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                let r = t.poll(&mut out);
                (t, out, r)
            })
            .await;
            let Ok((t, lines, result)) = joined else {
                warn!(path = %cfg.path.display(), "file tailer task failed");
                return;
            };
            if let Err(error) = &result {
                warn!(path = %cfg.path.display(), %error, "cannot read log file");
            }
            let caught_up = t.caught_up();
            let position = t.position().map(|p| p.to_string());
            tailer = Some(t);
            if announce && lines.is_empty() && position.is_some() {
                announce = false;
                let ev = SourceEvent {
                    key: key.clone(),
                    position: position.clone(),
                    lines: Vec::new(),
                    unparsable: 0,
                    source: source.clone(),
                    examples: cfg.examples,
                    raw: cfg.raw,
                };
                if !send_event(&tx, ev, &shutdown).await {
                    return;
                }
            }
            if !lines.is_empty() {
                announce = false;
                let now = crate::now_ms();
                let ev = SourceEvent {
                    key: key.clone(),
                    position,
                    lines: lines
                        .into_iter()
                        .map(|l| SourceLine {
                            source: source.clone(),
                            ts_ms: now,
                            severity: None,
                            bytes: l.bytes,
                        })
                        .collect(),
                    unparsable: 0,
                    source: source.clone(),
                    examples: cfg.examples,
                    raw: cfg.raw,
                };
                if !send_event(&tx, ev, &shutdown).await {
                    return;
                }
            }
            if caught_up {
                break;
            }
        }
    }
}

fn pipeline_config(cfg: &LogsConfig) -> PipelineConfig {
    PipelineConfig {
        window_ms: i64::try_from(cfg.window_ms).unwrap_or(10_000),
        max_line_bytes: cfg.max_line_bytes,
        redact: RedactConfig {
            disabled_rules: cfg.disabled_redaction_rules.clone(),
            extra_secret_keys: cfg.extra_secret_keys.clone(),
            generic_entropy: cfg.redact_high_entropy,
        },
        miner: MinerConfig {
            max_templates: cfg.max_templates,
            ..MinerConfig::default()
        },
        ..PipelineConfig::default()
    }
}

async fn pipeline_task(
    cfg: LogsConfig,
    raw_dir: PathBuf,
    mut rx: mpsc::Receiver<SourceEvent>,
    tx: mpsc::Sender<LogBatch>,
    shutdown: CancellationToken,
) {
    let mut pipeline = Pipeline::new(pipeline_config(&cfg));
    let wants_raw = cfg.journal.raw || cfg.files.iter().any(|f| f.raw);
    let mut raw = if wants_raw {
        match RawStore::open(&raw_dir, cfg.raw.retention_days, cfg.raw.max_bytes) {
            Ok(s) => Some(s),
            Err(error) => {
                warn!(%error, dir = %raw_dir.display(), "cannot open the raw log store; raw lines are not kept");
                None
            }
        }
    } else {
        None
    };
    let mut positions: BTreeMap<String, String> = BTreeMap::new();
    let mut positions_dirty = false;
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.window_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_retention = 0i64;
    let mut raw_errors = 0u64;
    let urgent_after = Duration::from_millis(cfg.urgent_flush_ms);
    loop {
        // An error line closes the windows early (see `urgent_flush_ms`).
        let urgent_at = pipeline
            .urgent_since()
            .filter(|_| !urgent_after.is_zero())
            .map(|since| {
                let age = u64::try_from(crate::now_ms().saturating_sub(since)).unwrap_or(0);
                tokio::time::Instant::now()
                    + urgent_after.saturating_sub(Duration::from_millis(age))
            });
        let flush = tokio::select! {
            () = shutdown.cancelled() => true,
            _ = tick.tick() => true,
            () = tokio::time::sleep_until(urgent_at.unwrap_or_else(tokio::time::Instant::now)), if urgent_at.is_some() => true,
            ev = rx.recv() => {
                let Some(ev) = ev else {
                    // Every source is gone: close the last window and stop.
                    let summaries = pipeline.flush(crate::now_ms());
                    if !summaries.is_empty() {
                        let facts = summaries.into_iter().map(|s| Fact { observed_at_ms: s.window_end_ms, body: FactBody::LogSummary(s) }).collect();
                        let _ = tx.try_send(LogBatch { facts, checkpoint: positions.into_iter().collect() });
                    }
                    return;
                };
                let now = crate::now_ms();
                for line in &ev.lines {
                    let meta = LineMeta {
                        source: &line.source,
                        ts_ms: line.ts_ms,
                        severity: line.severity,
                        examples: ev.examples,
                    };
                    pipeline.handle_line(now, &meta, &line.bytes);
                    if ev.raw && let Some(store) = raw.as_mut() {
                        let text = String::from_utf8_lossy(&line.bytes);
                        if store
                            .append(line.ts_ms, line.source.kind.as_str(), &line.source.name,
                                    line.severity.map(Severity::priority), &text)
                            .is_err()
                        {
                            raw_errors += 1;
                        }
                    }
                }
                if ev.unparsable > 0 {
                    pipeline.note_unparsable(now, &ev.source, ev.unparsable);
                }
                if let Some(p) = ev.position {
                    positions_dirty |= positions.get(&ev.key) != Some(&p);
                    positions.insert(ev.key, p);
                }
                false
            }
        };
        if !flush {
            continue;
        }
        let now = crate::now_ms();
        let summaries = pipeline.flush(now);
        if summaries.is_empty() && positions_dirty {
            // Positions moved without a summary (a source's starting point):
            // a batch with no facts carries them to the link.
            positions_dirty = false;
            let batch = LogBatch {
                facts: Vec::new(),
                checkpoint: positions
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            };
            tokio::select! {
                () = shutdown.cancelled() => {}
                r = tx.send(batch) => if r.is_err() { return },
            }
        }
        if !summaries.is_empty() {
            positions_dirty = false;
            let batch = LogBatch {
                facts: summaries
                    .into_iter()
                    .map(|s| Fact {
                        observed_at_ms: s.window_end_ms,
                        body: FactBody::LogSummary(s),
                    })
                    .collect(),
                checkpoint: positions
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            };
            if shutdown.is_cancelled() {
                // Best effort at shutdown; unsent summaries are re-read on restart
                // because their positions were never acknowledged.
                let _ = tx.try_send(batch);
            } else {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    r = tx.send(batch) => if r.is_err() { return },
                }
            }
        }
        if raw_errors > 0 {
            warn!(raw_errors, "raw log store writes failed");
            raw_errors = 0;
        }
        if let Some(store) = raw.as_mut()
            && now - last_retention > 3_600_000
        {
            store.enforce(now);
            last_retention = now;
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}
