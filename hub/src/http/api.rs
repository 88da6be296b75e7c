//! JSON API handlers under `/api/v1`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::{ApiError, AppState, CurrentUser, node_summaries};

fn require_ready(user: &CurrentUser) -> Result<(), ApiError> {
    if user.user.must_change_password && user.session.is_some() {
        return Err(ApiError::Forbidden(
            "choose a new password at /account/password first".into(),
        ));
    }
    Ok(())
}

/// `GET /api/v1/nodes`: every node with online state and host indicators.
pub(super) async fn nodes(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<Json<Value>, ApiError> {
    require_ready(&user)?;
    let nodes = node_summaries(&state.hub).await?;
    Ok(Json(json!({ "nodes": nodes })))
}

/// `GET /api/v1/nodes/{id}`: one node with its latest facts and presence history.
pub(super) async fn node(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_ready(&user)?;
    let store = &state.hub.store;
    let agent = store.get_agent(&id).await?.ok_or(ApiError::NotFound)?;
    let latest = store.latest_facts(&id).await?;
    let facts: serde_json::Map<String, Value> = latest
        .iter()
        .map(|f| {
            let body: Value = serde_json::from_str(&f.body).unwrap_or(Value::Null);
            (
                f.kind.clone(),
                json!({ "observed_at": f.observed_at, "body": body }),
            )
        })
        .collect();
    let presence: Vec<Value> = store
        .presence_events(&id, 50)
        .await?
        .into_iter()
        .map(|(online, at)| json!({ "online": online, "at": at }))
        .collect();
    let delivery = crate::metrics::node_delivery(&state.hub, &id, &latest).await?;
    let (rows, _) = store
        .list_incidents(&crate::store::IncidentFilter {
            state: None,
            severity: None,
            node: Some(agent.hostname.clone()),
            limit: 50,
            offset: 0,
        })
        .await?;
    let incidents: Vec<Value> = rows
        .iter()
        .filter(|r| r.state != "resolved" && r.nodes.split(',').any(|n| n == agent.hostname))
        .map(|r| json!({ "id": r.id, "title": r.title, "severity": r.severity, "state": r.state }))
        .collect();
    Ok(Json(json!({
        "incidents": incidents,
        "node": agent,
        "facts": facts,
        "presence": presence,
        "delivery": delivery,
    })))
}

/// `POST /api/v1/nodes/{id}/revoke`: admin only; session callers send
/// `X-CSRF-Token`.
pub(super) async fn revoke(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_ready(&user)?;
    let token = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !user.csrf_ok(token) {
        return Err(ApiError::Forbidden("missing or invalid CSRF token".into()));
    }
    if !user.is_admin() {
        return Err(ApiError::Forbidden("only admins can revoke agents".into()));
    }
    let revoked = state
        .hub
        .store
        .revoke_agent(&id, wingman_agent::now_ms())
        .await?;
    if !revoked && state.hub.store.get_agent(&id).await?.is_none() {
        return Err(ApiError::NotFound);
    }
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
    Ok(Json(
        json!({ "revoked": true, "connections_closed": closed }),
    ))
}

#[derive(serde::Deserialize)]
pub(super) struct LimitQuery {
    limit: Option<i64>,
}

/// `GET /api/v1/nodes/{id}/logs`: the node's log templates with counts,
/// most recently seen first (masked templates only; raw lines never reach the hub).
pub(super) async fn node_logs(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<LimitQuery>,
) -> Result<Json<Value>, ApiError> {
    require_ready(&user)?;
    if state.hub.store.get_agent(&id).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = state.hub.store.log_templates(&id, limit).await?;
    Ok(Json(json!({ "templates": rows })))
}

/// `GET /api/v1/templates/{template_id}`: one template's counts on every node.
pub(super) async fn template(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_ready(&user)?;
    let tid: u64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest("template ids are unsigned 64-bit integers".into()))?;
    let rows = state.hub.store.template_rows(tid).await?;
    if rows.is_empty() {
        return Err(ApiError::NotFound);
    }
    let total: i64 = rows.iter().map(|r| r.count).sum();
    Ok(Json(
        json!({ "template_id": id, "total": total, "rows": rows }),
    ))
}

/// `GET /metrics`: Prometheus text format (bearer API key or a session).
pub(super) async fn metrics(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<axum::response::Response, ApiError> {
    require_ready(&user)?;
    let text = crate::metrics::scrape(&state.hub).await?;
    Ok(axum::response::IntoResponse::into_response((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )))
}
