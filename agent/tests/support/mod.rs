//! Test support: a busybox image built locally (no registry), a cleanup guard
//! that removes everything a test labelled, an output collector, a unix-socket
//! proxy that can be cut and restored, and a scriptable fake engine.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptionsBuilder,
    ListImagesOptionsBuilder, RemoveContainerOptions, RemoveImageOptions,
};
use futures_util::StreamExt as _;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use wingman_agent::docker::{
    ContainerEvent, ContainerEventKind, DockerError, DockerOutput, Engine, connect,
};

pub const LABEL: &str = "wingman.test";
pub const RUN_LABEL: &str = "wingman.test.run";

/// Connects to the local engine, or returns `None` (skip) when there is no socket
/// and `CI` is not `true`.
pub async fn engine_or_skip() -> Option<Engine> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    match connect(None, Duration::from_secs(20)).await {
        Ok(e) => Some(e),
        Err(DockerError::SocketMissing(m)) if !ci => {
            eprintln!("SKIP: no Docker/Podman socket ({m})");
            None
        }
        Err(e) => panic!("engine not usable: {e}"),
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Removes every container and image labelled with this guard's run id, on drop
/// (also when the test panics).
pub struct Guard {
    pub run: String,
    pub socket: PathBuf,
}

impl Guard {
    pub fn new(engine: &Engine) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Self {
            run: format!(
                "{}-{}-{}",
                std::process::id(),
                nanos % 1_000_000,
                SEQ.fetch_add(1, Ordering::Relaxed)
            ),
            socket: engine.socket.clone(),
        }
    }

    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (LABEL.to_owned(), "1".to_owned()),
            (RUN_LABEL.to_owned(), self.run.clone()),
        ])
    }

    pub fn name(&self, what: &str) -> String {
        format!("wingman-test-{what}-{}", self.run)
    }

    pub fn image(&self) -> String {
        format!("wingman-test/busybox:{}", self.run)
    }
}

async fn cleanup(run: String, socket: PathBuf) {
    let Ok(engine) = connect(Some(&socket), Duration::from_secs(20)).await else {
        return;
    };
    let d = &engine.docker;
    let filter = HashMap::from([("label".to_owned(), vec![format!("{RUN_LABEL}={run}")])]);
    if let Ok(list) = d
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filter)
                .build(),
        ))
        .await
    {
        for c in list {
            if let Some(id) = c.id {
                let r = d
                    .remove_container(
                        &id,
                        Some(RemoveContainerOptions {
                            force: true,
                            v: true,
                            link: false,
                        }),
                    )
                    .await;
                if let Err(e) = r {
                    eprintln!("cleanup: container {id}: {e}");
                }
            }
        }
    }
    if let Ok(list) = d
        .list_images(Some(
            ListImagesOptionsBuilder::default().filters(&filter).build(),
        ))
        .await
    {
        for i in list {
            let r = d
                .remove_image(
                    &i.id,
                    Some(RemoveImageOptions {
                        force: true,
                        noprune: false,
                        platforms: None,
                    }),
                    None,
                )
                .await;
            if let Err(e) = r {
                eprintln!("cleanup: image {}: {e}", i.id);
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let run = self.run.clone();
        let socket = self.socket.clone();
        // Drop cannot await: clean up on a separate thread with its own runtime.
        let h = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(cleanup(run, socket));
            }
        });
        let _ = h.join();
    }
}

// ---------------------------------------------------------------- image

fn tar_header(name: &str, size: u64, mode: u32, typeflag: u8, link: &str) -> [u8; 512] {
    let mut h = [0u8; 512];
    let put = |h: &mut [u8; 512], off: usize, s: &[u8]| h[off..off + s.len()].copy_from_slice(s);
    put(&mut h, 0, name.as_bytes());
    put(&mut h, 100, format!("{mode:07o}\0").as_bytes());
    put(&mut h, 108, b"0000000\0");
    put(&mut h, 116, b"0000000\0");
    put(&mut h, 124, format!("{size:011o}\0").as_bytes());
    put(&mut h, 136, b"14000000000\0");
    put(&mut h, 148, b"        ");
    h[156] = typeflag;
    put(&mut h, 157, link.as_bytes());
    put(&mut h, 257, b"ustar\0");
    put(&mut h, 263, b"00");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    h
}

