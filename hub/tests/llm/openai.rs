//! OpenAI Chat Completions against its loopback double.

use std::time::{Duration, Instant};

use serde_json::json;

use super::support::*;
use wingman_hub::llm::{
    self, LlmError, OpenAiConfig, OpenAiProvider, PromptRef, Provider, TaskKind,
};

fn provider(base: &str, retry: &llm::RetryPolicy, extra: &str) -> OpenAiProvider {
    let cfg: OpenAiConfig = toml::from_str(&format!(
        "base_url = \"{base}/v1\"\nmodel = \"gpt-test\"\napi_key = \"{KEY}\"\napi_key_env = \"\"\n\
         input_usd_per_mtok = 2.0\noutput_usd_per_mtok = 8.0\n{extra}"
    ))
    .unwrap();
    OpenAiProvider::new(&cfg, retry).unwrap()
}

#[tokio::test]
async fn success_sends_exact_dialect_and_parses_usage() {
    let d = serve(
        Dialect::OpenAi,
        vec![Canned::ok(openai_reply(&explanation().to_string()))],
    )
    .await;
    let p = provider(
        &d.base,
        &fast_retry(2),
        "organization = \"org-1\"\ntemperature = 0.2",
    );
    let prompt = prompt();
    let out = llm::explain(&p, PromptRef::from(&prompt)).await;
    let e = out.result.as_ref().unwrap();
    assert_eq!(e.evidence, vec!["F1", "T1"]);

    let req = d.only();
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(
        req.header("authorization").unwrap(),
        format!("Bearer {KEY}")
    );
    assert_eq!(req.header("openai-organization"), Some("org-1"));
    let b = req.json();
    assert_eq!(b["model"], "gpt-test");
    assert_eq!(b["messages"][0]["role"], "system");
    assert_eq!(b["messages"][1]["role"], "user");
    assert_eq!(b["messages"][1]["content"], prompt.user());
    assert_eq!(b["response_format"]["type"], "json_schema");
    assert_eq!(
        b["response_format"]["json_schema"]["name"],
        "incident_explanation"
    );
    assert_eq!(b["response_format"]["json_schema"]["strict"], true);
    assert_eq!(
        b["response_format"]["json_schema"]["schema"],
        llm::narrative::schema().schema
    );
    assert_eq!(b["max_completion_tokens"], 1024);
    assert_eq!(b["stream"], false);
    assert!((b["temperature"].as_f64().unwrap() - 0.2).abs() < 1e-6);

    assert_eq!(out.exchanges.len(), 1);
    let ex = &out.exchanges[0];
    assert_eq!(
        (ex.provider.as_str(), ex.model.as_str()),
        ("openai", "gpt-test")
    );
    assert_eq!(ex.task, TaskKind::Narrative);
    assert_eq!(ex.status, Some(200));
    assert_eq!(
        (ex.prompt_tokens, ex.completion_tokens),
        (Some(1200), Some(300))
    );
    // 1200 * 2 / 1e6 + 300 * 8 / 1e6
    assert!((ex.est_cost_usd.unwrap() - 0.0048).abs() < 1e-12);
    assert_eq!(ex.request_id.as_deref(), Some("req_123"));
    assert!(ex.error.is_none());
    assert!(
        ex.response_body
            .as_ref()
            .unwrap()
            .contains("chatcmpl-abc123")
    );
    assert_bodies_match(&out.exchanges, &d);
    assert_no_key(&out.exchanges);
}

