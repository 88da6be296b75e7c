//! Task routing: which provider (if any) handles each [`TaskKind`].
//!
//! Defaults: classification and summarisation run on the local model only
//! (they are frequent and cheap; no local model means no call); narratives and
//! chat prefer the cloud provider, fall back to the local one, and otherwise
//! route nowhere — the caller then keeps the deterministic narrative.
//! Embeddings are always local.

use std::sync::Arc;

use serde::Deserialize;

use super::{Locality, Provider, TaskKind};

/// Where one task kind may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutePreference {
    /// Local provider only.
    Local,
    /// Cloud provider only.
    Cloud,
    /// Local, else cloud.
    PreferLocal,
    /// Cloud, else local.
    PreferCloud,
    /// Never call a model for this task.
    Off,
}

/// Names a cloud provider in `[llm.routing] cloud`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloudChoice {
    /// `[llm.openai]`.
    Openai,
    /// `[llm.anthropic]`.
    Anthropic,
    /// `[llm.openrouter]`.
    Openrouter,
}

/// `[llm.routing]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// `classification` (default `"local"`).
    pub classification: RoutePreference,
    /// `summarization` (default `"local"`).
    pub summarization: RoutePreference,
    /// `narrative` (default `"prefer_cloud"`).
    pub narrative: RoutePreference,
    /// `chat` (default `"prefer_cloud"`).
    pub chat: RoutePreference,
    /// `cloud`: which configured cloud provider to use (default: the first of
    /// anthropic, openai, openrouter that is configured).
    pub cloud: Option<CloudChoice>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            classification: RoutePreference::Local,
            summarization: RoutePreference::Local,
            narrative: RoutePreference::PreferCloud,
            chat: RoutePreference::PreferCloud,
            cloud: None,
        }
    }
}

impl RoutingConfig {
    /// The preference for `task`.
    pub fn preference(&self, task: TaskKind) -> RoutePreference {
        match task {
            TaskKind::Classification => self.classification,
            TaskKind::Summarization => self.summarization,
            TaskKind::Narrative => self.narrative,
            TaskKind::Chat => self.chat,
            TaskKind::Embedding => RoutePreference::Local,
        }
    }
}

/// The routing decision as a pure function of the preference and what is
/// configured.
pub fn choose(pref: RoutePreference, has_local: bool, has_cloud: bool) -> Option<Locality> {
    let local = has_local.then_some(Locality::Local);
    let cloud = has_cloud.then_some(Locality::Cloud);
    match pref {
        RoutePreference::Local => local,
        RoutePreference::Cloud => cloud,
        RoutePreference::PreferLocal => local.or(cloud),
        RoutePreference::PreferCloud => cloud.or(local),
        RoutePreference::Off => None,
    }
}

/// Picks a provider per task.
#[derive(Debug, Clone)]
pub struct Router {
    config: RoutingConfig,
    local: Option<Arc<dyn Provider>>,
    cloud: Option<Arc<dyn Provider>>,
}

impl Router {
    /// A router over an optional local and an optional cloud provider.
    pub fn new(
        config: RoutingConfig,
        local: Option<Arc<dyn Provider>>,
        cloud: Option<Arc<dyn Provider>>,
    ) -> Self {
        Self {
            config,
            local,
            cloud,
        }
    }

    /// Where `task` goes, if anywhere.
    pub fn locality(&self, task: TaskKind) -> Option<Locality> {
        choose(
            self.config.preference(task),
            self.local.is_some(),
            self.cloud.is_some(),
        )
    }

    /// The provider for `task`; `None` means: use the deterministic fallback.
    pub fn route(&self, task: TaskKind) -> Option<Arc<dyn Provider>> {
        match self.locality(task)? {
            Locality::Local => self.local.clone(),
            Locality::Cloud => self.cloud.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = RoutingConfig::default();
        let go = |t, l, cl| choose(c.preference(t), l, cl);
        use Locality::*;
        use TaskKind::*;
        assert_eq!(go(Classification, true, true), Some(Local));
        assert_eq!(go(Classification, false, true), None);
        assert_eq!(go(Summarization, true, false), Some(Local));
        assert_eq!(go(Narrative, true, true), Some(Cloud));
        assert_eq!(go(Narrative, true, false), Some(Local));
        assert_eq!(go(Narrative, false, false), None);
        assert_eq!(go(Chat, false, true), Some(Cloud));
        assert_eq!(go(Embedding, false, true), None);
    }

    #[test]
    fn explicit_preferences() {
        use Locality::*;
        assert_eq!(choose(RoutePreference::Off, true, true), None);
        assert_eq!(choose(RoutePreference::Cloud, true, false), None);
        assert_eq!(
            choose(RoutePreference::PreferLocal, false, true),
            Some(Cloud)
        );
        assert_eq!(
            choose(RoutePreference::PreferLocal, true, true),
            Some(Local)
        );
    }
}
