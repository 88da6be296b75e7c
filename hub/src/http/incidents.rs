//! Incidents: list and detail pages, acknowledge/resolve forms (CSRF), the
//! JSON API, and server-sent events that push changes to open pages.

use std::convert::Infallible;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Deserialize;
use serde_json::{Value, json};

use super::pages::{ago, form_user, page_user};
use super::{ApiError, AppState, CurrentUser};
use crate::engine::{Command, Incident};
use crate::store::IncidentFilter;

const PAGE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    node: String,
    #[serde(default)]
    page: Option<i64>,
    #[serde(default)]
    limit: Option<i64>,
}

impl ListQuery {
    fn filter(&self, max_page: u32) -> Result<IncidentFilter, ApiError> {
        let pick = |v: &str, allowed: &[&str], what: &str| -> Result<Option<String>, ApiError> {
            match v.trim() {
                "" => Ok(None),
                v if allowed.contains(&v) => Ok(Some(v.to_string())),
                _ => Err(ApiError::BadRequest(format!(
                    "{what} must be one of {}",
                    allowed.join(", ")
                ))),
            }
        };
        let limit = self.limit.unwrap_or(PAGE).clamp(1, i64::from(max_page));
        let page = self.page.unwrap_or(0).clamp(0, 100_000);
        if self.node.len() > 253 {
            return Err(ApiError::BadRequest("node name too long".into()));
        }
        Ok(IncidentFilter {
            state: pick(&self.state, &["open", "acknowledged", "resolved"], "state")?,
            severity: pick(&self.severity, &["critical", "warning", "info"], "severity")?,
            node: (!self.node.trim().is_empty()).then(|| self.node.trim().to_string()),
            limit,
            offset: page * limit,
        })
    }
}

fn parse(body: &str) -> Result<Incident, ApiError> {
    serde_json::from_str(body)
        .map_err(|e| ApiError::Internal(format!("stored incident unreadable: {e}")))
}

