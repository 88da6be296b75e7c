//! Memory inside the hub: the `[memory]` settings, the [`VectorRepo`] on the
//! hub's own store (so the embedded index survives restarts with nothing
//! else installed), building the embedder and vector store, feeding
//! incidents (and their outcomes when resolved), skills and log template
//! summaries to the indexer, and the searches pages and APIs use.
//!
//! Nothing here waits on the embedder in the incident path: documents are
//! queued with `try_index` (full queue: counted and dropped, the periodic
//! re-feed and the next change catch up).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Hub;
use crate::engine::{Incident, IncidentState};
use crate::memory::{
    ApiKey, CloudPolicy, DocKind, Document, EmbeddedStore, Filter, HashedEmbedder, Hit,
    HttpEmbedderConfig, Indexer, IndexerConfig, OllamaEmbedder, OpenAiCompatEmbedder, Point,
    QdrantConfig, QdrantStore, RetrieveError, Retriever, StaticSource, StoreError, TextEmbedder,
    VectorRepo, VectorStore,
};
use crate::store::{DynStore, VectorRow};

/// Which vector store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// Exact search in the hub's own database (default).
    #[default]
    Embedded,
    /// A Qdrant server.
    Qdrant,
}

/// Which embedder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbedderKind {
    /// Hashed lexical vectors: no model needed (default).
    #[default]
    Hashed,
    /// Ollama `/api/embed`.
    Ollama,
    /// An OpenAI-compatible `/v1/embeddings` endpoint (a cloud service:
    /// only the classes in `cloud_allow` are sent).
    Openai,
}

/// `[memory]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Turn retrieval on (default true).
    pub enabled: bool,
    /// `embedded` or `qdrant`.
    pub backend: BackendKind,
    /// Qdrant gRPC URL, e.g. `http://qdrant.lan:6334`.
    pub qdrant_url: String,
    /// Qdrant collection.
    pub qdrant_collection: String,
    /// Qdrant API key.
    pub qdrant_api_key: Option<crate::notify::Secret>,
    /// `hashed`, `ollama` or `openai`.
    pub embedder: EmbedderKind,
    /// Embedder base URL (Ollama: `http://localhost:11434`).
    pub embed_url: String,
    /// Embedding model.
    pub embed_model: String,
    /// The model's vector length (hashed: 1024).
    pub embed_dim: usize,
    /// Key for the OpenAI-compatible endpoint.
    pub embed_api_key: Option<crate::notify::Secret>,
    /// Document classes that may be sent to a cloud embedder
    /// (`incident_narrative`, `outcome_record`, `template_summary`, `skill`).
    pub cloud_allow: CloudPolicy,
    /// How often template summaries are re-fed (default 600 s).
    pub template_interval_secs: u64,
    /// Indexer queue (default 1024; full: dropped and counted).
    pub queue_capacity: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            backend: BackendKind::Embedded,
            qdrant_url: String::new(),
            qdrant_collection: "wingman".into(),
            qdrant_api_key: None,
            embedder: EmbedderKind::Hashed,
            embed_url: "http://localhost:11434".into(),
            embed_model: "nomic-embed-text".into(),
            embed_dim: 768,
            embed_api_key: None,
            cloud_allow: CloudPolicy::default(),
            template_interval_secs: 600,
            queue_capacity: 1024,
        }
    }
}

/// The embedded store's persistence on the hub's SQL store.
struct StoreRepo(DynStore);

fn store_err(e: crate::store::StoreError) -> StoreError {
    StoreError::Backend(e.to_string())
}

#[async_trait]
impl VectorRepo for StoreRepo {
    async fn load_all(&self) -> Result<Vec<Point>, StoreError> {
        let rows = self.0.vectors_load().await.map_err(store_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let (Some(vector), Ok(payload)) = (
                crate::memory::store::vector_from_bytes(&r.vector),
                serde_json::from_str(&r.payload),
            ) else {
                warn!(id = %r.id, "memory: unreadable stored vector skipped");
                continue;
            };
            out.push(Point {
                id: r.id,
                vector,
                embedder: r.embedder,
                payload,
            });
        }
        Ok(out)
    }

    async fn upsert(&self, points: &[Point]) -> Result<(), StoreError> {
        let rows: Vec<VectorRow> = points
            .iter()
            .map(|p| VectorRow {
                id: p.id.clone(),
                kind: p.payload.kind.as_str().to_string(),
                embedder: p.embedder.clone(),
                dim: p.vector.len(),
                vector: crate::memory::store::vector_to_bytes(&p.vector),
                payload: serde_json::to_string(&p.payload).unwrap_or_else(|_| "{}".into()),
                created_at: p.payload.created_at,
            })
            .collect();
        self.0
            .vectors_upsert(&rows, wingman_agent::now_ms())
            .await
            .map_err(store_err)
    }

    async fn delete(&self, ids: &[String]) -> Result<(), StoreError> {
        self.0.vectors_delete(ids).await.map_err(store_err)
    }

    async fn delete_older_than(&self, kind: DocKind, before: i64) -> Result<usize, StoreError> {
        self.0
            .vectors_delete_older_than(kind.as_str(), before)
            .await
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .map_err(store_err)
    }
}

