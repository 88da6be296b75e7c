//! Ollama native API against its loopback double.

use serde_json::json;

use super::support::*;
use wingman_hub::llm::{
    self, Embedder, LlmError, OllamaConfig, OllamaProvider, PromptRef, Provider,
};

pub(crate) fn config(base: &str, extra: &str) -> OllamaConfig {
    toml::from_str(&format!(
        "base_url = \"{base}\"\nmodel = \"qwen2.5:7b\"\nembed_model = \"nomic-embed-text\"\n{extra}"
    ))
    .unwrap()
}

#[tokio::test]
async fn chat_sends_schema_as_format_without_streaming() {
    let d = serve(
        Dialect::Ollama,
        vec![Canned::ok(ollama_reply(&explanation().to_string()))],
    )
    .await;
    let p = OllamaProvider::new(
        &config(
            &d.base,
            "num_ctx = 16384\nkeep_alive = \"10m\"\ntemperature = 0.1",
        ),
        &fast_retry(2),
    )
    .unwrap();
    assert_eq!(p.locality(), llm::Locality::Local);
    let prompt = prompt();
    let out = llm::explain(&p, PromptRef::from(&prompt)).await;
    assert!(out.result.is_ok(), "{:?}", out.result);

    let req = d.only();
    assert_eq!(req.path, "/api/chat");
    assert_eq!(req.header("authorization"), None);
    let b = req.json();
    assert_eq!(b["model"], "qwen2.5:7b");
    assert_eq!(b["stream"], false);
    assert_eq!(b["format"], llm::narrative::schema().schema);
    assert_eq!(b["messages"][0]["content"], prompt.system());
    assert_eq!(b["messages"][1]["content"], prompt.user());
    assert_eq!(b["options"]["num_ctx"], 16384);
    assert_eq!(b["options"]["num_predict"], 1024);
    assert_eq!(b["keep_alive"], "10m");

    let ex = &out.exchanges[0];
    assert_eq!(
        (ex.prompt_tokens, ex.completion_tokens),
        (Some(640), Some(128))
    );
    assert_eq!(ex.est_cost_usd, None);
    assert_bodies_match(&out.exchanges, &d);
}

#[tokio::test]
async fn model_not_found_is_a_provider_error() {
    let d = serve(
        Dialect::Ollama,
        vec![Canned::status(
            404,
            json!({"error": "model 'qwen2.5:7b' not found, try pulling it first"}),
        )],
    )
    .await;
    let p = OllamaProvider::new(&config(&d.base, ""), &fast_retry(2)).unwrap();
    let out = p
        .complete(PromptRef::from(&prompt()), &llm::narrative::schema())
        .await;
    match &out.result {
        Err(LlmError::Provider {
            status: 404,
            message,
        }) => assert!(message.contains("not found")),
        other => panic!("{other:?}"),
    }
    assert_eq!(out.attempts(), 1);
}

#[tokio::test]
async fn truncated_reply_is_rejected() {
    let mut reply = ollama_reply("{\"summary\": \"Backups on");
    reply["done_reason"] = json!("length");
    let d = serve(Dialect::Ollama, vec![Canned::ok(reply)]).await;
    let p = OllamaProvider::new(&config(&d.base, ""), &fast_retry(2)).unwrap();
    let out = p
        .complete(PromptRef::from(&prompt()), &llm::narrative::schema())
        .await;
    assert!(matches!(out.result, Err(LlmError::InvalidOutput(_))));
}

#[tokio::test]
async fn embed_returns_vectors() {
    let reply = json!({
        "model": "nomic-embed-text",
        "embeddings": [[0.1, -0.2, 0.3], [0.0, 0.5, -0.5]],
        "total_duration": 14_143_917u64, "load_duration": 1_019_500, "prompt_eval_count": 8
    });
    let d = serve(Dialect::Ollama, vec![Canned::ok(reply)]).await;
    let p = OllamaProvider::new(&config(&d.base, ""), &fast_retry(2)).unwrap();
    let out = p.embed(&["disk full on pve1", "vzdump failed"]).await;
    let v = out.result.as_ref().unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[1], vec![0.0, 0.5, -0.5]);
    let req = d.only();
    assert_eq!(req.path, "/api/embed");
    assert_eq!(
        req.json(),
        json!({"model": "nomic-embed-text", "input": ["disk full on pve1", "vzdump failed"]})
    );
    assert_eq!(out.exchanges[0].task, llm::TaskKind::Embedding);
    assert_eq!(out.exchanges[0].prompt_tokens, Some(8));
    assert_bodies_match(&out.exchanges, &d);
}

#[tokio::test]
async fn embed_count_mismatch_is_rejected() {
    let reply = json!({"model": "nomic-embed-text", "embeddings": [[0.1]]});
    let d = serve(Dialect::Ollama, vec![Canned::ok(reply)]).await;
    let p = OllamaProvider::new(&config(&d.base, ""), &fast_retry(2)).unwrap();
    let out = p.embed(&["a", "b"]).await;
    assert!(matches!(out.result, Err(LlmError::InvalidOutput(_))));
}
