//! Provider configuration, as it appears under `[llm]` in the hub's TOML.
//!
//! ```toml
//! [llm.anthropic]
//! model = "claude-sonnet-4-5"
//! api_key_env = "ANTHROPIC_API_KEY"   # or api_key = "..."
//! input_usd_per_mtok = 3.0
//! output_usd_per_mtok = 15.0
//!
//! [llm.ollama]
//! model = "qwen2.5:7b"
//! embed_model = "nomic-embed-text"
//!
//! [llm.routing]
//! narrative = "prefer_cloud"
//! ```
//!
//! Every table rejects unknown fields, so a typo fails config loading.

use std::time::Duration;

use serde::Deserialize;

use super::exchange::Pricing;
use super::prompt::WidenLocal;
use super::retry::RetryConfig;
use super::router::RoutingConfig;
use super::secret::Secret;

/// `[llm]`: every provider is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// `[llm.openai]`.
    pub openai: Option<OpenAiConfig>,
    /// `[llm.anthropic]`.
    pub anthropic: Option<AnthropicConfig>,
    /// `[llm.openrouter]`.
    pub openrouter: Option<OpenRouterConfig>,
    /// `[llm.ollama]`.
    pub ollama: Option<OllamaConfig>,
    /// `[llm.routing]`.
    pub routing: RoutingConfig,
    /// `[llm.retry]`.
    pub retry: RetryConfig,
}

fn d_openai_model() -> String {
    "gpt-4o-mini".to_owned()
}
fn d_anthropic_model() -> String {
    "claude-sonnet-4-5".to_owned()
}
fn d_openrouter_model() -> String {
    "openai/gpt-4o-mini".to_owned()
}
fn d_ollama_model() -> String {
    "qwen2.5:7b".to_owned()
}
fn d_timeout() -> u64 {
    60
}
fn d_local_timeout() -> u64 {
    180
}
fn d_max_tokens() -> u32 {
    1024
}
fn d_openai_url() -> String {
    "https://api.openai.com/v1".to_owned()
}
fn d_anthropic_url() -> String {
    "https://api.anthropic.com".to_owned()
}
fn d_openrouter_url() -> String {
    "https://openrouter.ai/api/v1".to_owned()
}
fn d_ollama_url() -> String {
    "http://127.0.0.1:11434".to_owned()
}
fn d_openai_env() -> String {
    "OPENAI_API_KEY".to_owned()
}
fn d_anthropic_env() -> String {
    "ANTHROPIC_API_KEY".to_owned()
}
fn d_openrouter_env() -> String {
    "OPENROUTER_API_KEY".to_owned()
}
fn d_anthropic_version() -> String {
    "2023-06-01".to_owned()
}
fn d_x_title() -> Option<String> {
    Some("Wingman".to_owned())
}

/// Resolves `api_key`, else the environment variable `api_key_env`.
fn resolve_key(key: Option<&Secret>, env: &str) -> Option<Secret> {
    key.filter(|k| !k.is_empty())
        .cloned()
        .or_else(|| (!env.is_empty()).then(|| Secret::from_env(env)).flatten())
}

/// `[llm.openai]`: OpenAI Chat Completions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// `base_url`, including `/v1` (default `https://api.openai.com/v1`).
    #[serde(default = "d_openai_url")]
    pub base_url: String,
    /// `model`.
    #[serde(default = "d_openai_model")]
    pub model: String,
    /// `api_key` (prefer `api_key_env`).
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// `api_key_env` (default `OPENAI_API_KEY`).
    #[serde(default = "d_openai_env")]
    pub api_key_env: String,
    /// `timeout_secs` per attempt (default 60).
    #[serde(default = "d_timeout")]
    pub timeout_secs: u64,
    /// `max_tokens`, sent as `max_completion_tokens` (default 1024).
    #[serde(default = "d_max_tokens")]
    pub max_tokens: u32,
    /// `temperature` (omitted when unset).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// `input_usd_per_mtok` (0 = unknown).
    #[serde(default)]
    pub input_usd_per_mtok: f64,
    /// `output_usd_per_mtok` (0 = unknown).
    #[serde(default)]
    pub output_usd_per_mtok: f64,
    /// `organization` → `OpenAI-Organization` header.
    #[serde(default)]
    pub organization: Option<String>,
    /// `project` → `OpenAI-Project` header.
    #[serde(default)]
    pub project: Option<String>,
    /// `use_env_proxy`: honour `HTTPS_PROXY` etc. (default false).
    #[serde(default)]
    pub use_env_proxy: bool,
}

