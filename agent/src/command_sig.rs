//! Signing and verifying hub-to-agent commands ([`SignedCommand`], whose
//! bytes the protocol crate defines). Pure: no I/O, no clock, no randomness
//! (the caller passes `now` and the nonce). The hub signs; the agent verifies.
//!
//! The hub signs a command with its Ed25519 command key; the agent accepts it
//! only if the key is the one it pinned, the signature covers exactly these
//! bytes, the command is addressed to it, has not expired (with a small
//! clock-skew allowance) and does not live too long, and its nonce was not
//! seen before. The nonce cache is bounded: expired nonces are evicted, and
//! when it is full of live ones new commands are refused (fail closed)
//! rather than forgetting a nonce that could then be replayed.

use std::collections::{BTreeMap, BTreeSet};

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use wingman_protocol::SignedCommand;

/// What the hub signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandToSign {
    /// Encoded command body.
    pub body_bytes: Vec<u8>,
    /// The agent id.
    pub audience: String,
    /// Plan hash.
    pub plan_hash: [u8; 32],
    /// Step hash.
    pub step_hash: [u8; 32],
    /// Signing time, Unix seconds (the hub's `now`).
    pub issued_at: i64,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// Fresh random nonce.
    pub nonce: [u8; 16],
}

/// The key id of an Ed25519 public key: the first 8 bytes of its SHA-256,
/// hex.
pub fn key_id(public_key: &[u8]) -> String {
    let d = Sha256::digest(public_key);
    hex::encode(d.get(..8).unwrap_or_default())
}

/// Parses a 64-character hex hash (as the hub's plan and step hashes).
pub fn hash_from_hex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Signs a command with the hub's key.
pub fn sign(key: &Ed25519KeyPair, cmd: CommandToSign) -> SignedCommand {
    let mut out = SignedCommand {
        id: 0,
        body_bytes: cmd.body_bytes,
        audience: cmd.audience,
        plan_hash: cmd.plan_hash,
        step_hash: cmd.step_hash,
        issued_at: cmd.issued_at,
        expires_at: cmd.expires_at,
        nonce: cmd.nonce,
        key_id: key_id(key.public_key().as_ref()),
        signature: Vec::new(),
    };
    out.signature = key.sign(&out.signing_input()).as_ref().to_vec();
    out
}

/// The hub key an agent trusts (pinned at enrollment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedKey {
    /// [`key_id`] of `public_key`.
    pub key_id: String,
    /// Raw 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
}

impl TrustedKey {
    /// From a raw public key.
    pub fn new(public_key: &[u8]) -> Self {
        Self {
            key_id: key_id(public_key),
            public_key: public_key.to_vec(),
        }
    }
}

/// Time limits the agent applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Accepted clock difference between hub and agent, seconds.
    pub clock_skew_s: i64,
    /// Longest accepted remaining lifetime, seconds.
    pub max_lifetime_s: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            clock_skew_s: 30,
            max_lifetime_s: 600,
        }
    }
}

/// Why the agent refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Signed by a key the agent does not trust.
    #[error("command signed by unknown key {0}")]
    UnknownKey(String),
    /// The signature does not verify (tampered, or wrong key).
    #[error("bad command signature")]
    BadSignature,
    /// Addressed to another agent.
    #[error("command is for {0}")]
    WrongAudience(String),
    /// Expired.
    #[error("command expired at {expires_at} (now {now})")]
    Expired {
        /// Its expiry.
        expires_at: i64,
        /// Agent time.
        now: i64,
    },
    /// Lives longer than allowed, or expires before it was issued.
    #[error("command lifetime {issued_at}..{expires_at} is out of range")]
    BadLifetime {
        /// Its signing time.
        issued_at: i64,
        /// Its expiry.
        expires_at: i64,
    },
    /// Signed in the future (beyond the skew allowance).
    #[error("command issued at {issued_at}, in the future (now {now})")]
    IssuedInFuture {
        /// Its signing time.
        issued_at: i64,
        /// Agent time.
        now: i64,
    },
    /// Signed before this agent process started: its nonce may have been
    /// seen by the previous process, whose cache is gone.
    #[error("command issued at {issued_at}, before the agent started at {started_at}")]
    IssuedBeforeStart {
        /// Its signing time.
        issued_at: i64,
        /// Agent start.
        started_at: i64,
    },
    /// The nonce was already used.
    #[error("replayed command (nonce seen before)")]
    Replayed,
    /// Too many live nonces; refused rather than forgetting one.
    #[error("too many commands in flight")]
    NonceCacheFull,
}

