//! The audit trail's shell: appends hash-chained entries
//! ([`crate::control::audit`]) to the store one at a time (a mutex keeps
//! the chain linear inside a process; a sequence clash with another process
//! reloads the head and retries), and reads, verifies and exports the chain
//! for the API and `wingman-hub audit verify|export`.
//!
//! The table refuses updates and deletes (triggers); a rewrite that drops
//! them is caught by [`verify`], which names the first broken entry.

use serde_json::Value;
use tokio::sync::Mutex;
use tracing::warn;

use crate::control::audit::{self, AuditEntry, AuditKind, BrokenAt, Head};
use crate::store::{AuditRow, DynStore, StoreError};

/// Why the chain could not be checked or is broken.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Reading failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored row does not parse as an entry.
    #[error("audit entry {seq} is unreadable: {reason}")]
    Unreadable {
        /// Its sequence number.
        seq: i64,
        /// Why.
        reason: String,
    },
    /// The chain is broken.
    #[error("the audit chain is broken at entry {}: {}", .0.seq, .0.reason)]
    Broken(BrokenAt),
}

fn to_row(e: &AuditEntry) -> AuditRow {
    AuditRow {
        seq: i64::try_from(e.seq).unwrap_or(i64::MAX),
        ts: e.ts,
        actor: e.actor.clone(),
        kind: serde_json::to_value(e.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        incident_id: e.incident_id.clone(),
        plan_id: e.plan_id.clone(),
        detail: e.detail.to_string(),
        prev_hash: e.prev_hash.clone(),
        hash: e.hash.clone(),
    }
}

/// A stored row as an entry.
pub fn from_row(r: &AuditRow) -> Result<AuditEntry, VerifyError> {
    let bad = |reason: String| VerifyError::Unreadable { seq: r.seq, reason };
    let kind: AuditKind = serde_json::from_value(Value::String(r.kind.clone()))
        .map_err(|e| bad(format!("kind {:?}: {e}", r.kind)))?;
    let detail: Value = serde_json::from_str(&r.detail).map_err(|e| bad(format!("detail: {e}")))?;
    Ok(AuditEntry {
        seq: u64::try_from(r.seq).map_err(|_| bad("negative sequence".into()))?,
        ts: r.ts,
        actor: r.actor.clone(),
        kind,
        incident_id: r.incident_id.clone(),
        plan_id: r.plan_id.clone(),
        detail,
        prev_hash: r.prev_hash.clone(),
        hash: r.hash.clone(),
    })
}

/// Reads the whole chain in order.
pub async fn read_all(store: &DynStore) -> Result<Vec<AuditEntry>, VerifyError> {
    let mut out = Vec::new();
    let mut after = 0i64;
    loop {
        let rows = store.audit_entries(None, after, 1000).await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for r in &rows {
            out.push(from_row(r)?);
        }
    }
    Ok(out)
}

/// Recomputes the chain: the number of entries and the head, or the first
/// broken entry.
pub async fn verify(store: &DynStore) -> Result<(usize, Option<Head>), VerifyError> {
    let all = read_all(store).await?;
    audit::verify(&all).map_err(VerifyError::Broken)?;
    Ok((all.len(), all.last().map(AuditEntry::head)))
}

/// The append side, shared by the hub's handlers. It also publishes the
/// head (sessions forward it to the agents, which keep it) and checks the
/// heads agents kept against the chain.
pub struct AuditLog {
    store: DynStore,
    last: Mutex<Option<AuditEntry>>,
    head_tx: tokio::sync::watch::Sender<Option<Head>>,
    alerts: std::sync::Mutex<Vec<String>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the log at its current head.
    pub async fn open(store: DynStore) -> Result<Self, StoreError> {
        let last = match store.audit_last().await? {
            Some(r) => from_row(&r).ok(),
            None => None,
        };
        let (head_tx, _) = tokio::sync::watch::channel(last.as_ref().map(AuditEntry::head));
        Ok(Self {
            store,
            last: Mutex::new(last),
            head_tx,
            alerts: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The current head, updated after every append.
    pub fn subscribe_head(&self) -> tokio::sync::watch::Receiver<Option<Head>> {
        self.head_tx.subscribe()
    }

    /// Rewrites detected through heads the agents kept (newest last, at
    /// most 100).
    pub fn alerts(&self) -> Vec<String> {
        self.alerts.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Checks that the chain still holds the entry an agent kept. A missing
    /// entry or another hash means the chain was rewritten (even when it
    /// verifies on its own): logged at ERROR and listed in [`Self::alerts`].
    pub async fn check_kept_head(
        &self,
        agent: &str,
        kept: &wingman_protocol::AuditHead,
    ) -> Result<(), String> {
        let seq = i64::try_from(kept.seq).unwrap_or(i64::MAX);
        let rows = self
            .store
            .audit_entries(None, seq.saturating_sub(1), 1)
            .await
            .map_err(|e| e.to_string())?;
        let problem = match rows.first() {
            Some(r) if r.seq == seq && r.hash == kept.hash => return Ok(()),
            Some(r) if r.seq == seq => format!(
                "agent {agent} kept entry {} with hash {}, the chain now has {}",
                kept.seq,
                short(&kept.hash),
                short(&r.hash)
            ),
            _ => format!(
                "agent {agent} kept entry {} (hash {}), which the chain no longer holds",
                kept.seq,
                short(&kept.hash)
            ),
        };
        tracing::error!(%agent, seq = kept.seq, problem = %problem, "the audit chain was rewritten");
        if let Ok(mut a) = self.alerts.lock() {
            if a.len() >= 100 {
                a.remove(0);
            }
            a.push(problem.clone());
        }
        Err(problem)
    }

    /// Appends an entry; errors are logged and returned (the action itself
    /// has already happened).
    pub async fn record(
        &self,
        actor: &str,
        kind: AuditKind,
        incident_id: Option<&str>,
        detail: Value,
    ) -> Result<AuditEntry, StoreError> {
        self.record_plan(actor, kind, incident_id, None, detail)
            .await
    }

    /// [`Self::record`] for an entry about a plan.
    pub async fn record_plan(
        &self,
        actor: &str,
        kind: AuditKind,
        incident_id: Option<&str>,
        plan_id: Option<&str>,
        detail: Value,
    ) -> Result<AuditEntry, StoreError> {
        let mut last = self.last.lock().await;
        for attempt in 0..2 {
            let ts = wingman_agent::now_ms() / 1000;
            let e = audit::append(
                last.as_ref(),
                ts,
                actor,
                kind,
                incident_id,
                plan_id,
                detail.clone(),
            );
            match self.store.audit_append(&to_row(&e)).await {
                Ok(()) => {
                    *last = Some(e.clone());
                    self.head_tx.send_replace(Some(e.head()));
                    return Ok(e);
                }
                Err(error) if attempt == 0 => {
                    // Another process appended: continue from its head.
                    warn!(%error, "audit append clashed; reloading the head");
                    *last = self
                        .store
                        .audit_last()
                        .await?
                        .and_then(|r| from_row(&r).ok());
                }
                Err(error) => {
                    warn!(%error, kind = ?kind, "cannot append to the audit log");
                    return Err(error);
                }
            }
        }
        Err(StoreError::Backend("audit append failed".into()))
    }
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}
