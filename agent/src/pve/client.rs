//! Proxmox VE REST API client: API-token auth, certificate pinning by
//! SHA-256 fingerprint, the `{"data": …}` envelope and clear errors.
//!
//! * Auth: `Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET` (no CSRF
//!   token needed with API tokens, for any method).
//! * TLS: the node's default certificate is self-signed by the cluster CA, so
//!   the client pins the SHA-256 of the end-entity certificate (DER), the
//!   same scheme as Proxmox's own `proxmox-client` `TlsOptions::Fingerprint`.
//!   Hostnames are not checked; the handshake signature still is.
//! * Envelope (`pve-http-server` `Formatter/Standard.pm`): `{"data": …}`,
//!   plus `message` on HTTP errors (PVE ≥ 7), `errors` on parameter errors
//!   and `total` for task lists and logs. Success is the HTTP status.
//! * Errors: 401 → [`PveError::Unauthorized`], 403 → [`PveError::Forbidden`]
//!   with the path and privilege parsed from `Permission check failed
//!   (<path>, <privs>)`, connection refused / 502-504 / 59x →
//!   [`PveError::ApiDown`], pin mismatch → [`PveError::CertificateMismatch`].
//!
//! Field names and types follow the PVE 9.1 schema (`apidata.js`, see
//! `/work/shared/data/proxmox/`). PVE's JSON is loose about types (booleans
//! as 0/1, numbers as strings, "N/A"), so rows are parsed leniently and every
//! field is optional; unknown fields are ignored.

use std::error::Error as _;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use wingman_protocol::pve::GuestKind;

use super::facts::{PveProblem, PveStatus, Upid};
use super::upid::parse_upid;

/// Default base URL: the local node's API.
pub const DEFAULT_BASE_URL: &str = "https://localhost:8006/api2/json";
/// Default whole-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response body accepted.
const MAX_BODY: usize = 32 * 1024 * 1024;

/// Client settings.
#[derive(Clone)]
pub struct PveClientConfig {
    /// Base URL up to and including `/api2/json`.
    pub base_url: String,
    /// Token id, `user@realm!tokenid`.
    pub token_id: String,
    /// Token secret (a UUID).
    pub token_secret: String,
    /// SHA-256 of the node certificate (DER).
    pub fingerprint: [u8; 32],
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

impl fmt::Debug for PveClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PveClientConfig")
            .field("base_url", &self.base_url)
            .field("token_id", &self.token_id)
            .field("token_secret", &"<redacted>")
            .field("fingerprint", &format_fingerprint(&self.fingerprint))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl PveClientConfig {
    /// Settings for the local node with default timeouts.
    pub fn new(
        token_id: impl Into<String>,
        token_secret: impl Into<String>,
        fingerprint: [u8; 32],
    ) -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            token_id: token_id.into(),
            token_secret: token_secret.into(),
            fingerprint,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// Parses a SHA-256 fingerprint: 64 hex digits, optionally `:`-separated
/// (as `openssl x509 -fingerprint -sha256` and the PVE GUI print it).
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], PveError> {
    let digits: String = s.trim().chars().filter(|c| *c != ':').collect();
    let bytes =
        hex::decode(&digits).map_err(|_| PveError::Config("fingerprint is not hex".to_owned()))?;
    bytes
        .try_into()
        .map_err(|_| PveError::Config("fingerprint must be 32 bytes (SHA-256)".to_owned()))
}

/// Formats a fingerprint as `AA:BB:…`.
pub fn format_fingerprint(fp: &[u8]) -> String {
    fp.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// SHA-256 of a DER certificate.
pub fn cert_fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// Client errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PveError {
    /// 401.
    #[error(
        "PVE rejected the API token (401: {message}): the token id or secret is wrong, the token expired or was deleted, or its user is disabled"
    )]
    Unauthorized {
        /// Server message.
        message: String,
    },
    /// 403.
    #[error("PVE denied the request (403): the token lacks {} on {}", privs(.privileges), .path.as_deref().unwrap_or("?"))]
    Forbidden {
        /// ACL path.
        path: Option<String>,
        /// Missing privilege(s).
        privileges: Vec<String>,
        /// Server message.
        message: String,
    },
    /// Connection refused/reset, 502-504, 59x.
    #[error("PVE API is down or unreachable: {message}")]
    ApiDown {
        /// What happened.
        message: String,
    },
    /// Pin mismatch.
    #[error(
        "the node certificate does not match the pinned SHA-256 fingerprint (node presented {}); was the certificate renewed?",
        .presented.as_deref().unwrap_or("an unknown certificate")
    )]
    CertificateMismatch {
        /// What the node presented.
        presented: Option<String>,
    },
    /// Timed out.
    #[error("PVE API request timed out")]
    Timeout,
    /// Another HTTP error (400 parameter errors, 404/501 no such path, 500
    /// handler errors such as "VM 100 not running").
    #[error("PVE API error {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Server message (with parameter errors if any).
        message: String,
    },
    /// A 2xx answer that does not have the expected shape.
    #[error("unexpected PVE API answer: {0}")]
    BadResponse(String),
    /// Invalid settings.
    #[error("invalid PVE client configuration: {0}")]
    Config(String),
}