/// Seen nonces until they can no longer be valid. Bounded, and in memory:
/// commands issued before `started_at` (the agent's start) are refused, so a
/// restart cannot reopen a replay window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceCache {
    capacity: usize,
    started_at: i64,
    by_nonce: BTreeMap<[u8; 16], i64>,
    by_expiry: BTreeSet<(i64, [u8; 16])>,
}

impl NonceCache {
    /// A cache holding at most `capacity` live nonces, for an agent that
    /// started at `started_at` (Unix seconds).
    pub fn new(capacity: usize, started_at: i64) -> Self {
        Self {
            capacity,
            started_at,
            by_nonce: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    /// Live nonces held.
    pub fn len(&self) -> usize {
        self.by_nonce.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.by_nonce.is_empty()
    }

    /// Forgets nonces whose commands can no longer verify (`forget_after < now`).
    pub fn evict(&mut self, now: i64) {
        while let Some(&(t, n)) = self.by_expiry.first() {
            if t >= now {
                break;
            }
            self.by_expiry.remove(&(t, n));
            self.by_nonce.remove(&n);
        }
    }

    /// Records `nonce` until `forget_after`; refuses a repeat.
    pub fn insert(
        &mut self,
        nonce: [u8; 16],
        forget_after: i64,
        now: i64,
    ) -> Result<(), VerifyError> {
        self.evict(now);
        if self.by_nonce.contains_key(&nonce) {
            return Err(VerifyError::Replayed);
        }
        if self.by_nonce.len() >= self.capacity {
            return Err(VerifyError::NonceCacheFull);
        }
        self.by_nonce.insert(nonce, forget_after);
        self.by_expiry.insert((forget_after, nonce));
        Ok(())
    }
}

/// A command that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified<'a> {
    /// The body to decode.
    pub body_bytes: &'a [u8],
    /// The plan hash to echo in the result.
    pub plan_hash: &'a [u8; 32],
    /// The step hash to echo in the result.
    pub step_hash: &'a [u8; 32],
}

/// Agent side: checks key, signature, audience, expiry, lifetime, issue
/// time (not in the future, not before the agent started), then nonce
/// (recorded only when everything else passed, so forged commands cannot
/// fill the cache).
pub fn verify<'a>(
    cmd: &'a SignedCommand,
    key: &TrustedKey,
    audience: &str,
    now: i64,
    limits: Limits,
    nonces: &mut NonceCache,
) -> Result<Verified<'a>, VerifyError> {
    if cmd.key_id != key.key_id {
        return Err(VerifyError::UnknownKey(cmd.key_id.clone()));
    }
    UnparsedPublicKey::new(&ED25519, &key.public_key)
        .verify(&cmd.signing_input(), &cmd.signature)
        .map_err(|_| VerifyError::BadSignature)?;
    if cmd.audience != audience {
        return Err(VerifyError::WrongAudience(cmd.audience.clone()));
    }
    let forget_after = cmd.expires_at.saturating_add(limits.clock_skew_s);
    if now > forget_after {
        return Err(VerifyError::Expired {
            expires_at: cmd.expires_at,
            now,
        });
    }
    let lifetime = cmd.expires_at.saturating_sub(cmd.issued_at);
    if !(0..=limits.max_lifetime_s).contains(&lifetime) {
        return Err(VerifyError::BadLifetime {
            issued_at: cmd.issued_at,
            expires_at: cmd.expires_at,
        });
    }
    if cmd.issued_at > now.saturating_add(limits.clock_skew_s) {
        return Err(VerifyError::IssuedInFuture {
            issued_at: cmd.issued_at,
            now,
        });
    }
    if cmd.issued_at < nonces.started_at {
        return Err(VerifyError::IssuedBeforeStart {
            issued_at: cmd.issued_at,
            started_at: nonces.started_at,
        });
    }
    nonces.insert(cmd.nonce, forget_after, now)?;
    Ok(Verified {
        body_bytes: &cmd.body_bytes,
        plan_hash: &cmd.plan_hash,
        step_hash: &cmd.step_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
    }

    fn trusted(k: &Ed25519KeyPair) -> TrustedKey {
        TrustedKey::new(k.public_key().as_ref())
    }

    fn cmd(nonce: u8, expires_at: i64) -> CommandToSign {
        cmd_at(nonce, NOW, expires_at)
    }

    fn cmd_at(nonce: u8, issued_at: i64, expires_at: i64) -> CommandToSign {
        CommandToSign {
            body_bytes: b"\x02\x00\x03web".to_vec(),
            audience: "agent-pve1".into(),
            plan_hash: [1; 32],
            step_hash: [2; 32],
            issued_at,
            expires_at,
            nonce: [nonce; 16],
        }
    }

    const NOW: i64 = 1_000_000;

    fn check(s: &SignedCommand, now: i64, cache: &mut NonceCache) -> Result<(), VerifyError> {
        verify(
            s,
            &trusted(&keypair(1)),
            "agent-pve1",
            now,
            Limits::default(),
            cache,
        )
        .map(|_| ())
    }

    #[test]
    fn signs_and_verifies() {
        let k = keypair(1);
        let s = sign(&k, cmd(1, NOW + 120));
        assert_eq!(s.signature.len(), 64);
        assert_eq!(s.key_id.len(), 16);
        let mut cache = NonceCache::new(8, NOW - 3600);
        let v = verify(
            &s,
            &trusted(&k),
            "agent-pve1",
            NOW,
            Limits::default(),
            &mut cache,
        )
        .unwrap();
        assert_eq!(v.body_bytes, b"\x02\x00\x03web");
        assert_eq!(v.plan_hash, &[1; 32]);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn any_tampering_breaks_the_signature() {
        let s = sign(&keypair(1), cmd(1, NOW + 120));
        let mut cache = NonceCache::new(8, NOW - 3600);
        let tampered: Vec<SignedCommand> = vec![
            SignedCommand {
                body_bytes: b"\x02\x03\x03web".to_vec(),
                ..s.clone()
            },
            SignedCommand {
                plan_hash: [9; 32],
                ..s.clone()
            },
            SignedCommand {
                step_hash: [9; 32],
                ..s.clone()
            },
            SignedCommand {
                expires_at: NOW + 121,
                ..s.clone()
            },
            SignedCommand {
                issued_at: NOW - 1,
                ..s.clone()
            },
            SignedCommand {
                nonce: [9; 16],
                ..s.clone()
            },
            SignedCommand {
                signature: vec![0; 64],
                ..s.clone()
            },
            SignedCommand {
                signature: vec![1, 2, 3],
                ..s.clone()
            },
            SignedCommand {
                signature: Vec::new(),
                ..s.clone()
            },
        ];
        for t in tampered {
            assert_eq!(check(&t, NOW, &mut cache), Err(VerifyError::BadSignature));
        }
        // The audience is signed too: changing it breaks the signature.
        let moved = SignedCommand {
            audience: "agent-pve2".into(),
            ..s.clone()
        };
        assert_eq!(
            check(&moved, NOW, &mut cache),
            Err(VerifyError::BadSignature)
        );
        // Forged commands never reach the nonce cache.
        assert!(cache.is_empty());
        assert_eq!(check(&s, NOW, &mut cache), Ok(()));
    }

    #[test]
    fn wrong_key_and_unknown_key() {
        let s = sign(&keypair(2), cmd(1, NOW + 120));
        let mut cache = NonceCache::new(8, NOW - 3600);
        assert!(matches!(
            check(&s, NOW, &mut cache),
            Err(VerifyError::UnknownKey(_))
        ));
        // Same key id claimed, other key: signature fails.
        let forged = SignedCommand {
            key_id: trusted(&keypair(1)).key_id,
            ..s
        };
        assert_eq!(
            check(&forged, NOW, &mut cache),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn audience_is_checked() {
        let k = keypair(1);
        let s = sign(&k, cmd(1, NOW + 120));
        let mut cache = NonceCache::new(8, NOW - 3600);
        assert_eq!(
            verify(
                &s,
                &trusted(&k),
                "agent-docker1",
                NOW,
                Limits::default(),
                &mut cache
            ),
            Err(VerifyError::WrongAudience("agent-pve1".into()))
        );
    }

    #[test]
    fn expiry_with_skew_and_lifetime() {
        let k = keypair(1);
        let mut cache = NonceCache::new(8, NOW - 3600);
        let s = sign(&k, cmd(1, NOW));
        // Within the 30 s skew allowance.
        assert_eq!(check(&s, NOW + 30, &mut cache), Ok(()));
        let s = sign(&k, cmd(2, NOW));
        assert_eq!(
            check(&s, NOW + 31, &mut cache),
            Err(VerifyError::Expired {
                expires_at: NOW,
                now: NOW + 31
            })
        );
        // At most max_lifetime between issue and expiry.
        let s = sign(&k, cmd(3, NOW + 600));
        assert_eq!(check(&s, NOW, &mut cache), Ok(()));
        for (n, exp) in [(4, NOW + 601), (5, i64::MAX), (6, NOW - 1)] {
            let s = sign(&k, cmd(n, exp));
            assert!(
                matches!(
                    check(&s, NOW - 20, &mut cache),
                    Err(VerifyError::BadLifetime { .. })
                ),
                "{exp}"
            );
        }
        let s = sign(&k, cmd(7, i64::MIN));
        assert!(matches!(
            check(&s, NOW, &mut cache),
            Err(VerifyError::Expired { .. })
        ));
        // Issued in the future, beyond the skew allowance.
        let s = sign(&k, cmd_at(8, NOW + 30, NOW + 60));
        assert_eq!(check(&s, NOW, &mut cache), Ok(()));
        let s = sign(&k, cmd_at(9, NOW + 31, NOW + 60));
        assert!(matches!(
            check(&s, NOW, &mut cache),
            Err(VerifyError::IssuedInFuture { .. })
        ));
    }

    #[test]
    fn commands_from_before_a_restart_are_refused() {
        let k = keypair(1);
        let s = sign(&k, cmd(1, NOW + 60));
        let mut before = NonceCache::new(8, NOW - 10);
        assert_eq!(check(&s, NOW, &mut before), Ok(()));
        // The agent restarted at NOW + 5 with an empty cache.
        let mut after = NonceCache::new(8, NOW + 5);
        assert_eq!(
            check(&s, NOW + 6, &mut after),
            Err(VerifyError::IssuedBeforeStart {
                issued_at: NOW,
                started_at: NOW + 5
            })
        );
        assert!(after.is_empty());
    }

    #[test]
    fn replay_is_refused_until_the_command_expired() {
        let k = keypair(1);
        let s = sign(&k, cmd(1, NOW + 60));
        let mut cache = NonceCache::new(8, NOW - 3600);
        assert_eq!(check(&s, NOW, &mut cache), Ok(()));
        assert_eq!(check(&s, NOW + 1, &mut cache), Err(VerifyError::Replayed));
        assert_eq!(check(&s, NOW + 90, &mut cache), Err(VerifyError::Replayed));
        // Once it could no longer verify, the nonce is forgotten, and the
        // command is refused as expired instead.
        assert!(matches!(
            check(&s, NOW + 91, &mut cache),
            Err(VerifyError::Expired { .. })
        ));
        cache.evict(NOW + 91);
        assert!(cache.is_empty());
    }

    #[test]
    fn bounded_cache_fails_closed_and_evicts_expired() {
        let k = keypair(1);
        let mut cache = NonceCache::new(2, NOW - 3600);
        assert_eq!(check(&sign(&k, cmd(1, NOW + 10)), NOW, &mut cache), Ok(()));
        assert_eq!(check(&sign(&k, cmd(2, NOW + 100)), NOW, &mut cache), Ok(()));
        assert_eq!(
            check(&sign(&k, cmd(3, NOW + 100)), NOW, &mut cache),
            Err(VerifyError::NonceCacheFull)
        );
        // Nonce 1 can be forgotten after NOW + 10 + 30.
        assert_eq!(
            check(&sign(&k, cmd(3, NOW + 100)), NOW + 41, &mut cache),
            Ok(())
        );
        assert_eq!(cache.len(), 2);
        // Nonce 2 is still remembered.
        assert_eq!(
            check(&sign(&k, cmd(2, NOW + 100)), NOW + 41, &mut cache),
            Err(VerifyError::Replayed)
        );
    }

    #[test]
    fn serde_round_trip_and_hex() {
        let s = sign(&keypair(1), cmd(1, NOW + 120));
        let json = serde_json::to_string(&s).unwrap();
        let back: SignedCommand = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let h = "ab".repeat(32);
        assert_eq!(hash_from_hex(&h), Some([0xab; 32]));
        assert_eq!(hash_from_hex("abc"), None);
        assert_eq!(hash_from_hex(&"zz".repeat(32)), None);
    }

    /// Pins the signing-input layout: a change here breaks every deployed
    /// agent, so it must be a new domain tag, not an edit. (The digest was
    /// cross-checked with an independent Python implementation.)
    #[test]
    fn signing_input_known_answer() {
        let s = sign(&keypair(1), cmd(1, NOW + 120));
        let digest = hex::encode(Sha256::digest(s.signing_input()));
        assert_eq!(
            digest,
            "1c5697dd50d44a3cd2cf721a0e20daf02b962f081ecd0dfd1b21a2ae9e4f080b"
        );
        assert!(s.signing_input().starts_with(b"wingman-command-v1\0"));
    }
}
