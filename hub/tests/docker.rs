//! Docker end to end on the real engine: the agent reports the inventory and
//! events, container logs become template counts, and container actions sent
//! by the hub over the authenticated link run only when the node's own policy
//! allows them. Every container and image is labelled and removed afterwards.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use wingman_hub::transport::AgentReply;
use wingman_protocol::CommandBody;
use wingman_protocol::docker::DockerAction;

use crate::common::{TestAgent, TestHub, eventually};

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
    let mut agent = TestAgent::start_with(&dir, |c| {
        c.docker.enabled = true;
        c.docker.socket = Some(SOCKET.into());
        c.docker.container_logs = true;
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

    // A restart sent by the hub runs (restart is low risk: allowed by default)...
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
    assert!(outcome.result.ok && !outcome.result.refused, "{outcome:?}");
    // ...and is observed in the events the agent reports.
    eventually(Duration::from_secs(15), "restart event at the hub", || {
        let (th, a, web) = (&th, &agent_id, &web);
        async move {
            let ev = th
                .hub
                .store
                .recent_facts(a, "container_event", 50)
                .await
                .ok()?;
            ev.iter()
                .any(|(_, b)| b.contains(web.as_str()) && b.contains("\"Restart\""))
                .then_some(())
        }
    })
    .await;

    // Remove is destructive: refused by the node's own policy, nothing runs.
    let reply = th
        .hub
        .registry
        .send_command(
            &agent_id,
            CommandBody::Docker(DockerAction::Remove {
                container: web.clone(),
                force: true,
            }),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let AgentReply::Action(outcome) = reply else {
        panic!("unexpected reply {reply:?}")
    };
    assert!(outcome.result.refused && !outcome.result.ok, "{outcome:?}");
    assert!(
        docker(&["inspect", &web]).0,
        "the container must still exist"
    );

    agent.stop().await;
    th.stop().await;
}
