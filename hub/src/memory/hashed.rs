//! [`HashedEmbedder`]: a model-free embedder for when no embedding model is
//! configured (and for tests). Text is lowercased and split on
//! non-alphanumerics; digit runs become `#` (so `pve2` and `pve7` agree and
//! bare numbers vanish), tokens under 2 characters and stopwords are dropped,
//! a small homelab synonym table folds common paraphrases (`drive` → `disk`,
//! `oomkilled` → `oom`, `certificate` → `cert`), a light suffix stemmer folds
//! inflections (`restarting`, `restarted` → `restart`). Unigrams and
//! bigrams are feature-hashed (64-bit FNV-1a, then a SplitMix64 finaliser:
//! deterministic on every platform and run) into `dim` signed buckets with
//! sublinear term frequency (`1 + ln tf`), and the vector is L2-normalised.
//!
//! Changing any of this changes the vectors: bump [`HASHED_MODEL`] so the
//! indexer re-embeds.

use std::collections::HashMap;

use super::embed::{EmbedError, EmbedderId, TextEmbedder};

/// Default vector length.
pub const DEFAULT_DIM: usize = 1024;

/// The algorithm's version, recorded as the model in [`EmbedderId`].
pub const HASHED_MODEL: &str = "fnv-uni-bi-v1";

/// Weight of a bigram feature relative to a unigram.
const BIGRAM_WEIGHT: f32 = 0.5;

/// Most tokens read from one text.
const MAX_TOKENS: usize = 4096;

const STOPWORDS: &[&str] = &[
    "about",
    "after",
    "again",
    "all",
    "also",
    "am",
    "an",
    "and",
    "any",
    "are",
    "around",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "done",
    "due",
    "each",
    "for",
    "from",
    "get",
    "gets",
    "getting",
    "got",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "him",
    "his",
    "how",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "just",
    "me",
    "more",
    "most",
    "my",
    "no",
    "not",
    "now",
    "of",
    "on",
    "one",
    "only",
    "or",
    "other",
    "our",
    "out",
    "over",
    "per",
    "same",
    "she",
    "should",
    "so",
    "some",
    "still",
    "such",
    "than",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "to",
    "too",
    "under",
    "up",
    "us",
    "very",
    "via",
    "was",
    "we",
    "were",
    "what",
    "when",
    "which",
    "while",
    "who",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
    "am",
    "pm",
    "utc",
    "min",
    "mins",
    "minute",
    "minutes",
    "hour",
    "hours",
    "sec",
    "secs",
    "second",
    "seconds",
    "day",
    "days",
    "today",
    "yesterday",
    "tonight",
    "night",
    "morning",
    "around",
    "approx",
    "about",
    "roughly",
    "later",
    "earlier",
    "ago",
    "since",
    "until",
    "within",
];

