//! The audit trail at the HTTP edge (admins only): `/audit` (page),
//! `GET /api/v1/audit` (JSON lines export, `?incident=&after=&limit=`) and
//! `GET /api/v1/audit/verify` (recomputes the hash chain).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use minijinja::context;
use serde::Deserialize;
use serde_json::{Value, json};

use super::pages::page_user;
use super::{ApiError, AppState, CurrentUser};
use crate::audit::{VerifyError, from_row};
use crate::control::audit::AuditEntry;

fn admin(user: &CurrentUser) -> Result<(), ApiError> {
    if user.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "only administrators may read the audit trail".into(),
        ))
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct AuditQuery {
    #[serde(default)]
    incident: String,
    #[serde(default)]
    after: Option<i64>,
    #[serde(default)]
    limit: Option<i64>,
}

/// Entries of one incident (for its page and API), oldest first.
pub(crate) async fn for_incident(state: &AppState, id: &str) -> Result<Vec<AuditEntry>, ApiError> {
    let rows = state.hub.store.audit_entries(Some(id), 0, 200).await?;
    rows.iter()
        .map(|r| from_row(r).map_err(|e| ApiError::Internal(e.to_string())))
        .collect()
}

async fn entries(state: &AppState, q: &AuditQuery) -> Result<Vec<AuditEntry>, ApiError> {
    if q.incident.len() > 200 {
        return Err(ApiError::BadRequest("incident id too long".into()));
    }
    let max = i64::from(state.hub.config.retention.max_page_size) * 50;
    let rows = state
        .hub
        .store
        .audit_entries(
            (!q.incident.is_empty()).then_some(q.incident.as_str()),
            q.after.unwrap_or(0).max(0),
            q.limit.unwrap_or(max).clamp(1, max),
        )
        .await?;
    rows.iter()
        .map(|r| from_row(r).map_err(|e| ApiError::Internal(e.to_string())))
        .collect()
}

/// `GET /api/v1/audit`: JSON lines, one entry per line.
pub(super) async fn export_api(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    admin(&user)?;
    let body = crate::control::audit::to_jsonl(&entries(&state, &q).await?);
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// `GET /api/v1/audit/verify`.
pub(super) async fn verify_api(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<Json<Value>, ApiError> {
    admin(&user)?;
    Ok(Json(match crate::audit::verify(&state.hub.store).await {
        Ok((n, head)) => {
            json!({ "ok": true, "entries": n, "head": head.map(|h| json!({"seq": h.seq, "hash": h.hash})) })
        }
        Err(VerifyError::Broken(b)) => {
            json!({ "ok": false, "broken_at": b.seq, "reason": b.reason.to_string() })
        }
        Err(e) => return Err(ApiError::Internal(e.to_string())),
    }))
}

/// `GET /audit`.
pub(super) async fn audit_page(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let user = match page_user(user) {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    admin(&user)?;
    let mut list = entries(&state, &q).await?;
    list.reverse();
    list.truncate(500);
    let verified = crate::audit::verify(&state.hub.store).await;
    let (ok, status) = match &verified {
        Ok((n, _)) => (true, format!("{n} entries; the hash chain verifies.")),
        Err(e) => (false, e.to_string()),
    };
    let html = state.render(
        "audit.html",
        context! {
            user => user.user.name.clone(), csrf => user.csrf(), ok => ok, status => status,
            entries => minijinja::Value::from(minijinja::value::Serde(&list)),
        },
    )?;
    Ok(html.into_response())
}
