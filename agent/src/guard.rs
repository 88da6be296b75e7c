//! The agent's gate for hub actions: signed-command verification against the
//! hub key pinned at enrollment (with a replay cache), and the audit head the
//! hub announces, kept on disk so a rewritten hub audit chain is noticed.
//!
//! Pure decisions with a small file for the kept head; the link's event loop
//! owns one [`Guard`] and feeds it `now`. The node's own action policy
//! (`[docker.policy]`, `[proxmox.policy]`) is applied afterwards by the
//! executor, so a verified command can still be refused locally.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wingman_protocol::{AuditHead, CommandBody, SignedCommand};

use crate::command_sig::{self, Limits, NonceCache, TrustedKey};
use crate::fsutil::write_atomic;

/// File holding the last audit head the hub announced.
pub const AUDIT_HEAD_FILE: &str = "audit-head.toml";

/// Live nonces kept at most (commands live at most 10 minutes).
const NONCE_CAPACITY: usize = 4096;

/// What the agent keeps of the hub's audit chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeptHead {
    /// The newest head seen.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
    /// Set when the hub announced a head that does not extend the kept one;
    /// while set, every action is refused. Delete the file to accept the
    /// hub's chain again (after restoring a hub backup, say).
    #[serde(default)]
    pub rewritten: Option<String>,
}

/// An action that passed every hub-side check; the node's own policy still
/// applies when it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// A container action.
    Docker(wingman_protocol::docker::DockerAction),
    /// A Proxmox VE guest action.
    Pve(wingman_protocol::pve::PveAction),
    /// A read-only diagnostic.
    Diagnose(wingman_protocol::Diagnostic),
}

/// Signed-command and audit-head checks for one agent process.
#[derive(Debug)]
pub struct Guard {
    audience: String,
    key: Option<TrustedKey>,
    nonces: NonceCache,
    limits: Limits,
    head_path: Option<PathBuf>,
    head: Option<KeptHead>,
}

