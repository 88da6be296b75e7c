//! Integration tests for the `llm` module: loopback doubles of each provider
//! dialect (integrations §5.7) and the privacy gate (security design §7.C).

mod anthropic;
mod config;
mod ollama;
mod openai;
mod openrouter;
mod privacy;
pub(crate) mod support;
