//! [`QdrantStore`]: the [`VectorStore`] on a Qdrant server (gRPC, via
//! qdrant-client), for operators who run one.
//!
//! - One collection (default `wingman_memory`), cosine distance, dimension
//!   from the [`EmbedderId`] given to `ensure`. If the collection exists
//!   with another dimension, `ensure` fails with
//!   [`StoreError::Incompatible`] unless `recreate_on_dim_change` is set, in
//!   which case the collection is dropped and recreated empty (the indexer's
//!   reindex then fills it again).
//! - Keyword payload indexes on `kind`, `node`, `platform`, `embedder`, an
//!   integer index on `created_at` (retention).
//! - String ids map to deterministic UUIDs (the first 16 bytes of
//!   SHA-256(id), as a version-8 "custom" UUID); the original id is kept in
//!   the payload field `point_id`.
//! - Writes use `wait=true`, so a write is searchable when it returns.
//!
//! No Qdrant server exists in CI; the behavioural suite runs against one when
//! `WINGMAN_TEST_QDRANT_URL` is set (see the scratch crate's README).

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeleteCollectionBuilder, DeletePointsBuilder, Distance, FacetCountsBuilder, FieldType,
    Filter as QFilter, PointId, PointStruct, PointsIdsList, Range, ScoredPoint,
    SearchPointsBuilder, UpsertPointsBuilder, VectorParamsBuilder, facet_value, vectors_config,
};
use qdrant_client::{Qdrant, QdrantError};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::doc::{DocKind, Payload};
use super::embed::{ApiKey, EmbedderId};
use super::store::{Filter, Hit, Point, StoreError, VectorStore, check_point, sort_hits};

/// Default collection name.
pub const DEFAULT_COLLECTION: &str = "wingman_memory";

/// Most distinct embedders reported by `embedders_in_use`.
const MAX_EMBEDDERS: u64 = 1000;

/// Connection settings.
#[derive(Debug, Clone)]
pub struct QdrantConfig {
    /// gRPC URL, e.g. `http://127.0.0.1:6334`.
    pub url: String,
    /// Collection name.
    pub collection: String,
    /// API key, if the server wants one.
    pub api_key: Option<ApiKey>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Drop and recreate the collection when its dimension differs from the
    /// embedder's (losing its vectors). Off by default.
    pub recreate_on_dim_change: bool,
}

impl QdrantConfig {
    /// Settings for `url` with the default collection and a 10 s timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            collection: DEFAULT_COLLECTION.into(),
            api_key: None,
            timeout: Duration::from_secs(10),
            recreate_on_dim_change: false,
        }
    }
}

/// The Qdrant-backed store.
pub struct QdrantStore {
    client: Qdrant,
    cfg: QdrantConfig,
    dims: RwLock<HashMap<String, usize>>,
}

