//! Ollama's native API (integrations §5.6): `POST /api/chat` with `format` set
//! to the JSON schema and `stream: false`, and `POST /api/embed` for
//! embeddings. No auth by default (an optional Bearer key for a reverse
//! proxy). Ollama is a local provider: it accepts [`LocalPrompt`]s as well.
//!
//! [`LocalPrompt`]: super::LocalPrompt

use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};

use super::config::OllamaConfig;
use super::error::LlmError;
use super::exchange::Usage;
use super::http::{ErrInfo, Reply, Transport, count, json_object};
use super::retry::RetryPolicy;
use super::schema::OutputSchema;
use super::{Embedder, Locality, Outcome, PromptRef, Provider, TaskKind};

/// Chat path.
pub const CHAT_PATH: &str = "/api/chat";
/// Embedding path.
pub const EMBED_PATH: &str = "/api/embed";

/// Ollama chat and embeddings.
#[derive(Debug, Clone)]
pub struct OllamaProvider {
    t: Transport,
    embed_model: String,
    max_tokens: u32,
    temperature: Option<f32>,
    num_ctx: Option<u32>,
    keep_alive: Option<String>,
}

impl OllamaProvider {
    /// Builds the client.
    pub fn new(cfg: &OllamaConfig, retry: &RetryPolicy) -> Result<Self, LlmError> {
        let common = cfg.common();
        let auth = common.key.is_some().then_some((AUTHORIZATION, "Bearer "));
        Ok(Self {
            t: Transport::new("ollama", &common, retry, auth, &[])?,
            embed_model: cfg.embed_model.clone().unwrap_or_else(|| cfg.model.clone()),
            max_tokens: cfg.max_tokens,
            temperature: cfg.temperature,
            num_ctx: cfg.num_ctx,
            keep_alive: cfg.keep_alive.clone(),
        })
    }

    fn chat_body(&self, prompt: PromptRef<'_>, schema: &OutputSchema) -> Vec<u8> {
        let mut options = json!({"num_predict": self.max_tokens});
        if let Some(t) = self.temperature {
            options["temperature"] = json!(t);
        }
        if let Some(n) = self.num_ctx {
            options["num_ctx"] = json!(n);
        }
        let mut b = json!({
            "model": self.t.model,
            "messages": [
                {"role": "system", "content": prompt.system()},
                {"role": "user", "content": prompt.user()},
            ],
            "format": schema.schema,
            "stream": false,
            "options": options,
        });
        if let Some(k) = &self.keep_alive {
            b["keep_alive"] = json!(k);
        }
        serde_json::to_vec(&b).unwrap_or_default()
    }
}

fn usage_of(v: &Value) -> Usage {
    Usage {
        prompt_tokens: count(v, "prompt_eval_count"),
        completion_tokens: count(v, "eval_count"),
    }
}

fn parse_chat(bytes: &[u8]) -> Reply {
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
    let output = if let Some(e) = v.get("error").and_then(Value::as_str) {
        Err(LlmError::InvalidOutput(e.to_owned()))
    } else if v.get("done_reason").and_then(Value::as_str) == Some("length") {
        Err(LlmError::InvalidOutput(
            "reply cut off at num_predict".into(),
        ))
    } else {
        v.pointer("/message/content")
            .and_then(Value::as_str)
            .ok_or_else(|| LlmError::InvalidOutput("message has no content".into()))
            .and_then(json_object)
    };
    Reply {
        usage: usage_of(&v),
        model: v.get("model").and_then(Value::as_str).map(str::to_owned),
        output,
    }
}

fn parse_embed(bytes: &[u8]) -> Reply {
    let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let output = match v.get("embeddings") {
        Some(e @ Value::Array(_)) => Ok(e.clone()),
        _ => Err(LlmError::InvalidOutput("no embeddings in response".into())),
    };
    Reply {
        usage: usage_of(&v),
        model: v.get("model").and_then(Value::as_str).map(str::to_owned),
        output,
    }
}

/// Parses `{"error":"…"}`.
fn parse_err(bytes: &[u8]) -> ErrInfo {
    let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    ErrInfo {
        message: v.get("error").and_then(Value::as_str).map_or_else(
            || String::from_utf8_lossy(bytes).into_owned(),
            str::to_owned,
        ),
        quota: false,
    }
}

#[async_trait::async_trait]
impl Provider for OllamaProvider {
    fn name(&self) -> &'static str {
        "ollama"
    }

    fn model(&self) -> &str {
        &self.t.model
    }

    fn locality(&self) -> Locality {
        Locality::Local
    }

    async fn complete(&self, prompt: PromptRef<'_>, schema: &OutputSchema) -> Outcome {
        let b = self.chat_body(prompt, schema);
        self.t
            .call(
                prompt.task(),
                CHAT_PATH,
                b,
                Some(&schema.schema),
                &parse_chat,
                parse_err,
            )
            .await
    }
}

#[async_trait::async_trait]
impl Embedder for OllamaProvider {
    fn name(&self) -> &'static str {
        "ollama"
    }

    fn model(&self) -> &str {
        &self.embed_model
    }

    async fn embed(&self, inputs: &[&str]) -> Outcome<Vec<Vec<f32>>> {
        let body = serde_json::to_vec(&json!({"model": self.embed_model, "input": inputs}))
            .unwrap_or_default();
        let out = self
            .t
            .call(
                TaskKind::Embedding,
                EMBED_PATH,
                body,
                None,
                &parse_embed,
                parse_err,
            )
            .await;
        let n = inputs.len();
        let result = out.result.and_then(|c| {
            let vecs: Vec<Vec<f32>> = serde_json::from_value(c.value)
                .map_err(|e| LlmError::InvalidOutput(format!("embeddings: {e}")))?;
            if vecs.len() == n {
                Ok(vecs)
            } else {
                Err(LlmError::InvalidOutput(format!(
                    "{} embeddings for {n} inputs",
                    vecs.len()
                )))
            }
        });
        Outcome {
            result,
            exchanges: out.exchanges,
        }
    }
}
