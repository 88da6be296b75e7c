//! Credentials: Argon2id password hashes, random secrets, enrollment tokens,
//! API keys, session ids and the login throttle (a pure state machine that
//! receives `now`).

use std::collections::BTreeMap;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Prefix of enrollment tokens (lets secret scanners find leaked ones).
pub const TOKEN_PREFIX: &str = "wmt_";
/// Prefix of API keys.
pub const API_KEY_PREFIX: &str = "wm_";

/// `n` random bytes, base64url without padding.
pub fn random_secret(n: usize) -> String {
    let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256, lowercase hex. Used for high-entropy secrets (tokens, keys, session
/// ids), which need no slow hash.
pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Constant-time string comparison.
pub fn ct_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn argon2() -> Argon2<'static> {
    // OWASP minimum for Argon2id: m = 19 MiB, t = 2, p = 1.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password into a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Verifies a password against a PHC string (parameters come from the string).
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    argon2()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Password policy for new passwords.
pub fn check_new_password(password: &str) -> Result<(), &'static str> {
    if password.chars().count() < 10 {
        return Err("passwords must be at least 10 characters long");
    }
    if password.len() > 1024 {
        return Err("passwords must be at most 1024 bytes long");
    }
    Ok(())
}

/// A freshly minted enrollment token: `wmt_<id>.<secret>`.
#[derive(Debug, Clone)]
pub struct MintedToken {
    /// Public id (stored in clear).
    pub id: String,
    /// The whole token to hand to the operator.
    pub token: String,
    /// SHA-256 of the secret part.
    pub secret_hash: String,
}

/// Mints an enrollment token with a 144-bit secret.
pub fn mint_token() -> MintedToken {
    let id = hex::encode(rand::random::<[u8; 6]>());
    let secret = random_secret(18);
    MintedToken {
        token: format!("{TOKEN_PREFIX}{id}.{secret}"),
        secret_hash: sha256_hex(&secret),
        id,
    }
}

/// Splits a token into (id, secret hash); `None` when malformed.
pub fn parse_token(token: &str) -> Option<(String, String)> {
    let rest = token.trim().strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('.')?;
    let ok_id = id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let ok_secret = (16..=64).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (ok_id && ok_secret).then(|| (id.to_string(), sha256_hex(secret)))
}

/// Mints an API key `wm_<secret>`; returns (key, hash).
pub fn mint_api_key() -> (String, String) {
    // Hex keeps the key's shape recognisable to the redactor's `wingman-key` rule.
    let key = format!(
        "{API_KEY_PREFIX}{}",
        hex::encode(rand::random::<[u8; 32]>())
    );
    let hash = sha256_hex(&key);
    (key, hash)
}

/// Per-key failure record.
#[derive(Debug, Clone, Default)]
struct Failures {
    times: Vec<i64>,
}

/// Login throttle: after `max_failures` failures within `window_ms` for one
/// key (a client address, or a user name with a 4x higher limit), each further
/// attempt must wait 2^(n - max) seconds after the last failure, capped at 15
/// minutes. It delays rather than locks, so nobody can lock a user out.
#[derive(Debug)]
pub struct LoginThrottle {
    max_failures: usize,
    window_ms: i64,
    keys: BTreeMap<String, Failures>,
}

impl LoginThrottle {
    /// Creates a throttle.
    pub fn new(max_failures: u32, window_secs: u64) -> Self {
        Self {
            max_failures: max_failures.max(1) as usize,
            window_ms: i64::try_from(window_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            keys: BTreeMap::new(),
        }
    }

    fn wait_for(&self, key: &str, limit: usize, now: i64) -> Option<u64> {
        let f = self.keys.get(key)?;
        let recent: Vec<i64> = f
            .times
            .iter()
            .copied()
            .filter(|t| now - t < self.window_ms)
            .collect();
        if recent.len() < limit {
            return None;
        }
        let over = u32::try_from(recent.len() - limit)
            .unwrap_or(u32::MAX)
            .min(10);
        let delay_ms = (1000i64 << over).min(15 * 60 * 1000);
        let last = recent.iter().copied().max().unwrap_or(now);
        let until = last + delay_ms;
        (until > now).then(|| u64::try_from((until - now + 999) / 1000).unwrap_or(1))
    }

    /// Seconds the caller must wait before trying, or `None` if allowed now.
    pub fn check(&self, ip: &str, user: &str, now: i64) -> Option<u64> {
        let a = self.wait_for(&format!("ip:{ip}"), self.max_failures, now);
        let b = self.wait_for(&format!("user:{user}"), self.max_failures * 4, now);
        a.max(b)
    }

    /// Records a failed attempt.
    pub fn failure(&mut self, ip: &str, user: &str, now: i64) {
        let window = self.window_ms;
        for key in [format!("ip:{ip}"), format!("user:{user}")] {
            let f = self.keys.entry(key).or_default();
            f.times.retain(|t| now - t < window);
            f.times.push(now);
            if f.times.len() > 64 {
                f.times.remove(0);
            }
        }
        if self.keys.len() > 10_000 {
            self.keys
                .retain(|_, f| f.times.iter().any(|t| now - t < window));
        }
    }

    /// Clears the record after a successful login.
    pub fn success(&mut self, ip: &str, user: &str) {
        self.keys.remove(&format!("ip:{ip}"));
        self.keys.remove(&format!("user:{user}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_round_trip() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn tokens_parse_and_reject_garbage() {
        let t = mint_token();
        let (id, hash) = parse_token(&t.token).unwrap();
        assert_eq!(id, t.id);
        assert_eq!(hash, t.secret_hash);
        for bad in [
            "",
            "wmt_",
            "wmt_zz.abc",
            "abc",
            "wmt_0123456789ab.",
            "wmt_0123456789ab.short",
        ] {
            assert!(parse_token(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn our_credentials_are_recognised_by_the_redactor() {
        let r = wingman_protocol::logs::Redactor::new(&Default::default());
        for _ in 0..200 {
            let (key, _) = mint_api_key();
            let line = format!("curl -H x {key}");
            assert!(r.contains_secret(&line), "{key}");
            let t = mint_token();
            assert!(
                r.contains_secret(&format!("enroll --token {}", t.token)),
                "{}",
                t.token
            );
        }
    }

    #[test]
    fn throttle_delays_after_max_failures_then_backs_off() {
        let mut t = LoginThrottle::new(5, 300);
        let now = 1_000_000;
        for i in 0..4 {
            t.failure("1.2.3.4", "admin", now + i);
            assert_eq!(t.check("1.2.3.4", "admin", now + i), None);
        }
        t.failure("1.2.3.4", "admin", now + 4);
        assert_eq!(t.check("1.2.3.4", "admin", now + 4), Some(1));
        assert_eq!(t.check("1.2.3.4", "admin", now + 1004), None);
        t.failure("1.2.3.4", "admin", now + 1004);
        assert_eq!(t.check("1.2.3.4", "admin", now + 1004), Some(2));
        // Another address is not delayed by the first one's failures.
        assert_eq!(t.check("5.6.7.8", "admin", now + 1004), None);
        t.success("1.2.3.4", "admin");
        assert_eq!(t.check("1.2.3.4", "admin", now + 1004), None);
    }
}
