//! Proxmox VE at the hub: the notification webhook receiver
//! (`POST /ingest/pve/notify`, shared secret in `Authorization: Bearer`),
//! the stored notifications (`GET /api/v1/pve/notifications`) and the
//! cluster view (`/clusters`, `GET /api/v1/clusters`), which groups the
//! enrolled nodes by the PVE cluster they report.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wingman_protocol::pve::{PveClusterStatus, PveFact};

use super::pages::page_user;
use super::{ApiError, AppState, CurrentUser};
use crate::auth::ct_eq;
use crate::store::{IncidentFilter, PveNotificationRow};

/// `POST /ingest/pve/notify`: one PVE notification. 202 when stored (or a
/// duplicate), 401 without the right secret, 404 when no secret is
/// configured, 400 for a body that is not the documented template.
pub(super) async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let hub = &state.hub;
    let Some(secret) = hub
        .config
        .pve
        .webhook_secret
        .as_ref()
        .filter(|s| !s.is_empty())
    else {
        return Ok((
            StatusCode::NOT_FOUND,
            Json(json!({"error": "the PVE webhook receiver is off: set [pve] webhook_secret in hub.credentials"})),
        )
            .into_response());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if presented.is_empty() || !ct_eq(presented, secret.expose()) {
        tracing::warn!("PVE webhook refused: missing or wrong secret");
        hub.metrics.webhook(false);
        return Err(ApiError::Unauthorized);
    }
    let received = crate::pve_webhook::parse(&body, &hub.redactor).map_err(|e| {
        hub.metrics.webhook(false);
        ApiError::BadRequest(e)
    })?;
    let fact = PveFact::Notification(received.fact.clone());
    let mut row = PveNotificationRow {
        id: 0,
        dedup_key: received.dedup_key,
        node: received.fact.node.clone(),
        kind: received.fact.kind.clone(),
        severity: received.fact.severity.clone(),
        title: received.fact.title.clone(),
        body: serde_json::to_string(&fact).map_err(|e| ApiError::Internal(e.to_string()))?,
        received_at: wingman_agent::now_ms(),
    };
    let stored = hub.store.record_pve_notification(&row).await?;
    hub.metrics.webhook(true);
    if stored {
        // The id only has to be unique per notification for the evidence link.
        row.id = row.received_at;
        let signals = crate::pve_webhook::signals(&received.fact, row.id, row.received_at);
        hub.incidents.submit(signals);
        tracing::info!(node = %row.node, kind = %row.kind, severity = %row.severity, "PVE notification stored");
    } else {
        tracing::debug!(node = %row.node, kind = %row.kind, "duplicate PVE notification ignored");
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "stored": stored, "duplicate": !stored })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct NotificationsQuery {
    #[serde(default)]
    node: String,
    #[serde(default)]
    limit: Option<i64>,
}

/// `GET /api/v1/pve/notifications?node=&limit=`.
pub(super) async fn notifications_api(
    State(state): State<AppState>,
    _user: CurrentUser,
    Query(q): Query<NotificationsQuery>,
) -> Result<Json<Value>, ApiError> {
    if q.node.len() > 253 {
        return Err(ApiError::BadRequest("node name too long".into()));
    }
    let max = i64::from(state.hub.config.retention.max_page_size);
    let limit = q.limit.unwrap_or(50).clamp(1, max);
    let node = (!q.node.is_empty()).then_some(q.node.as_str());
    let rows = state.hub.store.pve_notifications(node, limit).await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            let fact: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
            json!({ "node": r.node, "kind": r.kind, "severity": r.severity, "title": r.title,
                    "received_at": r.received_at, "fact": fact })
        })
        .collect();
    Ok(Json(json!({ "notifications": items })))
}

/// One node in the cluster view.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ClusterMember {
    /// PVE node name.
    pub name: String,
    /// Online as PVE's cluster status reports it.
    pub online: bool,
    /// The enrolled agent on it, if any.
    pub agent_id: Option<String>,
    /// The agent's link is up.
    pub agent_online: bool,
    /// Guests seen on it.
    pub guests: usize,
    /// Of which running.
    pub running: usize,
    /// Open or acknowledged incidents naming it.
    pub incidents: usize,
}

/// One PVE cluster (or a standalone PVE node).
#[derive(Debug, Clone, Serialize)]
pub(super) struct Cluster {
    /// Cluster name; standalone nodes use their node name.
    pub name: String,
    /// Standalone node (no corosync cluster).
    pub standalone: bool,
    /// Quorate, as the most recent report says.
    pub quorate: bool,
    /// Members.
    pub nodes: Vec<ClusterMember>,
}

