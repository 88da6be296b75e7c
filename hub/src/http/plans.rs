//! Remediation plans at the HTTP edge: proposing a plan for an incident
//! (from a skill, from the model, or written by the operator), approving,
//! rejecting, executing and marking steps done, and the control policy
//! page. Dashboard forms carry the session's CSRF token; API calls with a
//! session cookie send it as `X-CSRF-Token` (API keys need none). Approving
//! a destructive step needs the user's password again (fresh
//! authentication). Refusals by the policy answer 409 with the reason.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Deserialize;
use serde_json::{Value, json};

use super::pages::{form_user, page_user};
use super::{ApiError, AppState, CurrentUser};
use crate::control::plan::{Plan, PlanSource, Step};
use crate::plans::{ControlConfig, ControlError, PlanSubject, PlanView, Requester};

/// Largest plan or policy document accepted, bytes.
const MAX_DOC: usize = 64 * 1024;

/// Parses a JSON document of at most [`MAX_DOC`] bytes (an API body or a
/// form's JSON field); the error names `what` and is a 400.
fn json_doc<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ApiError> {
    if bytes.len() > MAX_DOC {
        return Err(ApiError::BadRequest(format!("the {what} is too large")));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("invalid {what}: {e}")))
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotFound => ApiError::NotFound,
            ControlError::Invalid(_) | ControlError::BadRequest(_) => {
                ApiError::BadRequest(e.to_string())
            }
            ControlError::Refused(r) => ApiError::Conflict(r),
            ControlError::Store(s) => s.into(),
        }
    }
}

fn requester(u: &CurrentUser) -> Requester {
    Requester {
        user: u.user.name.clone(),
        role: u.user.role.clone(),
    }
}

/// Session callers of the API must send the CSRF token as a header.
fn api_csrf(user: &CurrentUser, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if user.csrf_ok(token) {
        Ok(())
    } else {
        Err(ApiError::Forbidden("missing or invalid CSRF token".into()))
    }
}

fn no_viewers(user: &CurrentUser) -> Result<(), ApiError> {
    if user.user.role == "viewer" {
        Err(ApiError::Forbidden("viewers may not propose plans".into()))
    } else {
        Ok(())
    }
}

/// What a proposal asks for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProposeBody {
    /// A skill id: the plan comes from that skill.
    #[serde(default)]
    skill: Option<String>,
    /// Ask the configured model for a plan.
    #[serde(default)]
    model: bool,
    /// An operator plan: a title...
    #[serde(default)]
    title: Option<String>,
    /// ...and steps: `{"action", "params", "why"}` or `{"manual", "node",
    /// "command"}`.
    #[serde(default)]
    steps: Option<Vec<Value>>,
}

fn operator_steps(steps: &[Value]) -> Result<Vec<Step>, ApiError> {
    let bad = |i: usize, m: &str| ApiError::BadRequest(format!("step {}: {m}", i + 1));
    let mut out = Vec::new();
    for (i, v) in steps.iter().enumerate() {
        let o = v.as_object().ok_or_else(|| bad(i, "must be an object"))?;
        if let Some(text) = o.get("manual") {
            if o.keys()
                .any(|k| !["manual", "node", "command"].contains(&k.as_str()))
            {
                return Err(bad(i, "a manual step has only manual, node and command"));
            }
            let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
            out.push(Step::Manual {
                text: text
                    .as_str()
                    .ok_or_else(|| bad(i, "manual must be text"))?
                    .to_owned(),
                node: s("node"),
                command: s("command"),
            });
        } else {
            if o.keys()
                .any(|k| !["action", "params", "why"].contains(&k.as_str()))
            {
                return Err(bad(i, "an action step has only action, params and why"));
            }
            out.push(Step::Action {
                action: o
                    .get("action")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(i, "needs an action name (or manual)"))?
                    .to_owned(),
                params: o.get("params").cloned().unwrap_or_else(|| json!({})),
                why: o
                    .get("why")
                    .and_then(Value::as_str)
                    .unwrap_or("operator plan")
                    .to_owned(),
            });
        }
    }
    Ok(out)
}

