//! Keeping the vectors current, and searching them.
//!
//! - [`Indexer`]: a bounded job queue plus one background worker. Jobs are
//!   coalesced by document id (a newer job for a queued id replaces the
//!   older one in place), so the queue holds at most `queue_capacity`
//!   distinct documents. When it is full, [`Indexer::try_submit`] returns
//!   [`SubmitError::Full`] at once (the caller counts it; incident creation
//!   never waits on indexing). The worker takes batches, embeds and upserts
//!   them; while the embedder is [`Unavailable`](EmbedError::Unavailable)
//!   (or the store has a transient failure) it keeps the jobs and retries
//!   with exponential backoff (honouring `Retry-After`), so the index
//!   catches up when the model is back. Other failures are retried
//!   `max_attempts` times, one document at a time, then counted as failed.
//! - Reindexing: when the configured embedder's id differs from the ids
//!   recorded with stored vectors, [`Indexer::reindex_if_needed`] re-embeds
//!   every document of a [`DocumentSource`] in the background through the
//!   same queue, then deletes the vectors of the stale embedders.
//! - [`Retriever`]: embeds a query and searches; a down or overloaded
//!   embedder is [`RetrieveError::Busy`] (HTTP 503 + `Retry-After`).

use std::collections::{HashMap, VecDeque};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::doc::Document;
use super::embed::{EmbedError, TextEmbedder};
use super::store::{Filter, Hit, Point, StoreError, VectorStore, is_zero};

/// Indexer tuning.
#[derive(Debug, Clone)]
pub struct IndexerConfig {
    /// Most distinct documents queued.
    pub queue_capacity: usize,
    /// Most documents per embedding call.
    pub batch_size: usize,
    /// How long the worker waits for a batch to fill once a job arrived.
    pub batch_delay: Duration,
    /// First retry delay while the embedder or store is unavailable.
    pub backoff_min: Duration,
    /// Longest retry delay (also caps a server's `Retry-After`).
    pub backoff_max: Duration,
    /// Attempts for a job failing with anything but unavailability.
    pub max_attempts: u32,
}

impl Default for IndexerConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            batch_size: 32,
            batch_delay: Duration::from_millis(50),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            max_attempts: 3,
        }
    }
}

/// One unit of indexing work, keyed by document id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// Embed and store (replacing any vector of the same id).
    Upsert(Document),
    /// Remove the vector of this point id.
    Delete(String),
}

impl Job {
    /// The document (point) id.
    pub fn id(&self) -> &str {
        match self {
            Self::Upsert(d) => &d.id,
            Self::Delete(id) => id,
        }
    }
}

/// How a submitted job was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// A new entry.
    Queued,
    /// It replaced a queued job for the same id.
    Coalesced,
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue holds `queue_capacity` distinct ids (overflow policy:
    /// coalesce by id, else refuse the newest; the caller counts it).
    #[error("index queue full")]
    Full,
    /// The indexer was shut down.
    #[error("indexer stopped")]
    Closed,
}

/// A snapshot of the indexer's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct IndexerStats {
    /// Documents embedded and stored.
    pub indexed: u64,
    /// Points deleted by delete jobs.
    pub deleted: u64,
    /// Jobs given up (permanent errors, refused data class, attempts spent).
    pub failed: u64,
    /// Of `failed`: documents a cloud embedder's policy refused.
    pub refused: u64,
    /// Jobs waiting now.
    pub queued: u64,
    /// Batches put back because the embedder or store was unavailable, plus
    /// retried failures.
    pub retries: u64,
    /// `try_submit` calls answered `Full`.
    pub rejected_full: u64,
    /// Submissions that replaced a queued job.
    pub coalesced: u64,
    /// Documents submitted by reindex runs.
    pub reindexed: u64,
    /// Whether a reindex is running.
    pub reindexing: bool,
}

/// Supplies every indexable document (the hub reads incidents, outcomes,
/// template summaries and skills from its store).
#[async_trait]
pub trait DocumentSource: Send + Sync {
    /// Up to `limit` documents with id greater than `after` (all when
    /// `None`), in ascending id order. An empty page ends the walk.
    async fn page(&self, after: Option<&str>, limit: usize) -> Result<Vec<Document>, SourceError>;
}

