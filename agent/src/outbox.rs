//! The durable outbox between the collectors and the hub link.
//!
//! Every fact batch gets the next sequence number of the agent's stream and is
//! appended to the [`Spool`] *before* it is sent. The link sends from the
//! spool (so a replay after an outage or a crash reads the same bytes), keeps
//! at most `max_inflight` batches unacknowledged (flow control), and releases
//! spool space when the hub acknowledges a sequence number after its commit.
//!
//! Source positions (journald cursors, file offsets) travel *inside* each
//! spooled record. They are written to the cursor store only after the spool
//! has synced the record, together with the highest sequence number they
//! cover ([`CHECKPOINT_SEQ_KEY`]); at start-up the positions of newer spooled
//! records are applied on top. A crash at any point therefore neither re-reads
//! lines that are already spooled (no duplicates) nor skips lines that are not
//! (no loss).
//!
//! Losses the spool detects (size cap reached, corrupt or vanished segments)
//! become [`FactBody::Gap`] facts, appended like any other batch, so the hub
//! can count every lost fact.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wingman_protocol::{Fact, FactBatch, FactBody, facts::GapReason as WireGapReason};

use crate::spool::{Gap, GapReason, OpenReport, Spool, SpoolConfig, SpoolError, SpoolStats};

/// Cursor-store key holding the highest sequence number whose source
/// positions the cursor store includes.
pub const CHECKPOINT_SEQ_KEY: &str = "_spool_seq";

/// Source positions covered by a batch: (cursor-store key, position).
pub type Checkpoint = Vec<(String, String)>;

/// Batches read from the spool per send call.
const READ_BATCH: usize = 64;
/// Payload bytes read from the spool per send call.
const READ_BYTES: usize = 1024 * 1024;

/// What a spool record holds (agent-local format, not a wire type).
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    facts: Vec<Fact>,
    checkpoint: Checkpoint,
}

/// Counters of the outbox, reported in the agent's health fact.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OutboxCounters {
    /// Batches appended (including gap batches).
    pub batches_spooled: u64,
    /// Facts appended, not counting gap facts.
    pub facts_spooled: u64,
    /// Batches sent again (after a reconnect or a busy reply).
    pub replayed_batches: u64,
    /// Append or read failures (disk full, read-only, deleted).
    pub spool_errors: u64,
    /// Gap facts appended.
    pub gap_facts: u64,
    /// Records in the spool that could not be decoded (counted, skipped).
    pub undecodable: u64,
}

/// The spool plus the link's position in it.
#[derive(Debug)]
pub struct Outbox {
    spool: Spool,
    stream_id: u64,
    /// Highest seq sent in this session (or since the last busy reply).
    sent_upto: u64,
    /// Highest seq ever sent by this process (for replay counting).
    max_sent: u64,
    max_inflight: u64,
    /// Positions of appended batches not yet in the cursor store.
    positions: BTreeMap<String, String>,
    positions_seq: u64,
    /// Gaps taken from the spool whose gap fact could not be appended yet.
    unsent_gaps: Vec<Gap>,
    counters: OutboxCounters,
    last_error: Option<String>,
}

impl Outbox {
    /// Opens (or creates) the spool of `stream_id`.
    pub fn open(
        cfg: SpoolConfig,
        stream_id: u64,
        max_inflight: usize,
        now_ms: i64,
    ) -> Result<(Self, OpenReport), SpoolError> {
        let (spool, report) = Spool::open(cfg, now_ms)?;
        let ob = Self {
            spool,
            stream_id,
            sent_upto: 0,
            max_sent: 0,
            max_inflight: max_inflight.max(1) as u64,
            positions: BTreeMap::new(),
            positions_seq: 0,
            unsent_gaps: Vec::new(),
            counters: OutboxCounters::default(),
            last_error: None,
        };
        Ok((ob, report))
    }

