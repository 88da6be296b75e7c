//! Loopback test doubles: an axum server on 127.0.0.1:0 that checks each
//! dialect's path, auth and required body fields the way the real service
//! would (answering 401/400/404 in that dialect's error format), records every
//! request byte for byte, and answers from a script.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

use wingman_hub::llm::{self, FactKind, FactLine, PromptBuilder, RetryPolicy, TaskKind};
use wingman_protocol::logs::Redactor;

pub(crate) const KEY: &str = "sk-test-4f9c2a7e1b8d3c6f0a5e9b2d7c1f8a4e";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    OpenAi,
    Anthropic,
    OpenRouter,
    Ollama,
}

/// One recorded request.
#[derive(Debug, Clone)]
pub(crate) struct Captured {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Captured {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// One scripted reply.
#[derive(Debug, Clone)]
pub(crate) struct Canned {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: String,
    pub(crate) delay: Duration,
}

impl Canned {
    pub(crate) fn ok(body: Value) -> Self {
        Self::status(200, body)
    }
    pub(crate) fn status(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: vec![("x-request-id", "req_123".to_owned())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
    pub(crate) fn raw(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }
    pub(crate) fn header(mut self, k: &'static str, v: &str) -> Self {
        self.headers.push((k, v.to_owned()));
        self
    }
    pub(crate) fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

#[derive(Clone)]
struct State {
    dialect: Dialect,
    captured: Arc<Mutex<Vec<Captured>>>,
    script: Arc<Mutex<Vec<Canned>>>,
}

/// A running double.
pub(crate) struct Double {
    pub(crate) base: String,
    captured: Arc<Mutex<Vec<Captured>>>,
}

impl Double {
    pub(crate) fn requests(&self) -> Vec<Captured> {
        self.captured.lock().unwrap().clone()
    }
    pub(crate) fn only(&self) -> Captured {
        let r = self.requests();
        assert_eq!(r.len(), 1, "expected exactly one request");
        r.into_iter().next().unwrap()
    }
}

fn dialect_error(d: Dialect, status: u16, msg: &str) -> Canned {
    let body = match d {
        Dialect::OpenAi => {
            json!({"error":{"message":msg,"type":"invalid_request_error","param":null,"code":null}})
        }
        Dialect::OpenRouter => json!({"error":{"code":status,"message":msg,"metadata":{}}}),
        Dialect::Anthropic => {
            json!({"type":"error","error":{"type":"invalid_request_error","message":msg},"request_id":"req_x"})
        }
        Dialect::Ollama => json!({"error": msg}),
    };
    Canned::status(status, body)
}

/// What the real service would reject before looking at the script.
fn check(d: Dialect, c: &Captured) -> Option<Canned> {
    let (path, auth_ok) = match d {
        Dialect::OpenAi | Dialect::OpenRouter => (
            "/v1/chat/completions",
            c.header("authorization") == Some(&format!("Bearer {KEY}")),
        ),
        Dialect::Anthropic => (
            "/v1/messages",
            c.header("x-api-key") == Some(KEY) && c.header("anthropic-version").is_some(),
        ),
        Dialect::Ollama => {
            let p = if c.path == "/api/embed" {
                "/api/embed"
            } else {
                "/api/chat"
            };
            (p, c.header("authorization").is_none())
        }
    };
    if c.method != Method::POST || c.path != path {
        return Some(dialect_error(d, 404, "not found"));
    }
    if !auth_ok {
        return Some(dialect_error(d, 401, "missing or malformed auth"));
    }
    if c.header("content-type") != Some("application/json") {
        return Some(dialect_error(
            d,
            400,
            "content-type must be application/json",
        ));
    }
    let Ok(b) = serde_json::from_slice::<Value>(&c.body) else {
        return Some(dialect_error(d, 400, "body is not JSON"));
    };
    if !b["model"].is_string() {
        return Some(dialect_error(d, 400, "model is required"));
    }
    if d == Dialect::Anthropic && !b["max_tokens"].is_u64() {
        return Some(dialect_error(d, 400, "max_tokens: Field required"));
    }
    if c.path != "/api/embed" && !b["messages"].is_array() {
        return Some(dialect_error(d, 400, "messages is required"));
    }
    None
}

async fn handle(
    axum::extract::State(st): axum::extract::State<State>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let c = Captured {
        method,
        path: uri.path().to_owned(),
        headers,
        body,
    };
    st.captured.lock().unwrap().push(c.clone());
    let canned = check(st.dialect, &c).unwrap_or_else(|| {
        let mut s = st.script.lock().unwrap();
        if s.len() > 1 {
            s.remove(0)
        } else {
            s[0].clone()
        }
    });
    if !canned.delay.is_zero() {
        tokio::time::sleep(canned.delay).await;
    }
    let mut r = Response::builder()
        .status(StatusCode::from_u16(canned.status).unwrap())
        .header("content-type", "application/json");
    for (k, v) in &canned.headers {
        r = r.header(*k, v);
    }
    r.body(Body::from(canned.body)).unwrap()
}

/// Starts a double for `dialect` answering from `script` (the last entry repeats).
pub(crate) async fn serve(dialect: Dialect, script: Vec<Canned>) -> Double {
    let st = State {
        dialect,
        captured: Arc::default(),
        script: Arc::new(Mutex::new(script)),
    };
    let captured = st.captured.clone();
    let app = axum::Router::new().fallback(handle).with_state(st);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Double {
        base: format!("http://{addr}"),
        captured,
    }
}

/// Fast retries for tests.
pub(crate) fn fast_retry(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        initial_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(5),
    }
}

/// A valid explanation citing F1 and T1.
pub(crate) fn explanation() -> Value {
    json!({
        "summary": "Backups on pve1 filled local-lvm and the VM paused.",
        "likely_cause": "vzdump retention too long",
        "evidence": ["F1", "T1"],
        "confidence": "medium",
        "suggested_next_steps": ["Check prune settings of the backup job"]
    })
}

/// A narrative prompt with two facts and one template.
pub(crate) fn prompt() -> llm::CloudPrompt {
    let r = Redactor::default();
    let mut b = PromptBuilder::new(TaskKind::Narrative, &r);
    b.fact(&FactLine::new(
        "pve1",
        FactKind::Storage,
        "local-lvm 100% used (was 71% 2h ago)",
    ));
    let (t, _) = wingman_protocol::logs::MaskedTemplate::mask(
        "vzdump backup of VM 101 failed: no space left on device",
        &r,
    );
    b.template("pve1", &t, 12, wingman_protocol::logs::Severity::Error);
    b.fact(&FactLine::new(
        "pve1",
        FactKind::Guest,
        "VM 101 state io-error (paused)",
    ));
    b.build().unwrap()
}

pub(crate) fn openai_reply(content: &str) -> Value {
    json!({
        "id": "chatcmpl-abc123", "object": "chat.completion", "created": 1_700_000_000,
        "model": "gpt-test-2025",
        "choices": [{"index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null},
            "finish_reason": "stop", "logprobs": null}],
        "usage": {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0}},
        "system_fingerprint": "fp_1", "service_tier": "default"
    })
}

pub(crate) fn anthropic_reply(input: Value) -> Value {
    json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-test",
        "content": [{"type": "tool_use", "id": "toolu_01", "name": "incident_explanation", "input": input}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 900, "output_tokens": 210,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    })
}

pub(crate) fn ollama_reply(content: &str) -> Value {
    json!({
        "model": "qwen2.5:7b", "created_at": "2025-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": content},
        "done": true, "done_reason": "stop", "total_duration": 5_000_000_000u64,
        "load_duration": 1_000_000, "prompt_eval_count": 640, "prompt_eval_duration": 1_000_000,
        "eval_count": 128, "eval_duration": 2_000_000
    })
}

/// Every exchange records exactly the bytes the server received.
pub(crate) fn assert_bodies_match(out_exchanges: &[llm::Exchange], double: &Double) {
    let reqs = double.requests();
    assert_eq!(out_exchanges.len(), reqs.len());
    for (ex, req) in out_exchanges.iter().zip(&reqs) {
        assert_eq!(ex.request_body.as_bytes(), &req.body[..]);
    }
}

/// Nothing in the outcome (debug form) contains the key.
pub(crate) fn assert_no_key<T: std::fmt::Debug>(v: &T) {
    let s = format!("{v:?}");
    assert!(!s.contains(KEY), "key leaked: {s}");
    assert!(!s.contains(&KEY[8..24]), "key fragment leaked: {s}");
}