/// Builds, validates and stores a plan for incident `id`.
async fn propose(
    state: &AppState,
    user: &CurrentUser,
    id: &str,
    body: ProposeBody,
) -> Result<PlanView, ApiError> {
    no_viewers(user)?;
    let row = state
        .hub
        .store
        .get_incident(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let inc: crate::engine::Incident = serde_json::from_str(&row.body)
        .map_err(|e| ApiError::Internal(format!("stored incident unreadable: {e}")))?;
    let plan_id = format!("plan-{}", uuid::Uuid::now_v7().simple());
    let created_by = format!("user:{}", user.user.name);
    let plan = match (&body.skill, body.model, &body.steps) {
        (Some(skill), false, None) => {
            let s = state
                .hub
                .skills
                .skills
                .iter()
                .find(|s| &s.id == skill)
                .ok_or_else(|| ApiError::BadRequest(format!("no skill {skill:?}")))?;
            crate::plans::plan_from_skill(s, &plan_id, id, &PlanSubject::of(&inc))
        }
        (None, true, None) => {
            let inv = crate::plans::build_inventory(&state.hub.store).await?;
            let targets: Vec<String> = inv
                .nodes
                .iter()
                .filter(|(n, _)| inc.nodes.contains(n) || inc.nodes.is_empty())
                .flat_map(|(n, info)| {
                    let guests = info.guests.iter().map(move |(v, g)| {
                        format!("node {n}: guest {v} ({}) {}", g.name, g.status)
                    });
                    let containers = info
                        .containers
                        .iter()
                        .map(move |(c, i)| format!("node {n}: container {c} {:?}", i.state));
                    guests.chain(containers).collect::<Vec<_>>()
                })
                .collect();
            let reply = state
                .hub
                .reasoner
                .propose_plan(&inc, &targets)
                .await
                .map_err(|e| match e {
                    crate::reasoner::ChatError::Busy {
                        retry_after_secs, ..
                    } => ApiError::Unavailable(retry_after_secs),
                    other => ApiError::Conflict(other.to_string()),
                })?;
            crate::control::plan::from_model_reply(&reply, &plan_id, id, None).map_err(|errs| {
                ApiError::BadRequest(format!(
                    "the model's plan does not match the schema: {}",
                    errs.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ))
            })?
        }
        (None, false, Some(steps)) => Plan {
            id: plan_id.clone(),
            incident_id: id.to_owned(),
            skill_id: None,
            source: PlanSource::Operator,
            title: body
                .title
                .clone()
                .unwrap_or_else(|| format!("Plan for {}", inc.title)),
            steps: operator_steps(steps)?,
        },
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of skill, model: true, or steps".into(),
            ));
        }
    };
    let created_by = if plan.source == PlanSource::Model {
        format!("model (asked by {})", user.user.name)
    } else {
        created_by
    };
    Ok(state.hub.control.create(plan, &created_by).await?)
}

/// `GET /api/v1/incidents/{id}/plans`.
pub(super) async fn list_api(
    State(state): State<AppState>,
    _user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let plans = state.hub.control.for_incident(&id).await?;
    Ok(Json(json!({ "plans": plans })))
}

/// `POST /api/v1/incidents/{id}/plans`.
pub(super) async fn propose_api(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    api_csrf(&user, &headers)?;
    let body: ProposeBody = json_doc(&body, "plan request")?;
    let v = propose(&state, &user, &id, body).await?;
    Ok((StatusCode::CREATED, Json(json!({ "plan": v }))).into_response())
}

/// `GET /api/v1/plans/{id}`.
pub(super) async fn get_api(
    State(state): State<AppState>,
    _user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "plan": state.hub.control.get(&id).await? })))
}

/// An approval as sent by the page or the API.
#[derive(Debug, Deserialize)]
pub(super) struct ApproveBody {
    /// The plan hash shown.
    plan_hash: String,
    /// The step hash shown.
    step_hash: String,
    /// The user's password, for destructive steps.
    #[serde(default)]
    password: String,
    /// The CSRF token (forms).
    #[serde(default)]
    csrf: String,
}