    /// Source positions recorded in spooled records with a seq above
    /// `saved_seq` (the cursor store's [`CHECKPOINT_SEQ_KEY`]), newest last.
    /// Applied over the cursor store at start-up so sources resume after
    /// what is already spooled.
    pub fn recovered_positions(
        &mut self,
        saved_seq: u64,
    ) -> Result<(BTreeMap<String, String>, u64), SpoolError> {
        let mut out = BTreeMap::new();
        let mut after = saved_seq.max(self.spool.acked_seq());
        let mut upto = saved_seq;
        loop {
            let (records, _gaps) = self.spool.read_after(after, READ_BATCH, READ_BYTES)?;
            let Some(last) = records.last() else { break };
            after = last.seq;
            for r in &records {
                match postcard::from_bytes::<Payload>(&r.payload) {
                    Ok(p) => {
                        out.extend(p.checkpoint);
                        upto = upto.max(r.seq);
                    }
                    Err(_) => self.counters.undecodable += 1,
                }
            }
        }
        Ok((out, upto))
    }

    /// Appends a batch; returns its seq. On error nothing is stored and the
    /// caller keeps the batch to retry.
    pub fn append(
        &mut self,
        facts: &[Fact],
        checkpoint: &Checkpoint,
        now_ms: i64,
    ) -> Result<u64, SpoolError> {
        let seq = self.spool.last_seq() + 1;
        let payload = Payload {
            facts: facts.to_vec(),
            checkpoint: checkpoint.clone(),
        };
        let bytes = postcard::to_allocvec(&payload)
            .map_err(|e| SpoolError::InvalidConfig(format!("cannot encode a batch: {e}")))?;
        let n = u32::try_from(facts.len()).unwrap_or(u32::MAX);
        match self.spool.append(seq, n, &bytes, now_ms) {
            Ok(_gaps) => {
                self.last_error = None;
                self.counters.batches_spooled += 1;
                let gap_facts = facts
                    .iter()
                    .filter(|f| matches!(f.body, FactBody::Gap(_)))
                    .count() as u64;
                self.counters.facts_spooled += facts.len() as u64 - gap_facts;
                self.counters.gap_facts += gap_facts;
                if !checkpoint.is_empty() {
                    self.positions.extend(checkpoint.iter().cloned());
                    self.positions_seq = seq;
                }
                Ok(seq)
            }
            Err(e) => {
                self.counters.spool_errors += 1;
                self.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Source positions that cover no facts (a source's starting point):
    /// persisted with the next synced positions, nothing is spooled.
    pub fn note_positions(&mut self, checkpoint: &Checkpoint) {
        if checkpoint.is_empty() {
            return;
        }
        self.positions.extend(checkpoint.iter().cloned());
        self.positions_seq = self.positions_seq.max(self.spool.last_seq());
    }

    /// Turns every loss the spool reported into a gap fact and appends it.
    pub fn drain_gaps(&mut self, now_ms: i64) {
        let mut gaps = std::mem::take(&mut self.unsent_gaps);
        gaps.extend(self.spool.pending_gaps());
        for (i, g) in gaps.iter().enumerate() {
            let fact = Fact {
                observed_at_ms: now_ms,
                body: FactBody::Gap(wingman_protocol::facts::Gap {
                    stream_id: self.stream_id,
                    from_seq: g.from_seq,
                    to_seq: g.to_seq,
                    batches: g.batches,
                    facts: g.facts,
                    reason: match g.reason {
                        GapReason::Overflow => WireGapReason::Overflow,
                        GapReason::Corrupt => WireGapReason::Corrupt,
                        GapReason::Missing => WireGapReason::Missing,
                    },
                }),
            };
            tracing::warn!(
                from_seq = g.from_seq,
                to_seq = g.to_seq,
                batches = g.batches,
                facts = g.facts,
                reason = ?g.reason,
                "spooled facts were lost; reporting the gap to the hub"
            );
            if self.append(&[fact], &Vec::new(), now_ms).is_err() {
                self.unsent_gaps = gaps.get(i..).unwrap_or_default().to_vec();
                return;
            }
        }
    }

    /// The hub's committed seq at session start: acknowledge it and send
    /// everything after it again.
    pub fn on_welcome(&mut self, committed: u64) -> Result<(), SpoolError> {
        self.sent_upto = committed;
        self.ack(committed)
    }

    /// The hub committed everything up to `seq`.
    pub fn ack(&mut self, seq: u64) -> Result<(), SpoolError> {
        if seq == 0 {
            return Ok(());
        }
        self.sent_upto = self.sent_upto.max(seq);
        let r = self.spool.ack(seq);
        if let Err(e) = &r {
            self.counters.spool_errors += 1;
            self.last_error = Some(e.to_string());
        }
        r
    }

    /// The hub refused `seq` as busy: it and everything after will be sent again.
    pub fn on_busy(&mut self, seq: u64) {
        self.sent_upto = self.sent_upto.min(seq.saturating_sub(1));
    }

    /// The next batches to send, within the in-flight window. Records that
    /// cannot be decoded are skipped and counted (their seqs become a hole
    /// the hub sees; the spool checksum makes this practically impossible).
    pub fn next_to_send(&mut self) -> Result<Vec<FactBatch>, SpoolError> {
        let acked = self.spool.acked_seq();
        let inflight = self.sent_upto.saturating_sub(acked);
        if inflight >= self.max_inflight {
            return Ok(Vec::new());
        }
        let room = usize::try_from(self.max_inflight - inflight).unwrap_or(READ_BATCH);
        let after = self.sent_upto.max(acked);
        let (records, _gaps) = match self
            .spool
            .read_after(after, room.min(READ_BATCH), READ_BYTES)
        {
            Ok(r) => r,
            Err(e) => {
                self.counters.spool_errors += 1;
                self.last_error = Some(e.to_string());
                return Err(e);
            }
        };
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            match postcard::from_bytes::<Payload>(&r.payload) {
                Ok(p) => out.push(FactBatch {
                    stream_id: self.stream_id,
                    seq: r.seq,
                    facts: p.facts,
                }),
                Err(_) => {
                    self.counters.undecodable += 1;
                    self.sent_upto = self.sent_upto.max(r.seq);
                }
            }
        }
        Ok(out)
    }

    /// Records that `seq` went out.
    pub fn mark_sent(&mut self, seq: u64) {
        if seq <= self.max_sent {
            self.counters.replayed_batches += 1;
        }
        self.max_sent = self.max_sent.max(seq);
        self.sent_upto = self.sent_upto.max(seq);
    }

    /// Group commit timer; call every ~50 ms.
    pub fn flush_due(&mut self, now_ms: i64) {
        if let Err(e) = self.spool.flush_due(now_ms) {
            self.counters.spool_errors += 1;
            self.last_error = Some(e.to_string());
        }
    }

    /// Source positions that are now safe to persist: syncs the spool first
    /// so a position never gets ahead of the spool on disk. Returns the
    /// positions and the seq to store under [`CHECKPOINT_SEQ_KEY`].
    pub fn take_synced_positions(&mut self) -> Option<(BTreeMap<String, String>, u64)> {
        if self.positions.is_empty() {
            return None;
        }
        if let Err(e) = self.spool.sync() {
            self.counters.spool_errors += 1;
            self.last_error = Some(e.to_string());
            return None;
        }
        Some((std::mem::take(&mut self.positions), self.positions_seq))
    }

    /// The stream this outbox belongs to.
    pub fn stream_id(&self) -> u64 {
        self.stream_id
    }

    /// Spool gauges and counters.
    pub fn spool_stats(&self) -> SpoolStats {
        self.spool.stats()
    }

    /// Outbox counters.
    pub fn counters(&self) -> &OutboxCounters {
        &self.counters
    }

    /// The last spool error, cleared by the next successful append.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Whether batches are waiting to be sent.
    pub fn has_unsent(&self) -> bool {
        self.spool.last_seq() > self.sent_upto.max(self.spool.acked_seq())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::FsyncPolicy;

    fn fact(i: i64) -> Fact {
        Fact {
            observed_at_ms: i,
            body: FactBody::Gap(wingman_protocol::facts::Gap {
                stream_id: 0,
                from_seq: 0,
                to_seq: 0,
                batches: 0,
                facts: 0,
                reason: WireGapReason::Missing,
            }),
        }
    }

    fn open(dir: &std::path::Path, inflight: usize) -> Outbox {
        let mut cfg = SpoolConfig::new(dir);
        cfg.fsync = FsyncPolicy::Never;
        Outbox::open(cfg, 7, inflight, 0).unwrap().0
    }

    #[test]
    fn sends_within_the_window_and_replays_after_welcome() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = open(dir.path(), 3);
        for i in 0..5 {
            ob.append(&[fact(i)], &vec![("k".into(), format!("p{i}"))], i)
                .unwrap();
        }
        let first = ob.next_to_send().unwrap();
        assert_eq!(
            first.iter().map(|b| b.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        for b in &first {
            ob.mark_sent(b.seq);
        }
        assert!(ob.next_to_send().unwrap().is_empty(), "window is full");
        ob.ack(2).unwrap();
        let next = ob.next_to_send().unwrap();
        assert_eq!(next.iter().map(|b| b.seq).collect::<Vec<_>>(), vec![4, 5]);
        // Reconnect: the hub committed 3; 4 and 5 are replayed.
        ob.on_welcome(3).unwrap();
        let replay = ob.next_to_send().unwrap();
        assert_eq!(replay.iter().map(|b| b.seq).collect::<Vec<_>>(), vec![4, 5]);
        for b in &replay {
            ob.mark_sent(b.seq);
        }
        assert_eq!(
            ob.counters().replayed_batches,
            0,
            "4 and 5 were never sent before"
        );
        ob.on_busy(4);
        let again = ob.next_to_send().unwrap();
        assert_eq!(again.first().map(|b| b.seq), Some(4));
        ob.mark_sent(4);
        assert_eq!(ob.counters().replayed_batches, 1);
    }

    #[test]
    fn positions_are_recovered_from_records_newer_than_the_cursor_store() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut ob = open(dir.path(), 10);
            ob.append(&[fact(1)], &vec![("a".into(), "1".into())], 1)
                .unwrap();
            ob.append(
                &[fact(2)],
                &vec![("a".into(), "2".into()), ("b".into(), "x".into())],
                2,
            )
            .unwrap();
            let (pos, seq) = ob.take_synced_positions().unwrap();
            assert_eq!(seq, 2);
            assert_eq!(pos.get("a").map(String::as_str), Some("2"));
            ob.append(&[fact(3)], &vec![("a".into(), "3".into())], 3)
                .unwrap();
            ob.spool.sync().unwrap();
        }
        let mut ob = open(dir.path(), 10);
        let (pos, upto) = ob.recovered_positions(2).unwrap();
        assert_eq!(upto, 3);
        assert_eq!(pos.get("a").map(String::as_str), Some("3"));
        assert!(!pos.contains_key("b"), "older than the cursor store");
        let (pos, upto) = ob.recovered_positions(0).unwrap();
        assert_eq!(upto, 3);
        assert_eq!(pos.get("b").map(String::as_str), Some("x"));
    }

    #[test]
    fn overflow_becomes_a_gap_fact_with_exact_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = SpoolConfig::new(dir.path());
        cfg.fsync = FsyncPolicy::Never;
        cfg.segment_bytes = 4096;
        cfg.max_bytes = 16 * 1024;
        let (mut ob, _) = Outbox::open(cfg, 9, 10, 0).unwrap();
        let big: Vec<Fact> = (0..20).map(fact).collect();
        for i in 0..300 {
            ob.append(&big, &Vec::new(), i).unwrap();
        }
        ob.drain_gaps(100);
        let stats = ob.spool_stats();
        assert!(stats.dropped_batches > 0);
        // Every gap fact is in the spool now; its counts match the spool's.
        let mut lost_facts = 0;
        let mut after = 0;
        loop {
            let batch = ob.next_to_send().unwrap();
            if batch.is_empty() {
                break;
            }
            for b in batch {
                after = b.seq;
                ob.mark_sent(b.seq);
                for f in b.facts {
                    if let FactBody::Gap(g) = f.body
                        && g.stream_id == 9
                    {
                        lost_facts += g.facts;
                    }
                }
            }
            ob.ack(after).unwrap();
        }
        assert_eq!(lost_facts, ob.spool_stats().dropped_facts);
        assert_eq!(lost_facts, stats.dropped_batches * 20);
    }
}
