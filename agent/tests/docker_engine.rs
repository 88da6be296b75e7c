//! Tests against the real Docker engine on this machine (skipped without a
//! socket unless `CI=true`), plus fake-engine tests for Podman shapes and bad
//! engines. Every container and image is labelled `wingman.test=1` and removed
//! by a guard, also when a test fails.

// Test code: panicking on a broken fixture and printing timings are intended.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    clippy::print_stdout
)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use bollard::models::{
    HealthConfig, HostConfig, RestartPolicy as BRestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    EventsOptions, InspectContainerOptions, RestartContainerOptions, StartContainerOptions,
    StopContainerOptions,
};
use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wingman_agent::docker::{
    ContainerEvent, ContainerEventKind, ContainerRunState, DockerAction, DockerConfig, DockerError,
    DockerOutput, EngineKind, HealthState, LocalPolicy, LogStart, LogStream, PolicyRule,
    RestartPolicy, connect, execute, follow_logs, inventory, normalise_event, run_events,
};

fn test_cfg(socket: Option<std::path::PathBuf>) -> DockerConfig {
    DockerConfig {
        socket,
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        inventory_debounce: Duration::from_millis(300),
        ..Default::default()
    }
}

/// Starts `run_events` and waits until it is connected and has sent its first inventory.
async fn start_events(cfg: DockerConfig) -> (Collector, CancellationToken) {
    let (tx, rx) = mpsc::channel(64);
    let stop = CancellationToken::new();
    tokio::spawn(run_events(cfg, tx, stop.clone()));
    let mut c = Collector::new(rx);
    assert!(
        c.until(Duration::from_secs(20), has_inventory).await,
        "no inventory: {:?}",
        c.seen
    );
    (c, stop)
}

async fn start(engine: &wingman_agent::docker::Engine, id: &str) {
    engine
        .docker
        .start_container(id, None::<StartContainerOptions>)
        .await
        .expect("start");
}

#[tokio::test]
async fn negotiates_down_to_the_engine_api_version() {
    let Some(engine) = engine_or_skip().await else {
        return;
    };
    let v = engine.docker.version().await.unwrap();
    assert_eq!(Some(engine.info.api_version.clone()), v.api_version);
    assert_eq!(engine.info.kind, EngineKind::Docker);
    eprintln!("{}", engine.connected_status().message);
}

