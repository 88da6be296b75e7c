//! Memory: retrieval over incident narratives, resolutions (outcome
//! records), log template summaries and skills.
//!
//! - [`doc`]: [`Document`]s, their [`DocKind`] and privacy [`DataClass`].
//! - [`embed`]: the [`TextEmbedder`] trait and the HTTP embedders
//!   ([`OllamaEmbedder`], [`OpenAiCompatEmbedder`] behind a [`CloudPolicy`]);
//!   [`hashed`]: the model-free [`HashedEmbedder`].
//! - [`store`]: the [`VectorStore`] trait, the default [`EmbeddedStore`]
//!   (exact cosine in memory, persisted through a [`VectorRepo`]);
//!   [`qdrant`]: [`QdrantStore`].
//! - [`index`]: the [`Indexer`] (bounded coalescing queue, background
//!   worker, backoff while the embedder is unavailable, reindex on a model
//!   change) and the [`Retriever`].
//! - [`eval`]: recall@k over a labelled set.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use wingman_hub::memory::*;
//!
//! let store: Arc<dyn VectorStore> = Arc::new(EmbeddedStore::in_memory());
//! let embedder: Arc<dyn TextEmbedder> = Arc::new(HashedEmbedder::default());
//! let indexer = Indexer::start(embedder.clone(), store.clone(), IndexerConfig::default());
//! let doc = Document::new(DocKind::Incident, "inc-1", "ZFS pool degraded",
//!     "pool tank on pve1 is DEGRADED, one disk faulted", 1_700_000_000_000).with_node("pve1");
//! indexer.try_index(doc).unwrap();
//! indexer.flush().await;
//! let hits = Retriever::new(embedder, store)
//!     .search("zpool degraded after a drive fault", 5, &Filter::default()).await.unwrap();
//! assert_eq!(hits[0].payload.ref_id, "inc-1");
//! # });
//! ```

pub mod doc;
pub mod embed;
pub mod eval;
pub mod hashed;
pub mod index;
pub mod qdrant;
pub mod store;

pub use doc::{DataClass, DocKind, Document, Payload};
pub use embed::{
    ApiKey, CloudPolicy, EmbedError, EmbedderId, HttpEmbedderConfig, Locality, OllamaEmbedder,
    OpenAiCompatEmbedder, TextEmbedder,
};
pub use eval::{EvalItem, EvalReport, recall_at_k};
pub use hashed::HashedEmbedder;
pub use index::{
    DocumentSource, IndexError, Indexer, IndexerConfig, IndexerStats, Job, ReindexReport,
    RetrieveError, Retriever, SourceError, StaticSource, SubmitError, Submitted,
};
pub use qdrant::{QdrantConfig, QdrantStore};
pub use store::{EmbeddedStore, Filter, Hit, MemRepo, Point, StoreError, VectorRepo, VectorStore};
