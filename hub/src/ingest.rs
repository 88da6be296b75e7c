//! The ingest writer: sessions hand fact batches to one bounded queue and one
//! task commits them in groups, one transaction per group (the store's
//! `ingest_batches`). One writer suits SQLite's single-writer model and
//! amortises commits on PostgreSQL.
//!
//! Overflow policy: when the queue is full, [`IngestQueue::try_submit`] hands
//! the batch back and the session answers the agent with a busy reply (the
//! agent keeps the batch in its spool). A failed group is retried batch by
//! batch, so one bad batch fails only its own session.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::store::{DynStore, IngestItem, IngestOutcome, StoreResult};

/// Batches or facts per group, whichever is reached first.
const MAX_GROUP_BATCHES: usize = 256;
const MAX_GROUP_FACTS: usize = 20_000;

/// A batch waiting for the writer.
#[derive(Debug)]
pub struct Job {
    item: IngestItem,
    reply: oneshot::Sender<StoreResult<IngestOutcome>>,
}

/// The sessions' side of the queue: one bounded queue per writer; an agent's
/// batches always go to the same writer, so each stream commits in order.
#[derive(Debug, Clone)]
pub struct IngestQueue {
    txs: Vec<mpsc::Sender<Job>>,
}

impl IngestQueue {
    /// One writer's queue of `capacity` batches and the receiver it runs on.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Job>) {
        let (q, mut rxs) = Self::sharded(capacity, 1);
        let rx = rxs.pop().unwrap_or_else(|| mpsc::channel(1).1);
        (q, rx)
    }

    /// `writers` queues sharing `capacity`, and their receivers.
    pub fn sharded(capacity: usize, writers: usize) -> (Self, Vec<mpsc::Receiver<Job>>) {
        let writers = writers.max(1);
        let per = (capacity / writers).max(1);
        let (txs, rxs) = (0..writers).map(|_| mpsc::channel(per)).unzip();
        (Self { txs }, rxs)
    }

    fn shard(&self, agent_id: &str) -> Option<&mpsc::Sender<Job>> {
        // FNV-1a: stable and cheap; only spreads agents over writers.
        let h = agent_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        self.txs.get((h % self.txs.len().max(1) as u64) as usize)
    }

    /// Queues a batch; `Err` gives it back when the queue is full (answer busy).
    #[allow(clippy::result_large_err)]
    pub fn try_submit(
        &self,
        item: IngestItem,
    ) -> Result<oneshot::Receiver<StoreResult<IngestOutcome>>, IngestItem> {
        let (reply, rx) = oneshot::channel();
        let Some(tx) = self.shard(&item.agent_id) else {
            return Err(item);
        };
        match tx.try_send(Job { item, reply }) {
            Ok(()) => Ok(rx),
            Err(mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j)) => {
                Err(j.item)
            }
        }
    }

    /// Free slots in the queues.
    pub fn available(&self) -> usize {
        self.txs.iter().map(mpsc::Sender::capacity).sum()
    }
}

/// Streams whose batch `seq` failed: later batches of the stream are refused
/// until the agent sends `seq` (or earlier) again, so a stream is never
/// committed past a hole.
type Poisoned = HashMap<(String, u64), u64>;

