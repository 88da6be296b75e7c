//! Loopback test double of the Proxmox VE REST API (`integrations.md` §1.9).
//!
//! * HTTPS on 127.0.0.1:0 with an rcgen self-signed certificate (so clients
//!   must pin its SHA-256), `/api2/json/…`, `{"data": …}` envelope, `total`
//!   on task lists and logs, `message` on errors.
//! * Token auth (`Authorization: PVEAPIToken=<id>=<secret>`): unknown or
//!   wrong → 401 `{"data":null}`; missing privilege → 403 "Permission check
//!   failed (<path>, <privs>)".
//! * "API down": every request answers 500, or the port refuses
//!   connections (listener closed, open connections dropped), switchable.
//! * Mutable state (guests, storage fill, ZFS/SMART health, HA state,
//!   quorum, fencing, apt) that tests change through [`PveTestServer::state`].
//! * Actions return a fresh UPID; the task runs for `task_duration` and ends
//!   OK or with `TASK ERROR` (see [`SimState::fail_next`]); HA-managed
//!   guests get `hastart`/`hastop`/`hamigrate` plus the LRM worker task. If a
//!   task directory is configured, tasks are written there in the real
//!   layout ([`taskdir`]).
//!
//! Field names and types follow the PVE 9.1 schema; fixtures carry extra
//! fields to prove clients ignore them.
// Handlers return `Err(Response)` early; boxing it would only add noise.
#![allow(dead_code, unreachable_pub, clippy::result_large_err)]

pub mod taskdir;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use self::taskdir::{TaskDirSim, upid_string};

/// Privileges of the built-in `PVEAuditor` role (`AccessControl.pm`).
pub const AUDITOR: &[&str] = &[
    "VM.Audit",
    "VM.GuestAgent.Audit",
    "Sys.Audit",
    "Datastore.Audit",
    "SDN.Audit",
    "Pool.Audit",
    "Mapping.Audit",
];

/// An API token and the privileges it holds on `/` (propagated).
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// `user@realm!tokenid`.
    pub id: String,
    /// Secret.
    pub secret: String,
    /// Privileges.
    pub privs: Vec<String>,
}

impl TokenSpec {
    /// Convenience constructor.
    pub fn new(id: &str, secret: &str, privs: &[&str]) -> Self {
        Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
            privs: privs.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    fn has(&self, p: &str) -> bool {
        self.privs.iter().any(|x| x == p)
    }

    fn user(&self) -> &str {
        &self.id
    }
}

/// A VM or container.
#[derive(Debug, Clone)]
pub struct SimGuest {
    pub vmid: u32,
    /// "qemu" or "lxc".
    pub kind: &'static str,
    pub name: String,
    pub node: String,
    /// "running", "stopped", "paused".
    pub status: String,
    pub cpu: f64,
    pub mem: u64,
    pub maxmem: u64,
    pub disk: u64,
    pub maxdisk: u64,
    pub uptime: u64,
    pub tags: String,
    pub lock: Option<String>,
    pub template: bool,
    pub snapshots: Vec<String>,
    /// HA-managed.
    pub ha: bool,
    /// HA requested state ("started"/"stopped").
    pub ha_request: String,
    /// HA verbose state ("started", "starting", "stopped", "fence", "error", …).
    pub ha_state: String,
}

impl SimGuest {
    pub fn new(vmid: u32, kind: &'static str, name: &str, node: &str, running: bool) -> Self {
        Self {
            vmid,
            kind,
            name: name.to_owned(),
            node: node.to_owned(),
            status: if running { "running" } else { "stopped" }.to_owned(),
            cpu: if running { 0.02 } else { 0.0 },
            mem: if running { 1_073_741_824 } else { 0 },
            maxmem: 4_294_967_296,
            disk: if kind == "lxc" { 2_147_483_648 } else { 0 },
            maxdisk: 34_359_738_368,
            uptime: if running { 86_400 } else { 0 },
            tags: String::new(),
            lock: None,
            template: false,
            snapshots: Vec::new(),
            ha: false,
            ha_request: String::new(),
            ha_state: String::new(),
        }
    }

    fn sid(&self) -> String {
        format!(
            "{}:{}",
            if self.kind == "lxc" { "ct" } else { "vm" },
            self.vmid
        )
    }

    fn prefix(&self) -> &'static str {
        if self.kind == "lxc" { "vz" } else { "qm" }
    }
}

/// A storage.
#[derive(Debug, Clone)]
pub struct SimStorage {
    pub storage: String,
    pub kind: String,
    pub content: String,
    pub total: u64,
    pub used: u64,
    pub active: bool,
    pub shared: bool,
}

/// A ZFS pool (`detail` is the `/disks/zfs/{name}` answer).
#[derive(Debug, Clone)]
pub struct SimZfs {
    pub name: String,
    pub health: String,
    pub size: u64,
    pub alloc: u64,
    pub detail: Value,
}

/// A disk of `/disks/list`.
#[derive(Debug, Clone)]
pub struct SimDisk {
    pub devpath: String,
    pub model: String,
    pub serial: String,
    /// "PASSED", "FAILED!", "OK", "UNKNOWN".
    pub health: String,
    /// Number or "N/A".
    pub wearout: Value,
    /// hdd|ssd|nvme.
    pub kind: String,
}

/// A task.
#[derive(Debug, Clone)]
pub struct SimTask {
    pub upid: String,
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: u64,
    pub task_type: String,
    pub id: String,
    pub user: String,
    pub endtime: Option<u64>,
    pub exitstatus: Option<String>,
    pub log: Vec<String>,
}

/// A request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Option<Value>,
}

/// How the API is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownMode {
    /// Serving.
    Up,
    /// Every request answers 500.
    Http500,
    /// The port refuses connections.
    Refuse,
}

/// Everything the fake node knows.
#[derive(Debug)]
pub struct SimState {
    pub node: String,
    pub cluster_name: Option<String>,
    pub quorate: bool,
    /// (name, online).
    pub nodes: Vec<(String, bool)>,
    pub guests: Vec<SimGuest>,
    pub storages: Vec<SimStorage>,
    pub zfs: Vec<SimZfs>,
    pub disks: Vec<SimDisk>,
    /// (package, old, new, origin).
    pub apt: Vec<(String, String, String, String)>,
    pub tokens: Vec<TokenSpec>,
    pub tasks: Vec<SimTask>,
    pub requests: Vec<Recorded>,
    /// Node being fenced (its LRM looks dead, its HA services are in
    /// "fence").
    pub fence_node: Option<String>,
    /// How long a task runs.
    pub task_duration: Duration,
    /// Delay between an HA request task and the LRM's worker task.
    pub ha_delay: Duration,
    /// Next task of this type fails with this error.
    pub fail_next: HashMap<String, String>,
    /// Write tasks here in the real layout.
    pub task_dir: Option<TaskDirSim>,
    next_pid: u32,
}