impl Guard {
    /// A guard for agent `audience`, trusting `command_key_hex` (from the
    /// enrollment record), for a process started at `started_at` (Unix
    /// seconds). The kept head is read from `state_dir` when given.
    pub fn new(
        audience: &str,
        command_key_hex: Option<&str>,
        started_at: i64,
        state_dir: Option<&Path>,
    ) -> Self {
        let head_path = state_dir.map(|d| d.join(AUDIT_HEAD_FILE));
        let head = head_path
            .as_deref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| match toml::from_str::<KeptHead>(&s) {
                Ok(h) => Some(h),
                Err(error) => {
                    tracing::warn!(%error, "the kept audit head is unreadable; starting afresh");
                    None
                }
            });
        let mut g = Self {
            audience: audience.to_string(),
            key: None,
            nonces: NonceCache::new(NONCE_CAPACITY, started_at),
            limits: Limits::default(),
            head_path,
            head,
        };
        g.set_key(command_key_hex);
        g
    }

    /// Replaces the pinned key (after a re-enrollment).
    pub fn set_key(&mut self, command_key_hex: Option<&str>) {
        self.key = command_key_hex
            .and_then(|h| hex::decode(h).ok())
            .filter(|k| k.len() == 32)
            .map(|k| TrustedKey::new(&k));
    }

    /// Whether a hub command key is pinned.
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// The kept audit head, to report to the hub after each connect.
    pub fn kept_head(&self) -> Option<AuditHead> {
        self.head.as_ref().map(|h| AuditHead {
            seq: h.seq,
            hash: h.hash.clone(),
        })
    }

    /// Checks a signed command at `now` and decodes its body. The error is
    /// the refusal shown to the operator.
    pub fn admit(&mut self, cmd: &SignedCommand, now: i64) -> Result<Admitted, String> {
        if let Some(r) = self.head.as_ref().and_then(|h| h.rewritten.as_ref()) {
            return Err(format!(
                "refused: the hub's audit chain was rewritten ({r}); actions stay refused until an operator checks the hub and removes {AUDIT_HEAD_FILE} on this node"
            ));
        }
        let Some(key) = &self.key else {
            return Err("refused: this node has no pinned hub command key (enrolled by an older hub); re-enroll it to accept actions".into());
        };
        let verified =
            command_sig::verify(cmd, key, &self.audience, now, self.limits, &mut self.nonces)
                .map_err(|e| format!("refused: {e}"))?;
        let body = wingman_protocol::decode_body(verified.body_bytes)
            .map_err(|e| format!("refused: undecodable command body: {e}"))?;
        match body {
            CommandBody::Docker(a) => Ok(Admitted::Docker(a)),
            CommandBody::Pve(a) => Ok(Admitted::Pve(a)),
            CommandBody::Diagnose(d) => Ok(Admitted::Diagnose(d)),
            CommandBody::Ping => Err("refused: a signed command must be an action".into()),
        }
    }

    /// Takes a head the hub announced. A head older than the kept one, or
    /// the same position with another hash, means the hub's chain was
    /// rewritten: recorded, logged, and every later action refused.
    pub fn on_head(&mut self, new: &AuditHead) -> Result<(), String> {
        let verdict = match &self.head {
            Some(k) if k.rewritten.is_some() => return Err("already flagged".into()),
            Some(k) if new.seq < k.seq => Err(format!(
                "the head went back from entry {} to {}",
                k.seq, new.seq
            )),
            Some(k) if new.seq == k.seq && new.hash != k.hash => {
                Err(format!("entry {} changed since it was last seen", k.seq))
            }
            Some(k) if new.seq == k.seq => return Ok(()),
            _ => Ok(()),
        };
        match verdict {
            Ok(()) => {
                self.head = Some(KeptHead {
                    seq: new.seq,
                    hash: new.hash.clone(),
                    rewritten: None,
                });
            }
            Err(reason) => {
                tracing::error!(%reason, "the hub's audit chain was rewritten; refusing actions");
                if let Some(h) = &mut self.head {
                    h.rewritten = Some(reason.clone());
                }
                self.persist();
                return Err(reason);
            }
        }
        self.persist();
        Ok(())
    }

    fn persist(&self) {
        let (Some(path), Some(head)) = (&self.head_path, &self.head) else {
            return;
        };
        match toml::to_string(head) {
            Ok(s) => {
                if let Err(error) = write_atomic(path, s.as_bytes(), 0o600) {
                    tracing::warn!(%error, "cannot keep the audit head");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot encode the audit head"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::command_sig::{CommandToSign, sign};
    use ring::signature::{Ed25519KeyPair, KeyPair};
    use wingman_protocol::docker::DockerAction;

    const NOW: i64 = 1_800_000_000;

    fn key(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
    }

    fn signed(k: &Ed25519KeyPair, body: &CommandBody, nonce: u8, issued: i64) -> SignedCommand {
        sign(
            k,
            CommandToSign {
                body_bytes: wingman_protocol::encode_body(body).unwrap(),
                audience: "agent-1".into(),
                plan_hash: [1; 32],
                step_hash: [2; 32],
                issued_at: issued,
                expires_at: issued + 120,
                nonce: [nonce; 16],
            },
        )
    }

    fn restart() -> CommandBody {
        CommandBody::Docker(DockerAction::Restart {
            container: "web".into(),
            timeout_s: None,
        })
    }

    fn guard(k: &Ed25519KeyPair, dir: Option<&Path>) -> Guard {
        let hexkey = hex::encode(k.public_key().as_ref());
        Guard::new("agent-1", Some(&hexkey), NOW - 10, dir)
    }

    #[test]
    fn admits_once_then_refuses_replay_expiry_and_foreign_keys() {
        let k = key(1);
        let mut g = guard(&k, None);
        let c = signed(&k, &restart(), 1, NOW);
        assert_eq!(
            g.admit(&c, NOW),
            Ok(Admitted::Docker(DockerAction::Restart {
                container: "web".into(),
                timeout_s: None
            }))
        );
        let replay = g.admit(&c, NOW + 1).unwrap_err();
        assert!(replay.contains("replayed"), "{replay}");
        let late = signed(&k, &restart(), 2, NOW);
        let expired = g.admit(&late, NOW + 200).unwrap_err();
        assert!(expired.contains("expired"), "{expired}");
        let forged = signed(&key(2), &restart(), 3, NOW);
        assert!(g.admit(&forged, NOW).unwrap_err().contains("unknown key"));
        let ping = signed(&k, &CommandBody::Ping, 4, NOW);
        assert!(g.admit(&ping, NOW).unwrap_err().contains("action"));
        let old = signed(&k, &restart(), 5, NOW - 60);
        assert!(
            g.admit(&old, NOW)
                .unwrap_err()
                .contains("before the agent started")
        );
    }

    #[test]
    fn without_a_pinned_key_everything_is_refused() {
        let k = key(1);
        let mut g = Guard::new("agent-1", None, NOW - 10, None);
        assert!(!g.has_key());
        let e = g.admit(&signed(&k, &restart(), 1, NOW), NOW).unwrap_err();
        assert!(e.contains("re-enroll"), "{e}");
    }

    #[test]
    fn a_rewritten_chain_is_kept_on_disk_and_blocks_actions() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(1);
        let mut g = guard(&k, Some(dir.path()));
        let h = |seq, c: &str| AuditHead {
            seq,
            hash: c.repeat(64),
        };
        assert_eq!(g.on_head(&h(3, "a")), Ok(()));
        assert_eq!(g.on_head(&h(3, "a")), Ok(()));
        assert_eq!(g.on_head(&h(5, "b")), Ok(()));
        assert_eq!(g.kept_head(), Some(h(5, "b")));
        // A restarted agent still has it.
        let mut g = guard(&k, Some(dir.path()));
        assert_eq!(g.kept_head(), Some(h(5, "b")));
        assert!(g.on_head(&h(5, "c")).unwrap_err().contains("changed"));
        let e = g.admit(&signed(&k, &restart(), 1, NOW), NOW).unwrap_err();
        assert!(e.contains("rewritten"), "{e}");
        // Still flagged after a restart, and a shorter chain is named too.
        let mut g = guard(&k, Some(dir.path()));
        assert!(g.admit(&signed(&k, &restart(), 2, NOW), NOW).is_err());
        let mut fresh = guard(&k, None);
        fresh.on_head(&h(9, "d")).unwrap();
        assert!(fresh.on_head(&h(4, "d")).unwrap_err().contains("went back"));
    }
}
