//! `wingman-hub`: the central server. It runs the enrollment CA ([`pki`]),
//! accepts agents over mutual-TLS QUIC ([`transport`]), stores what they report
//! ([`store`]) and serves the API and dashboard ([`http`]).
//!
//! [`run`] is the whole lifecycle: `run(config, listeners, shutdown)`. The
//! binary in `main.rs` only parses the command line and calls into
//! [`commands`] or [`run`].

pub mod audit;
pub mod auth;
pub mod chat;
pub mod commands;
pub mod config;
pub mod control;
pub mod engine;
pub mod http;
pub mod incidents;
pub mod ingest;
pub mod init;
pub mod llm;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod pki;
pub mod plans;
pub mod pve_webhook;
pub mod reasoner;
pub mod recall;
pub mod retention;
pub mod signal_map;
pub mod skills;
pub mod store;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use config::HubConfig;
use pki::HubPki;
use store::DynStore;
use transport::Registry;

/// Errors starting the hub.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The data dir or CA is unusable.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// The database is unusable.
    #[error("{0}")]
    Store(#[from] store::StoreError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Anything else while starting.
    #[error("{0}")]
    Other(String),
}

/// The hub's shared state; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    /// Settings.
    pub config: Arc<HubConfig>,
    /// The store.
    pub store: DynStore,
    /// The CA.
    pub pki: Arc<HubPki>,
    /// Live identity state.
    pub registry: Arc<Registry>,
    /// The ingest writer's queue; when it is full agents get a busy reply.
    pub ingest: ingest::IngestQueue,
    ingest_rx: ingest::PendingWriter,
    /// The hub's own redaction scan over everything log-derived.
    pub redactor: Arc<wingman_protocol::logs::Redactor>,
    /// Built-in and operator skills.
    pub skills: Arc<skills::Library>,
    /// The incident engine's handle.
    pub incidents: incidents::Incidents,
    /// The reasoning layer (model narratives, chat).
    pub reasoner: reasoner::Reasoner,
    /// Delivery counters (`/metrics`, node pages).
    pub metrics: Arc<metrics::Metrics>,
    engine_rx: Arc<std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<incidents::EngineInput>>>>,
    /// The notification task's handle.
    pub notify: notify::service::Notify,
    /// The audit trail (append side).
    pub audit: Arc<audit::AuditLog>,
    /// The control plane: plans, approvals, signed execution, probes.
    pub control: Arc<plans::Control>,
    /// Retrieval (`None` when `[memory] enabled = false`).
    pub memory: Option<Arc<recall::Memory>>,
    notify_rx:
        Arc<std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<notify::service::NotifyInput>>>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.config)
            .field("store", &self.store.backend())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// Opens the data dir (creating the CA on first start) and the store, and
    /// loads the live identity state.
    pub async fn open(config: HubConfig) -> Result<Self, HubError> {
        let pki = HubPki::load_or_create(&config.data_dir)?;
        let store = store::open(&config.database_url()).await?;
        let registry = Registry::default();
        let now = wingman_agent::now_ms();
        registry.load(
            store.active_certificates(now).await?,
            store.revoked_agents().await?,
        );
        let skills = skills::load_all(&config.skills_dir);
        for p in &skills.problems {
            tracing::warn!(problem = %p, "skill skipped");
        }
        let (incidents, engine_rx) = incidents::Incidents::new();
        let (notify, notify_rx) = notify::service::Notify::new();
        let audit = Arc::new(audit::AuditLog::open(store.clone()).await?);
        let memory = recall::Memory::open(&config.memory, &store)
            .await
            .map_err(HubError::Other)?
            .map(Arc::new);
        // SQLite has one writer at a time; PostgreSQL commits in parallel.
        let writers = if store.backend() == "postgres" { 2 } else { 1 };
        let (ingest_queue, ingest_rx) =
            ingest::IngestQueue::sharded(config.agents.ingest_queue, writers);
        let skills = Arc::new(skills);
        let redactor = Arc::new(wingman_protocol::logs::Redactor::new(
            &wingman_protocol::logs::RedactConfig::default(),
        ));
        let reasoner = reasoner::Reasoner::new(
            config.reasoner.clone(),
            &config.llm,
            store.clone(),
            redactor.clone(),
            skills.clone(),
        );
        if let Some(m) = &memory {
            reasoner.set_memory(m.clone());
        }
        let pki = Arc::new(pki);
        let registry = Arc::new(registry);
        let control = plans::Control::open(
            store.clone(),
            audit.clone(),
            registry.clone(),
            pki.clone(),
            config.control.clone(),
        )
        .await
        .map_err(HubError::Other)?;
        Ok(Self {
            control,
            incidents,
            reasoner,
            engine_rx: Arc::new(std::sync::Mutex::new(Some(engine_rx))),
            notify,
            audit,
            memory,
            notify_rx: Arc::new(std::sync::Mutex::new(Some(notify_rx))),
            metrics: Arc::new(metrics::Metrics::default()),
            skills,
            ingest: ingest_queue,
            ingest_rx: Arc::new(std::sync::Mutex::new(ingest_rx)),
            redactor,
            config: Arc::new(config),
            store,
            pki,
            registry,
        })
    }
}

