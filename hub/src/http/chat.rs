//! Chat page and API, and guided skill runs (checklists ticked on a page).
//!
//! `POST /api/v1/chat` takes `{"message": "..."}`; when the model is busy or
//! failing it answers `503` with `Retry-After`. Answers are plain text and
//! the page renders them escaped.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Deserialize;
use serde_json::{Value, json};

use super::pages::{form_user, page_user};
use super::{ApiError, AppState, CurrentUser};
use crate::chat::{self, ChatFailure, RunStep};

/// Messages shown on the chat page.
const TRANSCRIPT: i64 = 100;

#[derive(Deserialize)]
pub(super) struct ChatBody {
    message: String,
}

#[derive(Deserialize)]
pub(super) struct ChatForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

fn busy(retry_after_secs: u64, reason: &str) -> Response {
    let mut r = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "error": format!("the model is busy or failing: {reason}") })),
    )
        .into_response();
    if let Ok(v) = header::HeaderValue::from_str(&retry_after_secs.max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn failure(e: ChatFailure) -> Response {
    match e {
        ChatFailure::BadRequest(m) => ApiError::BadRequest(m).into_response(),
        ChatFailure::Busy {
            retry_after_secs,
            reason,
        } => busy(retry_after_secs, &reason),
        ChatFailure::Store(e) => ApiError::from(e).into_response(),
    }
}

pub(super) async fn chat_page(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
) -> Result<Response, ApiError> {
    let user = match page_user(user) {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    render_chat(&state, &user, None).await
}

async fn render_chat(
    state: &AppState,
    user: &CurrentUser,
    link: Option<String>,
) -> Result<Response, ApiError> {
    let messages = state
        .hub
        .store
        .chat_messages(&chat::chat_id(&user.user.id), TRANSCRIPT)
        .await?;
    let status = state.hub.reasoner.status().await;
    let exchanges = state
        .hub
        .store
        .exchanges("chat", &chat::chat_id(&user.user.id), 500)
        .await?;
    let ex: Vec<minijinja::Value> = exchanges
        .iter()
        .rev()
        .take(10)
        .map(|e| {
            context! {
                provider => e.provider.clone(), model => e.model.clone(), outcome => e.outcome.clone(),
                status => e.http_status, latency_ms => e.latency_ms, tokens_in => e.tokens_in,
                tokens_out => e.tokens_out, error => e.error.clone(),
                request => e.request_body.clone(), response => e.response_body.clone(),
            }
        })
        .collect();
    let msgs: Vec<minijinja::Value> = messages
        .iter()
        .map(|m| context! { role => m.role.clone(), author => m.author.clone(), text => m.text.clone() })
        .collect();
    let model = status
        .provider
        .as_ref()
        .map(|p| format!("{p}/{}", status.model.clone().unwrap_or_default()));
    let html = state.render(
        "chat.html",
        context! {
            user => user.user.name.clone(), csrf => user.csrf(), messages => msgs,
            model => model, stopped => status.stopped, link => link, exchanges => ex,
        },
    )?;
    Ok(html.into_response())
}

pub(super) async fn chat_form(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    axum::Form(form): axum::Form<ChatForm>,
) -> Result<Response, ApiError> {
    let user = match form_user(user, &form.csrf)? {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    match chat::handle(&state.hub, &user.user.id, &user.user.name, &form.message).await {
        Ok(r) => {
            if r.link.is_some() {
                return render_chat(&state, &user, r.link).await;
            }
            Ok(Redirect::to("/chat").into_response())
        }
        // The transcript already records why; the page shows it.
        Err(ChatFailure::Busy { .. }) => Ok(Redirect::to("/chat").into_response()),
        Err(e) => Ok(failure(e)),
    }
}

pub(super) async fn chat_api(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    body: Result<Json<ChatBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let token = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !user.csrf_ok(token) {
        return Err(ApiError::Forbidden("missing or invalid CSRF token".into()));
    }
    let Ok(Json(body)) = body else {
        return Err(ApiError::BadRequest(
            "expected a JSON body {\"message\": \"...\"}".into(),
        ));
    };
    match chat::handle(&state.hub, &user.user.id, &user.user.name, &body.message).await {
        Ok(r) => Ok(Json(json!({
            "kind": r.kind, "reply": r.text, "link": r.link, "model": r.model,
        }))
        .into_response()),
        Err(e) => Ok(failure(e)),
    }
}

async fn load_run(
    state: &AppState,
    id: &str,
) -> Result<(crate::store::SkillRunRow, Vec<RunStep>), ApiError> {
    if id.len() > 64 {
        return Err(ApiError::NotFound);
    }
    let run = state
        .hub
        .store
        .skill_run(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let steps: Vec<RunStep> = serde_json::from_str(&run.steps)
        .map_err(|e| ApiError::Internal(format!("stored skill run unreadable: {e}")))?;
    Ok((run, steps))
}

async fn tick(state: &AppState, id: &str, idx: usize, by: &str) -> Result<Vec<RunStep>, ApiError> {
    let (_, mut steps) = load_run(state, id).await?;
    let now = wingman_agent::now_ms();
    let Some(step) = steps.get_mut(idx) else {
        return Err(ApiError::BadRequest("no such step".into()));
    };
    if !step.done {
        step.done = true;
        step.by = Some(by.to_owned());
        step.at = Some(now);
    }
    let json = serde_json::to_string(&steps).map_err(|e| ApiError::Internal(e.to_string()))?;
    state.hub.store.update_skill_run(id, &json, now).await?;
    tracing::info!(run = %id, step = idx, %by, "skill run step done");
    Ok(steps)
}

pub(super) async fn run_page(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let user = match page_user(user) {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let (run, steps) = load_run(&state, &id).await?;
    let done = steps.iter().filter(|s| s.done).count();
    let html = state.render(
        "run.html",
        context! {
            user => user.user.name.clone(), csrf => user.csrf(),
            run => minijinja::Value::from(minijinja::value::Serde(&run)),
            steps => minijinja::Value::from(minijinja::value::Serde(&steps)), done => done,
        },
    )?;
    Ok(html.into_response())
}

pub(super) async fn run_tick_form(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    Path((id, idx)): Path<(String, usize)>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Result<Response, ApiError> {
    let user = match form_user(user, &form.csrf)? {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    tick(&state, &id, idx, &user.user.name).await?;
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}

pub(super) async fn run_api(
    State(state): State<AppState>,
    _user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (run, steps) = load_run(&state, &id).await?;
    Ok(Json(json!({
        "id": run.id, "skill_id": run.skill_id, "incident_id": run.incident_id,
        "started_by": run.started_by, "created_at": run.created_at, "updated_at": run.updated_at,
        "steps": steps,
    })))
}

pub(super) async fn run_tick_api(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    Path((id, idx)): Path<(String, usize)>,
) -> Result<Json<Value>, ApiError> {
    let token = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !user.csrf_ok(token) {
        return Err(ApiError::Forbidden("missing or invalid CSRF token".into()));
    }
    let steps = tick(&state, &id, idx, &user.user.name).await?;
    Ok(Json(json!({ "steps": steps })))
}
