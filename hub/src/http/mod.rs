//! HTTP: the JSON API under `/api/v1` and the server-rendered dashboard.
//!
//! Every route except `/healthz`, `/login` and static assets needs
//! authentication: a session cookie (dashboard) or a bearer API key (scripts).
//! State-changing forms carry a synchronizer CSRF token; API calls with a
//! session cookie carry it in `X-CSRF-Token`. Errors go through one
//! [`ApiError`] that never shows internals to clients.

mod api;
mod audit;
mod chat;
mod incidents;
pub mod markdown;
mod pages;
mod plans;
mod pve;
mod search;
pub use search::view as search_view;
mod settings;
mod skills;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::Environment;
use serde::Serialize;
use tracing::error;

use crate::Hub;
use crate::auth::{LoginThrottle, ct_eq, sha256_hex};
use crate::store::{SessionRow, UserRow};

/// Session cookie name.
pub const SESSION_COOKIE: &str = "wingman_session";
/// Pre-login CSRF cookie name (double-submit for the login form).
pub const LOGIN_CSRF_COOKIE: &str = "wingman_login_csrf";

/// Shared HTTP state.
#[derive(Clone)]
pub struct AppState {
    /// The hub.
    pub hub: Hub,
    templates: Arc<Environment<'static>>,
    throttle: Arc<Mutex<LoginThrottle>>,
    inflight: Arc<tokio::sync::Semaphore>,
}

/// A request that takes longer than this is answered 503.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl AppState {
    /// Builds the state, loading the embedded templates.
    pub fn new(hub: Hub) -> Self {
        let mut env = Environment::new();
        for (name, src) in TEMPLATES {
            if let Err(e) = env.add_template(name, src) {
                error!(template = name, error = %e, "embedded template does not parse");
            }
        }
        let throttle = LoginThrottle::new(
            hub.config.auth.login_max_failures,
            hub.config.auth.login_window_secs,
        );
        let inflight = Arc::new(tokio::sync::Semaphore::new(hub.config.http.max_inflight));
        Self {
            hub,
            templates: Arc::new(env),
            throttle: Arc::new(Mutex::new(throttle)),
            inflight,
        }
    }

    fn render(&self, name: &str, ctx: minijinja::Value) -> Result<Html<String>, ApiError> {
        let tpl = self
            .templates
            .get_template(name)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        tpl.render(ctx)
            .map(Html)
            .map_err(|e| ApiError::Internal(e.to_string()))
    }
}

const TEMPLATES: &[(&str, &str)] = &[
    (
        "base.html",
        include_str!("../../../web/templates/base.html"),
    ),
    (
        "login.html",
        include_str!("../../../web/templates/login.html"),
    ),
    (
        "password.html",
        include_str!("../../../web/templates/password.html"),
    ),
    (
        "nodes.html",
        include_str!("../../../web/templates/nodes.html"),
    ),
    (
        "node.html",
        include_str!("../../../web/templates/node.html"),
    ),
    (
        "error.html",
        include_str!("../../../web/templates/error.html"),
    ),
    (
        "incidents.html",
        include_str!("../../../web/templates/incidents.html"),
    ),
    (
        "incident.html",
        include_str!("../../../web/templates/incident.html"),
    ),
    (
        "skills.html",
        include_str!("../../../web/templates/skills.html"),
    ),
    (
        "skill.html",
        include_str!("../../../web/templates/skill.html"),
    ),
    (
        "notifications.html",
        include_str!("../../../web/templates/notifications.html"),
    ),
    (
        "clusters.html",
        include_str!("../../../web/templates/clusters.html"),
    ),
    (
        "search.html",
        include_str!("../../../web/templates/search.html"),
    ),
    (
        "chat.html",
        include_str!("../../../web/templates/chat.html"),
    ),
    ("run.html", include_str!("../../../web/templates/run.html")),
    (
        "policy.html",
        include_str!("../../../web/templates/policy.html"),
    ),
    (
        "audit.html",
        include_str!("../../../web/templates/audit.html"),
    ),
];

const STYLE_CSS: &str = include_str!("../../../web/static/style.css");
const APP_JS: &str = include_str!("../../../web/static/app.js");

async fn app_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        APP_JS,
    )
}