/// Token-level synonyms: `(variant, canonical)`. Applied before stemming.
const SYNONYMS: &[(&str, &str)] = &[
    ("drive", "disk"),
    ("drives", "disk"),
    ("hdd", "disk"),
    ("hdds", "disk"),
    ("ssd", "disk"),
    ("ssds", "disk"),
    ("disks", "disk"),
    ("harddisk", "disk"),
    ("certificate", "cert"),
    ("certificates", "cert"),
    ("certs", "cert"),
    ("ssl", "tls"),
    ("https", "tls"),
    ("oomkill", "oom"),
    ("oomkilled", "oom"),
    ("oomkiller", "oom"),
    ("reboot", "restart"),
    ("rebooted", "restart"),
    ("rebooting", "restart"),
    ("reboots", "restart"),
    ("bounce", "restart"),
    ("bounced", "restart"),
    ("respawn", "restart"),
    ("respawning", "restart"),
    ("crashloop", "crash"),
    ("crashloopbackoff", "crash"),
    ("died", "crash"),
    ("dies", "crash"),
    ("dying", "crash"),
    ("segfault", "crash"),
    ("vzdump", "backup"),
    ("pbs", "backup"),
    ("zpool", "pool"),
    ("fencing", "fence"),
    ("fenced", "fence"),
    ("ct", "container"),
    ("containers", "container"),
    ("sigkill", "kill"),
    ("killed", "kill"),
    ("kills", "kill"),
    ("killing", "kill"),
    ("temperature", "thermal"),
    ("temp", "thermal"),
    ("overheating", "thermal"),
    ("overheat", "thermal"),
    ("hot", "thermal"),
    ("unreachable", "down"),
    ("unresponsive", "down"),
    ("offline", "down"),
    ("capacity", "full"),
    ("filled", "full"),
    ("exhausted", "full"),
    ("enospc", "full"),
    ("expiry", "expire"),
    ("expiration", "expire"),
    ("expired", "expire"),
    ("expiring", "expire"),
    ("expires", "expire"),
    ("renewal", "renew"),
    ("renewed", "renew"),
    ("renewing", "renew"),
    ("mountpoint", "mount"),
    ("unmount", "mount"),
    ("umount", "mount"),
    ("remount", "mount"),
    ("remounted", "mount"),
    ("vms", "vm"),
    ("guest", "vm"),
    ("guests", "vm"),
    ("faulted", "fault"),
    ("faulty", "fault"),
    ("errors", "error"),
    ("err", "error"),
    ("failure", "fail"),
    ("failures", "fail"),
    ("broken", "fail"),
];

/// The model-free embedder. Cheap: about a microsecond per token.
#[derive(Debug, Clone)]
pub struct HashedEmbedder {
    dim: usize,
}

impl Default for HashedEmbedder {
    fn default() -> Self {
        Self { dim: DEFAULT_DIM }
    }
}

impl HashedEmbedder {
    /// An embedder of `dim` buckets (at least 16).
    pub fn new(dim: usize) -> Result<Self, EmbedError> {
        if dim < 16 {
            return Err(EmbedError::Config(format!("hashed: dim {dim} is below 16")));
        }
        Ok(Self { dim })
    }

    /// The vector of one text (all zeros when it has no usable token).
    pub fn vector(&self, text: &str) -> Vec<f32> {
        let tokens = tokens(text);
        let mut tf: HashMap<(u8, String), f32> = HashMap::new();
        for t in &tokens {
            *tf.entry((b'u', t.clone())).or_default() += 1.0;
        }
        for w in tokens.windows(2) {
            if let [a, b] = w {
                *tf.entry((b'b', format!("{a} {b}"))).or_default() += 1.0;
            }
        }
        let mut v = vec![0.0f32; self.dim];
        for ((ns, feat), n) in &tf {
            let h = hash(*ns, feat);
            let Ok(dim) = u64::try_from(self.dim) else {
                continue;
            };
            let Ok(idx) = usize::try_from(h % dim) else {
                continue;
            };
            let sign = if (h >> 63) == 1 { -1.0 } else { 1.0 };
            let w = if *ns == b'b' { BIGRAM_WEIGHT } else { 1.0 };
            if let Some(slot) = v.get_mut(idx) {
                *slot += sign * w * (1.0 + n.ln());
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

#[async_trait::async_trait]
impl TextEmbedder for HashedEmbedder {
    fn id(&self) -> EmbedderId {
        EmbedderId::new("hashed", HASHED_MODEL, self.dim)
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| self.vector(t)).collect())
    }
}

/// The normalised tokens of `text`, in order.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for raw in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|s| !s.is_empty())
    {
        if out.len() >= MAX_TOKENS {
            break;
        }
        if let Some(t) = normalise(raw) {
            out.push(t);
        }
    }
    out
}

fn normalise(raw: &str) -> Option<String> {
    let lower = raw.to_lowercase();
    if lower.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    // Digit runs → '#'.
    let mut t = String::with_capacity(lower.len());
    let mut in_digits = false;
    for c in lower.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                t.push('#');
            }
            in_digits = true;
        } else {
            t.push(c);
            in_digits = false;
        }
    }
    if t.chars().count() < 2 || STOPWORDS.contains(&t.as_str()) {
        return None;
    }
    let t = match SYNONYMS.iter().find(|(v, _)| *v == t) {
        Some((_, canon)) => (*canon).to_owned(),
        None => t,
    };
    let s = stem(&t);
    if s.chars().count() < 2 || STOPWORDS.contains(&s.as_str()) {
        return None;
    }
    Some(s)
}