/// Which header carries the Anthropic key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnthropicAuth {
    /// `x-api-key: <key>` (documented, default).
    #[default]
    XApiKey,
    /// `Authorization: Bearer <key>` (newer SDKs).
    Bearer,
}

/// `[llm.anthropic]`: Anthropic Messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnthropicConfig {
    /// `base_url`, without `/v1` (default `https://api.anthropic.com`).
    #[serde(default = "d_anthropic_url")]
    pub base_url: String,
    /// `model`.
    #[serde(default = "d_anthropic_model")]
    pub model: String,
    /// `api_key` (prefer `api_key_env`).
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// `api_key_env` (default `ANTHROPIC_API_KEY`).
    #[serde(default = "d_anthropic_env")]
    pub api_key_env: String,
    /// `auth`: `"x_api_key"` (default) or `"bearer"`.
    #[serde(default)]
    pub auth: AnthropicAuth,
    /// `anthropic_version` header (default `2023-06-01`).
    #[serde(default = "d_anthropic_version")]
    pub anthropic_version: String,
    /// `anthropic_beta` header, when set.
    #[serde(default)]
    pub anthropic_beta: Option<String>,
    /// `timeout_secs` per attempt (default 60).
    #[serde(default = "d_timeout")]
    pub timeout_secs: u64,
    /// `max_tokens` (required by the API; default 1024).
    #[serde(default = "d_max_tokens")]
    pub max_tokens: u32,
    /// `temperature` (omitted when unset).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// `input_usd_per_mtok` (0 = unknown).
    #[serde(default)]
    pub input_usd_per_mtok: f64,
    /// `output_usd_per_mtok` (0 = unknown).
    #[serde(default)]
    pub output_usd_per_mtok: f64,
    /// `use_env_proxy` (default false).
    #[serde(default)]
    pub use_env_proxy: bool,
}

/// `[llm.openrouter]`: OpenRouter (OpenAI dialect plus attribution headers).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenRouterConfig {
    /// `base_url` (default `https://openrouter.ai/api/v1`).
    #[serde(default = "d_openrouter_url")]
    pub base_url: String,
    /// `model`, `vendor/model`.
    #[serde(default = "d_openrouter_model")]
    pub model: String,
    /// `api_key` (prefer `api_key_env`).
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// `api_key_env` (default `OPENROUTER_API_KEY`).
    #[serde(default = "d_openrouter_env")]
    pub api_key_env: String,
    /// `http_referer` → `HTTP-Referer` header (omitted when unset).
    #[serde(default)]
    pub http_referer: Option<String>,
    /// `x_title` → `X-Title` header (default `Wingman`).
    #[serde(default = "d_x_title")]
    pub x_title: Option<String>,
    /// `timeout_secs` per attempt (default 60).
    #[serde(default = "d_timeout")]
    pub timeout_secs: u64,
    /// `max_tokens` (default 1024).
    #[serde(default = "d_max_tokens")]
    pub max_tokens: u32,
    /// `temperature` (omitted when unset).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// `input_usd_per_mtok` (0 = unknown).
    #[serde(default)]
    pub input_usd_per_mtok: f64,
    /// `output_usd_per_mtok` (0 = unknown).
    #[serde(default)]
    pub output_usd_per_mtok: f64,
    /// `use_env_proxy` (default false).
    #[serde(default)]
    pub use_env_proxy: bool,
}

