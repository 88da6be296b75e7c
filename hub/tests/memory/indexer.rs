//! The indexer (queue, backoff, catch-up, coalescing, privacy gate, reindex)
//! and the retriever.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use wingman_hub::memory::{
    ApiKey, CloudPolicy, DocKind, Document, EmbeddedStore, Filter, HashedEmbedder,
    HttpEmbedderConfig, Indexer, IndexerConfig, Job, OpenAiCompatEmbedder, RetrieveError,
    Retriever, StaticSource, SubmitError, Submitted, TextEmbedder, VectorStore,
};

use super::common::{FakeServer, Resp, Switchable, crypto, eventually};

fn fast() -> IndexerConfig {
    IndexerConfig {
        queue_capacity: 64,
        batch_size: 4,
        batch_delay: Duration::from_millis(5),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(40),
        max_attempts: 3,
    }
}

fn doc(i: usize) -> Document {
    Document::new(
        DocKind::Incident,
        format!("inc-{i:03}"),
        format!("Incident {i}"),
        format!("ZFS pool tank{i} degraded on pve{i}, disk faulted"),
        1_700_000_000_000 + i as i64,
    )
    .with_node(format!("pve{i}"))
}

async fn flushed(ix: &Indexer) {
    tokio::time::timeout(Duration::from_secs(10), ix.flush())
        .await
        .expect("indexer did not drain");
}

#[tokio::test]
async fn indexes_and_deletes() {
    let store = Arc::new(EmbeddedStore::in_memory());
    let ix = Indexer::start(Arc::new(HashedEmbedder::default()), store.clone(), fast());
    for i in 0..10 {
        assert_eq!(ix.try_index(doc(i)).unwrap(), Submitted::Queued);
    }
    flushed(&ix).await;
    assert_eq!(store.count(&Filter::default()).await.unwrap(), 10);
    ix.try_submit(Job::Delete("incident:inc-003".into()))
        .unwrap();
    flushed(&ix).await;
    let s = ix.stats();
    assert_eq!((s.indexed, s.deleted, s.failed, s.queued), (10, 1, 0, 0));
    assert_eq!(store.count(&Filter::default()).await.unwrap(), 9);
    assert_eq!(ix.shutdown(Duration::from_secs(1)).await, 0);
    assert_eq!(ix.try_index(doc(1)), Err(SubmitError::Closed));
}

#[tokio::test]
async fn catches_up_after_the_embedder_comes_back() {
    let store = Arc::new(EmbeddedStore::in_memory());
    let emb = Switchable::new(256);
    emb.set_down(true);
    let ix = Indexer::start(emb.clone(), store.clone(), fast());
    for i in 0..10 {
        ix.try_index(doc(i)).unwrap();
    }
    assert!(
        eventually(Duration::from_secs(5), || ix.stats().retries >= 3).await,
        "worker should keep retrying: {:?}",
        ix.stats()
    );
    let s = ix.stats();
    assert_eq!((s.indexed, s.failed), (0, 0));
    assert!(s.queued + 4 >= 10, "jobs kept: {s:?}");
    // Incident creation never waits: submitting still answers at once.
    ix.try_index(doc(10)).unwrap();
    emb.set_down(false);
    flushed(&ix).await;
    let s = ix.stats();
    assert_eq!((s.indexed, s.failed, s.queued), (11, 0, 0), "{s:?}");
    assert_eq!(store.count(&Filter::default()).await.unwrap(), 11);
}

#[tokio::test]
async fn honours_retry_after_capped_by_backoff_max() {
    let store = Arc::new(EmbeddedStore::in_memory());
    let emb = Switchable::new(64);
    emb.set_down(true);
    *emb.retry_after.lock().unwrap() = Some(Duration::from_secs(3600));
    let ix = Indexer::start(emb.clone(), store.clone(), fast());
    ix.try_index(doc(1)).unwrap();
    // backoff_max is 40 ms, so an hour-long Retry-After still retries soon.
    assert!(
        eventually(Duration::from_secs(5), || emb.calls.load(Ordering::SeqCst)
            >= 3)
        .await
    );
    emb.set_down(false);
    flushed(&ix).await;
    assert_eq!(ix.stats().indexed, 1);
}

