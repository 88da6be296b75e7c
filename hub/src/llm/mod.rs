//! Language-model providers for Wingman: one object-safe [`Provider`] trait
//! with plain-HTTP adapters for OpenAI Chat Completions, Anthropic Messages,
//! OpenRouter and Ollama (integrations §5), a type-enforced privacy gate
//! ([`prompt`]), per-attempt [`Exchange`] records, task [`Router`]ing and the
//! validated incident [`Explanation`].
//!
//! The flow in the hub:
//! 1. build a [`CloudPrompt`] with [`PromptBuilder`] from facts, masked
//!    templates, the deterministic narrative and skills;
//! 2. pick a provider with [`Router::route`] (`None` → keep the deterministic
//!    narrative);
//! 3. call [`explain`] (or [`Provider::complete`] with any [`OutputSchema`]);
//! 4. store every [`Exchange`] of the [`Outcome`] with the incident.
//!
//! ```
//! use wingman_hub::llm::{FactKind, FactLine, PromptBuilder, TaskKind};
//! use wingman_protocol::logs::Redactor;
//!
//! let redactor = Redactor::default();
//! let mut b = PromptBuilder::new(TaskKind::Narrative, &redactor);
//! let f1 = b.fact(&FactLine::new("pve1", FactKind::Storage, "local-lvm 100% used"));
//! b.fact(&FactLine::new("pve1", FactKind::Service, "db: password=hunter2 rejected"));
//! let prompt = b.build().unwrap();
//! assert_eq!(f1, "F1");
//! assert_eq!(prompt.redactions(), 1);
//! assert!(!prompt.user().contains("hunter2"));
//! ```

pub mod anthropic;
pub mod config;
pub mod error;
pub mod exchange;
mod http;
pub mod narrative;
pub mod ollama;
pub mod openai;
pub mod prompt;
pub mod retry;
pub mod router;
pub mod schema;
pub mod secret;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use anthropic::AnthropicProvider;
pub use config::{
    AnthropicAuth, AnthropicConfig, LlmConfig, OllamaConfig, OpenAiConfig, OpenRouterConfig,
};
pub use error::LlmError;
pub use exchange::{Exchange, Pricing, Usage};
pub use narrative::{Confidence, Explanation, IncidentNarrative, NextStep, RankedCause};
pub use ollama::OllamaProvider;
pub use openai::{OpenAiProvider, OpenRouterProvider};
pub use prompt::{
    CloudPrompt, FactKind, FactLine, LocalPrompt, LocalPromptBuilder, OnSecret, PromptBuilder,
    PromptError, WidenLocal,
};
pub use retry::{RetryConfig, RetryPolicy};
pub use router::{CloudChoice, RoutePreference, Router, RoutingConfig};
pub use schema::OutputSchema;
pub use secret::Secret;

/// What a model call is for; drives routing and is recorded per exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Label an incident or signal.
    Classification,
    /// Condense facts and templates.
    Summarization,
    /// Explain an incident to the operator.
    Narrative,
    /// Answer an operator's question.
    Chat,
    /// Embedding vectors (Ollama `/api/embed`).
    Embedding,
}

impl TaskKind {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classification => "classification",
            Self::Summarization => "summarization",
            Self::Narrative => "narrative",
            Self::Chat => "chat",
            Self::Embedding => "embedding",
        }
    }
}

/// Where a provider runs, which decides the data classes it may receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Locality {
    /// On the operator's own hardware (Ollama).
    Local,
    /// A third-party API.
    Cloud,
}

/// A prompt offered to a provider: cloud-safe, or local-only.
#[derive(Debug, Clone, Copy)]
pub enum PromptRef<'a> {
    /// May go anywhere.
    Cloud(&'a CloudPrompt),
    /// Local providers only; cloud providers refuse it without sending.
    Local(&'a LocalPrompt),
}

impl PromptRef<'_> {
    /// System message.
    pub fn system(&self) -> &str {
        match self {
            Self::Cloud(p) => p.system(),
            Self::Local(p) => p.system(),
        }
    }

    /// User message.
    pub fn user(&self) -> &str {
        match self {
            Self::Cloud(p) => p.user(),
            Self::Local(p) => p.user(),
        }
    }

    /// Task.
    pub fn task(&self) -> TaskKind {
        match self {
            Self::Cloud(p) => p.task(),
            Self::Local(p) => p.task(),
        }
    }

    /// Ref ids of the data items.
    pub fn refs(&self) -> &std::collections::BTreeSet<String> {
        match self {
            Self::Cloud(p) => p.refs(),
            Self::Local(p) => p.refs(),
        }
    }
}

impl<'a> From<&'a CloudPrompt> for PromptRef<'a> {
    fn from(p: &'a CloudPrompt) -> Self {
        Self::Cloud(p)
    }
}

impl<'a> From<&'a LocalPrompt> for PromptRef<'a> {
    fn from(p: &'a LocalPrompt) -> Self {
        Self::Local(p)
    }
}

/// A validated structured reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Provider name.
    pub provider: String,
    /// Model, as reported by the provider when it says.
    pub model: String,
    /// The JSON object, already checked against the request's schema.
    pub value: serde_json::Value,
    /// Token usage.
    pub usage: Usage,
    /// Latency of the successful attempt.
    pub latency_ms: u64,
    /// Estimated cost of the successful attempt.
    pub est_cost_usd: Option<f64>,
}