/// The one error type at the HTTP edge.
#[derive(Debug)]
pub enum ApiError {
    /// 400 with a reason for the client.
    BadRequest(String),
    /// 401.
    Unauthorized,
    /// 403 with a reason.
    Forbidden(String),
    /// 404.
    NotFound,
    /// 409 with a reason (refused by the control policy, wrong state).
    Conflict(String),
    /// 429 with the seconds to wait.
    TooManyRequests(u64),
    /// 503 with the seconds to wait.
    Unavailable(u64),
    /// 500; the detail is logged, never sent.
    Internal(String),
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::NotFound => Self::NotFound,
            crate::store::StoreError::Backend(m) if m.contains("pool timed out") => {
                Self::Unavailable(2)
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message, retry) = match self {
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, m, None),
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "authentication required".to_string(),
                None,
            ),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, m, None),
            Self::NotFound => (StatusCode::NOT_FOUND, "not found".to_string(), None),
            Self::Conflict(m) => (StatusCode::CONFLICT, m, None),
            Self::TooManyRequests(s) => (
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many attempts; retry in {s} s"),
                Some(s),
            ),
            Self::Unavailable(s) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the hub is busy; retry shortly".to_string(),
                Some(s),
            ),
            Self::Internal(detail) => {
                error!(error = %detail, "internal error while serving a request");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_string(),
                    None,
                )
            }
        };
        let mut resp =
            (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
        if let Some(s) = retry
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// How the caller authenticated.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    /// The user.
    pub user: UserRow,
    /// The session, when authenticated by cookie.
    pub session: Option<SessionRow>,
}

impl CurrentUser {
    /// The session's CSRF token (empty for API keys, which need none).
    pub fn csrf(&self) -> &str {
        self.session
            .as_ref()
            .map(|s| s.csrf_token.as_str())
            .unwrap_or("")
    }

    /// Whether `token` is this session's CSRF token. Always true for API-key
    /// callers: browsers never attach an `Authorization` header cross-site.
    pub fn csrf_ok(&self, token: &str) -> bool {
        match &self.session {
            None => true,
            Some(s) => ct_eq(&s.csrf_token, token),
        }
    }

    /// Admin role.
    pub fn is_admin(&self) -> bool {
        self.user.role == "admin"
    }
}

/// Reads one cookie from the request headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The client's address (from the connection), as a string.
pub fn client_ip(parts_ext: &axum::http::Extensions) -> String {
    parts_ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let store = &state.hub.store;
        let now = wingman_agent::now_ms();
        if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
            let value = auth.to_str().map_err(|_| ApiError::Unauthorized)?;
            let key = value
                .strip_prefix("Bearer ")
                .ok_or(ApiError::Unauthorized)?
                .trim();
            if key.is_empty() || key.len() > 256 {
                return Err(ApiError::Unauthorized);
            }
            let (_, user) = store
                .api_key(&sha256_hex(key), now)
                .await?
                .ok_or(ApiError::Unauthorized)?;
            return Ok(Self {
                user,
                session: None,
            });
        }
        let Some(id) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(ApiError::Unauthorized);
        };
        if id.is_empty() || id.len() > 128 {
            return Err(ApiError::Unauthorized);
        }
        let hash = sha256_hex(&id);
        let (session, user) = store
            .session(&hash, now)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        let idle_ms = i64::try_from(state.hub.config.auth.session_idle_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        if now - session.last_seen > idle_ms {
            store.delete_session(&hash).await?;
            return Err(ApiError::Unauthorized);
        }
        if now - session.last_seen > 60_000 {
            store.touch_session(&hash, now).await?;
        }
        Ok(Self {
            user,
            session: Some(session),
        })
    }
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "no-referrer");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    resp
}