/// The hub's sockets, bound before [`run`] so callers (tests, quickstart) can
/// use port 0 and learn the real addresses.
#[derive(Debug)]
pub struct Listeners {
    /// UDP socket for QUIC.
    pub quic: std::net::UdpSocket,
    /// TCP listener for HTTP.
    pub http: tokio::net::TcpListener,
}

impl Listeners {
    /// Binds both listeners at the configured addresses.
    pub async fn bind(config: &HubConfig) -> Result<Self, HubError> {
        let quic =
            std::net::UdpSocket::bind(config.quic.listen).map_err(|source| HubError::Bind {
                addr: config.quic.listen,
                source,
            })?;
        let http = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .map_err(|source| HubError::Bind {
                addr: config.http.listen,
                source,
            })?;
        Ok(Self { quic, http })
    }

    /// The bound QUIC address.
    pub fn quic_addr(&self) -> Result<SocketAddr, HubError> {
        self.quic
            .local_addr()
            .map_err(|e| HubError::Other(e.to_string()))
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> Result<SocketAddr, HubError> {
        self.http
            .local_addr()
            .map_err(|e| HubError::Other(e.to_string()))
    }
}

/// The notification settings to start with: the dashboard-saved document
/// when there is a valid one, else `[notify]` from the config.
async fn notify_settings(hub: &Hub) -> (notify::NotifyConfig, notify::service::ConfigSource) {
    use notify::service::{ConfigSource, SETTING_KEY};
    match hub.store.get_setting(SETTING_KEY).await {
        Ok(Some(row)) => match serde_json::from_str::<notify::NotifyConfig>(&row.value) {
            Ok(c) => return (c, ConfigSource::Dashboard),
            Err(error) => {
                tracing::warn!(%error, "saved notification settings are invalid; using hub.toml")
            }
        },
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "cannot read notification settings; using hub.toml"),
    }
    (hub.config.notify.clone(), ConfigSource::File)
}

/// Runs the hub on `listeners` until `shutdown` fires, then drains tasks for
/// up to 10 seconds.
pub async fn run(
    hub: Hub,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), HubError> {
    let quic_addr = listeners.quic_addr()?;
    let http_addr = listeners.http_addr()?;
    let server_config =
        transport::server_config(&hub).map_err(|e| HubError::Other(e.to_string()))?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| HubError::Other("no async runtime for QUIC".into()))?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config),
        listeners.quic,
        runtime,
    )
    .map_err(|source| HubError::Bind {
        addr: quic_addr,
        source,
    })?;
    let tracker = TaskTracker::new();
    tracker.spawn(transport::serve(
        hub.clone(),
        endpoint,
        shutdown.clone(),
        tracker.clone(),
    ));
    tracker.spawn(transport::presence_loop(hub.clone(), shutdown.clone()));
    let writers = hub
        .ingest_rx
        .lock()
        .map(|mut r| std::mem::take(&mut *r))
        .unwrap_or_default();
    for rx in writers {
        tracker.spawn(ingest::writer(hub.store.clone(), rx, shutdown.clone()));
    }
    if let Some(rx) = hub.engine_rx.lock().ok().and_then(|mut r| r.take()) {
        tracker.spawn(incidents::run(hub.clone(), rx, shutdown.clone()));
    }
    if let Some(rx) = hub.notify_rx.lock().ok().and_then(|mut r| r.take()) {
        let (config, source) = notify_settings(&hub).await;
        tracker.spawn(notify::service::run(config, source, rx, shutdown.clone()));
    }
    tracker.spawn(retention::run(hub.clone(), shutdown.clone()));
    tracker.spawn(recall::run(hub.clone(), shutdown.clone()));
    tracker.spawn(hub.reasoner.clone().run(shutdown.clone()));
    tracker.spawn(transport::revocation_loop(hub.clone(), shutdown.clone()));
    tracker.spawn(hub.control.clone().run(shutdown.clone()));
    let app = http::router(http::AppState::new(hub.clone()));
    let http_shutdown = shutdown.clone();
    tracker.spawn(async move {
        let serve = axum::serve(
            listeners.http,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { http_shutdown.cancelled().await });
        if let Err(error) = serve.await {
            tracing::error!(%error, "HTTP server failed");
        }
    });
    info!(%quic_addr, %http_addr, backend = hub.store.backend(), ca_sha256 = hub.pki.fingerprint(), "hub running");
    shutdown.cancelled().await;
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(10), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop within 10 s");
    }
    info!("hub stopped");
    Ok(())
}