fn fresh_auth(user: &CurrentUser, password: &str) -> Result<bool, ApiError> {
    if password.is_empty() {
        return Ok(false);
    }
    if crate::auth::verify_password(password, &user.user.password_hash) {
        Ok(true)
    } else {
        Err(ApiError::Forbidden("the password is wrong".into()))
    }
}

/// A step request.
#[derive(Debug, Deserialize)]
pub(super) struct StepForm {
    /// The CSRF token (forms).
    #[serde(default)]
    csrf: String,
}

/// A rejection.
#[derive(Debug, Deserialize)]
pub(super) struct RejectBody {
    /// Why.
    #[serde(default)]
    reason: String,
    /// One step, if only that step is rejected.
    #[serde(default)]
    step: Option<usize>,
    /// The CSRF token (forms).
    #[serde(default)]
    csrf: String,
}

fn step_index(n: usize) -> Result<usize, ApiError> {
    n.checked_sub(1)
        .ok_or_else(|| ApiError::BadRequest("steps are numbered from 1".into()))
}

/// A user's request on a plan, from a form or the API.
enum PlanRequest {
    Approve(usize, ApproveBody),
    Execute(usize),
    Done(usize),
    Reject(RejectBody),
}

/// Carries out a request; the refusals are the policy's.
async fn act(
    state: &AppState,
    user: &CurrentUser,
    id: &str,
    req: PlanRequest,
) -> Result<PlanView, ApiError> {
    let (c, who) = (&state.hub.control, requester(user));
    Ok(match req {
        PlanRequest::Approve(n, b) => {
            let fresh = fresh_auth(user, &b.password)?;
            c.approve(id, &who, step_index(n)?, &b.plan_hash, &b.step_hash, fresh)
                .await?
        }
        PlanRequest::Execute(n) => c.execute(id, &who, step_index(n)?).await?,
        PlanRequest::Done(n) => c.manual_done(id, &who, step_index(n)?).await?,
        PlanRequest::Reject(b) => {
            let step = b.step.map(step_index).transpose()?;
            c.reject(id, &who, step, &b.reason).await?
        }
    })
}

/// An API request: session callers need the CSRF header.
async fn act_api(
    state: &AppState,
    user: &CurrentUser,
    headers: &HeaderMap,
    id: &str,
    req: PlanRequest,
) -> Result<Json<Value>, ApiError> {
    api_csrf(user, headers)?;
    Ok(Json(json!({ "plan": act(state, user, id, req).await? })))
}

/// A dashboard form: the CSRF token, then back to the incident page (or
/// the error page with the reason).
async fn act_form(
    state: &AppState,
    user: Result<CurrentUser, ApiError>,
    csrf: &str,
    id: &str,
    req: PlanRequest,
) -> Result<Response, ApiError> {
    let user = match form_user(user, csrf)? {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    match act(state, &user, id, req).await {
        Ok(v) => Ok(back_to(&v)),
        Err(e) => form_error(state, e),
    }
}

/// `POST /api/v1/plans/{id}/steps/{n}/approve`.
pub(super) async fn approve_api(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    Path((id, n)): Path<(String, usize)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    api_csrf(&user, &headers)?;
    let b: ApproveBody = json_doc(&body, "approval")?;
    act_api(&state, &user, &headers, &id, PlanRequest::Approve(n, b)).await
}

/// `POST /api/v1/plans/{id}/steps/{n}/execute`.
pub(super) async fn execute_api(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    Path((id, n)): Path<(String, usize)>,
) -> Result<Json<Value>, ApiError> {
    act_api(&state, &user, &headers, &id, PlanRequest::Execute(n)).await
}

/// `POST /api/v1/plans/{id}/steps/{n}/done`.
pub(super) async fn done_api(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    Path((id, n)): Path<(String, usize)>,
) -> Result<Json<Value>, ApiError> {
    act_api(&state, &user, &headers, &id, PlanRequest::Done(n)).await
}

/// `POST /api/v1/plans/{id}/reject`.
pub(super) async fn reject_api(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    api_csrf(&user, &headers)?;
    let b: RejectBody = json_doc(&body, "rejection")?;
    act_api(&state, &user, &headers, &id, PlanRequest::Reject(b)).await
}

/// A revision: the new title (optional) and steps.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReviseBody {
    #[serde(default)]
    title: Option<String>,
    steps: Vec<Value>,
}

