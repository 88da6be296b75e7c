//! Anthropic Messages against its loopback double.

use serde_json::json;

use super::support::*;
use wingman_hub::llm::{self, AnthropicConfig, AnthropicProvider, LlmError, PromptRef, Provider};

fn provider(base: &str, extra: &str) -> AnthropicProvider {
    let cfg: AnthropicConfig = toml::from_str(&format!(
        "base_url = \"{base}\"\nmodel = \"claude-test\"\napi_key = \"{KEY}\"\napi_key_env = \"\"\n{extra}"
    ))
    .unwrap();
    AnthropicProvider::new(&cfg, &fast_retry(2)).unwrap()
}

#[tokio::test]
async fn success_uses_forced_tool_and_x_api_key() {
    let d = serve(
        Dialect::Anthropic,
        vec![Canned::ok(anthropic_reply(explanation()))],
    )
    .await;
    let p = provider(
        &d.base,
        "input_usd_per_mtok = 3.0\noutput_usd_per_mtok = 15.0",
    );
    let prompt = prompt();
    let out = llm::explain(&p, PromptRef::from(&prompt)).await;
    assert_eq!(
        out.result.as_ref().unwrap().confidence,
        llm::Confidence::Medium
    );

    let req = d.only();
    assert_eq!(req.path, "/v1/messages");
    assert_eq!(req.header("x-api-key"), Some(KEY));
    assert_eq!(req.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(req.header("authorization"), None);
    let b = req.json();
    assert_eq!(b["model"], "claude-test");
    assert_eq!(b["max_tokens"], 1024);
    assert_eq!(b["system"], prompt.system());
    assert_eq!(
        b["messages"],
        json!([{"role": "user", "content": prompt.user()}])
    );
    assert_eq!(b["tools"].as_array().unwrap().len(), 1);
    assert_eq!(b["tools"][0]["name"], "incident_explanation");
    assert_eq!(
        b["tools"][0]["input_schema"],
        llm::narrative::schema().schema
    );
    assert_eq!(
        b["tool_choice"],
        json!({"type": "tool", "name": "incident_explanation"})
    );

    let ex = &out.exchanges[0];
    assert_eq!(
        (ex.prompt_tokens, ex.completion_tokens),
        (Some(900), Some(210))
    );
    assert!((ex.est_cost_usd.unwrap() - (900.0 * 3.0 + 210.0 * 15.0) / 1e6).abs() < 1e-12);
    assert_bodies_match(&out.exchanges, &d);
    assert_no_key(&out.exchanges);
}

#[tokio::test]
async fn version_and_beta_headers_are_configurable() {
    let d = serve(
        Dialect::Anthropic,
        vec![Canned::ok(anthropic_reply(explanation()))],
    )
    .await;
    let p = provider(
        &d.base,
        "anthropic_version = \"2026-10-21\"\nanthropic_beta = \"some-feature\"",
    );
    let out = p
        .complete(PromptRef::from(&prompt()), &llm::narrative::schema())
        .await;
    assert!(out.result.is_ok());
    let req = d.only();
    assert_eq!(req.header("anthropic-version"), Some("2026-10-21"));
    assert_eq!(req.header("anthropic-beta"), Some("some-feature"));
}

#[tokio::test]
async fn overloaded_529_is_retried() {
    let overloaded = Canned::status(
        529,
        json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
    );
    let d = serve(
        Dialect::Anthropic,
        vec![overloaded, Canned::ok(anthropic_reply(explanation()))],
    )
    .await;
    let p = provider(&d.base, "");
    let out = p
        .complete(PromptRef::from(&prompt()), &llm::narrative::schema())
        .await;
    assert!(out.result.is_ok());
    assert_eq!(out.attempts(), 2);
    assert_bodies_match(&out.exchanges, &d);
}

#[tokio::test]
async fn spend_limit_429_is_quota_not_retried() {
    let limit = Canned::status(
        429,
        json!({"type":"error","error":{"type":"rate_limit_error","message":"spend limit","details":{"error_code":"enforced_spend_limit_reached"}}}),
    );
    let d = serve(Dialect::Anthropic, vec![limit]).await;
    let out = provider(&d.base, "")
        .complete(PromptRef::from(&prompt()), &llm::narrative::schema())
        .await;
    assert!(matches!(out.result, Err(LlmError::Quota { .. })));
    assert_eq!(out.attempts(), 1);
}

#[tokio::test]
async fn wrong_key_is_unauthorized() {
    let d = serve(
        Dialect::Anthropic,
        vec![Canned::ok(anthropic_reply(explanation()))],
    )
    .await;
    let cfg: AnthropicConfig = toml::from_str(&format!(
        "base_url = \"{}\"\nmodel = \"m\"\napi_key = \"sk-ant-wrong-0000000000000000\"\napi_key_env = \"\"",
        d.base
    ))
    .unwrap();
    let out = AnthropicProvider::new(&cfg, &fast_retry(2))
        .unwrap()
        .complete(PromptRef::from(&prompt()), &llm::narrative::schema())
        .await;
    assert!(matches!(
        out.result,
        Err(LlmError::Unauthorized { status: 401, .. })
    ));
    assert_eq!(out.attempts(), 1);
    assert!(!format!("{out:?}").contains("sk-ant-wrong"));
}

#[tokio::test]
async fn text_instead_of_tool_use_and_refusal_are_rejected() {
    let mut text = anthropic_reply(json!({}));
    text["content"] = json!([{"type": "text", "text": "Sure! The cause is..."}]);
    text["stop_reason"] = json!("end_turn");
    let mut refusal = anthropic_reply(json!({}));
    refusal["content"] = json!([]);
    refusal["stop_reason"] = json!("refusal");
    let off_schema = anthropic_reply(json!({"summary": "x", "confidence": "absolute"}));
    for (body, want_refused) in [(text, false), (refusal, true), (off_schema, false)] {
        let d = serve(Dialect::Anthropic, vec![Canned::ok(body)]).await;
        let out = provider(&d.base, "")
            .complete(PromptRef::from(&prompt()), &llm::narrative::schema())
            .await;
        match out.result {
            Err(LlmError::Refused(_)) => assert!(want_refused),
            Err(LlmError::InvalidOutput(_)) => assert!(!want_refused),
            other => panic!("{other:?}"),
        }
    }
}