fn privs(p: &[String]) -> String {
    if p.is_empty() {
        "a privilege".to_owned()
    } else {
        p.join(" or ")
    }
}

impl PveError {
    /// Errors after which further requests this sweep are pointless.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Self::Unauthorized { .. }
                | Self::ApiDown { .. }
                | Self::CertificateMismatch { .. }
                | Self::Timeout
        )
    }

    /// The problem category for a [`PveStatus`].
    pub fn problem(&self) -> PveProblem {
        match self {
            Self::Unauthorized { .. } => PveProblem::Unauthorized,
            Self::Forbidden {
                path, privileges, ..
            } => PveProblem::Forbidden {
                path: path.clone(),
                privileges: privileges.clone(),
            },
            Self::ApiDown { .. } => PveProblem::ApiDown,
            Self::CertificateMismatch { presented } => PveProblem::CertificateMismatch {
                presented: presented.clone(),
            },
            Self::Timeout => PveProblem::Timeout,
            Self::Api { status, .. } if *status >= 500 => PveProblem::ApiDown,
            Self::Api { .. } | Self::BadResponse(_) | Self::Config(_) => PveProblem::BadResponse,
        }
    }

    /// A status fact for this error.
    pub fn to_status(&self, node: &str, endpoint: &str) -> PveStatus {
        PveStatus {
            node: node.to_owned(),
            reachable: matches!(
                self,
                Self::Forbidden { .. } | Self::Api { .. } | Self::BadResponse(_)
            ) && self.problem() != PveProblem::ApiDown,
            problem: self.problem(),
            endpoint: Some(endpoint.to_owned()),
            message: self.to_string(),
        }
    }
}

/// Parses "Permission check failed (/vms/100, VM.PowerMgmt)" into the path
/// and privileges (`,` or `|` separated).
pub fn parse_permission_message(msg: &str) -> (Option<String>, Vec<String>) {
    let msg = msg.trim();
    let Some(start) = msg.find('(') else {
        return (None, Vec::new());
    };
    let Some(end) = msg.rfind(')') else {
        return (None, Vec::new());
    };
    if end <= start {
        return (None, Vec::new());
    }
    let inner = &msg[start + 1..end];
    let (path, privs) = match inner.split_once(", ") {
        Some((p, r)) if p.starts_with('/') => (Some(p.trim().to_owned()), r),
        _ if inner.starts_with('/') => (Some(inner.trim().to_owned()), ""),
        _ => (None, inner),
    };
    let privileges = privs
        .split([',', '|', ' '])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    (path, privileges)
}

