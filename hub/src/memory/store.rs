//! Vector storage: the [`VectorStore`] trait, its [`Point`]/[`Filter`]/[`Hit`]
//! types and the default [`EmbeddedStore`]: exact cosine search over an
//! in-memory map (fine at homelab scale: 100k vectors of 1024 floats is
//! 400 MiB and about 50 ms per query on one core), written through to a
//! [`VectorRepo`] that the hub implements on its SQLite/PostgreSQL store
//! (table layout in the scratch crate's README). [`MemRepo`] is the
//! in-memory repo for tests. The Qdrant backend is in `qdrant.rs`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use async_trait::async_trait;

use super::doc::{DocKind, Payload};
use super::embed::EmbedderId;

/// A stored vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Stable id, e.g. `incident:inc-12`; upserting the same id replaces.
    pub id: String,
    /// The vector.
    pub vector: Vec<f32>,
    /// [`EmbedderId`] string of the model that made it.
    pub embedder: String,
    /// Metadata.
    pub payload: Payload,
}

/// Restricts a search or count. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this kind.
    pub kind: Option<DocKind>,
    /// Only this node.
    pub node: Option<String>,
    /// Only this platform.
    pub platform: Option<String>,
    /// Only vectors of this embedder (the [`Retriever`](super::Retriever)
    /// always sets it: vectors of different models are not comparable).
    pub embedder: Option<String>,
}

impl Filter {
    /// Only `kind`.
    pub fn kind(kind: DocKind) -> Self {
        Self {
            kind: Some(kind),
            ..Self::default()
        }
    }

    /// Whether `p` passes.
    pub fn matches(&self, p: &Point) -> bool {
        self.kind.is_none_or(|k| p.payload.kind == k)
            && self
                .node
                .as_ref()
                .is_none_or(|n| p.payload.node.as_ref() == Some(n))
            && self
                .platform
                .as_ref()
                .is_none_or(|n| p.payload.platform.as_ref() == Some(n))
            && self.embedder.as_ref().is_none_or(|e| &p.embedder == e)
    }
}

/// A search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Point id.
    pub id: String,
    /// Cosine similarity, -1..=1.
    pub score: f32,
    /// Embedder string of the vector.
    pub embedder: String,
    /// Metadata.
    pub payload: Payload,
}

/// Vector-store errors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// A vector's length differs from its embedder's dimension.
    #[error("dimension mismatch: {embedder} has {expected} dimensions, vector has {got}")]
    Dimension {
        /// Embedder string.
        embedder: String,
        /// Its dimension.
        expected: usize,
        /// The vector's length.
        got: usize,
    },
    /// The embedder was never passed to [`VectorStore::ensure`].
    #[error("embedder {0} not ensured")]
    NotEnsured(String),
    /// An existing collection has another dimension and recreating it was
    /// not allowed.
    #[error("collection {collection} has dimension {existing}, embedder needs {wanted}")]
    Incompatible {
        /// Collection.
        collection: String,
        /// Its dimension.
        existing: usize,
        /// The embedder's.
        wanted: usize,
    },
    /// Invalid input (non-finite vector, empty id, ...).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The backend (database, Qdrant) failed or is unreachable.
    #[error("vector store backend: {0}")]
    Backend(String),
}

impl StoreError {
    /// True for backend failures worth retrying later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Backend(_))
    }
}

