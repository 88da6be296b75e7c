//! Inventory: every container (running or not) and every local image, with the
//! facts that need `inspect` (restart count, health, limits), plus a change
//! detector so the agent sends facts on start and whenever they change.

use std::collections::HashMap;

use bollard::models::{ContainerInspectResponse, ContainerSummary, ImageSummary};
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
};
use futures_util::StreamExt as _;

use super::engine::{DockerError, Engine};
use super::facts::{
    ContainerFacts, ContainerInventory, ContainerRunState, HealthState, ImageFacts, RestartPolicy,
};
use super::timefmt::parse_rfc3339_ns;

/// Concurrent `inspect` calls while building the inventory.
const INSPECT_CONCURRENCY: usize = 4;

/// Compose project labels, in order of preference (Docker Compose, podman-compose).
pub const COMPOSE_PROJECT_LABELS: &[&str] =
    &["com.docker.compose.project", "io.podman.compose.project"];
/// Compose service labels, in order of preference.
pub const COMPOSE_SERVICE_LABELS: &[&str] =
    &["com.docker.compose.service", "io.podman.compose.service"];

/// Lists containers (all) and images and inspects each container.
///
/// A container that disappears between list and inspect is skipped; one whose
/// inspect fails otherwise is reported from the list data alone. An image list
/// the client cannot decode leaves `images` empty (logged) rather than failing.
pub async fn inventory(engine: &Engine) -> Result<ContainerInventory, DockerError> {
    let docker = &engine.docker;
    let summaries = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default().all(true).build(),
        ))
        .await
        .map_err(|e| engine.err(e))?;

    let inspected: Vec<(ContainerSummary, Option<ContainerInspectResponse>, bool)> =
        futures_util::stream::iter(summaries)
            .map(|s| async move {
                let Some(id) = s.id.clone() else {
                    return (s, None, true);
                };
                match docker
                    .inspect_container(&id, None::<InspectContainerOptions>)
                    .await
                {
                    Ok(i) => (s, Some(i), false),
                    Err(e) => match engine.err(e) {
                        DockerError::NotFound(_) => (s, None, true),
                        other => {
                            tracing::warn!(container = %id, error = %other, "inspect failed; using list data only");
                            (s, None, false)
                        }
                    },
                }
            })
            .buffer_unordered(INSPECT_CONCURRENCY)
            .collect()
            .await;

    let mut containers: Vec<ContainerFacts> = inspected
        .iter()
        .filter(|(_, _, gone)| !gone)
        .filter_map(|(s, i, _)| container_facts(s, i.as_ref()))
        .collect();
    containers.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));

    let images = match docker
        .list_images(Some(ListImagesOptionsBuilder::default().all(false).build()))
        .await
    {
        Ok(list) => {
            let mut v: Vec<ImageFacts> = list.iter().map(image_facts).collect();
            v.sort_by(|a, b| a.id.cmp(&b.id));
            v
        }
        Err(e) => match engine.err(e) {
            e @ DockerError::Protocol(_) => {
                tracing::warn!(error = %e, "cannot decode the image list; reporting no images");
                Vec::new()
            }
            other => return Err(other),
        },
    };

    Ok(ContainerInventory {
        engine: engine.info.clone(),
        containers,
        images,
    })
}

/// True when `new` differs from `old` in anything reported (order-insensitive).
pub fn changed(old: &ContainerInventory, new: &ContainerInventory) -> bool {
    if old.engine != new.engine
        || old.containers.len() != new.containers.len()
        || old.images.len() != new.images.len()
    {
        return true;
    }
    let by_id: HashMap<&str, &ContainerFacts> =
        old.containers.iter().map(|c| (c.id.as_str(), c)).collect();
    if new
        .containers
        .iter()
        .any(|c| by_id.get(c.id.as_str()) != Some(&c))
    {
        return true;
    }
    let imgs: HashMap<&str, &ImageFacts> = old.images.iter().map(|i| (i.id.as_str(), i)).collect();
    new.images
        .iter()
        .any(|i| imgs.get(i.id.as_str()) != Some(&i))
}

fn first_label(labels: Option<&HashMap<String, String>>, keys: &[&str]) -> Option<String> {
    let labels = labels?;
    keys.iter()
        .find_map(|k| labels.get(*k))
        .filter(|v| !v.is_empty())
        .cloned()
}

/// Maps a state string (Docker or Podman spelling) to [`ContainerRunState`].
pub fn parse_state(s: &str) -> ContainerRunState {
    match s.trim().to_ascii_lowercase().as_str() {
        "created" | "configured" | "initialized" => ContainerRunState::Created,
        "running" => ContainerRunState::Running,
        "paused" => ContainerRunState::Paused,
        "restarting" => ContainerRunState::Restarting,
        "removing" => ContainerRunState::Removing,
        "exited" | "stopped" => ContainerRunState::Exited,
        "dead" => ContainerRunState::Dead,
        "stopping" => ContainerRunState::Stopping,
        _ => ContainerRunState::Unknown,
    }
}

