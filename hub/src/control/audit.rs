//! The audit trail: append-only and hash-chained.
//!
//! Each [`AuditEntry`] carries the previous entry's hash, and its own hash is
//! `SHA-256("wingman-audit-v1\n" ‖ canonical JSON of every other field)`;
//! the first entry's `prev_hash` is 64 zeros. [`verify`] recomputes the
//! chain and names the first broken entry. A chain rewritten end to end by
//! someone with database access still verifies, so the hub sends its
//! [`Head`] to agents, which keep it; [`HeadCheck`] is the agent-side check
//! that a new head extends the kept one. Export is JSON lines.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::domain_hash;
use super::policy::AuditRecord;

/// `prev_hash` of the first entry.
pub const GENESIS_PREV_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

const DOMAIN: &str = "wingman-audit-v1";

/// What happened. Variants are only appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A plan was proposed.
    PlanCreated,
    /// A plan passed validation (detail: hash, flags).
    PlanValidated,
    /// A plan failed validation (detail: errors).
    PlanInvalid,
    /// A user approved a step.
    StepApproved,
    /// An approval was refused.
    ApprovalRefused,
    /// An approval expired unused.
    ApprovalExpired,
    /// The plan was edited and its approvals voided.
    ApprovalsInvalidated,
    /// A user rejected the plan.
    PlanRejected,
    /// A rejection was refused (role, state).
    RejectionRefused,
    /// An execution request was refused.
    ExecutionRefused,
    /// A signed command went to an agent.
    CommandSent,
    /// The agent reported a result.
    StepExecuted,
    /// The step's effect was verified.
    StepVerified,
    /// The step failed (agent, probe, timeout).
    StepFailed,
    /// A user marked a step done by hand.
    ManualStepDone,
    /// Marking a step done was refused.
    ManualDoneRefused,
    /// The run stopped.
    PlanStopped,
    /// Every step is done.
    PlanCompleted,
    /// A result or probe answer arrived for a step not waiting for one.
    UnexpectedEvent,
    /// A user acknowledged an incident.
    IncidentAcknowledged,
    /// A user resolved an incident.
    IncidentResolved,
    /// An admin saved the notification settings.
    NotificationSettingsChanged,
    /// An admin revoked an agent.
    AgentRevoked,
    /// A user sent a test notification.
    TestNotificationSent,
    /// An admin changed the control policy (mode, opt-ins, target rules).
    ControlPolicyChanged,
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// 1, 2, 3, ... without gaps.
    pub seq: u64,
    /// Unix seconds.
    pub ts: i64,
    /// `user:<name>`, `agent:<node>` or `hub`.
    pub actor: String,
    /// What happened.
    pub kind: AuditKind,
    /// The incident, if any.
    pub incident_id: Option<String>,
    /// The plan, if any.
    pub plan_id: Option<String>,
    /// Details.
    pub detail: Value,
    /// The previous entry's hash (lowercase hex).
    pub prev_hash: String,
    /// This entry's hash (lowercase hex).
    pub hash: String,
}

/// The newest entry's position and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Its seq.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
}

impl AuditEntry {
    /// Recomputes this entry's hash from its other fields.
    pub fn compute_hash(&self) -> String {
        domain_hash(
            DOMAIN,
            &json!({
                "seq": self.seq,
                "ts": self.ts,
                "actor": self.actor,
                "kind": self.kind,
                "incident_id": self.incident_id,
                "plan_id": self.plan_id,
                "detail": self.detail,
                "prev_hash": self.prev_hash,
            }),
        )
    }