/// A [`DocumentSource`] failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("document source: {0}")]
pub struct SourceError(pub String);

/// A fixed list of documents (built-in skills, tests).
#[derive(Debug, Clone, Default)]
pub struct StaticSource {
    docs: Vec<Document>,
}

impl StaticSource {
    /// Sorts `docs` by id (the last of duplicate ids wins).
    pub fn new(docs: Vec<Document>) -> Self {
        let mut by_id: std::collections::BTreeMap<String, Document> =
            std::collections::BTreeMap::new();
        for d in docs {
            by_id.insert(d.id.clone(), d);
        }
        Self {
            docs: by_id.into_values().collect(),
        }
    }
}

#[async_trait]
impl DocumentSource for StaticSource {
    async fn page(&self, after: Option<&str>, limit: usize) -> Result<Vec<Document>, SourceError> {
        Ok(self
            .docs
            .iter()
            .filter(|d| after.is_none_or(|a| d.id.as_str() > a))
            .take(limit)
            .cloned()
            .collect())
    }
}

/// What a reindex run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReindexReport {
    /// The embedder indexed for.
    pub embedder: String,
    /// Stale embedders whose vectors were deleted.
    pub stale: Vec<String>,
    /// Documents submitted.
    pub documents: u64,
    /// Stale vectors deleted after the run.
    pub stale_deleted: usize,
}

/// Indexing failures outside the queue (reindex).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IndexError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The document source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The indexer was shut down.
    #[error("indexer stopped")]
    Closed,
}

struct Entry {
    job: Job,
    attempts: u32,
}

#[derive(Default)]
struct Queue {
    order: VecDeque<String>,
    jobs: HashMap<String, Entry>,
    closed: bool,
}

#[derive(Default)]
struct Counters {
    indexed: AtomicU64,
    deleted: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    retries: AtomicU64,
    rejected_full: AtomicU64,
    coalesced: AtomicU64,
    reindexed: AtomicU64,
}