/// Commits queued batches until shutdown.
pub async fn writer(store: DynStore, mut rx: mpsc::Receiver<Job>, shutdown: CancellationToken) {
    let mut poisoned = Poisoned::new();
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return,
            j = rx.recv() => match j { Some(j) => j, None => return },
        };
        let mut facts = first.item.facts.len();
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP_BATCHES && facts < MAX_GROUP_FACTS {
            match rx.try_recv() {
                Ok(j) => {
                    facts += j.item.facts.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        commit(&store, jobs, &mut poisoned).await;
    }
}

/// Whether `item` must be refused because an earlier batch of its stream failed.
fn refused(poisoned: &mut Poisoned, item: &IngestItem) -> bool {
    if item.seq == 0 {
        return false;
    }
    let key = (item.agent_id.clone(), item.stream_id);
    match poisoned.get(&key) {
        Some(failed) if item.seq > *failed => true,
        Some(_) => {
            poisoned.remove(&key);
            false
        }
        None => false,
    }
}

fn behind_failure() -> crate::store::StoreError {
    crate::store::StoreError::Backend("an earlier batch of this stream failed to commit".into())
}

async fn commit(store: &DynStore, jobs: Vec<Job>, poisoned: &mut Poisoned) {
    let now = wingman_agent::now_ms();
    let mut items = Vec::with_capacity(jobs.len());
    let mut replies = Vec::with_capacity(jobs.len());
    for j in jobs {
        if refused(poisoned, &j.item) {
            let _ = j.reply.send(Err(behind_failure()));
        } else {
            items.push(j.item);
            replies.push(j.reply);
        }
    }
    if items.is_empty() {
        return;
    }
    match store.ingest_batches(&items, now).await {
        Ok(outcomes) => {
            for (reply, o) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(o));
            }
            return;
        }
        Err(error) => {
            warn!(%error, batches = items.len(), "a group commit failed; committing its batches one by one");
        }
    }
    for (item, reply) in items.into_iter().zip(replies) {
        if refused(poisoned, &item) {
            let _ = reply.send(Err(behind_failure()));
            continue;
        }
        let r = store
            .ingest_batches(std::slice::from_ref(&item), now)
            .await
            .and_then(|mut v| {
                v.pop()
                    .ok_or_else(|| crate::store::StoreError::Backend("no ingest outcome".into()))
            });
        if r.is_err() && item.seq != 0 {
            poisoned.insert((item.agent_id.clone(), item.stream_id), item.seq);
        }
        let _ = reply.send(r);
    }
}

/// Keeps the writer's receiver until `run` starts the writer.
pub(crate) type PendingWriter = Arc<std::sync::Mutex<Vec<mpsc::Receiver<Job>>>>;

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;
    use crate::store::{AgentRow, FactRecord};

    fn item(seq: u64) -> IngestItem {
        IngestItem {
            agent_id: "a".into(),
            stream_id: 1,
            seq,
            facts: vec![FactRecord {
                kind: "host".into(),
                observed_at: seq as i64,
                body: "{}".into(),
                latest: false,
            }],
            templates: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_failed_batch_blocks_the_rest_of_its_stream_until_it_is_resent() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = crate::store::open(&url).await.unwrap();
        store
            .create_agent(
                &AgentRow {
                    id: "a".into(),
                    hostname: "h".into(),
                    kind: "plain".into(),
                    agent_version: "t".into(),
                    enrolled_at: 0,
                    revoked_at: None,
                    last_seen: None,
                    online: false,
                    cert_not_after: i64::MAX,
                },
                "fp",
            )
            .await
            .unwrap();
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(
            "CREATE TRIGGER f BEFORE INSERT ON facts WHEN NEW.seq = 2 BEGIN SELECT RAISE(ABORT, 'x'); END",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let (q, rx) = IngestQueue::new(16);
        let stop = CancellationToken::new();
        let w = tokio::spawn(writer(store.clone(), rx, stop.clone()));
        let r: Vec<_> = (1..=3).map(|s| q.try_submit(item(s)).unwrap()).collect();
        let mut out = Vec::new();
        for r in r {
            out.push(r.await.unwrap());
        }
        assert!(out[0].is_ok());
        assert!(out[1].is_err());
        assert!(
            out[2].is_err(),
            "3 must not be committed past the hole at 2"
        );
        assert_eq!(store.committed_seq("a", 1).await.unwrap(), 1);
        sqlx::query("DROP TRIGGER f")
            .execute(&mut conn)
            .await
            .unwrap();
        for s in 2..=3 {
            let o = q.try_submit(item(s)).unwrap().await.unwrap().unwrap();
            assert_eq!(o.committed_seq, s);
        }
        assert_eq!(store.fact_count("a").await.unwrap(), 3);
        stop.cancel();
        w.await.unwrap();
    }
}