#[derive(Debug)]
struct PinnedCertVerifier {
    expected: [u8; 32],
    provider: Arc<CryptoProvider>,
    mismatch: Arc<Mutex<Option<String>>>,
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = cert_fingerprint(end_entity.as_ref());
        if ct_eq(&got, &self.expected) {
            return Ok(ServerCertVerified::assertion());
        }
        if let Ok(mut m) = self.mismatch.lock() {
            *m = Some(format_fingerprint(&got));
        }
        Err(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Percent-encodes a path segment or query value (keeps only unreserved
/// characters), as PVE's own clients do with `encodeURIComponent`.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An API client for one node (any node can answer for the cluster).
#[derive(Clone)]
pub struct PveClient {
    http: reqwest::Client,
    base: String,
    auth: HeaderValue,
    mismatch: Arc<Mutex<Option<String>>>,
}

impl fmt::Debug for PveClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PveClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// A JSON envelope with its optional `total`.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// `data`.
    pub data: Value,
    /// `total`, when the handler set it.
    pub total: Option<u64>,
}

impl PveClient {
    /// Builds a client with the ring provider and the pinning verifier.
    pub fn new(cfg: &PveClientConfig) -> Result<Self, PveError> {
        if !(cfg.token_id.contains('@') && cfg.token_id.contains('!')) {
            return Err(PveError::Config(
                "token id must look like user@realm!tokenid".to_owned(),
            ));
        }
        if cfg.token_secret.is_empty() {
            return Err(PveError::Config("token secret is empty".to_owned()));
        }
        let base = cfg.base_url.trim_end_matches('/').to_owned();
        if !base.starts_with("https://") {
            return Err(PveError::Config(
                "base URL must be https:// (pveproxy serves HTTPS only)".to_owned(),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mismatch = Arc::new(Mutex::new(None));
        let verifier = PinnedCertVerifier {
            expected: cfg.fingerprint,
            provider: provider.clone(),
            mismatch: mismatch.clone(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PveError::Config(format!("TLS setup: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(20))
            .no_proxy()
            .user_agent(concat!("wingman-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PveError::Config(format!("HTTP client: {e}")))?;
        let mut auth = HeaderValue::from_str(&format!(
            "PVEAPIToken={}={}",
            cfg.token_id, cfg.token_secret
        ))
        .map_err(|_| PveError::Config("token contains invalid characters".to_owned()))?;
        auth.set_sensitive(true);
        Ok(Self {
            http,
            base,
            auth,
            mismatch,
        })
    }

    fn take_mismatch(&self) -> Option<String> {
        self.mismatch.lock().ok().and_then(|mut m| m.take())
    }

    fn map_send_error(&self, e: &reqwest::Error) -> PveError {
        if e.is_timeout() {
            return PveError::Timeout;
        }
        let mut refused = false;
        let mut cert = false;
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(s) = src {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
                if let Some(inner) = io.get_ref() {
                    cert |= matches!(
                        inner.downcast_ref::<rustls::Error>(),
                        Some(rustls::Error::InvalidCertificate(_))
                    );
                }
            }
            cert |= matches!(
                s.downcast_ref::<rustls::Error>(),
                Some(rustls::Error::InvalidCertificate(_))
            );
            src = s.source();
        }
        let presented = self.take_mismatch();
        if cert || presented.is_some() {
            return PveError::CertificateMismatch { presented };
        }
        let mut message = if refused {
            "connection refused (is pveproxy running?)".to_owned()
        } else {
            e.to_string()
        };
        if !refused {
            let mut src = e.source();
            while let Some(s) = src {
                message.push_str(": ");
                message.push_str(&s.to_string());
                src = s.source();
            }
        }
        PveError::ApiDown { message }
    }

    /// One request; returns the envelope of a 2xx answer.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Envelope, PveError> {
        let mut url = format!("{}{}", self.base, path);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&enc(k));
            url.push('=');
            url.push_str(&enc(v));
        }
        let mut rb = self
            .http
            .request(method, &url)
            .header(AUTHORIZATION, self.auth.clone());
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let mut resp = rb.send().await.map_err(|e| self.map_send_error(&e))?;
        let status = resp.status();
        let mut bytes: Vec<u8> = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if bytes.len() + c.len() > MAX_BODY {
                        return Err(PveError::BadResponse("answer too large".to_owned()));
                    }
                    bytes.extend_from_slice(&c);
                }
                Ok(None) => break,
                Err(e) => return Err(self.map_send_error(&e)),
            }
        }
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            // A handshake got through: forget any earlier pin mismatch.
            let _ = self.take_mismatch();
            let Some(Value::Object(mut obj)) = json else {
                return Err(PveError::BadResponse(format!(
                    "{path}: body is not a JSON object"
                )));
            };
            let Some(data) = obj.remove("data") else {
                return Err(PveError::BadResponse(format!("{path}: no \"data\" field")));
            };
            let total = obj.get("total").and_then(lenient::as_u64);
            return Ok(Envelope { data, total });
        }
        Err(error_for(status, json.as_ref()))
    }

    /// GET returning `data` as `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, PveError> {
        let env = self.request(Method::GET, path, query, None).await?;
        serde_json::from_value(env.data).map_err(|e| PveError::BadResponse(format!("{path}: {e}")))
    }

    /// GET returning an array; rows that do not parse are skipped (and
    /// logged), so one odd row never hides the others.
    pub async fn get_rows<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<T>, PveError> {
        let env = self.request(Method::GET, path, query, None).await?;
        rows(path, env.data)
    }

    /// POST expecting a task id (`{"data": "UPID:…"}`).
    pub async fn post_upid(&self, path: &str, body: &Value) -> Result<Upid, PveError> {
        let env = self.request(Method::POST, path, &[], Some(body)).await?;
        let s = env
            .data
            .as_str()
            .ok_or_else(|| PveError::BadResponse(format!("{path}: expected a UPID string")))?;
        parse_upid(s).map_err(|e| PveError::BadResponse(format!("{path}: {e}")))
    }

    /// `GET /version`.
    pub async fn version(&self) -> Result<VersionInfo, PveError> {
        self.get("/version", &[]).await
    }

    /// `GET /nodes/{node}/status`.
    pub async fn node_status(&self, node: &str) -> Result<NodeStatus, PveError> {
        self.get(&format!("/nodes/{}/status", enc(node)), &[]).await
    }

    /// `GET /cluster/resources?type=vm`.
    pub async fn cluster_resources_vm(&self) -> Result<Vec<ClusterResource>, PveError> {
        self.get_rows("/cluster/resources", &[("type", "vm".to_owned())])
            .await
    }

    /// `GET /nodes/{node}/qemu`.
    pub async fn qemu_list(&self, node: &str) -> Result<Vec<GuestRow>, PveError> {
        self.get_rows(&format!("/nodes/{}/qemu", enc(node)), &[])
            .await
    }

    /// `GET /nodes/{node}/lxc`.
    pub async fn lxc_list(&self, node: &str) -> Result<Vec<GuestRow>, PveError> {
        self.get_rows(&format!("/nodes/{}/lxc", enc(node)), &[])
            .await
    }

    /// `GET /nodes/{node}/{qemu|lxc}/{vmid}/snapshot`: snapshot names,
    /// oldest first, without the `current` pseudo-entry.
    pub async fn snapshots(
        &self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
    ) -> Result<Vec<String>, PveError> {
        let mut rows: Vec<SnapshotRow> = self
            .get_rows(
                &format!("/nodes/{}/{}/{vmid}/snapshot", enc(node), kind.as_str()),
                &[],
            )
            .await?;
        rows.retain(|r| r.name.as_deref().is_some_and(|n| n != "current"));
        rows.sort_by_key(|r| (r.snaptime.unwrap_or(0), r.name.clone()));
        Ok(rows.into_iter().filter_map(|r| r.name).collect())
    }

    /// `GET /cluster/status`.
    pub async fn cluster_status(&self) -> Result<Vec<ClusterStatusRow>, PveError> {
        self.get_rows("/cluster/status", &[]).await
    }

    /// `GET /cluster/ha/status/current`.
    pub async fn ha_status(&self) -> Result<Vec<HaStatusRow>, PveError> {
        self.get_rows("/cluster/ha/status/current", &[]).await
    }

    /// `GET /nodes/{node}/storage`.
    pub async fn storage(&self, node: &str) -> Result<Vec<StorageRow>, PveError> {
        self.get_rows(&format!("/nodes/{}/storage", enc(node)), &[])
            .await
    }

    /// `GET /nodes/{node}/disks/zfs`.
    pub async fn zfs_pools(&self, node: &str) -> Result<Vec<ZfsListRow>, PveError> {
        self.get_rows(&format!("/nodes/{}/disks/zfs", enc(node)), &[])
            .await
    }

    /// `GET /nodes/{node}/disks/zfs/{name}`.
    pub async fn zfs_pool(&self, node: &str, name: &str) -> Result<ZfsDetail, PveError> {
        self.get(
            &format!("/nodes/{}/disks/zfs/{}", enc(node), enc(name)),
            &[],
        )
        .await
    }

    /// `GET /nodes/{node}/disks/list` (SMART health included).
    pub async fn disks(&self, node: &str) -> Result<Vec<DiskRow>, PveError> {
        self.get_rows(&format!("/nodes/{}/disks/list", enc(node)), &[])
            .await
    }

    /// `GET /nodes/{node}/tasks`.
    pub async fn tasks(&self, node: &str, q: &TaskQuery) -> Result<Vec<TaskRow>, PveError> {
        self.get_rows(&format!("/nodes/{}/tasks", enc(node)), &q.to_query())
            .await
    }

    /// `GET /nodes/{node}/apt/update` (needs `Sys.Modify`!).
    pub async fn apt_updates(&self, node: &str) -> Result<Vec<AptUpdateRow>, PveError> {
        self.get_rows(&format!("/nodes/{}/apt/update", enc(node)), &[])
            .await
    }

    /// `GET /nodes/{node}/tasks/{upid}/status` (node taken from the UPID).
    pub async fn task_status(&self, upid: &Upid) -> Result<TaskStatusRow, PveError> {
        self.get(
            &format!(
                "/nodes/{}/tasks/{}/status",
                enc(&upid.node),
                enc(&upid.to_string())
            ),
            &[],
        )
        .await
    }

    /// `GET /nodes/{node}/tasks/{upid}/log?start=&limit=`: lines and `total`.
    pub async fn task_log(
        &self,
        upid: &Upid,
        start: u64,
        limit: u64,
    ) -> Result<(Vec<LogLine>, Option<u64>), PveError> {
        let path = format!(
            "/nodes/{}/tasks/{}/log",
            enc(&upid.node),
            enc(&upid.to_string())
        );
        let env = self
            .request(
                Method::GET,
                &path,
                &[("start", start.to_string()), ("limit", limit.to_string())],
                None,
            )
            .await?;
        Ok((rows(&path, env.data)?, env.total))
    }

    /// The whole task log as text lines, paged, capped at `max_lines`.
    pub async fn task_log_lines(
        &self,
        upid: &Upid,
        max_lines: u64,
    ) -> Result<Vec<String>, PveError> {
        const PAGE: u64 = 1000;
        let mut out = Vec::new();
        let mut start = 0;
        loop {
            let (lines, total) = self.task_log(upid, start, PAGE).await?;
            let n = lines.len() as u64;
            out.extend(lines.into_iter().map(|l| l.t));
            start += n;
            let more = total.is_some_and(|t| start < t);
            if n == 0 || !more || start >= max_lines {
                return Ok(out);
            }
        }
    }

    /// The last `n` lines of a task log.
    pub async fn task_log_tail(&self, upid: &Upid, n: u64) -> Result<Vec<String>, PveError> {
        let (first, total) = self.task_log(upid, 0, n).await?;
        match total {
            Some(t) if t > n => {
                let (tail, _) = self.task_log(upid, t - n, n).await?;
                Ok(tail.into_iter().map(|l| l.t).collect())
            }
            _ => Ok(first.into_iter().map(|l| l.t).collect()),
        }
    }
}

fn rows<T: DeserializeOwned>(path: &str, data: Value) -> Result<Vec<T>, PveError> {
    let Value::Array(items) = data else {
        return Err(PveError::BadResponse(format!("{path}: expected an array")));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match serde_json::from_value(item) {
            Ok(r) => out.push(r),
            Err(e) => tracing::debug!(path, error = %e, "skipping unparsable row"),
        }
    }
    Ok(out)
}

fn error_for(status: StatusCode, json: Option<&Value>) -> PveError {
    let mut message = json
        .and_then(|j| j.get("message"))
        .and_then(Value::as_str)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    if let Some(Value::Object(errs)) = json.and_then(|j| j.get("errors")) {
        let mut parts: Vec<String> = errs
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or("invalid").trim()))
            .collect();
        parts.sort();
        if !parts.is_empty() {
            message = format!("{message} ({})", parts.join(", "));
        }
    }
    match status.as_u16() {
        401 => PveError::Unauthorized { message },
        403 => {
            let (path, privileges) = parse_permission_message(&message);
            PveError::Forbidden {
                path,
                privileges,
                message,
            }
        }
        502..=504 | 595..=599 => PveError::ApiDown { message },
        s => PveError::Api { status: s, message },
    }
}