#[tokio::test]
async fn retry_after_429_is_honoured_and_counted() {
    let limited = Canned::status(
        429,
        json!({"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}),
    )
    .header("retry-after", "1")
    .header("retry-after-ms", "150");
    let d = serve(
        Dialect::OpenAi,
        vec![
            limited,
            Canned::ok(openai_reply(&explanation().to_string())),
        ],
    )
    .await;
    let p = provider(&d.base, &fast_retry(2), "");
    let t0 = Instant::now();
    let out = p
        .complete(PromptRef::from(&prompt()), &llm::narrative::schema())
        .await;
    let waited = t0.elapsed();
    assert!(out.result.is_ok(), "{:?}", out.result);
    assert_eq!(out.attempts(), 2);
    assert_eq!(out.exchanges[0].status, Some(429));
    assert!(
        out.exchanges[0]
            .error
            .as_ref()
            .unwrap()
            .contains("rate limited")
    );
    assert_eq!(out.exchanges[1].attempt, 2);
    // retry-after-ms (150 ms) wins over retry-after (1 s) and over the 5 ms backoff.
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert!(waited < Duration::from_millis(900), "{waited:?}");
    assert_bodies_match(&out.exchanges, &d);
    let reqs = d.requests();
    assert_eq!(reqs[0].body, reqs[1].body);
}

#[tokio::test]
async fn rate_limit_exhausts_budget() {
    let limited = Canned::status(
        429,
        json!({"error":{"message":"slow down","type":"requests"}}),
    )
    .header("retry-after", "0");
    let d = serve(Dialect::OpenAi, vec![limited]).await;
    let p = provider(&d.base, &fast_retry(2), "");
    let out = p
        .complete(PromptRef::from(&prompt()), &llm::narrative::schema())
        .await;
    assert!(
        matches!(out.result, Err(LlmError::RateLimited { retry_after: Some(d), .. }) if d.is_zero())
    );
    assert_eq!(out.attempts(), 3);
}

#[tokio::test]
async fn retry_after_beyond_cap_is_not_waited_for() {
    let limited =
        Canned::status(429, json!({"error":{"message":"slow down"}})).header("retry-after", "3600");
    let d = serve(Dialect::OpenAi, vec![limited]).await;
    let p = provider(&d.base, &fast_retry(2), "");
    let out = p
        .complete(PromptRef::from(&prompt()), &llm::narrative::schema())
        .await;
    assert!(
        matches!(out.result, Err(LlmError::RateLimited { retry_after: Some(d), .. }) if d.as_secs() == 3600)
    );
    assert_eq!(out.attempts(), 1);
}

#[tokio::test]
async fn insufficient_quota_429_is_not_retried() {
    let quota = Canned::status(
        429,
        json!({"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}),
    );
    let d = serve(Dialect::OpenAi, vec![quota]).await;
    let p = provider(&d.base, &fast_retry(2), "");
    let out = p
        .complete(PromptRef::from(&prompt()), &llm::narrative::schema())
        .await;
    assert!(matches!(
        out.result,
        Err(LlmError::Quota { status: 429, .. })
    ));
    assert_eq!(out.attempts(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let d = serve(
        Dialect::OpenAi,
        vec![
            Canned::status(500, json!({"error":{"message":"internal"}})),
            Canned::status(503, json!({"error":{"message":"unavailable"}})),
            Canned::ok(openai_reply(&explanation().to_string())),
        ],
    )
    .await;
    let p = provider(&d.base, &fast_retry(2), "");
    let out = p
        .complete(PromptRef::from(&prompt()), &llm::narrative::schema())
        .await;
    assert!(out.result.is_ok());
    assert_eq!(out.attempts(), 3);
    assert_eq!(
        out.exchanges.iter().map(|e| e.status).collect::<Vec<_>>(),
        vec![Some(500), Some(503), Some(200)]
    );
}

#[tokio::test]
async fn unauthorized_is_not_retried_and_never_leaks_the_key() {
    // The real API echoes part of a wrong key; the double echoes all of it.
    let d = serve(
        Dialect::OpenAi,
        vec![Canned::status(
            401,
            json!({"error":{"message":format!("Incorrect API key provided: {KEY}."),"type":"invalid_request_error","code":"invalid_api_key"}}),
        )],
    )
    .await;
    let p = provider(&d.base, &fast_retry(2), "");
    let out = p
        .complete(PromptRef::from(&prompt()), &llm::narrative::schema())
        .await;
    let err = out.result.as_ref().unwrap_err();
    assert!(matches!(err, LlmError::Unauthorized { status: 401, .. }));
    assert!(err.to_string().starts_with("unauthorized"));
    assert_eq!(out.attempts(), 1);
    assert_no_key(&out.result);
    assert_no_key(&out.exchanges);
    assert_no_key(&p);
    assert!(!err.to_string().contains(KEY));
}

#[tokio::test]
async fn bad_request_is_not_retried() {
    let d = serve(
        Dialect::OpenAi,
        vec![Canned::status(400, json!({"error":{"message":"Invalid schema for response_format","type":"invalid_request_error"}}))],
    )
    .await;
    let p = provider(&d.base, &fast_retry(2), "");
    let out = p
        .complete(PromptRef::from(&prompt()), &llm::narrative::schema())
        .await;
    match &out.result {
        Err(LlmError::Provider {
            status: 400,
            message,
        }) => {
            assert!(message.contains("Invalid schema"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(out.attempts(), 1);
}

#[tokio::test]
async fn malformed_and_off_schema_output_is_rejected() {
    let bad_extra = {
        let mut v = explanation();
        v["run_command"] = json!("rm -rf /");
        v.to_string()
    };
    let missing = json!({"summary": "x"}).to_string();
    let cited_unknown = {
        let mut v = explanation();
        v["evidence"] = json!(["F1", "F99"]);
        v.to_string()
    };
    for content in [
        "not json at all",
        "[1,2]",
        bad_extra.as_str(),
        missing.as_str(),
        cited_unknown.as_str(),
    ] {
        let d = serve(Dialect::OpenAi, vec![Canned::ok(openai_reply(content))]).await;
        let p = provider(&d.base, &fast_retry(2), "");
        let out = llm::explain(&p, PromptRef::from(&prompt())).await;
        assert!(
            matches!(out.result, Err(LlmError::InvalidOutput(_))),
            "{content}: {:?}",
            out.result
        );
        assert_eq!(out.attempts(), 1, "invalid output is not retried");
        assert!(out.exchanges[0].error.is_some());
        // Usage is still recorded for a billed but useless reply.
        assert_eq!(out.exchanges[0].prompt_tokens, Some(1200));
    }
    // A body that is not JSON at all.
    let d = serve(
        Dialect::OpenAi,
        vec![Canned::raw(200, "<html>gateway</html>")],
    )
    .await;
    let p = provider(&d.base, &fast_retry(2), "");
    let out = p
        .complete(PromptRef::from(&prompt()), &llm::narrative::schema())
        .await;
    assert!(matches!(out.result, Err(LlmError::InvalidOutput(_))));
}

#[tokio::test]
async fn refusal_is_reported() {
    let mut reply = openai_reply("");
    reply["choices"][0]["message"]["content"] = serde_json::Value::Null;
    reply["choices"][0]["message"]["refusal"] = json!("I can't help with that.");
    let d = serve(Dialect::OpenAi, vec![Canned::ok(reply)]).await;
    let p = provider(&d.base, &fast_retry(2), "");
    let out = p
        .complete(PromptRef::from(&prompt()), &llm::narrative::schema())
        .await;
    assert!(matches!(out.result, Err(LlmError::Refused(m)) if m.contains("can't help")));
}

#[tokio::test]
async fn timeout_is_retried_then_reported() {
    let slow = Canned::ok(openai_reply(&explanation().to_string())).delay(Duration::from_secs(3));
    let d = serve(Dialect::OpenAi, vec![slow]).await;
    let p = provider(&d.base, &fast_retry(1), "timeout_secs = 1");
    let t0 = Instant::now();
    let out = p
        .complete(PromptRef::from(&prompt()), &llm::narrative::schema())
        .await;
    assert_eq!(out.result.as_ref().unwrap_err(), &LlmError::Timeout);
    assert_eq!(out.attempts(), 2);
    assert!(
        out.exchanges
            .iter()
            .all(|e| e.status.is_none() && e.error.as_deref() == Some("timed out"))
    );
    assert!(t0.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn connection_refused_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let p = provider(&base, &fast_retry(1), "");
    let out = p
        .complete(PromptRef::from(&prompt()), &llm::narrative::schema())
        .await;
    assert!(
        matches!(out.result, Err(LlmError::Transport(_))),
        "{:?}",
        out.result
    );
    assert!(out.result.as_ref().unwrap_err().is_transient());
    assert_eq!(out.attempts(), 2);
}