#[tokio::test]
async fn full_queue_refuses_and_coalesces_by_id() {
    let store = Arc::new(EmbeddedStore::in_memory());
    let emb = Switchable::new(64);
    emb.set_down(true);
    let cfg = IndexerConfig {
        queue_capacity: 3,
        batch_size: 1,
        backoff_min: Duration::from_secs(60),
        backoff_max: Duration::from_secs(60),
        ..fast()
    };
    let ix = Indexer::start(emb.clone(), store.clone(), cfg);
    // The worker tried the first job and put it back; it holds a slot.
    ix.try_index(doc(0)).unwrap();
    assert!(eventually(Duration::from_secs(5), || ix.stats().retries >= 1).await);
    assert_eq!(ix.stats().queued, 1);
    for i in 1..=2 {
        assert_eq!(ix.try_index(doc(i)).unwrap(), Submitted::Queued);
    }
    // Full: a new id is refused at once; a queued id is coalesced.
    let t0 = std::time::Instant::now();
    assert_eq!(ix.try_index(doc(9)), Err(SubmitError::Full));
    assert!(t0.elapsed() < Duration::from_millis(200));
    let mut newer = doc(2);
    newer.text = "rewritten narrative".into();
    assert_eq!(ix.try_index(newer).unwrap(), Submitted::Coalesced);
    let s = ix.stats();
    assert_eq!((s.rejected_full, s.coalesced), (1, 1), "{s:?}");
    assert_eq!(s.queued, 3);
    ix.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn newer_job_wins_over_a_retried_one() {
    let store = Arc::new(EmbeddedStore::in_memory());
    let emb = Switchable::new(64);
    emb.set_down(true);
    let ix = Indexer::start(emb.clone(), store.clone(), fast());
    ix.try_index(doc(1)).unwrap();
    assert!(eventually(Duration::from_secs(5), || ix.stats().retries >= 1).await);
    ix.try_submit(Job::Delete(doc(1).id)).unwrap();
    emb.set_down(false);
    flushed(&ix).await;
    assert_eq!(store.count(&Filter::default()).await.unwrap(), 0);
}

#[tokio::test]
async fn a_bad_document_fails_alone() {
    let store = Arc::new(EmbeddedStore::in_memory());
    let emb = Switchable::new(64);
    let ix = Indexer::start(emb.clone(), store.clone(), fast());
    let mut bad = doc(2);
    bad.text = "poison".into();
    // Nothing indexable (no title, only stopwords and numbers).
    let empty = Document::new(DocKind::Outcome, "inc-5", "", "the 42 of", 1);
    for d in [doc(1), bad, doc(3), doc(4), empty] {
        ix.try_index(d).unwrap();
    }
    flushed(&ix).await;
    let s = ix.stats();
    assert_eq!((s.indexed, s.failed), (3, 2), "{s:?}");
    assert_eq!(store.count(&Filter::default()).await.unwrap(), 3);
}

#[tokio::test]
async fn cloud_embedder_documents_are_gated_in_the_indexer() {
    crypto();
    let srv = FakeServer::start(|_, req| {
        let n = req.json()["input"].as_array().map_or(0, Vec::len);
        let data: Vec<_> = (0..n)
            .map(|i| json!({"index": i, "embedding": [1.0, 0.0, 0.0, 0.0]}))
            .collect();
        Resp::json(200, json!({"data": data}))
    })
    .await;
    let mut cfg = HttpEmbedderConfig::new(&srv.base, "m", 4);
    cfg.key = Some(ApiKey::new("k"));
    let policy = CloudPolicy {
        allow: [wingman_hub::memory::DataClass::Skill].into(),
        allow_queries: false,
    };
    let emb = Arc::new(OpenAiCompatEmbedder::new(&cfg, policy).unwrap());
    let store = Arc::new(EmbeddedStore::in_memory());
    let ix = Indexer::start(emb, store.clone(), fast());
    ix.try_index(doc(1)).unwrap();
    ix.try_index(Document::new(
        DocKind::Skill,
        "zfs",
        "ZFS",
        "replace a disk",
        1,
    ))
    .unwrap();
    flushed(&ix).await;
    let s = ix.stats();
    assert_eq!((s.indexed, s.refused, s.failed), (1, 1, 1), "{s:?}");
    assert_eq!(srv.count(), 1);
    assert!(!srv.last().body.contains("pve1"));
}

#[tokio::test]
async fn reindexes_when_the_embedder_changes() {
    let store = Arc::new(EmbeddedStore::in_memory());
    let old = Arc::new(HashedEmbedder::new(128).unwrap());
    let docs: Vec<Document> = (0..25).map(doc).collect();
    let ix = Indexer::start(old.clone(), store.clone(), fast());
    for d in docs.iter().cloned() {
        ix.try_index(d).unwrap();
    }
    // A vector whose document no longer exists.
    ix.try_index(Document::new(
        DocKind::Skill,
        "gone",
        "Gone",
        "deleted skill",
        1,
    ))
    .unwrap();
    flushed(&ix).await;
    ix.shutdown(Duration::from_secs(1)).await;
    assert_eq!(store.count(&Filter::default()).await.unwrap(), 26);

    let new = Switchable::new(256);
    let ix = Indexer::start(new.clone(), store.clone(), fast());
    let source = Arc::new(StaticSource::new(docs.clone()));
    let handle = ix
        .reindex_if_needed(source.clone())
        .await
        .unwrap()
        .expect("embedder changed, reindex expected");
    assert!(
        ix.reindex_if_needed(source.clone())
            .await
            .unwrap()
            .is_none(),
        "one at a time"
    );
    let report = tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(report.documents, 25);
    assert_eq!(report.stale, [old.id().to_string()]);
    assert_eq!(report.stale_deleted, 1);
    assert_eq!(
        store.embedders_in_use().await.unwrap(),
        [new.id().to_string()]
    );
    assert_eq!(store.count(&Filter::default()).await.unwrap(), 25);
    assert!(ix.reindex_if_needed(source).await.unwrap().is_none());
    let s = ix.stats();
    assert_eq!((s.reindexed, s.indexed, s.reindexing), (25, 25, false));
    // Search works with the new embedder.
    let hits = Retriever::new(new.clone(), store)
        .search("tank degraded", 3, &Filter::default())
        .await
        .unwrap();
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|h| h.embedder == new.id().to_string()));
}

