//! Text embedders: the [`TextEmbedder`] trait, its [`EmbedderId`] (stored
//! with every vector so a model change is detected), [`EmbedError`], and the
//! two HTTP clients: [`OllamaEmbedder`] (`POST /api/embed`, local) and
//! [`OpenAiCompatEmbedder`] (`POST /v1/embeddings`, cloud, gated by a
//! [`CloudPolicy`] on each document's [`DataClass`]). The model-free
//! [`HashedEmbedder`](super::HashedEmbedder) lives in `hashed.rs`.
//!
//! The HTTP clients make exactly one attempt per call; retrying is the
//! [`Indexer`](super::Indexer)'s job. A server that is down, overloaded,
//! slow or rate limiting yields [`EmbedError::Unavailable`] (with the
//! server's `Retry-After` when it sent one); everything else is a distinct
//! error that retrying will not fix quickly.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use serde::Deserialize;
use serde_json::{Value, json};

use super::doc::{DataClass, Document};

/// Ollama's embedding path.
pub const OLLAMA_EMBED_PATH: &str = "/api/embed";
/// The OpenAI-compatible embedding path.
pub const OPENAI_EMBED_PATH: &str = "/v1/embeddings";
/// Largest response body read from an embedding server, bytes.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;
/// Longest server error text kept in an error, bytes.
pub const MAX_ERROR_TEXT: usize = 300;

/// Which model produced a vector. Its string form (`name/model/dim`) is
/// stored with every vector; vectors of different ids are never compared.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmbedderId {
    /// Implementation: `hashed`, `ollama`, `openai`.
    pub name: String,
    /// Model (or algorithm version for `hashed`).
    pub model: String,
    /// Vector length.
    pub dim: usize,
}

impl EmbedderId {
    /// Builds an id.
    pub fn new(name: impl Into<String>, model: impl Into<String>, dim: usize) -> Self {
        Self {
            name: name.into(),
            model: model.into(),
            dim,
        }
    }
}

impl fmt::Display for EmbedderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.name, self.model, self.dim)
    }
}

/// Where an embedder runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Locality {
    /// In the hub process or on the operator's hardware.
    Local,
    /// A third-party API: only allow-listed data classes are sent.
    Cloud,
}

/// A failed embedding call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EmbedError {
    /// Down, unreachable, timed out, overloaded (502/503/504) or rate limited
    /// (429). Worth retrying later; nothing is wrong with the input.
    #[error("embedder unavailable: {reason}")]
    Unavailable {
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
        /// Why (no server text beyond [`MAX_ERROR_TEXT`] bytes, key removed).
        reason: String,
    },
    /// Any other non-success status (400, 401, 404, 500, ...).
    #[error("embedder error (HTTP {status}): {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Server text, truncated, key removed.
        message: String,
    },
    /// A 2xx reply that is not the expected JSON, has the wrong number of
    /// vectors, a wrong dimension or non-finite values.
    #[error("bad embedder response: {0}")]
    BadResponse(String),
    /// The text's data class may not be sent to this (cloud) embedder.
    /// Nothing was sent. `class` is `None` for unclassified text (queries).
    #[error("privacy policy: {} may not be sent to {embedder}", .class.map_or("unclassified text", DataClass::as_str))]
    NotAllowed {
        /// The refused class.
        class: Option<DataClass>,
        /// The embedder's id.
        embedder: String,
    },
    /// Invalid configuration (URL, model, dimension, key).
    #[error("embedder configuration: {0}")]
    Config(String),
}

impl EmbedError {
    /// True for [`EmbedError::Unavailable`].
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// True for failures that may pass on a later attempt: unavailability
    /// and 5xx statuses.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 408,
            _ => false,
        }
    }
}

/// Turns texts into vectors.
#[async_trait::async_trait]
pub trait TextEmbedder: Send + Sync + fmt::Debug {
    /// The id recorded with every vector this embedder makes.
    fn id(&self) -> EmbedderId;

    /// Local or cloud. Defaults to local.
    fn locality(&self) -> Locality {
        Locality::Local
    }

    /// Whether documents of `class` may be given to this embedder. Local
    /// embedders take everything.
    fn permits(&self, class: DataClass) -> bool {
        let _ = class;
        true
    }

    /// One L2-comparable vector of `id().dim` floats per input, in order.
    /// For a cloud embedder these are unclassified texts (search queries),
    /// refused unless its policy allows queries.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;

    /// Embeds documents' [`Document::embed_text`] after checking every
    /// document's class with [`TextEmbedder::permits`]; a refused class
    /// fails the whole call before anything is sent.
    async fn embed_documents(&self, docs: &[Document]) -> Result<Vec<Vec<f32>>, EmbedError> {
        check_classes(self, docs)?;
        let texts: Vec<String> = docs.iter().map(Document::embed_text).collect();
        self.embed(&texts).await
    }
}