impl SimState {
    /// A 2-node cluster "homelab"; this node is pve1.
    pub fn homelab() -> Self {
        let mut db = SimGuest::new(102, "qemu", "db", "pve1", true);
        db.ha = true;
        db.ha_request = "started".into();
        db.ha_state = "started".into();
        let mut web = SimGuest::new(100, "qemu", "web", "pve1", true);
        web.tags = "prod;web".into();
        web.snapshots = vec!["before_upgrade".into()];
        let mut tpl = SimGuest::new(103, "qemu", "debian-tpl", "pve1", false);
        tpl.template = true;
        let mut other = SimGuest::new(200, "qemu", "media", "pve2", true);
        other.ha = true;
        other.ha_request = "started".into();
        other.ha_state = "started".into();
        let gib = 1_073_741_824u64;
        Self {
            node: "pve1".into(),
            cluster_name: Some("homelab".into()),
            quorate: true,
            nodes: vec![("pve1".into(), true), ("pve2".into(), true)],
            guests: vec![
                web,
                SimGuest::new(101, "lxc", "dns", "pve1", true),
                db,
                tpl,
                other,
            ],
            storages: vec![
                SimStorage {
                    storage: "local".into(),
                    kind: "dir".into(),
                    content: "iso,vztmpl,backup".into(),
                    total: 100 * gib,
                    used: 40 * gib,
                    active: true,
                    shared: false,
                },
                SimStorage {
                    storage: "local-zfs".into(),
                    kind: "zfspool".into(),
                    content: "images,rootdir".into(),
                    total: 400 * gib,
                    used: 120 * gib,
                    active: true,
                    shared: false,
                },
            ],
            zfs: vec![SimZfs {
                name: "rpool".into(),
                health: "ONLINE".into(),
                size: 480 * gib,
                alloc: 130 * gib,
                detail: zfs_detail_online("rpool"),
            }],
            disks: vec![
                SimDisk {
                    devpath: "/dev/sda".into(),
                    model: "Samsung_SSD_870_EVO_500GB".into(),
                    serial: "S6PXNX0T123456A".into(),
                    health: "PASSED".into(),
                    wearout: json!(97),
                    kind: "ssd".into(),
                },
                SimDisk {
                    devpath: "/dev/sdb".into(),
                    model: "WDC_WD40EFRX-68N32N0".into(),
                    serial: "WD-WCC7K1234567".into(),
                    health: "PASSED".into(),
                    wearout: json!("N/A"),
                    kind: "hdd".into(),
                },
            ],
            apt: vec![
                (
                    "pve-manager".into(),
                    "9.1.1".into(),
                    "9.1.2".into(),
                    "Proxmox".into(),
                ),
                (
                    "openssl".into(),
                    "3.5.1-1".into(),
                    "3.5.1-1+deb13u1".into(),
                    "Debian".into(),
                ),
            ],
            tokens: vec![
                TokenSpec::new(
                    "wingman@pve!monitor",
                    "11111111-1111-4111-8111-111111111111",
                    AUDITOR,
                ),
                TokenSpec::new(
                    "wingman@pve!actor",
                    "22222222-2222-4222-8222-222222222222",
                    &[
                        "VM.Audit",
                        "VM.PowerMgmt",
                        "VM.Snapshot",
                        "VM.Snapshot.Rollback",
                        "VM.Migrate",
                        "VM.Backup",
                        "Datastore.AllocateSpace",
                        "Datastore.Audit",
                        "Sys.Audit",
                    ],
                ),
                TokenSpec::new(
                    "wingman@pve!limited",
                    "33333333-3333-4333-8333-333333333333",
                    &["VM.Audit", "Datastore.Audit"],
                ),
            ],
            tasks: Vec::new(),
            requests: Vec::new(),
            fence_node: None,
            task_duration: Duration::from_millis(300),
            ha_delay: Duration::from_millis(150),
            fail_next: HashMap::new(),
            task_dir: None,
            next_pid: 0x1000,
        }
    }

    pub fn guest_mut(&mut self, vmid: u32) -> Option<&mut SimGuest> {
        self.guests.iter_mut().find(|g| g.vmid == vmid)
    }

    pub fn storage_mut(&mut self, id: &str) -> Option<&mut SimStorage> {
        self.storages.iter_mut().find(|s| s.storage == id)
    }

    /// Requests whose path contains `needle`.
    pub fn requests_matching(&self, needle: &str) -> Vec<Recorded> {
        self.requests
            .iter()
            .filter(|r| r.path.contains(needle))
            .cloned()
            .collect()
    }
}

/// `/disks/zfs/{name}` for a healthy single-mirror pool.
pub fn zfs_detail_online(name: &str) -> Value {
    json!({
        "name": name,
        "state": "ONLINE",
        "scan": "scrub repaired 0B in 00:12:41 with 0 errors on Sun Jun  8 00:36:42 2025",
        "errors": "No known data errors",
        "children": [{
            "name": name, "state": "ONLINE", "read": 0, "write": 0, "cksum": 0, "msg": "",
            "children": [{
                "name": "mirror-0", "state": "ONLINE", "read": 0, "write": 0, "cksum": 0, "msg": "",
                "children": [
                    {"name": "ata-Samsung_SSD_870_EVO_500GB_S6PXNX0T123456A-part3", "state": "ONLINE", "read": 0, "write": 0, "cksum": 0, "msg": "", "leaf": 1},
                    {"name": "ata-Samsung_SSD_870_EVO_500GB_S6PXNX0T654321B-part3", "state": "ONLINE", "read": 0, "write": 0, "cksum": 0, "msg": "", "leaf": 1}
                ]
            }]
        }]
    })
}

/// `/disks/zfs/{name}` for a pool with one faulted mirror leg.
pub fn zfs_detail_degraded(name: &str) -> Value {
    json!({
        "name": name,
        "state": "DEGRADED",
        "status": "One or more devices could not be used because the label is missing or\ninvalid.  Sufficient replicas exist for the pool to continue\nfunctioning in a degraded state.",
        "action": "Replace the device using 'zpool replace'.",
        "scan": "resilvered 1.20G in 00:03:10 with 0 errors on Mon Jun  9 03:10:00 2025",
        "errors": "No known data errors",
        "children": [{
            "name": name, "state": "DEGRADED", "read": 0, "write": 0, "cksum": 0, "msg": "",
            "children": [{
                "name": "mirror-0", "state": "DEGRADED", "read": 0, "write": 0, "cksum": 0, "msg": "",
                "children": [
                    {"name": "ata-Samsung_SSD_870_EVO_500GB_S6PXNX0T123456A-part3", "state": "ONLINE", "read": 0, "write": 0, "cksum": 0, "msg": "", "leaf": 1},
                    {"name": "12345678901234567890", "state": "UNAVAIL", "read": 3, "write": 0, "cksum": 12, "msg": "was /dev/disk/by-id/ata-Samsung_SSD_870_EVO_500GB_S6PXNX0T654321B-part3", "leaf": 1}
                ]
            }]
        }]
    })
}

