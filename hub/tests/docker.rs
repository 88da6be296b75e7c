//! Docker end to end on the real engine: the agent reports the inventory and
//! events, container logs become template counts, a crash-looping container
//! opens an incident and a plan restarts it after approval in Assist mode
//! (signed command, executed by the agent, verified running from the facts),
//! unsigned actions are refused, and a destructive step the hub allows is
//! still refused by the node's own policy. Every container and image is
//! labelled and removed afterwards.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use wingman_hub::transport::AgentReply;
use wingman_protocol::CommandBody;
use wingman_protocol::docker::DockerAction;

use crate::common::{TestAgent, TestHub, eventually};

/// The node name the agent reports under.
async fn node_name(th: &TestHub, agent_id: &str) -> String {
    th.hub
        .store
        .get_agent(agent_id)
        .await
        .unwrap()
        .unwrap()
        .hostname
}

const SOCKET: &str = "/var/run/docker.sock";

fn docker(args: &[&str]) -> (bool, String) {
    match Command::new("docker").args(args).output() {
        Ok(o) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).trim().to_string()
                + &String::from_utf8_lossy(&o.stderr),
        ),
        Err(e) => (false, e.to_string()),
    }
}

/// Removes what a test created, also when it panics.
struct Cleanup {
    label: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (_, ids) = docker(&["ps", "-aq", "--filter", &format!("label={}", self.label)]);
        for id in ids.split_whitespace() {
            let _ = docker(&["rm", "-f", id]);
        }
        let _ = docker(&["rmi", "-f", &self.image]);
    }
}