/// Groups enrolled PVE nodes by the cluster they report (pure over the
/// inputs: agents with their latest cluster status and guest counts).
pub(super) async fn clusters(state: &AppState) -> Result<Vec<Cluster>, ApiError> {
    let hub = &state.hub;
    let store = &hub.store;
    let agents = store.list_agents().await?;
    let (incidents, _) = store
        .list_incidents(&IncidentFilter {
            state: None,
            severity: None,
            node: None,
            limit: 1000,
            offset: 0,
        })
        .await?;
    let mut open_by_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in incidents.iter().filter(|i| i.state != "resolved") {
        for n in i.nodes.split(',').filter(|n| !n.is_empty()) {
            *open_by_node.entry(n.to_string()).or_default() += 1;
        }
    }
    let mut clusters: BTreeMap<String, Cluster> = BTreeMap::new();
    for a in agents.iter().filter(|a| a.revoked_at.is_none()) {
        let latest = store.latest_facts(&a.id).await?;
        let status: Option<PveClusterStatus> = latest
            .iter()
            .find(|f| f.kind == "pve_cluster")
            .and_then(|f| match serde_json::from_str::<PveFact>(&f.body) {
                Ok(PveFact::Cluster(c)) => Some(c),
                _ => None,
            });
        let is_pve = a.kind == "proxmox" || status.is_some();
        if !is_pve {
            continue;
        }
        let mut seen = BTreeSet::new();
        let (mut guests, mut running) = (0, 0);
        for (_, body) in store.recent_facts(&a.id, "pve_guest", 500).await? {
            if let Ok(PveFact::Guest(g)) = serde_json::from_str::<PveFact>(&body)
                && seen.insert(g.vmid)
            {
                guests += 1;
                running += usize::from(g.status == "running");
            }
        }
        let (name, standalone, quorate, members) = match &status {
            Some(c) if c.cluster_name.is_some() => (
                c.cluster_name.clone().unwrap_or_default(),
                false,
                c.quorate,
                c.nodes.iter().map(|n| (n.name.clone(), n.online)).collect(),
            ),
            _ => (
                a.hostname.clone(),
                true,
                true,
                vec![(a.hostname.clone(), a.online)],
            ),
        };
        let cluster = clusters.entry(name.clone()).or_insert_with(|| Cluster {
            name,
            standalone,
            quorate,
            nodes: Vec::new(),
        });
        cluster.quorate = quorate;
        for (member, online) in members {
            if !cluster.nodes.iter().any(|n| n.name == member) {
                cluster.nodes.push(ClusterMember {
                    incidents: open_by_node.get(&member).copied().unwrap_or(0),
                    name: member,
                    online,
                    agent_id: None,
                    agent_online: false,
                    guests: 0,
                    running: 0,
                });
            }
        }
        if let Some(m) = cluster.nodes.iter_mut().find(|n| n.name == a.hostname) {
            m.agent_id = Some(a.id.clone());
            m.agent_online = a.online;
            m.guests = guests;
            m.running = running;
        }
    }
    let mut out: Vec<Cluster> = clusters.into_values().collect();
    for c in &mut out {
        c.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(out)
}

/// `GET /api/v1/clusters`.
pub(super) async fn clusters_api(
    State(state): State<AppState>,
    _user: CurrentUser,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "clusters": clusters(&state).await? })))
}

/// `GET /clusters`.
pub(super) async fn clusters_page(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
) -> Result<Response, ApiError> {
    let user = match page_user(user) {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let cs = clusters(&state).await?;
    let notes = state.hub.store.pve_notifications(None, 20).await?;
    let notes: Vec<minijinja::Value> = notes
        .into_iter()
        .map(|n| {
            context! { node => n.node, kind => n.kind, severity => n.severity.clone(),
            bad => n.severity == "error", title => n.title,
            at => super::pages::ago(wingman_agent::now_ms(), Some(n.received_at)) }
        })
        .collect();
    let html = state.render(
        "clusters.html",
        context! {
            user => user.user.name.clone(), csrf => user.csrf(),
            clusters => minijinja::Value::from(minijinja::value::Serde(&cs)),
            notifications => notes, refresh => 30,
        },
    )?;
    Ok(html.into_response())
}