/// Maps a health string to [`HealthState`] (empty or unknown = none).
pub fn parse_health(s: &str) -> HealthState {
    match s.trim().to_ascii_lowercase().as_str() {
        "starting" => HealthState::Starting,
        "healthy" => HealthState::Healthy,
        "unhealthy" => HealthState::Unhealthy,
        _ => HealthState::None,
    }
}

/// Health from the list's human status, e.g. "Up 3 hours (unhealthy)".
fn health_from_status_text(s: &str) -> HealthState {
    if s.contains("(unhealthy)") {
        HealthState::Unhealthy
    } else if s.contains("(healthy)") {
        HealthState::Healthy
    } else if s.contains("(health: starting)") {
        HealthState::Starting
    } else {
        HealthState::None
    }
}

fn positive_u64(v: Option<i64>) -> Option<u64> {
    v.filter(|&x| x > 0).and_then(|x| u64::try_from(x).ok())
}

/// Builds one container's facts from its list entry and (if available) its
/// inspect answer. Returns `None` when the entry has no id.
pub fn container_facts(
    s: &ContainerSummary,
    i: Option<&ContainerInspectResponse>,
) -> Option<ContainerFacts> {
    let id = i
        .and_then(|i| i.id.clone())
        .or_else(|| s.id.clone())
        .filter(|id| !id.is_empty())?;
    let name = i
        .and_then(|i| i.name.clone())
        .or_else(|| s.names.as_ref().and_then(|n| n.first().cloned()))
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_owned();
    let image = s
        .image
        .clone()
        .or_else(|| {
            i.and_then(|i| i.config.as_ref())
                .and_then(|c| c.image.clone())
        })
        .unwrap_or_default();
    let st = i.and_then(|i| i.state.as_ref());
    let state = st
        .and_then(|st| st.status.map(|x| parse_state(x.as_ref())))
        .or_else(|| s.state.map(|x| parse_state(x.as_ref())))
        .unwrap_or(ContainerRunState::Unknown);
    let health = st
        .and_then(|st| st.health.as_ref())
        .and_then(|h| h.status.map(|x| parse_health(x.as_ref())))
        .or_else(|| {
            s.health
                .as_ref()
                .and_then(|h| h.status.map(|x| parse_health(x.as_ref())))
        })
        .or_else(|| s.status.as_deref().map(health_from_status_text))
        .unwrap_or(HealthState::None);
    let exit_code = match state {
        ContainerRunState::Exited | ContainerRunState::Dead | ContainerRunState::Restarting => {
            st.and_then(|st| st.exit_code)
        }
        _ => None,
    };
    let created_ms = i
        .and_then(|i| i.created.as_deref())
        .and_then(parse_rfc3339_ns)
        .map(|ns| ns / 1_000_000)
        .or_else(|| s.created.map(|c| c.saturating_mul(1000)))
        .unwrap_or(0);
    let started_ms = st
        .and_then(|st| st.started_at.as_deref())
        .and_then(parse_rfc3339_ns)
        .filter(|&ns| ns > 0)
        .map(|ns| ns / 1_000_000);
    let labels = i
        .and_then(|i| i.config.as_ref())
        .and_then(|c| c.labels.as_ref())
        .or(s.labels.as_ref());
    let hc = i.and_then(|i| i.host_config.as_ref());
    // Podman implements `--cpus` as quota/period and may leave NanoCpus at 0.
    let cpu_limit = positive_u64(hc.and_then(|h| h.nano_cpus)).or_else(|| {
        let quota = positive_u64(hc.and_then(|h| h.cpu_quota))?;
        let period = positive_u64(hc.and_then(|h| h.cpu_period)).unwrap_or(100_000);
        quota.checked_mul(1_000_000_000).map(|q| q / period)
    });
    let restart_policy = hc
        .and_then(|h| h.restart_policy.as_ref())
        .map(|p| {
            let name = p.name.map(|n| n.to_string()).unwrap_or_default();
            match name.as_str() {
                "always" => RestartPolicy::Always,
                "unless-stopped" => RestartPolicy::UnlessStopped,
                "on-failure" => RestartPolicy::OnFailure {
                    max_retries: p
                        .maximum_retry_count
                        .and_then(|m| u32::try_from(m).ok())
                        .unwrap_or(0),
                },
                _ => RestartPolicy::No,
            }
        })
        .unwrap_or(RestartPolicy::No);
    Some(ContainerFacts {
        id,
        name,
        image,
        state,
        health,
        restart_count: i
            .and_then(|i| i.restart_count)
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(0),
        exit_code,
        created_ms,
        started_ms,
        compose_project: first_label(labels, COMPOSE_PROJECT_LABELS),
        compose_service: first_label(labels, COMPOSE_SERVICE_LABELS),
        memory_limit: positive_u64(hc.and_then(|h| h.memory)),
        cpu_limit,
        restart_policy,
    })
}