/// Retrieval in a running hub.
pub struct Memory {
    /// The indexer (queue and worker).
    pub indexer: Indexer,
    retriever: Retriever,
    /// The vector store.
    pub store: Arc<dyn VectorStore>,
    embedder: Arc<dyn TextEmbedder>,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("embedder", &self.embedder.id().to_string())
            .field("store", &self.store.backend())
            .finish()
    }
}

fn key(s: &Option<crate::notify::Secret>) -> Option<ApiKey> {
    s.as_ref()
        .filter(|s| !s.is_empty())
        .map(|s| ApiKey::new(s.expose()))
}

/// The text of an incident as indexed: title, likely cause, narrative,
/// evidence summaries (all hub-built or masked; never raw lines).
fn incident_text(i: &Incident) -> String {
    let mut t = String::new();
    t.push_str(&i.title);
    if let Some(c) = &i.likely_cause {
        t.push_str("\nLikely cause: ");
        t.push_str(c);
    }
    for e in &i.evidence {
        t.push('\n');
        t.push_str(&e.summary);
    }
    t
}

impl Memory {
    /// Builds memory from `[memory]`; `None` when disabled.
    pub async fn open(cfg: &MemoryConfig, store: &DynStore) -> Result<Option<Self>, String> {
        if !cfg.enabled {
            return Ok(None);
        }
        let embedder: Arc<dyn TextEmbedder> = match cfg.embedder {
            EmbedderKind::Hashed => Arc::new(HashedEmbedder::default()),
            EmbedderKind::Ollama => {
                let mut h =
                    HttpEmbedderConfig::new(&cfg.embed_url, &cfg.embed_model, cfg.embed_dim);
                h.key = key(&cfg.embed_api_key);
                Arc::new(OllamaEmbedder::new(&h).map_err(|e| format!("[memory] ollama: {e}"))?)
            }
            EmbedderKind::Openai => {
                let mut h =
                    HttpEmbedderConfig::new(&cfg.embed_url, &cfg.embed_model, cfg.embed_dim);
                h.key = key(&cfg.embed_api_key);
                Arc::new(
                    OpenAiCompatEmbedder::new(&h, cfg.cloud_allow.clone())
                        .map_err(|e| format!("[memory] openai: {e}"))?,
                )
            }
        };
        let vstore: Arc<dyn VectorStore> = match cfg.backend {
            BackendKind::Embedded => Arc::new(
                EmbeddedStore::open(Arc::new(StoreRepo(store.clone())))
                    .await
                    .map_err(|e| format!("[memory] cannot load the index: {e}"))?,
            ),
            BackendKind::Qdrant => {
                let mut q = QdrantConfig::new(&cfg.qdrant_url);
                q.collection = cfg.qdrant_collection.clone();
                q.api_key = key(&cfg.qdrant_api_key);
                Arc::new(QdrantStore::new(q).map_err(|e| format!("[memory] qdrant: {e}"))?)
            }
        };
        let icfg = IndexerConfig {
            queue_capacity: cfg.queue_capacity.max(16),
            ..IndexerConfig::default()
        };
        let indexer = Indexer::start(embedder.clone(), vstore.clone(), icfg);
        info!(embedder = %embedder.id(), backend = vstore.backend(), "memory ready");
        Ok(Some(Self {
            indexer,
            retriever: Retriever::new(embedder.clone(), vstore.clone()),
            store: vstore,
            embedder,
        }))
    }

    /// The document of an incident (and, when resolved, its outcome record:
    /// who resolved it, after how long, the timeline, and `plan_lines`:
    /// what was done through remediation plans and whether it worked).
    pub fn incident_documents(i: &Incident, plan_lines: &[String]) -> Vec<Document> {
        let node = i.nodes.first().cloned();
        let text = incident_text(i);
        let mut d = Document::new(DocKind::Incident, &i.id, &i.title, &text, i.opened_at_ms);
        if let Some(n) = &node {
            d = d.with_node(n.clone());
        }
        let mut out = vec![d];
        if i.state == IncidentState::Resolved {
            let by = i
                .resolved
                .as_ref()
                .map(|a| a.by.clone())
                .unwrap_or_else(|| "wingman".into());
            let mins = (i.resolved_at_ms.unwrap_or(i.updated_at_ms) - i.opened_at_ms) / 60_000;
            let fixes: Vec<String> = i
                .timeline
                .iter()
                .filter(|t| !t.detail.is_empty())
                .map(|t| format!("{:?} by {}: {}", t.event, t.by, t.detail))
                .collect();
            let mut outcome = format!(
                "{text}\nResolved by {by} after {mins} min.\n{}",
                fixes.join("\n")
            );
            if !plan_lines.is_empty() {
                outcome.push_str("\nWhat was done:\n");
                outcome.push_str(&plan_lines.join("\n"));
            }
            let mut o = Document::new(
                DocKind::Outcome,
                &i.id,
                format!("Outcome: {}", i.title),
                &outcome,
                i.resolved_at_ms.unwrap_or(i.updated_at_ms),
            );
            if let Some(n) = node {
                o = o.with_node(n);
            }
            out.push(o);
        }
        out
    }