/// Server-side shared state (opaque to tests).
pub struct Shared {
    state: Mutex<SimState>,
    down: watch::Sender<DownMode>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake PVE API.
pub struct PveTestServer {
    /// Bound address.
    pub addr: SocketAddr,
    /// `https://127.0.0.1:<port>/api2/json`.
    pub base_url: String,
    /// SHA-256 of the served certificate.
    pub fingerprint: [u8; 32],
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

impl Drop for PveTestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl PveTestServer {
    /// Starts serving `state` on 127.0.0.1 with a fresh certificate.
    pub async fn start(state: SimState) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let ck =
            rcgen::generate_simple_self_signed(vec![state.node.clone(), "localhost".to_owned()])?;
        let cert_der = ck.cert.der().clone();
        let fingerprint: [u8; 32] = sha2::Digest::finalize(
            <sha2::Sha256 as sha2::Digest>::new_with_prefix(cert_der.as_ref()),
        )
        .into();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key)?;
        let acceptor = TlsAcceptor::from(Arc::new(tls));

        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (down_tx, down_rx) = watch::channel(DownMode::Up);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            down: down_tx,
        });
        let app = router(shared.clone());
        let shutdown = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            addr,
            acceptor,
            app,
            down_rx,
            shutdown.clone(),
        ));
        Ok(Self {
            addr,
            base_url: format!("https://{addr}/api2/json"),
            fingerprint,
            shared,
            shutdown,
        })
    }

    /// Locks the state for inspection or change.
    pub fn state(&self) -> MutexGuard<'_, SimState> {
        self.shared.lock()
    }

    /// Switches "API down" modes.
    pub fn set_down(&self, mode: DownMode) {
        self.shared.down.send_replace(mode);
    }

    /// Client settings for a token of the fixture (the only agent-specific
    /// helper here; drop it when copying the server elsewhere).
    pub fn client_config(&self, token_id: &str) -> wingman_agent::pve::PveClientConfig {
        let secret = self
            .state()
            .tokens
            .iter()
            .find(|t| t.id == token_id)
            .map(|t| t.secret.clone())
            .unwrap_or_else(|| "00000000-0000-4000-8000-000000000000".to_owned());
        let mut cfg = wingman_agent::pve::PveClientConfig::new(token_id, secret, self.fingerprint);
        cfg.base_url = self.base_url.clone();
        cfg.timeout = Duration::from_secs(5);
        cfg.connect_timeout = Duration::from_secs(2);
        cfg
    }

    /// Attaches a task directory (created now) that tasks are written to.
    pub fn attach_task_dir(&self, root: &std::path::Path) -> std::io::Result<()> {
        self.state().task_dir = Some(TaskDirSim::create(root)?);
        Ok(())
    }
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    mut down: watch::Receiver<DownMode>,
    shutdown: CancellationToken,
) {
    let mut listener = Some(listener);
    let mut generation = shutdown.child_token();
    loop {
        let mode = *down.borrow_and_update();
        if mode == DownMode::Refuse {
            // Close the port and every open connection.
            listener = None;
            generation.cancel();
            generation = shutdown.child_token();
        } else if listener.is_none() {
            for _ in 0..50 {
                match TcpListener::bind(addr).await {
                    Ok(l) => {
                        listener = Some(l);
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
        let accepted = match &listener {
            Some(l) => tokio::select! {
                _ = shutdown.cancelled() => return,
                r = down.changed() => { if r.is_err() { return; } continue; }
                a = l.accept() => a,
            },
            None => tokio::select! {
                _ = shutdown.cancelled() => return,
                r = down.changed() => { if r.is_err() { return; } continue; }
            },
        };
        let Ok((tcp, _)) = accepted else {
            continue;
        };
        let acceptor = acceptor.clone();
        let svc = hyper_util::service::TowerToHyperService::new(app.clone());
        let kill = generation.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await
            else {
                return;
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
            tokio::select! {
                _ = conn => {}
                _ = kill.cancelled() => {}
            }
        });
    }
}

type S = State<Arc<Shared>>;

fn ok(data: Value) -> Response {
    axum::Json(json!({ "data": data })).into_response()
}

fn ok_total(data: Value, total: usize) -> Response {
    axum::Json(json!({ "data": data, "total": total })).into_response()
}

fn err(status: StatusCode, msg: &str) -> Response {
    (
        status,
        axum::Json(json!({ "data": null, "message": format!("{msg}\n") })),
    )
        .into_response()
}

fn forbidden(path: &str, privs: &[&str]) -> Response {
    err(
        StatusCode::FORBIDDEN,
        &format!("Permission check failed ({path}, {})", privs.join("|")),
    )
}

/// The authenticated token, put into request extensions by the middleware.
#[derive(Clone)]
struct Auth(TokenSpec);

fn need(auth: &Auth, path: &str, any_of: &[&str]) -> Result<(), Response> {
    if any_of.iter().any(|p| auth.0.has(p)) {
        Ok(())
    } else {
        Err(forbidden(path, any_of))
    }
}

async fn gate(State(sh): S, mut req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let body_json: Option<Value> = serde_json::from_slice(&bytes).ok();
    sh.lock().requests.push(Recorded {
        method,
        path,
        query,
        body: body_json,
    });
    req = Request::from_parts(parts, axum::body::Body::from(bytes));
    if *sh.down.borrow() == DownMode::Http500 {
        return err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "proxy loop detected / service unavailable (simulated)",
        );
    }
    let token = auth_token(req.headers()).and_then(|(id, secret)| {
        sh.lock()
            .tokens
            .iter()
            .find(|t| t.id == id && t.secret == secret)
            .cloned()
    });
    let Some(token) = token else {
        // PVE answers 401 with an empty data envelope.
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "data": null })),
        )
            .into_response();
    };
    req.extensions_mut().insert(Auth(token));
    next.run(req).await
}

/// `PVEAPIToken=<id>=<secret>` or `PVEAPIToken <id>=<secret>`.
fn auth_token(h: &HeaderMap) -> Option<(String, String)> {
    let v = h.get("authorization")?.to_str().ok()?;
    let rest = v.strip_prefix("PVEAPIToken")?;
    let rest = rest.strip_prefix('=').or_else(|| rest.strip_prefix(' '))?;
    let (id, secret) = rest.split_once('=')?;
    Some((id.to_owned(), secret.to_owned()))
}

fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/version", get(version))
        .route("/cluster/status", get(cluster_status))
        .route("/cluster/resources", get(cluster_resources))
        .route("/cluster/ha/status/current", get(ha_status))
        .route("/nodes/{node}/status", get(node_status))
        .route("/nodes/{node}/qemu", get(guest_list_qemu))
        .route("/nodes/{node}/lxc", get(guest_list_lxc))
        .route("/nodes/{node}/storage", get(storage))
        .route("/nodes/{node}/disks/zfs", get(zfs_list))
        .route("/nodes/{node}/disks/zfs/{name}", get(zfs_detail))
        .route("/nodes/{node}/disks/list", get(disks))
        .route("/nodes/{node}/apt/update", get(apt))
        .route("/nodes/{node}/tasks", get(tasks))
        .route("/nodes/{node}/tasks/{upid}/status", get(task_status))
        .route("/nodes/{node}/tasks/{upid}/log", get(task_log))
        .route("/nodes/{node}/vzdump", post(vzdump))
        .route("/nodes/{node}/qemu/{vmid}/status/{verb}", post(power_qemu))
        .route("/nodes/{node}/lxc/{vmid}/status/{verb}", post(power_lxc))
        .route("/nodes/{node}/qemu/{vmid}/config", get(config_qemu))
        .route("/nodes/{node}/lxc/{vmid}/config", get(config_lxc))
        .route(
            "/nodes/{node}/qemu/{vmid}/snapshot",
            get(snapshots_qemu).post(snapshot_qemu),
        )
        .route(
            "/nodes/{node}/lxc/{vmid}/snapshot",
            get(snapshots_lxc).post(snapshot_lxc),
        )
        .route(
            "/nodes/{node}/qemu/{vmid}/snapshot/{snap}/rollback",
            post(rollback_qemu),
        )
        .route(
            "/nodes/{node}/lxc/{vmid}/snapshot/{snap}/rollback",
            post(rollback_lxc),
        )
        .route("/nodes/{node}/qemu/{vmid}/migrate", post(migrate_qemu))
        .route("/nodes/{node}/lxc/{vmid}/migrate", post(migrate_lxc))
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared);
    Router::new()
        .nest("/api2/json", api)
        .fallback(|| async { err(StatusCode::NOT_IMPLEMENTED, "Method not implemented") })
}

