//! Online log template miner.
//!
//! [`Miner::observe`] takes one log message (without its header) at a time,
//! masks obvious variables with [`crate::logs::mask`], and assigns the
//! message to a template such as `Failed password for <*> from <*> port <*>`.
//!
//! # Algorithm
//!
//! Masked messages are split on spaces. A message whose masked text was
//! seen recently is answered from an exact-line cache. Otherwise it is
//! compared, Drain style, with the clusters of the same token count: the
//! similarity is the number of the message's literal tokens found at the
//! same position in a cluster, divided by the cluster's literal positions
//! (placeholders neither help nor hurt). The message joins the most similar
//! cluster when that reaches [`MinerConfig::similarity`], else it starts a
//! new cluster. Candidates come from an inverted index (token count,
//! position, token) -> clusters, so the cost does not grow with the number
//! of clusters; tokens shared by more than 128 clusters are only counted
//! for clusters found through rarer tokens.
//!
//! Inside a cluster every position keeps the distinct values seen there.
//! A position with one value is a constant. A position with a few values is
//! kept *open*: each combination of open values is its own template (this
//! keeps `from NEW to RUNNING` apart from `from RUNNING to DONE`). A
//! position becomes a variable, and the templates that differed only there
//! merge, when
//! - it has seen [`MinerConfig::variable_after`] distinct literal values
//!   (values written in SCREAMING_CASE, such as `RUNNING`, and patterns
//!   such as `user=<*>` that cover another value do not count), or
//! - a value equals another one with its variable left empty (`()` next to
//!   `(<*>)`), or
//! - it holds more than [`MinerConfig::enum_limit`] values.
//!
//! The first token usually names the event (`cupsd startup succeeded`), so
//! it only becomes a variable through the last rule. A variable position
//! keeps the common prefix and suffix of its values, so `user=alice` and
//! `user=bob` generalise to `user=<*>`. Template texts follow the
//! Loghub-2.0 conventions (`<*><*>` and `<*>.<*>` merge into `<*>`).
//!
//! # Identifiers
//!
//! A template's [`TemplateId`] is the FNV-1a hash of its text
//! ([`template_id`]), so every node and every run gives the same template the
//! same id. When a template generalises its text, and so its id, changes;
//! the old id is remembered as an alias and [`Miner::resolve`] maps it to the
//! current one.
//!
//! # Memory
//!
//! At most [`MinerConfig::max_templates`] templates are kept; beyond that the
//! least recently used clusters are evicted and counted in
//! [`Miner::evicted`]. Lines are cut to [`MinerConfig::max_line_bytes`] and
//! [`MinerConfig::max_tokens`], a cluster keeps at most
//! [`MinerConfig::max_templates_per_cluster`] templates, the exact-line cache
//! and the alias table are bounded too.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use wingman_protocol::logs::mask::{PLACEHOLDER, mask_into};

/// Tuning knobs of the [`Miner`]. The defaults are dataset-agnostic.
#[derive(Clone, Debug)]
pub struct MinerConfig {
    /// Maximum number of live templates (default 5000). Least recently used
    /// clusters are evicted beyond it.
    pub max_templates: usize,
    /// Minimum share of a cluster's literal positions that must match for a
    /// message to join it (default 0.5).
    pub similarity: f32,
    /// Distinct literal values after which a position becomes a variable
    /// (default 3).
    pub variable_after: usize,
    /// Distinct enum-like (SCREAMING_CASE) values a position may hold before
    /// it becomes a variable anyway (default 16).
    pub enum_limit: usize,
    /// Maximum templates one cluster may split into before its busiest open
    /// position is forced to a variable (default 64).
    pub max_templates_per_cluster: usize,
    /// Messages are cut to twice this many bytes before masking and to this
    /// many bytes after (default 4096).
    pub max_line_bytes: usize,
    /// Messages are cut to this many tokens; the tail becomes `<*>`
    /// (default 96).
    pub max_tokens: usize,
    /// Entries in the exact-line cache before it is cleared (default 65536).
    pub cache_entries: usize,
}

impl Default for MinerConfig {
    fn default() -> Self {
        Self {
            max_templates: 5000,
            similarity: 0.5,
            variable_after: 3,
            enum_limit: 16,
            max_templates_per_cluster: 64,
            max_line_bytes: 4096,
            max_tokens: 96,
            cache_entries: 65536,
        }
    }
}

/// Stable identifier of a template: the FNV-1a 64 hash of its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TemplateId(pub u64);

/// Result of [`Miner::observe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Current template of the message.
    pub id: TemplateId,
    /// True when this template text did not exist before this message
    /// (a new template, or an existing one that just generalised).
    pub is_new: bool,
}

