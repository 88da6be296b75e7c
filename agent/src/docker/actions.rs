//! Action adapter: runs a [`DockerAction`] through bollard, but only after the
//! [`LocalPolicy`] allows it. A refusal comes back as an [`ActionResult`]; the
//! engine is then only asked who the container is, never told to act.

use std::time::Duration;

use bollard::query_parameters::{
    InspectContainerOptions, RemoveContainerOptions, RestartContainerOptions,
    StartContainerOptions, StopContainerOptions,
};
use tokio::time::Instant;

use super::engine::{DockerError, Engine};
use super::facts::{ActionResult, DockerAction};
use super::policy::LocalPolicy;

/// Longest stop/restart grace period honoured (seconds).
pub const MAX_STOP_TIMEOUT_S: u32 = 300;

fn result(started: Instant, ok: bool, refused: bool, detail: String) -> ActionResult {
    ActionResult {
        ok,
        refused,
        detail,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// Executes `action` if `policy` allows it.
///
/// The target is resolved with `inspect` first, so the policy sees both its name
/// and id. Stop/restart timeouts are capped at [`MAX_STOP_TIMEOUT_S`] and the
/// HTTP timeout is stretched to cover them.
pub async fn execute(engine: &Engine, policy: &LocalPolicy, action: &DockerAction) -> ActionResult {
    let started = Instant::now();
    let target = action.container();
    let (id, name) = match engine
        .docker
        .inspect_container(target, None::<InspectContainerOptions>)
        .await
    {
        Ok(i) => (
            i.id.unwrap_or_else(|| target.to_owned()),
            i.name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
        ),
        Err(e) => {
            let e = engine.err(e);
            let detail = match e {
                DockerError::NotFound(_) => format!("no such container: {target}"),
                other => other.to_string(),
            };
            // Still apply policy first, so a refusal is reported as such.
            if let Err(r) = policy.check(action) {
                return result(started, false, true, r.reason);
            }
            return result(started, false, false, detail);
        }
    };
    if let Err(r) = policy.check_target(action, &[target, &id, &name]) {
        tracing::info!(action = action.name(), container = %name, reason = %r.reason, "docker: action refused");
        return result(started, false, true, r.reason);
    }
    let short = id.get(..12).unwrap_or(&id);
    let grace = |t: Option<u32>| t.map(|t| t.min(MAX_STOP_TIMEOUT_S));
    let with_grace = |t: Option<u32>| {
        let extra = u64::from(t.unwrap_or(10)) + 30;
        let d = engine.docker.timeout().max(Duration::from_secs(extra));
        engine.docker.clone().with_timeout(d)
    };
    let outcome = match action {
        DockerAction::Start { .. } => engine
            .docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
            .map(|()| format!("started {name} ({short})")),
        DockerAction::Stop { timeout_s, .. } => {
            let t = grace(*timeout_s);
            with_grace(t)
                .stop_container(
                    &id,
                    Some(StopContainerOptions {
                        signal: None,
                        t: t.and_then(|t| i32::try_from(t).ok()),
                    }),
                )
                .await
                .map(|()| format!("stopped {name} ({short})"))
        }
        DockerAction::Restart { timeout_s, .. } => {
            let t = grace(*timeout_s);
            with_grace(t)
                .restart_container(
                    &id,
                    Some(RestartContainerOptions {
                        signal: None,
                        t: t.and_then(|t| i32::try_from(t).ok()),
                    }),
                )
                .await
                .map(|()| format!("restarted {name} ({short})"))
        }
        DockerAction::Remove { force, .. } => engine
            .docker
            .remove_container(
                &id,
                Some(RemoveContainerOptions {
                    v: false,
                    force: *force,
                    link: false,
                }),
            )
            .await
            .map(|()| format!("removed {name} ({short})")),
    };
    match outcome {
        Ok(detail) => {
            tracing::info!(action = action.name(), container = %name, "docker: action done");
            result(started, true, false, detail)
        }
        Err(e) => {
            let e = engine.err(e);
            tracing::warn!(action = action.name(), container = %name, error = %e, "docker: action failed");
            result(
                started,
                false,
                false,
                format!("{} {name} failed: {e}", action.name()),
            )
        }
    }
}
