//! The skills library: `/skills` (browse, filter, search), `/skills/{id}`
//! (rendered safely) and the JSON API for both.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use minijinja::context;
use serde::Deserialize;
use serde_json::{Value, json};

use super::pages::page_user;
use super::{ApiError, AppState, CurrentUser, markdown};
use crate::skills::{self, Skill};

#[derive(Debug, Default, Deserialize)]
pub(super) struct SkillQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    tier: String,
    #[serde(default)]
    platform: String,
    #[serde(default)]
    tag: String,
}

impl SkillQuery {
    fn tier(&self) -> Result<Option<u8>, ApiError> {
        match self.tier.trim() {
            "" => Ok(None),
            t => t
                .parse::<u8>()
                .ok()
                .filter(|t| (1..=2).contains(t))
                .map(Some)
                .ok_or_else(|| ApiError::BadRequest("tier must be 1 or 2".into())),
        }
    }

    fn opt(s: &str) -> Option<&str> {
        let s = s.trim();
        (!s.is_empty()).then_some(s)
    }

    fn run<'a>(&self, all: &'a [Skill]) -> Result<Vec<&'a Skill>, ApiError> {
        if self.q.len() > 200 {
            return Err(ApiError::BadRequest("the query is too long".into()));
        }
        Ok(skills::search(
            all,
            self.q.trim(),
            self.tier()?,
            Self::opt(&self.platform),
            Self::opt(&self.tag),
        ))
    }
}

pub(super) async fn skills_page(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    Query(q): Query<SkillQuery>,
) -> Result<Response, ApiError> {
    let user = match page_user(user) {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let lib = &state.hub.skills;
    let found = q.run(&lib.skills)?;
    let mut tags: Vec<String> = lib
        .skills
        .iter()
        .flat_map(|s| s.tags.iter().cloned())
        .collect();
    tags.sort_unstable();
    tags.dedup();
    let problems: Vec<String> = lib.problems.iter().map(ToString::to_string).collect();
    let html = state.render(
        "skills.html",
        context! {
            user => user.user.name.clone(), csrf => user.csrf(),
            skills => minijinja::Value::from(minijinja::value::Serde(&found)),
            total => lib.skills.len(), q => q.q.clone(), tier => q.tier().ok().flatten(),
            platform => q.platform.clone(), tag => q.tag.clone(),
            platforms => skills::PLATFORMS.to_vec(), tags => tags, problems => problems,
        },
    )?;
    Ok(html.into_response())
}

pub(super) async fn skill_page(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let user = match page_user(user) {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let Some(skill) = state.hub.skills.skills.iter().find(|s| s.id == id) else {
        let html = state.render(
            "error.html",
            context! { status => 404, message => "No such skill." },
        )?;
        return Ok((StatusCode::NOT_FOUND, html).into_response());
    };
    let html = state.render(
        "skill.html",
        context! {
            user => user.user.name.clone(), csrf => user.csrf(),
            skill => minijinja::Value::from(minijinja::value::Serde(skill)),
            html => markdown::render(&skill.body),
        },
    )?;
    Ok(html.into_response())
}

fn summary(s: &Skill) -> Value {
    json!({
        "id": s.id, "title": s.title, "tier": s.tier, "platforms": s.platforms, "tags": s.tags,
        "risk": s.risk, "estimated_minutes": s.estimated_minutes, "source": s.source,
        "detectors": s.detectors, "keywords": s.keywords,
    })
}

pub(super) async fn skills_api(
    State(state): State<AppState>,
    _user: CurrentUser,
    Query(q): Query<SkillQuery>,
) -> Result<Json<Value>, ApiError> {
    let found = q.run(&state.hub.skills.skills)?;
    Ok(Json(json!({
        "skills": found.into_iter().map(summary).collect::<Vec<_>>(),
        "problems": state.hub.skills.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })))
}

pub(super) async fn skill_api(
    State(state): State<AppState>,
    _user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let skill = state
        .hub
        .skills
        .skills
        .iter()
        .find(|s| s.id == id)
        .ok_or(ApiError::NotFound)?;
    Ok(Json(
        json!({ "skill": skill, "html": markdown::render(&skill.body) }),
    ))
}