/// Load shedding and a deadline for every route but `/healthz`: when
/// `http.max_inflight` requests are in flight, or one takes longer than
/// [`REQUEST_TIMEOUT`] (a busy store), the answer is `503` with
/// `Retry-After` instead of a queue or a hang.
async fn shed(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Ok(_permit) = state.inflight.clone().try_acquire_owned() else {
        state.hub.metrics.http_shed();
        return ApiError::Unavailable(2).into_response();
    };
    // Chat waits for the model (bounded by `reasoner.chat_timeout_secs`).
    let path = req.uri().path();
    let deadline = if path == "/chat" || path == "/api/v1/chat" {
        std::time::Duration::from_secs(state.hub.config.reasoner.chat_timeout_secs.max(1) + 5)
    } else {
        REQUEST_TIMEOUT
    };
    match tokio::time::timeout(deadline, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            state.hub.metrics.http_shed();
            ApiError::Unavailable(5).into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLE_CSS,
    )
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let guarded = Router::new()
        .route("/static/style.css", get(style))
        .route("/static/app.js", get(app_js))
        .route("/incidents", get(incidents::list_page))
        .route("/incidents/{id}", get(incidents::detail_page))
        .route("/incidents/{id}/ack", post(incidents::ack_form))
        .route("/incidents/{id}/resolve", post(incidents::resolve_form))
        .route("/api/v1/incidents", get(incidents::list_api))
        .route("/api/v1/incidents/{id}", get(incidents::detail_api))
        .route("/api/v1/incidents/{id}/ack", post(incidents::ack_api))
        .route(
            "/api/v1/incidents/{id}/resolve",
            post(incidents::resolve_api),
        )
        .route("/api/v1/events", get(incidents::events))
        .route("/login", get(pages::login_page).post(pages::login_submit))
        .route("/logout", post(pages::logout))
        .route(
            "/account/password",
            get(pages::password_page).post(pages::password_submit),
        )
        .route("/", get(pages::nodes_page))
        .route("/nodes/{id}", get(pages::node_page))
        .route("/nodes/{id}/revoke", post(pages::revoke_submit))
        .route("/api/v1/nodes", get(api::nodes))
        .route("/api/v1/nodes/{id}", get(api::node))
        .route("/api/v1/nodes/{id}/revoke", post(api::revoke))
        .route("/api/v1/nodes/{id}/logs", get(api::node_logs))
        .route("/metrics", get(api::metrics))
        .route("/api/v1/templates/{id}", get(api::template))
        .route(
            "/settings/notifications",
            get(settings::notifications_page).post(settings::notifications_save_form),
        )
        .route(
            "/settings/notifications/test",
            post(settings::notifications_test_form),
        )
        .route(
            "/api/v1/notifications",
            get(settings::notifications_api).put(settings::notifications_put),
        )
        .route(
            "/api/v1/notifications/channels/{name}/test",
            post(settings::notifications_test_api),
        )
        .route(
            "/api/v1/incidents/{id}/plans",
            get(plans::list_api).post(plans::propose_api),
        )
        .route("/incidents/{id}/plans", post(plans::propose_form))
        .route("/api/v1/plans/{id}", get(plans::get_api))
        .route(
            "/api/v1/plans/{id}/steps/{n}/approve",
            post(plans::approve_api),
        )
        .route(
            "/api/v1/plans/{id}/steps/{n}/execute",
            post(plans::execute_api),
        )
        .route("/api/v1/plans/{id}/steps/{n}/done", post(plans::done_api))
        .route("/api/v1/plans/{id}/reject", post(plans::reject_api))
        .route("/api/v1/plans/{id}/revise", post(plans::revise_api))
        .route("/plans/{id}/revise", post(plans::revise_form))
        .route("/plans/{id}/steps/{n}/approve", post(plans::approve_form))
        .route("/plans/{id}/steps/{n}/execute", post(plans::execute_form))
        .route("/plans/{id}/steps/{n}/done", post(plans::done_form))
        .route("/plans/{id}/reject", post(plans::reject_form))
        .route(
            "/api/v1/control/policy",
            get(plans::policy_api).put(plans::policy_put_api),
        )
        .route(
            "/settings/policy",
            get(plans::policy_page).post(plans::policy_form),
        )
        .route("/audit", get(audit::audit_page))
        .route("/api/v1/audit", get(audit::export_api))
        .route("/api/v1/audit/verify", get(audit::verify_api))
        .route("/search", get(search::search_page))
        .route("/api/v1/search", get(search::search_api))
        .route("/api/v1/incidents/{id}/similar", get(search::similar_api))
        .route("/clusters", get(pve::clusters_page))
        .route("/api/v1/clusters", get(pve::clusters_api))
        .route("/api/v1/pve/notifications", get(pve::notifications_api))
        .route(
            "/ingest/pve/notify",
            post(pve::webhook).layer(DefaultBodyLimit::max(
                state.hub.config.pve.webhook_max_body.unwrap_or(256 * 1024),
            )),
        )
        .route("/chat", get(chat::chat_page).post(chat::chat_form))
        .route("/api/v1/chat", post(chat::chat_api))
        .route("/runs/{id}", get(chat::run_page))
        .route("/runs/{id}/steps/{idx}", post(chat::run_tick_form))
        .route("/api/v1/runs/{id}", get(chat::run_api))
        .route("/api/v1/runs/{id}/steps/{idx}", post(chat::run_tick_api))
        .route("/skills", get(skills::skills_page))
        .route("/skills/{id}", get(skills::skill_page))
        .route("/api/v1/skills", get(skills::skills_api))
        .route("/api/v1/skills/{id}", get(skills::skill_api))
        .fallback(|| async { ApiError::NotFound })
        .layer(axum::middleware::from_fn_with_state(state.clone(), shed));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(guarded)
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// A redirect to the login page.
pub fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

/// A `Set-Cookie` value.
pub fn set_cookie(name: &str, value: &str, max_age_secs: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}")
}