/// A rootfs tarball: /bin/busybox plus applet symlinks, /tmp.
pub fn busybox_rootfs() -> Vec<u8> {
    let bb = std::fs::read("/bin/busybox")
        .or_else(|_| std::fs::read("/usr/bin/busybox"))
        .expect("busybox-static is needed for the engine tests (apt-get install busybox-static)");
    let mut t = Vec::new();
    t.extend_from_slice(&tar_header("bin/", 0, 0o755, b'5', ""));
    t.extend_from_slice(&tar_header("tmp/", 0, 0o1777, b'5', ""));
    t.extend_from_slice(&tar_header("bin/busybox", bb.len() as u64, 0o755, b'0', ""));
    t.extend_from_slice(&bb);
    t.resize(t.len().div_ceil(512) * 512, 0);
    for applet in [
        "sh", "sleep", "dd", "echo", "true", "false", "cat", "kill", "yes", "head",
    ] {
        t.extend_from_slice(&tar_header(
            &format!("bin/{applet}"),
            0,
            0o777,
            b'2',
            "busybox",
        ));
    }
    t.extend_from_slice(&[0u8; 1024]);
    t
}

/// Imports the busybox image under this guard's tag and labels.
pub async fn build_image(engine: &Engine, g: &Guard) -> String {
    let tag = g.image();
    let (repo, t) = tag.split_once(':').expect("tag");
    let opts = CreateImageOptions {
        from_src: Some("-".to_owned()),
        repo: Some(repo.to_owned()),
        tag: Some(t.to_owned()),
        changes: vec![format!("LABEL {LABEL}=1 {RUN_LABEL}={}", g.run)],
        ..Default::default()
    };
    let mut s = engine.docker.create_image(
        Some(opts),
        Some(bollard::body_full(busybox_rootfs().into())),
        None,
    );
    while let Some(r) = s.next().await {
        r.expect("image import");
    }
    tag
}

/// Creates (not starts) a container from the guard's image.
pub async fn create(
    engine: &Engine,
    g: &Guard,
    what: &str,
    cmd: &[&str],
    host: HostConfig,
    tweak: impl FnOnce(&mut ContainerCreateBody),
) -> String {
    let mut body = ContainerCreateBody {
        image: Some(g.image()),
        cmd: Some(cmd.iter().map(|s| (*s).to_owned()).collect()),
        labels: Some(g.labels()),
        host_config: Some(host),
        ..Default::default()
    };
    tweak(&mut body);
    engine
        .docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(g.name(what)),
                platform: String::new(),
            }),
            body,
        )
        .await
        .expect("create container")
        .id
}

// ---------------------------------------------------------------- collector

pub struct Collector {
    pub rx: mpsc::Receiver<DockerOutput>,
    pub seen: Vec<DockerOutput>,
}

impl Collector {
    pub fn new(rx: mpsc::Receiver<DockerOutput>) -> Self {
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// Reads outputs until `pred` holds or `timeout` passes; returns whether it held.
    pub async fn until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&[DockerOutput]) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if pred(&self.seen) {
                return true;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(o)) => self.seen.push(o),
                Ok(None) | Err(_) => return pred(&self.seen),
            }
        }
    }

    /// Reads whatever arrives within `d`.
    pub async fn drain_for(&mut self, d: Duration) {
        self.until(d, |_| false).await;
    }
}

pub fn events_for<'a>(seen: &'a [DockerOutput], id: &str) -> Vec<&'a ContainerEvent> {
    seen.iter()
        .filter_map(|o| match o {
            DockerOutput::Event(e) if e.container_id == id => Some(e),
            _ => None,
        })
        .collect()
}

pub fn count_kind(seen: &[DockerOutput], id: &str, kind: ContainerEventKind) -> usize {
    events_for(seen, id)
        .iter()
        .filter(|e| e.kind == kind)
        .count()
}

pub fn has_status(seen: &[DockerOutput], reachable: bool, contains: &str) -> bool {
    seen.iter().any(|o| {
        matches!(o, DockerOutput::Status(s) if s.reachable == reachable && s.message.contains(contains))
    })
}

pub fn has_inventory(seen: &[DockerOutput]) -> bool {
    seen.iter().any(|o| matches!(o, DockerOutput::Inventory(_)))
}

