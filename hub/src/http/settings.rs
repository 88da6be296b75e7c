//! Notification settings: the page (`/settings/notifications`) and the API
//! (`/api/v1/notifications`). Anyone signed in may look; only admins may
//! save or send test messages. Secrets are write-only: they come back as
//! `{"set": true}` and a saved document that keeps that marker keeps the
//! stored value.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Deserialize;
use serde_json::{Value, json};

use super::pages::{form_user, page_user};
use super::{ApiError, AppState, CurrentUser};
use crate::notify::NotifyConfig;
use crate::notify::service::{ConfigSource, SETTING_KEY, merge_write_only};
use crate::store::SettingRow;

/// Largest settings document accepted, bytes.
const MAX_DOC: usize = 64 * 1024;

fn admin(user: &CurrentUser) -> Result<(), ApiError> {
    if user.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "only administrators may change notification settings".into(),
        ))
    }
}

/// Validates, applies and stores a settings document. The error is a
/// sentence for the operator (it never echoes a secret).
async fn save(state: &AppState, user: &CurrentUser, mut doc: Value) -> Result<usize, ApiError> {
    admin(user)?;
    if !doc.is_object() {
        return Err(ApiError::BadRequest(
            "the notification settings must be a JSON object".into(),
        ));
    }
    let store = &state.hub.store;
    let old: Option<Value> = store
        .get_setting(SETTING_KEY)
        .await?
        .and_then(|r| serde_json::from_str(&r.value).ok());
    merge_write_only(&mut doc, old.as_ref()).map_err(ApiError::BadRequest)?;
    let cfg: NotifyConfig = serde_json::from_value(doc.clone())
        .map_err(|e| ApiError::BadRequest(format!("invalid notification settings: {e}")))?;
    cfg.validate()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let channels = cfg.channels.len();
    state
        .hub
        .notify
        .reload(cfg, ConfigSource::Dashboard)
        .await
        .map_err(ApiError::BadRequest)?;
    store
        .put_setting(&SettingRow {
            key: SETTING_KEY.into(),
            value: doc.to_string(),
            updated_at: wingman_agent::now_ms(),
            updated_by: user.user.name.clone(),
        })
        .await?;
    tracing::info!(by = %user.user.name, channels, "notification settings saved");
    let _ = state
        .hub
        .audit
        .record(
            &format!("user:{}", user.user.name),
            crate::control::audit::AuditKind::NotificationSettingsChanged,
            None,
            json!({ "channels": channels }),
        )
        .await;
    Ok(channels)
}

async fn view(state: &AppState) -> Result<Value, ApiError> {
    let v = state
        .hub
        .notify
        .view()
        .await
        .ok_or(ApiError::Unavailable(2))?;
    serde_json::to_value(v).map_err(|e| ApiError::Internal(e.to_string()))
}

/// `GET /api/v1/notifications`.
pub(super) async fn notifications_api(
    State(state): State<AppState>,
    _user: CurrentUser,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&state).await?))
}

/// `PUT /api/v1/notifications`: replaces the settings (admin).
pub(super) async fn notifications_put(
    State(state): State<AppState>,
    user: CurrentUser,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    if body.len() > MAX_DOC {
        return Err(ApiError::BadRequest("the document is too large".into()));
    }
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
    save(&state, &user, doc).await?;
    Ok(Json(view(&state).await?))
}

async fn test(state: &AppState, user: &CurrentUser, name: &str) -> Result<u16, ApiError> {
    admin(user)?;
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::BadRequest("no such channel".into()));
    }
    let r = state.hub.notify.test(name).await;
    tracing::info!(by = %user.user.name, channel = %name, ok = r.is_ok(), "test notification");
    let _ = state
        .hub
        .audit
        .record(
            &format!("user:{}", user.user.name),
            crate::control::audit::AuditKind::TestNotificationSent,
            None,
            json!({ "channel": name, "delivered": r.is_ok() }),
        )
        .await;
    r.map_err(ApiError::BadRequest)
}

/// `POST /api/v1/notifications/channels/{name}/test` (admin): 200 with the
/// receiver's status, or 400 with the reason the message was not delivered.
pub(super) async fn notifications_test_api(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let status = test(&state, &user, &name).await?;
    Ok(Json(json!({ "ok": true, "status": status })))
}

