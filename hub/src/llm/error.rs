//! [`LlmError`]: every way a model call can fail, in terms the hub acts on.
//!
//! Messages that quote a provider (its error text) are cut to
//! [`MAX_ERROR_TEXT`] bytes and have the API key scrubbed out before they are
//! stored here, so printing an error can never leak the key.

use std::time::Duration;

/// Longest provider error text kept, in bytes.
pub const MAX_ERROR_TEXT: usize = 300;

/// A failed model call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// The key was refused (401/403).
    #[error("unauthorized (HTTP {status}): {message}")]
    Unauthorized {
        /// HTTP status.
        status: u16,
        /// Provider text, truncated, key removed.
        message: String,
    },
    /// 429 (or 529 overloaded) after the retry budget was spent, or with a
    /// Retry-After longer than the policy is willing to wait.
    #[error("rate limited (retry after {retry_after:?}): {message}")]
    RateLimited {
        /// The server's Retry-After, when it sent one.
        retry_after: Option<Duration>,
        /// Provider text, truncated, key removed.
        message: String,
    },
    /// Quota or billing exhausted (OpenAI `insufficient_quota`, Anthropic spend
    /// limit, OpenRouter 402). Never retried.
    #[error("quota or billing limit reached (HTTP {status}): {message}")]
    Quota {
        /// HTTP status.
        status: u16,
        /// Provider text, truncated, key removed.
        message: String,
    },
    /// The model declined to answer (OpenAI `refusal`, Anthropic
    /// `stop_reason: refusal`, content filter).
    #[error("model refused: {0}")]
    Refused(String),
    /// The reply was not valid JSON, did not match the schema, was cut off, or
    /// cited evidence that was not in the prompt.
    #[error("invalid model output: {0}")]
    InvalidOutput(String),
    /// Connection-level failure (DNS, refused, reset, TLS).
    #[error("transport error: {0}")]
    Transport(String),
    /// The request did not complete within the configured timeout.
    #[error("timed out")]
    Timeout,
    /// Any other non-success status (400, 404, 5xx after retries, ...).
    #[error("provider error (HTTP {status}): {message}")]
    Provider {
        /// HTTP status.
        status: u16,
        /// Provider text, truncated, key removed.
        message: String,
    },
    /// The prompt's data class may not go to this provider (a [`LocalPrompt`]
    /// offered to a cloud provider). Nothing was sent.
    ///
    /// [`LocalPrompt`]: super::LocalPrompt
    #[error("privacy policy: {0}")]
    PrivacyClass(String),
    /// Invalid provider configuration (missing key, bad URL). Nothing was sent.
    #[error("configuration: {0}")]
    Config(String),
}

impl LlmError {
    /// True for failures worth trying again later (rate limits, timeouts,
    /// transport and 5xx errors).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Timeout | Self::Transport(_) => true,
            Self::Provider { status, .. } => *status >= 500 || *status == 408 || *status == 409,
            _ => false,
        }
    }
}

/// Cuts `s` to at most `max` bytes on a char boundary, appending `…` when cut.
pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = s.get(..cut).unwrap_or_default().to_owned();
    out.push('…');
    out
}