/// Stores vectors and finds the nearest ones.
#[async_trait]
pub trait VectorStore: Send + Sync {
    /// Backend name (`embedded`, `qdrant`).
    fn backend(&self) -> &'static str;
    /// Prepares storage for vectors of `embedder` (creates the collection,
    /// records the dimension). Idempotent.
    async fn ensure(&self, embedder: &EmbedderId) -> Result<(), StoreError>;
    /// Inserts or replaces points by id. Idempotent. Every point's embedder
    /// must have been ensured and its vector must have that dimension.
    async fn upsert(&self, points: Vec<Point>) -> Result<(), StoreError>;
    /// Deletes points by id (unknown ids are ignored).
    async fn delete(&self, ids: &[String]) -> Result<(), StoreError>;
    /// Deletes points of `kind` whose `created_at` is below `before` (ms);
    /// returns how many.
    async fn delete_older_than(&self, kind: DocKind, before: i64) -> Result<usize, StoreError>;
    /// Deletes every point made by `embedder` (stale after a model change);
    /// returns how many.
    async fn delete_embedder(&self, embedder: &str) -> Result<usize, StoreError>;
    /// The `k` points most similar to `vector` that pass `filter`, by
    /// descending score, ties broken by ascending id.
    async fn search(
        &self,
        vector: &[f32],
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<Hit>, StoreError>;
    /// Points that pass `filter`.
    async fn count(&self, filter: &Filter) -> Result<usize, StoreError>;
    /// Distinct embedder strings of stored points, sorted.
    async fn embedders_in_use(&self) -> Result<Vec<String>, StoreError>;
}

/// Persistence behind [`EmbeddedStore`]; the hub implements it on its SQL
/// store (`memory_vectors` table).
#[async_trait]
pub trait VectorRepo: Send + Sync {
    /// Every stored point (read once at start-up).
    async fn load_all(&self) -> Result<Vec<Point>, StoreError>;
    /// Inserts or replaces points by id, in one transaction.
    async fn upsert(&self, points: &[Point]) -> Result<(), StoreError>;
    /// Deletes points by id.
    async fn delete(&self, ids: &[String]) -> Result<(), StoreError>;
    /// Deletes points of `kind` created before `before` (ms); returns how many.
    async fn delete_older_than(&self, kind: DocKind, before: i64) -> Result<usize, StoreError>;
}

/// An in-memory [`VectorRepo`] (tests; or no persistence at all). It can
/// be told to fail, to test write-through.
#[derive(Debug, Default)]
pub struct MemRepo {
    points: Mutex<HashMap<String, Point>>,
    fail: std::sync::atomic::AtomicBool,
}

impl MemRepo {
    /// An empty repo.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later call fail with [`StoreError::Backend`] (or stop).
    pub fn set_failing(&self, fail: bool) {
        self.fail.store(fail, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stored points.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Point>> {
        self.points.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            Err(StoreError::Backend("repo failing (test)".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl VectorRepo for MemRepo {
    async fn load_all(&self) -> Result<Vec<Point>, StoreError> {
        self.check()?;
        Ok(self.lock().values().cloned().collect())
    }

    async fn upsert(&self, points: &[Point]) -> Result<(), StoreError> {
        self.check()?;
        let mut m = self.lock();
        for p in points {
            m.insert(p.id.clone(), p.clone());
        }
        Ok(())
    }

    async fn delete(&self, ids: &[String]) -> Result<(), StoreError> {
        self.check()?;
        let mut m = self.lock();
        for id in ids {
            m.remove(id);
        }
        Ok(())
    }

    async fn delete_older_than(&self, kind: DocKind, before: i64) -> Result<usize, StoreError> {
        self.check()?;
        let mut m = self.lock();
        let n = m.len();
        m.retain(|_, p| !(p.payload.kind == kind && p.payload.created_at < before));
        Ok(n - m.len())
    }
}

type PointMap = HashMap<String, Point>;

/// Exact cosine search in memory, written through to a [`VectorRepo`].
/// Vectors are L2-normalised on upsert, so a score is a dot product.
pub struct EmbeddedStore {
    repo: Arc<dyn VectorRepo>,
    points: Arc<RwLock<PointMap>>,
    /// Embedder string → dimension, from `ensure`.
    dims: RwLock<HashMap<String, usize>>,
    /// Serialises writes so the repo and the map change in the same order.
    write: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("points", &read(&self.points).len())
            .finish_non_exhaustive()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

impl EmbeddedStore {
    /// Loads every point from `repo`.
    pub async fn open(repo: Arc<dyn VectorRepo>) -> Result<Self, StoreError> {
        let loaded = repo.load_all().await?;
        let mut points = HashMap::with_capacity(loaded.len());
        for mut p in loaded {
            normalise(&mut p.vector);
            points.insert(p.id.clone(), p);
        }
        Ok(Self {
            repo,
            points: Arc::new(RwLock::new(points)),
            dims: RwLock::new(HashMap::new()),
            write: tokio::sync::Mutex::new(()),
        })
    }

    /// A store over a fresh [`MemRepo`].
    pub fn in_memory() -> Self {
        Self {
            repo: Arc::new(MemRepo::new()),
            points: Arc::new(RwLock::new(HashMap::new())),
            dims: RwLock::new(HashMap::new()),
            write: tokio::sync::Mutex::new(()),
        }
    }

    /// Stored points.
    pub fn len(&self) -> usize {
        read(&self.points).len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// True when every component is zero (text without a usable token, for the
/// hashed embedder): such a vector has no direction and is never stored.
pub fn is_zero(v: &[f32]) -> bool {
    v.iter().all(|x| *x == 0.0)
}

/// Scales `v` to unit length (zero vectors stay zero).
pub fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 && n.is_finite() {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Orders hits by descending score, then ascending id.
pub fn sort_hits(hits: &mut [Hit]) {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
}

/// Dot product with eight independent accumulators (lets the compiler
/// vectorise it; a plain `zip().sum()` is sequential in f32).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    let mut acc = [0.0f32; 8];
    for (x, y) in ca.iter().zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

fn top_k(points: &PointMap, q: &[f32], k: usize, filter: &Filter) -> Vec<Hit> {
    if k == 0 {
        return Vec::new();
    }
    let mut scored: Vec<(f32, &Point)> = points
        .values()
        .filter(|p| p.vector.len() == q.len() && filter.matches(p))
        .map(|p| {
            let s = dot(&p.vector, q);
            (if s.is_finite() { s } else { -1.0 }, p)
        })
        .collect();
    let order = |a: &(f32, &Point), b: &(f32, &Point)| {
        b.0.total_cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id))
    };
    if scored.len() > k {
        scored.select_nth_unstable_by(k - 1, order);
        scored.truncate(k);
    }
    scored.sort_by(order);
    scored
        .into_iter()
        .map(|(score, p)| Hit {
            id: p.id.clone(),
            score,
            embedder: p.embedder.clone(),
            payload: p.payload.clone(),
        })
        .collect()
}

#[async_trait]
impl VectorStore for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn ensure(&self, embedder: &EmbedderId) -> Result<(), StoreError> {
        if embedder.dim == 0 {
            return Err(StoreError::Invalid("embedder dimension is zero".into()));
        }
        write(&self.dims).insert(embedder.to_string(), embedder.dim);
        Ok(())
    }

    async fn upsert(&self, mut points: Vec<Point>) -> Result<(), StoreError> {
        {
            let dims = read(&self.dims);
            for p in &mut points {
                check_point(p, &dims)?;
                normalise(&mut p.vector);
            }
        }
        let _w = self.write.lock().await;
        self.repo.upsert(&points).await?;
        let mut m = write(&self.points);
        for p in points {
            m.insert(p.id.clone(), p);
        }
        Ok(())
    }

    async fn delete(&self, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let _w = self.write.lock().await;
        self.repo.delete(ids).await?;
        let mut m = write(&self.points);
        for id in ids {
            m.remove(id);
        }
        Ok(())
    }

    async fn delete_older_than(&self, kind: DocKind, before: i64) -> Result<usize, StoreError> {
        let _w = self.write.lock().await;
        let n = self.repo.delete_older_than(kind, before).await?;
        let mut m = write(&self.points);
        let was = m.len();
        m.retain(|_, p| !(p.payload.kind == kind && p.payload.created_at < before));
        let removed = was - m.len();
        if removed != n {
            tracing::debug!(repo = n, memory = removed, "retention counts differ");
        }
        Ok(removed)
    }

    async fn delete_embedder(&self, embedder: &str) -> Result<usize, StoreError> {
        let ids: Vec<String> = read(&self.points)
            .values()
            .filter(|p| p.embedder == embedder)
            .map(|p| p.id.clone())
            .collect();
        let _w = self.write.lock().await;
        // Re-check under the write lock: a point may have been re-embedded.
        let ids: Vec<String> = {
            let m = read(&self.points);
            ids.into_iter()
                .filter(|id| m.get(id).is_some_and(|p| p.embedder == embedder))
                .collect()
        };
        if ids.is_empty() {
            return Ok(0);
        }
        self.repo.delete(&ids).await?;
        let mut m = write(&self.points);
        for id in &ids {
            m.remove(id);
        }
        Ok(ids.len())
    }

    async fn search(
        &self,
        vector: &[f32],
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<Hit>, StoreError> {
        if vector.iter().any(|x| !x.is_finite()) {
            return Err(StoreError::Invalid("query vector is not finite".into()));
        }
        let mut q = vector.to_vec();
        normalise(&mut q);
        let points = Arc::clone(&self.points);
        let filter = filter.clone();
        // Exact search is CPU work: keep it off the async workers.
        tokio::task::spawn_blocking(move || top_k(&read(&points), &q, k, &filter))
            .await
            .map_err(|e| StoreError::Backend(format!("search task: {e}")))
    }

    async fn count(&self, filter: &Filter) -> Result<usize, StoreError> {
        Ok(read(&self.points)
            .values()
            .filter(|p| filter.matches(p))
            .count())
    }

    async fn embedders_in_use(&self) -> Result<Vec<String>, StoreError> {
        let set: BTreeSet<String> = read(&self.points)
            .values()
            .map(|p| p.embedder.clone())
            .collect();
        Ok(set.into_iter().collect())
    }
}

/// Checks id, finiteness and the dimension against ensured embedders.
pub(crate) fn check_point(p: &Point, dims: &HashMap<String, usize>) -> Result<(), StoreError> {
    if p.id.is_empty() {
        return Err(StoreError::Invalid("empty point id".into()));
    }
    let Some(&dim) = dims.get(&p.embedder) else {
        return Err(StoreError::NotEnsured(p.embedder.clone()));
    };
    if p.vector.len() != dim {
        return Err(StoreError::Dimension {
            embedder: p.embedder.clone(),
            expected: dim,
            got: p.vector.len(),
        });
    }
    if p.vector.iter().any(|x| !x.is_finite()) {
        return Err(StoreError::Invalid(format!(
            "vector of {} is not finite",
            p.id
        )));
    }
    if is_zero(&p.vector) {
        return Err(StoreError::Invalid(format!(
            "vector of {} is all zeros (cosine undefined)",
            p.id
        )));
    }
    Ok(())
}

/// Encodes a vector as little-endian f32 bytes (the SQL `vector` column).
pub fn vector_to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Decodes [`vector_to_bytes`]; `None` when the length is not a multiple of 4.
pub fn vector_from_bytes(b: &[u8]) -> Option<Vec<f32>> {
    if !b.len().is_multiple_of(4) {
        return None;
    }
    Some(
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.25).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
        assert_eq!(dot(&[], &[]), 0.0);
    }

    #[test]
    fn bytes_round_trip() {
        let v = vec![1.5f32, -0.25, 0.0, f32::MIN_POSITIVE];
        let b = vector_to_bytes(&v);
        assert_eq!(b.len(), 16);
        assert_eq!(vector_from_bytes(&b), Some(v));
        assert_eq!(vector_from_bytes(&[0, 1, 2]), None);
    }

    #[tokio::test]
    async fn repo_failure_leaves_memory_unchanged() {
        let repo = Arc::new(MemRepo::new());
        let s = EmbeddedStore::open(repo.clone()).await.unwrap();
        let id = EmbedderId::new("t", "m", 2);
        s.ensure(&id).await.unwrap();
        let p = Point {
            id: "a".into(),
            vector: vec![1.0, 0.0],
            embedder: id.to_string(),
            payload: crate::memory::Document::new(DocKind::Skill, "a", "t", "x", 1).payload,
        };
        repo.set_failing(true);
        assert!(s.upsert(vec![p.clone()]).await.is_err());
        assert_eq!(s.len(), 0);
        repo.set_failing(false);
        s.upsert(vec![p]).await.unwrap();
        let reopened = EmbeddedStore::open(repo).await.unwrap();
        assert_eq!(reopened.len(), 1);
    }
}
