//! [`Exchange`]: the record of one HTTP attempt, so the hub can store exactly
//! what the model saw for an incident, and [`Pricing`] for cost estimates.

use serde::{Deserialize, Serialize};

use super::TaskKind;

/// One HTTP request to a model and its outcome. Every attempt, including
/// retried and failed ones, produces one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// Provider name (`openai`, `anthropic`, `openrouter`, `ollama`).
    pub provider: String,
    /// Model requested.
    pub model: String,
    /// What the call was for.
    pub task: TaskKind,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// Endpoint path, e.g. `/v1/chat/completions` (no host, no query).
    pub endpoint: String,
    /// The exact request body sent, byte for byte. Keys travel in headers and
    /// never appear here.
    pub request_body: String,
    /// The response body (lossy UTF-8, key scrubbed, capped at 256 KiB);
    /// `None` when no response arrived.
    pub response_body: Option<String>,
    /// HTTP status; `None` when no response arrived.
    pub status: Option<u16>,
    /// Prompt (input) tokens reported by the provider.
    pub prompt_tokens: Option<u64>,
    /// Completion (output) tokens reported by the provider.
    pub completion_tokens: Option<u64>,
    /// Wall time of the attempt.
    pub latency_ms: u64,
    /// Estimated cost; `None` when prices are not configured or usage unknown.
    pub est_cost_usd: Option<f64>,
    /// Provider request id (`x-request-id`, `request-id`) for support tickets.
    pub request_id: Option<String>,
    /// Unix ms when the attempt started.
    pub started_at_ms: i64,
    /// Why the attempt failed, if it did.
    pub error: Option<String>,
}

/// Prices per million tokens in USD. Zero means unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Pricing {
    /// USD per million prompt tokens.
    pub input_usd_per_mtok: f64,
    /// USD per million completion tokens.
    pub output_usd_per_mtok: f64,
}

impl Pricing {
    /// Estimated cost of a call; `None` when no price is set or no usage is known.
    pub fn estimate(&self, prompt: Option<u64>, completion: Option<u64>) -> Option<f64> {
        if self.input_usd_per_mtok <= 0.0 && self.output_usd_per_mtok <= 0.0 {
            return None;
        }
        if prompt.is_none() && completion.is_none() {
            return None;
        }
        #[allow(clippy::cast_precision_loss)]
        let cost = (prompt.unwrap_or(0) as f64 * self.input_usd_per_mtok
            + completion.unwrap_or(0) as f64 * self.output_usd_per_mtok)
            / 1_000_000.0;
        Some(cost)
    }
}

/// Token counts from one reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt (input) tokens.
    pub prompt_tokens: Option<u64>,
    /// Completion (output) tokens.
    pub completion_tokens: Option<u64>,
}
