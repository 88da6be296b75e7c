//! The shared retry policy (integrations §5.1).
//!
//! Retried: connection errors and timeouts, 408, 409, 429, 5xx and Anthropic's
//! 529 — unless the server says `x-should-retry: false` or the 429 is really a
//! quota/billing error. Not retried: every other 4xx. The wait honours
//! `retry-after-ms`, then `retry-after` (seconds or HTTP date), otherwise
//! exponential backoff with jitter (0.5 s start, 8 s cap). Two retries by
//! default, the official SDKs' setting. A Retry-After longer than
//! [`RetryPolicy::max_retry_after`] is not waited for: the call fails with
//! [`LlmError::RateLimited`](super::LlmError::RateLimited) carrying it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use serde::Deserialize;

/// How often and how long to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff delay.
    pub initial_delay: Duration,
    /// Backoff cap.
    pub max_delay: Duration,
    /// Longest server-requested wait that is honoured in-line.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 2,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// `[llm.retry]` in the hub config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// `max_retries`: retries after the first attempt (default 2).
    pub max_retries: u32,
    /// `initial_delay_ms`: first backoff delay (default 500).
    pub initial_delay_ms: u64,
    /// `max_delay_ms`: backoff cap (default 8000).
    pub max_delay_ms: u64,
    /// `max_retry_after_secs`: longest Retry-After honoured (default 60).
    pub max_retry_after_secs: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let p = RetryPolicy::default();
        Self {
            max_retries: p.max_retries,
            initial_delay_ms: 500,
            max_delay_ms: 8000,
            max_retry_after_secs: 60,
        }
    }
}

impl From<&RetryConfig> for RetryPolicy {
    fn from(c: &RetryConfig) -> Self {
        Self {
            max_retries: c.max_retries,
            initial_delay: Duration::from_millis(c.initial_delay_ms),
            max_delay: Duration::from_millis(c.max_delay_ms),
            max_retry_after: Duration::from_secs(c.max_retry_after_secs),
        }
    }
}

impl RetryPolicy {
    /// Whether a response with this status and headers may be retried
    /// (before looking at quota errors in the body).
    pub fn status_retryable(status: u16, headers: &HeaderMap) -> bool {
        match headers
            .get("x-should-retry")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
        {
            Some("true") => return true,
            Some("false") => return false,
            _ => {}
        }
        matches!(status, 408 | 409 | 429) || status >= 500
    }

    /// Exponential backoff with up to 25% negative jitter for retry number
    /// `retry` (0 for the first retry).
    pub fn backoff(&self, retry: u32) -> Duration {
        let base = self
            .initial_delay
            .saturating_mul(2u32.saturating_pow(retry.min(16)))
            .min(self.max_delay);
        let jitter = 1.0 - 0.25 * jitter_fraction();
        base.mul_f64(jitter)
    }
}

/// The wait a server asked for: `retry-after-ms`, then `retry-after` as
/// seconds or as an HTTP date (relative to `now`).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = parse_http_date(v)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to Unix seconds.
pub fn parse_http_date(s: &str) -> Option<u64> {
    let mut it = s.split_whitespace();
    let _weekday = it.next()?;
    let day: u64 = it.next()?.parse().ok()?;
    let month = match it.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if it.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::try_from(day).ok()? - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + i64::try_from(h * 3600 + m * 60 + sec).ok()?;
    u64::try_from(secs).ok()
}

/// A number in `[0, 1)` from the clock; good enough to spread retries.
fn jitter_fraction() -> f64 {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mixed = n.wrapping_mul(2_654_435_761) >> 8;
    f64::from(mixed % 1000) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn http_date() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn retry_after_precedence() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_770);
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("10"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(10)));
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn retryable_statuses_and_backoff() {
        let h = HeaderMap::new();
        for s in [408, 409, 429, 500, 502, 503, 529] {
            assert!(RetryPolicy::status_retryable(s, &h), "{s}");
        }
        for s in [400, 401, 402, 403, 404, 422] {
            assert!(!RetryPolicy::status_retryable(s, &h), "{s}");
        }
        let mut no = HeaderMap::new();
        no.insert("x-should-retry", HeaderValue::from_static("false"));
        assert!(!RetryPolicy::status_retryable(503, &no));
        let p = RetryPolicy::default();
        assert!(p.backoff(0) <= Duration::from_millis(500));
        assert!(p.backoff(0) >= Duration::from_millis(375));
        assert!(p.backoff(10) <= Duration::from_secs(8));
    }
}
