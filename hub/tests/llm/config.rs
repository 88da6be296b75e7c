//! Config parsing, provider construction, routing and key hygiene.

use wingman_hub::llm::{
    self, LlmConfig, LlmError, Locality, Providers, RoutePreference, Secret, TaskKind,
};

const FULL: &str = r#"
[openai]
model = "gpt-4.1-mini"
api_key = "sk-proj-aaaaaaaaaaaaaaaaaaaaaaaaaaaa1"
organization = "org-x"

[anthropic]
model = "claude-sonnet"
api_key = "sk-ant-bbbbbbbbbbbbbbbbbbbbbbbb2"
auth = "bearer"

[openrouter]
model = "meta/llama"
api_key = "sk-or-v1-cccccccccccccccccccccc3"

[ollama]
model = "qwen2.5:7b"
widen_local = true

[routing]
classification = "prefer_local"
cloud = "openai"

[retry]
max_retries = 4
"#;

#[test]
fn full_config_parses_with_defaults() {
    let c: LlmConfig = toml::from_str(FULL).unwrap();
    let oa = c.openai.as_ref().unwrap();
    assert_eq!(oa.base_url, "https://api.openai.com/v1");
    assert_eq!(oa.timeout_secs, 60);
    assert_eq!(
        c.anthropic.as_ref().unwrap().anthropic_version,
        "2023-06-01"
    );
    assert_eq!(
        c.anthropic.as_ref().unwrap().auth,
        llm::AnthropicAuth::Bearer
    );
    assert_eq!(
        c.openrouter.as_ref().unwrap().x_title.as_deref(),
        Some("Wingman")
    );
    assert_eq!(
        c.ollama.as_ref().unwrap().base_url,
        "http://127.0.0.1:11434"
    );
    assert_eq!(c.routing.classification, RoutePreference::PreferLocal);
    assert_eq!(c.routing.narrative, RoutePreference::PreferCloud);
    assert_eq!(c.retry.max_retries, 4);
    assert_eq!(c.retry.max_delay_ms, 8000);
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("aaaaaaaa") && !dbg.contains("bbbbbbbb") && !dbg.contains("cccccccc"));
}

#[test]
fn typos_are_rejected() {
    assert!(toml::from_str::<LlmConfig>("[openai]\nmodel = \"m\"\napi_kye = \"x\"").is_err());
    assert!(toml::from_str::<LlmConfig>("[routing]\nnarrative = \"cloudy\"").is_err());
    assert!(toml::from_str::<LlmConfig>("[routing]\ncloud = \"gemini\"").is_err());
}

#[tokio::test]
async fn providers_and_router_from_config() {
    let c: LlmConfig = toml::from_str(FULL).unwrap();
    let p = Providers::from_config(&c).unwrap();
    let r = p.router(&c.routing);
    assert_eq!(r.route(TaskKind::Narrative).unwrap().name(), "openai");
    assert_eq!(r.route(TaskKind::Chat).unwrap().name(), "openai");
    assert_eq!(r.route(TaskKind::Classification).unwrap().name(), "ollama");
    assert_eq!(r.locality(TaskKind::Summarization), Some(Locality::Local));

    // Only a cloud provider: classification is local-only by default → None.
    let c: LlmConfig = toml::from_str("[anthropic]\nmodel = \"m\"\napi_key = \"k\"").unwrap();
    let r = Providers::from_config(&c).unwrap().router(&c.routing);
    assert!(r.route(TaskKind::Classification).is_none());
    assert_eq!(r.route(TaskKind::Narrative).unwrap().name(), "anthropic");

    // Nothing configured: the caller keeps the deterministic narrative.
    let c = LlmConfig::default();
    let r = Providers::from_config(&c).unwrap().router(&c.routing);
    assert!(r.route(TaskKind::Narrative).is_none());
}

#[test]
fn cloud_provider_without_key_is_a_config_error() {
    let c: LlmConfig =
        toml::from_str("[openai]\nmodel = \"m\"\napi_key_env = \"WINGMAN_TEST_UNSET_VAR_42\"")
            .unwrap();
    assert!(matches!(
        Providers::from_config(&c),
        Err(LlmError::Config(_))
    ));
}

#[test]
fn secret_debug_is_redacted_and_scrub_removes_fragments() {
    let s = Secret::new("sk-proj-0123456789abcdefghij");
    assert_eq!(format!("{s:?}"), "[redacted]");
    let scrubbed = s.scrub("bad key sk-proj-0123456789abcdefghij and partial ...89abcdefghij");
    assert!(!scrubbed.contains("0123456789abcdefghij"));
    assert!(!scrubbed.contains("89abcdef"));
}