#[tokio::test]
async fn crash_loop_gives_die_events_and_exactly_one_restart_loop() {
    let Some(engine) = engine_or_skip().await else {
        return;
    };
    let g = Guard::new(&engine);
    build_image(&engine, &g).await;
    let id = create(
        &engine,
        &g,
        "crash",
        &["sh", "-c", "echo crash; exit 3"],
        HostConfig {
            restart_policy: Some(BRestartPolicy {
                name: Some(RestartPolicyNameEnum::ON_FAILURE),
                maximum_retry_count: Some(5),
            }),
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let (mut c, stop) = start_events(test_cfg(None)).await;
    let t0 = Instant::now();
    start(&engine, &id).await;
    // 1 run + 5 retries = 6 deaths (engine backoff 100 ms doubling).
    assert!(
        c.until(Duration::from_secs(40), |s| count_kind(
            s,
            &id,
            ContainerEventKind::Die
        ) >= 6)
            .await,
        "dies: {:?}",
        events_for(&c.seen, &id)
    );
    let t_dies = t0.elapsed();
    // Wait for the final inventory (restart_count 5, exited 3) and any stray loop report.
    let inv_ok = c
        .until(Duration::from_secs(15), |s| {
            s.iter().any(|o| match o {
                DockerOutput::Inventory(inv) => inv.containers.iter().any(|f| {
                    f.id == id
                        && f.restart_count == 5
                        && f.state == ContainerRunState::Exited
                        && f.exit_code == Some(3)
                        && f.restart_policy == RestartPolicy::OnFailure { max_retries: 5 }
                }),
                _ => false,
            })
        })
        .await;
    c.drain_for(Duration::from_secs(1)).await;
    stop.cancel();
    let dies: Vec<_> = events_for(&c.seen, &id)
        .into_iter()
        .filter(|e| e.kind == ContainerEventKind::Die)
        .collect();
    assert!(dies.iter().all(|e| e.exit_code == Some(3)), "{dies:?}");
    assert!(dies.iter().all(|e| e.name == g.name("crash")));
    let loops: Vec<_> = c
        .seen
        .iter()
        .filter_map(|o| match o {
            DockerOutput::RestartLoop(l) if l.container_id == id => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(loops.len(), 1, "{loops:?}");
    assert_eq!(loops[0].restarts, 3);
    assert_eq!(loops[0].last_exit_code, Some(3));
    assert_eq!(loops[0].window_s, 300);
    assert!(inv_ok, "inventory never showed restart_count 5 / exited 3");
    eprintln!(
        "crash loop: {} dies with exit 3 in {:?}, 1 RestartLoop, inventory confirmed after {:?}",
        dies.len(),
        t_dies,
        t0.elapsed()
    );
}

#[tokio::test]
async fn memory_limit_oom_gives_an_oom_event() {
    let Some(engine) = engine_or_skip().await else {
        return;
    };
    let g = Guard::new(&engine);
    build_image(&engine, &g).await;
    let limit = 16 * 1024 * 1024;
    let id = create(
        &engine,
        &g,
        "oom",
        // dd allocates a 200 MB block buffer and fills it: killed at 16 MB.
        &[
            "sh",
            "-c",
            "exec dd if=/dev/zero of=/dev/null bs=200M count=1",
        ],
        HostConfig {
            memory: Some(limit),
            memory_swap: Some(limit),
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let (mut c, stop) = start_events(test_cfg(None)).await;
    let t0 = Instant::now();
    start(&engine, &id).await;
    let ok = c
        .until(Duration::from_secs(30), |s| {
            count_kind(s, &id, ContainerEventKind::Oom) >= 1
                && count_kind(s, &id, ContainerEventKind::Die) >= 1
        })
        .await;
    let t = t0.elapsed();
    stop.cancel();
    let evs = events_for(&c.seen, &id);
    assert!(ok, "{evs:?}");
    let die = evs
        .iter()
        .find(|e| e.kind == ContainerEventKind::Die)
        .unwrap();
    assert_eq!(die.exit_code, Some(137));
    // The engine reports each cgroup OOM event it sees; under load the kernel
    // can record two for one kill (seen in CI), so "at least one" is the contract.
    assert!(count_kind(&c.seen, &id, ContainerEventKind::Oom) >= 1);
    let inv = inventory(&engine).await.unwrap();
    let f = inv.containers.iter().find(|f| f.id == id).unwrap();
    assert_eq!(f.memory_limit, Some(limit as u64));
    assert_eq!(f.exit_code, Some(137));
    let kinds: Vec<_> = evs.iter().map(|e| e.kind).collect();
    eprintln!("oom: events {kinds:?} within {t:?}");
}

#[tokio::test]
async fn failing_healthcheck_gives_unhealthy_event_and_inventory() {
    let Some(engine) = engine_or_skip().await else {
        return;
    };
    let g = Guard::new(&engine);
    build_image(&engine, &g).await;
    let id = create(
        &engine,
        &g,
        "health",
        &["sleep", "600"],
        HostConfig::default(),
        |b| {
            b.healthcheck = Some(HealthConfig {
                test: Some(vec!["CMD-SHELL".into(), "exit 1".into()]),
                interval: Some(1_000_000_000),
                timeout: Some(1_000_000_000),
                retries: Some(1),
                start_period: Some(0),
                start_interval: None,
            });
        },
    )
    .await;
    let (mut c, stop) = start_events(test_cfg(None)).await;
    let t0 = Instant::now();
    start(&engine, &id).await;
    let ok = c
        .until(Duration::from_secs(30), |s| {
            events_for(s, &id).iter().any(|e| {
                e.kind == ContainerEventKind::HealthStatus
                    && e.health.as_deref() == Some("unhealthy")
            })
        })
        .await;
    let t = t0.elapsed();
    assert!(ok, "{:?}", events_for(&c.seen, &id));
    let inv = inventory(&engine).await.unwrap();
    let f = inv.containers.iter().find(|f| f.id == id).unwrap();
    assert_eq!(f.health, HealthState::Unhealthy);
    assert_eq!(f.state, ContainerRunState::Running);
    // The event task's own inventory catches up too.
    let inv_ok = c
        .until(Duration::from_secs(10), |s| {
            s.iter().any(|o| {
                matches!(o, DockerOutput::Inventory(inv)
                if inv.containers.iter().any(|f| f.id == id && f.health == HealthState::Unhealthy))
            })
        })
        .await;
    stop.cancel();
    assert!(inv_ok);
    eprintln!("health: unhealthy event after {t:?}");
}

#[tokio::test]
async fn restart_action_runs_and_is_observed_in_events() {
    let Some(engine) = engine_or_skip().await else {
        return;
    };
    let g = Guard::new(&engine);
    build_image(&engine, &g).await;
    let id = create(
        &engine,
        &g,
        "restart",
        &["sleep", "600"],
        HostConfig::default(),
        |_| {},
    )
    .await;
    start(&engine, &id).await;
    let (mut c, stop) = start_events(test_cfg(None)).await;
    let action = DockerAction::Restart {
        container: g.name("restart"),
        timeout_s: Some(1),
    };
    let res = execute(&engine, &LocalPolicy::default(), &action).await;
    assert!(res.ok && !res.refused, "{res:?}");
    let ok = c
        .until(Duration::from_secs(20), |s| {
            count_kind(s, &id, ContainerEventKind::Restart) >= 1
                && count_kind(s, &id, ContainerEventKind::Start) >= 1
        })
        .await;
    c.drain_for(Duration::from_millis(300)).await;
    stop.cancel();
    let kinds: Vec<_> = events_for(&c.seen, &id).iter().map(|e| e.kind).collect();
    assert!(ok, "{kinds:?}");
    assert!(
        !c.seen
            .iter()
            .any(|o| matches!(o, DockerOutput::RestartLoop(l) if l.container_id == id)),
        "an operator restart is not a restart loop"
    );
    eprintln!(
        "restart action: {} in {} ms; events {kinds:?}",
        res.detail, res.duration_ms
    );
}

#[tokio::test]
async fn destructive_remove_is_refused_by_local_policy() {
    let Some(engine) = engine_or_skip().await else {
        return;
    };
    let g = Guard::new(&engine);
    build_image(&engine, &g).await;
    let name = g.name("keep");
    let id = create(
        &engine,
        &g,
        "keep",
        &["sleep", "600"],
        HostConfig::default(),
        |_| {},
    )
    .await;
    start(&engine, &id).await;
    let remove = DockerAction::Remove {
        container: name.clone(),
        force: true,
    };
    // Default policy: low risk only, no destructive.
    let res = execute(&engine, &LocalPolicy::default(), &remove).await;
    assert!(!res.ok && res.refused, "{res:?}");
    // Even "remove" allowed by name is refused while allow_destructive is false.
    let p = LocalPolicy {
        allow_destructive: false,
        allowed: vec![PolicyRule::Remove],
        deny_containers: vec![],
    };
    assert!(execute(&engine, &p, &remove).await.refused);
    // A deny entry by name stops a restart requested by id.
    let deny = LocalPolicy {
        deny_containers: vec![name.clone()],
        ..Default::default()
    };
    let r = execute(
        &engine,
        &deny,
        &DockerAction::Restart {
            container: id.clone(),
            timeout_s: Some(0),
        },
    )
    .await;
    assert!(r.refused, "{r:?}");
    let i = engine
        .docker
        .inspect_container(&id, None::<InspectContainerOptions>)
        .await
        .expect("container must still exist");
    assert_eq!(
        i.state.and_then(|s| s.running),
        Some(true),
        "and still be running"
    );
    // When the owner does allow it, it runs.
    let yes = LocalPolicy {
        allow_destructive: true,
        allowed: vec![PolicyRule::Destructive],
        deny_containers: vec![],
    };
    let r = execute(&engine, &yes, &remove).await;
    assert!(r.ok, "{r:?}");
    let gone = engine
        .docker
        .inspect_container(&id, None::<InspectContainerOptions>)
        .await
        .map_err(|e| DockerError::from_bollard(e, &engine.socket));
    assert!(matches!(gone, Err(DockerError::NotFound(_))), "{gone:?}");
    // Unknown containers are reported, not panicked on.
    let r = execute(
        &engine,
        &LocalPolicy::default(),
        &DockerAction::Start {
            container: "wingman-test-does-not-exist".into(),
        },
    )
    .await;
    assert!(
        !r.ok && !r.refused && r.detail.contains("no such container"),
        "{r:?}"
    );
    eprintln!("policy: {}", res.detail);
}

#[tokio::test]
async fn follows_logs_multiplexed_and_tty_with_resume() {
    let Some(engine) = engine_or_skip().await else {
        return;
    };
    let g = Guard::new(&engine);
    build_image(&engine, &g).await;
    let script = "echo out1; echo err1 >&2; sleep 1; echo out2; echo err2 >&2";
    let plain = create(
        &engine,
        &g,
        "logs",
        &["sh", "-c", script],
        HostConfig::default(),
        |_| {},
    )
    .await;
    let tty = create(
        &engine,
        &g,
        "logs-tty",
        &["sh", "-c", script],
        HostConfig::default(),
        |b| {
            b.tty = Some(true);
        },
    )
    .await;
    start(&engine, &plain).await;
    start(&engine, &tty).await;
    let collect = |id: String, startp: LogStart| {
        let s = follow_logs(&engine.docker, &id, startp);
        async move {
            tokio::time::timeout(Duration::from_secs(20), s.collect::<Vec<_>>())
                .await
                .expect("follow ends when the container exits")
        }
    };
    let lines: Vec<_> = collect(plain.clone(), LogStart::All)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let got: Vec<(LogStream, String)> = lines
        .iter()
        .map(|l| (l.stream, String::from_utf8_lossy(&l.line).to_string()))
        .collect();
    assert_eq!(
        got.iter()
            .filter(|(s, _)| *s == LogStream::Stdout)
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>(),
        ["out1", "out2"]
    );
    assert_eq!(
        got.iter()
            .filter(|(s, _)| *s == LogStream::Stderr)
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>(),
        ["err1", "err2"]
    );
    // The engine copies stdout and stderr separately: each stream is in
    // timestamp order, the two interleave only roughly (lines written in
    // the same millisecond can come back either way round).
    for stream in [LogStream::Stdout, LogStream::Stderr] {
        let ts: Vec<i64> = lines
            .iter()
            .filter(|l| l.stream == stream)
            .map(|l| l.ts_ns)
            .collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{stream:?}: {ts:?}");
    }
    // Resume after the first pair (written a second before the second
    // pair): only the later lines come back.
    let cursor = lines[0].ts_ns.max(lines[1].ts_ns);
    let rest: Vec<_> = collect(plain.clone(), LogStart::SinceNs(cursor))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rest.len(), 2, "{rest:?}");
    assert!(rest.iter().all(|l| l.ts_ns > cursor));
    // TTY: one stream, CRLF stripped.
    let t: Vec<String> = collect(tty, LogStart::All)
        .await
        .into_iter()
        .map(|l| String::from_utf8_lossy(&l.unwrap().line).to_string())
        .collect();
    assert_eq!(t, ["out1", "err1", "out2", "err2"]);
    // A missing container is an error item, not a panic.
    let e = collect("wingman-test-nope".into(), LogStart::Now).await;
    assert!(
        matches!(e.as_slice(), [Err(DockerError::NotFound(_))]),
        "{e:?}"
    );
}

/// Ground truth: a direct subscription on the real socket, normalised the same way.
fn ground_truth(
    engine: &wingman_agent::docker::Engine,
    id: &str,
) -> Arc<Mutex<Vec<ContainerEvent>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut filters = std::collections::HashMap::new();
    filters.insert("type".to_owned(), vec!["container".to_owned()]);
    filters.insert("container".to_owned(), vec![id.to_owned()]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut s = engine.docker.events(Some(EventsOptions {
        since: Some(format!("{now:.9}")),
        until: None,
        filters: Some(filters),
    }));
    let o = Arc::clone(&out);
    tokio::spawn(async move {
        while let Some(Ok(m)) = s.next().await {
            if let Some(n) = normalise_event(&m) {
                o.lock().unwrap().push(n.event);
            }
        }
    });
    out
}

#[tokio::test]
async fn event_stream_survives_socket_loss_without_gaps_or_duplicates() {
    let Some(engine) = engine_or_skip().await else {
        return;
    };
    let g = Guard::new(&engine);
    build_image(&engine, &g).await;
    let id = create(
        &engine,
        &g,
        "proxy",
        &["sleep", "600"],
        HostConfig::default(),
        |_| {},
    )
    .await;
    start(&engine, &id).await;
    let truth = ground_truth(&engine, &id);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&dir.path().join("proxy.sock"), &engine.socket);
    let (mut c, stop) = start_events(test_cfg(Some(proxy.path.clone()))).await;
    let restart = |t| RestartContainerOptions {
        signal: None,
        t: Some(t),
    };

    // Phase 1, live.
    engine
        .docker
        .restart_container(&id, Some(restart(0)))
        .await
        .unwrap();
    assert!(
        c.until(Duration::from_secs(15), |s| count_kind(
            s,
            &id,
            ContainerEventKind::Restart
        ) >= 1)
            .await
    );

    // Phase 2, cut: the stream breaks; events happen while nobody listens.
    proxy.cut();
    let t_cut = Instant::now();
    assert!(
        c.until(Duration::from_secs(15), |s| has_status(s, false, ""))
            .await,
        "no unreachable status: {:?}",
        c.seen
    );
    let t_noticed = t_cut.elapsed();
    let before = events_for(&c.seen, &id).len();
    engine
        .docker
        .restart_container(&id, Some(restart(0)))
        .await
        .unwrap();
    engine
        .docker
        .restart_container(&id, Some(restart(0)))
        .await
        .unwrap();
    engine
        .docker
        .stop_container(
            &id,
            Some(StopContainerOptions {
                signal: None,
                t: Some(0),
            }),
        )
        .await
        .unwrap();
    c.drain_for(Duration::from_millis(800)).await; // several reconnect attempts fail
    assert_eq!(
        events_for(&c.seen, &id).len(),
        before,
        "nothing can arrive while cut"
    );
    let missed = truth.lock().unwrap().len() - before;

    // Phase 3, restore: the task reconnects and replays from `since`.
    let status_count = c
        .seen
        .iter()
        .filter(|o| matches!(o, DockerOutput::Status(_)))
        .count();
    proxy.restore();
    let t_restore = Instant::now();
    assert!(
        c.until(Duration::from_secs(15), |s| {
            s.iter()
                .filter(|o| matches!(o, DockerOutput::Status(_)))
                .count()
                > status_count
                && has_status(s, true, "connected")
        })
        .await
    );
    let want = truth.lock().unwrap().len();
    assert!(
        c.until(Duration::from_secs(15), |s| events_for(s, &id).len()
            >= want)
            .await,
        "replay incomplete"
    );
    let t_replayed = t_restore.elapsed();
    start(&engine, &id).await; // live again after the reconnect
    assert!(
        c.until(Duration::from_secs(15), |s| events_for(s, &id).len() > want)
            .await
    );
    c.drain_for(Duration::from_millis(500)).await;
    stop.cancel();

    let got: Vec<(ContainerEventKind, i64)> = events_for(&c.seen, &id)
        .iter()
        .map(|e| (e.kind, e.at_ms))
        .collect();
    let truth: Vec<(ContainerEventKind, i64)> = truth
        .lock()
        .unwrap()
        .iter()
        .map(|e| (e.kind, e.at_ms))
        .collect();
    assert_eq!(got, truth, "stream via proxy must equal the direct stream");
    assert!(
        missed >= 10,
        "the cut should have hidden several events ({missed})"
    );
    let statuses: Vec<String> = c
        .seen
        .iter()
        .filter_map(|o| match o {
            DockerOutput::Status(s) => Some(format!("{}:{}", s.reachable, s.message)),
            _ => None,
        })
        .collect();
    eprintln!(
        "socket loss: noticed in {t_noticed:?}; {missed} events missed while cut were replayed {t_replayed:?} after restore; {} events total, identical to the direct stream; statuses {statuses:#?}",
        got.len()
    );
}

// ------------------------------------------------------------ permission denied

#[test]
#[ignore = "run as an unprivileged child by permission_denied_is_reported"]
fn perm_denied_child() {
    if std::env::var("WINGMAN_PERM_CHILD").is_err() {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(connect(
        Some(std::path::Path::new("/var/run/docker.sock")),
        Duration::from_secs(5),
    ));
    let e = r.expect_err("nobody must not reach the docker socket");
    println!("CHILD-STATUS {}", e.status().message);
    assert!(matches!(e, DockerError::PermissionDenied(_)), "{e:?}");
}

#[test]
fn permission_denied_is_reported() {
    let sock = std::path::Path::new("/var/run/docker.sock");
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let setpriv = std::path::Path::new("/usr/bin/setpriv");
    if !sock.exists() && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("no docker socket under CI");
    }
    if !sock.exists() || !is_root || !setpriv.exists() {
        eprintln!("SKIP: needs root, setpriv and the docker socket");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args([
            "--exact",
            "docker_engine::perm_denied_child",
            "--ignored",
            "--nocapture",
        ])
        .env("WINGMAN_PERM_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("CHILD-STATUS permission denied: /var/run/docker.sock"),
        "{stdout}"
    );
}

// ------------------------------------------------------------ fake engines

const PODMAN_VERSION: &str = r#"{"Platform":{"Name":"linux/amd64/debian-12"},"Components":[{"Name":"Podman Engine","Version":"4.9.3","Details":{"APIVersion":"4.9.3","Arch":"amd64","BuildTime":"2024-02-08T00:00:00Z","Experimental":"false","GitCommit":"","GoVersion":"go1.21.6","KernelVersion":"6.1.0-18-amd64","MinAPIVersion":"4.0.0","Os":"linux"}},{"Name":"Conmon","Version":"conmon version 2.1.6, commit: unknown","Details":{"Package":"conmon_2.1.6+ds1-1_amd64"}},{"Name":"OCI Runtime (crun)","Version":"crun version 1.8.1","Details":{"Package":"crun_1.8.1-1+deb12u1_amd64"}}],"Version":"4.9.3","ApiVersion":"1.41","MinAPIVersion":"1.24","GitCommit":"","GoVersion":"go1.21.6","Os":"linux","Arch":"amd64","KernelVersion":"6.1.0-18-amd64","BuildTime":"2024-02-08T00:00:00Z"}"#;

const PODMAN_ID: &str = "3f6b2c1d9e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c";

fn podman_list() -> String {
    format!(
        r#"[{{"Id":"{PODMAN_ID}","Names":["/blog_web_1"],"Image":"docker.io/library/nginx:1.25","ImageID":"sha256:aaaa","Command":"nginx -g daemon off;","Created":1700000000,"Ports":[],"Labels":{{"io.podman.compose.project":"blog","com.docker.compose.service":"web","PODMAN_SYSTEMD_UNIT":"podman-compose@blog.service"}},"State":"running","Status":"Up 2 hours","NetworkSettings":{{"Networks":{{}}}},"Mounts":[],"Name":"","Config":null,"NetworkingConfig":null,"Platform":null,"AdjustCPUShares":false,"HostConfig":{{"NetworkMode":"bridge"}}}}]"#
    )
}

fn podman_inspect() -> String {
    format!(
        r#"{{"Id":"{PODMAN_ID}","Created":"2023-11-14T23:13:20.123456789+01:00","Path":"nginx","Args":["-g","daemon off;"],"State":{{"Status":"running","Running":true,"Paused":false,"Restarting":false,"OOMKilled":true,"Dead":false,"Pid":4242,"ExitCode":0,"Error":"","StartedAt":"2023-11-14T23:20:00.5+01:00","FinishedAt":"0001-01-01T00:00:00Z","Health":{{"Status":"unhealthy","FailingStreak":3,"Log":[{{"Start":"2023-11-14T23:21:00.1+01:00","End":"2023-11-14T23:21:00.2+01:00","ExitCode":1,"Output":""}}]}}}},"Image":"sha256:aaaa","ResolvConfPath":"","HostnamePath":"","HostsPath":"","LogPath":"","Name":"/blog_web_1","RestartCount":2,"Driver":"overlay","Platform":"linux","MountLabel":"","ProcessLabel":"","AppArmorProfile":"","ExecIDs":[],"HostConfig":{{"Memory":268435456,"NanoCpus":0,"CpuPeriod":100000,"CpuQuota":150000,"RestartPolicy":{{"Name":"unless-stopped","MaximumRetryCount":0}}}},"Config":{{"Hostname":"3f6b2c1d9e8a","Image":"docker.io/library/nginx:1.25","Labels":{{"io.podman.compose.project":"blog","com.docker.compose.service":"web"}}}}}}"#
    )
}

const PODMAN_IMAGES: &str = r#"[{"Id":"sha256:aaaa","ParentId":"","RepoTags":["docker.io/library/nginx:1.25"],"RepoDigests":[],"Created":1699000000,"Size":187000000,"SharedSize":0,"VirtualSize":187000000,"Labels":null,"Containers":1,"Names":["docker.io/library/nginx:1.25"],"Digest":"sha256:bbbb","History":[]}]"#;

/// Podman compat event lines (shapes of Podman 4.x's `/events`), at `base + k` ms.
fn podman_events(base_ns: i64) -> Vec<(i64, String)> {
    let ev = |k: i64, status: &str, action: &str, attrs: &str, extra: &str| {
        let t = base_ns + k * 1_000_000;
        (
            t,
            format!(
                r#"{{"status":"{status}","id":"{PODMAN_ID}","from":"docker.io/library/nginx:1.25","Type":"container","Action":"{action}","Actor":{{"ID":"{PODMAN_ID}","Attributes":{{"image":"docker.io/library/nginx:1.25","name":"blog_web_1","podId":""{attrs}}}}},"scope":"local","time":{},"timeNano":{t}{extra}}}"#,
                t / 1_000_000_000
            ),
        )
    };
    vec![
        ev(0, "start", "start", "", ""),
        ev(
            1,
            "exec_died",
            "exec_died",
            r#","containerExitCode":"1""#,
            "",
        ),
        ev(
            2,
            "health_status",
            "health_status",
            "",
            r#","HealthStatus":"unhealthy""#,
        ),
        ev(3, "died", "died", r#","containerExitCode":"137""#, ""),
        // Podman repeats health_status on every check; unchanged health is not re-sent.
        ev(
            4,
            "health_status",
            "health_status",
            "",
            r#","HealthStatus":"unhealthy""#,
        ),
        ev(5, "start", "start", "", ""),
        ev(
            6,
            "died",
            "die",
            r#","containerExitCode":"2","exitCode":"2""#,
            "",
        ),
        ev(7, "remove", "remove", "", ""),
    ]
}

#[tokio::test]
async fn podman_shapes_are_normalised_and_resume_dedupes() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
        + 2_000_000_000;
    let events = podman_events(base);
    let conn = Arc::new(Mutex::new(0u32));
    let router: Router = {
        let conn = Arc::clone(&conn);
        Arc::new(
            move |path: &str, q: &std::collections::HashMap<String, String>| match path {
                "/version" => Reply::Json(200, PODMAN_VERSION.to_owned()),
                "/containers/json" => Reply::Json(200, podman_list()),
                p if p.starts_with("/containers/") && p.ends_with("/json") => {
                    Reply::Json(200, podman_inspect())
                }
                "/images/json" => Reply::Json(200, PODMAN_IMAGES.to_owned()),
                "/events" => {
                    let since = since_ns(q).unwrap_or(0);
                    let mut n = conn.lock().unwrap();
                    *n += 1;
                    let lines: Vec<String> = events
                        .iter()
                        .filter(|(t, _)| *t >= since)
                        .map(|(_, l)| l.clone())
                        .collect();
                    match *n {
                        // First connection: four events, then the engine hangs up.
                        1 => Reply::Stream(lines.into_iter().take(4).collect(), false),
                        // Second: everything since the cursor (incl. the boundary event), then
                        // an undecodable message.
                        2 => {
                            let mut l = lines;
                            l.push(r#"{"Type":"no-such-type","Action":"x","time":1}"#.to_owned());
                            Reply::Stream(l, false)
                        }
                        _ => Reply::Stream(lines, true),
                    }
                }
                _ => Reply::Json(404, r#"{"message":"page not found"}"#.to_owned()),
            },
        )
    };
    let fake = FakeEngine::start(&dir.path().join("podman.sock"), router);
    let (tx, rx) = mpsc::channel(8);
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_events(
        test_cfg(Some(fake.path.clone())),
        tx,
        stop.clone(),
    ));
    let mut c = Collector::new(rx);
    let all_events = |s: &[DockerOutput]| events_for(s, PODMAN_ID).len() >= 7;
    assert!(
        c.until(Duration::from_secs(15), all_events).await,
        "{:#?}",
        c.seen
    );
    assert!(c.until(Duration::from_secs(10), |s| {
        s.iter().filter(|o| matches!(o, DockerOutput::Status(st) if st.message.contains("connected to Podman 4.9.3 (API 1.41)"))).count() >= 2
    }).await, "{:#?}", c.seen);
    c.drain_for(Duration::from_millis(500)).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();

    // Inventory: kind, compose labels from podman-compose, quota-based CPU limit.
    let inv = c
        .seen
        .iter()
        .find_map(|o| match o {
            DockerOutput::Inventory(i) => Some(i),
            _ => None,
        })
        .unwrap();
    assert_eq!(inv.engine.kind, EngineKind::Podman);
    assert_eq!(inv.engine.version, "4.9.3");
    let f = &inv.containers[0];
    assert_eq!(f.name, "blog_web_1");
    assert_eq!(f.compose_project.as_deref(), Some("blog"));
    assert_eq!(f.compose_service.as_deref(), Some("web"));
    assert_eq!(f.cpu_limit, Some(1_500_000_000));
    assert_eq!(f.memory_limit, Some(268_435_456));
    assert_eq!(f.health, HealthState::Unhealthy);
    assert_eq!(f.restart_policy, RestartPolicy::UnlessStopped);
    assert_eq!(f.created_ms, 1_700_000_000_123);
    assert_eq!(f.started_ms, Some(1_700_000_400_500));
    assert_eq!(inv.images[0].tags, ["docker.io/library/nginx:1.25"]);

    // Events: each exactly once, in order, with Podman's spellings normalised.
    let evs: Vec<_> = events_for(&c.seen, PODMAN_ID)
        .into_iter()
        .map(|e| (e.kind, e.exit_code, e.health.clone()))
        .collect();
    use ContainerEventKind as K;
    assert_eq!(
        evs,
        [
            (K::Start, None, None),
            (K::HealthStatus, None, Some("unhealthy".into())), // read back with inspect
            (K::Oom, None, None),                              // synthesised from State.OOMKilled
            (K::Die, Some(137), None),
            (K::Start, None, None),
            (K::Die, Some(2), None),
            (K::Destroy, None, None),
        ]
    );
    // Podman gets no server-side `event` filter; resumes carry `since` with nanoseconds.
    let reqs = fake.requests();
    let ev_reqs: Vec<&String> = reqs.iter().filter(|r| r.starts_with("/events?")).collect();
    assert!(ev_reqs.len() >= 3, "{ev_reqs:?}");
    assert!(
        ev_reqs.iter().all(|r| !r.contains("%22event%22")),
        "{ev_reqs:?}"
    );
    let second_since = ev_reqs[1]
        .split("since=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let (_, frac) = second_since.split_once('.').unwrap();
    assert_eq!(frac.len(), 9);
    assert!(
        has_status(&c.seen, false, "unexpected response from the engine"),
        "{:#?}",
        c.seen
    );
}

#[tokio::test]
async fn unsupported_api_version_is_a_clear_status() {
    let dir = tempfile::tempdir().unwrap();
    let old = r#"{"Version":"1.11.2","ApiVersion":"1.12","Components":[{"Name":"Engine","Version":"1.11.2"}]}"#;
    let fake = FakeEngine::start(
        &dir.path().join("old.sock"),
        Arc::new(
            move |_: &str, _: &std::collections::HashMap<String, String>| {
                Reply::Json(200, old.to_owned())
            },
        ),
    );
    let e = connect(Some(&fake.path), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(
        e.status().message,
        "unsupported API version 1.12 (need >= 1.40)"
    );
    assert!(!e.status().reachable);
    // Garbage where JSON should be.
    let fake2 = FakeEngine::start(
        &dir.path().join("junk.sock"),
        Arc::new(|_: &str, _: &std::collections::HashMap<String, String>| {
            Reply::Json(200, "<html>hello</html>".to_owned())
        }),
    );
    let e = connect(Some(&fake2.path), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(e, DockerError::Protocol(_) | DockerError::Unreachable(_)),
        "{e:?}"
    );
    // The event task reports it once and keeps retrying until shut down.
    let (tx, rx) = mpsc::channel(8);
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_events(
        test_cfg(Some(fake.path.clone())),
        tx,
        stop.clone(),
    ));
    let mut c = Collector::new(rx);
    c.drain_for(Duration::from_millis(1500)).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.seen.len(), 1, "status only when it changes: {:?}", c.seen);
    assert!(has_status(&c.seen, false, "unsupported API version 1.12"));
    assert!(
        fake.requests()
            .iter()
            .filter(|r| r.starts_with("/version"))
            .count()
            >= 3
    );
}

#[tokio::test]
async fn missing_and_stale_sockets_are_reported_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.sock");
    let e = connect(Some(&missing), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(matches!(e, DockerError::SocketMissing(_)), "{e:?}");
    assert!(
        e.status().message.starts_with("socket missing: "),
        "{}",
        e.status().message
    );
    // A socket file nobody listens on.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let e = connect(Some(&stale), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, DockerError::Unreachable(m) if m.contains("connection refused")),
        "{e:?}"
    );
    // The task survives a receiver that goes away.
    let (tx, rx) = mpsc::channel(1);
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_events(test_cfg(Some(missing)), tx, stop.clone()));
    let mut c = Collector::new(rx);
    assert!(
        c.until(Duration::from_secs(5), |s| has_status(
            s,
            false,
            "socket missing"
        ))
        .await
    );
    drop(c);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}