/// Lenient JSON field readers for PVE's loosely typed answers.
pub mod lenient {
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    /// Number, numeric string or bool as `u64` (floats truncated).
    pub fn as_u64(v: &Value) -> Option<u64> {
        match v {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| f as u64)
            }),
            Value::String(s) => {
                let s = s.trim();
                s.parse().ok().or_else(|| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite() && *f >= 0.0)
                        .map(|f| f as u64)
                })
            }
            Value::Bool(b) => Some(u64::from(*b)),
            _ => None,
        }
    }

    /// Number or numeric string as `f64`.
    pub fn as_f64(v: &Value) -> Option<f64> {
        match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .filter(|f: &f64| f.is_finite())
    }

    /// Bool, 0/1 or "0"/"1"/"true"/"false".
    pub fn as_bool(v: &Value) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            Value::Number(n) => n.as_f64().map(|f| f != 0.0),
            Value::String(s) => match s.trim() {
                "1" | "true" | "yes" | "on" => Some(true),
                "0" | "false" | "no" | "off" | "" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// String, or a number rendered as a string.
    pub fn as_string(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// Types readable from loosely typed JSON.
    pub trait FromLenient: Sized {
        /// Converts, or `None` if the value does not fit.
        fn from_lenient(v: &Value) -> Option<Self>;
    }
    impl FromLenient for u64 {
        fn from_lenient(v: &Value) -> Option<Self> {
            as_u64(v)
        }
    }
    impl FromLenient for f64 {
        fn from_lenient(v: &Value) -> Option<Self> {
            as_f64(v)
        }
    }
    impl FromLenient for bool {
        fn from_lenient(v: &Value) -> Option<Self> {
            as_bool(v)
        }
    }
    impl FromLenient for String {
        fn from_lenient(v: &Value) -> Option<Self> {
            as_string(v)
        }
    }

    /// serde adapter for any [`FromLenient`] type.
    pub fn opt<'de, D: Deserializer<'de>, T: FromLenient>(d: D) -> Result<Option<T>, D::Error> {
        Ok(Option::<Value>::deserialize(d)?
            .as_ref()
            .and_then(T::from_lenient))
    }

    /// serde adapter.
    pub fn u64_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Ok(Option::<Value>::deserialize(d)?.as_ref().and_then(as_u64))
    }
    /// serde adapter.
    pub fn f64_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Ok(Option::<Value>::deserialize(d)?.as_ref().and_then(as_f64))
    }
    /// serde adapter.
    pub fn bool_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        Ok(Option::<Value>::deserialize(d)?.as_ref().and_then(as_bool))
    }
    /// serde adapter.
    pub fn string_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(Option::<Value>::deserialize(d)?
            .as_ref()
            .and_then(as_string))
    }
}