#[tokio::test]
async fn reindex_waits_out_an_unavailable_embedder() {
    let store = Arc::new(EmbeddedStore::in_memory());
    let old = Arc::new(HashedEmbedder::new(64).unwrap());
    let ix = Indexer::start(old, store.clone(), fast());
    ix.try_index(doc(1)).unwrap();
    flushed(&ix).await;
    ix.shutdown(Duration::from_secs(1)).await;

    let new = Switchable::new(96);
    new.set_down(true);
    let ix = Indexer::start(new.clone(), store.clone(), fast());
    let handle = ix
        .reindex_if_needed(Arc::new(StaticSource::new(vec![doc(1), doc(2)])))
        .await
        .unwrap()
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || ix.stats().retries >= 2).await);
    assert!(!handle.is_finished());
    // Old vectors still serve until the new ones exist.
    assert_eq!(store.count(&Filter::default()).await.unwrap(), 1);
    new.set_down(false);
    let report = tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((report.documents, report.stale_deleted), (2, 0));
    assert_eq!(
        store.embedders_in_use().await.unwrap(),
        [new.id().to_string()]
    );
}

#[tokio::test]
async fn retriever_is_busy_while_the_embedder_is_down() {
    let store: Arc<dyn VectorStore> = Arc::new(EmbeddedStore::in_memory());
    let emb = Switchable::new(128);
    let ix = Indexer::start(emb.clone(), store.clone(), fast());
    ix.try_index(doc(1).with_platform("proxmox")).unwrap();
    ix.try_index(Document::new(
        DocKind::Skill,
        "zfs-replace",
        "Replace a failed ZFS disk",
        "zpool replace tank old new",
        1,
    ))
    .unwrap();
    flushed(&ix).await;
    let r = Retriever::new(emb.clone(), store.clone());

    let hits = r
        .search("degraded zfs pool", 5, &Filter::default())
        .await
        .unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].id, "incident:inc-001");
    let skills = r
        .search("degraded zfs pool", 5, &Filter::kind(DocKind::Skill))
        .await
        .unwrap();
    assert_eq!(skills.len(), 1);
    let on_node = Filter {
        node: Some("pve1".into()),
        platform: Some("proxmox".into()),
        ..Filter::default()
    };
    assert_eq!(r.search("zfs", 5, &on_node).await.unwrap().len(), 1);
    assert_eq!(
        r.search("   ", 5, &Filter::default()).await,
        Err(RetrieveError::EmptyQuery)
    );
    // Only stopwords and numbers: a zero vector, no hits rather than noise.
    assert!(
        r.search("the 42 of", 5, &Filter::default())
            .await
            .unwrap()
            .is_empty()
    );

    emb.set_down(true);
    assert_eq!(
        r.search("zfs", 5, &Filter::default()).await,
        Err(RetrieveError::Busy {
            retry_after: Duration::from_secs(5)
        })
    );
    *emb.retry_after.lock().unwrap() = Some(Duration::from_secs(12));
    assert_eq!(
        r.search("zfs", 5, &Filter::default()).await,
        Err(RetrieveError::Busy {
            retry_after: Duration::from_secs(12)
        })
    );
    emb.set_down(false);
    assert!(r.search("zfs", 5, &Filter::default()).await.is_ok());
}

