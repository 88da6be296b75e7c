//! Test helpers: a scripted loopback HTTP/1.1 server and a switchable
//! embedder.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wingman_hub::memory::{EmbedError, EmbedderId, HashedEmbedder, TextEmbedder};

/// Installs ring as the process-wide rustls provider (reqwest is built with
/// `rustls-no-provider`).
pub(crate) fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A request the fake server received.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Req {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A scripted reply.
#[derive(Debug, Clone)]
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
    pub(crate) delay: Duration,
}

impl Resp {
    pub(crate) fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    pub(crate) fn raw(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }

    pub(crate) fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }

    pub(crate) fn delayed(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

type Handler = dyn Fn(usize, &Req) -> Resp + Send + Sync;

/// A loopback server answering each request with `handler(n, req)`.
pub(crate) struct FakeServer {
    pub(crate) base: String,
    pub(crate) requests: Arc<Mutex<Vec<Req>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    pub(crate) async fn start(
        handler: impl Fn(usize, &Req) -> Resp + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let reqs = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let handler = Arc::clone(&handler);
                let reqs = Arc::clone(&reqs);
                tokio::spawn(async move {
                    let _ = serve(sock, handler, reqs).await;
                });
            }
        });
        Self {
            base: format!("http://{addr}"),
            requests,
            task,
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub(crate) fn last(&self) -> Req {
        self.requests.lock().unwrap().last().cloned().unwrap()
    }
}

async fn serve(
    mut sock: TcpStream,
    handler: Arc<Handler>,
    reqs: Arc<Mutex<Vec<Req>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("/")
        .to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    let req = Req {
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let n = {
        let mut r = reqs.lock().unwrap();
        r.push(req.clone());
        r.len() - 1
    };
    let resp = handler(n, &req);
    if !resp.delay.is_zero() {
        tokio::time::sleep(resp.delay).await;
    }
    let mut out = format!(
        "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        resp.status,
        resp.body.len()
    );
    for (k, v) in &resp.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&resp.body);
    sock.write_all(out.as_bytes()).await?;
    sock.shutdown().await
}

/// A port on which nothing listens.
pub(crate) async fn closed_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

/// A [`HashedEmbedder`] that can be switched off (then `Unavailable`) and
/// that fails permanently on texts containing `poison`.
#[derive(Debug)]
pub(crate) struct Switchable {
    pub(crate) inner: HashedEmbedder,
    pub(crate) down: AtomicBool,
    pub(crate) retry_after: Mutex<Option<Duration>>,
    pub(crate) calls: AtomicUsize,
}

impl Switchable {
    pub(crate) fn new(dim: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: HashedEmbedder::new(dim).unwrap(),
            down: AtomicBool::new(false),
            retry_after: Mutex::new(None),
            calls: AtomicUsize::new(0),
        })
    }

    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl TextEmbedder for Switchable {
    fn id(&self) -> EmbedderId {
        self.inner.id()
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(EmbedError::Unavailable {
                retry_after: *self.retry_after.lock().unwrap(),
                reason: "switched off (test)".into(),
            });
        }
        if texts.iter().any(|t| t.contains("poison")) {
            return Err(EmbedError::BadResponse("poison (test)".into()));
        }
        self.inner.embed(texts).await
    }
}

/// Polls `f` every 10 ms until true or `timeout` passes.
pub(crate) async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}