fn bump(c: &AtomicU64, n: usize) {
    c.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

struct Inner {
    embedder: Arc<dyn TextEmbedder>,
    store: Arc<dyn VectorStore>,
    cfg: IndexerConfig,
    queue: Mutex<Queue>,
    /// Wakes the worker (new job, shutdown).
    wake: Notify,
    /// Wakes `submit` waiters (space freed, shutdown).
    space: Notify,
    /// Wakes `flush` waiters (a batch finished).
    idle: Notify,
    in_flight: AtomicUsize,
    ensured: AtomicBool,
    /// Embedders in use just before this indexer's first `ensure` (which
    /// may recreate a Qdrant collection and so erase the evidence that a
    /// reindex is due). Cleared when a reindex finishes.
    before_ensure: Mutex<Vec<String>>,
    reindexing: AtomicBool,
    counters: Counters,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job` unless full or closed (never waits).
    fn offer(&self, job: Job) -> Result<Submitted, (SubmitError, Box<Job>)> {
        let mut q = self.lock();
        if q.closed {
            return Err((SubmitError::Closed, Box::new(job)));
        }
        let id = job.id().to_owned();
        if let Some(e) = q.jobs.get_mut(&id) {
            e.job = job;
            e.attempts = 0;
            drop(q);
            self.counters.coalesced.fetch_add(1, Ordering::Relaxed);
            return Ok(Submitted::Coalesced);
        }
        if q.jobs.len() >= self.cfg.queue_capacity {
            return Err((SubmitError::Full, Box::new(job)));
        }
        q.order.push_back(id.clone());
        q.jobs.insert(id, Entry { job, attempts: 0 });
        drop(q);
        self.wake.notify_one();
        Ok(Submitted::Queued)
    }

    /// Puts jobs taken by the worker back at the front, unless a newer job
    /// for the same id arrived meanwhile (it wins). Ignores the capacity:
    /// these held queue slots a moment ago.
    fn requeue(&self, entries: Vec<Entry>) {
        let mut q = self.lock();
        for e in entries.into_iter().rev() {
            let id = e.job.id().to_owned();
            if !q.jobs.contains_key(&id) {
                q.order.push_front(id.clone());
                q.jobs.insert(id, e);
            }
        }
    }

    fn take_batch(&self) -> Vec<Entry> {
        let mut q = self.lock();
        let mut out = Vec::new();
        while out.len() < self.cfg.batch_size.max(1) {
            let Some(id) = q.order.pop_front() else {
                break;
            };
            if let Some(e) = q.jobs.remove(&id) {
                out.push(e);
            }
        }
        self.in_flight.store(out.len(), Ordering::SeqCst);
        out
    }

    fn queued(&self) -> usize {
        self.lock().jobs.len()
    }

    fn is_idle(&self) -> bool {
        self.queued() == 0 && self.in_flight.load(Ordering::SeqCst) == 0
    }

    fn closed(&self) -> bool {
        self.lock().closed
    }

    /// Sleeps `d` unless shut down first; false when shut down.
    async fn pause(&self, d: Duration) -> bool {
        let woken = self.wake.notified();
        let mut woken = pin!(woken);
        woken.as_mut().enable();
        let deadline = tokio::time::Instant::now() + d;
        loop {
            if self.closed() {
                return false;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return true,
                () = woken.as_mut() => {
                    // A new job or shutdown: re-check, keep sleeping otherwise.
                    woken.set(self.wake.notified());
                    woken.as_mut().enable();
                }
            }
        }
    }
}

/// Exponential backoff state.
struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    fn delay(&mut self, cfg: &IndexerConfig, hint: Option<Duration>) -> Duration {
        let base = self.next.unwrap_or(cfg.backoff_min);
        self.next = Some((base * 2).min(cfg.backoff_max));
        hint.map_or(base, |h| h.max(cfg.backoff_min))
            .min(cfg.backoff_max)
    }

    fn reset(&mut self) {
        self.next = None;
    }
}

/// What processing a batch asks of the worker.
enum Step {
    Done,
    /// Unavailable: jobs requeued; wait this long.
    Wait(Option<Duration>),
}

/// The indexing queue and its worker.
pub struct Indexer {
    inner: Arc<Inner>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Indexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexer")
            .field("embedder", &self.inner.embedder.id().to_string())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Drop for Indexer {
    /// Closes the queue: the worker finishes its batch and stops (without
    /// waiting out a backoff); a running reindex stops too. Use
    /// [`Indexer::shutdown`] to drain first.
    fn drop(&mut self) {
        self.inner.lock().closed = true;
        self.inner.wake.notify_one();
        self.inner.space.notify_waiters();
        self.inner.idle.notify_waiters();
    }
}

impl Indexer {
    /// Starts the worker on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as `tokio::spawn` does).
    pub fn start(
        embedder: Arc<dyn TextEmbedder>,
        store: Arc<dyn VectorStore>,
        cfg: IndexerConfig,
    ) -> Self {
        let inner = Arc::new(Inner {
            embedder,
            store,
            cfg,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            space: Notify::new(),
            idle: Notify::new(),
            in_flight: AtomicUsize::new(0),
            ensured: AtomicBool::new(false),
            before_ensure: Mutex::new(Vec::new()),
            reindexing: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let worker = tokio::spawn(run(Arc::clone(&inner)));
        Self {
            inner,
            worker: Mutex::new(Some(worker)),
        }
    }

    /// Queues a job without waiting: `Full` when the queue holds
    /// `queue_capacity` other ids.
    pub fn try_submit(&self, job: Job) -> Result<Submitted, SubmitError> {
        self.inner.offer(job).map_err(|(e, _)| {
            if e == SubmitError::Full {
                self.inner
                    .counters
                    .rejected_full
                    .fetch_add(1, Ordering::Relaxed);
            }
            e
        })
    }

    /// [`Indexer::try_submit`] of an upsert.
    pub fn try_index(&self, doc: Document) -> Result<Submitted, SubmitError> {
        self.try_submit(Job::Upsert(doc))
    }

    /// Queues a job, waiting for space (background work such as reindex).
    pub async fn submit(&self, job: Job) -> Result<Submitted, SubmitError> {
        submit_wait(&self.inner, job).await
    }

    /// Counters.
    pub fn stats(&self) -> IndexerStats {
        let c = &self.inner.counters;
        IndexerStats {
            indexed: c.indexed.load(Ordering::Relaxed),
            deleted: c.deleted.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            queued: u64::try_from(self.inner.queued()).unwrap_or(u64::MAX),
            retries: c.retries.load(Ordering::Relaxed),
            rejected_full: c.rejected_full.load(Ordering::Relaxed),
            coalesced: c.coalesced.load(Ordering::Relaxed),
            reindexed: c.reindexed.load(Ordering::Relaxed),
            reindexing: self.inner.reindexing.load(Ordering::SeqCst),
        }
    }

    /// Waits until the queue is empty and no batch is in flight (may wait
    /// for as long as the embedder stays unavailable).
    pub async fn flush(&self) {
        flush(&self.inner).await;
    }

    /// Starts a background reindex when stored vectors carry an embedder id
    /// other than the configured one (also when they did just before this
    /// indexer's first `ensure`, which may have recreated a Qdrant
    /// collection of another dimension). `None` when nothing is stale or a
    /// reindex is already running. Call it at start-up.
    pub async fn reindex_if_needed(
        &self,
        source: Arc<dyn DocumentSource>,
    ) -> Result<Option<JoinHandle<Result<ReindexReport, IndexError>>>, IndexError> {
        let current = self.inner.embedder.id().to_string();
        let mut in_use = self.inner.store.embedders_in_use().await?;
        in_use.extend(
            self.inner
                .before_ensure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .cloned(),
        );
        in_use.sort();
        in_use.dedup();
        let stale: Vec<String> = in_use.into_iter().filter(|e| *e != current).collect();
        if stale.is_empty() {
            return Ok(None);
        }
        Ok(self.reindex(source, stale))
    }

    /// Starts a background run re-embedding every document of `source`,
    /// then deleting the vectors of the `stale` embedders. `None` when a
    /// reindex is already running.
    pub fn reindex(
        &self,
        source: Arc<dyn DocumentSource>,
        stale: Vec<String>,
    ) -> Option<JoinHandle<Result<ReindexReport, IndexError>>> {
        if self.inner.reindexing.swap(true, Ordering::SeqCst) {
            return None;
        }
        let inner = Arc::clone(&self.inner);
        Some(tokio::spawn(async move {
            let r = reindex_run(&inner, source.as_ref(), stale).await;
            inner.reindexing.store(false, Ordering::SeqCst);
            match &r {
                Ok(rep) => tracing::info!(
                    embedder = %rep.embedder,
                    documents = rep.documents,
                    stale_deleted = rep.stale_deleted,
                    "memory reindex finished"
                ),
                Err(e) => tracing::warn!(error = %e, "memory reindex failed"),
            }
            r
        }))
    }

    /// Stops taking jobs and lets the worker drain for up to `grace`;
    /// returns how many queued jobs were dropped.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.inner.lock().closed = true;
        self.inner.wake.notify_one();
        self.inner.space.notify_waiters();
        self.inner.idle.notify_waiters();
        let handle = self
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut h) = handle
            && tokio::time::timeout(grace, &mut h).await.is_err()
        {
            h.abort();
        }
        let dropped = self.inner.queued();
        if dropped > 0 {
            tracing::warn!(dropped, "memory indexer stopped with jobs queued");
        }
        dropped
    }
}

async fn submit_wait(inner: &Inner, mut job: Job) -> Result<Submitted, SubmitError> {
    loop {
        let space = inner.space.notified();
        let mut space = pin!(space);
        space.as_mut().enable();
        match inner.offer(job) {
            Ok(s) => return Ok(s),
            Err((SubmitError::Closed, _)) => return Err(SubmitError::Closed),
            Err((SubmitError::Full, j)) => {
                job = *j;
                space.await;
            }
        }
    }
}

async fn flush(inner: &Inner) {
    loop {
        let idle = inner.idle.notified();
        let mut idle = pin!(idle);
        idle.as_mut().enable();
        if inner.is_idle() || (inner.closed() && inner.in_flight.load(Ordering::SeqCst) == 0) {
            return;
        }
        idle.await;
    }
}

async fn reindex_run(
    inner: &Inner,
    source: &dyn DocumentSource,
    stale: Vec<String>,
) -> Result<ReindexReport, IndexError> {
    let embedder = inner.embedder.id().to_string();
    tracing::info!(%embedder, ?stale, "memory reindex started");
    let mut report = ReindexReport {
        embedder,
        stale,
        ..ReindexReport::default()
    };
    let page_size = inner.cfg.batch_size.max(1) * 4;
    let mut after: Option<String> = None;
    let mut backoff = Backoff { next: None };
    let mut failures = 0u32;
    loop {
        let page = match source.page(after.as_deref(), page_size).await {
            Ok(p) => {
                backoff.reset();
                failures = 0;
                p
            }
            Err(e) if failures < 5 => {
                failures += 1;
                tracing::warn!(error = %e, "document source failed; retrying");
                if !inner.pause(backoff.delay(&inner.cfg, None)).await {
                    return Err(IndexError::Closed);
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let Some(last) = page.last().map(|d| d.id.clone()) else {
            break;
        };
        if after.as_deref().is_some_and(|a| last.as_str() <= a) {
            return Err(SourceError("page did not advance (ids not ascending)".into()).into());
        }
        for d in page {
            submit_wait(inner, Job::Upsert(d))
                .await
                .map_err(|_| IndexError::Closed)?;
            report.documents += 1;
            inner.counters.reindexed.fetch_add(1, Ordering::Relaxed);
        }
        after = Some(last);
    }
    flush(inner).await;
    if inner.closed() {
        return Err(IndexError::Closed);
    }
    for e in &report.stale {
        report.stale_deleted += inner.store.delete_embedder(e).await?;
    }
    inner
        .before_ensure
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|e| !report.stale.contains(e));
    Ok(report)
}

/// The worker: batch, embed, store; back off while unavailable.
async fn run(inner: Arc<Inner>) {
    let mut backoff = Backoff { next: None };
    loop {
        // Wait for work (or shutdown with an empty queue).
        loop {
            let woken = inner.wake.notified();
            let mut woken = pin!(woken);
            woken.as_mut().enable();
            let (queued, closed) = {
                let q = inner.lock();
                (q.jobs.len(), q.closed)
            };
            if queued > 0 {
                if queued < inner.cfg.batch_size && !closed && !inner.cfg.batch_delay.is_zero() {
                    tokio::time::sleep(inner.cfg.batch_delay).await;
                }
                break;
            }
            inner.idle.notify_waiters();
            if closed {
                return;
            }
            woken.await;
        }
        let batch = inner.take_batch();
        if !batch.is_empty() {
            inner.space.notify_waiters();
        }
        let step = process(&inner, batch).await;
        inner.in_flight.store(0, Ordering::SeqCst);
        inner.idle.notify_waiters();
        match step {
            Step::Done => backoff.reset(),
            Step::Wait(hint) => {
                let d = backoff.delay(&inner.cfg, hint);
                tracing::debug!(delay_ms = d.as_millis(), "memory indexer backing off");
                if !inner.pause(d).await {
                    return;
                }
            }
        }
    }
}

async fn process(inner: &Inner, batch: Vec<Entry>) -> Step {
    let (deletes, upserts): (Vec<Entry>, Vec<Entry>) = batch
        .into_iter()
        .partition(|e| matches!(e.job, Job::Delete(_)));
    if !deletes.is_empty() {
        let ids: Vec<String> = deletes.iter().map(|e| e.job.id().to_owned()).collect();
        match inner.store.delete(&ids).await {
            Ok(()) => bump(&inner.counters.deleted, ids.len()),
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "vector store unavailable; delete jobs kept");
                inner.requeue(deletes);
                inner.requeue(upserts);
                inner.counters.retries.fetch_add(1, Ordering::Relaxed);
                return Step::Wait(None);
            }
            Err(e) => {
                tracing::warn!(error = %e, "vector delete failed");
                bump(&inner.counters.failed, ids.len());
            }
        }
    }
    if upserts.is_empty() {
        return Step::Done;
    }
    if !inner.ensured.load(Ordering::SeqCst) {
        match inner.store.embedders_in_use().await {
            Ok(v) => {
                *inner
                    .before_ensure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = v
            }
            Err(e) => {
                tracing::warn!(error = %e, "vector store not ready; jobs kept");
                inner.requeue(upserts);
                inner.counters.retries.fetch_add(1, Ordering::Relaxed);
                return Step::Wait(None);
            }
        }
        match inner.store.ensure(&inner.embedder.id()).await {
            Ok(()) => inner.ensured.store(true, Ordering::SeqCst),
            Err(e) => {
                tracing::warn!(error = %e, "vector store not ready; jobs kept");
                inner.requeue(upserts);
                inner.counters.retries.fetch_add(1, Ordering::Relaxed);
                return Step::Wait(None);
            }
        }
    }
    // The privacy gate first: refused documents never reach the embedder.
    let (allowed, refused): (Vec<Entry>, Vec<Entry>) = upserts
        .into_iter()
        .partition(|e| matches!(&e.job, Job::Upsert(d) if inner.embedder.permits(d.class())));
    if !refused.is_empty() {
        tracing::debug!(
            n = refused.len(),
            "documents not indexed: data class not allowed for this embedder"
        );
        bump(&inner.counters.refused, refused.len());
        bump(&inner.counters.failed, refused.len());
    }
    embed_store(inner, allowed, true).await
}

/// Embeds and stores `entries`; on a non-transient error with more than one
/// entry and `split`, retries each alone to isolate the bad one.
async fn embed_store(inner: &Inner, entries: Vec<Entry>, split: bool) -> Step {
    if entries.is_empty() {
        return Step::Done;
    }
    let docs: Vec<Document> = entries
        .iter()
        .filter_map(|e| match &e.job {
            Job::Upsert(d) => Some(d.clone()),
            Job::Delete(_) => None,
        })
        .collect();
    let embedder = inner.embedder.id().to_string();
    let err = match inner.embedder.embed_documents(&docs).await {
        Ok(vecs) => {
            let (points, empty): (Vec<Point>, Vec<Point>) = docs
                .into_iter()
                .zip(vecs)
                .map(|(d, vector)| Point {
                    id: d.id,
                    vector,
                    embedder: embedder.clone(),
                    payload: d.payload,
                })
                .partition(|p| !is_zero(&p.vector));
            if !empty.is_empty() {
                // No usable token: nothing to find it by. Drop any old vector.
                tracing::debug!(n = empty.len(), "documents without indexable text");
                bump(&inner.counters.failed, empty.len());
                let ids: Vec<String> = empty.into_iter().map(|p| p.id).collect();
                if let Err(e) = inner.store.delete(&ids).await {
                    tracing::debug!(error = %e, "could not drop vectors of empty documents");
                }
            }
            let n = points.len();
            match inner.store.upsert(points).await {
                Ok(()) => {
                    bump(&inner.counters.indexed, n);
                    return Step::Done;
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "vector store unavailable; jobs kept");
                    inner.requeue(entries);
                    inner.counters.retries.fetch_add(1, Ordering::Relaxed);
                    return Step::Wait(None);
                }
                Err(e) => e.to_string(),
            }
        }
        Err(EmbedError::Unavailable {
            retry_after,
            reason,
        }) => {
            tracing::warn!(%reason, ?retry_after, n = entries.len(), "embedder unavailable; jobs kept");
            inner.requeue(entries);
            inner.counters.retries.fetch_add(1, Ordering::Relaxed);
            return Step::Wait(retry_after);
        }
        Err(e @ EmbedError::NotAllowed { .. }) => {
            tracing::warn!(error = %e, "documents refused by the embedder's policy");
            bump(&inner.counters.refused, entries.len());
            bump(&inner.counters.failed, entries.len());
            return Step::Done;
        }
        Err(e) => e.to_string(),
    };
    if split && entries.len() > 1 {
        let mut wait = None;
        for e in entries {
            if let Step::Wait(h) = Box::pin(embed_store(inner, vec![e], false)).await {
                wait = Some(h);
            }
        }
        return wait.map_or(Step::Done, Step::Wait);
    }
    // Count an attempt; keep the job while attempts remain.
    let mut keep = Vec::new();
    for mut e in entries {
        e.attempts += 1;
        if e.attempts < inner.cfg.max_attempts {
            keep.push(e);
        } else {
            tracing::warn!(id = e.job.id(), error = %err, "indexing failed; giving up");
            inner.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    if keep.is_empty() {
        Step::Done
    } else {
        tracing::debug!(error = %err, "indexing failed; will retry");
        inner.counters.retries.fetch_add(1, Ordering::Relaxed);
        inner.requeue(keep);
        Step::Wait(None)
    }
}

/// Why a search failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RetrieveError {
    /// The embedder is down or overloaded: answer 503 with `Retry-After`.
    #[error("memory search busy; retry after {}s", .retry_after.as_secs())]
    Busy {
        /// How long the client should wait.
        retry_after: Duration,
    },
    /// The query has no text.
    #[error("empty query")]
    EmptyQuery,
    /// Any other embedder failure.
    #[error(transparent)]
    Embed(EmbedError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RetrieveError {
    /// The `Retry-After` of a 503 answer: `Some` only for
    /// [`RetrieveError::Busy`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Busy { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

/// Largest `k` a search returns.
pub const MAX_K: usize = 100;

/// `Retry-After` for a busy embedder that named no wait.
pub const DEFAULT_BUSY_RETRY: Duration = Duration::from_secs(5);

/// Query-time search: embed the query with the configured embedder and
/// search vectors of that embedder only.
#[derive(Clone)]
pub struct Retriever {
    embedder: Arc<dyn TextEmbedder>,
    store: Arc<dyn VectorStore>,
}

impl std::fmt::Debug for Retriever {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retriever")
            .field("embedder", &self.embedder.id().to_string())
            .field("store", &self.store.backend())
            .finish()
    }
}

impl Retriever {
    /// A retriever over `store` with `embedder`.
    pub fn new(embedder: Arc<dyn TextEmbedder>, store: Arc<dyn VectorStore>) -> Self {
        Self { embedder, store }
    }

    /// The `k` (at most [`MAX_K`]) stored documents most similar to
    /// `query` that pass `filter`, best first. `filter.embedder` is set to
    /// the configured embedder.
    pub async fn search(
        &self,
        query: &str,
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<Hit>, RetrieveError> {
        let query = query.trim();
        if query.is_empty() {
            return Err(RetrieveError::EmptyQuery);
        }
        let q = super::doc::excerpt(query, super::doc::MAX_EMBED_TEXT);
        let vecs = self.embedder.embed(&[q]).await.map_err(|e| match e {
            EmbedError::Unavailable { retry_after, .. } => RetrieveError::Busy {
                retry_after: retry_after
                    .unwrap_or(DEFAULT_BUSY_RETRY)
                    .clamp(Duration::from_secs(1), Duration::from_secs(300)),
            },
            other => RetrieveError::Embed(other),
        })?;
        let Some(v) = vecs.into_iter().next() else {
            return Err(RetrieveError::Embed(EmbedError::BadResponse(
                "no vector for the query".into(),
            )));
        };
        if is_zero(&v) {
            // Nothing but stopwords and numbers: no direction to search in.
            return Ok(Vec::new());
        }
        let filter = Filter {
            embedder: Some(self.embedder.id().to_string()),
            ..filter.clone()
        };
        Ok(self.store.search(&v, k.min(MAX_K), &filter).await?)
    }
}