/// A `FROM scratch` image holding Debian's static busybox.
fn build_image(tag: &str, dir: &Path) -> bool {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(busybox) = busybox else { return false };
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for l in ["sh", "sleep", "echo", "true"] {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(l));
    }
    let tar = dir.join("rootfs.tar");
    let ok = Command::new("tar")
        .args([
            "-C",
            root.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ])
        .status()
        .is_ok_and(|s| s.success());
    ok && docker(&[
        "import",
        "--change",
        "LABEL wingman.test=1",
        tar.to_str().unwrap(),
        tag,
    ])
    .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_events_logs_and_actions_through_the_hub() {
    if !Path::new(SOCKET).exists() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the Docker engine is required in CI");
        }
        eprintln!("docker test skipped: no {SOCKET}");
        return;
    }
    let run = hex::encode(rand::random::<[u8; 4]>());
    let label = format!("wingman.hubtest={run}");
    let image = format!("wingman-test/hub:{run}");
    let work = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup {
        label: label.clone(),
        image: image.clone(),
    };
    assert!(
        build_image(&image, work.path()),
        "could not build the test image"
    );
    let web = format!("wm-web-{run}");
    let chatty = format!("wm-chatty-{run}");
    let (ok, out) = docker(&[
        "run",
        "-d",
        "--label",
        &label,
        "--label",
        "wingman.test=1",
        "--name",
        &web,
        &image,
        "/bin/busybox",
        "sleep",
        "3600",
    ]);
    assert!(ok, "{out}");

    let mut th = TestHub::start(|_| {}).await;
    let dir = th.dir.path().join("agent");
    let id = th.enroll(&dir).await;
    let agent_id = id.enrollment.agent_id.clone();
    let web_denied = web.clone();
    let mut agent = TestAgent::start_with(&dir, move |c| {
        c.docker.enabled = true;
        c.docker.socket = Some(SOCKET.into());
        c.docker.container_logs = true;
        // The node allows removing containers, except `web`.
        c.docker.policy.allow_destructive = true;
        c.docker.policy.allowed = vec![
            wingman_agent::docker::PolicyRule::Low,
            wingman_agent::docker::PolicyRule::Remove,
        ];
        c.docker.policy.deny_containers = vec![web_denied];
    });

    // The inventory reaches the hub as the node's latest container facts.
    eventually(
        Duration::from_secs(15),
        "container inventory at the hub",
        || {
            let (th, a, web) = (&th, &agent_id, &web);
            async move {
                let latest = th.hub.store.latest_facts(a).await.ok()?;
                let inv = latest.iter().find(|f| f.kind == "docker_inventory")?;
                inv.body.contains(web.as_str()).then_some(())
            }
        },
    )
    .await;

    // Container logs become template counts, never raw lines.
    let (ok, out) = docker(&[
        "run",
        "-d",
        "--label",
        &label,
        "--label",
        "wingman.test=1",
        "--name",
        &chatty,
        &image,
        "/bin/busybox",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo \"request $i served in 4${i}ms for 10.1.2.$i\"; sleep 0.1; done",
    ]);
    assert!(ok, "{out}");
    eventually(
        Duration::from_secs(30),
        "container log template at the hub",
        || {
            let (th, a) = (&th, &agent_id);
            async move {
                let rows = th.hub.store.log_templates(a, 100).await.ok()?;
                rows.iter()
                    .any(|r| {
                        r.source_kind == "container"
                            && r.template.contains("served in")
                            && r.count >= 5
                    })
                    .then_some(())
            }
        },
    )
    .await;

    // Actions run only from approved plan steps: an unsigned restart is
    // refused by the agent.
    let reply = th
        .hub
        .registry
        .send_command(
            &agent_id,
            CommandBody::Docker(DockerAction::Restart {
                container: web.clone(),
                timeout_s: Some(1),
            }),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let AgentReply::Action(outcome) = reply else {
        panic!("unexpected reply {reply:?}")
    };
    assert!(outcome.result.refused && !outcome.result.ok, "{outcome:?}");

    // A crash-looping container: its config file is missing, so it exits 3
    // at once; the engine restarts it a few times, then gives up.
    let key = th.api_key().await;
    let fix = work.path().join("fix");
    std::fs::create_dir_all(&fix).unwrap();
    let crash = format!("wm-crash-{run}");
    let (ok, out) = docker(&[
        "run",
        "-d",
        "--label",
        &label,
        "--label",
        "wingman.test=1",
        "--name",
        &crash,
        "--restart",
        "on-failure:4",
        "-v",
        &format!("{}:/fix", fix.display()),
        &image,
        "/bin/busybox",
        "sh",
        "-c",
        "test -f /fix/app.conf && exec sleep 3600; echo 'cannot read /fix/app.conf'; exit 3",
    ]);
    assert!(ok, "{out}");
    let incident = eventually(
        Duration::from_secs(60),
        "crash-loop incident at the hub",
        || {
            let (th, key, crash) = (&th, &key, &crash);
            async move {
                let v: serde_json::Value = crate::common::http_client()
                    .get(th.url("/api/v1/incidents?limit=50"))
                    .bearer_auth(key)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                v["incidents"].as_array()?.iter().find_map(|i| {
                    let t = i["title"].as_str()?;
                    (t.contains(crash.as_str()) || t.contains("crash-looping"))
                        .then(|| i["id"].as_str().unwrap().to_owned())
                })
            }
        },
    )
    .await;
    // It gives up (exited) before the fix.
    eventually(Duration::from_secs(60), "crash loop over", || {
        let crash = crash.clone();
        async move {
            let (_, s) = docker(&["inspect", "-f", "{{.State.Status}}", &crash]);
            (s.trim() == "exited").then_some(())
        }
    })
    .await;

    // Assist mode, with the hub's opt-in for removing containers on this
    // node (the agent keeps its own default: no destructive actions).
    let (s, e) = crate::plans::set_policy(
        &th,
        &key,
        serde_json::json!({"mode": "assist", "destructive_opt_in": ["docker.remove on node:{node}".replace("{node}", &node_name(&th, &agent_id).await)]}),
    )
    .await;
    assert_eq!(s, reqwest::StatusCode::OK, "{e}");

    // The operator fixes the config, and a plan restarts the container.
    std::fs::write(fix.join("app.conf"), "ok\n").unwrap();
    let node = node_name(&th, &agent_id).await;
    let (s, p) = crate::plans::propose(
        &th,
        &key,
        &incident,
        serde_json::json!({"title": "restart after the fix", "steps": [
            {"action": "docker.restart", "params": {"node": node, "container": crash, "timeout_s": 1}, "why": "config restored"}
        ]}),
    )
    .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{p}");
    let plan = p["plan"].clone();
    let pid = plan["id"].as_str().unwrap().to_owned();
    assert_eq!(plan["steps"][0]["risk"], "low");
    // Not approved yet: refused.
    let (s, e) = crate::plans::step(&th, &key, &pid, 1, "execute").await;
    assert_eq!(s, reqwest::StatusCode::CONFLICT, "{e}");
    // Approve and execute with the incident page's forms (CSRF token of
    // the session, the hashes the page showed).
    let (client, cookie) = th.browser_session().await;
    let post = |path: String, form: Vec<(&'static str, String)>| {
        let (client, cookie, th) = (&client, &cookie, &th);
        async move {
            let r = client
                .post(th.url(&path))
                .header("cookie", cookie)
                .form(&form)
                .send()
                .await
                .unwrap();
            assert!(
                r.status().is_success() || r.status().is_redirection(),
                "{path}: {}",
                r.status()
            );
        }
    };
    post(
        format!("/plans/{pid}/steps/1/approve"),
        vec![
            ("csrf", "csrf-test".into()),
            ("plan_hash", plan["plan_hash"].as_str().unwrap().into()),
            (
                "step_hash",
                plan["steps"][0]["step_hash"].as_str().unwrap().into(),
            ),
        ],
    )
    .await;
    let t0 = std::time::Instant::now();
    post(
        format!("/plans/{pid}/steps/1/execute"),
        vec![("csrf", "csrf-test".into())],
    )
    .await;
    let done = crate::plans::wait_step(&th, &key, &pid, 1, &["verified", "failed"]).await;
    eprintln!(
        "docker.restart: execute -> verified running from the facts in {:?}",
        t0.elapsed()
    );
    assert_eq!(done["steps"][0]["state"], "verified", "{done}");
    assert_eq!(done["status"], "completed", "{done}");
    let (_, running) = docker(&["inspect", "-f", "{{.State.Running}}", &crash]);
    assert_eq!(running.trim(), "true");
    assert_eq!(
        crate::plans::plan_audit(&th, &pid).await,
        [
            "plan_created",
            "plan_validated",
            "execution_refused",
            "step_approved",
            "command_sent",
            "step_executed",
            "step_verified",
            "plan_completed"
        ]
    );

    // Read-only diagnostics of the chatty container: its state, and its
    // recent logs as templates with counts (no raw line leaves the node).
    let (s, p) = crate::plans::propose(
        &th,
        &key,
        &incident,
        serde_json::json!({"title": "look at chatty", "steps": [
            {"action": "docker.inspect", "params": {"node": node, "container": chatty}},
            {"action": "docker.logs_summary", "params": {"node": node, "container": chatty, "since_s": 600}}
        ]}),
    )
    .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{p}");
    let plan = p["plan"].clone();
    let diag = plan["id"].as_str().unwrap().to_owned();
    for n in 1..=2 {
        let (s, e) = crate::plans::approve(&th, &key, &plan, n, None).await;
        assert_eq!(s, reqwest::StatusCode::OK, "{e}");
        let (s, e) = crate::plans::step(&th, &key, &diag, n, "execute").await;
        assert_eq!(s, reqwest::StatusCode::OK, "{e}");
        crate::plans::wait_step(&th, &key, &diag, n, &["verified", "failed"]).await;
    }
    let done = crate::plans::get_plan(&th, &key, &diag).await;
    assert_eq!(done["status"], "completed", "{done}");
    let state = done["steps"][0]["result"].as_str().unwrap();
    assert!(
        state.contains("state=running") && state.contains("restarts="),
        "{state}"
    );
    let logs = done["steps"][1]["result"].as_str().unwrap();
    assert!(logs.contains("served in") && logs.contains(" × "), "{logs}");
    assert!(
        !logs.contains("10.1.2."),
        "raw values left the node: {logs}"
    );

    // Removing is destructive: the hub allows it here (its opt-in, the
    // node reports destructive actions allowed, the password is given), but
    // the node's own policy never touches `web`: refused there, nothing runs.
    let (s, p) = crate::plans::propose(
        &th,
        &key,
        &incident,
        serde_json::json!({"title": "remove", "steps": [
            {"action": "docker.remove", "params": {"node": node, "container": web, "force": true}}
        ]}),
    )
    .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{p}");
    let plan = p["plan"].clone();
    let pid = plan["id"].as_str().unwrap().to_owned();
    assert_eq!(plan["steps"][0]["destructive"], true);
    assert!(plan["steps"][0]["refused"].is_null(), "{plan}");
    let (s, e) = crate::plans::approve(&th, &key, &plan, 1, None).await;
    assert_eq!(s, reqwest::StatusCode::CONFLICT, "no fresh auth: {e}");
    let (s, e) = crate::plans::approve(&th, &key, &plan, 1, Some("wrong")).await;
    assert_eq!(s, reqwest::StatusCode::FORBIDDEN, "{e}");
    let (s, e) = crate::plans::approve(&th, &key, &plan, 1, Some("correct-horse-battery")).await;
    assert_eq!(s, reqwest::StatusCode::OK, "{e}");
    let (s, e) = crate::plans::step(&th, &key, &pid, 1, "execute").await;
    assert_eq!(s, reqwest::StatusCode::OK, "{e}");
    let done = crate::plans::wait_step(&th, &key, &pid, 1, &["failed", "verified"]).await;
    assert_eq!(done["steps"][0]["state"], "failed", "{done}");
    assert_eq!(done["status"], "stopped");
    let why = done["status_detail"].as_str().unwrap();
    assert!(why.contains("refused by the agent"), "{done}");
    assert!(
        why.contains("never touched") || why.contains("deny"),
        "{done}"
    );
    assert!(
        docker(&["inspect", &web]).0,
        "the container must still exist"
    );

    agent.stop().await;
    th.stop().await;
}