    /// Queues an incident (never waits).
    pub fn index_incident(&self, i: &Incident, plan_lines: &[String]) {
        for d in Self::incident_documents(i, plan_lines) {
            if let Err(e) = self.indexer.try_index(d) {
                warn!(incident = %i.id, error = %e, "memory: incident not queued");
            }
        }
    }

    fn skill_documents(hub: &Hub) -> Vec<Document> {
        hub.skills
            .skills
            .iter()
            .map(|s| {
                let text = format!(
                    "{}\n{}\n{}",
                    s.title,
                    s.keywords.join(", "),
                    s.body.chars().take(4000).collect::<String>()
                );
                let mut d = Document::new(DocKind::Skill, &s.id, &s.title, &text, 0);
                if let Some(p) = s.platforms.first() {
                    d = d.with_platform(p.clone());
                }
                d
            })
            .collect()
    }

    async fn template_documents(hub: &Hub) -> Vec<Document> {
        let mut out = Vec::new();
        let Ok(agents) = hub.store.list_agents().await else {
            return out;
        };
        for a in agents.iter().filter(|a| a.revoked_at.is_none()) {
            let Ok(rows) = hub.store.log_templates(&a.id, 200).await else {
                continue;
            };
            for t in rows {
                let text = format!(
                    "{} ({} {}; seen {} times)",
                    t.template, t.source_kind, t.source_name, t.count
                );
                out.push(
                    Document::new(
                        DocKind::TemplateSummary,
                        format!("{}:{}", a.hostname, t.template_id),
                        &t.template,
                        &text,
                        t.last_seen,
                    )
                    .with_node(a.hostname.clone()),
                );
            }
        }
        out
    }

    /// Similar past incidents (and their outcomes), excluding `i` itself.
    pub async fn similar(&self, i: &Incident, k: usize) -> Result<Vec<Hit>, RetrieveError> {
        let hits = self
            .retriever
            .search(&incident_text(i), k * 2 + 2, &Filter::default())
            .await?;
        // One entry per (kind, incident): a model narrative and the
        // deterministic one of the same incident count once.
        let mut seen = std::collections::BTreeSet::new();
        Ok(hits
            .into_iter()
            .filter(|h| {
                matches!(h.payload.kind, DocKind::Incident | DocKind::Outcome)
                    && h.payload.ref_id != i.id
                    && seen.insert((h.payload.kind.as_str(), h.payload.ref_id.clone()))
            })
            .take(k)
            .collect())
    }

    /// Free-text search.
    pub async fn search(
        &self,
        q: &str,
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<Hit>, RetrieveError> {
        self.retriever.search(q, k, filter).await
    }

    /// Applies retention to the index.
    pub async fn prune(&self, cut: &crate::store::PruneCutoffs) {
        for (kind, before) in [
            (DocKind::TemplateSummary, cut.summaries_before),
            (DocKind::Incident, cut.incidents_before),
            (DocKind::Outcome, cut.incidents_before),
        ] {
            if let Err(e) = self.store.delete_older_than(kind, before).await {
                warn!(kind = kind.as_str(), error = %e, "memory: retention failed");
            }
        }
    }
}

/// Feeds the index until `shutdown`: skills and stored incidents at start
/// (re-embedding everything when the embedder changed), then template
/// summaries every `template_interval_secs`.
pub async fn run(hub: Hub, shutdown: CancellationToken) {
    let Some(mem) = hub.memory.clone() else {
        return;
    };
    let mut docs = Memory::skill_documents(&hub);
    let filter = crate::store::IncidentFilter {
        state: None,
        severity: None,
        node: None,
        limit: 2000,
        offset: 0,
    };
    if let Ok((rows, _)) = hub.store.list_incidents(&filter).await {
        for r in rows {
            if let Ok(i) = serde_json::from_str::<Incident>(&r.body) {
                let lines = if i.state == IncidentState::Resolved {
                    hub.control.outcome_lines(&i.id).await
                } else {
                    Vec::new()
                };
                docs.extend(Memory::incident_documents(&i, &lines));
            }
        }
    }
    docs.extend(Memory::template_documents(&hub).await);
    let n = docs.len();
    match mem
        .indexer
        .reindex_if_needed(Arc::new(StaticSource::new(docs.clone())))
        .await
    {
        Ok(Some(_)) => info!("memory: re-indexing after an embedder change"),
        Ok(None) => {}
        Err(e) => warn!(error = %e, "memory: cannot check the index"),
    }
    for d in docs {
        let _ = mem.indexer.submit(crate::memory::Job::Upsert(d)).await;
    }
    info!(documents = n, "memory: fed");
    let every = Duration::from_secs(hub.config.memory.template_interval_secs.max(30));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
        for d in Memory::template_documents(&hub).await {
            if mem.indexer.try_index(d).is_err() {
                break;
            }
        }
    }
    mem.indexer.shutdown(Duration::from_secs(5)).await;
}
