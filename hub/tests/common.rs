//! Shared helpers for the hub's integration tests: an in-process hub on
//! 127.0.0.1 with ephemeral ports, enrolled agents, and an HTTP client.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wingman_agent::enroll::{EnrollOptions, enroll};
use wingman_agent::state::Identity;
use wingman_agent::{AgentConfig, LinkStats};
use wingman_hub::{Hub, HubConfig, Listeners};
use wingman_protocol::HostKind;

pub struct TestHub {
    pub hub: Hub,
    pub quic: SocketAddr,
    pub http: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<Result<(), wingman_hub::HubError>>>,
    pub dir: TempDir,
}

impl TestHub {
    pub async fn start(tweak: impl FnOnce(&mut HubConfig)) -> Self {
        wingman_agent::tls::install_default_provider();
        let dir = tempfile::tempdir().unwrap();
        let mut config = HubConfig {
            data_dir: dir.path().join("hub"),
            ..HubConfig::default()
        };
        config.quic.listen = "127.0.0.1:0".parse().unwrap();
        config.http.listen = "127.0.0.1:0".parse().unwrap();
        config.agents.heartbeat_interval_ms = 200;
        config.agents.offline_after_ms = 1_000;
        tweak(&mut config);
        Self::start_with(config, dir).await
    }

    pub async fn start_with(config: HubConfig, dir: TempDir) -> Self {
        let listeners = Listeners::bind(&config).await.unwrap();
        let quic = listeners.quic_addr().unwrap();
        let http = listeners.http_addr().unwrap();
        let hub = Hub::open(config).await.unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(wingman_hub::run(hub.clone(), listeners, shutdown.clone()));
        Self {
            hub,
            quic,
            http,
            shutdown,
            task: Some(task),
            dir,
        }
    }

    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }

    pub async fn token(&self) -> String {
        wingman_hub::commands::create_token(&self.hub, 600, &self.quic.to_string())
            .await
            .unwrap()
            .token
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub async fn enroll(&self, dir: &Path) -> Identity {
        let token = self.token().await;
        enroll(&self.enroll_opts(dir, &token, self.hub.pki.fingerprint()))
            .await
            .unwrap()
    }

    pub fn enroll_opts(&self, dir: &Path, token: &str, fp: &str) -> EnrollOptions {
        EnrollOptions {
            hub: self.quic.to_string(),
            token: token.to_string(),
            ca_sha256: fp.to_string(),
            state_dir: dir.to_path_buf(),
            force: false,
            host_kind: HostKind::Plain,
            hostname: "test-node".into(),
        }
    }

    /// A signed-in browser session of `admin` (created through the store):
    /// a client and the `cookie` header value.
    pub async fn browser_session(&self) -> (reqwest::Client, String) {
        let _ = self.api_key().await;
        let user = self.hub.store.user_by_name("admin").await.unwrap().unwrap();
        let id = hex::encode(rand::random::<[u8; 16]>());
        let now = wingman_agent::now_ms();
        self.hub
            .store
            .create_session(&wingman_hub::store::SessionRow {
                id_hash: wingman_hub::auth::sha256_hex(&id),
                user_id: user.id,
                csrf_token: "csrf-test".into(),
                created_at: now,
                last_seen: now,
                expires_at: now + 3_600_000,
            })
            .await
            .unwrap();
        (http_client(), format!("wingman_session={id}"))
    }

    pub async fn api_key(&self) -> String {
        if self
            .hub
            .store
            .user_by_name("admin")
            .await
            .unwrap()
            .is_none()
        {
            wingman_hub::commands::add_user(
                &self.hub,
                "admin",
                "correct-horse-battery",
                "admin",
                false,
            )
            .await
            .unwrap();
        }
        wingman_hub::commands::create_api_key(&self.hub, "tests", "admin", 1)
            .await
            .unwrap()
    }
}

pub struct TestAgent {
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<Result<(), wingman_agent::AgentError>>>,
    pub stats: Arc<Mutex<LinkStats>>,
}

impl TestAgent {
    pub fn start(state_dir: &Path) -> Self {
        Self::start_with(state_dir, |_| {})
    }

    pub fn start_with(state_dir: &Path, tweak: impl FnOnce(&mut AgentConfig)) -> Self {
        Self::start_kind(state_dir, HostKind::Plain, tweak)
    }

    pub fn start_kind(
        state_dir: &Path,
        kind: HostKind,
        tweak: impl FnOnce(&mut AgentConfig),
    ) -> Self {
        let mut cfg = AgentConfig {
            state_dir: state_dir.to_path_buf(),
            ..AgentConfig::default()
        };
        cfg.facts.sample_interval_ms = 200;
        cfg.facts.max_interval_ms = 400;
        cfg.link.reconnect_min_ms = 100;
        cfg.link.reconnect_max_ms = 400;
        cfg.logs.journal.enabled = false;
        cfg.logs.window_ms = 300;
        tweak(&mut cfg);
        let shutdown = CancellationToken::new();
        let stats = Arc::new(Mutex::new(LinkStats::default()));
        let task = tokio::spawn(wingman_agent::run(
            cfg,
            kind,
            stats.clone(),
            shutdown.clone(),
        ));
        Self {
            shutdown,
            task: Some(task),
            stats,
        }
    }

    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }

    pub fn stats(&self) -> LinkStats {
        self.stats.lock().unwrap().clone()
    }
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}