async fn version() -> Response {
    ok(json!({"version": "9.1.2", "release": "9.1", "repoid": "4b1e2c3d", "console": "html5"}))
}

async fn cluster_status(State(sh): S, axum::Extension(a): axum::Extension<Auth>) -> Response {
    if let Err(r) = need(&a, "/", &["Sys.Audit"]) {
        return r;
    }
    let st = sh.lock();
    let mut rows = Vec::new();
    if let Some(name) = &st.cluster_name {
        rows.push(json!({"type": "cluster", "id": "cluster", "name": name, "nodes": st.nodes.len(), "quorate": u8::from(st.quorate), "version": 7}));
    }
    for (i, (n, online)) in st.nodes.iter().enumerate() {
        rows.push(json!({
            "type": "node", "id": format!("node/{n}"), "name": n, "nodeid": i + 1,
            "ip": format!("192.0.2.{}", i + 10), "online": u8::from(*online),
            "local": u8::from(*n == st.node), "level": ""
        }));
    }
    ok(Value::Array(rows))
}

fn guest_json(g: &SimGuest) -> Value {
    let mut v = json!({
        "id": format!("{}/{}", g.kind, g.vmid), "type": g.kind, "vmid": g.vmid, "name": g.name,
        "node": g.node, "status": g.status, "cpu": g.cpu, "maxcpu": 2, "mem": g.mem,
        "maxmem": g.maxmem, "disk": g.disk, "maxdisk": g.maxdisk, "uptime": g.uptime,
        "template": u8::from(g.template), "netin": 12345, "netout": 54321,
        "diskread": 0, "diskwrite": 0, "tags": g.tags
    });
    if g.ha {
        v["hastate"] = json!(g.ha_state);
    }
    if let Some(l) = &g.lock {
        v["lock"] = json!(l);
    }
    v
}

async fn cluster_resources(
    State(sh): S,
    axum::Extension(a): axum::Extension<Auth>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let st = sh.lock();
    let mut rows = Vec::new();
    let t = q.get("type").map(String::as_str);
    if matches!(t, None | Some("vm")) && a.0.has("VM.Audit") {
        rows.extend(st.guests.iter().map(guest_json));
    }
    ok(Value::Array(rows))
}

async fn guest_list(sh: &Shared, a: &Auth, node: &str, kind: &str) -> Response {
    let st = sh.lock();
    if !a.0.has("VM.Audit") {
        return ok(json!([]));
    }
    let rows: Vec<Value> = st
        .guests
        .iter()
        .filter(|g| g.node == node && g.kind == kind)
        .map(|g| {
            let mut v = guest_json(g);
            if let Some(o) = v.as_object_mut() {
                o.remove("id");
                o.remove("node");
                o.remove("hastate");
                if kind == "qemu" {
                    o.remove("type");
                    o.insert("qmpstatus".into(), json!(g.status));
                }
                o.insert("cpus".into(), json!(2));
            }
            v
        })
        .collect();
    ok(Value::Array(rows))
}

async fn guest_list_qemu(
    State(sh): S,
    axum::Extension(a): axum::Extension<Auth>,
    Path(node): Path<String>,
) -> Response {
    guest_list(&sh, &a, &node, "qemu").await
}

async fn guest_list_lxc(
    State(sh): S,
    axum::Extension(a): axum::Extension<Auth>,
    Path(node): Path<String>,
) -> Response {
    guest_list(&sh, &a, &node, "lxc").await
}

async fn ha_status(State(sh): S, axum::Extension(a): axum::Extension<Auth>) -> Response {
    if let Err(r) = need(&a, "/", &["Sys.Audit"]) {
        return r;
    }
    let st = sh.lock();
    let ts = now_s();
    let mut rows = vec![json!({
        "id": "quorum", "type": "quorum", "node": st.node,
        "status": if st.quorate { "OK".to_owned() } else { format!("No quorum on node '{}'!", st.node) },
        "quorate": u8::from(st.quorate)
    })];
    let managed: Vec<&SimGuest> = st.guests.iter().filter(|g| g.ha).collect();
    if !managed.is_empty() {
        rows.push(json!({"id": "master", "type": "master", "node": st.node, "status": format!("{} (active, Tue Jun 10 10:00:00 2025)", st.node), "timestamp": ts}));
        rows.push(json!({"id": "fencing", "type": "fencing", "node": st.node, "status": "armed (CRM watchdog active)", "armed-state": "armed"}));
        for (n, _) in &st.nodes {
            let fenced = st.fence_node.as_deref() == Some(n.as_str());
            let status = if fenced {
                format!("{n} (old timestamp - dead?, watchdog standby, Tue Jun 10 09:58:00 2025)")
            } else {
                format!("{n} (active, watchdog active, Tue Jun 10 10:00:00 2025)")
            };
            rows.push(json!({"id": format!("lrm:{n}"), "type": "lrm", "node": n, "status": status, "timestamp": ts}));
        }
        for g in managed {
            let fenced = st.fence_node.as_deref() == Some(g.node.as_str());
            let state = if fenced { "fence" } else { g.ha_state.as_str() };
            let crm = if fenced {
                "fence"
            } else if g.ha_state == "starting" {
                "started"
            } else {
                g.ha_state.as_str()
            };
            rows.push(json!({
                "id": format!("service:{}", g.sid()), "type": "service", "sid": g.sid(),
                "node": g.node, "state": state, "crm_state": crm, "request_state": g.ha_request,
                "status": format!("{} ({}, {})", g.sid(), g.node, state),
                "max_restart": 1, "max_relocate": 1, "failback": 1
            }));
        }
    }
    ok(Value::Array(rows))
}

async fn node_status(
    State(sh): S,
    axum::Extension(a): axum::Extension<Auth>,
    Path(node): Path<String>,
) -> Response {
    if let Err(r) = need(&a, &format!("/nodes/{node}"), &["Sys.Audit"]) {
        return r;
    }
    let _st = sh.lock();
    ok(json!({
        "cpu": 0.0512, "wait": 0.001,
        "cpuinfo": {"model": "Intel(R) Core(TM) i5-8500T CPU @ 2.10GHz", "cpus": 6, "cores": 6, "sockets": 1, "mhz": "2100.000", "flags": "fpu vme"},
        "loadavg": ["0.42", "0.38", "0.35"],
        "memory": {"total": 33_554_432_000u64, "used": 12_884_901_888u64, "free": 20_669_530_112u64, "available": 20_000_000_000u64},
        "swap": {"total": 0, "used": 0, "free": 0},
        "rootfs": {"total": 100_000_000_000u64, "used": 9_500_000_000u64, "free": 90_500_000_000u64, "avail": 85_000_000_000u64},
        "ksm": {"shared": 0},
        "pveversion": "pve-manager/9.1.2/4b1e2c3d",
        "kversion": "Linux 6.14.11-4-pve #1 SMP PREEMPT_DYNAMIC PMX 6.14.11-4 (2025-10-10T08:04Z)",
        "current-kernel": {"sysname": "Linux", "release": "6.14.11-4-pve", "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.14.11-4 (2025-10-10T08:04Z)", "machine": "x86_64"},
        "boot-info": {"mode": "efi", "secureboot": 0},
        "uptime": 1_234_567,
        "idle": 0
    }))
}