/// Fails with [`EmbedError::NotAllowed`] on the first document whose class
/// `e` does not permit.
pub fn check_classes<E: TextEmbedder + ?Sized>(e: &E, docs: &[Document]) -> Result<(), EmbedError> {
    match docs.iter().find(|d| !e.permits(d.class())) {
        Some(d) => Err(EmbedError::NotAllowed {
            class: Some(d.class()),
            embedder: e.id().to_string(),
        }),
        None => Ok(()),
    }
}

/// Checks a reply: `n` vectors of `dim` finite floats.
pub fn validate_vectors(vecs: &[Vec<f32>], n: usize, dim: usize) -> Result<(), EmbedError> {
    if vecs.len() != n {
        return Err(EmbedError::BadResponse(format!(
            "{} vectors for {n} inputs",
            vecs.len()
        )));
    }
    for (i, v) in vecs.iter().enumerate() {
        if v.len() != dim {
            return Err(EmbedError::BadResponse(format!(
                "vector {i} has {} dimensions, expected {dim}",
                v.len()
            )));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(EmbedError::BadResponse(format!(
                "vector {i} holds a non-finite value"
            )));
        }
    }
    Ok(())
}

/// An API key: `Debug` prints `[redacted]`; there is no `Display`, no
/// `Serialize` and no accessor.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }

    /// The key itself, for clients that take it as a string (Qdrant).
    pub(super) fn reveal(&self) -> &str {
        &self.0
    }

    fn bearer(&self) -> Option<HeaderValue> {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", self.0)).ok()?;
        v.set_sensitive(true);
        Some(v)
    }

    fn scrub(&self, text: &str) -> String {
        if self.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.0, "[redacted]")
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for ApiKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

/// What a cloud embedder may receive. The default sends nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CloudPolicy {
    /// Document classes allowed to leave the hub.
    pub allow: BTreeSet<DataClass>,
    /// Whether search queries (operator text, unclassified) may be sent.
    /// Without it a cloud embedder cannot serve searches.
    pub allow_queries: bool,
}

/// Connection settings shared by the HTTP embedders.
#[derive(Debug, Clone)]
pub struct HttpEmbedderConfig {
    /// `http://` or `https://` base, without the API path.
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// The model's vector length (see `probe_dim` on each embedder).
    pub dim: usize,
    /// Whole-request timeout (connect included).
    pub timeout: Duration,
    /// Bearer key; required for [`OpenAiCompatEmbedder`], optional for
    /// Ollama (a reverse proxy).
    pub key: Option<ApiKey>,
}

impl HttpEmbedderConfig {
    /// Settings with a 30 s timeout and no key.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>, dim: usize) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            dim,
            timeout: Duration::from_secs(30),
            key: None,
        }
    }
}

/// One endpoint: client, URL, headers.
#[derive(Debug, Clone)]
struct HttpCore {
    http: reqwest::Client,
    url: String,
    headers: HeaderMap,
    key: ApiKey,
    id: EmbedderId,
}

impl HttpCore {
    fn new(
        name: &'static str,
        cfg: &HttpEmbedderConfig,
        path: &str,
        need_key: bool,
    ) -> Result<Self, EmbedError> {
        let base = cfg.base_url.trim().trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(EmbedError::Config(format!(
                "{name}: base_url must be http:// or https://"
            )));
        }
        if cfg.model.trim().is_empty() {
            return Err(EmbedError::Config(format!("{name}: model is empty")));
        }
        if cfg.timeout.is_zero() {
            return Err(EmbedError::Config(format!("{name}: timeout is zero")));
        }
        let key = cfg.key.clone().unwrap_or_default();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if need_key && key.is_empty() {
            return Err(EmbedError::Config(format!("{name}: no API key configured")));
        }
        if !key.is_empty() {
            let v = key.bearer().ok_or_else(|| {
                EmbedError::Config(format!("{name}: API key holds invalid characters"))
            })?;
            headers.insert(AUTHORIZATION, v);
        }
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(30))
            .no_proxy()
            .user_agent(concat!("wingman/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| EmbedError::Config(format!("{name}: HTTP client: {e}")))?;
        Ok(Self {
            http,
            url: format!("{base}{path}"),
            headers,
            key,
            id: EmbedderId::new(name, cfg.model.trim(), cfg.dim),
        })
    }

    fn scrub(&self, text: &str) -> String {
        truncate(&self.key.scrub(text), MAX_ERROR_TEXT)
    }

    fn send_error(&self, e: &reqwest::Error) -> EmbedError {
        if e.is_builder() {
            return EmbedError::Config(self.scrub(&format!("request: {e}")));
        }
        if e.is_timeout() {
            return EmbedError::Unavailable {
                retry_after: None,
                reason: "timed out".into(),
            };
        }
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        EmbedError::Unavailable {
            retry_after: None,
            reason: self.scrub(&msg),
        }
    }

    /// POSTs `body` and returns a 2xx reply's bytes.
    async fn post(&self, body: &Value) -> Result<Vec<u8>, EmbedError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| EmbedError::Config(format!("request body: {e}")))?;
        let mut resp = self
            .http
            .post(&self.url)
            .headers(self.headers.clone())
            .body(bytes)
            .send()
            .await
            .map_err(|e| self.send_error(&e))?;
        let status = resp.status().as_u16();
        let wait = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if body.len() + c.len() > MAX_RESPONSE_BYTES {
                        return Err(EmbedError::BadResponse(format!(
                            "response larger than {MAX_RESPONSE_BYTES} bytes"
                        )));
                    }
                    body.extend_from_slice(&c);
                }
                Ok(None) => break,
                Err(e) => return Err(self.send_error(&e)),
            }
        }
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let message = self.scrub(&error_text(&body));
        tracing::warn!(embedder = %self.id, status, error = %message, "embedding request failed");
        match status {
            429 | 502 | 503 | 504 => Err(EmbedError::Unavailable {
                retry_after: wait,
                reason: format!("HTTP {status}: {message}"),
            }),
            _ => Err(EmbedError::Status { status, message }),
        }
    }
}

