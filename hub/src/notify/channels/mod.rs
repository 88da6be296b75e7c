//! The channel implementations, one module per service, plus helpers they
//! share (header-safe text, URL joining, priorities).

pub mod discord;
pub mod email;
pub mod gotify;
pub mod ntfy;
pub mod slack;
pub mod webhook;

use base64::Engine as _;
use reqwest::Url;
use reqwest::header::HeaderValue;

use super::Severity;
use super::config::ConfigError;
use super::egress::parse_url;
use super::message::{Content, Notification};

/// Parses a configured base or webhook URL (http/https, no user-info).
/// `what` names the field for the error; the URL itself is never echoed.
pub(crate) fn config_url(channel: &str, what: &str, raw: &str) -> Result<Url, ConfigError> {
    parse_url(raw.trim()).map_err(|e| ConfigError::Invalid {
        channel: channel.to_owned(),
        detail: format!("{what}: {e}"),
    })
}

/// `base` + `/segment`, keeping any path prefix of `base` (reverse-proxied
/// ntfy or Gotify under `/ntfy/`).
pub(crate) fn join_path(base: &Url, segment: &str) -> Url {
    let mut url = base.clone();
    let path = format!("{}/{}", base.path().trim_end_matches('/'), segment);
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    url
}

/// The incident URL if it is an absolute http(s) URL, normalised.
pub(crate) fn click_url(n: &Notification) -> Option<String> {
    let raw = n.url.as_deref()?;
    let url = Url::parse(raw).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| url.to_string())
}

/// Replaces control characters (CR, LF, ...) with spaces.
pub(crate) fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A header value for arbitrary text: printable ASCII as is, anything else
/// as an RFC 2047 encoded word (`=?UTF-8?B?...?=`), which ntfy decodes.
pub(crate) fn text_header(s: &str) -> HeaderValue {
    let line = one_line(s);
    if line.bytes().all(|b| (0x20..0x7f).contains(&b))
        && let Ok(v) = HeaderValue::from_str(&line)
    {
        return v;
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(line.as_bytes());
    HeaderValue::from_str(&format!("=?UTF-8?B?{encoded}?=")).unwrap_or(HeaderValue::from_static(""))
}

/// Cuts `s` to at most `max` bytes on a char boundary.
pub(crate) fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Urgency 1 (min) .. 5 (max), ntfy's scale; others map from it.
/// Critical 5, warning 4, info 3; resolutions 2; digests 3 (4 when they
/// hold a critical); tests 3.
pub(crate) fn urgency(n: &Notification) -> u8 {
    match &n.content {
        Content::Incident { .. } if n.is_resolution() => 2,
        Content::Incident { .. } => match n.severity {
            Severity::Critical => 5,
            Severity::Warning => 4,
            Severity::Info => 3,
        },
        Content::Digest(d) => {
            if d.max_severity() == Severity::Critical {
                4
            } else {
                3
            }
        }
        Content::Test => 3,
    }
}