async fn revise(
    state: &AppState,
    user: &CurrentUser,
    id: &str,
    body: ReviseBody,
) -> Result<PlanView, ApiError> {
    no_viewers(user)?;
    let steps = operator_steps(&body.steps)?;
    Ok(state
        .hub
        .control
        .revise(id, body.title, steps, &format!("user:{}", user.user.name))
        .await?)
}

/// `POST /api/v1/plans/{id}/revise`: a new version; the old one's
/// approvals are void.
pub(super) async fn revise_api(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    api_csrf(&user, &headers)?;
    let body: ReviseBody = json_doc(&body, "revision")?;
    let v = revise(&state, &user, &id, body).await?;
    Ok((StatusCode::CREATED, Json(json!({ "plan": v }))).into_response())
}

/// The revision form: the plan JSON.
#[derive(Debug, Deserialize)]
pub(super) struct ReviseForm {
    #[serde(default)]
    csrf: String,
    plan: String,
}

/// `POST /plans/{id}/revise`.
pub(super) async fn revise_form(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<ReviseForm>,
) -> Result<Response, ApiError> {
    let user = match form_user(user, &f.csrf)? {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let body = match json_doc::<ReviseBody>(f.plan.as_bytes(), "plan") {
        Ok(b) => b,
        Err(e) => return form_error(&state, e),
    };
    match revise(&state, &user, &id, body).await {
        Ok(v) => Ok(back_to(&v)),
        Err(e) => form_error(&state, e),
    }
}

// --- dashboard forms -------------------------------------------------------

/// The proposal form on the incident page.
#[derive(Debug, Deserialize)]
pub(super) struct ProposeForm {
    #[serde(default)]
    csrf: String,
    /// `skill`, `model` or `operator`.
    source: String,
    #[serde(default)]
    skill: String,
    /// Operator plan JSON: `{"title", "steps": [...]}`.
    #[serde(default)]
    plan: String,
}

fn form_error(state: &AppState, e: ApiError) -> Result<Response, ApiError> {
    let (status, message) = match &e {
        ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
        ApiError::Conflict(m) => (StatusCode::CONFLICT, m.clone()),
        ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
        _ => return Err(e),
    };
    let html = state.render(
        "error.html",
        context! { status => status.as_u16(), message => message },
    )?;
    Ok((status, html).into_response())
}

fn back_to(v: &PlanView) -> Response {
    Redirect::to(&format!("/incidents/{}#{}", v.incident_id, v.id)).into_response()
}

/// `POST /incidents/{id}/plans`.
pub(super) async fn propose_form(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<ProposeForm>,
) -> Result<Response, ApiError> {
    let user = match form_user(user, &f.csrf)? {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let body = match f.source.as_str() {
        "skill" => ProposeBody {
            skill: Some(f.skill),
            model: false,
            title: None,
            steps: None,
        },
        "model" => ProposeBody {
            skill: None,
            model: true,
            title: None,
            steps: None,
        },
        "operator" => match json_doc::<ProposeBody>(f.plan.as_bytes(), "plan") {
            Ok(b) if b.steps.is_some() && b.skill.is_none() && !b.model => b,
            Ok(_) => {
                return form_error(
                    &state,
                    ApiError::BadRequest("an operator plan has a title and steps".into()),
                );
            }
            Err(e) => return form_error(&state, e),
        },
        _ => return form_error(&state, ApiError::BadRequest("unknown plan source".into())),
    };
    match propose(&state, &user, &id, body).await {
        Ok(v) => Ok(back_to(&v)),
        Err(e) => form_error(&state, e),
    }
}

/// `POST /plans/{id}/steps/{n}/approve`.
pub(super) async fn approve_form(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    Path((id, n)): Path<(String, usize)>,
    axum::Form(b): axum::Form<ApproveBody>,
) -> Result<Response, ApiError> {
    let csrf = b.csrf.clone();
    act_form(&state, user, &csrf, &id, PlanRequest::Approve(n, b)).await
}

/// `POST /plans/{id}/steps/{n}/execute`.
pub(super) async fn execute_form(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    Path((id, n)): Path<(String, usize)>,
    axum::Form(f): axum::Form<StepForm>,
) -> Result<Response, ApiError> {
    act_form(&state, user, &f.csrf, &id, PlanRequest::Execute(n)).await
}

/// `POST /plans/{id}/steps/{n}/done`.
pub(super) async fn done_form(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    Path((id, n)): Path<(String, usize)>,
    axum::Form(f): axum::Form<StepForm>,
) -> Result<Response, ApiError> {
    act_form(&state, user, &f.csrf, &id, PlanRequest::Done(n)).await
}

/// `POST /plans/{id}/reject`.
pub(super) async fn reject_form(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    Path(id): Path<String>,
    axum::Form(b): axum::Form<RejectBody>,
) -> Result<Response, ApiError> {
    let csrf = b.csrf.clone();
    act_form(&state, user, &csrf, &id, PlanRequest::Reject(b)).await
}

// --- policy ----------------------------------------------------------------

fn policy_json(state: &AppState) -> Value {
    let (cfg, _) = state.hub.control.policy();
    json!({ "policy": cfg, "catalog": crate::control::catalog::catalog_json() })
}

/// `GET /api/v1/control/policy`: the effective policy and the catalog.
pub(super) async fn policy_api(State(state): State<AppState>, _user: CurrentUser) -> Json<Value> {
    Json(policy_json(&state))
}

/// `PUT /api/v1/control/policy` (admins).
pub(super) async fn policy_put_api(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    api_csrf(&user, &headers)?;
    if !user.is_admin() {
        return Err(ApiError::Forbidden(
            "only administrators may change the control policy".into(),
        ));
    }
    let cfg: ControlConfig = json_doc(&body, "control policy")?;
    state.hub.control.set_policy(cfg, &user.user.name).await?;
    Ok(Json(policy_json(&state)))
}

/// `GET /settings/policy`.
pub(super) async fn policy_page(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
) -> Result<Response, ApiError> {
    let user = match page_user(user) {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let (cfg, _) = state.hub.control.policy();
    let catalog: Vec<Value> = crate::control::catalog::CATALOG
        .iter()
        .map(|a| json!({"name": a.name, "risk": a.risk.as_str(), "summary": a.summary}))
        .collect();
    let html = state.render(
        "policy.html",
        context! {
            user => user.user.name.clone(), csrf => user.csrf(), admin => user.is_admin(),
            p => minijinja::Value::from(minijinja::value::Serde(&cfg)),
            opt_in => cfg.destructive_opt_in.join("\n"), deny => cfg.deny.join("\n"),
            roles => cfg.approver_roles.join(", "),
            catalog => minijinja::Value::from(minijinja::value::Serde(&catalog)),
        },
    )?;
    Ok(html.into_response())
}

/// The policy form.
#[derive(Debug, Deserialize)]
pub(super) struct PolicyForm {
    #[serde(default)]
    csrf: String,
    mode: String,
    approval_ttl_s: i64,
    #[serde(default)]
    approver_roles: String,
    #[serde(default)]
    destructive_opt_in: String,
    #[serde(default)]
    deny: String,
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `POST /settings/policy` (admins).
pub(super) async fn policy_form(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    axum::Form(f): axum::Form<PolicyForm>,
) -> Result<Response, ApiError> {
    let user = match form_user(user, &f.csrf)? {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    if !user.is_admin() {
        return form_error(
            &state,
            ApiError::Forbidden("only administrators may change the control policy".into()),
        );
    }
    let (old, _) = state.hub.control.policy();
    let cfg = ControlConfig {
        mode: f.mode,
        approval_ttl_s: f.approval_ttl_s,
        approver_roles: f
            .approver_roles
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect(),
        destructive_opt_in: lines(&f.destructive_opt_in),
        deny: lines(&f.deny),
        ..old
    };
    match state.hub.control.set_policy(cfg, &user.user.name).await {
        Ok(()) => Ok(Redirect::to("/settings/policy").into_response()),
        Err(e) => form_error(&state, e.into()),
    }
}