/// The `error` string (Ollama) or `error.message` (OpenAI) of an error body,
/// else the body itself.
fn error_text(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    v.get("error")
        .and_then(|e| {
            e.as_str()
                .or_else(|| e.get("message").and_then(Value::as_str))
        })
        .map_or_else(|| String::from_utf8_lossy(body).into_owned(), str::to_owned)
}

/// Cuts `s` to at most `max` bytes on a char boundary, appending `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    super::doc::excerpt(s, max)
}

/// Parses a `Retry-After` value: delta-seconds or an IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`); a date in the past is zero.
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_imf_fixdate(v)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// Seconds since the epoch of an IMF-fixdate.
fn parse_imf_fixdate(v: &str) -> Option<u64> {
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let (_, rest) = v.split_once(", ")?;
    let mut parts = rest.split(' ');
    let day: u32 = parts.next()?.parse().ok()?;
    let month = parts.next()?;
    let year: i64 = parts.next()?.parse().ok()?;
    let hms = parts.next()?;
    if parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = u32::try_from(MONTHS.iter().position(|x| *x == month)? + 1).ok()?;
    let mut t = hms.split(':');
    let h: u64 = t.next()?.parse().ok()?;
    let mi: u64 = t.next()?.parse().ok()?;
    let s: u64 = t.next()?.parse().ok()?;
    if t.next().is_some()
        || h > 23
        || mi > 59
        || s > 60
        || !(1..=31).contains(&day)
        || !(1970..=9999).contains(&year)
    {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let days = u64::try_from(days).ok()?;
    days.checked_mul(86_400)?
        .checked_add(h * 3600 + mi * 60 + s)
}

/// Ollama's `/api/embed`: `{"model":..,"input":[..]}` →
/// `{"embeddings":[[..],..]}`. A local embedder.
#[derive(Debug, Clone)]
pub struct OllamaEmbedder {
    core: HttpCore,
}

#[derive(Deserialize)]
struct OllamaReply {
    embeddings: Vec<Vec<f32>>,
}

impl OllamaEmbedder {
    /// Builds the client (no request is made).
    pub fn new(cfg: &HttpEmbedderConfig) -> Result<Self, EmbedError> {
        if cfg.dim == 0 {
            return Err(EmbedError::Config("ollama: dim is zero".into()));
        }
        Ok(Self {
            core: HttpCore::new("ollama", cfg, OLLAMA_EMBED_PATH, false)?,
        })
    }

    /// Asks the server for one embedding and returns its length (for setup
    /// tools; `cfg.dim` is ignored).
    pub async fn probe_dim(cfg: &HttpEmbedderConfig) -> Result<usize, EmbedError> {
        let core = HttpCore::new("ollama", cfg, OLLAMA_EMBED_PATH, false)?;
        let vecs = Self::call(&core, &["dimension probe".to_owned()]).await?;
        vecs.first()
            .map(Vec::len)
            .filter(|d| *d > 0)
            .ok_or_else(|| EmbedError::BadResponse("empty embedding".into()))
    }

    async fn call(core: &HttpCore, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let body = json!({"model": core.id.model, "input": texts});
        let bytes = core.post(&body).await?;
        let reply: OllamaReply = serde_json::from_slice(&bytes)
            .map_err(|e| EmbedError::BadResponse(format!("not an Ollama embed reply: {e}")))?;
        Ok(reply.embeddings)
    }
}

#[async_trait::async_trait]
impl TextEmbedder for OllamaEmbedder {
    fn id(&self) -> EmbedderId {
        self.core.id.clone()
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let vecs = Self::call(&self.core, texts).await?;
        validate_vectors(&vecs, texts.len(), self.core.id.dim)?;
        Ok(vecs)
    }
}

/// An OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, OpenRouter,
/// vLLM, llama.cpp server): `{"model":..,"input":[..]}` →
/// `{"data":[{"index":0,"embedding":[..]},..]}`, Bearer key. Treated as a
/// cloud embedder: only the [`CloudPolicy`]'s classes are sent.
#[derive(Debug, Clone)]
pub struct OpenAiCompatEmbedder {
    core: HttpCore,
    policy: CloudPolicy,
}

#[derive(Deserialize)]
struct OpenAiReply {
    data: Vec<OpenAiItem>,
}

#[derive(Deserialize)]
struct OpenAiItem {
    index: usize,
    embedding: Vec<f32>,
}

impl OpenAiCompatEmbedder {
    /// Builds the client; `cfg.key` is required.
    pub fn new(cfg: &HttpEmbedderConfig, policy: CloudPolicy) -> Result<Self, EmbedError> {
        if cfg.dim == 0 {
            return Err(EmbedError::Config("openai: dim is zero".into()));
        }
        Ok(Self {
            core: HttpCore::new("openai", cfg, OPENAI_EMBED_PATH, true)?,
            policy,
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> &CloudPolicy {
        &self.policy
    }

    async fn send(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let body = json!({"model": self.core.id.model, "input": texts});
        let bytes = self.core.post(&body).await?;
        let reply: OpenAiReply = serde_json::from_slice(&bytes)
            .map_err(|e| EmbedError::BadResponse(format!("not an OpenAI embeddings reply: {e}")))?;
        let n = texts.len();
        if reply.data.len() != n {
            return Err(EmbedError::BadResponse(format!(
                "{} embeddings for {n} inputs",
                reply.data.len()
            )));
        }
        let mut slots: Vec<Option<Vec<f32>>> = vec![None; n];
        for item in reply.data {
            match slots.get_mut(item.index) {
                Some(slot @ None) => *slot = Some(item.embedding),
                _ => {
                    return Err(EmbedError::BadResponse(format!(
                        "bad or repeated index {}",
                        item.index
                    )));
                }
            }
        }
        let vecs: Vec<Vec<f32>> = slots.into_iter().flatten().collect();
        validate_vectors(&vecs, n, self.core.id.dim)?;
        Ok(vecs)
    }
}

#[async_trait::async_trait]
impl TextEmbedder for OpenAiCompatEmbedder {
    fn id(&self) -> EmbedderId {
        self.core.id.clone()
    }

    fn locality(&self) -> Locality {
        Locality::Cloud
    }

    fn permits(&self, class: DataClass) -> bool {
        self.policy.allow.contains(&class)
    }

    /// Unclassified text: sent only when the policy allows queries.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if !self.policy.allow_queries {
            return Err(EmbedError::NotAllowed {
                class: None,
                embedder: self.core.id.to_string(),
            });
        }
        self.send(texts).await
    }

    async fn embed_documents(&self, docs: &[Document]) -> Result<Vec<Vec<f32>>, EmbedError> {
        check_classes(self, docs)?;
        let texts: Vec<String> = docs.iter().map(Document::embed_text).collect();
        self.send(&texts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_770);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        // 1994-11-06 08:49:37 = 784111777
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(
                "Sun, 06 Nov 1994 08:49:37 GMT",
                now + Duration::from_secs(60)
            ),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 99999999999999 08:49:37 GMT", now),
            None
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(
            parse_retry_after("Sun, 06 Foo 1994 08:49:37 GMT", now),
            None
        );
    }

    #[test]
    fn key_is_redacted() {
        let k = ApiKey::new("sk-secret-123");
        assert_eq!(format!("{k:?}"), "[redacted]");
        let cfg = HttpEmbedderConfig {
            key: Some(k),
            ..HttpEmbedderConfig::new("http://127.0.0.1:1", "m", 4)
        };
        assert!(!format!("{cfg:?}").contains("sk-secret"));
    }

    #[test]
    fn validation() {
        assert!(validate_vectors(&[vec![1.0, 0.0]], 1, 2).is_ok());
        assert!(validate_vectors(&[vec![1.0]], 1, 2).is_err());
        assert!(validate_vectors(&[vec![f32::NAN, 0.0]], 1, 2).is_err());
        assert!(validate_vectors(&[], 1, 2).is_err());
    }
}
