//! Container log plumbing for the log pipeline: follow one container's output
//! with engine timestamps, split into lines, resumable from the last timestamp.
//!
//! Multiplexed output (no TTY) arrives as stdout/stderr frames; a TTY container's
//! output arrives as one raw stream and is reported as stdout. The stream ends
//! when the container stops or the connection drops; the caller re-follows with
//! [`LogStart::SinceNs`] set to the last line's `ts_ns`.

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use futures_util::{Stream, StreamExt as _, stream};
use std::path::PathBuf;

use super::engine::DockerError;
use super::timefmt::{now_ns, parse_rfc3339_ns};

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    /// Standard output (and a TTY container's only stream).
    Stdout,
    /// Standard error.
    Stderr,
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Engine timestamp, Unix nanoseconds (the resume cursor).
    pub ts_ns: i64,
    /// Engine timestamp, Unix milliseconds.
    pub ts_ms: i64,
    /// stdout or stderr.
    pub stream: LogStream,
    /// The line without its timestamp, trailing `\n` and `\r`.
    pub line: Vec<u8>,
}

/// Where to start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStart {
    /// Only lines written from now on.
    Now,
    /// Everything the engine kept.
    All,
    /// Lines strictly after this engine timestamp (Unix nanoseconds).
    SinceNs(i64),
}

/// Follows a container's logs. Each item is one line or an engine error; the
/// stream ends when the container stops or the connection drops.
pub fn follow_logs(
    docker: &Docker,
    container: &str,
    start: LogStart,
) -> impl Stream<Item = Result<LogLine, DockerError>> + Send + use<> {
    let (since, tail, after_ns) = match start {
        LogStart::Now => (0, "0".to_owned(), None),
        LogStart::All => (0, "all".to_owned(), None),
        // The API's `since` has whole seconds: ask from the second, drop what we had.
        LogStart::SinceNs(ns) => (
            i32::try_from(ns.div_euclid(1_000_000_000)).unwrap_or(i32::MAX),
            "all".to_owned(),
            Some(ns),
        ),
    };
    let opts = LogsOptions {
        follow: true,
        stdout: true,
        stderr: true,
        since,
        until: 0,
        timestamps: true,
        tail,
    };
    // Errors name the container (the socket is not known here).
    let context = PathBuf::from(format!("container {container}"));
    let mut last_ts = 0i64;
    docker
        .logs(container, Some(opts))
        .map(move |item| match item {
            Ok(out) => {
                let (stream, bytes) = match out {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        (LogStream::Stdout, message)
                    }
                    LogOutput::StdErr { message } => (LogStream::Stderr, message),
                    LogOutput::StdIn { .. } => return Vec::new(),
                };
                let lines = split_chunk(stream, &bytes, &mut last_ts);
                lines
                    .into_iter()
                    .filter(|l| after_ns.is_none_or(|a| l.ts_ns > a))
                    .map(Ok)
                    .collect()
            }
            Err(e) => vec![Err(DockerError::from_bollard(e, &context))],
        })
        .flat_map(stream::iter)
}

/// Splits one engine chunk into lines and strips each line's timestamp prefix.
/// A piece without a parseable timestamp inherits the previous one (or now).
pub fn split_chunk(stream: LogStream, chunk: &[u8], last_ts: &mut i64) -> Vec<LogLine> {
    let mut out = Vec::new();
    let mut pieces: Vec<&[u8]> = chunk.split(|&b| b == b'\n').collect();
    if pieces.last().is_some_and(|p| p.is_empty()) {
        pieces.pop();
    }
    for piece in pieces {
        let piece = piece.strip_suffix(b"\r").unwrap_or(piece);
        let (ts, body) = match piece.iter().position(|&b| b == b' ') {
            Some(sp) => match std::str::from_utf8(&piece[..sp])
                .ok()
                .and_then(parse_rfc3339_ns)
            {
                Some(ts) => (Some(ts), &piece[sp + 1..]),
                None => (None, piece),
            },
            None => match std::str::from_utf8(piece).ok().and_then(parse_rfc3339_ns) {
                Some(ts) => (Some(ts), &piece[piece.len()..]),
                None => (None, piece),
            },
        };
        let ts_ns = ts.unwrap_or(if *last_ts > 0 { *last_ts } else { now_ns() });
        *last_ts = ts_ns;
        out.push(LogLine {
            ts_ns,
            ts_ms: ts_ns / 1_000_000,
            stream,
            line: body.to_vec(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_strips_timestamps() {
        let mut last = 0;
        let l = split_chunk(
            LogStream::Stderr,
            b"2026-11-25T10:24:35.000000001Z hello world\n",
            &mut last,
        );
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].line, b"hello world");
        assert_eq!(l[0].ts_ns, 1_795_602_275_000_000_001);
        assert_eq!(l[0].ts_ms, 1_795_602_275_000);
        assert_eq!(l[0].stream, LogStream::Stderr);
        // TTY: CRLF, several lines in one chunk, a continuation without timestamp
        let l = split_chunk(
            LogStream::Stdout,
            b"2026-11-25T10:24:36Z a\r\n2026-11-25T10:24:37Z \r\nno-ts\n",
            &mut last,
        );
        let lines: Vec<&[u8]> = l.iter().map(|x| x.line.as_slice()).collect();
        assert_eq!(lines, [&b"a"[..], b"", b"no-ts"]);
        assert_eq!(l[2].ts_ns, l[1].ts_ns);
        // binary garbage never panics
        let l = split_chunk(LogStream::Stdout, &[0xff, 0xfe, b' ', 0, b'\n'], &mut last);
        assert_eq!(l[0].line, [0xff, 0xfe, b' ', 0]);
        // a timestamp with an empty message and no space
        let l = split_chunk(LogStream::Stdout, b"2026-11-25T10:24:38Z", &mut last);
        assert!(l[0].line.is_empty());
    }
}
