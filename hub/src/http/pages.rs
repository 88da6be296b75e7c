//! Server-rendered dashboard pages and form handlers.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::{
    ApiError, AppState, CurrentUser, LOGIN_CSRF_COOKIE, SESSION_COOKIE, client_ip, cookie,
    host_facts, node_summaries, set_cookie, to_login,
};
use crate::auth::{self, ct_eq, random_secret, sha256_hex};
use crate::store::SessionRow;

pub(super) fn ago(now: i64, at: Option<i64>) -> String {
    let Some(at) = at else {
        return "never".into();
    };
    let s = (now - at).max(0) / 1000;
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

fn until(now: i64, at: i64) -> String {
    let s = (at - now) / 1000;
    if s < 0 {
        return "expired".into();
    }
    match s {
        0..=3599 => format!("in {} min", s / 60),
        3600..=86_399 => format!("in {} h", s / 3600),
        _ => format!("in {} d", s / 86_400),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

fn duration(s: u64) -> String {
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else {
        format!("{m} min")
    }
}

/// Pages need a signed-in user who has chosen their own password.
#[allow(clippy::result_large_err)]
pub(super) fn page_user(user: Result<CurrentUser, ApiError>) -> Result<CurrentUser, Response> {
    match user {
        Ok(u) if u.session.is_none() => Err(ApiError::Forbidden(
            "the dashboard needs a browser session; API keys are for /api/v1".into(),
        )
        .into_response()),
        Ok(u) if u.user.must_change_password => {
            Err(Redirect::to("/account/password").into_response())
        }
        Ok(u) => Ok(u),
        Err(ApiError::Unauthorized) => Err(to_login()),
        Err(e) => Err(e.into_response()),
    }
}

/// A page user (see [`page_user`]) whose form carries this session's CSRF
/// token: the outer error is the 403 for a missing or wrong token, the inner
/// one the redirect to sign in.
#[allow(clippy::result_large_err)]
pub(super) fn form_user(
    user: Result<CurrentUser, ApiError>,
    csrf: &str,
) -> Result<Result<CurrentUser, Response>, ApiError> {
    match page_user(user) {
        Ok(u) if u.csrf_ok(csrf) => Ok(Ok(u)),
        Ok(_) => Err(ApiError::Forbidden("missing or invalid CSRF token".into())),
        Err(r) => Ok(Err(r)),
    }
}

fn error_page(state: &AppState, status: StatusCode, message: &str) -> Response {
    match state.render(
        "error.html",
        context! { status => status.as_u16(), message => message },
    ) {
        Ok(html) => (status, html).into_response(),
        Err(e) => e.into_response(),
    }
}

pub(super) async fn login_page(State(state): State<AppState>) -> Result<Response, ApiError> {
    login_form(&state, StatusCode::OK, None, "")
}

fn login_form(
    state: &AppState,
    status: StatusCode,
    error: Option<&str>,
    username: &str,
) -> Result<Response, ApiError> {
    let csrf = random_secret(24);
    let html = state.render(
        "login.html",
        context! { login_csrf => csrf.clone(), error => error, username => username },
    )?;
    let cookie = set_cookie(
        LOGIN_CSRF_COOKIE,
        &csrf,
        3600,
        state.hub.config.http.secure_cookies,
    );
    Ok((status, [(header::SET_COOKIE, cookie)], html).into_response())
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

pub(super) async fn login_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    Form(form): Form<LoginForm>,
) -> Result<Response, ApiError> {
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if expected.is_empty() || !ct_eq(&expected, &form.csrf) {
        return Ok(error_page(
            &state,
            StatusCode::FORBIDDEN,
            "The sign-in form expired or did not come from this site. Reload the page and try again.",
        ));
    }
    let ip = client_ip(&ext);
    let username: String = form.username.trim().chars().take(128).collect();
    let now = wingman_agent::now_ms();
    let wait = state
        .throttle
        .lock()
        .ok()
        .and_then(|t| t.check(&ip, &username, now));
    if let Some(secs) = wait {
        tracing::warn!(%ip, "login throttled");
        return Err(ApiError::TooManyRequests(secs));
    }
    let user = state.hub.store.user_by_name(&username).await?;
    let password = form.password.clone();
    let phc = user.as_ref().map(|u| u.password_hash.clone());
    let ok = tokio::task::spawn_blocking(move || match phc {
        Some(phc) => auth::verify_password(&password, &phc),
        None => {
            // Spend the same time on unknown users.
            let _ = auth::hash_password(&password);
            false
        }
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let Some(user) = user.filter(|_| ok) else {
        if let Ok(mut t) = state.throttle.lock() {
            t.failure(&ip, &username, now);
        }
        tracing::warn!(%ip, "failed login");
        return login_form(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("Wrong user name or password."),
            &username,
        );
    };
    if let Ok(mut t) = state.throttle.lock() {
        t.success(&ip, &username);
    }
    let session_id = random_secret(32);
    let max = state.hub.config.auth.session_max_secs;
    let session = SessionRow {
        id_hash: sha256_hex(&session_id),
        user_id: user.id.clone(),
        csrf_token: random_secret(24),
        created_at: now,
        last_seen: now,
        expires_at: now + i64::try_from(max.saturating_mul(1000)).unwrap_or(i64::MAX / 2),
    };
    state.hub.store.create_session(&session).await?;
    tracing::info!(user = %user.name, %ip, "signed in");
    let secure = state.hub.config.http.secure_cookies;
    let target = if user.must_change_password {
        "/account/password"
    } else {
        "/"
    };
    let mut resp = Redirect::to(target).into_response();
    let h = resp.headers_mut();
    for c in [
        set_cookie(SESSION_COOKIE, &session_id, max, secure),
        set_cookie(LOGIN_CSRF_COOKIE, "", 0, secure),
    ] {
        if let Ok(v) = c.parse() {
            h.append(header::SET_COOKIE, v);
        }
    }
    Ok(resp)
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub(super) async fn logout(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ApiError> {
    let Ok(user) = user else {
        return Ok(to_login());
    };
    if !user.csrf_ok(&form.csrf) {
        return Ok(error_page(
            &state,
            StatusCode::FORBIDDEN,
            "Invalid form token.",
        ));
    }
    if let Some(s) = &user.session {
        state.hub.store.delete_session(&s.id_hash).await?;
    }
    let mut resp = to_login();
    if let Ok(v) = set_cookie(SESSION_COOKIE, "", 0, state.hub.config.http.secure_cookies).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(resp)
}

pub(super) async fn password_page(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
) -> Result<Response, ApiError> {
    let user = match user {
        Ok(u) if u.session.is_some() => u,
        Ok(_) => return Err(ApiError::Forbidden("needs a browser session".into())),
        Err(_) => return Ok(to_login()),
    };
    let html = state.render(
        "password.html",
        context! { user => user.user.name.clone(), csrf => user.csrf(), must_change => user.user.must_change_password, error => None::<String> },
    )?;
    Ok(html.into_response())
}

#[derive(Deserialize)]
pub(super) struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    new_password: String,
}

pub(super) async fn password_submit(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    Form(form): Form<PasswordForm>,
) -> Result<Response, ApiError> {
    let user = match user {
        Ok(u) if u.session.is_some() => u,
        Ok(_) => return Err(ApiError::Forbidden("needs a browser session".into())),
        Err(_) => return Ok(to_login()),
    };
    if !user.csrf_ok(&form.csrf) {
        return Ok(error_page(
            &state,
            StatusCode::FORBIDDEN,
            "Invalid form token.",
        ));
    }
    let render_err = |msg: &str| -> Result<Response, ApiError> {
        let html = state.render(
            "password.html",
            context! { user => user.user.name.clone(), csrf => user.csrf(), must_change => user.user.must_change_password, error => msg },
        )?;
        Ok((StatusCode::BAD_REQUEST, html).into_response())
    };
    if let Err(msg) = auth::check_new_password(&form.new_password) {
        return render_err(msg);
    }
    let phc = user.user.password_hash.clone();
    let (current, new) = (form.current.clone(), form.new_password.clone());
    let hashed = tokio::task::spawn_blocking(move || {
        if !auth::verify_password(&current, &phc) {
            return Ok(None);
        }
        auth::hash_password(&new).map(Some)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(ApiError::Internal)?;
    let Some(hash) = hashed else {
        return render_err("The current password is wrong.");
    };
    state
        .hub
        .store
        .set_password(&user.user.id, &hash, false)
        .await?;
    tracing::info!(user = %user.user.name, "password changed");
    Ok(Redirect::to("/").into_response())
}

#[derive(Serialize)]
struct NodeRow {
    id: String,
    hostname: String,
    kind: String,
    online: bool,
    revoked: bool,
    cpu: Option<f32>,
    mem: Option<f32>,
    disk: Option<f32>,
    disk_mount: Option<String>,
    load: Option<f32>,
    last_seen: String,
}

pub(super) async fn nodes_page(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
) -> Result<Response, ApiError> {
    let user = match page_user(user) {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let now = wingman_agent::now_ms();
    let nodes: Vec<NodeRow> = node_summaries(&state.hub)
        .await?
        .into_iter()
        .map(|n| NodeRow {
            cpu: n.host.as_ref().map(|h| h.cpu_usage_pct),
            mem: n.host.as_ref().map(|h| h.mem_used_pct),
            disk: n.host.as_ref().and_then(|h| h.disk_max_used_pct),
            disk_mount: n.host.as_ref().and_then(|h| h.disk_max_mount.clone()),
            load: n.host.as_ref().map(|h| h.load1),
            last_seen: ago(now, n.last_seen),
            id: n.id,
            hostname: n.hostname,
            kind: n.kind,
            online: n.online,
            revoked: n.revoked,
        })
        .collect();
    let online = nodes.iter().filter(|n| n.online).count();
    let html = state.render(
        "nodes.html",
        context! { user => user.user.name.clone(), csrf => user.csrf(), nodes => minijinja::Value::from(minijinja::value::Serde(&nodes)), online => online, refresh => 10 },
    )?;
    Ok(html.into_response())
}

pub(super) async fn node_page(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let user = match page_user(user) {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let store = &state.hub.store;
    let Some(agent) = store.get_agent(&id).await? else {
        return Ok(error_page(&state, StatusCode::NOT_FOUND, "No such node."));
    };
    let now = wingman_agent::now_ms();
    let latest = store.latest_facts(&id).await?;
    let host = host_facts(&latest).map(|(h, at)| {
        let ind = super::indicators(&h, at);
        context! {
            os => h.os, kernel => h.kernel, uptime => duration(h.uptime_s),
            cpu_count => h.cpu_count, cpu => ind.cpu_usage_pct,
            load => format!("{:.2} {:.2} {:.2}", h.load[0], h.load[1], h.load[2]),
            mem_pct => ind.mem_used_pct,
            mem => format!("{} of {} ({}%)", bytes(h.mem_used), bytes(h.mem_total), ind.mem_used_pct),
            swap => format!("{} of {}", bytes(h.swap_used), bytes(h.swap_total)),
            observed => ago(now, Some(at)),
            filesystems => h.filesystems.iter().map(|f| {
                let used = f.total.saturating_sub(f.available);
                let pct = if f.total == 0 { 0.0 } else { (used as f64 * 1000.0 / f.total as f64).round() / 10.0 };
                context! { mount => f.mount.clone(), fs_type => f.fs_type.clone(), pct => pct, size => format!("{} of {}", bytes(used), bytes(f.total)) }
            }).collect::<Vec<_>>(),
            interfaces => h.interfaces.iter().map(|i| context! {
                name => i.name.clone(), mac => i.mac.clone(), addrs => i.addrs.join(", "),
                traffic => format!("{} / {}", bytes(i.rx_bytes), bytes(i.tx_bytes)),
            }).collect::<Vec<_>>(),
        }
    });
    let presence: Vec<minijinja::Value> = store
        .presence_events(&id, 20)
        .await?
        .into_iter()
        .map(|(online, at)| context! { online => online, at => ago(now, Some(at)) })
        .collect();
    let templates: Vec<minijinja::Value> = store
        .log_templates(&id, 50)
        .await?
        .into_iter()
        .map(|t| {
            let sev = wingman_protocol::logs::Severity::from_priority(
                u8::try_from(t.severity).unwrap_or(6),
            );
            context! {
                template => t.template, count => t.count, severity => sev.as_str(),
                error => sev.is_error(), source => format!("{} {}", t.source_kind, t.source_name),
                last_seen => ago(now, Some(t.last_seen)), bursts => t.bursts,
            }
        })
        .collect();
    let containers: Vec<minijinja::Value> = latest
        .iter()
        .find(|f| f.kind == "docker_inventory")
        .and_then(|f| serde_json::from_str::<wingman_protocol::docker::ContainerInventory>(&f.body).ok())
        .map(|inv| {
            let mut cs = inv.containers;
            cs.sort_by(|a, b| a.name.cmp(&b.name));
            cs.into_iter()
                .map(|c| {
                    let state = format!("{:?}", c.state).to_lowercase();
                    let health = format!("{:?}", c.health).to_lowercase();
                    context! {
                        name => c.name, image => c.image, running => state == "running", state => state,
                        health => health.clone(), unhealthy => health == "unhealthy",
                        restarts => c.restart_count, exit_code => c.exit_code,
                        project => c.compose_project.unwrap_or_default(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let events: Vec<minijinja::Value> = store
        .recent_facts(&id, "container_event", 10)
        .await?
        .into_iter()
        .filter_map(|(at, body)| {
            let e: wingman_protocol::docker::ContainerEvent = serde_json::from_str(&body).ok()?;
            Some(context! {
                at => ago(now, Some(at)), name => e.name, kind => format!("{:?}", e.kind).to_lowercase(),
                exit_code => e.exit_code, health => e.health,
            })
        })
        .collect();
    use wingman_protocol::pve::PveFact;
    let mut seen_guests = std::collections::BTreeSet::new();
    let mut guests: Vec<minijinja::Value> = Vec::new();
    for (_, body) in store.recent_facts(&id, "pve_guest", 500).await? {
        let Ok(PveFact::Guest(g)) = serde_json::from_str::<PveFact>(&body) else {
            continue;
        };
        if !seen_guests.insert(g.vmid) {
            continue;
        }
        guests.push(context! {
            vmid => g.vmid, name => g.name, kind => format!("{:?}", g.kind).to_lowercase(),
            running => g.status == "running", status => g.status, uptime => duration(g.uptime_s),
            mem => format!("{} of {}", bytes(g.mem), bytes(g.maxmem)), cpu => (g.cpu * 1000.0).round() / 10.0,
            ha => g.ha_state.unwrap_or_default(), lock => g.lock.unwrap_or_default(), tags => g.tags.join(", "),
        });
    }
    guests.sort_by_key(|g| {
        g.get_attr("vmid")
            .ok()
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0)
    });
    let tasks: Vec<minijinja::Value> = store
        .recent_facts(&id, "pve_task", 15)
        .await?
        .into_iter()
        .filter_map(|(at, body)| {
            let PveFact::Task(t) = serde_json::from_str::<PveFact>(&body).ok()? else { return None };
            let status = t.status.to_string();
            Some(context! {
                at => ago(now, Some(at)), task_type => t.upid.task_type.clone(), id => t.upid.id.clone(),
                user => t.upid.user.clone(), failed => status.contains("ERROR") || status.to_lowercase().contains("fail"),
                status => status,
            })
        })
        .collect();
    let (rows, _) = store
        .list_incidents(&crate::store::IncidentFilter {
            state: None,
            severity: None,
            node: Some(agent.hostname.clone()),
            limit: 50,
            offset: 0,
        })
        .await?;
    // The filter matches substrings; keep incidents that name this node.
    let incidents: Vec<minijinja::Value> = rows
        .into_iter()
        .filter(|r| r.state != "resolved" && r.nodes.split(',').any(|n| n == agent.hostname))
        .map(
            |r| context! { id => r.id, title => r.title, severity => r.severity, state => r.state },
        )
        .collect();
    let pve_notes: Vec<minijinja::Value> = store
        .pve_notifications(Some(&agent.hostname), 10)
        .await?
        .into_iter()
        .map(|n| {
            context! { kind => n.kind, bad => n.severity == "error", severity => n.severity,
            title => n.title, at => ago(now, Some(n.received_at)) }
        })
        .collect();
    let d = crate::metrics::node_delivery(&state.hub, &id, &latest).await?;
    let delivery = context! {
        spool_bytes => d.agent.as_ref().map(|h| bytes(h.spool_bytes)).unwrap_or_default(),
        oldest => d.agent.as_ref().map(|h| if h.spool_depth_batches == 0 { "nothing waiting".to_string() } else { duration(h.oldest_unacked_ms / 1000) }).unwrap_or_default(),
        reported => ago(now, d.reported_at),
        agent => minijinja::Value::from(minijinja::value::Serde(&d.agent)), hub => minijinja::Value::from(minijinja::value::Serde(&d.hub)),
        gaps => minijinja::Value::from(minijinja::value::Serde(&d.gaps)),
    };
    let node = context! {
        id => agent.id, hostname => agent.hostname, kind => agent.kind, online => agent.online,
        revoked => agent.revoked_at.is_some(), agent_version => agent.agent_version,
        last_seen => ago(now, agent.last_seen), enrolled => ago(now, Some(agent.enrolled_at)),
        cert_expires => until(now, agent.cert_not_after),
    };
    let html = state.render(
        "node.html",
        context! { user => user.user.name.clone(), csrf => user.csrf(), node => node, host => host,
        presence => presence, templates => templates, containers => containers, events => events, guests => guests, tasks => tasks, delivery => delivery,
        incidents => incidents, pve_notes => pve_notes, is_admin => user.is_admin(), refresh => 15 },
    )?;
    Ok(html.into_response())
}

pub(super) async fn revoke_submit(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ApiError> {
    let user = match page_user(user) {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    if !user.csrf_ok(&form.csrf) {
        return Ok(error_page(
            &state,
            StatusCode::FORBIDDEN,
            "Invalid form token.",
        ));
    }
    if !user.is_admin() {
        return Ok(error_page(
            &state,
            StatusCode::FORBIDDEN,
            "Only admins can revoke agents.",
        ));
    }
    state
        .hub
        .store
        .revoke_agent(&id, wingman_agent::now_ms())
        .await?;
    let closed = state.hub.registry.revoke(&id);
    tracing::info!(agent_id = %id, by = %user.user.name, closed, "agent revoked");
    let _ = state
        .hub
        .audit
        .record(
            &format!("user:{}", user.user.name),
            crate::control::audit::AuditKind::AgentRevoked,
            None,
            serde_json::json!({ "agent_id": id }),
        )
        .await;
    Ok(Redirect::to(&format!("/nodes/{id}")).into_response())
}