macro_rules! api_row {
    ($(#[$m:meta])* pub struct $name:ident { $( $(#[doc = $doc:literal])* $field:ident $(as $rename:literal)? : $ty:ty ),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, PartialEq, Deserialize)]
        pub struct $name {
            $(
                $(#[doc = $doc])*
                #[serde(default, deserialize_with = "lenient::opt" $(, rename = $rename)?)]
                pub $field: Option<$ty>,
            )*
        }
    };
}

api_row! {
    /// `GET /version`.
    pub struct VersionInfo {
        /// Full pve-manager version.
        version: String,
        /// `x.y` release.
        release: String,
        /// Git revision.
        repoid: String,
    }
}

/// `memory`/`rootfs` objects of node status.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct UsageRow {
    /// Total bytes.
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    pub total: Option<u64>,
    /// Used bytes.
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    pub used: Option<u64>,
    /// Free bytes.
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    pub free: Option<u64>,
}

api_row! {
    /// `cpuinfo` of node status.
    pub struct CpuInfo {
        /// Logical CPUs.
        cpus: u64,
        /// Model.
        model: String,
    }
}

api_row! {
    /// `current-kernel` of node status (PVE ≥ 8.2).
    pub struct KernelInfo {
        /// Release, e.g. "6.8.12-4-pve".
        release: String,
    }
}

/// `GET /nodes/{node}/status`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct NodeStatus {
    /// CPU fraction.
    #[serde(default, deserialize_with = "lenient::f64_opt")]
    pub cpu: Option<f64>,
    /// CPU info.
    #[serde(default)]
    pub cpuinfo: Option<CpuInfo>,
    /// Load averages as strings.
    #[serde(default)]
    pub loadavg: Vec<Value>,
    /// Memory.
    #[serde(default)]
    pub memory: Option<UsageRow>,
    /// Root filesystem.
    #[serde(default)]
    pub rootfs: Option<UsageRow>,
    /// "pve-manager/x.y.z/…".
    #[serde(default, deserialize_with = "lenient::string_opt")]
    pub pveversion: Option<String>,
    /// Kernel (PVE ≥ 8.2).
    #[serde(default, rename = "current-kernel")]
    pub current_kernel: Option<KernelInfo>,
    /// Kernel string of older releases ("Linux 6.5.11-7-pve #1 SMP …").
    #[serde(default, deserialize_with = "lenient::string_opt")]
    pub kversion: Option<String>,
    /// Seconds since boot.
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    pub uptime: Option<u64>,
}