/// `[llm.ollama]`: Ollama native API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OllamaConfig {
    /// `base_url` (default `http://127.0.0.1:11434`).
    #[serde(default = "d_ollama_url")]
    pub base_url: String,
    /// `model` for `/api/chat`.
    #[serde(default = "d_ollama_model")]
    pub model: String,
    /// `embed_model` for `/api/embed` (defaults to `model`).
    #[serde(default)]
    pub embed_model: Option<String>,
    /// `api_key`: optional Bearer key for an authenticating reverse proxy.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// `timeout_secs` per attempt (default 180; local models load slowly).
    #[serde(default = "d_local_timeout")]
    pub timeout_secs: u64,
    /// `max_tokens` → `options.num_predict` (default 1024).
    #[serde(default = "d_max_tokens")]
    pub max_tokens: u32,
    /// `temperature` → `options.temperature`.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// `num_ctx` → `options.num_ctx` (Ollama silently truncates beyond it).
    #[serde(default)]
    pub num_ctx: Option<u32>,
    /// `keep_alive`, e.g. `"5m"`.
    #[serde(default)]
    pub keep_alive: Option<String>,
    /// `widen_local`: let local prompts carry redacted example lines
    /// (default false).
    #[serde(default)]
    pub widen_local: bool,
}

impl OllamaConfig {
    /// The permission to build [`LocalPrompt`](super::LocalPrompt)s, only
    /// when `widen_local = true`.
    pub fn widen_local_grant(&self) -> Option<WidenLocal> {
        self.widen_local.then(WidenLocal::granted)
    }
}

/// Settings every provider shares, resolved from its table.
#[derive(Debug, Clone)]
pub(super) struct Common {
    pub(super) base_url: String,
    pub(super) model: String,
    pub(super) key: Option<Secret>,
    pub(super) timeout: Duration,
    pub(super) pricing: Pricing,
    pub(super) use_env_proxy: bool,
}

impl OpenAiConfig {
    pub(super) fn common(&self) -> Common {
        Common {
            base_url: self.base_url.clone(),
            model: self.model.clone(),
            key: resolve_key(self.api_key.as_ref(), &self.api_key_env),
            timeout: Duration::from_secs(self.timeout_secs.max(1)),
            pricing: Pricing {
                input_usd_per_mtok: self.input_usd_per_mtok,
                output_usd_per_mtok: self.output_usd_per_mtok,
            },
            use_env_proxy: self.use_env_proxy,
        }
    }
}

impl AnthropicConfig {
    pub(super) fn common(&self) -> Common {
        Common {
            base_url: self.base_url.clone(),
            model: self.model.clone(),
            key: resolve_key(self.api_key.as_ref(), &self.api_key_env),
            timeout: Duration::from_secs(self.timeout_secs.max(1)),
            pricing: Pricing {
                input_usd_per_mtok: self.input_usd_per_mtok,
                output_usd_per_mtok: self.output_usd_per_mtok,
            },
            use_env_proxy: self.use_env_proxy,
        }
    }
}

impl OpenRouterConfig {
    pub(super) fn common(&self) -> Common {
        Common {
            base_url: self.base_url.clone(),
            model: self.model.clone(),
            key: resolve_key(self.api_key.as_ref(), &self.api_key_env),
            timeout: Duration::from_secs(self.timeout_secs.max(1)),
            pricing: Pricing {
                input_usd_per_mtok: self.input_usd_per_mtok,
                output_usd_per_mtok: self.output_usd_per_mtok,
            },
            use_env_proxy: self.use_env_proxy,
        }
    }
}

impl OllamaConfig {
    pub(super) fn common(&self) -> Common {
        Common {
            base_url: self.base_url.clone(),
            model: self.model.clone(),
            key: self.api_key.clone().filter(|k| !k.is_empty()),
            timeout: Duration::from_secs(self.timeout_secs.max(1)),
            pricing: Pricing::default(),
            use_env_proxy: false,
        }
    }
}