/// The result of a call plus one [`Exchange`] per HTTP attempt (empty when
/// nothing was sent, e.g. a privacy refusal).
#[derive(Debug, Clone)]
pub struct Outcome<T = Completion> {
    /// The reply or the final error.
    pub result: Result<T, LlmError>,
    /// Every attempt, in order.
    pub exchanges: Vec<Exchange>,
}

impl<T> Outcome<T> {
    /// An outcome for a call refused before sending.
    pub fn refused(e: LlmError) -> Self {
        Self {
            result: Err(e),
            exchanges: Vec::new(),
        }
    }

    /// HTTP attempts made.
    pub fn attempts(&self) -> usize {
        self.exchanges.len()
    }

    /// Summed estimated cost of all attempts (`None` when none is known).
    pub fn total_cost_usd(&self) -> Option<f64> {
        self.exchanges
            .iter()
            .filter_map(|e| e.est_cost_usd)
            .reduce(|a, b| a + b)
    }
}

/// A chat model that returns JSON matching a schema.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// `openai`, `anthropic`, `openrouter` or `ollama`.
    fn name(&self) -> &'static str;
    /// Configured model.
    fn model(&self) -> &str;
    /// Local or cloud.
    fn locality(&self) -> Locality;
    /// Sends the prompt and returns the schema-checked JSON reply. Cloud
    /// providers refuse [`PromptRef::Local`] with [`LlmError::PrivacyClass`].
    async fn complete(&self, prompt: PromptRef<'_>, schema: &OutputSchema) -> Outcome;
}

/// A model that turns text into vectors.
#[async_trait::async_trait]
pub trait Embedder: Send + Sync + std::fmt::Debug {
    /// Provider name.
    fn name(&self) -> &'static str;
    /// Embedding model.
    fn model(&self) -> &str;
    /// One vector per input, in order.
    async fn embed(&self, inputs: &[&str]) -> Outcome<Vec<Vec<f32>>>;
}

/// Asks `provider` for an incident [`Explanation`] and validates it against
/// the schema and the prompt's refs.
pub async fn explain(provider: &dyn Provider, prompt: PromptRef<'_>) -> Outcome<Explanation> {
    let schema = narrative::schema();
    let out = provider.complete(prompt, &schema).await;
    let mut exchanges = out.exchanges;
    let result = out
        .result
        .and_then(|c| narrative::parse(&c.value, prompt.refs()));
    if let (Err(e), Some(last)) = (&result, exchanges.last_mut())
        && last.error.is_none()
    {
        last.error = Some(e.to_string());
    }
    Outcome { result, exchanges }
}

/// The providers a config enables.
#[derive(Debug, Clone, Default)]
pub struct Providers {
    /// OpenAI, when configured.
    pub openai: Option<Arc<OpenAiProvider>>,
    /// Anthropic, when configured.
    pub anthropic: Option<Arc<AnthropicProvider>>,
    /// OpenRouter, when configured.
    pub openrouter: Option<Arc<OpenRouterProvider>>,
    /// Ollama, when configured (also the embedder).
    pub ollama: Option<Arc<OllamaProvider>>,
}

impl Providers {
    /// Builds every configured provider. Fails on the first invalid one
    /// (e.g. a cloud provider without a key).
    pub fn from_config(cfg: &LlmConfig) -> Result<Self, LlmError> {
        let retry = RetryPolicy::from(&cfg.retry);
        Ok(Self {
            openai: cfg
                .openai
                .as_ref()
                .map(|c| OpenAiProvider::new(c, &retry).map(Arc::new))
                .transpose()?,
            anthropic: cfg
                .anthropic
                .as_ref()
                .map(|c| AnthropicProvider::new(c, &retry).map(Arc::new))
                .transpose()?,
            openrouter: cfg
                .openrouter
                .as_ref()
                .map(|c| OpenRouterProvider::new(c, &retry).map(Arc::new))
                .transpose()?,
            ollama: cfg
                .ollama
                .as_ref()
                .map(|c| OllamaProvider::new(c, &retry).map(Arc::new))
                .transpose()?,
        })
    }

    /// A router over these providers. The cloud provider is the one named by
    /// `routing.cloud`, else the first configured of anthropic, openai,
    /// openrouter.
    pub fn router(&self, routing: &RoutingConfig) -> Router {
        let anthropic = self.anthropic.clone().map(|p| p as Arc<dyn Provider>);
        let openai = self.openai.clone().map(|p| p as Arc<dyn Provider>);
        let openrouter = self.openrouter.clone().map(|p| p as Arc<dyn Provider>);
        let cloud = match routing.cloud {
            Some(CloudChoice::Anthropic) => anthropic,
            Some(CloudChoice::Openai) => openai,
            Some(CloudChoice::Openrouter) => openrouter,
            None => anthropic.or(openai).or(openrouter),
        };
        let local = self.ollama.clone().map(|p| p as Arc<dyn Provider>);
        Router::new(routing.clone(), local, cloud)
    }
}