pub(super) async fn list_page(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let user = match page_user(user) {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let f = q.filter(state.hub.config.retention.max_page_size)?;
    let (rows, total) = state.hub.store.list_incidents(&f).await?;
    let now = wingman_agent::now_ms();
    let page = q.page.unwrap_or(0).max(0);
    let items: Vec<minijinja::Value> = rows
        .iter()
        .map(|r| {
            context! { id => r.id.clone(), title => r.title.clone(), severity => r.severity.clone(),
                       state => r.state.clone(), nodes => r.nodes.replace(',', ", "), updated => ago(now, Some(r.updated_at)) }
        })
        .collect();
    let html = state.render(
        "incidents.html",
        context! {
            user => user.user.name.clone(), csrf => user.csrf(), incidents => items, total => total,
            state => q.state.clone(), severity => q.severity.clone(), node => q.node.clone(),
            prev => (page > 0).then_some(page - 1), next => ((page + 1) * f.limit < total).then_some(page + 1),
        },
    )?;
    Ok(html.into_response())
}

pub(super) async fn detail_page(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let user = match page_user(user) {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let Some(row) = state.hub.store.get_incident(&id).await? else {
        let html = state.render(
            "error.html",
            context! { status => 404, message => "No such incident." },
        )?;
        return Ok((StatusCode::NOT_FOUND, html).into_response());
    };
    let inc = parse(&row.body)?;
    let now = wingman_agent::now_ms();
    let evidence: Vec<minijinja::Value> = inc
        .evidence
        .iter()
        .map(|e| {
            context! { n => e.n, when => ago(now, Some(e.at_ms)), detector => e.detector.as_str(),
            severity => e.severity.as_str(), summary => e.summary.clone(), count => e.count }
        })
        .collect();
    let timeline: Vec<minijinja::Value> = inc
        .timeline
        .iter()
        .map(|t| {
            context! { when => ago(now, Some(t.at_ms)), event => format!("{:?}", t.event).to_lowercase(),
                       by => t.by.clone(), detail => t.detail.clone() }
        })
        .collect();
    let suggestions = suggestions(&state, &inc);
    // Similar past incidents: shown when retrieval answers, else a note
    // (the page itself never fails because the embedder is down).
    let (similar, similar_note) = match super::search::similar_for(&state, &inc).await {
        Ok(s) => (s, None),
        Err(ApiError::Unavailable(s)) => (
            Vec::new(),
            Some(format!(
                "Similar incidents are unavailable right now; retry in {s} s."
            )),
        ),
        Err(e) => return Err(e),
    };
    let model = model_view(&state, &inc.id).await?;
    let audit = super::audit::for_incident(&state, &inc.id).await?;
    let plans = state.hub.control.for_incident(&inc.id).await?;
    let (control, _) = state.hub.control.policy();
    // Suggested skills first, then the rest.
    let mut plan_skills: Vec<minijinja::Value> = suggestions
        .iter()
        .map(|s| context! { id => s.id.clone(), title => format!("{} (suggested)", s.title) })
        .collect();
    for s in &state.hub.skills.skills {
        if !suggestions.iter().any(|x| x.id == s.id) {
            plan_skills.push(context! { id => s.id.clone(), title => s.title.clone() });
        }
    }
    let subject = crate::plans::PlanSubject::of(&inc);
    let plan_example = serde_json::to_string_pretty(&json!({
        "title": format!("Fix: {}", inc.title),
        "steps": [
            match (&subject.node, &subject.container, subject.vmid) {
                (Some(n), Some(c), _) => json!({"action": "docker.restart", "params": {"node": n, "container": c, "timeout_s": null}, "why": "bring it back"}),
                (Some(n), None, Some(v)) => json!({"action": "pve.start", "params": {"node": n, "vmid": v}, "why": "bring it back"}),
                _ => json!({"manual": "describe what to do", "node": subject.node, "command": null}),
            }
        ]
    }))
    .unwrap_or_default();
    let html = state.render(
        "incident.html",
        context! {
            user => user.user.name.clone(), csrf => user.csrf(),
            i => context! {
                id => inc.id.clone(), title => inc.title.clone(), severity => inc.severity.as_str(),
                state => inc.state.as_str(), storm => inc.storm, merged_count => inc.merged_count,
                narrative => inc.narrative.clone(), likely_cause => inc.likely_cause.clone(),
                affected => inc.affected.clone(), evidence => evidence, evidence_omitted => inc.evidence_omitted,
            },
            opened => ago(now, Some(inc.opened_at_ms)), since => ago(now, Some(inc.since_ms)),
            ack => inc.acknowledged.as_ref().map(|a| a.by.clone()),
            resolved => inc.resolved.as_ref().map(|a| a.by.clone()),
            timeline => timeline,
            suggestions => minijinja::Value::from(minijinja::value::Serde(&suggestions)),
            similar => minijinja::Value::from(minijinja::value::Serde(&similar)), similar_note => similar_note,
            model => model.page,
            audit => minijinja::Value::from(minijinja::value::Serde(&audit)),
            plans => minijinja::Value::from(minijinja::value::Serde(&plans)),
            control_mode => control.mode, plan_skills => plan_skills, plan_example => plan_example,
            model_available => state.hub.reasoner.configured(),
        },
    )?;
    Ok(html.into_response())
}

/// The reasoner's artefacts of an incident, for the page and the API.
struct ModelView {
    narrative: Option<crate::reasoner::NarrativeView>,
    exchanges: Vec<crate::store::ExchangeRow>,
    status: crate::reasoner::AssistantStatus,
    page: minijinja::Value,
}

/// Most exchanges shown per incident.
const MAX_EXCHANGES: i64 = 50;

async fn model_view(state: &AppState, id: &str) -> Result<ModelView, ApiError> {
    use crate::reasoner::{NarrativeView, ref_anchor};
    let narrative = state
        .hub
        .store
        .model_narrative(id)
        .await?
        .map(|r| NarrativeView::from(&r));
    let exchanges = state
        .hub
        .store
        .exchanges("incident", id, MAX_EXCHANGES)
        .await?;
    let status = state.hub.reasoner.status().await;
    let cite = |refs: &[String]| -> Vec<minijinja::Value> {
        refs.iter()
            .map(|r| context! { id => r.clone(), href => ref_anchor(r) })
            .collect()
    };
    let ok = narrative
        .as_ref()
        .and_then(|n| n.narrative.as_ref().map(|m| (n, m)))
        .map(|(n, m)| {
            context! {
                provider => n.provider.clone(), model => n.model.clone(),
                summary => m.summary.clone(), impact => m.impact.clone(),
                confidence => format!("{:?}", m.confidence).to_lowercase(),
                causes => m.likely_causes.iter().map(|c| context! { cause => c.cause.clone(), refs => cite(&c.evidence) }).collect::<Vec<_>>(),
                steps => m.next_steps.iter().map(|s| context! { step => s.step.clone(), skills => s.skill_ids.clone() }).collect::<Vec<_>>(),
            }
        });
    let failed = narrative
        .as_ref()
        .filter(|n| n.narrative.is_none())
        .map(|n| context! { status => n.status.clone(), error => n.error.clone(), provider => n.provider.clone() });
    let refs: Vec<minijinja::Value> = narrative
        .as_ref()
        .map(|n| {
            n.refs
                .iter()
                .filter(|(k, _)| !k.starts_with('E'))
                .map(|(k, v)| context! { id => k.clone(), anchor => ref_anchor(k).trim_start_matches('#').to_string(), label => v.clone() })
                .collect()
        })
        .unwrap_or_default();
    let ex: Vec<minijinja::Value> = exchanges
        .iter()
        .map(|e| {
            context! {
                provider => e.provider.clone(), model => e.model.clone(), task => e.task.clone(),
                attempt => e.attempt, status => e.http_status, outcome => e.outcome.clone(),
                tokens_in => e.tokens_in, tokens_out => e.tokens_out, latency_ms => e.latency_ms,
                cost => e.est_cost_usd.map(|c| format!("{c:.5}")), error => e.error.clone(),
                request => e.request_body.clone(), response => e.response_body.clone(),
            }
        })
        .collect();
    let page = context! {
        ok => ok, failed => failed, refs => refs, exchanges => ex,
        configured => status.provider.is_some(), stopped => status.stopped.clone(),
    };
    Ok(ModelView {
        narrative,
        exchanges,
        status,
        page,
    })
}

/// Skills whose triggers match the incident's detectors and evidence.
pub(crate) fn suggestions(state: &AppState, inc: &Incident) -> Vec<crate::skills::Suggestion> {
    let detectors: Vec<&str> = inc.detectors.iter().map(|d| d.as_str()).collect();
    let mut text: Vec<&str> = inc.evidence.iter().map(|e| e.summary.as_str()).collect();
    text.push(inc.title.as_str());
    let platforms: Vec<&str> = Vec::new();
    let mut s = crate::skills::suggest(&state.hub.skills.skills, &detectors, &text, &platforms);
    s.truncate(5);
    s
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn command(state: &AppState, id: &str, by: &str, resolve: bool) -> Result<(), ApiError> {
    let cmd = if resolve {
        Command::Resolve {
            incident_id: id.to_string(),
            by: by.to_string(),
        }
    } else {
        Command::Acknowledge {
            incident_id: id.to_string(),
            by: by.to_string(),
        }
    };
    state
        .hub
        .incidents
        .command(cmd)
        .await
        .map_err(ApiError::BadRequest)?;
    tracing::info!(incident = %id, %by, resolve, "incident command");
    let kind = if resolve {
        crate::control::audit::AuditKind::IncidentResolved
    } else {
        crate::control::audit::AuditKind::IncidentAcknowledged
    };
    let _ = state
        .hub
        .audit
        .record(&format!("user:{by}"), kind, Some(id), serde_json::json!({}))
        .await;
    Ok(())
}

async fn form_command(
    state: AppState,
    user: Result<CurrentUser, ApiError>,
    id: String,
    form: CsrfForm,
    resolve: bool,
) -> Result<Response, ApiError> {
    let user = match form_user(user, &form.csrf)? {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    command(&state, &id, &user.user.name, resolve).await?;
    Ok(Redirect::to(&format!("/incidents/{id}")).into_response())
}

pub(super) async fn ack_form(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Result<Response, ApiError> {
    form_command(state, user, id, form, false).await
}

pub(super) async fn resolve_form(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Result<Response, ApiError> {
    form_command(state, user, id, form, true).await
}

pub(super) async fn list_api(
    State(state): State<AppState>,
    _user: CurrentUser,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = q.filter(state.hub.config.retention.max_page_size)?;
    let (rows, total) = state.hub.store.list_incidents(&f).await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|r| json!({ "id": r.id, "title": r.title, "severity": r.severity, "state": r.state,
                         "nodes": r.nodes.split(',').filter(|s| !s.is_empty()).collect::<Vec<_>>(),
                         "opened_at": r.opened_at, "updated_at": r.updated_at, "resolved_at": r.resolved_at }))
        .collect();
    Ok(Json(
        json!({ "incidents": items, "total": total, "limit": f.limit, "offset": f.offset }),
    ))
}

pub(super) async fn detail_api(
    State(state): State<AppState>,
    _user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = state
        .hub
        .store
        .get_incident(&id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let inc = parse(&row.body)?;
    let suggestions = suggestions(&state, &inc);
    let model = model_view(&state, &inc.id).await?;
    let audit = super::audit::for_incident(&state, &inc.id).await?;
    let plans = state.hub.control.for_incident(&inc.id).await?;
    Ok(Json(json!({
        "incident": inc, "suggested_skills": suggestions,
        "model_narrative": model.narrative, "exchanges": model.exchanges,
        "assistant": model.status, "audit": audit, "plans": plans,
    })))
}

async fn api_command(
    state: AppState,
    user: CurrentUser,
    headers: HeaderMap,
    id: String,
    resolve: bool,
) -> Result<Json<Value>, ApiError> {
    let token = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !user.csrf_ok(token) {
        return Err(ApiError::Forbidden("missing or invalid CSRF token".into()));
    }
    command(&state, &id, &user.user.name, resolve).await?;
    Ok(Json(json!({ "ok": true })))
}

pub(super) async fn ack_api(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    api_command(state, user, headers, id, false).await
}

pub(super) async fn resolve_api(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    api_command(state, user, headers, id, true).await
}

/// `GET /api/v1/events`: incident changes as server-sent events.
pub(super) async fn events(
    State(state): State<AppState>,
    _user: CurrentUser,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let rx = state.hub.incidents.events.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    let data = serde_json::to_string(&ev).unwrap_or_default();
                    return Some((Ok(Event::default().event("incident").data(data)), rx));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