api_row! {
    /// A row of `GET …/{vmid}/snapshot`.
    pub struct SnapshotRow {
        /// Name (`current` is the running state, not a snapshot).
        name: String,
        /// Creation time, Unix seconds.
        snaptime: u64,
    }
}

api_row! {
    /// A row of `GET /cluster/resources`.
    pub struct ClusterResource {
        /// "qemu/100".
        id: String,
        /// "qemu", "lxc", "node", "storage", …
        kind as "type": String,
        /// Node.
        node: String,
        /// Status.
        status: String,
        /// Name.
        name: String,
        /// Guest id.
        vmid: u64,
        /// CPU fraction.
        cpu: f64,
        /// CPUs.
        maxcpu: f64,
        /// Memory used.
        mem: u64,
        /// Memory limit.
        maxmem: u64,
        /// Disk used.
        disk: u64,
        /// Disk size.
        maxdisk: u64,
        /// Uptime.
        uptime: u64,
        /// Template flag.
        template: bool,
        /// HA state.
        hastate: String,
        /// Lock.
        lock: String,
        /// Tags, `;`-separated.
        tags: String,
    }
}

api_row! {
    /// A row of `GET /nodes/{node}/qemu` or `/lxc`.
    pub struct GuestRow {
        /// Guest id.
        vmid: u64,
        /// Name.
        name: String,
        /// Status.
        status: String,
        /// "lxc" for containers (absent for VMs).
        kind as "type": String,
        /// CPU fraction.
        cpu: f64,
        /// CPUs.
        cpus: f64,
        /// Memory used.
        mem: u64,
        /// Memory limit.
        maxmem: u64,
        /// Disk used.
        disk: u64,
        /// Disk size.
        maxdisk: u64,
        /// Uptime.
        uptime: u64,
        /// Lock.
        lock: String,
        /// Tags.
        tags: String,
        /// Template.
        template: bool,
    }
}

api_row! {
    /// A row of `GET /cluster/status`.
    pub struct ClusterStatusRow {
        /// "cluster" or "node".
        kind as "type": String,
        /// `cluster` or `node/<name>`.
        id: String,
        /// Cluster or node name.
        name: String,
        /// Cluster: node count.
        nodes: u64,
        /// Cluster: quorate.
        quorate: bool,
        /// Cluster: config version.
        version: u64,
        /// Node: corosync id.
        nodeid: u64,
        /// Node: address.
        ip: String,
        /// Node: online.
        online: bool,
        /// Node: this node.
        local: bool,
    }
}

api_row! {
    /// A row of `GET /cluster/ha/status/current`.
    pub struct HaStatusRow {
        /// `quorum`, `master`, `lrm:<node>`, `service:<sid>`, `fencing`.
        id: String,
        /// quorum|master|lrm|service|fencing.
        kind as "type": String,
        /// Node.
        node: String,
        /// Status text.
        status: String,
        /// Quorum entry: quorate.
        quorate: bool,
        /// lrm/master: timestamp.
        timestamp: u64,
        /// Service id.
        sid: String,
        /// Verbose service state.
        state: String,
        /// Service state as seen by the CRM.
        crm_state: String,
        /// Requested state.
        request_state: String,
        /// Fencing entry (9.x).
        armed_state as "armed-state": String,
    }
}