/// FNV-1a 64 of `text`: the template id, equal on every node and run.
pub fn template_id(text: &str) -> TemplateId {
    TemplateId(fnv1a(text.as_bytes()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Fast non-cryptographic hash for tokens and lines (internal only; not
/// used for template ids).
fn fast_hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h: u64 = (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        for (d, s) in w.iter_mut().zip(rest) {
            *d = *s;
        }
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    h ^ (h >> 29)
}

/// Hasher for keys that already are hashes.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = n as u64;
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<IdentityHasher>>;

const WILD: u16 = u16::MAX;
const NO_LEAF: u32 = u32::MAX;

/// One distinct token value at a position.
#[derive(Clone, Debug)]
struct Value {
    hash: u64,
    text: Box<str>,
}

#[derive(Clone, Debug)]
struct Position {
    /// Distinct values (empty once the position is a variable).
    values: Vec<Value>,
    /// Distinct literal values that are not enum-like.
    plain: u32,
    /// True when some value is not exactly `<*>`.
    literal: bool,
    wild: bool,
    /// Template token of a variable position (`<*>`, `user=<*>`, ...).
    wild_text: Box<str>,
}

impl Position {
    fn new(text: &str, hash: u64) -> Self {
        let literal = text != PLACEHOLDER;
        Self {
            values: vec![Value {
                hash,
                text: text.into(),
            }],
            plain: u32::from(literal && !is_enum_like(text)),
            literal,
            wild: false,
            wild_text: Box::from(""),
        }
    }

    fn find(&self, hash: u64) -> Option<usize> {
        self.values.iter().position(|v| v.hash == hash)
    }
}

/// A concrete template inside a cluster: one value index per position
/// (`WILD` at variable positions).
#[derive(Clone, Debug)]
struct Leaf {
    choice: Vec<u16>,
    id: TemplateId,
    count: u64,
    /// Index of the leaf this one was merged into, or `NO_LEAF`.
    forward: u32,
}

#[derive(Clone, Debug, Default)]
struct Cluster {
    positions: Vec<Position>,
    /// Positions that are neither variables nor only `<*>` (the
    /// similarity denominator).
    literal_positions: u32,
    leaves: Vec<Leaf>,
    live_leaves: usize,
    last_seen: u64,
    generation: u32,
    alive: bool,
}

impl Cluster {
    fn recount(&mut self) {
        self.literal_positions = self
            .positions
            .iter()
            .filter(|p| !p.wild && p.literal)
            .count() as u32;
    }
}

#[derive(Clone, Copy, Debug)]
struct CacheEntry {
    cluster: u32,
    generation: u32,
    leaf: u32,
}

/// The online template miner. See the module documentation.
pub struct Miner {
    config: MinerConfig,
    clusters: Vec<Cluster>,
    free: Vec<u32>,
    by_len: FastMap<usize, Vec<u32>>,
    /// Inverted index: (token count, position, literal token) -> clusters
    /// holding that value there (kept exact: entries are removed when a
    /// position becomes a variable or a cluster is evicted).
    postings: FastMap<u64, Posting>,
    /// Scratch for candidate counting, indexed by cluster slot.
    stamps: Vec<(u32, u16, u16)>,
    /// Literal positions per cluster slot (dense copy for candidate scoring).
    lit: Vec<u32>,
    stamp: u32,
    candidates: Vec<u32>,
    cache: FastMap<u64, CacheEntry>,
    /// Live template texts by id, with the number of leaves using each.
    texts: HashMap<TemplateId, (Box<str>, u32)>,
    aliases: HashMap<TemplateId, TemplateId>,
    alias_order: VecDeque<TemplateId>,
    live_templates: usize,
    evicted: u64,
    tick: u64,
    masked: String,
    spans: Vec<(usize, usize, u64)>,
    text_buf: String,
}

impl Miner {
    /// Creates an empty miner.
    pub fn new(config: MinerConfig) -> Self {
        let mut config = config;
        config.max_templates = config.max_templates.max(1);
        config.max_tokens = config.max_tokens.clamp(1, usize::from(u16::MAX) - 1);
        config.max_line_bytes = config.max_line_bytes.max(16);
        config.variable_after = config.variable_after.max(1);
        config.max_templates_per_cluster = config.max_templates_per_cluster.max(1);
        config.enum_limit = config.enum_limit.min(usize::from(u16::MAX) - 2);
        Self {
            config,
            clusters: Vec::new(),
            free: Vec::new(),
            by_len: FastMap::default(),
            postings: FastMap::default(),
            stamps: Vec::new(),
            lit: Vec::new(),
            stamp: 0,
            candidates: Vec::new(),
            cache: FastMap::default(),
            texts: HashMap::new(),
            aliases: HashMap::new(),
            alias_order: VecDeque::new(),
            live_templates: 0,
            evicted: 0,
            tick: 0,
            masked: String::new(),
            spans: Vec::new(),
            text_buf: String::new(),
        }
    }

    /// The configuration in use (after clamping).
    pub fn config(&self) -> &MinerConfig {
        &self.config
    }

    /// Number of live templates.
    pub fn len(&self) -> usize {
        self.live_templates
    }

    /// True when no template is live.
    pub fn is_empty(&self) -> bool {
        self.live_templates == 0
    }

    /// Templates evicted because of [`MinerConfig::max_templates`].
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Text of a live template, with `<*>` for variables.
    pub fn template(&self, id: TemplateId) -> Option<&str> {
        self.texts.get(&id).map(|(t, _)| &**t)
    }

    /// Maps an id returned earlier to the id of the template that now covers
    /// the same messages (following generalisations). Unknown and evicted
    /// ids are returned unchanged.
    pub fn resolve(&self, id: TemplateId) -> TemplateId {
        let mut cur = id;
        for _ in 0..64 {
            if self.texts.contains_key(&cur) {
                return cur;
            }
            match self.aliases.get(&cur) {
                Some(&next) if next != cur => cur = next,
                _ => return cur,
            }
        }
        cur
    }

    /// Iterates over the live templates (id and text), in no particular
    /// order.
    pub fn templates(&self) -> impl Iterator<Item = (TemplateId, &str)> {
        self.texts.iter().map(|(id, (t, _))| (*id, &**t))
    }

    /// Assigns one message (without its header) to a template.
    pub fn observe(&mut self, content: &str) -> Observation {
        self.tick = self.tick.wrapping_add(1);
        // Only the head of a very long message is mined (bounds CPU too).
        let mut cut = content
            .len()
            .min(self.config.max_line_bytes.saturating_mul(2));
        while cut > 0 && !content.is_char_boundary(cut) {
            cut -= 1;
        }
        let content = content.get(..cut).unwrap_or("");
        let mut masked = std::mem::take(&mut self.masked);
        mask_into(content, &mut masked);
        if masked.len() > self.config.max_line_bytes {
            let mut cut = self.config.max_line_bytes;
            while cut > 0 && !masked.is_char_boundary(cut) {
                cut -= 1;
            }
            masked.truncate(cut);
        }
        let line_hash = fast_hash(masked.as_bytes());
        let obs = match self.cached(line_hash) {
            Some(obs) => obs,
            None => self.observe_slow(&masked, line_hash),
        };
        self.masked = masked;
        obs
    }

    fn cached(&mut self, line_hash: u64) -> Option<Observation> {
        let entry = *self.cache.get(&line_hash)?;
        let tick = self.tick;
        let cluster = self.clusters.get_mut(entry.cluster as usize)?;
        if !cluster.alive || cluster.generation != entry.generation {
            return None;
        }
        let leaf_idx = follow(&cluster.leaves, entry.leaf)?;
        cluster.last_seen = tick;
        let leaf = cluster.leaves.get_mut(leaf_idx as usize)?;
        leaf.count += 1;
        Some(Observation {
            id: leaf.id,
            is_new: false,
        })
    }

    fn observe_slow(&mut self, masked: &str, line_hash: u64) -> Observation {
        // Tokenise.
        self.spans.clear();
        let bytes = masked.as_bytes();
        let mut pos = 0usize;
        while pos < bytes.len() {
            while pos < bytes.len() && bytes[pos] == b' ' {
                pos += 1;
            }
            if pos >= bytes.len() {
                break;
            }
            let s = pos;
            while pos < bytes.len() && bytes[pos] != b' ' {
                pos += 1;
            }
            if self.spans.len() + 1 == self.config.max_tokens && pos < bytes.len() {
                // Fold the rest of the line into one variable token.
                self.spans
                    .push((usize::MAX, usize::MAX, fast_hash(PLACEHOLDER.as_bytes())));
                break;
            }
            self.spans.push((s, pos, fast_hash(&bytes[s..pos])));
        }
        let spans = std::mem::take(&mut self.spans);
        let tokens: Vec<&str> = spans
            .iter()
            .map(|&(s, e, _)| masked.get(s..e).unwrap_or(PLACEHOLDER))
            .collect();
        let hashes: Vec<u64> = spans.iter().map(|&(_, _, h)| h).collect();
        let n = tokens.len();

        let best = self.best_cluster(&tokens, &hashes);
        let (cluster_idx, _, is_new) = match best {
            Some(ci) => self.absorb(ci, &tokens, &hashes),
            None => self.create_cluster(n, &tokens, &hashes),
        };
        self.spans = spans;
        self.enforce_capacity(cluster_idx);

        // Locate the line's template after all merges of this call.
        let Some((leaf_idx, id, generation)) = self.locate(cluster_idx, &hashes) else {
            return Observation {
                id: TemplateId(0),
                is_new,
            };
        };
        if self.cache.len() >= self.config.cache_entries.max(1) {
            self.cache.clear();
        }
        self.cache.insert(
            line_hash,
            CacheEntry {
                cluster: cluster_idx,
                generation,
                leaf: leaf_idx,
            },
        );
        Observation { id, is_new }
    }

    /// Finds the live template of cluster `ci` that covers a line with the
    /// given token hashes: (leaf index, id, cluster generation).
    fn locate(&self, ci: u32, hashes: &[u64]) -> Option<(u32, TemplateId, u32)> {
        let c = self.clusters.get(ci as usize)?;
        if !c.alive {
            return None;
        }
        let mut choice = Vec::with_capacity(hashes.len());
        for (p, &h) in c.positions.iter().zip(hashes) {
            if p.wild {
                choice.push(WILD);
            } else {
                choice.push(p.find(h)? as u16);
            }
        }
        let li = c
            .leaves
            .iter()
            .position(|l| l.forward == NO_LEAF && l.choice == choice)?;
        let leaf = c.leaves.get(li)?;
        Some((li as u32, leaf.id, c.generation))
    }

    /// Finds the most similar cluster with the same token count.
    ///
    /// Similarity = literal tokens of the line found at the same position
    /// in the cluster / literal positions of the cluster. Candidates come
    /// from the inverted index, so only clusters sharing a literal token at
    /// some position are examined.
    fn best_cluster(&mut self, tokens: &[&str], hashes: &[u64]) -> Option<u32> {
        let n = tokens.len();
        let threshold = self.config.similarity;
        let line_literals = tokens.iter().filter(|t| **t != PLACEHOLDER).count();
        if line_literals == 0 {
            // Only clusters without literal positions can match.
            let bucket = self.by_len.get(&n)?;
            return bucket.iter().copied().find(|&ci| {
                self.clusters
                    .get(ci as usize)
                    .is_some_and(|c| c.alive && c.literal_positions == 0)
            });
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.stamps.iter_mut().for_each(|s| *s = (0, 0, 0));
            self.stamp = 1;
        }
        if self.stamps.len() < self.clusters.len() {
            self.stamps.resize(self.clusters.len(), (0, 0, 0));
        }
        self.candidates.clear();
        let stamp = self.stamp;
        // Very common tokens (long posting lists) are deferred: they are
        // only counted for clusters found through rarer tokens, unless the
        // line has nothing rarer.
        let mut deferred: Vec<u64> = Vec::new();
        for (i, (&t, &h)) in tokens.iter().zip(hashes).enumerate() {
            if t == PLACEHOLDER {
                continue;
            }
            let key = posting_key(n, i, h);
            let Some(list) = self.postings.get(&key) else {
                continue;
            };
            let list = list.as_slice();
            if list.len() > COMMON_TOKEN {
                deferred.push(key);
                continue;
            }
            count_postings(list, stamp, &mut self.stamps, &mut self.candidates);
        }
        if self.candidates.is_empty() {
            for key in &deferred {
                if let Some(list) = self.postings.get(key) {
                    count_postings(
                        list.as_slice(),
                        stamp,
                        &mut self.stamps,
                        &mut self.candidates,
                    );
                }
            }
        } else if !deferred.is_empty() {
            for (i, (&t, &h)) in tokens.iter().zip(hashes).enumerate() {
                if t == PLACEHOLDER || !deferred.contains(&posting_key(n, i, h)) {
                    continue;
                }
                for &ci in &self.candidates {
                    let has = self
                        .clusters
                        .get(ci as usize)
                        .and_then(|c| c.positions.get(i))
                        .is_some_and(|p| !p.wild && p.find(h).is_some());
                    if has && let Some(st) = self.stamps.get_mut(ci as usize) {
                        st.1 = st.1.saturating_add(1);
                    }
                }
            }
        }
        let mut best: Option<(f32, u16, u32)> = None;
        for &ci in self.candidates.iter() {
            let (Some(&lit), Some(st)) = (self.lit.get(ci as usize), self.stamps.get(ci as usize))
            else {
                continue;
            };
            let matched = st.1;
            if lit == 0 || matched == 0 {
                continue;
            }
            let sim = f32::from(matched) / lit as f32;
            if sim + f32::EPSILON < threshold {
                continue;
            }
            let better = match best {
                None => true,
                Some((bs, bm, _)) => {
                    sim > bs + f32::EPSILON || ((sim - bs).abs() <= f32::EPSILON && matched > bm)
                }
            };
            if better {
                best = Some((sim, matched, ci));
            }
        }
        best.map(|(_, _, ci)| ci)
    }

    /// Adds cluster `ci` to the inverted index for a literal value.
    fn index_value(&mut self, ci: u32, n: usize, i: usize, h: u64, text: &str) {
        if text != PLACEHOLDER {
            match self.postings.entry(posting_key(n, i, h)) {
                Entry::Occupied(mut e) => e.get_mut().push(ci),
                Entry::Vacant(e) => {
                    e.insert(Posting::One(ci));
                }
            }
        }
    }

    /// Removes cluster `ci` from the inverted index for the literal values
    /// of position `i`.
    fn unindex_position(&mut self, ci: u32, n: usize, i: usize) {
        let Some(p) = self
            .clusters
            .get(ci as usize)
            .and_then(|c| c.positions.get(i))
        else {
            return;
        };
        if p.wild {
            return;
        }
        for v in &p.values {
            if &*v.text == PLACEHOLDER {
                continue;
            }
            let key = posting_key(n, i, v.hash);
            if self
                .postings
                .get_mut(&key)
                .is_some_and(|list| list.remove(ci))
            {
                self.postings.remove(&key);
            }
        }
    }

    /// Copies a cluster's literal-position count into the dense array.
    fn sync_lit(&mut self, ci: u32) {
        let lit = self
            .clusters
            .get(ci as usize)
            .filter(|c| c.alive)
            .map_or(0, |c| c.literal_positions);
        let idx = ci as usize;
        if self.lit.len() <= idx {
            self.lit.resize(idx + 1, 0);
        }
        if let Some(slot) = self.lit.get_mut(idx) {
            *slot = lit;
        }
    }

    fn create_cluster(&mut self, n: usize, tokens: &[&str], hashes: &[u64]) -> (u32, u32, bool) {
        let positions: Vec<Position> = tokens
            .iter()
            .zip(hashes)
            .map(|(t, &h)| Position::new(t, h))
            .collect();
        let mut cluster = Cluster {
            positions,
            literal_positions: 0,
            leaves: Vec::new(),
            live_leaves: 0,
            last_seen: self.tick,
            generation: 0,
            alive: true,
        };
        cluster.recount();
        let idx = match self.free.pop() {
            Some(i) => {
                let generation = self
                    .clusters
                    .get(i as usize)
                    .map(|c| c.generation.wrapping_add(1))
                    .unwrap_or(0);
                if let Some(slot) = self.clusters.get_mut(i as usize) {
                    *slot = Cluster {
                        generation,
                        ..cluster
                    };
                }
                i
            }
            None => {
                self.clusters.push(cluster);
                (self.clusters.len() - 1) as u32
            }
        };
        self.by_len.entry(n).or_default().push(idx);
        for (i, (t, &h)) in tokens.iter().zip(hashes).enumerate() {
            self.index_value(idx, n, i, h, t);
        }
        self.sync_lit(idx);
        let choice = vec![0u16; n];
        let (leaf, is_new) = self.add_leaf(idx, choice);
        (idx, leaf, is_new)
    }

    /// Adds `tokens` to cluster `ci`, updating positions and leaves.
    fn absorb(&mut self, ci: u32, tokens: &[&str], hashes: &[u64]) -> (u32, u32, bool) {
        let variable_after = self.config.variable_after;
        let enum_limit = self.config.enum_limit;
        let tick = self.tick;
        let mut to_wild: Vec<usize> = Vec::new();
        let mut added: Vec<usize> = Vec::new();
        let mut wild_changed = false;
        let mut choice = Vec::with_capacity(tokens.len());
        {
            let Some(c) = self.clusters.get_mut(ci as usize) else {
                return (ci, NO_LEAF, false);
            };
            c.last_seen = tick;
            for (i, (p, (&t, &h))) in c
                .positions
                .iter_mut()
                .zip(tokens.iter().zip(hashes))
                .enumerate()
            {
                if p.wild {
                    if generalise(&mut p.wild_text, t) {
                        wild_changed = true;
                    }
                    choice.push(WILD);
                    continue;
                }
                match p.find(h) {
                    Some(v) => choice.push(v as u16),
                    None => {
                        let literal = t != PLACEHOLDER;
                        p.literal |= literal;
                        // `()` next to `(<*>)`: the variable was empty.
                        let empty_variant = p.values.iter().any(|v| is_empty_variant(&v.text, t));
                        p.values.push(Value {
                            hash: h,
                            text: t.into(),
                        });
                        p.plain = count_plain(&p.values);
                        choice.push((p.values.len() - 1) as u16);
                        added.push(i);
                        // The first token usually names the event: it is
                        // only generalised when it has many values.
                        let by_plain = i > 0 && p.plain as usize >= variable_after;
                        if by_plain || empty_variant || p.values.len() > enum_limit {
                            to_wild.push(i);
                        }
                    }
                }
            }
            c.recount();
        }
        let n = tokens.len();
        for &i in &added {
            if let (Some(&t), Some(&h)) = (tokens.get(i), hashes.get(i)) {
                self.index_value(ci, n, i, h, t);
            }
        }
        self.sync_lit(ci);
        if wild_changed {
            self.refresh_leaves(ci);
        }
        for &i in &to_wild {
            self.make_wild(ci, i);
            if let Some(slot) = choice.get_mut(i) {
                *slot = WILD;
            }
        }
        // Later wild conversions may have touched earlier choices.
        if let Some(c) = self.clusters.get(ci as usize) {
            for (slot, p) in choice.iter_mut().zip(&c.positions) {
                if p.wild {
                    *slot = WILD;
                }
            }
        }
        let existing = self.clusters.get(ci as usize).and_then(|c| {
            c.leaves
                .iter()
                .position(|l| l.forward == NO_LEAF && l.choice == choice)
        });
        match existing {
            Some(li) => {
                let mut is_new = false;
                if let Some(l) = self
                    .clusters
                    .get_mut(ci as usize)
                    .and_then(|c| c.leaves.get_mut(li))
                {
                    l.count += 1;
                    // A leaf whose id changed during this call is new text.
                    is_new = wild_changed || !to_wild.is_empty();
                }
                (ci, li as u32, is_new)
            }
            None => {
                let (li, is_new) = self.add_leaf(ci, choice.clone());
                if !self.split_if_needed(ci) {
                    return (ci, li, is_new);
                }
                // Leaves were merged (and maybe compacted): find ours again.
                let li = self
                    .clusters
                    .get(ci as usize)
                    .and_then(|c| {
                        for (slot, p) in choice.iter_mut().zip(&c.positions) {
                            if p.wild {
                                *slot = WILD;
                            }
                        }
                        c.leaves
                            .iter()
                            .position(|l| l.forward == NO_LEAF && l.choice == choice)
                    })
                    .map_or(NO_LEAF, |i| i as u32);
                (ci, li, true)
            }
        }
    }

    /// Forces open positions to variables while the cluster has too many
    /// templates.
    /// Returns true when it changed the cluster.
    fn split_if_needed(&mut self, ci: u32) -> bool {
        let cap = self.config.max_templates_per_cluster;
        let mut changed = false;
        for _ in 0..8 {
            let Some(c) = self.clusters.get(ci as usize) else {
                return changed;
            };
            if c.live_leaves <= cap {
                return changed;
            }
            let busiest = c
                .positions
                .iter()
                .enumerate()
                .filter(|(_, p)| !p.wild && p.values.len() > 1)
                .max_by_key(|(_, p)| p.values.len())
                .map(|(i, _)| i);
            match busiest {
                Some(i) => {
                    self.make_wild(ci, i);
                    changed = true;
                }
                None => return changed,
            }
        }
        changed
    }

    /// Adds a leaf for `choice` in cluster `ci`; returns (index, is_new).
    fn add_leaf(&mut self, ci: u32, choice: Vec<u16>) -> (u32, bool) {
        let text = match self.clusters.get(ci as usize) {
            Some(c) => leaf_text(c, &choice, &mut self.text_buf),
            None => return (NO_LEAF, false),
        };
        let id = template_id(&text);
        let is_new = self.retain_text(id, &text);
        let Some(c) = self.clusters.get_mut(ci as usize) else {
            return (NO_LEAF, false);
        };
        c.leaves.push(Leaf {
            choice,
            id,
            count: 1,
            forward: NO_LEAF,
        });
        c.live_leaves += 1;
        self.live_templates += 1;
        ((c.leaves.len() - 1) as u32, is_new)
    }

    /// Registers one more user of template `id`; true if it is new.
    fn retain_text(&mut self, id: TemplateId, text: &str) -> bool {
        match self.texts.get_mut(&id) {
            Some((_, n)) => {
                *n += 1;
                false
            }
            None => {
                self.texts.insert(id, (text.into(), 1));
                true
            }
        }
    }

    fn release_text(&mut self, id: TemplateId) {
        if let Some((_, n)) = self.texts.get_mut(&id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.texts.remove(&id);
            }
        }
    }

    fn add_alias(&mut self, from: TemplateId, to: TemplateId) {
        if from == to {
            return;
        }
        if self.aliases.insert(from, to).is_none() {
            self.alias_order.push_back(from);
        }
        let cap = self.config.max_templates.saturating_mul(4).max(1024);
        while self.alias_order.len() > cap {
            if let Some(old) = self.alias_order.pop_front() {
                self.aliases.remove(&old);
            }
        }
    }

    /// Turns position `pos` of cluster `ci` into a variable and merges the
    /// templates that now coincide.
    fn make_wild(&mut self, ci: u32, pos: usize) {
        let n = self
            .clusters
            .get(ci as usize)
            .map_or(0, |c| c.positions.len());
        self.unindex_position(ci, n, pos);
        {
            let Some(c) = self.clusters.get_mut(ci as usize) else {
                return;
            };
            let Some(p) = c.positions.get_mut(pos) else {
                return;
            };
            if p.wild {
                return;
            }
            let mut text = String::new();
            let mut first = true;
            for v in &p.values {
                if first {
                    text.push_str(&v.text);
                    first = false;
                } else {
                    let mut boxed: Box<str> = text.as_str().into();
                    generalise(&mut boxed, &v.text);
                    text = boxed.into();
                }
            }
            if !text.contains(PLACEHOLDER) {
                text = PLACEHOLDER.to_string();
            }
            p.wild = true;
            p.wild_text = text.into();
            p.values = Vec::new();
            c.recount();
            for l in c.leaves.iter_mut() {
                if let Some(s) = l.choice.get_mut(pos) {
                    *s = WILD;
                }
            }
        }
        self.sync_lit(ci);
        self.refresh_leaves(ci);
    }

    /// Recomputes leaf texts and ids of cluster `ci`, merging leaves with
    /// equal choices and recording aliases for changed ids.
    fn refresh_leaves(&mut self, ci: u32) {
        let Some(mut c) = self.clusters.get_mut(ci as usize).map(std::mem::take) else {
            return;
        };
        let mut changes: Vec<(TemplateId, TemplateId, String)> = Vec::new();
        let mut releases: Vec<TemplateId> = Vec::new();
        let n = c.leaves.len();
        for i in 0..n {
            if c.leaves.get(i).is_none_or(|l| l.forward != NO_LEAF) {
                continue;
            }
            // Merge into an earlier live leaf with the same choice.
            let target = (0..i).find(|&j| {
                c.leaves
                    .get(j)
                    .zip(c.leaves.get(i))
                    .is_some_and(|(a, b)| a.forward == NO_LEAF && a.choice == b.choice)
            });
            if let Some(j) = target {
                let (old_id, count) = match c.leaves.get(i) {
                    Some(l) => (l.id, l.count),
                    None => continue,
                };
                if let Some(l) = c.leaves.get_mut(i) {
                    l.forward = j as u32;
                }
                if let Some(t) = c.leaves.get_mut(j) {
                    t.count += count;
                }
                c.live_leaves = c.live_leaves.saturating_sub(1);
                self.live_templates = self.live_templates.saturating_sub(1);
                releases.push(old_id);
                // Alias to the target's (possibly updated) id later.
                changes.push((old_id, TemplateId(j as u64), String::new()));
                continue;
            }
            let choice = match c.leaves.get(i) {
                Some(l) => l.choice.clone(),
                None => continue,
            };
            let text = leaf_text(&c, &choice, &mut self.text_buf);
            let id = template_id(&text);
            if let Some(l) = c.leaves.get_mut(i)
                && l.id != id
            {
                changes.push((l.id, id, text));
                l.id = id;
            }
        }
        // Apply text registrations: new ids first, then releases.
        for (old, new, text) in &changes {
            if !text.is_empty() {
                self.retain_text(*new, text);
                self.release_text(*old);
                self.add_alias(*old, *new);
            }
        }
        for (old, target, text) in &changes {
            if text.is_empty() {
                let tid = c.leaves.get(target.0 as usize).map(|l| l.id);
                if let Some(tid) = tid {
                    self.add_alias(*old, tid);
                }
            }
        }
        for id in releases {
            self.release_text(id);
        }
        // Drop merged-away leaves once they dominate; cached positions into
        // this cluster become stale, so its generation changes.
        if c.leaves.len() > 2 * c.live_leaves + 16 {
            c.leaves.retain(|l| l.forward == NO_LEAF);
            c.generation = c.generation.wrapping_add(1);
        }
        if let Some(slot) = self.clusters.get_mut(ci as usize) {
            *slot = c;
        }
    }

    /// Evicts least recently used clusters while over the template cap.
    fn enforce_capacity(&mut self, keep: u32) {
        if self.live_templates <= self.config.max_templates {
            return;
        }
        // Evict in batches of about 1/16 of the cap to amortise the scan.
        let target = self
            .config
            .max_templates
            .saturating_sub(self.config.max_templates / 16);
        let mut order: Vec<(u64, u32)> = self
            .clusters
            .iter()
            .enumerate()
            .filter(|(i, c)| c.alive && *i as u32 != keep)
            .map(|(i, c)| (c.last_seen, i as u32))
            .collect();
        order.sort_unstable();
        for (_, ci) in order {
            if self.live_templates <= target {
                break;
            }
            self.evict(ci);
        }
        // A single cluster may still hold too many templates.
        for _ in 0..u16::MAX {
            if self.live_templates <= self.config.max_templates {
                break;
            }
            let busiest = self.clusters.get(keep as usize).and_then(|c| {
                c.positions
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| !p.wild && p.values.len() > 1)
                    .max_by_key(|(_, p)| p.values.len())
                    .map(|(i, _)| i)
            });
            match busiest {
                Some(i) => self.make_wild(keep, i),
                None => break,
            }
        }
    }

    fn evict(&mut self, ci: u32) {
        let n = self
            .clusters
            .get(ci as usize)
            .map_or(0, |c| c.positions.len());
        for i in 0..n {
            self.unindex_position(ci, n, i);
        }
        let (ids, n) = {
            let Some(c) = self.clusters.get_mut(ci as usize) else {
                return;
            };
            if !c.alive {
                return;
            }
            c.alive = false;
            let ids: Vec<TemplateId> = c
                .leaves
                .iter()
                .filter(|l| l.forward == NO_LEAF)
                .map(|l| l.id)
                .collect();
            let n = c.positions.len();
            c.positions = Vec::new();
            c.leaves = Vec::new();
            c.live_leaves = 0;
            (ids, n)
        };
        for id in &ids {
            self.release_text(*id);
        }
        self.live_templates = self.live_templates.saturating_sub(ids.len());
        self.evicted += ids.len() as u64;
        if let Some(list) = self.by_len.get_mut(&n) {
            list.retain(|&x| x != ci);
        }
        self.sync_lit(ci);
        self.free.push(ci);
    }
}

/// Clusters holding one (position, token); most tokens belong to a single
/// cluster, which needs no allocation.
#[derive(Clone, Debug)]
enum Posting {
    One(u32),
    Many(Vec<u32>),
}

impl Posting {
    fn as_slice(&self) -> &[u32] {
        match self {
            Posting::One(ci) => std::slice::from_ref(ci),
            Posting::Many(v) => v,
        }
    }

    fn push(&mut self, ci: u32) {
        match self {
            Posting::One(first) => *self = Posting::Many(vec![*first, ci]),
            Posting::Many(v) => v.push(ci),
        }
    }

    /// Removes `ci`; returns true when the list became empty.
    fn remove(&mut self, ci: u32) -> bool {
        match self {
            Posting::One(x) => *x == ci,
            Posting::Many(v) => {
                if let Some(at) = v.iter().position(|&x| x == ci) {
                    v.swap_remove(at);
                }
                if let [only] = v.as_slice() {
                    *self = Posting::One(*only);
                    return false;
                }
                v.is_empty()
            }
        }
    }
}

/// Posting lists longer than this are treated as common tokens.
const COMMON_TOKEN: usize = 128;

/// Counts one posting list into the candidate stamps.
fn count_postings(
    list: &[u32],
    stamp: u32,
    stamps: &mut [(u32, u16, u16)],
    candidates: &mut Vec<u32>,
) {
    for &ci in list {
        if let Some(st) = stamps.get_mut(ci as usize) {
            if st.0 != stamp {
                *st = (stamp, 0, 0);
                candidates.push(ci);
            }
            st.1 = st.1.saturating_add(1);
        }
    }
}

/// Key of the inverted index.
fn posting_key(n: usize, i: usize, h: u64) -> u64 {
    let k = h
        ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (i as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    (k ^ (k >> 31)).wrapping_mul(0xff51_afd7_ed55_8ccd)
}

/// Follows merge forwarding from leaf `li` to its live leaf.
fn follow(leaves: &[Leaf], li: u32) -> Option<u32> {
    let mut cur = li;
    for _ in 0..=leaves.len() {
        let l = leaves.get(cur as usize)?;
        if l.forward == NO_LEAF {
            return Some(cur);
        }
        cur = l.forward;
    }
    None
}

/// Builds the template text of a leaf.
fn leaf_text(c: &Cluster, choice: &[u16], buf: &mut String) -> String {
    buf.clear();
    for (i, (p, &ch)) in c.positions.iter().zip(choice).enumerate() {
        if i > 0 {
            buf.push(' ');
        }
        if p.wild || ch == WILD {
            if p.wild_text.is_empty() {
                buf.push_str(PLACEHOLDER);
            } else {
                buf.push_str(&p.wild_text);
            }
        } else {
            match p.values.get(ch as usize) {
                Some(v) => buf.push_str(&v.text),
                None => buf.push_str(PLACEHOLDER),
            }
        }
    }
    canonical(buf)
}

/// Applies the Loghub WV/CV/DV merges to a template text.
fn canonical(text: &str) -> String {
    let mut s = text.to_string();
    wingman_protocol::logs::mask::merge_placeholders(&mut s);
    loop {
        let before = s.len();
        while s.contains("<*>.<*>") {
            s = s.replace("<*>.<*>", PLACEHOLDER);
        }
        while s.contains("<*><*>") {
            s = s.replace("<*><*>", PLACEHOLDER);
        }
        if s.len() == before {
            return s;
        }
    }
}

/// Widens a variable token so that it also covers `token`: keeps the
/// common prefix and suffix (cut at punctuation) around one `<*>`.
/// Returns true when the text changed.
fn generalise(wild: &mut Box<str>, token: &str) -> bool {
    if wild.is_empty() {
        *wild = Box::from(PLACEHOLDER);
        return true;
    }
    let w = wild.as_bytes();
    let t = token.as_bytes();
    if w == t {
        return false;
    }
    // Current pattern: prefix <*> suffix (when it has one placeholder).
    let (wp, ws) = match find_placeholder(w) {
        Some(at) => (&w[..at], &w[at + PLACEHOLDER.len()..]),
        None => (w, &w[w.len()..]),
    };
    if find_placeholder(w).is_some()
        && t.len() >= wp.len() + ws.len()
        && t.starts_with(wp)
        && t.ends_with(ws)
    {
        return false;
    }
    let full_w = w;
    let mut p = common_prefix(full_w, t);
    // Cut the prefix back to punctuation, never inside a placeholder.
    while p > 0
        && full_w
            .get(p - 1)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        p -= 1;
    }
    while p > 0
        && full_w
            .get(..p)
            .is_some_and(|x| x.ends_with(b"<") || x.ends_with(b"<*"))
    {
        p -= 1;
    }
    let mut s = common_suffix(full_w, t);
    let max_s = full_w.len().min(t.len()).saturating_sub(p);
    s = s.min(max_s);
    while s > 0
        && full_w
            .get(full_w.len() - s)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        s -= 1;
    }
    while s > 0
        && full_w
            .get(full_w.len() - s..)
            .is_some_and(|x| x.starts_with(b">") || x.starts_with(b"*>"))
    {
        s -= 1;
    }
    let prefix = full_w.get(..p).unwrap_or(&[]);
    let suffix = full_w.get(full_w.len() - s..).unwrap_or(&[]);
    let mut out = Vec::with_capacity(p + s + 3);
    out.extend_from_slice(prefix);
    out.extend_from_slice(PLACEHOLDER.as_bytes());
    out.extend_from_slice(suffix);
    let new = String::from_utf8_lossy(&out).into_owned();
    let new = canonical(&new);
    if *new == **wild {
        return false;
    }
    *wild = new.into();
    true
}

fn find_placeholder(b: &[u8]) -> Option<usize> {
    b.windows(3).position(|w| w == PLACEHOLDER.as_bytes())
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

/// True when one of `a` and `b` has placeholders and equals the other once
/// its placeholders are removed (`(<*>)` and `()`).
fn is_empty_variant(a: &str, b: &str) -> bool {
    let (pat, lit) = match (a.contains(PLACEHOLDER), b.contains(PLACEHOLDER)) {
        (true, false) => (a, b),
        (false, true) => (b, a),
        _ => return false,
    };
    if pat.len() <= PLACEHOLDER.len() || pat.len() - PLACEHOLDER.len() > lit.len() + 64 {
        return false;
    }
    let mut rest = lit;
    for part in pat.split(PLACEHOLDER) {
        match rest.strip_prefix(part) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

/// Counts the values that make a position look variable: literal values
/// that are not enum-like, ignoring `<*>` and patterns such as `user=<*>`
/// that merely cover another value (`user=guest`).
fn count_plain(values: &[Value]) -> u32 {
    let mut n = 0u32;
    for v in values {
        let t = &*v.text;
        if t == PLACEHOLDER || is_enum_like(t) {
            continue;
        }
        if t.contains(PLACEHOLDER)
            && values
                .iter()
                .any(|o| !o.text.contains(PLACEHOLDER) && covers(t, &o.text))
        {
            continue;
        }
        n += 1;
    }
    n
}

/// True when pattern `pat` (with `<*>` matching any text) matches `lit`.
fn covers(pat: &str, lit: &str) -> bool {
    let mut parts = pat.split(PLACEHOLDER);
    let Some(first) = parts.next() else {
        return false;
    };
    let Some(mut rest) = lit.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let last = parts.len().saturating_sub(1);
    for (k, part) in parts.iter().enumerate() {
        if k == last {
            return rest.len() >= part.len() && rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = rest.get(at + part.len()..).unwrap_or(""),
            None => return false,
        }
    }
    rest.is_empty()
}

/// Enum-like values: the last segment (after `.`, `:`, `=` or `/`) is
/// SCREAMING_CASE with at least two letters, e.g. `RUNNING`,
/// `action.SCREEN_ON`.
fn is_enum_like(token: &str) -> bool {
    let core = token.trim_end_matches([',', '.', ';', ')', ']', ':']);
    let seg = core
        .rsplit(['.', ':', '=', '/', '(', '['])
        .next()
        .unwrap_or(core);
    let mut letters = 0usize;
    for b in seg.bytes() {
        if b.is_ascii_uppercase() {
            letters += 1;
        } else if !(b.is_ascii_digit() || b == b'_') {
            return false;
        }
    }
    letters >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that the inverted index holds exactly the literal values of
    /// the live clusters and that the dense literal counts agree.
    fn check_index(m: &Miner) {
        let mut expected: Vec<(u64, u32)> = Vec::new();
        for (ci, c) in m.clusters.iter().enumerate() {
            if !c.alive {
                assert_eq!(m.lit.get(ci).copied().unwrap_or(0), 0);
                continue;
            }
            assert_eq!(m.lit[ci], c.literal_positions);
            let lit = c.positions.iter().filter(|p| !p.wild && p.literal).count() as u32;
            assert_eq!(c.literal_positions, lit);
            let n = c.positions.len();
            for (i, p) in c.positions.iter().enumerate() {
                if p.wild {
                    continue;
                }
                for v in &p.values {
                    if &*v.text != PLACEHOLDER {
                        expected.push((posting_key(n, i, v.hash), ci as u32));
                    }
                }
            }
        }
        let mut actual: Vec<(u64, u32)> = m
            .postings
            .iter()
            .flat_map(|(k, list)| list.as_slice().iter().map(move |&ci| (*k, ci)))
            .collect();
        expected.sort_unstable();
        actual.sort_unstable();
        assert_eq!(expected, actual);
    }

    #[test]
    fn inverted_index_stays_exact() {
        let config = MinerConfig {
            max_templates: 40,
            ..MinerConfig::default()
        };
        let mut m = Miner::new(config);
        let words = [
            "ab", "cd", "ef", "gh", "ij", "RUN", "STOP", "x1", "y2", "zz",
        ];
        let mut seed = 0x5eed_u64;
        for round in 0..4000u32 {
            let mut line = String::new();
            let len = 2 + (seed % 5) as usize;
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                line.push_str(words[(seed % 10) as usize]);
                if seed.is_multiple_of(7) {
                    line.push_str(&(seed % 100).to_string());
                }
                line.push(' ');
            }
            let obs = m.observe(&line);
            assert!(m.template(obs.id).is_some(), "{line}");
            if round.is_multiple_of(97) {
                check_index(&m);
            }
        }
        check_index(&m);
    }

    fn text_of(m: &Miner, id: TemplateId) -> String {
        m.template(m.resolve(id)).unwrap_or("<none>").to_string()
    }

    #[test]
    fn template_ids_are_fnv1a() {
        assert_eq!(template_id(""), TemplateId(0xcbf2_9ce4_8422_2325));
        assert_eq!(template_id("a"), TemplateId(0xaf63_dc4c_8601_ec8c));
        assert_eq!(template_id("x <*>"), template_id("x <*>"));
    }

    #[test]
    fn masked_variables_group_immediately() {
        let mut m = Miner::new(MinerConfig::default());
        let a = m.observe("Connection from 10.0.0.1 port 2201 closed");
        let b = m.observe("Connection from 10.0.0.9 port 40123 closed");
        assert!(a.is_new);
        assert!(!b.is_new);
        assert_eq!(a.id, b.id);
        assert_eq!(
            m.template(a.id),
            Some("Connection from <*> port <*> closed")
        );
        assert_eq!(m.len(), 1);
        assert!(!m.is_empty());
    }

    #[test]
    fn varying_words_generalise_after_a_few_values() {
        let mut m = Miner::new(MinerConfig::default());
        let users = ["alice", "bob", "carol", "dave"];
        let ids: Vec<TemplateId> = users
            .iter()
            .map(|u| m.observe(&format!("Invalid user {u} from 10.1.1.1")).id)
            .collect();
        // The first two users are still separate templates when seen...
        assert_ne!(ids[0], ids[1]);
        // ...but every earlier id resolves to the generalised template.
        for id in &ids {
            assert_eq!(text_of(&m, *id), "Invalid user <*> from <*>");
        }
        assert_eq!(m.resolve(ids[0]), ids[3]);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn key_value_prefix_is_kept() {
        let mut m = Miner::new(MinerConfig::default());
        for u in ["ann", "ben", "cid", "dan"] {
            m.observe(&format!("login failed; user={u} tty=ssh"));
        }
        let id = m.observe("login failed; user=eve tty=ssh").id;
        assert_eq!(m.template(id), Some("login failed; user=<*> tty=ssh"));
    }

    #[test]
    fn enum_values_stay_separate() {
        let mut m = Miner::new(MinerConfig::default());
        let states = [
            ("NEW", "RUNNING"),
            ("RUNNING", "FAILED"),
            ("RUNNING", "SUCCEEDED"),
            ("NEW", "KILLED"),
        ];
        let mut ids = Vec::new();
        for _ in 0..3 {
            for (a, b) in states {
                ids.push(
                    m.observe(&format!("task_0001_{a}{b}99 moved from {a} to {b}"))
                        .id,
                );
            }
        }
        let texts: Vec<String> = ids.iter().map(|&id| text_of(&m, id)).collect();
        assert_eq!(texts[0], "<*> moved from NEW to RUNNING");
        assert_eq!(texts[1], "<*> moved from RUNNING to FAILED");
        assert_eq!(texts[0], texts[4]);
        let mut distinct = texts.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 4);
    }

    #[test]
    fn first_token_is_kept_constant() {
        let mut m = Miner::new(MinerConfig::default());
        let a = m.observe("cupsd startup succeeded").id;
        let b = m.observe("klogd startup succeeded").id;
        let c = m.observe("sshd startup succeeded").id;
        let d = m.observe("crond startup succeeded").id;
        assert_eq!(text_of(&m, a), "cupsd startup succeeded");
        assert_eq!(text_of(&m, d), "crond startup succeeded");
        assert_ne!(m.resolve(b), m.resolve(c));
    }

    #[test]
    fn empty_variable_matches_pattern() {
        let mut m = Miner::new(MinerConfig::default());
        let a = m
            .observe("connection from 10.2.3.4 (host7.example.com) at 10:00:01")
            .id;
        let b = m.observe("connection from 10.2.3.5 () at 10:00:02").id;
        assert_eq!(m.resolve(a), m.resolve(b));
        assert_eq!(text_of(&m, b), "connection from <*> (<*>) at <*>:<*>:<*>");
    }

    #[test]
    fn different_messages_stay_apart() {
        let mut m = Miner::new(MinerConfig::default());
        let a = m.observe("onStandStepChanged 3579").id;
        let b = m.observe("theDayChanged 12").id;
        let c = m.observe("Received block of size 20 from peer").id;
        let d = m.observe("Receiving block of size 20 from peer").id;
        assert_ne!(m.resolve(a), m.resolve(b));
        assert_ne!(m.resolve(c), m.resolve(d));
    }

    #[test]
    fn capacity_is_enforced_and_counted() {
        let config = MinerConfig {
            max_templates: 10,
            ..MinerConfig::default()
        };
        let mut m = Miner::new(config);
        let mut last = TemplateId(0);
        for i in 0..200usize {
            last = m.observe(&format!("w{i}a w{i}b happened at w{i}c")).id;
            assert!(m.len() <= 10, "len {} over cap", m.len());
        }
        assert!(m.evicted() > 0);
        // The most recent template is still live.
        assert!(m.template(last).is_some());
    }

    #[test]
    fn per_cluster_templates_are_capped() {
        let config = MinerConfig {
            max_templates_per_cluster: 4,
            enum_limit: 1000,
            ..MinerConfig::default()
        };
        let mut m = Miner::new(config);
        for i in 0..50u32 {
            let v = char::from(b'A' + (i % 26) as u8);
            m.observe(&format!("job moved to STATE_{v}{v}"));
        }
        assert!(m.len() <= 4, "{}", m.len());
    }

    #[test]
    fn empty_and_huge_and_garbage_lines() {
        let mut m = Miner::new(MinerConfig::default());
        let e = m.observe("");
        assert_eq!(m.template(e.id), Some(""));
        let ws = m.observe("   \t  ");
        assert_eq!(ws.id, e.id);
        let huge = "word 12345 ".repeat(100_000);
        let h = m.observe(&huge);
        let t = m.template(h.id).unwrap_or_default().to_string();
        assert!(t.len() <= 4096 + 3);
        assert!(t.split(' ').count() <= 96);
        let one_token = "x".repeat(1_000_000);
        let o = m.observe(&one_token);
        assert!(m.template(o.id).is_some());
        let mut seed = 0x9e37_79b9_u64;
        for _ in 0..3000 {
            let mut v = Vec::new();
            let len = (seed % 200) as usize;
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                v.push((seed & 0xff) as u8);
            }
            let text = String::from_utf8_lossy(&v);
            let obs = m.observe(&text);
            assert!(m.template(m.resolve(obs.id)).is_some());
        }
    }

    #[test]
    fn unicode_is_preserved() {
        let mut m = Miner::new(MinerConfig::default());
        let id = m.observe("Störung in Zone 4 — Ventil geschlossen").id;
        assert_eq!(
            m.template(id),
            Some("Störung in Zone <*> — Ventil geschlossen")
        );
    }

    #[test]
    fn resolve_unknown_id_is_identity() {
        let m = Miner::new(MinerConfig::default());
        assert_eq!(m.resolve(TemplateId(42)), TemplateId(42));
        assert!(m.template(TemplateId(42)).is_none());
        assert_eq!(m.templates().count(), 0);
    }
}