    /// This entry as a head.
    pub fn head(&self) -> Head {
        Head {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }
}

/// Builds the entry that follows `prev` (`None`: the first entry).
pub fn append(
    prev: Option<&AuditEntry>,
    ts: i64,
    actor: &str,
    kind: AuditKind,
    incident_id: Option<&str>,
    plan_id: Option<&str>,
    detail: Value,
) -> AuditEntry {
    let mut e = AuditEntry {
        seq: prev.map_or(1, |p| p.seq.saturating_add(1)),
        ts,
        actor: actor.to_owned(),
        kind,
        incident_id: incident_id.map(str::to_owned),
        plan_id: plan_id.map(str::to_owned),
        detail,
        prev_hash: prev.map_or_else(|| GENESIS_PREV_HASH.to_owned(), |p| p.hash.clone()),
        hash: String::new(),
    };
    e.hash = e.compute_hash();
    e
}

/// Appends a record the policy state machine emitted.
pub fn append_record(
    prev: Option<&AuditEntry>,
    ts: i64,
    incident_id: &str,
    plan_id: &str,
    record: &AuditRecord,
) -> AuditEntry {
    append(
        prev,
        ts,
        &record.actor,
        record.kind,
        Some(incident_id),
        Some(plan_id),
        record.detail.clone(),
    )
}

/// How the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokenReason {
    /// An entry is missing, duplicated or out of order.
    #[error("expected seq {expected}, found {found}")]
    Seq {
        /// The seq that should be here.
        expected: u64,
        /// The seq that is.
        found: u64,
    },
    /// `prev_hash` is not the previous entry's hash.
    #[error("prev_hash does not match the previous entry")]
    PrevHash,
    /// The stored hash is not the hash of the entry's fields.
    #[error("hash does not match the entry's content")]
    Hash,
}

/// The first broken entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at seq {seq}: {reason}")]
pub struct BrokenAt {
    /// The first seq that does not verify.
    pub seq: u64,
    /// Why.
    pub reason: BrokenReason,
}

/// Verifies a whole chain from its first entry.
pub fn verify(entries: &[AuditEntry]) -> Result<(), BrokenAt> {
    verify_from(None, entries)
}

/// Verifies `entries` as the continuation of `anchor` (`None`: from the
/// start of the chain).
pub fn verify_from(anchor: Option<&Head>, entries: &[AuditEntry]) -> Result<(), BrokenAt> {
    let (mut expected, mut prev) = match anchor {
        Some(h) => (h.seq.saturating_add(1), h.hash.clone()),
        None => (1, GENESIS_PREV_HASH.to_owned()),
    };
    for e in entries {
        let broken = |reason| BrokenAt {
            seq: expected,
            reason,
        };
        if e.seq != expected {
            return Err(broken(BrokenReason::Seq {
                expected,
                found: e.seq,
            }));
        }
        if e.prev_hash != prev {
            return Err(broken(BrokenReason::PrevHash));
        }
        if e.compute_hash() != e.hash {
            return Err(broken(BrokenReason::Hash));
        }
        prev.clone_from(&e.hash);
        expected = expected.saturating_add(1);
    }
    Ok(())
}

/// Why an agent thinks the hub's chain was rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rewrite {
    /// The new head is older than the kept one (truncated or rolled back).
    #[error("the head went back from seq {kept} to {new}")]
    WentBackwards {
        /// Kept seq.
        kept: u64,
        /// New seq.
        new: u64,
    },
    /// Same seq, different hash.
    #[error("entry {seq} changed since it was last seen")]
    HeadChanged {
        /// The seq.
        seq: u64,
    },
    /// The segment does not extend the kept head.
    #[error("the segment does not extend the kept head: {0}")]
    Broken(BrokenAt),
    /// The segment does not end at the new head.
    #[error("the segment does not end at the announced head")]
    SegmentMismatch,
}

/// Agent side: keeps the last head the hub announced and checks that each
/// new head extends it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadCheck {
    kept: Option<Head>,
}

impl HeadCheck {
    /// Starts from a kept head (`None` on first contact).
    pub fn new(kept: Option<Head>) -> Self {
        Self { kept }
    }

    /// The kept head.
    pub fn kept(&self) -> Option<&Head> {
        self.kept.as_ref()
    }

