//! OpenRouter against its loopback double.

use serde_json::json;

use super::support::*;
use wingman_hub::llm::{self, LlmError, OpenRouterConfig, OpenRouterProvider, PromptRef, Provider};

fn provider(base: &str) -> OpenRouterProvider {
    let cfg: OpenRouterConfig = toml::from_str(&format!(
        "base_url = \"{base}/v1\"\nmodel = \"anthropic/claude-test\"\napi_key = \"{KEY}\"\n\
         api_key_env = \"\"\nhttp_referer = \"https://wingman.example\"\nx_title = \"Wingman Test\""
    ))
    .unwrap();
    OpenRouterProvider::new(&cfg, &fast_retry(2)).unwrap()
}

#[tokio::test]
async fn success_sends_attribution_headers() {
    let mut reply = openai_reply(&explanation().to_string());
    reply["id"] = json!("gen-123");
    reply["model"] = json!("anthropic/claude-test");
    let d = serve(Dialect::OpenRouter, vec![Canned::ok(reply)]).await;
    let p = provider(&d.base);
    let out = p
        .complete(PromptRef::from(&prompt()), &llm::narrative::schema())
        .await;
    let c = out.result.as_ref().unwrap();
    assert_eq!(c.model, "anthropic/claude-test");
    assert_eq!(c.usage.prompt_tokens, Some(1200));
    assert_eq!(c.est_cost_usd, None, "no prices configured = unknown cost");

    let req = d.only();
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(
        req.header("authorization").unwrap(),
        format!("Bearer {KEY}")
    );
    assert_eq!(req.header("http-referer"), Some("https://wingman.example"));
    assert_eq!(req.header("x-title"), Some("Wingman Test"));
    let b = req.json();
    assert_eq!(b["model"], "anthropic/claude-test");
    assert_eq!(b["max_tokens"], 1024);
    assert_eq!(b["response_format"]["json_schema"]["strict"], true);
    assert!(b["messages"].as_array().unwrap().len() == 2);
    assert_bodies_match(&out.exchanges, &d);
}

#[tokio::test]
async fn insufficient_credits_402_is_quota_not_retried() {
    let d = serve(
        Dialect::OpenRouter,
        vec![Canned::status(
            402,
            json!({"error":{"code":402,"message":"Insufficient credits"}}),
        )],
    )
    .await;
    let out = provider(&d.base)
        .complete(PromptRef::from(&prompt()), &llm::narrative::schema())
        .await;
    assert!(matches!(
        out.result,
        Err(LlmError::Quota { status: 402, .. })
    ));
    assert_eq!(out.attempts(), 1);
}

#[tokio::test]
async fn upstream_502_is_retried() {
    let d = serve(
        Dialect::OpenRouter,
        vec![
            Canned::status(
                502,
                json!({"error":{"code":502,"message":"upstream error"}}),
            ),
            Canned::ok(openai_reply(&explanation().to_string())),
        ],
    )
    .await;
    let out = provider(&d.base)
        .complete(PromptRef::from(&prompt()), &llm::narrative::schema())
        .await;
    assert!(out.result.is_ok());
    assert_eq!(out.attempts(), 2);
}