async fn storage(
    State(sh): S,
    axum::Extension(a): axum::Extension<Auth>,
    Path(_node): Path<String>,
) -> Response {
    let st = sh.lock();
    if !(a.0.has("Datastore.Audit") || a.0.has("Datastore.AllocateSpace")) {
        return ok(json!([]));
    }
    let rows: Vec<Value> = st
        .storages
        .iter()
        .map(|s| {
            json!({
                "storage": s.storage, "type": s.kind, "content": s.content,
                "active": u8::from(s.active), "enabled": 1, "shared": u8::from(s.shared),
                "total": s.total, "used": s.used, "avail": s.total.saturating_sub(s.used),
                "used_fraction": if s.total == 0 { 0.0 } else { s.used as f64 / s.total as f64 }
            })
        })
        .collect();
    ok(Value::Array(rows))
}

async fn zfs_list(
    State(sh): S,
    axum::Extension(a): axum::Extension<Auth>,
    Path(_node): Path<String>,
) -> Response {
    if let Err(r) = need(&a, "/", &["Sys.Audit"]) {
        return r;
    }
    let st = sh.lock();
    let rows: Vec<Value> = st
        .zfs
        .iter()
        .map(|z| json!({"name": z.name, "health": z.health, "size": z.size, "alloc": z.alloc, "free": z.size - z.alloc, "frag": 7, "dedup": 1.0}))
        .collect();
    ok(Value::Array(rows))
}

async fn zfs_detail(
    State(sh): S,
    axum::Extension(a): axum::Extension<Auth>,
    Path((_node, name)): Path<(String, String)>,
) -> Response {
    if let Err(r) = need(&a, "/", &["Sys.Audit"]) {
        return r;
    }
    let st = sh.lock();
    match st.zfs.iter().find(|z| z.name == name) {
        Some(z) => ok(z.detail.clone()),
        None => err(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot open '{name}': no such pool"),
        ),
    }
}

async fn disks(
    State(sh): S,
    axum::Extension(a): axum::Extension<Auth>,
    Path(_node): Path<String>,
) -> Response {
    if let Err(r) = need(&a, "/", &["Sys.Audit"]) {
        return r;
    }
    let st = sh.lock();
    let rows: Vec<Value> = st
        .disks
        .iter()
        .map(|d| {
            json!({
                "devpath": d.devpath, "model": d.model, "serial": d.serial, "health": d.health,
                "wearout": d.wearout, "type": d.kind, "size": 500_107_862_016u64, "gpt": 1,
                "mounted": 0, "osdid": -1, "osdid-list": null, "rpm": if d.kind == "hdd" { 5400 } else { 0 },
                "vendor": "ATA     ", "wwn": "0x5002538f00000000", "used": "ZFS", "by_id_link": "/dev/disk/by-id/ata-x"
            })
        })
        .collect();
    ok(Value::Array(rows))
}

async fn apt(
    State(sh): S,
    axum::Extension(a): axum::Extension<Auth>,
    Path(node): Path<String>,
) -> Response {
    if let Err(r) = need(&a, &format!("/nodes/{node}"), &["Sys.Modify"]) {
        return r;
    }
    let st = sh.lock();
    let rows: Vec<Value> = st
        .apt
        .iter()
        .map(|(p, old, new, origin)| {
            json!({"Package": p, "Title": format!("{p} package"), "Description": "…", "Origin": origin,
                   "Priority": "optional", "Section": "admin", "Version": new, "OldVersion": old, "Arch": "amd64"})
        })
        .collect();
    ok(Value::Array(rows))
}

fn task_row(t: &SimTask, running_status: bool) -> Value {
    let mut v = json!({
        "upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart, "starttime": t.starttime,
        "type": t.task_type, "id": t.id, "user": t.user
    });
    match (&t.endtime, &t.exitstatus) {
        (Some(end), Some(s)) => {
            v["endtime"] = json!(end);
            v["status"] = json!(s);
        }
        _ if running_status => v["status"] = json!("RUNNING"),
        _ => {}
    }
    v
}

async fn tasks(
    State(sh): S,
    axum::Extension(a): axum::Extension<Auth>,
    Path(node): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let st = sh.lock();
    let audit = a.0.has("Sys.Audit");
    let num = |k: &str| q.get(k).and_then(|v| v.parse::<u64>().ok());
    let source = q.get("source").map(String::as_str).unwrap_or("archive");
    let mut rows: Vec<&SimTask> = st
        .tasks
        .iter()
        .filter(|t| t.node == node)
        .filter(|t| audit || t.user == a.0.user())
        .filter(|t| match source {
            "active" => t.endtime.is_none(),
            "all" => true,
            _ => t.endtime.is_some(),
        })
        .filter(|t| num("since").is_none_or(|s| t.starttime >= s))
        .filter(|t| num("until").is_none_or(|u| t.starttime <= u))
        .filter(|t| q.get("typefilter").is_none_or(|f| &t.task_type == f))
        .filter(|t| q.get("vmid").is_none_or(|v| &t.id == v))
        .filter(|t| {
            q.get("errors")
                .is_none_or(|e| e != "1" || t.exitstatus.as_deref() != Some("OK"))
        })
        .collect();
    rows.sort_by(|x, y| y.starttime.cmp(&x.starttime).then(y.pid.cmp(&x.pid)));
    let total = rows.len();
    let start = usize::try_from(num("start").unwrap_or(0)).unwrap_or(0);
    let limit = usize::try_from(num("limit").unwrap_or(50)).unwrap_or(50);
    let page: Vec<Value> = rows
        .into_iter()
        .skip(start)
        .take(limit)
        .map(|t| task_row(t, true))
        .collect();
    ok_total(Value::Array(page), total)
}

fn find_task<'a>(st: &'a SimState, a: &Auth, upid: &str) -> Result<&'a SimTask, Response> {
    let t = st.tasks.iter().find(|t| t.upid == upid).ok_or_else(|| {
        err(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!(
                "unable to open file '/var/log/pve/tasks/0/{upid}' - No such file or directory"
            ),
        )
    })?;
    if t.user != a.0.user() && !a.0.has("Sys.Audit") {
        return Err(forbidden(&format!("/nodes/{}", t.node), &["Sys.Audit"]));
    }
    Ok(t)
}