#[derive(Debug, Deserialize)]
pub(super) struct PageQuery {
    #[serde(default)]
    msg: String,
    #[serde(default)]
    err: String,
}

/// `GET /settings/notifications`.
pub(super) async fn notifications_page(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let user = match page_user(user) {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let v = state
        .hub
        .notify
        .view()
        .await
        .ok_or(ApiError::Unavailable(2))?;
    let channels: Vec<minijinja::Value> = v
        .config
        .get("channels")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|c| {
                    let name = c
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let kind = c
                        .get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let settings: Vec<String> = c
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .filter(|(k, _)| *k != "name" && *k != "kind")
                                .map(|(k, v)| match v.get("set").and_then(Value::as_bool) {
                                    Some(true) => format!("{k}: (secret, set)"),
                                    Some(false) => format!("{k}: (secret, not set)"),
                                    None => format!("{k}: {v}"),
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    context! { name => name, kind => kind, settings => settings }
                })
                .collect()
        })
        .unwrap_or_default();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let deliveries: Vec<minijinja::Value> = v
        .deliveries
        .iter()
        .take(30)
        .map(|d| {
            context! {
                channel => d.channel.clone(), incident => d.incident_id.clone(), ok => d.ok,
                status => d.status, error => d.error.clone(), attempts => d.attempts,
                ago => format!("{} s ago", (now - d.at.unix_timestamp()).max(0)),
            }
        })
        .collect();
    let doc = serde_json::to_string_pretty(&v.config).unwrap_or_default();
    let html = state.render(
        "notifications.html",
        context! {
            user => user.user.name.clone(), csrf => user.csrf(), is_admin => user.is_admin(),
            source => match v.source { ConfigSource::File => "hub.toml", ConfigSource::Dashboard => "the dashboard" },
            channels => channels, deliveries => deliveries, doc => doc,
            stats => minijinja::Value::from(minijinja::value::Serde(&v.stats)),
            events_dropped => v.events_dropped, deliveries_dropped => v.deliveries_dropped,
            msg => q.msg.chars().take(300).collect::<String>(), err => q.err.chars().take(500).collect::<String>(),
            webhook_template => crate::pve_webhook::BODY_TEMPLATE,
        },
    )?;
    Ok(html.into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct SaveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    doc: String,
}

fn back(msg: &str, err: &str) -> Response {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    Redirect::to(&format!(
        "/settings/notifications?msg={}&err={}",
        enc(msg),
        enc(err)
    ))
    .into_response()
}

fn sentence(e: ApiError) -> Result<String, ApiError> {
    match e {
        ApiError::BadRequest(m) | ApiError::Forbidden(m) => Ok(m),
        other => Err(other),
    }
}

/// `POST /settings/notifications` (form): saves the edited document.
pub(super) async fn notifications_save_form(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    axum::Form(form): axum::Form<SaveForm>,
) -> Result<Response, ApiError> {
    let user = match form_user(user, &form.csrf)? {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    if form.doc.len() > MAX_DOC {
        return Ok(back("", "the document is too large"));
    }
    let doc: Value = match serde_json::from_str(&form.doc) {
        Ok(d) => d,
        Err(e) => return Ok(back("", &format!("the settings are not JSON: {e}"))),
    };
    match save(&state, &user, doc).await {
        Ok(n) => Ok(back(&format!("Saved: {n} channel(s) active."), "")),
        Err(e) => Ok(back("", &sentence(e)?)),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct TestForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    channel: String,
}

/// `POST /settings/notifications/test` (form): sends a test message.
pub(super) async fn notifications_test_form(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    axum::Form(form): axum::Form<TestForm>,
) -> Result<Response, ApiError> {
    let user = match form_user(user, &form.csrf)? {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    match test(&state, &user, &form.channel).await {
        Ok(status) => Ok(back(
            &format!(
                "Test message to {} delivered (status {status}).",
                form.channel
            ),
            "",
        )),
        Err(e) => Ok(back("", &sentence(e)?)),
    }
}