/// A light English suffix stripper; only for ASCII words of 5+ letters.
fn stem(t: &str) -> String {
    if !t.is_ascii() || t.len() < 5 || t.contains('#') {
        return t.to_owned();
    }
    let mut s = t.to_owned();
    if let Some(b) = s.strip_suffix("ies") {
        s = format!("{b}y");
    } else if let Some(b) = s.strip_suffix("ing").filter(|b| b.len() >= 3) {
        s = b.to_owned();
    } else if let Some(b) = s.strip_suffix("ed").filter(|b| b.len() >= 3) {
        s = b.to_owned();
    } else if s.ends_with('s') && !s.ends_with("ss") && !s.ends_with("us") && !s.ends_with("is") {
        s.pop();
    }
    // Double final consonant from -ing/-ed (stopped → stopp → stop).
    let b = s.as_bytes();
    if b.len() >= 4 {
        let (x, y) = (b[b.len() - 1], b[b.len() - 2]);
        if x == y && !matches!(x, b'l' | b's' | b'z' | b'e' | b'o') {
            s.pop();
        }
    }
    if s.len() >= 5 && s.ends_with('e') {
        s.pop();
    }
    s
}

/// 64-bit FNV-1a of `ns` then the bytes, then a SplitMix64 finaliser.
fn hash(ns: u8, feat: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(ns).chain(feat.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn tokens_normalise() {
        assert_eq!(
            tokens("The ZFS pool 'tank' on pve2 is DEGRADED; 3 disks failing!"),
            vec!["zfs", "pool", "tank", "pve#", "degrad", "disk", "fail"]
        );
        assert_eq!(tokens("restarted restarting restarts"), vec!["restart"; 3]);
        assert!(tokens("a an the 42 1.5").is_empty());
    }

    #[test]
    fn deterministic_and_normalised() {
        let e = HashedEmbedder::default();
        let a = e.vector("backup job failed: datastore full");
        assert_eq!(a, e.vector("backup job failed: datastore full"));
        let n: f32 = a.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-4);
        assert!(e.vector("the of and").iter().all(|x| *x == 0.0));
        // Fixed hash (checked against an independent Python computation):
        // pins the vectors across platforms and releases.
        assert_eq!(hash(b'u', "zfs"), 0x4cee_ca61_0598_6f8e);
        assert_eq!(hash(b'b', "zfs pool"), 0x9d82_e3e4_285a_525d);
        let v = e.vector("zfs");
        let idx = usize::try_from(0x4cee_ca61_0598_6f8e_u64 % 1024).unwrap();
        assert!(
            (v[idx] - 1.0).abs() < 1e-6,
            "zfs lands in bucket {idx}, sign +"
        );
    }

    #[test]
    fn paraphrase_beats_unrelated() {
        let e = HashedEmbedder::default();
        let q = e.vector("Container jellyfin was OOM-killed on docker1 (memory limit 2 GiB)");
        let p = e.vector(
            "docker2: the jellyfin container got killed by the OOM killer, memory limit reached",
        );
        let u = e.vector("TLS certificate for grafana expires in 3 days");
        assert!(cos(&q, &p) > cos(&q, &u) + 0.2);
    }

    #[test]
    fn rejects_tiny_dim() {
        assert!(HashedEmbedder::new(8).is_err());
    }
}