async fn task_status(
    State(sh): S,
    axum::Extension(a): axum::Extension<Auth>,
    Path((_node, upid)): Path<(String, String)>,
) -> Response {
    let st = sh.lock();
    let t = match find_task(&st, &a, &upid) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let mut v = task_row(t, false);
    if let Some(o) = v.as_object_mut() {
        o.remove("endtime");
        o.remove("status");
        o.insert(
            "status".into(),
            json!(if t.endtime.is_some() {
                "stopped"
            } else {
                "running"
            }),
        );
        if let Some(e) = &t.exitstatus {
            o.insert("exitstatus".into(), json!(e));
        }
    }
    ok(v)
}

async fn task_log(
    State(sh): S,
    axum::Extension(a): axum::Extension<Auth>,
    Path((_node, upid)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let st = sh.lock();
    let t = match find_task(&st, &a, &upid) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let start = q
        .get("start")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let limit = q
        .get("limit")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(50);
    let lines: Vec<Value> = t
        .log
        .iter()
        .enumerate()
        .skip(start)
        .take(limit)
        .map(|(i, l)| json!({"n": i + 1, "t": l}))
        .collect();
    ok_total(Value::Array(lines), t.log.len())
}

/// Runs when a task finished OK (under the state lock).
type OnDone = Box<dyn FnOnce(&Arc<Shared>, &mut SimState) + Send>;

/// What a simulated task does.
struct TaskSpec {
    node: String,
    task_type: String,
    id: String,
    user: String,
    /// `None` = the state's `task_duration`.
    duration: Option<Duration>,
    log: Vec<String>,
    /// `None` = OK.
    error: Option<String>,
    on_done: Option<OnDone>,
}

/// Creates a running task (and its task-dir entries) and finishes it after
/// `spec.duration`. Returns the UPID.
fn spawn_task(sh: &Arc<Shared>, st: &mut SimState, mut spec: TaskSpec) -> String {
    st.next_pid += 1;
    let pid = st.next_pid;
    let pstart = 0x00A0_0000 + u64::from(pid);
    let starttime = now_s();
    let upid = upid_string(
        &spec.node,
        pid,
        pstart,
        starttime,
        &spec.task_type,
        &spec.id,
        &spec.user,
    );
    if let Some(e) = st.fail_next.remove(&spec.task_type) {
        spec.error = Some(e);
    }
    let first: Vec<String> = spec.log.iter().take(1).cloned().collect();
    if let Some(td) = st.task_dir.as_mut() {
        let _ = td.start(&upid, &first);
    }
    st.tasks.push(SimTask {
        upid: upid.clone(),
        node: spec.node.clone(),
        pid,
        pstart,
        starttime,
        task_type: spec.task_type.clone(),
        id: spec.id.clone(),
        user: spec.user.clone(),
        endtime: None,
        exitstatus: None,
        log: first,
    });
    let sh2 = sh.clone();
    let upid2 = upid.clone();
    let duration = spec.duration.unwrap_or(st.task_duration);
    tokio::spawn(async move {
        tokio::time::sleep(duration).await;
        let mut st = sh2.lock();
        let (status, last) = match &spec.error {
            None => ("OK".to_owned(), "TASK OK".to_owned()),
            Some(e) => (e.clone(), format!("TASK ERROR: {e}")),
        };
        let mut log = spec.log.clone();
        log.push(last);
        let end = now_s();
        if let Some(td) = st.task_dir.as_mut() {
            let _ = td.finish(&upid2, end, &status, &log);
        }
        if let Some(t) = st.tasks.iter_mut().find(|t| t.upid == upid2) {
            t.endtime = Some(end);
            t.exitstatus = Some(status);
            t.log = log;
        }
        if spec.error.is_none()
            && let Some(f) = spec.on_done.take()
        {
            f(&sh2, &mut st);
        }
    });
    upid
}

fn guest_check(st: &SimState, node: &str, kind: &str, vmid: u32) -> Result<SimGuest, Response> {
    match st.guests.iter().find(|g| g.vmid == vmid && g.kind == kind) {
        Some(g) if g.node == node => Ok(g.clone()),
        Some(_) | None => Err(err(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!(
                "Configuration file 'nodes/{node}/{}/{vmid}.conf' does not exist",
                if kind == "lxc" { "lxc" } else { "qemu-server" }
            ),
        )),
    }
}

fn set_status(vmid: u32, status: &'static str) -> OnDone {
    Box::new(move |_, st| {
        if let Some(g) = st.guest_mut(vmid) {
            g.status = status.to_owned();
            g.uptime = if status == "running" { 1 } else { 0 };
        }
    })
}

/// An HA request task and the LRM worker that follows it.
struct HaChain {
    /// `hastart`, `hastop`, `hamigrate`.
    ha_type: &'static str,
    /// Log line of the request task.
    request_line: String,
    /// Worker type, e.g. `qmstart`.
    worker_type: String,
    /// Node the worker runs on.
    worker_node: String,
    /// HA requested state.
    request: &'static str,
    /// State change when the worker finished.
    after: Box<dyn FnOnce(&mut SimState) + Send>,
}

fn ha_chain(sh: &Arc<Shared>, st: &mut SimState, g: &SimGuest, user: &str, c: HaChain) -> String {
    let vmid = g.vmid;
    let delay = st.ha_delay;
    let dur = st.task_duration;
    let HaChain {
        ha_type,
        request_line,
        worker_type,
        worker_node,
        request,
        after,
    } = c;
    let on_done: OnDone = Box::new(move |sh, st| {
        if let Some(g) = st.guest_mut(vmid) {
            g.ha_request = request.to_owned();
            g.ha_state = match (ha_type, request) {
                ("hamigrate", _) => "migrate",
                (_, "started") => "starting",
                _ => "stopping",
            }
            .to_owned();
        }
        let sh2 = sh.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let sh3 = sh2.clone();
            let mut st = sh2.lock();
            let finish: OnDone = Box::new(move |_, st| after(st));
            spawn_task(
                &sh3,
                &mut st,
                TaskSpec {
                    node: worker_node,
                    task_type: worker_type,
                    id: vmid.to_string(),
                    user: "root@pam".into(),
                    duration: Some(dur),
                    log: vec!["task started by HA resource agent".into()],
                    error: None,
                    on_done: Some(finish),
                },
            );
        });
    });
    spawn_task(
        sh,
        st,
        TaskSpec {
            node: g.node.clone(),
            task_type: ha_type.to_owned(),
            id: vmid.to_string(),
            user: user.to_owned(),
            duration: Some(Duration::from_millis(100)),
            log: vec![request_line],
            error: None,
            on_done: Some(on_done),
        },
    )
}

type Ext = axum::Extension<Auth>;

async fn power_qemu(st: S, e: Ext, Path((n, v, verb)): Path<(String, u32, String)>) -> Response {
    power(st, e, (n, "qemu", v, verb)).await
}
async fn power_lxc(st: S, e: Ext, Path((n, v, verb)): Path<(String, u32, String)>) -> Response {
    power(st, e, (n, "lxc", v, verb)).await
}
async fn config_qemu(st: S, e: Ext, Path((n, v)): Path<(String, u32)>) -> Response {
    guest_config(st, e, (n, "qemu", v)).await
}
async fn config_lxc(st: S, e: Ext, Path((n, v)): Path<(String, u32)>) -> Response {
    guest_config(st, e, (n, "lxc", v)).await
}

