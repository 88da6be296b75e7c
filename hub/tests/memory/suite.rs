//! The behavioural suite every [`VectorStore`] must pass: runs on
//! [`EmbeddedStore`] always and on [`QdrantStore`] when
//! `WINGMAN_TEST_QDRANT_URL` is set.

use std::sync::Arc;

use wingman_hub::memory::{
    DocKind, Document, EmbeddedStore, EmbedderId, Filter, MemRepo, Point, QdrantConfig,
    QdrantStore, StoreError, VectorStore,
};

fn point(
    id: &str,
    vector: [f32; 4],
    e: &EmbedderId,
    kind: DocKind,
    node: &str,
    platform: &str,
    created_at: i64,
) -> Point {
    let doc = Document::new(
        kind,
        id,
        format!("title {id}"),
        format!("text of {id}"),
        created_at,
    )
    .with_node(node)
    .with_platform(platform);
    Point {
        id: id.to_owned(),
        vector: vector.to_vec(),
        embedder: e.to_string(),
        payload: doc.payload,
    }
}

fn ids(hits: &[wingman_hub::memory::Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.id.as_str()).collect()
}

/// The suite. `store` must be empty.
pub(crate) async fn store_suite(store: &dyn VectorStore) {
    let a = EmbedderId::new("test", "a", 4);
    let b = EmbedderId::new("test", "b", 4);
    store.ensure(&a).await.unwrap();
    store.ensure(&a).await.unwrap(); // idempotent
    assert_eq!(store.count(&Filter::default()).await.unwrap(), 0);
    assert!(store.embedders_in_use().await.unwrap().is_empty());

    // Upsert, idempotent by id.
    let pts = vec![
        point(
            "p1",
            [1.0, 0.0, 0.0, 0.0],
            &a,
            DocKind::Incident,
            "pve1",
            "proxmox",
            1_000,
        ),
        point(
            "p2",
            [0.9, 0.1, 0.0, 0.0],
            &a,
            DocKind::Incident,
            "pve2",
            "proxmox",
            2_000,
        ),
        point(
            "p3",
            [0.5, 0.5, 0.0, 0.0],
            &a,
            DocKind::Outcome,
            "pve1",
            "proxmox",
            3_000,
        ),
        point(
            "p4",
            [0.0, 1.0, 0.0, 0.0],
            &a,
            DocKind::Skill,
            "docker1",
            "docker",
            500,
        ),
        point(
            "p5",
            [-1.0, 0.0, 0.0, 0.0],
            &a,
            DocKind::TemplateSummary,
            "docker1",
            "docker",
            4_000,
        ),
        // A tie with p6b: same vector, ids decide.
        point(
            "p6b",
            [0.0, 0.0, 1.0, 0.0],
            &a,
            DocKind::Incident,
            "nas",
            "plain",
            5_000,
        ),
        point(
            "p6a",
            [0.0, 0.0, 2.0, 0.0],
            &a,
            DocKind::Incident,
            "nas",
            "plain",
            5_000,
        ),
    ];
    store.upsert(pts.clone()).await.unwrap();
    store.upsert(pts.clone()).await.unwrap();
    assert_eq!(store.count(&Filter::default()).await.unwrap(), 7);

    // Replacing a payload by id.
    let mut p4 = pts[3].clone();
    p4.payload.title = "renamed".into();
    store.upsert(vec![p4]).await.unwrap();
    assert_eq!(store.count(&Filter::default()).await.unwrap(), 7);
    let hits = store
        .search(&[0.0, 1.0, 0.0, 0.0], 1, &Filter::default())
        .await
        .unwrap();
    assert_eq!(ids(&hits), ["p4"]);
    assert_eq!(hits[0].payload.title, "renamed");
    assert_eq!(hits[0].payload.node.as_deref(), Some("docker1"));
    assert_eq!(hits[0].payload.platform.as_deref(), Some("docker"));
    assert_eq!(hits[0].payload.kind, DocKind::Skill);
    assert_eq!(hits[0].embedder, a.to_string());
    assert!((hits[0].score - 1.0).abs() < 1e-4);

    // Top-k order: descending score; ties by ascending id.
    let hits = store
        .search(&[1.0, 0.0, 0.0, 0.0], 5, &Filter::default())
        .await
        .unwrap();
    assert_eq!(ids(&hits), ["p1", "p2", "p3", "p4", "p6a"]);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    let hits = store
        .search(&[0.0, 0.0, 1.0, 0.0], 2, &Filter::default())
        .await
        .unwrap();
    assert_eq!(ids(&hits), ["p6a", "p6b"]);
    assert!((hits[0].score - hits[1].score).abs() < 1e-6);
    assert!(
        store
            .search(&[1.0, 0.0, 0.0, 0.0], 0, &Filter::default())
            .await
            .unwrap()
            .is_empty()
    );

    // Filters.
    let by_kind = Filter::kind(DocKind::Incident);
    assert_eq!(store.count(&by_kind).await.unwrap(), 4);
    let hits = store
        .search(&[0.0, 1.0, 0.0, 0.0], 10, &by_kind)
        .await
        .unwrap();
    assert!(hits.iter().all(|h| h.payload.kind == DocKind::Incident));
    assert_eq!(hits.len(), 4);
    let by_node = Filter {
        node: Some("pve1".into()),
        ..Filter::default()
    };
    assert_eq!(
        ids(&store
            .search(&[1.0, 0.0, 0.0, 0.0], 10, &by_node)
            .await
            .unwrap()),
        ["p1", "p3"]
    );
    let by_platform = Filter {
        platform: Some("docker".into()),
        ..Filter::default()
    };
    assert_eq!(store.count(&by_platform).await.unwrap(), 2);
    let combined = Filter {
        kind: Some(DocKind::Incident),
        node: Some("pve1".into()),
        platform: Some("proxmox".into()),
        embedder: Some(a.to_string()),
    };
    assert_eq!(
        ids(&store
            .search(&[0.0, 1.0, 0.0, 0.0], 10, &combined)
            .await
            .unwrap()),
        ["p1"]
    );
    let none = Filter {
        node: Some("nope".into()),
        ..Filter::default()
    };
    assert_eq!(store.count(&none).await.unwrap(), 0);

    // Delete (unknown ids ignored).
    store
        .delete(&["p2".to_owned(), "missing".to_owned()])
        .await
        .unwrap();
    store.delete(&[]).await.unwrap();
    assert_eq!(store.count(&Filter::default()).await.unwrap(), 6);
    assert!(
        !ids(&store
            .search(&[1.0, 0.0, 0.0, 0.0], 10, &Filter::default())
            .await
            .unwrap())
        .contains(&"p2")
    );

    // Retention: only the given kind, strictly older.
    assert_eq!(
        store
            .delete_older_than(DocKind::Incident, 1_000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .delete_older_than(DocKind::Incident, 5_000)
            .await
            .unwrap(),
        1 // p1 (p2 already gone; p6a/p6b are at 5_000)
    );
    assert_eq!(store.count(&Filter::default()).await.unwrap(), 5);
    assert_eq!(store.count(&Filter::kind(DocKind::Skill)).await.unwrap(), 1); // p4 at 500 kept

    // Embedder bookkeeping.
    assert_eq!(store.embedders_in_use().await.unwrap(), [a.to_string()]);
    let stray = point(
        "q1",
        [1.0, 0.0, 0.0, 0.0],
        &b,
        DocKind::Incident,
        "pve1",
        "proxmox",
        9,
    );
    assert!(matches!(
        store.upsert(vec![stray.clone()]).await,
        Err(StoreError::NotEnsured(_))
    ));
    store.ensure(&b).await.unwrap();
    store.upsert(vec![stray]).await.unwrap();
    assert_eq!(
        store.embedders_in_use().await.unwrap(),
        [a.to_string(), b.to_string()]
    );
    let only_b = Filter {
        embedder: Some(b.to_string()),
        ..Filter::default()
    };
    assert_eq!(
        ids(&store
            .search(&[1.0, 0.0, 0.0, 0.0], 10, &only_b)
            .await
            .unwrap()),
        ["q1"]
    );
    // A point re-embedded by b keeps its id and changes its embedder.
    let moved = point(
        "p3",
        [0.0, 0.0, 0.0, 1.0],
        &b,
        DocKind::Outcome,
        "pve1",
        "proxmox",
        3_000,
    );
    store.upsert(vec![moved]).await.unwrap();
    assert_eq!(store.count(&only_b).await.unwrap(), 2);
    assert_eq!(store.delete_embedder(&a.to_string()).await.unwrap(), 4); // p4, p5, p6a, p6b
    assert_eq!(store.embedders_in_use().await.unwrap(), [b.to_string()]);
    assert_eq!(store.count(&Filter::default()).await.unwrap(), 2);

    // Dimension checks.
    let bad = Point {
        vector: vec![1.0, 0.0],
        ..point("bad", [0.0; 4], &b, DocKind::Skill, "n", "p", 1)
    };
    assert!(matches!(
        store.upsert(vec![bad]).await,
        Err(StoreError::Dimension {
            expected: 4,
            got: 2,
            ..
        })
    ));
    let nan = point(
        "nan",
        [f32::NAN, 0.0, 0.0, 0.0],
        &b,
        DocKind::Skill,
        "n",
        "p",
        1,
    );
    assert!(store.upsert(vec![nan]).await.is_err());
    let zero = point("zero", [0.0; 4], &b, DocKind::Skill, "n", "p", 1);
    assert!(matches!(
        store.upsert(vec![zero]).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.count(&Filter::default()).await.unwrap(), 2);
}

#[tokio::test]
async fn embedded_store_suite() {
    let repo = Arc::new(MemRepo::new());
    let store = EmbeddedStore::open(repo.clone()).await.unwrap();
    store_suite(&store).await;
    // Written through: a reopened store sees the same points.
    assert_eq!(repo.len(), 2);
    let reopened = EmbeddedStore::open(repo).await.unwrap();
    assert_eq!(reopened.count(&Filter::default()).await.unwrap(), 2);
    assert_eq!(
        reopened.embedders_in_use().await.unwrap(),
        ["test/b/4".to_owned()]
    );
}

#[tokio::test]
async fn qdrant_store_suite() {
    let Ok(url) = std::env::var("WINGMAN_TEST_QDRANT_URL") else {
        println!("qdrant_store_suite skipped: WINGMAN_TEST_QDRANT_URL is not set");
        return;
    };
    let mut cfg = QdrantConfig::new(url);
    cfg.collection = format!("wingman_test_{}", uuid::Uuid::new_v4().simple());
    let store = QdrantStore::new(cfg.clone()).unwrap();
    store.drop_collection().await.unwrap();
    store_suite(&store).await;

    // Another dimension: refused unless recreating is allowed.
    let wide = EmbedderId::new("test", "wide", 8);
    assert!(matches!(
        store.ensure(&wide).await,
        Err(StoreError::Incompatible {
            existing: 4,
            wanted: 8,
            ..
        })
    ));
    cfg.recreate_on_dim_change = true;
    let recreating = QdrantStore::new(cfg).unwrap();
    recreating.ensure(&wide).await.unwrap();
    assert_eq!(recreating.count(&Filter::default()).await.unwrap(), 0);
    recreating.drop_collection().await.unwrap();
}

#[tokio::test]
async fn qdrant_unreachable_is_a_transient_backend_error() {
    super::common::crypto();
    let mut cfg = QdrantConfig::new(super::common::closed_port_url().await);
    cfg.timeout = std::time::Duration::from_secs(2);
    let store = QdrantStore::new(cfg).unwrap();
    let id = EmbedderId::new("test", "a", 4);
    for r in [
        store.ensure(&id).await.map(|_| 0),
        store.count(&Filter::default()).await,
        store.embedders_in_use().await.map(|v| v.len()),
    ] {
        match r {
            Err(e @ StoreError::Backend(_)) => assert!(e.is_transient()),
            other => panic!("expected a backend error, got {other:?}"),
        }
    }
}
