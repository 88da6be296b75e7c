//! Retrieval routes: the search box (`/search`, `GET /api/v1/search`) over
//! incidents, outcomes, log template summaries and skills, and similar past
//! incidents (`GET /api/v1/incidents/{id}/similar`). When the embedder or
//! index is down or overloaded they answer `503` with `Retry-After`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::pages::page_user;
use super::{ApiError, AppState, CurrentUser};
use crate::engine::Incident;
use crate::memory::{DocKind, Filter, Hit, RetrieveError};

/// A hit as pages and the API show it.
#[derive(Debug, Clone, Serialize)]
pub struct HitView {
    /// `incident`, `outcome`, `template_summary` or `skill`.
    pub kind: &'static str,
    /// Incident id, skill id or `node:template_id`.
    pub ref_id: String,
    /// Title.
    pub title: String,
    /// Excerpt.
    pub text: String,
    /// Node, if any.
    pub node: Option<String>,
    /// Cosine similarity.
    pub score: f32,
    /// Where it lives in the dashboard.
    pub href: String,
}

pub fn view(h: &Hit) -> HitView {
    let p = &h.payload;
    let href = match p.kind {
        DocKind::Incident | DocKind::Outcome => format!("/incidents/{}", p.ref_id),
        DocKind::Skill => format!("/skills/{}", p.ref_id),
        DocKind::TemplateSummary => match p.ref_id.rsplit_once(':') {
            Some((_, id)) => format!("/api/v1/templates/{id}"),
            None => String::new(),
        },
    };
    HitView {
        kind: p.kind.as_str(),
        ref_id: p.ref_id.clone(),
        title: p.title.clone(),
        text: p.text.clone(),
        node: p.node.clone(),
        score: (h.score * 1000.0).round() / 1000.0,
        href,
    }
}

/// Maps a retrieval error to the HTTP edge.
pub(crate) fn retrieve_error(e: RetrieveError) -> ApiError {
    match e {
        RetrieveError::EmptyQuery => ApiError::BadRequest("the query is empty".into()),
        other => match other.retry_after() {
            Some(d) => ApiError::Unavailable(d.as_secs().max(1)),
            None => {
                tracing::warn!(error = %other, "retrieval failed");
                ApiError::Unavailable(5)
            }
        },
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct SearchQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    node: String,
    #[serde(default)]
    limit: Option<usize>,
}

impl SearchQuery {
    fn filter(&self) -> Result<Filter, ApiError> {
        if self.q.len() > 2000 || self.node.len() > 253 {
            return Err(ApiError::BadRequest("query or node too long".into()));
        }
        let kind = match self.kind.trim() {
            "" => None,
            k => Some(DocKind::parse(k).ok_or_else(|| {
                ApiError::BadRequest(
                    "kind must be one of incident, outcome, template_summary, skill".into(),
                )
            })?),
        };
        Ok(Filter {
            kind,
            node: (!self.node.trim().is_empty()).then(|| self.node.trim().to_string()),
            ..Filter::default()
        })
    }
}

async fn run_search(state: &AppState, q: &SearchQuery) -> Result<Vec<HitView>, ApiError> {
    let filter = q.filter()?;
    let mem = state.hub.memory.as_ref().ok_or_else(|| {
        ApiError::BadRequest("retrieval is off ([memory] enabled = false)".into())
    })?;
    let hits = mem
        .search(&q.q, q.limit.unwrap_or(10).clamp(1, 50), &filter)
        .await
        .map_err(retrieve_error)?;
    Ok(hits.iter().map(view).collect())
}

/// `GET /api/v1/search?q=&kind=&node=&limit=`.
pub(super) async fn search_api(
    State(state): State<AppState>,
    _user: CurrentUser,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "hits": run_search(&state, &q).await? })))
}

/// `GET /search?q=`.
pub(super) async fn search_page(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    Query(q): Query<SearchQuery>,
) -> Result<Response, ApiError> {
    let user = match page_user(user) {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let (hits, error) = if q.q.trim().is_empty() {
        (Vec::new(), None)
    } else {
        match run_search(&state, &q).await {
            Ok(h) => (h, None),
            Err(ApiError::Unavailable(s)) => (
                Vec::new(),
                Some(format!(
                    "Search is unavailable right now (the embedder is down or busy); retry in {s} s."
                )),
            ),
            Err(ApiError::BadRequest(m)) => (Vec::new(), Some(m)),
            Err(e) => return Err(e),
        }
    };
    let html = state.render(
        "search.html",
        context! {
            user => user.user.name.clone(), csrf => user.csrf(), q => q.q.clone(),
            kind => q.kind.clone(), hits => minijinja::Value::from(minijinja::value::Serde(&hits)),
            error => error,
        },
    )?;
    Ok(html.into_response())
}

/// Similar past incidents of a stored incident.
pub(crate) async fn similar_for(
    state: &AppState,
    inc: &Incident,
) -> Result<Vec<HitView>, ApiError> {
    let Some(mem) = state.hub.memory.as_ref() else {
        return Ok(Vec::new());
    };
    let hits = mem.similar(inc, 5).await.map_err(retrieve_error)?;
    Ok(hits.iter().map(view).collect())
}

/// `GET /api/v1/incidents/{id}/similar`.
pub(super) async fn similar_api(
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
    let inc: Incident = serde_json::from_str(&row.body)
        .map_err(|e| ApiError::Internal(format!("stored incident unreadable: {e}")))?;
    Ok(Json(json!({ "similar": similar_for(&state, &inc).await? })))
}