/// `GET …/{vmid}/config`: the current configuration, as PVE returns it
/// (with a `digest`; containers here carry a cloud-init-like password to
/// show it is redacted by the agent).
async fn guest_config(
    State(sh): S,
    axum::Extension(a): Ext,
    (node, kind, vmid): (String, &str, u32),
) -> Response {
    if let Err(r) = need(&a, &format!("/vms/{vmid}"), &["VM.Audit"]) {
        return r;
    }
    let st = sh.lock();
    let g = match guest_check(&st, &node, kind, vmid) {
        Ok(g) => g,
        Err(r) => return r,
    };
    let mut cfg = json!({
        "digest": "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c",
        "memory": g.maxmem / (1024 * 1024),
        "tags": g.tags,
        "onboot": 1,
    });
    if kind == "lxc" {
        cfg["hostname"] = json!(g.name);
        cfg["net0"] = json!("name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:01:01,ip=dhcp");
        cfg["password"] = json!("s3cret-root-pw");
    } else {
        cfg["name"] = json!(g.name);
        cfg["net0"] = json!("virtio=BC:24:11:00:00:01,bridge=vmbr0");
        cfg["cipassword"] = json!("hunter2hunter2");
    }
    ok(cfg)
}

async fn snapshots_qemu(st: S, e: Ext, Path((n, v)): Path<(String, u32)>) -> Response {
    snapshot_list(st, e, (n, "qemu", v)).await
}
async fn snapshots_lxc(st: S, e: Ext, Path((n, v)): Path<(String, u32)>) -> Response {
    snapshot_list(st, e, (n, "lxc", v)).await
}

/// `GET …/{vmid}/snapshot`: the snapshots (with `snaptime` and `parent`)
/// and the `current` pseudo-entry, as PVE lists them.
async fn snapshot_list(
    State(sh): S,
    axum::Extension(a): Ext,
    (node, kind, vmid): (String, &str, u32),
) -> Response {
    if let Err(r) = need(&a, &format!("/vms/{vmid}"), &["VM.Audit"]) {
        return r;
    }
    let st = sh.lock();
    let g = match guest_check(&st, &node, kind, vmid) {
        Ok(g) => g,
        Err(r) => return r,
    };
    let mut rows: Vec<Value> = Vec::new();
    let mut parent: Option<String> = None;
    for (i, name) in g.snapshots.iter().enumerate() {
        let mut row =
            json!({"name": name, "description": "", "snaptime": 1_764_000_000 + i as i64 * 60});
        if let Some(p) = &parent {
            row["parent"] = json!(p);
        }
        rows.push(row);
        parent = Some(name.clone());
    }
    let mut current = json!({"name": "current", "description": "You are here!", "running": i64::from(g.status == "running")});
    if let Some(p) = parent {
        current["parent"] = json!(p);
    }
    rows.push(current);
    ok(Value::Array(rows))
}

async fn snapshot_qemu(st: S, e: Ext, Path((n, v)): Path<(String, u32)>, b: Bytes) -> Response {
    snapshot(st, e, (n, "qemu", v), b).await
}
async fn snapshot_lxc(st: S, e: Ext, Path((n, v)): Path<(String, u32)>, b: Bytes) -> Response {
    snapshot(st, e, (n, "lxc", v), b).await
}
async fn rollback_qemu(st: S, e: Ext, Path((n, v, s)): Path<(String, u32, String)>) -> Response {
    rollback(st, e, (n, "qemu", v, s)).await
}
async fn rollback_lxc(st: S, e: Ext, Path((n, v, s)): Path<(String, u32, String)>) -> Response {
    rollback(st, e, (n, "lxc", v, s)).await
}
async fn migrate_qemu(st: S, e: Ext, Path((n, v)): Path<(String, u32)>, b: Bytes) -> Response {
    migrate(st, e, (n, "qemu", v), b).await
}
async fn migrate_lxc(st: S, e: Ext, Path((n, v)): Path<(String, u32)>, b: Bytes) -> Response {
    migrate(st, e, (n, "lxc", v), b).await
}

async fn power(
    State(sh): S,
    axum::Extension(a): Ext,
    (node, kind, vmid, verb): (String, &str, u32, String),
) -> Response {
    if let Err(r) = need(&a, &format!("/vms/{vmid}"), &["VM.PowerMgmt"]) {
        return r;
    }
    let mut st = sh.lock();
    let g = match guest_check(&st, &node, kind, vmid) {
        Ok(g) => g,
        Err(r) => return r,
    };
    let what = if kind == "lxc" { "CT" } else { "VM" };
    let user = a.0.user().to_owned();
    if g.ha && matches!(verb.as_str(), "start" | "stop" | "shutdown") {
        let start = verb == "start";
        let chain = HaChain {
            ha_type: if start { "hastart" } else { "hastop" },
            request_line: format!(
                "Requesting HA {} for {what} {vmid}",
                if start { "start" } else { "stop" }
            ),
            worker_type: format!("{}{}", g.prefix(), if start { "start" } else { "shutdown" }),
            worker_node: g.node.clone(),
            request: if start { "started" } else { "stopped" },
            after: Box::new(move |st| {
                if let Some(g) = st.guest_mut(vmid) {
                    g.status = if start { "running" } else { "stopped" }.into();
                    g.ha_state = if start { "started" } else { "stopped" }.into();
                }
            }),
        };
        let upid = ha_chain(&sh, &mut st, &g, &user, chain);
        return ok(json!(upid));
    }
    let (suffix, done): (&str, Option<OnDone>) = match verb.as_str() {
        "start" => ("start", Some(set_status(vmid, "running"))),
        "stop" => ("stop", Some(set_status(vmid, "stopped"))),
        "shutdown" => ("shutdown", Some(set_status(vmid, "stopped"))),
        "reboot" => ("reboot", None),
        "suspend" => ("suspend", Some(set_status(vmid, "paused"))),
        "resume" => ("resume", Some(set_status(vmid, "running"))),
        _ => return err(StatusCode::NOT_IMPLEMENTED, "Method not implemented"),
    };
    let upid = spawn_task(
        &sh,
        &mut st,
        TaskSpec {
            node: node.clone(),
            task_type: format!("{}{suffix}", g.prefix()),
            id: vmid.to_string(),
            user,
            duration: None,
            log: vec![format!("{verb} {what} {vmid}")],
            error: None,
            on_done: done,
        },
    );
    ok(json!(upid))
}

async fn snapshot(
    State(sh): S,
    axum::Extension(a): Ext,
    (node, kind, vmid): (String, &str, u32),
    body: Bytes,
) -> Response {
    if let Err(r) = need(&a, &format!("/vms/{vmid}"), &["VM.Snapshot"]) {
        return r;
    }
    let params: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(name) = params
        .get("snapname")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"data": null, "errors": {"snapname": "property is missing"}, "message": "Parameter verification failed.\n"}))).into_response();
    };
    let mut st = sh.lock();
    let g = match guest_check(&st, &node, kind, vmid) {
        Ok(g) => g,
        Err(r) => return r,
    };
    let n2 = name.clone();
    let upid = spawn_task(
        &sh,
        &mut st,
        TaskSpec {
            node,
            task_type: format!("{}snapshot", g.prefix()),
            id: vmid.to_string(),
            user: a.0.user().to_owned(),
            duration: None,
            log: vec![format!("snapshotting '{name}'")],
            error: None,
            on_done: Some(Box::new(move |_, st| {
                if let Some(g) = st.guest_mut(vmid) {
                    g.snapshots.push(n2);
                }
            })),
        },
    );
    ok(json!(upid))
}