api_row! {
    /// A row of `GET /nodes/{node}/storage`.
    pub struct StorageRow {
        /// Storage id.
        storage: String,
        /// Type.
        kind as "type": String,
        /// Content list, comma-separated.
        content: String,
        /// Accessible.
        active: bool,
        /// Enabled.
        enabled: bool,
        /// Shared.
        shared: bool,
        /// Total bytes.
        total: u64,
        /// Used bytes.
        used: u64,
        /// Available bytes.
        avail: u64,
    }
}

api_row! {
    /// A row of `GET /nodes/{node}/disks/zfs`.
    pub struct ZfsListRow {
        /// Pool.
        name: String,
        /// Health.
        health: String,
        /// Size.
        size: u64,
        /// Allocated.
        alloc: u64,
        /// Free.
        free: u64,
        /// Fragmentation %.
        frag: u64,
        /// Dedup ratio.
        dedup: f64,
    }
}

/// A vdev node of `GET /nodes/{node}/disks/zfs/{name}` (nested).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ZfsVdev {
    /// Name.
    #[serde(default, deserialize_with = "lenient::string_opt")]
    pub name: Option<String>,
    /// State.
    #[serde(default, deserialize_with = "lenient::string_opt")]
    pub state: Option<String>,
    /// Read errors.
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    pub read: Option<u64>,
    /// Write errors.
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    pub write: Option<u64>,
    /// Checksum errors.
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    pub cksum: Option<u64>,
    /// Message.
    #[serde(default, deserialize_with = "lenient::string_opt")]
    pub msg: Option<String>,
    /// Children.
    #[serde(default)]
    pub children: Vec<ZfsVdev>,
}

/// `GET /nodes/{node}/disks/zfs/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ZfsDetail {
    /// Pool.
    #[serde(default, deserialize_with = "lenient::string_opt")]
    pub name: Option<String>,
    /// State.
    #[serde(default, deserialize_with = "lenient::string_opt")]
    pub state: Option<String>,
    /// `status:` text.
    #[serde(default, deserialize_with = "lenient::string_opt")]
    pub status: Option<String>,
    /// `action:` text.
    #[serde(default, deserialize_with = "lenient::string_opt")]
    pub action: Option<String>,
    /// `scan:` text.
    #[serde(default, deserialize_with = "lenient::string_opt")]
    pub scan: Option<String>,
    /// `errors:` text.
    #[serde(default, deserialize_with = "lenient::string_opt")]
    pub errors: Option<String>,
    /// Vdev tree.
    #[serde(default)]
    pub children: Vec<ZfsVdev>,
}

api_row! {
    /// A row of `GET /nodes/{node}/disks/list`.
    pub struct DiskRow {
        /// Device path.
        devpath: String,
        /// Model.
        model: String,
        /// Serial.
        serial: String,
        /// Vendor.
        vendor: String,
        /// SMART health ("PASSED", "OK", "FAILED!", "UNKNOWN").
        health: String,
        /// Remaining life % or "N/A".
        wearout: String,
        /// hdd|ssd|nvme|usb|unknown.
        kind as "type": String,
        /// Size.
        size: u64,
        /// What uses it.
        used: String,
    }
}

api_row! {
    /// A row of `GET /nodes/{node}/tasks`.
    pub struct TaskRow {
        /// UPID.
        upid: String,
        /// Node.
        node: String,
        /// Type.
        kind as "type": String,
        /// Object id.
        id: String,
        /// User.
        user: String,
        /// Start, Unix s.
        starttime: u64,
        /// End, Unix s.
        endtime: u64,
        /// Status text ("OK", "WARNINGS: n", error text, "RUNNING").
        status: String,
    }
}

api_row! {
    /// `GET /nodes/{node}/tasks/{upid}/status`.
    pub struct TaskStatusRow {
        /// UPID.
        upid: String,
        /// "running" or "stopped".
        status: String,
        /// Exit status once stopped.
        exitstatus: String,
        /// Start, Unix s.
        starttime: u64,
        /// Type.
        kind as "type": String,
        /// Object id.
        id: String,
        /// User.
        user: String,
    }
}

/// One task log line (`{n, t}`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct LogLine {
    /// Line number, 1-based.
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    pub n: Option<u64>,
    /// Text.
    #[serde(default)]
    pub t: String,
}

api_row! {
    /// A row of `GET /nodes/{node}/apt/update`.
    pub struct AptUpdateRow {
        /// Package.
        package as "Package": String,
        /// Candidate version.
        version as "Version": String,
        /// Installed version.
        old_version as "OldVersion": String,
        /// Origin ("Debian", "Proxmox").
        origin as "Origin": String,
        /// Priority.
        priority as "Priority": String,
        /// Section.
        section as "Section": String,
    }
}