// ---------------------------------------------------------------- byte pumps

async fn write_all(w: &OwnedWriteHalf, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        w.writable().await?;
        match w.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn read_some(r: &OwnedReadHalf, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        r.readable().await?;
        match r.try_read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

async fn pump(r: OwnedReadHalf, w: OwnedWriteHalf) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = read_some(&r, &mut buf).await {
        if n == 0 || write_all(&w, &buf[..n]).await.is_err() {
            break;
        }
    }
}

// ---------------------------------------------------------------- proxy

/// A unix-socket forwarder in front of the real engine socket. `cut` drops every
/// connection and removes the socket file; `restore` listens again.
pub struct Proxy {
    pub path: PathBuf,
    upstream: PathBuf,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    pub fn start(path: &Path, upstream: &Path) -> Self {
        let p = Self {
            path: path.to_path_buf(),
            upstream: upstream.to_path_buf(),
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        p.restore();
        p
    }

    pub fn restore(&self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).expect("bind proxy");
        let upstream = self.upstream.clone();
        let tasks = Arc::clone(&self.tasks);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let conn = tokio::spawn(async move {
                    let Ok(server) = UnixStream::connect(&upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = pump(cr, sw);
                    let down = pump(sr, cw);
                    // Either direction closing ends the connection (like a dropped socket).
                    tokio::select! {
                        () = up => {}
                        () = down => {}
                    }
                });
                tasks.lock().unwrap().push(conn.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
    }

    pub fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

// ---------------------------------------------------------------- fake engine

/// What the fake engine answers.
pub enum Reply {
    /// A JSON body with Content-Length.
    Json(u16, String),
    /// A chunked NDJSON stream of these lines; then hold the connection open or end it.
    Stream(Vec<String>, bool),
}

pub type Router = Arc<dyn Fn(&str, &HashMap<String, String>) -> Reply + Send + Sync>;

/// A fake engine on a unix socket. Records every request path with its query.
pub struct FakeEngine {
    pub path: PathBuf,
    pub requests: Arc<Mutex<Vec<String>>>,
    accept: AbortHandle,
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Strips "/v1.41" from "/v1.41/containers/json".
fn strip_version(p: &str) -> &str {
    if let Some(rest) = p.strip_prefix("/v")
        && let Some(i) = rest.find('/')
        && rest[..i].chars().all(|c| c.is_ascii_digit() || c == '.')
    {
        return &rest[i..];
    }
    p
}

async fn serve_conn(stream: UnixStream, router: Router, requests: Arc<Mutex<Vec<String>>>) {
    let (r, w) = stream.into_split();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 8192];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|x| x == b"\r\n\r\n") {
                break i + 4;
            }
            match read_some(&r, &mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end);
        let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let path = strip_version(path).to_owned();
        requests.lock().unwrap().push(format!("{path}?{query}"));
        match router(&path, &parse_query(query)) {
            Reply::Json(status, body) => {
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nApi-Version: 1.41\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if write_all(&w, resp.as_bytes()).await.is_err() {
                    return;
                }
            }
            Reply::Stream(lines, hold) => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
                if write_all(&w, head.as_bytes()).await.is_err() {
                    return;
                }
                for l in lines {
                    let data = format!("{l}\n");
                    let c = format!("{:x}\r\n{data}\r\n", data.len());
                    if write_all(&w, c.as_bytes()).await.is_err() {
                        return;
                    }
                }
                if hold {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let _ = write_all(&w, b"0\r\n\r\n").await;
                return;
            }
        }
    }
}

impl FakeEngine {
    pub fn start(path: &Path, router: Router) -> Self {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind fake engine");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reqs = Arc::clone(&requests);
        let accept = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve_conn(s, Arc::clone(&router), Arc::clone(&reqs)));
            }
        });
        Self {
            path: path.to_path_buf(),
            requests,
            accept: accept.abort_handle(),
        }
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Parses an events `since` argument ("secs.nanos") into nanoseconds.
pub fn since_ns(q: &HashMap<String, String>) -> Option<i64> {
    let s = q.get("since")?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    let frac = format!("{frac:0<9}");
    Some(secs.parse::<i64>().ok()? * 1_000_000_000 + frac[..9].parse::<i64>().ok()?)
}