async fn rollback(
    State(sh): S,
    axum::Extension(a): Ext,
    (node, kind, vmid, snap): (String, &str, u32, String),
) -> Response {
    if let Err(r) = need(
        &a,
        &format!("/vms/{vmid}"),
        &["VM.Snapshot", "VM.Snapshot.Rollback"],
    ) {
        return r;
    }
    let mut st = sh.lock();
    let g = match guest_check(&st, &node, kind, vmid) {
        Ok(g) => g,
        Err(r) => return r,
    };
    let error = (!g.snapshots.contains(&snap)).then(|| format!("snapshot '{snap}' does not exist"));
    let upid = spawn_task(
        &sh,
        &mut st,
        TaskSpec {
            node,
            task_type: format!("{}rollback", g.prefix()),
            id: vmid.to_string(),
            user: a.0.user().to_owned(),
            duration: None,
            log: vec![format!("rollback to snapshot '{snap}'")],
            error,
            on_done: None,
        },
    );
    ok(json!(upid))
}

async fn migrate(
    State(sh): S,
    axum::Extension(a): Ext,
    (node, kind, vmid): (String, &str, u32),
    body: Bytes,
) -> Response {
    if let Err(r) = need(&a, &format!("/vms/{vmid}"), &["VM.Migrate"]) {
        return r;
    }
    let params: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(target) = params
        .get("target")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"data": null, "errors": {"target": "property is missing"}, "message": "Parameter verification failed.\n"}))).into_response();
    };
    let mut st = sh.lock();
    if target == node || !st.nodes.iter().any(|(n, _)| *n == target) {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"data": null, "errors": {"target": "target is local node."}, "message": "Parameter verification failed.\n"}))).into_response();
    }
    let g = match guest_check(&st, &node, kind, vmid) {
        Ok(g) => g,
        Err(r) => return r,
    };
    let what = if kind == "lxc" { "CT" } else { "VM" };
    let t2 = target.clone();
    let moved: Box<dyn FnOnce(&mut SimState) + Send> = Box::new(move |st| {
        if let Some(g) = st.guest_mut(vmid) {
            g.node = t2;
            if g.ha {
                g.ha_state = "started".into();
            }
        }
    });
    let upid = if g.ha {
        let chain = HaChain {
            ha_type: "hamigrate",
            request_line: format!("Requesting HA migration for {what} {vmid} to node {target}"),
            worker_type: if kind == "lxc" {
                "vzmigrate"
            } else {
                "qmigrate"
            }
            .to_owned(),
            worker_node: node.clone(),
            request: "started",
            after: moved,
        };
        ha_chain(&sh, &mut st, &g, a.0.user(), chain)
    } else {
        spawn_task(
            &sh,
            &mut st,
            TaskSpec {
                node,
                task_type: if kind == "lxc" {
                    "vzmigrate"
                } else {
                    "qmigrate"
                }
                .to_owned(),
                id: vmid.to_string(),
                user: a.0.user().to_owned(),
                duration: None,
                log: vec![format!(
                    "starting migration of {what} {vmid} to node '{target}'"
                )],
                error: None,
                on_done: Some(Box::new(move |_, st| moved(st))),
            },
        )
    };
    ok(json!(upid))
}

/// A realistic `vzdump` task log for one guest.
pub fn vzdump_log(vmid: u32, kind: &str, storage: &str, mode: &str, ok: bool) -> Vec<String> {
    let mut l = vec![
        format!(
            "INFO: starting new backup job: vzdump {vmid} --mode {mode} --remove 0 --storage {storage}"
        ),
        format!("INFO: Starting Backup of VM {vmid} ({kind})"),
        "INFO: Backup started at 2025-06-10 10:00:01".to_owned(),
        "INFO: status = running".to_owned(),
        format!("INFO: backup mode: {mode}"),
        "INFO: ionice priority: 7".to_owned(),
        format!(
            "INFO: creating vzdump archive '/var/lib/vz/dump/vzdump-{kind}-{vmid}-2025_06_10-10_00_01.vma.zst'"
        ),
    ];
    if ok {
        l.push(
            "INFO:  50% (8.0 GiB of 16.0 GiB) in 3s, read: 2.7 GiB/s, write: 1.1 GiB/s".to_owned(),
        );
        l.push("INFO: archive file size: 1.50GB".to_owned());
        l.push(format!("INFO: Finished Backup of VM {vmid} (00:00:05)"));
        l.push("INFO: Backup finished at 2025-06-10 10:00:06".to_owned());
        l.push("INFO: Backup job finished successfully".to_owned());
    } else {
        l.push(format!(
            "ERROR: Backup of VM {vmid} failed - job failed with err -5 - Input/output error"
        ));
        l.push("INFO: Failed at 2025-06-10 10:00:04".to_owned());
        l.push("INFO: Backup job finished with errors".to_owned());
    }
    l
}

async fn vzdump(
    State(sh): S,
    axum::Extension(a): axum::Extension<Auth>,
    Path(node): Path<String>,
    body: Bytes,
) -> Response {
    let params: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(vmid) = params
        .get("vmid")
        .and_then(|v| {
            v.as_str()
                .map(str::to_owned)
                .or_else(|| v.as_u64().map(|n| n.to_string()))
        })
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"data": null, "errors": {"vmid": "property is missing"}, "message": "Parameter verification failed.\n"}))).into_response();
    };
    let storage = params
        .get("storage")
        .and_then(Value::as_str)
        .unwrap_or("local")
        .to_owned();
    let mode = params
        .get("mode")
        .and_then(Value::as_str)
        .unwrap_or("snapshot")
        .to_owned();
    if let Err(r) = need(&a, &format!("/vms/{vmid}"), &["VM.Backup"]) {
        return r;
    }
    if let Err(r) = need(
        &a,
        &format!("/storage/{storage}"),
        &["Datastore.AllocateSpace"],
    ) {
        return r;
    }
    let mut st = sh.lock();
    let Some(g) = st.guests.iter().find(|g| g.vmid == vmid).cloned() else {
        return err(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("unable to find VM '{vmid}'"),
        );
    };
    let fail = st.fail_next.remove("vzdump");
    let ok_run = fail.is_none();
    let log = vzdump_log(vmid, g.kind, &storage, &mode, ok_run);
    let s2 = storage.clone();
    let upid = spawn_task(
        &sh,
        &mut st,
        TaskSpec {
            node,
            task_type: "vzdump".into(),
            id: vmid.to_string(),
            user: a.0.user().to_owned(),
            duration: None,
            log,
            error: fail.map(|_| "job errors".to_owned()),
            on_done: Some(Box::new(move |_, st| {
                if let Some(s) = st.storage_mut(&s2) {
                    s.used += 1_610_612_736;
                }
            })),
        },
    );
    ok(json!(upid))
}

/// Waits until `f` holds (polling), up to `timeout`.
pub async fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// Method of a recorded request (helper for assertions).
pub fn is_post(r: &Recorded) -> bool {
    r.method == Method::POST.as_str()
}