    /// Checks that `new` extends the kept head; `segment` holds the entries
    /// after the kept head up to and including `new`. First contact trusts
    /// the announced head.
    pub fn check(&self, new: &Head, segment: &[AuditEntry]) -> Result<(), Rewrite> {
        let Some(kept) = &self.kept else {
            return Ok(());
        };
        if new.seq < kept.seq {
            return Err(Rewrite::WentBackwards {
                kept: kept.seq,
                new: new.seq,
            });
        }
        if new.seq == kept.seq {
            return if new.hash == kept.hash {
                Ok(())
            } else {
                Err(Rewrite::HeadChanged { seq: new.seq })
            };
        }
        verify_from(Some(kept), segment).map_err(Rewrite::Broken)?;
        match segment.last() {
            Some(last) if last.seq == new.seq && last.hash == new.hash => Ok(()),
            _ => Err(Rewrite::SegmentMismatch),
        }
    }

    /// [`Self::check`], then keeps `new`. On error the kept head stays.
    pub fn accept(&mut self, new: Head, segment: &[AuditEntry]) -> Result<(), Rewrite> {
        self.check(&new, segment)?;
        self.kept = Some(new);
        Ok(())
    }
}

/// Error reading an export.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {source}")]
pub struct ImportError {
    /// 1-based line.
    pub line: usize,
    /// The parse error.
    pub source: serde_json::Error,
}