/// Node list entry for the API and the dashboard.
#[derive(Debug, Serialize)]
pub struct NodeSummary {
    /// Agent id.
    pub id: String,
    /// Hostname.
    pub hostname: String,
    /// Node kind.
    pub kind: String,
    /// Online now.
    pub online: bool,
    /// Revoked.
    pub revoked: bool,
    /// Last heartbeat, ms.
    pub last_seen: Option<i64>,
    /// Agent version.
    pub agent_version: String,
    /// Certificate expiry, ms.
    pub cert_not_after: i64,
    /// Latest host indicators, if any arrived.
    pub host: Option<HostIndicators>,
}

/// The host indicators shown in lists.
#[derive(Debug, Serialize)]
pub struct HostIndicators {
    /// CPU busy %.
    pub cpu_usage_pct: f32,
    /// Memory used %.
    pub mem_used_pct: f32,
    /// The fullest filesystem's use %.
    pub disk_max_used_pct: Option<f32>,
    /// Its mount point.
    pub disk_max_mount: Option<String>,
    /// 1-minute load.
    pub load1: f32,
    /// Uptime, s.
    pub uptime_s: u64,
    /// When sampled, ms.
    pub observed_at: i64,
}

/// Parses the latest host fact of an agent.
pub fn host_facts(
    latest: &[crate::store::LatestFact],
) -> Option<(wingman_protocol::HostFacts, i64)> {
    let f = latest.iter().find(|f| f.kind == "host")?;
    let h = serde_json::from_str(&f.body).ok()?;
    Some((h, f.observed_at))
}

fn pct(used: u64, total: u64) -> f32 {
    if total == 0 {
        0.0
    } else {
        ((used as f64 / total as f64) * 1000.0).round() as f32 / 10.0
    }
}

/// Indicators from host facts.
pub fn indicators(h: &wingman_protocol::HostFacts, observed_at: i64) -> HostIndicators {
    let fullest = h
        .filesystems
        .iter()
        .map(|f| {
            (
                pct(f.total.saturating_sub(f.available), f.total),
                f.mount.clone(),
            )
        })
        .max_by(|a, b| a.0.total_cmp(&b.0));
    HostIndicators {
        cpu_usage_pct: (h.cpu_usage_pct * 10.0).round() / 10.0,
        mem_used_pct: pct(h.mem_used, h.mem_total),
        disk_max_used_pct: fullest.as_ref().map(|f| f.0),
        disk_max_mount: fullest.map(|f| f.1),
        load1: (h.load[0] * 100.0).round() / 100.0,
        uptime_s: h.uptime_s,
        observed_at,
    }
}

/// Loads the node list.
pub async fn node_summaries(hub: &Hub) -> Result<Vec<NodeSummary>, ApiError> {
    let agents = hub.store.list_agents().await?;
    let mut out = Vec::with_capacity(agents.len());
    for a in agents {
        let latest = hub.store.latest_facts(&a.id).await?;
        let host = host_facts(&latest).map(|(h, at)| indicators(&h, at));
        out.push(NodeSummary {
            revoked: a.revoked_at.is_some(),
            online: a.online,
            id: a.id,
            hostname: a.hostname,
            kind: a.kind,
            last_seen: a.last_seen,
            agent_version: a.agent_version,
            cert_not_after: a.cert_not_after,
            host,
        });
    }
    Ok(out)
}
