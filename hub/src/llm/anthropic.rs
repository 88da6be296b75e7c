//! Anthropic Messages (integrations §5.4). Structured output is forced
//! through a single tool (`tools: [{name, description, input_schema}]` with
//! `tool_choice: {type: "tool", name}`), the most portable option; the reply's
//! `tool_use` block carries the JSON object as `input`.

use reqwest::header::{AUTHORIZATION, HeaderName};
use serde_json::{Value, json};

use super::config::{AnthropicAuth, AnthropicConfig};
use super::error::LlmError;
use super::exchange::Usage;
use super::http::{ErrInfo, Reply, Transport, count};
use super::openai::cloud_refusal;
use super::retry::RetryPolicy;
use super::schema::OutputSchema;
use super::{Locality, Outcome, PromptRef, Provider};

/// The path appended to the base URL.
pub const MESSAGES_PATH: &str = "/v1/messages";

/// Anthropic Messages.
#[derive(Debug, Clone)]
pub struct AnthropicProvider {
    t: Transport,
    max_tokens: u32,
    temperature: Option<f32>,
}

impl AnthropicProvider {
    /// Builds the client; fails without a key.
    pub fn new(cfg: &AnthropicConfig, retry: &RetryPolicy) -> Result<Self, LlmError> {
        let mut extra = vec![("anthropic-version", cfg.anthropic_version.clone())];
        if let Some(b) = &cfg.anthropic_beta {
            extra.push(("anthropic-beta", b.clone()));
        }
        let auth = match cfg.auth {
            AnthropicAuth::XApiKey => (HeaderName::from_static("x-api-key"), ""),
            AnthropicAuth::Bearer => (AUTHORIZATION, "Bearer "),
        };
        Ok(Self {
            t: Transport::new("anthropic", &cfg.common(), retry, Some(auth), &extra)?,
            max_tokens: cfg.max_tokens,
            temperature: cfg.temperature,
        })
    }

    fn body(&self, prompt: PromptRef<'_>, schema: &OutputSchema) -> Vec<u8> {
        let mut b = json!({
            "model": self.t.model,
            "max_tokens": self.max_tokens,
            "system": prompt.system(),
            "messages": [{"role": "user", "content": prompt.user()}],
            "tools": [{
                "name": schema.name,
                "description": schema.description,
                "input_schema": schema.schema,
            }],
            "tool_choice": {"type": "tool", "name": schema.name},
            "stream": false,
        });
        if let Some(t) = self.temperature {
            b["temperature"] = json!(t);
        }
        serde_json::to_vec(&b).unwrap_or_default()
    }
}

fn parse_ok(bytes: &[u8], tool: &str) -> Reply {
    let v: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            return Reply {
                usage: Usage::default(),
                model: None,
                output: Err(LlmError::InvalidOutput(format!(
                    "response is not JSON: {e}"
                ))),
            };
        }
    };
    let usage = Usage {
        prompt_tokens: v.get("usage").and_then(|u| count(u, "input_tokens")),
        completion_tokens: v.get("usage").and_then(|u| count(u, "output_tokens")),
    };
    let model = v.get("model").and_then(Value::as_str).map(str::to_owned);
    let output = match v.get("stop_reason").and_then(Value::as_str) {
        Some("refusal") => Err(LlmError::Refused("stop_reason refusal".into())),
        Some("max_tokens") => Err(LlmError::InvalidOutput(
            "reply cut off at max_tokens".into(),
        )),
        _ => v
            .get("content")
            .and_then(Value::as_array)
            .and_then(|blocks| {
                blocks.iter().find(|b| {
                    b.get("type").and_then(Value::as_str) == Some("tool_use")
                        && b.get("name").and_then(Value::as_str) == Some(tool)
                })
            })
            .and_then(|b| b.get("input"))
            .filter(|i| i.is_object())
            .cloned()
            .ok_or_else(|| {
                LlmError::InvalidOutput(format!(
                    "no tool_use block for {tool} with an object input"
                ))
            }),
    };
    Reply {
        usage,
        model,
        output,
    }
}

/// Parses `{"type":"error","error":{"type","message"}}`.
fn parse_err(bytes: &[u8]) -> ErrInfo {
    let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let message = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map_or_else(
            || String::from_utf8_lossy(bytes).into_owned(),
            str::to_owned,
        );
    let quota = v
        .pointer("/error/details/error_code")
        .and_then(Value::as_str)
        == Some("enforced_spend_limit_reached")
        || v.pointer("/error/type").and_then(Value::as_str) == Some("billing_error");
    ErrInfo { message, quota }
}

#[async_trait::async_trait]
impl Provider for AnthropicProvider {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn model(&self) -> &str {
        &self.t.model
    }

    fn locality(&self) -> Locality {
        Locality::Cloud
    }

    async fn complete(&self, prompt: PromptRef<'_>, schema: &OutputSchema) -> Outcome {
        if let PromptRef::Local(_) = prompt {
            return Outcome::refused(cloud_refusal(self.name()));
        }
        let b = self.body(prompt, schema);
        let tool = schema.name.clone();
        let ok = move |bytes: &[u8]| parse_ok(bytes, &tool);
        self.t
            .call(
                prompt.task(),
                MESSAGES_PATH,
                b,
                Some(&schema.schema),
                &ok,
                parse_err,
            )
            .await
    }
}