impl std::fmt::Debug for QdrantStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantStore")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// The deterministic Qdrant point id of a string id.
pub fn point_uuid(id: &str) -> uuid::Uuid {
    let digest = Sha256::digest(id.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(digest.get(..16).unwrap_or(&[0u8; 16]));
    uuid::Builder::from_custom_bytes(b).into_uuid()
}

fn qid(id: &str) -> PointId {
    PointId::from(point_uuid(id).to_string())
}

fn backend(e: QdrantError) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Our filter as Qdrant conditions.
pub fn to_qdrant_filter(f: &Filter) -> QFilter {
    let mut must = Vec::new();
    if let Some(k) = f.kind {
        must.push(Condition::matches("kind", k.as_str().to_owned()));
    }
    if let Some(n) = &f.node {
        must.push(Condition::matches("node", n.clone()));
    }
    if let Some(p) = &f.platform {
        must.push(Condition::matches("platform", p.clone()));
    }
    if let Some(e) = &f.embedder {
        must.push(Condition::matches("embedder", e.clone()));
    }
    QFilter::must(must)
}

/// The stored payload: ours plus `point_id` and `embedder`.
pub fn to_qdrant_payload(p: &Point) -> Result<qdrant_client::Payload, StoreError> {
    let mut v = json!({
        "point_id": p.id,
        "embedder": p.embedder,
        "kind": p.payload.kind.as_str(),
        "title": p.payload.title,
        "text": p.payload.text,
        "ref_id": p.payload.ref_id,
        "created_at": p.payload.created_at,
    });
    if let Some(n) = &p.payload.node {
        v["node"] = json!(n);
    }
    if let Some(pl) = &p.payload.platform {
        v["platform"] = json!(pl);
    }
    qdrant_client::Payload::try_from(v).map_err(|e| StoreError::Invalid(e.to_string()))
}

#[derive(Deserialize)]
struct Stored {
    point_id: String,
    embedder: String,
    kind: String,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    platform: Option<String>,
    #[serde(default)]
    title: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    ref_id: String,
    #[serde(default)]
    created_at: i64,
}

/// A scored point back as a [`Hit`]; `None` for points we did not write.
pub fn from_scored(sp: ScoredPoint) -> Option<Hit> {
    let json = serde_json::Value::from(qdrant_client::Payload::from(sp.payload));
    let s: Stored = serde_json::from_value(json).ok()?;
    Some(Hit {
        id: s.point_id,
        score: sp.score,
        embedder: s.embedder,
        payload: Payload {
            kind: DocKind::parse(&s.kind)?,
            node: s.node,
            platform: s.platform,
            title: s.title,
            text: s.text,
            ref_id: s.ref_id,
            created_at: s.created_at,
        },
    })
}

impl QdrantStore {
    /// Builds the client (no request is made; the version check is skipped).
    pub fn new(cfg: QdrantConfig) -> Result<Self, StoreError> {
        let mut b = Qdrant::from_url(&cfg.url)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .skip_compatibility_check();
        if let Some(k) = &cfg.api_key {
            b = b.api_key(k.reveal().to_owned());
        }
        let client = b.build().map_err(backend)?;
        Ok(Self {
            client,
            cfg,
            dims: RwLock::new(HashMap::new()),
        })
    }

    /// The collection name.
    pub fn collection(&self) -> &str {
        &self.cfg.collection
    }

    /// Drops the collection (tests, `reset` commands).
    pub async fn drop_collection(&self) -> Result<(), StoreError> {
        if self.exists().await? {
            self.client
                .delete_collection(DeleteCollectionBuilder::new(&self.cfg.collection))
                .await
                .map_err(backend)?;
        }
        self.dims
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        Ok(())
    }

    async fn exists(&self) -> Result<bool, StoreError> {
        self.client
            .collection_exists(&self.cfg.collection)
            .await
            .map_err(backend)
    }

    async fn existing_dim(&self) -> Result<Option<usize>, StoreError> {
        let info = self
            .client
            .collection_info(&self.cfg.collection)
            .await
            .map_err(backend)?;
        let dim = info
            .result
            .and_then(|r| r.config)
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config)
            .and_then(|c| match c {
                vectors_config::Config::Params(p) => usize::try_from(p.size).ok(),
                vectors_config::Config::ParamsMap(_) => None,
            });
        Ok(dim)
    }

    async fn create(&self, dim: usize) -> Result<(), StoreError> {
        let size = u64::try_from(dim).map_err(|_| StoreError::Invalid("dimension".into()))?;
        let created = self
            .client
            .create_collection(
                CreateCollectionBuilder::new(&self.cfg.collection)
                    .vectors_config(VectorParamsBuilder::new(size, Distance::Cosine)),
            )
            .await;
        match created {
            Ok(_) => Ok(()),
            // Another hub process created it first.
            Err(e) if self.exists().await.unwrap_or(false) => {
                tracing::debug!(error = %e, "collection created concurrently");
                Ok(())
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn indexes(&self) -> Result<(), StoreError> {
        for (field, ty) in [
            ("kind", FieldType::Keyword),
            ("node", FieldType::Keyword),
            ("platform", FieldType::Keyword),
            ("embedder", FieldType::Keyword),
            ("created_at", FieldType::Integer),
        ] {
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(&self.cfg.collection, field, ty)
                        .wait(true),
                )
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    /// Counts then deletes the points passing `filter`.
    async fn delete_where(&self, filter: QFilter) -> Result<usize, StoreError> {
        if !self.exists().await? {
            return Ok(0);
        }
        let n = self
            .client
            .count(
                CountPointsBuilder::new(&self.cfg.collection)
                    .filter(filter.clone())
                    .exact(true),
            )
            .await
            .map_err(backend)?
            .result
            .map_or(0, |r| r.count);
        if n > 0 {
            self.client
                .delete_points(
                    DeletePointsBuilder::new(&self.cfg.collection)
                        .points(filter)
                        .wait(true),
                )
                .await
                .map_err(backend)?;
        }
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

#[async_trait]
impl VectorStore for QdrantStore {
    fn backend(&self) -> &'static str {
        "qdrant"
    }

    async fn ensure(&self, embedder: &EmbedderId) -> Result<(), StoreError> {
        if embedder.dim == 0 {
            return Err(StoreError::Invalid("embedder dimension is zero".into()));
        }
        if self.exists().await? {
            match self.existing_dim().await? {
                Some(d) if d == embedder.dim => {}
                existing => {
                    if !self.cfg.recreate_on_dim_change {
                        return Err(StoreError::Incompatible {
                            collection: self.cfg.collection.clone(),
                            existing: existing.unwrap_or(0),
                            wanted: embedder.dim,
                        });
                    }
                    tracing::warn!(
                        collection = %self.cfg.collection,
                        existing = ?existing,
                        wanted = embedder.dim,
                        "recreating Qdrant collection for a new embedding dimension"
                    );
                    self.drop_collection().await?;
                    self.create(embedder.dim).await?;
                }
            }
        } else {
            self.create(embedder.dim).await?;
        }
        self.indexes().await?;
        let mut dims = self.dims.write().unwrap_or_else(PoisonError::into_inner);
        // Only one dimension lives in the collection.
        dims.retain(|_, d| *d == embedder.dim);
        dims.insert(embedder.to_string(), embedder.dim);
        Ok(())
    }

    async fn upsert(&self, points: Vec<Point>) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        let mut structs = Vec::with_capacity(points.len());
        {
            let dims = self.dims.read().unwrap_or_else(PoisonError::into_inner);
            for p in &points {
                check_point(p, &dims)?;
            }
        }
        // Last write of an id wins, as in the embedded store.
        let mut seen = std::collections::HashSet::new();
        for p in points.iter().rev() {
            if seen.insert(p.id.as_str()) {
                structs.push(PointStruct::new(
                    qid(&p.id),
                    p.vector.clone(),
                    to_qdrant_payload(p)?,
                ));
            }
        }
        self.client
            .upsert_points(UpsertPointsBuilder::new(&self.cfg.collection, structs).wait(true))
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn delete(&self, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() || !self.exists().await? {
            return Ok(());
        }
        let list: Vec<PointId> = ids.iter().map(|i| qid(i)).collect();
        self.client
            .delete_points(
                DeletePointsBuilder::new(&self.cfg.collection)
                    .points(PointsIdsList::from(list))
                    .wait(true),
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn delete_older_than(&self, kind: DocKind, before: i64) -> Result<usize, StoreError> {
        // f64 holds every ms timestamp up to 2^53 exactly.
        #[allow(clippy::cast_precision_loss)]
        let lt = before as f64;
        let filter = QFilter::must([
            Condition::matches("kind", kind.as_str().to_owned()),
            Condition::range(
                "created_at",
                Range {
                    lt: Some(lt),
                    ..Range::default()
                },
            ),
        ]);
        self.delete_where(filter).await
    }

    async fn delete_embedder(&self, embedder: &str) -> Result<usize, StoreError> {
        self.delete_where(QFilter::must([Condition::matches(
            "embedder",
            embedder.to_owned(),
        )]))
        .await
    }

    async fn search(
        &self,
        vector: &[f32],
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<Hit>, StoreError> {
        if k == 0 {
            return Ok(Vec::new());
        }
        if vector.iter().any(|x| !x.is_finite()) {
            return Err(StoreError::Invalid("query vector is not finite".into()));
        }
        // Ask for more than k so that ties at the k-th score are broken by
        // id here, not by the server's internal order.
        let limit =
            u64::try_from(k.saturating_add(k.min(92)).saturating_add(8)).unwrap_or(u64::MAX);
        let res = self
            .client
            .search_points(
                SearchPointsBuilder::new(&self.cfg.collection, vector.to_vec(), limit)
                    .filter(to_qdrant_filter(filter))
                    .with_payload(true),
            )
            .await;
        let res = match res {
            Ok(r) => r,
            Err(_) if !self.exists().await? => return Ok(Vec::new()),
            Err(e) => return Err(backend(e)),
        };
        let mut hits: Vec<Hit> = res.result.into_iter().filter_map(from_scored).collect();
        sort_hits(&mut hits);
        hits.truncate(k);
        Ok(hits)
    }

    async fn count(&self, filter: &Filter) -> Result<usize, StoreError> {
        if !self.exists().await? {
            return Ok(0);
        }
        let n = self
            .client
            .count(
                CountPointsBuilder::new(&self.cfg.collection)
                    .filter(to_qdrant_filter(filter))
                    .exact(true),
            )
            .await
            .map_err(backend)?
            .result
            .map_or(0, |r| r.count);
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn embedders_in_use(&self) -> Result<Vec<String>, StoreError> {
        if !self.exists().await? {
            return Ok(Vec::new());
        }
        let res = self
            .client
            .facet(
                FacetCountsBuilder::new(&self.cfg.collection, "embedder")
                    .limit(MAX_EMBEDDERS)
                    .exact(true),
            )
            .await
            .map_err(backend)?;
        let mut out: Vec<String> = res
            .hits
            .into_iter()
            .filter(|h| h.count > 0)
            .filter_map(|h| match h.value?.variant? {
                facet_value::Variant::StringValue(s) => Some(s),
                _ => None,
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_deterministic_and_distinct() {
        let a = point_uuid("incident:inc-1");
        assert_eq!(a, point_uuid("incident:inc-1"));
        assert_ne!(a, point_uuid("incident:inc-2"));
        assert_eq!(a.get_version_num(), 8);
    }

    #[test]
    fn payload_round_trips_through_qdrant_types() {
        let doc = crate::memory::Document::new(DocKind::Outcome, "inc-9", "t", "body", 42)
            .with_node("pve1");
        let p = Point {
            id: doc.id.clone(),
            vector: vec![1.0, 0.0],
            embedder: "hashed/x/2".into(),
            payload: doc.payload.clone(),
        };
        let qp = to_qdrant_payload(&p).unwrap();
        let sp = ScoredPoint {
            id: Some(qid(&p.id)),
            payload: qp.into(),
            score: 0.5,
            ..ScoredPoint::default()
        };
        let hit = from_scored(sp).unwrap();
        assert_eq!(hit.id, p.id);
        assert_eq!(hit.payload, doc.payload);
        assert_eq!(hit.embedder, "hashed/x/2");
    }

    #[test]
    fn filter_maps_to_conditions() {
        let f = Filter {
            kind: Some(DocKind::Skill),
            node: Some("n1".into()),
            platform: None,
            embedder: Some("e".into()),
        };
        assert_eq!(to_qdrant_filter(&f).must.len(), 3);
        assert!(to_qdrant_filter(&Filter::default()).must.is_empty());
    }
}
