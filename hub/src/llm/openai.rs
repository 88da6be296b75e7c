//! OpenAI Chat Completions (integrations §5.2) and OpenRouter (§5.5), which
//! speaks the same dialect at its own base URL with attribution headers.
//!
//! Structured output uses `response_format: {type: json_schema, json_schema:
//! {name, description, schema, strict: true}}`; the JSON arrives as a string
//! in `choices[0].message.content`, or `refusal` is set instead.

use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};

use super::config::{OpenAiConfig, OpenRouterConfig};
use super::error::LlmError;
use super::exchange::Usage;
use super::http::{ErrInfo, Reply, Transport, count, json_object};
use super::retry::RetryPolicy;
use super::schema::OutputSchema;
use super::{Locality, Outcome, PromptRef, Provider};

/// The path appended to the base URL.
pub const CHAT_PATH: &str = "/chat/completions";

/// Request body in the Chat Completions dialect. `max_field` is
/// `max_completion_tokens` (OpenAI) or `max_tokens` (OpenRouter).
fn body(
    model: &str,
    prompt: PromptRef<'_>,
    schema: &OutputSchema,
    max_field: &str,
    max_tokens: u32,
    temperature: Option<f32>,
) -> Vec<u8> {
    let mut b = json!({
        "model": model,
        "messages": [
            {"role": "system", "content": prompt.system()},
            {"role": "user", "content": prompt.user()},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": schema.name,
                "description": schema.description,
                "schema": schema.schema,
                "strict": true,
            }
        },
        "stream": false,
    });
    b[max_field] = json!(max_tokens);
    if let Some(t) = temperature {
        b["temperature"] = json!(t);
    }
    serde_json::to_vec(&b).unwrap_or_default()
}

/// Parses a 2xx Chat Completions reply.
pub(super) fn parse_ok(bytes: &[u8]) -> Reply {
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
        prompt_tokens: v.get("usage").and_then(|u| count(u, "prompt_tokens")),
        completion_tokens: v.get("usage").and_then(|u| count(u, "completion_tokens")),
    };
    let model = v.get("model").and_then(Value::as_str).map(str::to_owned);
    let output = (|| {
        let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
            let msg = v
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no choices in response");
            return Err(LlmError::InvalidOutput(msg.to_owned()));
        };
        let msg = choice.get("message").unwrap_or(&Value::Null);
        if let Some(r) = msg.get("refusal").and_then(Value::as_str) {
            return Err(LlmError::Refused(r.to_owned()));
        }
        match choice.get("finish_reason").and_then(Value::as_str) {
            Some("length") => {
                return Err(LlmError::InvalidOutput(
                    "reply cut off at max tokens".into(),
                ));
            }
            Some("content_filter") => {
                return Err(LlmError::Refused("content filter".into()));
            }
            _ => {}
        }
        let text = msg
            .get("content")
            .and_then(Value::as_str)
            .ok_or_else(|| LlmError::InvalidOutput("message has no content".into()))?;
        json_object(text)
    })();
    Reply {
        usage,
        model,
        output,
    }
}

/// Parses `{"error":{"message","type","code"}}` (OpenAI) or
/// `{"error":{"code":<int>,"message"}}` (OpenRouter).
pub(super) fn parse_err(bytes: &[u8]) -> ErrInfo {
    let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let message = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map_or_else(
            || String::from_utf8_lossy(bytes).into_owned(),
            str::to_owned,
        );
    let is_quota = |p: &str| v.pointer(p).and_then(Value::as_str) == Some("insufficient_quota");
    ErrInfo {
        message,
        quota: is_quota("/error/code") || is_quota("/error/type"),
    }
}

/// The Chat Completions dialect both OpenAI and OpenRouter speak; they
/// differ only in headers and the name of the token limit.
#[derive(Debug, Clone)]
struct ChatDialect {
    t: Transport,
    max_tokens: u32,
    /// `max_completion_tokens` (OpenAI) or `max_tokens` (OpenRouter).
    tokens_field: &'static str,
    temperature: Option<f32>,
}

impl ChatDialect {
    async fn complete(&self, name: &str, prompt: PromptRef<'_>, schema: &OutputSchema) -> Outcome {
        if let PromptRef::Local(_) = prompt {
            return Outcome::refused(cloud_refusal(name));
        }
        let b = body(
            &self.t.model,
            prompt,
            schema,
            self.tokens_field,
            self.max_tokens,
            self.temperature,
        );
        self.t
            .call(
                prompt.task(),
                CHAT_PATH,
                b,
                Some(&schema.schema),
                &parse_ok,
                parse_err,
            )
            .await
    }
}

/// OpenAI Chat Completions.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    d: ChatDialect,
}

impl OpenAiProvider {
    /// Builds the client; fails without a key.
    pub fn new(cfg: &OpenAiConfig, retry: &RetryPolicy) -> Result<Self, LlmError> {
        let mut extra = Vec::new();
        if let Some(o) = &cfg.organization {
            extra.push(("openai-organization", o.clone()));
        }
        if let Some(p) = &cfg.project {
            extra.push(("openai-project", p.clone()));
        }
        Ok(Self {
            d: ChatDialect {
                t: Transport::new(
                    "openai",
                    &cfg.common(),
                    retry,
                    Some((AUTHORIZATION, "Bearer ")),
                    &extra,
                )?,
                max_tokens: cfg.max_tokens,
                tokens_field: "max_completion_tokens",
                temperature: cfg.temperature,
            },
        })
    }
}

#[async_trait::async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn model(&self) -> &str {
        &self.d.t.model
    }

    fn locality(&self) -> Locality {
        Locality::Cloud
    }

    async fn complete(&self, prompt: PromptRef<'_>, schema: &OutputSchema) -> Outcome {
        self.d.complete(self.name(), prompt, schema).await
    }
}

/// OpenRouter: the OpenAI dialect plus `HTTP-Referer` / `X-Title`.
#[derive(Debug, Clone)]
pub struct OpenRouterProvider {
    d: ChatDialect,
}

impl OpenRouterProvider {
    /// Builds the client; fails without a key.
    pub fn new(cfg: &OpenRouterConfig, retry: &RetryPolicy) -> Result<Self, LlmError> {
        let mut extra = Vec::new();
        if let Some(r) = &cfg.http_referer {
            extra.push(("http-referer", r.clone()));
        }
        if let Some(t) = &cfg.x_title {
            extra.push(("x-title", t.clone()));
        }
        Ok(Self {
            d: ChatDialect {
                t: Transport::new(
                    "openrouter",
                    &cfg.common(),
                    retry,
                    Some((AUTHORIZATION, "Bearer ")),
                    &extra,
                )?,
                max_tokens: cfg.max_tokens,
                tokens_field: "max_tokens",
                temperature: cfg.temperature,
            },
        })
    }
}

#[async_trait::async_trait]
impl Provider for OpenRouterProvider {
    fn name(&self) -> &'static str {
        "openrouter"
    }

    fn model(&self) -> &str {
        &self.d.t.model
    }

    fn locality(&self) -> Locality {
        Locality::Cloud
    }

    async fn complete(&self, prompt: PromptRef<'_>, schema: &OutputSchema) -> Outcome {
        self.d.complete(self.name(), prompt, schema).await
    }
}

/// The error for a local-only prompt offered to a cloud provider.
pub(super) fn cloud_refusal(provider: &str) -> LlmError {
    LlmError::PrivacyClass(format!(
        "a local-only prompt (with example log lines) cannot be sent to {provider}"
    ))
}