/// One image's facts.
pub fn image_facts(i: &ImageSummary) -> ImageFacts {
    let mut tags: Vec<String> = i
        .repo_tags
        .iter()
        .filter(|t| t.as_str() != "<none>:<none>")
        .cloned()
        .collect();
    tags.sort();
    ImageFacts {
        id: i.id.clone(),
        tags,
        size: u64::try_from(i.size).unwrap_or(0),
        created_ms: i.created.saturating_mul(1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        ContainerConfig, ContainerState, ContainerStateStatusEnum, ContainerSummaryStateEnum,
        Health, HealthStatusEnum, HostConfig, RestartPolicy as BRestartPolicy,
        RestartPolicyNameEnum,
    };

    fn summary() -> ContainerSummary {
        ContainerSummary {
            id: Some("abc123".to_owned()),
            names: Some(vec!["/web".to_owned()]),
            image: Some("nginx:1.27".to_owned()),
            created: Some(1_700_000_000),
            state: Some(ContainerSummaryStateEnum::RUNNING),
            status: Some("Up 3 hours (unhealthy)".to_owned()),
            labels: Some(HashMap::from([(
                "io.podman.compose.project".to_owned(),
                "blog".to_owned(),
            )])),
            ..Default::default()
        }
    }

    #[test]
    fn list_only_facts_use_fallbacks() {
        let f = container_facts(&summary(), None).unwrap();
        assert_eq!(f.name, "web");
        assert_eq!(f.state, ContainerRunState::Running);
        assert_eq!(f.health, HealthState::Unhealthy);
        assert_eq!(f.created_ms, 1_700_000_000_000);
        assert_eq!(f.compose_project.as_deref(), Some("blog"));
        assert_eq!(f.compose_service, None);
        assert_eq!(f.exit_code, None);
        assert_eq!(f.restart_policy, RestartPolicy::No);
        let mut no_id = summary();
        no_id.id = None;
        assert!(container_facts(&no_id, None).is_none());
    }

    #[test]
    fn inspect_facts_win() {
        let i = ContainerInspectResponse {
            id: Some("abc123full".to_owned()),
            name: Some("/web".to_owned()),
            created: Some("2023-11-14T22:13:20.5Z".to_owned()),
            restart_count: Some(4),
            state: Some(ContainerState {
                status: Some(ContainerStateStatusEnum::EXITED),
                exit_code: Some(3),
                started_at: Some("0001-01-01T00:00:00Z".to_owned()),
                health: Some(Health {
                    status: Some(HealthStatusEnum::STARTING),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            config: Some(ContainerConfig {
                labels: Some(HashMap::from([
                    ("com.docker.compose.project".to_owned(), "shop".to_owned()),
                    ("com.docker.compose.service".to_owned(), "db".to_owned()),
                ])),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                memory: Some(16 << 20),
                nano_cpus: Some(0),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                restart_policy: Some(BRestartPolicy {
                    name: Some(RestartPolicyNameEnum::ON_FAILURE),
                    maximum_retry_count: Some(5),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let f = container_facts(&summary(), Some(&i)).unwrap();
        assert_eq!(f.id, "abc123full");
        assert_eq!(f.state, ContainerRunState::Exited);
        assert_eq!(f.health, HealthState::Starting);
        assert_eq!(f.exit_code, Some(3));
        assert_eq!(f.restart_count, 4);
        assert_eq!(f.created_ms, 1_700_000_000_500);
        assert_eq!(f.started_ms, None);
        assert_eq!(f.compose_project.as_deref(), Some("shop"));
        assert_eq!(f.compose_service.as_deref(), Some("db"));
        assert_eq!(f.memory_limit, Some(16 << 20));
        assert_eq!(f.cpu_limit, Some(500_000_000));
        assert_eq!(
            f.restart_policy,
            RestartPolicy::OnFailure { max_retries: 5 }
        );
    }

    #[test]
    fn state_and_health_spellings() {
        assert_eq!(parse_state("stopped"), ContainerRunState::Exited);
        assert_eq!(parse_state("configured"), ContainerRunState::Created);
        assert_eq!(parse_state("weird"), ContainerRunState::Unknown);
        assert_eq!(parse_health(""), HealthState::None);
        assert_eq!(parse_health("Unhealthy"), HealthState::Unhealthy);
        assert_eq!(
            health_from_status_text("Up 1s (health: starting)"),
            HealthState::Starting
        );
    }

    #[test]
    fn change_detection_ignores_order() {
        let engine = super::super::facts::EngineInfo {
            kind: super::super::facts::EngineKind::Docker,
            version: "1".to_owned(),
            api_version: "1.41".to_owned(),
        };
        let a = container_facts(&summary(), None).unwrap();
        let mut b = a.clone();
        b.id = "other".to_owned();
        let inv1 = ContainerInventory {
            engine: engine.clone(),
            containers: vec![a.clone(), b.clone()],
            images: vec![],
        };
        let mut inv2 = inv1.clone();
        inv2.containers.reverse();
        assert!(!changed(&inv1, &inv2));
        inv2.containers[0].restart_count += 1;
        assert!(changed(&inv1, &inv2));
        let mut inv3 = inv1.clone();
        inv3.engine.api_version = "1.40".to_owned();
        assert!(changed(&inv1, &inv3));
    }
}
