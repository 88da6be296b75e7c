//! The shared HTTP path: client construction (rustls with ring), the retry
//! loop, error classification and [`Exchange`] recording. Each dialect only
//! supplies the request body and two parsers.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::config::Common;
use super::error::{LlmError, MAX_ERROR_TEXT, truncate};
use super::exchange::{Exchange, Pricing, Usage};
use super::retry::{RetryPolicy, retry_after};
use super::schema::validate;
use super::secret::Secret;
use super::{Completion, Outcome, TaskKind};

/// Largest response body kept in an [`Exchange`], bytes.
pub(super) const MAX_STORED_BODY: usize = 256 * 1024;

/// A parsed 2xx reply: usage (when present) and the output or why it is unusable.
pub(super) struct Reply {
    pub(super) usage: Usage,
    pub(super) model: Option<String>,
    pub(super) output: Result<Value, LlmError>,
}

/// What a dialect extracts from an error body.
pub(super) struct ErrInfo {
    pub(super) message: String,
    /// A quota/billing error that must not be retried even on 429.
    pub(super) quota: bool,
}

/// Installs ring as the process-wide rustls provider (harmless when one is
/// already installed) and builds a client. TLS verification uses the
/// platform verifier with the system roots.
pub(super) fn client(timeout: Duration, use_env_proxy: bool) -> Result<reqwest::Client, LlmError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("wingman/", env!("CARGO_PKG_VERSION")));
    if !use_env_proxy {
        b = b.no_proxy();
    }
    b.build()
        .map_err(|e| LlmError::Config(format!("HTTP client: {e}")))
}

/// One provider's endpoint: client, fixed headers (auth included), retry and
/// pricing.
#[derive(Debug, Clone)]
pub(super) struct Transport {
    http: reqwest::Client,
    pub(super) provider: &'static str,
    pub(super) model: String,
    base: String,
    headers: HeaderMap,
    key: Secret,
    retry: RetryPolicy,
    pricing: Pricing,
}

impl Transport {
    /// Builds the transport; `auth` is `(header name, prefix)` for the key,
    /// `None` for no auth header.
    pub(super) fn new(
        provider: &'static str,
        common: &Common,
        retry: &RetryPolicy,
        auth: Option<(HeaderName, &str)>,
        extra: &[(&'static str, String)],
    ) -> Result<Self, LlmError> {
        let base = common.base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(LlmError::Config(format!(
                "{provider}: base_url must be http:// or https://"
            )));
        }
        if common.model.trim().is_empty() {
            return Err(LlmError::Config(format!("{provider}: model is empty")));
        }
        let mut headers = HeaderMap::new();
        let key = common.key.clone().unwrap_or_default();
        if let Some((name, prefix)) = auth {
            if key.is_empty() {
                return Err(LlmError::Config(format!(
                    "{provider}: no API key configured"
                )));
            }
            let v = key.header(prefix).ok_or_else(|| {
                LlmError::Config(format!("{provider}: API key holds invalid characters"))
            })?;
            headers.insert(name, v);
        }
        for (name, value) in extra {
            let v = HeaderValue::from_str(value)
                .map_err(|_| LlmError::Config(format!("{provider}: invalid {name} header")))?;
            headers.insert(HeaderName::from_static(name), v);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(Self {
            http: client(common.timeout, common.use_env_proxy)?,
            provider,
            model: common.model.clone(),
            base,
            headers,
            key,
            retry: retry.clone(),
            pricing: common.pricing,
        })
    }

    fn scrub(&self, text: &str, max: usize) -> String {
        truncate(&self.key.scrub(text), max)
    }

    fn map_send_error(&self, e: &reqwest::Error) -> LlmError {
        if e.is_timeout() {
            return LlmError::Timeout;
        }
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        LlmError::Transport(self.scrub(&msg, MAX_ERROR_TEXT))
    }

    fn classify(&self, status: u16, info: ErrInfo, wait: Option<Duration>) -> LlmError {
        let message = self.scrub(&info.message, MAX_ERROR_TEXT);
        match status {
            401 | 403 => LlmError::Unauthorized { status, message },
            402 => LlmError::Quota { status, message },
            _ if info.quota => LlmError::Quota { status, message },
            429 | 529 => LlmError::RateLimited {
                retry_after: wait,
                message,
            },
            408 => LlmError::Timeout,
            _ => LlmError::Provider { status, message },
        }
    }

    /// POSTs `body` to `path` with retries, recording one [`Exchange`] per
    /// attempt. A 2xx reply is parsed by `ok`, then checked against `schema`.
    pub(super) async fn call(
        &self,
        task: TaskKind,
        path: &str,
        body: Vec<u8>,
        schema: Option<&Value>,
        ok: &(dyn Fn(&[u8]) -> Reply + Sync),
        err: fn(&[u8]) -> ErrInfo,
    ) -> Outcome {
        let url = format!("{}{}", self.base, path);
        let request_body = String::from_utf8_lossy(&body).into_owned();
        let mut exchanges = Vec::new();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let started_at_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            let t0 = Instant::now();
            let mut ex = Exchange {
                provider: self.provider.to_owned(),
                model: self.model.clone(),
                task,
                attempt,
                endpoint: path.to_owned(),
                request_body: request_body.clone(),
                response_body: None,
                status: None,
                prompt_tokens: None,
                completion_tokens: None,
                latency_ms: 0,
                est_cost_usd: None,
                request_id: None,
                started_at_ms,
                error: None,
            };
            let sent = self
                .http
                .post(&url)
                .headers(self.headers.clone())
                .body(body.clone())
                .send()
                .await;
            // (error, retryable, server-requested wait)
            let (error, retryable, wait) = match sent {
                Err(e) => (self.map_send_error(&e), true, None),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    ex.status = Some(status);
                    ex.request_id = ["x-request-id", "request-id"]
                        .iter()
                        .find_map(|h| headers.get(*h))
                        .and_then(|v| v.to_str().ok())
                        .map(|s| truncate(s, 128));
                    match resp.bytes().await {
                        Err(e) => (self.map_send_error(&e), true, None),
                        Ok(bytes) => {
                            ex.response_body =
                                Some(self.scrub(&String::from_utf8_lossy(&bytes), MAX_STORED_BODY));
                            if (200..300).contains(&status) {
                                return self.finish_ok(ex, t0, &bytes, schema, ok, exchanges);
                            }
                            let info = err(&bytes);
                            let wait = retry_after(&headers, SystemTime::now());
                            let retryable =
                                RetryPolicy::status_retryable(status, &headers) && !info.quota;
                            (self.classify(status, info, wait), retryable, wait)
                        }
                    }
                }
            };
            ex.latency_ms = elapsed_ms(t0);
            ex.error = Some(error.to_string());
            tracing::warn!(
                provider = self.provider,
                model = %self.model,
                attempt,
                status = ?ex.status,
                request_id = ?ex.request_id,
                error = %error,
                "LLM request failed"
            );
            exchanges.push(ex);
            let delay = match wait {
                Some(w) => w,
                None => self.retry.backoff(attempt - 1),
            };
            if !retryable || attempt > self.retry.max_retries || delay > self.retry.max_retry_after
            {
                return Outcome {
                    result: Err(error),
                    exchanges,
                };
            }
            tokio::time::sleep(delay).await;
        }
    }