/// Parameters of `GET /nodes/{node}/tasks`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskQuery {
    /// Tasks with starttime ≥ this (Unix s).
    pub since: Option<u64>,
    /// Offset.
    pub start: Option<u64>,
    /// Max rows (PVE default 50).
    pub limit: Option<u64>,
    /// Exact task type.
    pub typefilter: Option<String>,
    /// Tasks whose id is this vmid.
    pub vmid: Option<u32>,
    /// "archive" (default), "active" or "all".
    pub source: Option<&'static str>,
    /// Only failed (non-OK) tasks.
    pub errors: bool,
}

impl TaskQuery {
    fn to_query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(v) = self.since {
            q.push(("since", v.to_string()));
        }
        if let Some(v) = self.start {
            q.push(("start", v.to_string()));
        }
        if let Some(v) = self.limit {
            q.push(("limit", v.to_string()));
        }
        if let Some(v) = &self.typefilter {
            q.push(("typefilter", v.clone()));
        }
        if let Some(v) = self.vmid {
            q.push(("vmid", v.to_string()));
        }
        if let Some(v) = self.source {
            q.push(("source", v.to_owned()));
        }
        if self.errors {
            q.push(("errors", "1".to_owned()));
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints() {
        let fp = [0xABu8; 32];
        let s = format_fingerprint(&fp);
        assert_eq!(parse_fingerprint(&s).unwrap(), fp);
        assert_eq!(parse_fingerprint(&s.replace(':', "")).unwrap(), fp);
        assert!(parse_fingerprint("AB:CD").is_err());
        assert!(parse_fingerprint("zz").is_err());
    }

    #[test]
    fn permission_messages() {
        assert_eq!(
            parse_permission_message("Permission check failed (/vms/100, VM.PowerMgmt)\n"),
            (Some("/vms/100".into()), vec!["VM.PowerMgmt".into()])
        );
        assert_eq!(
            parse_permission_message(
                "Permission check failed (/vms/100, VM.Snapshot|VM.Snapshot.Rollback)"
            ),
            (
                Some("/vms/100".into()),
                vec!["VM.Snapshot".into(), "VM.Snapshot.Rollback".into()]
            )
        );
        assert_eq!(
            parse_permission_message("Permission check failed (user != root@pam)"),
            (None, vec!["user".into(), "!=".into(), "root@pam".into()])
        );
        assert_eq!(
            parse_permission_message("Permission check failed"),
            (None, vec![])
        );
    }

    #[test]
    fn error_mapping() {
        let j = serde_json::json!({"data": null, "message": "Permission check failed (/nodes/pve1, Sys.Audit)\n"});
        let e = error_for(StatusCode::FORBIDDEN, Some(&j));
        assert_eq!(
            e.problem(),
            PveProblem::Forbidden {
                path: Some("/nodes/pve1".into()),
                privileges: vec!["Sys.Audit".into()]
            }
        );
        assert!(e.to_string().contains("Sys.Audit on /nodes/pve1"));
        let e = error_for(
            StatusCode::UNAUTHORIZED,
            Some(&serde_json::json!({"data": null})),
        );
        assert!(matches!(e, PveError::Unauthorized { .. }) && e.is_fatal());
        let j = serde_json::json!({"data": null, "errors": {"vmid": "invalid format"}, "message": "Parameter verification failed.\n"});
        let e = error_for(StatusCode::BAD_REQUEST, Some(&j));
        assert_eq!(
            e,
            PveError::Api {
                status: 400,
                message: "Parameter verification failed. (vmid: invalid format)".into()
            }
        );
        assert!(matches!(
            error_for(StatusCode::from_u16(596).unwrap(), None),
            PveError::ApiDown { .. }
        ));
    }

    #[test]
    fn lenient_rows() {
        let r: ClusterResource = serde_json::from_value(serde_json::json!({
            "id": "qemu/100", "type": "qemu", "vmid": "100", "cpu": 0.5, "maxmem": 2147483648u64,
            "template": 0, "uptime": 12.7, "hastate": "started", "unknown": {"x": 1}
        }))
        .unwrap();
        assert_eq!(r.vmid, Some(100));
        assert_eq!(r.template, Some(false));
        assert_eq!(r.uptime, Some(12));
        assert_eq!(r.kind.as_deref(), Some("qemu"));
        let d: DiskRow = serde_json::from_value(
            serde_json::json!({"devpath": "/dev/sda", "wearout": 97, "health": "PASSED"}),
        )
        .unwrap();
        assert_eq!(d.wearout.as_deref(), Some("97"));
    }

    #[test]
    fn encoding() {
        assert_eq!(
            enc("UPID:pve1:0000000A:u@pve!t:"),
            "UPID%3Apve1%3A0000000A%3Au%40pve%21t%3A"
        );
    }
}
