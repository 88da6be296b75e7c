//! Retrieval evaluation: recall@k over a labelled set of documents in which
//! items sharing a `group` should find each other (an incident and its
//! paraphrase on another node, an incident and its resolution). The set
//! itself lives with the tests (`tests/fixtures/memory_eval.json`).

use serde::Deserialize;

use super::doc::{DocKind, Document};
use super::embed::{EmbedError, TextEmbedder};
use super::store::{Filter, StoreError, VectorStore};

/// One labelled document.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalItem {
    /// Unique id.
    pub id: String,
    /// Items with the same group should retrieve each other; `None` for
    /// distractors.
    #[serde(default)]
    pub group: Option<String>,
    /// Kind.
    pub kind: DocKind,
    /// Text.
    pub text: String,
}

/// Result of [`recall_at_k`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalReport {
    /// `k`.
    pub k: usize,
    /// Items that were queries (those with a group).
    pub queries: usize,
    /// Queries whose top k (itself excluded) held a partner.
    pub found: usize,
    /// `found / queries`.
    pub recall: f64,
    /// Mean reciprocal rank of the first partner (0 when not in the top k).
    pub mrr: f64,
    /// Missed query ids with the ids they got instead.
    pub misses: Vec<(String, Vec<String>)>,
}

/// Evaluation failures.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// Embedding failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Indexes `items` into `store` with `embedder`, then queries with every
/// grouped item and counts how often a partner is in the top `k`.
pub async fn recall_at_k(
    embedder: &dyn TextEmbedder,
    store: &dyn VectorStore,
    items: &[EvalItem],
    k: usize,
) -> Result<EvalReport, EvalError> {
    let id = embedder.id();
    let eid = id.to_string();
    store.ensure(&id).await?;
    let docs: Vec<Document> = items
        .iter()
        .map(|it| Document {
            id: it.id.clone(),
            ..Document::new(it.kind, it.id.clone(), "", it.text.clone(), 0)
        })
        .collect();
    let mut vectors = Vec::with_capacity(docs.len());
    for chunk in docs.chunks(16) {
        let texts: Vec<String> = chunk.iter().map(Document::embed_text).collect();
        vectors.extend(embedder.embed(&texts).await?);
    }
    let points = docs
        .iter()
        .zip(&vectors)
        .map(|(d, v)| super::store::Point {
            id: d.id.clone(),
            vector: v.clone(),
            embedder: eid.clone(),
            payload: d.payload.clone(),
        })
        .collect();
    store.upsert(points).await?;
    let filter = Filter {
        embedder: Some(eid),
        ..Filter::default()
    };
    let mut report = EvalReport {
        k,
        ..EvalReport::default()
    };
    let mut rr = 0.0;
    for (it, v) in items.iter().zip(&vectors) {
        let Some(group) = &it.group else { continue };
        report.queries += 1;
        let hits = store.search(v, k + 1, &filter).await?;
        let got: Vec<String> = hits
            .into_iter()
            .map(|h| h.id)
            .filter(|h| *h != it.id)
            .take(k)
            .collect();
        let rank = got.iter().position(|h| {
            items
                .iter()
                .any(|o| o.id == *h && o.group.as_ref() == Some(group))
        });
        match rank {
            Some(r) => {
                report.found += 1;
                #[allow(clippy::cast_precision_loss)]
                let r = (r + 1) as f64;
                rr += 1.0 / r;
            }
            None => report.misses.push((it.id.clone(), got)),
        }
    }
    if report.queries > 0 {
        #[allow(clippy::cast_precision_loss)]
        let q = report.queries as f64;
        #[allow(clippy::cast_precision_loss)]
        let f = report.found as f64;
        report.recall = f / q;
        report.mrr = rr / q;
    }
    Ok(report)
}
