//! The HTTP embedders against loopback servers speaking the exact JSON
//! shapes of Ollama's `/api/embed` and OpenAI's `/v1/embeddings`.

use std::time::Duration;

use serde_json::json;
use wingman_hub::memory::{
    ApiKey, CloudPolicy, DataClass, DocKind, Document, EmbedError, HttpEmbedderConfig, Locality,
    OllamaEmbedder, OpenAiCompatEmbedder, TextEmbedder,
};

use super::common::{FakeServer, Resp, closed_port_url, crypto};

fn texts(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn ollama(base: &str, dim: usize) -> OllamaEmbedder {
    crypto();
    let mut cfg = HttpEmbedderConfig::new(base, "nomic-embed-text", dim);
    cfg.timeout = Duration::from_millis(500);
    OllamaEmbedder::new(&cfg).unwrap()
}

fn openai(base: &str, dim: usize, policy: CloudPolicy) -> OpenAiCompatEmbedder {
    crypto();
    let mut cfg = HttpEmbedderConfig::new(base, "text-embedding-3-small", dim);
    cfg.timeout = Duration::from_millis(500);
    cfg.key = Some(ApiKey::new("sk-test-0123456789abcdef"));
    OpenAiCompatEmbedder::new(&cfg, policy).unwrap()
}

fn all_classes() -> CloudPolicy {
    CloudPolicy {
        allow: [
            DataClass::IncidentNarrative,
            DataClass::OutcomeRecord,
            DataClass::TemplateSummary,
            DataClass::Skill,
        ]
        .into(),
        allow_queries: true,
    }
}

#[tokio::test]
async fn ollama_embeds() {
    let srv = FakeServer::start(|_, req| {
        let n = req.json()["input"].as_array().map_or(0, Vec::len);
        let embeddings: Vec<Vec<f32>> = (0..n).map(|i| vec![i as f32, 1.0, 0.5]).collect();
        Resp::json(
            200,
            json!({"model": "nomic-embed-text", "embeddings": embeddings}),
        )
    })
    .await;
    let e = ollama(&srv.base, 3);
    assert_eq!(e.id().to_string(), "ollama/nomic-embed-text/3");
    assert_eq!(e.locality(), Locality::Local);
    let v = e.embed(&texts(&["a", "b"])).await.unwrap();
    assert_eq!(v, vec![vec![0.0, 1.0, 0.5], vec![1.0, 1.0, 0.5]]);
    let req = srv.last();
    assert_eq!(req.path, "/api/embed");
    assert_eq!(
        req.json(),
        json!({"model": "nomic-embed-text", "input": ["a", "b"]})
    );
    assert_eq!(req.header("authorization"), None);
    // Empty input: no request.
    assert!(e.embed(&[]).await.unwrap().is_empty());
    assert_eq!(srv.count(), 1);
    // Documents: every class is fine for a local embedder.
    let d = Document::new(DocKind::Outcome, "inc-1", "Disk replaced", "resilvered", 1);
    assert_eq!(e.embed_documents(&[d]).await.unwrap().len(), 1);
    assert_eq!(srv.last().json()["input"][0], "Disk replaced\nresilvered");
}

#[tokio::test]
async fn ollama_probe_dim() {
    let srv =
        FakeServer::start(|_, _| Resp::json(200, json!({"embeddings": [[0.1, 0.2, 0.3, 0.4]]})))
            .await;
    crypto();
    let cfg = HttpEmbedderConfig::new(&srv.base, "m", 0);
    assert!(OllamaEmbedder::new(&cfg).is_err());
    assert_eq!(OllamaEmbedder::probe_dim(&cfg).await.unwrap(), 4);
}

#[tokio::test]
async fn ollama_429_with_retry_after_is_unavailable() {
    let srv = FakeServer::start(|_, _| {
        Resp::json(429, json!({"error": "server busy"})).header("Retry-After", "7")
    })
    .await;
    let err = ollama(&srv.base, 3)
        .embed(&texts(&["a"]))
        .await
        .unwrap_err();
    match err {
        EmbedError::Unavailable {
            retry_after,
            reason,
        } => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
            assert!(reason.contains("server busy"), "{reason}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn ollama_503_is_unavailable_without_retry_after() {
    let srv = FakeServer::start(|_, _| Resp::raw(503, "loading model")).await;
    let err = ollama(&srv.base, 3)
        .embed(&texts(&["a"]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EmbedError::Unavailable {
                retry_after: None,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn ollama_500_is_a_status_error() {
    let srv = FakeServer::start(|_, _| Resp::json(500, json!({"error": "model crashed"}))).await;
    let err = ollama(&srv.base, 3)
        .embed(&texts(&["a"]))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        EmbedError::Status {
            status: 500,
            message: "model crashed".into()
        }
    );
    assert!(err.is_transient() && !err.is_unavailable());
}

#[tokio::test]
async fn ollama_malformed_and_wrong_shapes_are_bad_responses() {
    for body in [
        "{not json",
        r#"{"embeddings": "nope"}"#,
        r#"{"embeddings": [[1.0, 2.0]]}"#,
        r#"{"embeddings": [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]}"#,
        r#"{"other": 1}"#,
    ] {
        let b = body.to_owned();
        let srv = FakeServer::start(move |_, _| Resp::raw(200, &b)).await;
        let err = ollama(&srv.base, 3)
            .embed(&texts(&["a"]))
            .await
            .unwrap_err();
        assert!(matches!(err, EmbedError::BadResponse(_)), "{body}: {err:?}");
    }
}

#[tokio::test]
async fn connection_refused_is_unavailable() {
    let base = closed_port_url().await;
    let err = ollama(&base, 3).embed(&texts(&["a"])).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let err = openai(&base, 3, all_classes())
        .embed(&texts(&["a"]))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test]
async fn timeout_is_unavailable() {
    let srv = FakeServer::start(|_, _| {
        Resp::json(200, json!({"embeddings": [[1.0, 0.0, 0.0]]})).delayed(Duration::from_secs(3))
    })
    .await;
    let t0 = std::time::Instant::now();
    let err = ollama(&srv.base, 3)
        .embed(&texts(&["a"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EmbedError::Unavailable { reason, .. } if reason == "timed out"),
        "{err:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn openai_embeds_with_bearer_and_orders_by_index() {
    let srv = FakeServer::start(|_, _| {
        Resp::json(
            200,
            json!({
                "object": "list",
                "model": "text-embedding-3-small",
                "data": [
                    {"object": "embedding", "index": 1, "embedding": [0.0, 1.0]},
                    {"object": "embedding", "index": 0, "embedding": [1.0, 0.0]}
                ],
                "usage": {"prompt_tokens": 4, "total_tokens": 4}
            }),
        )
    })
    .await;
    let e = openai(&srv.base, 2, all_classes());
    assert_eq!(e.locality(), Locality::Cloud);
    let v = e.embed(&texts(&["first", "second"])).await.unwrap();
    assert_eq!(v, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
    let req = srv.last();
    assert_eq!(req.path, "/v1/embeddings");
    assert_eq!(
        req.json(),
        json!({"model": "text-embedding-3-small", "input": ["first", "second"]})
    );
    assert_eq!(
        req.header("authorization"),
        Some("Bearer sk-test-0123456789abcdef")
    );
    assert!(!format!("{e:?}").contains("sk-test"));
}

#[tokio::test]
async fn openai_errors() {
    let srv = FakeServer::start(|n, _| match n {
        0 => Resp::json(429, json!({"error": {"message": "Rate limit reached for sk-test-0123456789abcdef"}}))
            .header("retry-after", "20"),
        1 => Resp::json(500, json!({"error": {"message": "internal"}})),
        2 => Resp::raw(200, "<html>oops</html>"),
        3 => Resp::json(200, json!({"data": [{"index": 0, "embedding": [1.0, 0.0]}, {"index": 0, "embedding": [1.0, 0.0]}]})),
        _ => Resp::json(401, json!({"error": {"message": "bad key"}})),
    })
    .await;
    let e = openai(&srv.base, 2, all_classes());
    let t = texts(&["x", "y"]);
    match e.embed(&t).await.unwrap_err() {
        EmbedError::Unavailable {
            retry_after,
            reason,
        } => {
            assert_eq!(retry_after, Some(Duration::from_secs(20)));
            assert!(!reason.contains("sk-test"), "key leaked: {reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        e.embed(&t).await.unwrap_err(),
        EmbedError::Status { status: 500, .. }
    ));
    assert!(matches!(
        e.embed(&t).await.unwrap_err(),
        EmbedError::BadResponse(_)
    ));
    assert!(matches!(
        e.embed(&t).await.unwrap_err(),
        EmbedError::BadResponse(_)
    ));
    let err = e.embed(&t).await.unwrap_err();
    assert_eq!(
        err,
        EmbedError::Status {
            status: 401,
            message: "bad key".into()
        }
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn openai_needs_a_key() {
    crypto();
    let cfg = HttpEmbedderConfig::new("https://api.example.invalid", "m", 8);
    assert!(matches!(
        OpenAiCompatEmbedder::new(&cfg, CloudPolicy::default()),
        Err(EmbedError::Config(_))
    ));
    let cfg = HttpEmbedderConfig::new("ftp://x", "m", 8);
    assert!(OllamaEmbedder::new(&cfg).is_err());
}

#[tokio::test]
async fn cloud_embedder_refuses_classes_not_allowed() {
    let srv = FakeServer::start(|_, req| {
        let n = req.json()["input"].as_array().map_or(0, Vec::len);
        let data: Vec<_> = (0..n)
            .map(|i| json!({"index": i, "embedding": [1.0, 0.0]}))
            .collect();
        Resp::json(200, json!({"data": data}))
    })
    .await;
    let incident = Document::new(DocKind::Incident, "inc-1", "Pool degraded", "pve1 tank", 1);
    let skill = Document::new(
        DocKind::Skill,
        "zfs-replace",
        "Replace a ZFS disk",
        "steps",
        1,
    );

    // Default policy: nothing leaves, documents or queries.
    let e = openai(&srv.base, 2, CloudPolicy::default());
    for d in [&incident, &skill] {
        let err = e
            .embed_documents(std::slice::from_ref(d))
            .await
            .unwrap_err();
        assert!(matches!(err, EmbedError::NotAllowed { class: Some(c), .. } if c == d.class()));
    }
    assert!(matches!(
        e.embed(&texts(&["zfs"])).await.unwrap_err(),
        EmbedError::NotAllowed { class: None, .. }
    ));
    assert_eq!(srv.count(), 0, "nothing may be sent");

    // Skills only: a batch holding an incident is refused whole.
    let e = openai(
        &srv.base,
        2,
        CloudPolicy {
            allow: [DataClass::Skill].into(),
            allow_queries: false,
        },
    );
    assert!(!e.permits(DataClass::IncidentNarrative));
    let err = e
        .embed_documents(&[skill.clone(), incident.clone()])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        EmbedError::NotAllowed {
            class: Some(DataClass::IncidentNarrative),
            embedder: "openai/text-embedding-3-small/2".into()
        }
    );
    assert_eq!(srv.count(), 0);
    assert_eq!(e.embed_documents(&[skill]).await.unwrap().len(), 1);
    assert_eq!(srv.count(), 1);
    assert!(!srv.last().body.contains("pve1"));
}