    fn finish_ok(
        &self,
        mut ex: Exchange,
        t0: Instant,
        bytes: &[u8],
        schema: Option<&Value>,
        ok: &(dyn Fn(&[u8]) -> Reply + Sync),
        mut exchanges: Vec<Exchange>,
    ) -> Outcome {
        let reply = ok(bytes);
        ex.latency_ms = elapsed_ms(t0);
        ex.prompt_tokens = reply.usage.prompt_tokens;
        ex.completion_tokens = reply.usage.completion_tokens;
        ex.est_cost_usd = self
            .pricing
            .estimate(reply.usage.prompt_tokens, reply.usage.completion_tokens);
        let output = reply.output.and_then(|v| match schema {
            Some(s) => validate(s, &v).map(|()| v).map_err(LlmError::InvalidOutput),
            None => Ok(v),
        });
        let result = match output {
            Ok(value) => Ok(Completion {
                provider: self.provider.to_owned(),
                model: reply.model.unwrap_or_else(|| self.model.clone()),
                value,
                usage: reply.usage,
                latency_ms: ex.latency_ms,
                est_cost_usd: ex.est_cost_usd,
            }),
            Err(e) => {
                let e = match e {
                    LlmError::InvalidOutput(m) => {
                        LlmError::InvalidOutput(self.scrub(&m, MAX_ERROR_TEXT))
                    }
                    LlmError::Refused(m) => LlmError::Refused(self.scrub(&m, MAX_ERROR_TEXT)),
                    other => other,
                };
                ex.error = Some(e.to_string());
                Err(e)
            }
        };
        exchanges.push(ex);
        Outcome { result, exchanges }
    }
}

fn elapsed_ms(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Reads a JSON number as `u64`.
pub(super) fn count(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// Parses text a model produced as a JSON object.
pub(super) fn json_object(text: &str) -> Result<Value, LlmError> {
    let v: Value = serde_json::from_str(text.trim())
        .map_err(|e| LlmError::InvalidOutput(format!("reply is not JSON: {e}")))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(LlmError::InvalidOutput("reply is not a JSON object".into()))
    }
}