#[tokio::test]
async fn retriever_ignores_vectors_of_other_embedders() {
    let store: Arc<dyn VectorStore> = Arc::new(EmbeddedStore::in_memory());
    let a = Arc::new(HashedEmbedder::new(64).unwrap());
    let ix = Indexer::start(a, store.clone(), fast());
    ix.try_index(doc(1)).unwrap();
    flushed(&ix).await;
    // Another embedder's query vectors are not comparable: no hits.
    let r = Retriever::new(Arc::new(HashedEmbedder::new(32).unwrap()), store.clone());
    assert!(
        r.search("zfs degraded", 5, &Filter::default())
            .await
            .unwrap()
            .is_empty()
    );
}

/// An embedded store that, like Qdrant with `recreate_on_dim_change`, drops
/// everything when ensured for another dimension.
struct Recreating {
    inner: EmbeddedStore,
    dim: std::sync::Mutex<Option<usize>>,
}

#[async_trait::async_trait]
impl VectorStore for Recreating {
    fn backend(&self) -> &'static str {
        "recreating"
    }
    async fn ensure(
        &self,
        e: &wingman_hub::memory::EmbedderId,
    ) -> Result<(), wingman_hub::memory::StoreError> {
        let prev = self.dim.lock().unwrap().replace(e.dim);
        if prev.is_some_and(|d| d != e.dim) {
            for old in self.inner.embedders_in_use().await? {
                self.inner.delete_embedder(&old).await?;
            }
        }
        self.inner.ensure(e).await
    }
    async fn upsert(
        &self,
        p: Vec<wingman_hub::memory::Point>,
    ) -> Result<(), wingman_hub::memory::StoreError> {
        self.inner.upsert(p).await
    }
    async fn delete(&self, ids: &[String]) -> Result<(), wingman_hub::memory::StoreError> {
        self.inner.delete(ids).await
    }
    async fn delete_older_than(
        &self,
        k: DocKind,
        t: i64,
    ) -> Result<usize, wingman_hub::memory::StoreError> {
        self.inner.delete_older_than(k, t).await
    }
    async fn delete_embedder(&self, e: &str) -> Result<usize, wingman_hub::memory::StoreError> {
        self.inner.delete_embedder(e).await
    }
    async fn search(
        &self,
        v: &[f32],
        k: usize,
        f: &Filter,
    ) -> Result<Vec<wingman_hub::memory::Hit>, wingman_hub::memory::StoreError> {
        self.inner.search(v, k, f).await
    }
    async fn count(&self, f: &Filter) -> Result<usize, wingman_hub::memory::StoreError> {
        self.inner.count(f).await
    }
    async fn embedders_in_use(&self) -> Result<Vec<String>, wingman_hub::memory::StoreError> {
        self.inner.embedders_in_use().await
    }
}

#[tokio::test]
async fn reindex_is_detected_even_after_a_recreating_ensure() {
    let store = Arc::new(Recreating {
        inner: EmbeddedStore::in_memory(),
        dim: std::sync::Mutex::new(None),
    });
    let old = Arc::new(HashedEmbedder::new(64).unwrap());
    let ix = Indexer::start(old.clone(), store.clone(), fast());
    for i in 0..5 {
        ix.try_index(doc(i)).unwrap();
    }
    flushed(&ix).await;
    ix.shutdown(Duration::from_secs(1)).await;

    // A live job reaches the new indexer first: its ensure wipes the store.
    let new = Arc::new(HashedEmbedder::new(96).unwrap());
    let ix = Indexer::start(new.clone(), store.clone(), fast());
    ix.try_index(doc(7)).unwrap();
    flushed(&ix).await;
    assert_eq!(
        store.embedders_in_use().await.unwrap(),
        [new.id().to_string()]
    );
    let report = ix
        .reindex_if_needed(Arc::new(StaticSource::new((0..5).map(doc).collect())))
        .await
        .unwrap()
        .expect("the wiped embedder must still trigger a reindex")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.stale, [old.id().to_string()]);
    assert_eq!(store.count(&Filter::default()).await.unwrap(), 6);
    assert!(
        ix.reindex_if_needed(Arc::new(StaticSource::default()))
            .await
            .unwrap()
            .is_none()
    );
}