/// JSON lines export: one entry per line, in seq order.
pub fn to_jsonl(entries: &[AuditEntry]) -> String {
    let mut out = String::new();
    for e in entries {
        if let Ok(line) = serde_json::to_string(e) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// Reads a JSON lines export (blank lines are skipped). Verify it with
/// [`verify`] afterwards.
pub fn from_jsonl(s: &str) -> Result<Vec<AuditEntry>, ImportError> {
    s.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|source| ImportError {
                line: i + 1,
                source,
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut v: Vec<AuditEntry> = Vec::new();
        for i in 0..n {
            let e = append(
                v.last(),
                1_000 + i64::try_from(i).unwrap(),
                "user:alice",
                AuditKind::StepApproved,
                Some("inc-1"),
                Some("p1"),
                json!({"step": i, "b": [1, 2], "a": "x"}),
            );
            v.push(e);
        }
        v
    }

    #[test]
    fn appends_and_verifies() {
        let c = chain(5);
        assert_eq!(c[0].seq, 1);
        assert_eq!(c[0].prev_hash, GENESIS_PREV_HASH);
        assert_eq!(c[4].prev_hash, c[3].hash);
        assert_eq!(verify(&c), Ok(()));
        assert_eq!(verify(&[]), Ok(()));
        assert_eq!(verify_from(Some(&c[1].head()), &c[2..]), Ok(()));
    }

    #[test]
    fn detects_every_tampering_at_the_first_bad_seq() {
        let c = chain(6);
        // Payload edited.
        let mut t = c.clone();
        t[3].detail = json!({"step": 99});
        assert_eq!(
            verify(&t).unwrap_err(),
            BrokenAt {
                seq: 4,
                reason: BrokenReason::Hash
            }
        );
        // Payload edited and its hash recomputed: the next link breaks.
        t[3].hash = t[3].compute_hash();
        assert_eq!(
            verify(&t).unwrap_err(),
            BrokenAt {
                seq: 5,
                reason: BrokenReason::PrevHash
            }
        );
        // Actor edited.
        let mut t = c.clone();
        t[1].actor = "user:mallory".into();
        assert_eq!(verify(&t).unwrap_err().seq, 2);
        // Row deleted.
        let mut t = c.clone();
        t.remove(2);
        assert_eq!(
            verify(&t).unwrap_err(),
            BrokenAt {
                seq: 3,
                reason: BrokenReason::Seq {
                    expected: 3,
                    found: 4
                }
            }
        );
        // Row inserted in the middle.
        let mut t = c.clone();
        let forged = append(
            Some(&c[1]),
            5,
            "hub",
            AuditKind::PlanCompleted,
            None,
            None,
            json!({}),
        );
        t.insert(2, forged);
        assert_eq!(
            verify(&t).unwrap_err(),
            BrokenAt {
                seq: 4,
                reason: BrokenReason::Seq {
                    expected: 4,
                    found: 3
                }
            }
        );
        // Reordered.
        let mut t = c.clone();
        t.swap(1, 2);
        assert_eq!(verify(&t).unwrap_err().seq, 2);
        // Wrong genesis.
        let mut t = c;
        t[0].prev_hash = "ab".repeat(32);
        assert_eq!(
            verify(&t).unwrap_err(),
            BrokenAt {
                seq: 1,
                reason: BrokenReason::PrevHash
            }
        );
    }

    #[test]
    fn truncating_the_tail_verifies_but_agents_notice() {
        let c = chain(6);
        let mut agent = HeadCheck::new(None);
        agent.accept(c[3].head(), &[]).unwrap();
        // Normal progress.
        agent.check(&c[5].head(), &c[4..]).unwrap();
        // Tail truncated to 3 entries: the chain itself still verifies.
        assert_eq!(verify(&c[..3]), Ok(()));
        assert_eq!(
            agent.check(&c[2].head(), &[]),
            Err(Rewrite::WentBackwards { kept: 4, new: 3 })
        );
    }

    #[test]
    fn whole_chain_rewrite_is_detected() {
        let c = chain(6);
        let mut agent = HeadCheck::default();
        agent.accept(c[3].head(), &[]).unwrap();
        // The attacker rewrites entry 2 and recomputes everything after it.
        let mut r: Vec<AuditEntry> = c[..1].to_vec();
        for (i, old) in c.iter().enumerate().skip(1) {
            let detail = if i == 1 {
                json!({"step": "forged"})
            } else {
                old.detail.clone()
            };
            let e = append(r.last(), old.ts, &old.actor, old.kind, None, None, detail);
            r.push(e);
        }
        assert_eq!(verify(&r), Ok(()));
        // Same length as kept: the head hash changed.
        assert_eq!(
            agent.check(&r[3].head(), &[]),
            Err(Rewrite::HeadChanged { seq: 4 })
        );
        // Longer: the segment does not chain onto the kept head.
        assert!(matches!(
            agent.check(&r[5].head(), &r[4..]),
            Err(Rewrite::Broken(BrokenAt {
                seq: 5,
                reason: BrokenReason::PrevHash
            }))
        ));
        // A segment that does not reach the announced head.
        assert_eq!(
            agent.check(&c[5].head(), &c[4..5]),
            Err(Rewrite::SegmentMismatch)
        );
        assert_eq!(
            agent.check(&c[5].head(), &[]),
            Err(Rewrite::SegmentMismatch)
        );
        // A failed check keeps the old head.
        assert!(agent.accept(r[5].head(), &r[4..]).is_err());
        assert_eq!(agent.kept(), Some(&c[3].head()));
        agent.accept(c[5].head(), &c[4..]).unwrap();
        assert_eq!(agent.kept(), Some(&c[5].head()));
    }

    #[test]
    fn jsonl_round_trip() {
        let c = chain(3);
        let text = to_jsonl(&c);
        assert_eq!(text.lines().count(), 3);
        assert!(
            text.lines()
                .next()
                .unwrap()
                .contains("\"kind\":\"step_approved\"")
        );
        let back = from_jsonl(&format!("{text}\n")).unwrap();
        assert_eq!(back, c);
        assert_eq!(verify(&back), Ok(()));
        let bad = text.replacen("\"seq\":2", "\"seq\":\"2\"", 1);
        assert_eq!(from_jsonl(&bad).unwrap_err().line, 2);
        let extra = text.replacen("\"seq\":2", "\"seq\":2,\"x\":1", 1);
        assert!(from_jsonl(&extra).is_err());
    }

    #[test]
    fn hash_is_independent_of_detail_key_order() {
        let a = append(
            None,
            1,
            "hub",
            AuditKind::PlanCreated,
            None,
            None,
            json!({"a": 1, "b": 2}),
        );
        let b: Value = serde_json::from_str(r#"{"b":2,"a":1}"#).unwrap();
        let b = append(None, 1, "hub", AuditKind::PlanCreated, None, None, b);
        assert_eq!(a.hash, b.hash);
    }
}
