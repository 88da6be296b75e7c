//! Integration tests of the PVE integration against the loopback PVE API
//! test server (HTTPS, pinned certificate) and generated task directories.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crate::pve_server::taskdir::{TaskDirSim, upid_string};
use crate::pve_server::{DownMode, PveTestServer, SimState, TokenSpec, zfs_detail_degraded};
use wingman_agent::pve::client::{PveClient, PveError, format_fingerprint};
use wingman_agent::pve::collect::{Collector, CollectorConfig};
use wingman_agent::pve::tasks::{StartAt, TaskDirFollower};
use wingman_agent::pve::{
    ActionOutcome, BackupMode, ExecOptions, GuestKind, GuestRef, LocalPolicy, PveAction,
    PveActionOp, PveFact, PveProblem, PveStatus, SmartHealth, TaskStatus, execute,
};

const MONITOR: &str = "wingman@pve!monitor";
const ACTOR: &str = "wingman@pve!actor";
const LIMITED: &str = "wingman@pve!limited";

fn init() {
    // Several tests race to install it; only the first wins.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn server() -> PveTestServer {
    init();
    PveTestServer::start(SimState::homelab()).await.unwrap()
}

fn client(srv: &PveTestServer, token: &str) -> PveClient {
    PveClient::new(&srv.client_config(token)).unwrap()
}

fn statuses(facts: &[PveFact]) -> Vec<&PveStatus> {
    facts
        .iter()
        .filter_map(|f| match f {
            PveFact::Status(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn fast() -> ExecOptions {
    ExecOptions {
        poll_interval: Duration::from_millis(50),
        timeout: Duration::from_secs(15),
        ha_grace: Duration::from_secs(2),
    }
}

fn guest(vmid: u32, kind: GuestKind) -> GuestRef {
    GuestRef {
        node: "pve1".into(),
        vmid,
        kind,
    }
}

#[tokio::test]
async fn sweep_reports_every_fact_type() {
    let srv = server().await;
    srv.state().tokens.push(TokenSpec::new(
        "wingman@pve!full",
        "44444444-4444-4444-8444-444444444444",
        &["VM.Audit", "Sys.Audit", "Datastore.Audit", "Sys.Modify"],
    ));
    let c = client(&srv, "wingman@pve!full");
    let mut col = Collector::new(CollectorConfig::new("pve1"));
    let facts = col.sweep(&c).await;

    let mut kinds: Vec<&str> = facts.iter().map(PveFact::kind).collect();
    kinds.sort();
    kinds.dedup();
    for k in [
        "pve_node",
        "pve_guest",
        "pve_cluster",
        "pve_ha",
        "pve_storage",
        "zfs_pool",
        "smart_disk",
        "package_updates",
        "pve_status",
    ] {
        assert!(kinds.contains(&k), "missing {k} in {kinds:?}");
    }
    for f in &facts {
        match f {
            PveFact::Node(n) => {
                assert_eq!(n.node, "pve1");
                assert_eq!(n.kernel, "6.14.11-4-pve");
                assert_eq!(n.pve_version, "pve-manager/9.1.2/4b1e2c3d");
                assert_eq!(n.cpus, 6);
                assert_eq!(n.cluster_name.as_deref(), Some("homelab"));
                assert!((n.load[0] - 0.42).abs() < 1e-6);
                assert!(n.mem_total > n.mem_used && n.rootfs_total > n.rootfs_used);
                assert_eq!(n.uptime_s, 1_234_567);
            }
            PveFact::Cluster(cs) => {
                assert!(cs.quorate);
                assert_eq!(cs.nodes.len(), 2);
                assert!(
                    cs.nodes
                        .iter()
                        .any(|n| n.name == "pve1" && n.local && n.online)
                );
            }
            PveFact::Ha(ha) => {
                assert!(ha.quorate);
                assert_eq!(ha.master_node.as_deref(), Some("pve1"));
                assert!(
                    ha.services
                        .iter()
                        .any(|s| s.sid == "vm:102" && s.state == "started")
                );
                assert!(ha.fencing.is_empty());
                assert_eq!(ha.armed_state.as_deref(), Some("armed"));
            }
            PveFact::Zfs(z) => {
                assert_eq!((z.name.as_str(), z.health.as_str()), ("rpool", "ONLINE"));
                assert!(z.problems.is_empty());
                let scrub = z.scrub.as_ref().unwrap();
                assert_eq!((scrub.errors, scrub.duration_s), (0, Some(761)));
                assert!(scrub.finished_ms.is_some());
            }
            PveFact::Smart(d) if d.devpath == "/dev/sda" => {
                assert_eq!(d.health, SmartHealth::Passed);
                assert_eq!(d.wearout, Some(97));
            }
            PveFact::Smart(d) => assert_eq!(d.wearout, None),
            PveFact::Updates(u) => {
                assert_eq!(u.total, 2);
                assert_eq!(u.security, None);
                assert_eq!(u.packages, vec!["openssl", "pve-manager"]);
            }
            PveFact::Storage(s) => {
                assert!(s.active && s.total > 0);
                assert_eq!(s.time_to_full_s, None, "one sample is not a trend");
            }
            PveFact::Status(s) => {
                assert!(s.reachable);
                assert_eq!(s.problem, PveProblem::None);
            }
            _ => {}
        }
    }
    let mut guests: Vec<_> = facts
        .iter()
        .filter_map(|f| match f {
            PveFact::Guest(g) => Some(g),
            _ => None,
        })
        .collect();
    guests.sort_by_key(|g| g.vmid);
    assert_eq!(
        guests.iter().map(|g| g.vmid).collect::<Vec<_>>(),
        vec![100, 101, 102, 103],
        "only this node's guests"
    );
    assert_eq!(guests[0].tags, vec!["prod", "web"]);
    assert_eq!(guests[1].kind, GuestKind::Lxc);
    assert_eq!(guests[2].ha_state.as_deref(), Some("started"));
    assert!(guests[3].template);
    // Wire types serialize (serde derive only).
    for f in &facts {
        let s = serde_json::to_string(f).unwrap();
        let back: PveFact = serde_json::from_str(&s).unwrap();
        assert_eq!(&back, f);
    }
}

#[tokio::test]
async fn task_failure_is_summarized_from_the_task_dir() {
    let dir = tempfile::tempdir().unwrap();
    let mut td = TaskDirSim::create(dir.path()).unwrap();
    let mut f = TaskDirFollower::new(dir.path(), None, StartAt::End);
    assert!(f.poll().unwrap().is_empty());

    let upid = upid_string(
        "pve1",
        0x1234,
        0xABCDEF,
        1_750_000_001,
        "qmstart",
        "100",
        "root@pam",
    );
    td.start(&upid, &["start VM 100".into()]).unwrap();
    let ev = f.poll().unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].status, TaskStatus::Running);
    assert_eq!(ev[0].upid.to_string(), upid);
    assert_eq!(ev[0].start_ms, 1_750_000_001_000);

    let msg = "start failed: QEMU exited with code 1";
    td.finish(
        &upid,
        1_750_000_009,
        msg,
        &[
            "start VM 100".into(),
            "kvm: -drive file=/dev/zvol/rpool/data/vm-100-disk-0: Could not open: No such file or directory".into(),
            "error: failed to open disk".into(),
            format!("TASK ERROR: {msg}"),
        ],
    )
    .unwrap();
    let ev = f.poll().unwrap();
    assert_eq!(ev.len(), 1, "{ev:?}");
    let TaskStatus::Failed(text) = &ev[0].status else {
        panic!("{:?}", ev[0].status)
    };
    assert!(text.starts_with(msg), "{text}");
    assert!(text.contains("error: failed to open disk"), "{text}");
    assert!(text.len() <= 300);
    assert_eq!(ev[0].end_ms, Some(1_750_000_009_000));
    // Nothing twice.
    assert!(f.poll().unwrap().is_empty());
    assert_eq!(f.stats().finished, 1);
}

#[tokio::test]
async fn follower_survives_rotation_restart_and_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("follower.json");
    let mut td = TaskDirSim::create(dir.path().join("tasks")).unwrap();
    td.max_index_bytes = 400; // rotate after ~3 entries
    let root = td.root().to_path_buf();
    let mut f = TaskDirFollower::new(&root, Some(state.clone()), StartAt::Beginning);
    let mut done = Vec::new();
    for i in 0..8u32 {
        let u = upid_string(
            "pve1",
            0x100 + i,
            0x2000,
            1_750_000_000 + u64::from(i),
            "vzstart",
            "101",
            "root@pam",
        );
        td.start(&u, &[]).unwrap();
        let status = if i == 5 { "WARNINGS: 2" } else { "OK" };
        td.finish(
            &u,
            1_750_000_100 + u64::from(i),
            status,
            &[format!("TASK {status}")],
        )
        .unwrap();
        done.extend(
            f.poll()
                .unwrap()
                .into_iter()
                .filter(|t| t.status.is_finished()),
        );
        if i == 3 {
            // Restart from persisted state.
            f = TaskDirFollower::new(&root, Some(state.clone()), StartAt::Beginning);
        }
    }
    assert!(root.join("index.1").exists(), "rotation happened");
    let mut ids: Vec<u32> = done.iter().map(|t| t.upid.pid).collect();
    ids.sort();
    assert_eq!(
        ids,
        (0x100..0x108).collect::<Vec<_>>(),
        "each task exactly once"
    );
    assert!(done.iter().any(|t| t.status == TaskStatus::Warnings(2)));

    // Garbage in active/index/log: skipped, counted, no crash.
    td.append_active_raw("this is not a task line\n").unwrap();
    td.append_active_raw("UPID:pve1:zz 0\n").unwrap();
    td.append_index_raw("UPID:broken 1234 OK\n\u{0}\u{1}binary\n")
        .unwrap();
    let u = upid_string(
        "pve1",
        0x200,
        0x2000,
        1_750_000_300,
        "qmreboot",
        "100",
        "root@pam",
    );
    td.start(&u, &[]).unwrap();
    td.finish(
        &u,
        1_750_000_301,
        "unexpected status",
        &["reboot VM 100".into()],
    )
    .unwrap();
    td.append_log_bytes(&u, b"\xff\xfe garbage \x00\x07\nmore after the end\n")
        .unwrap();
    td.append_active_raw("garbage after rewrite\n").unwrap();
    let before = f.stats();
    let ev = f.poll().unwrap();
    let fin: Vec<_> = ev
        .iter()
        .filter(|t| t.upid.pid == 0x200 && t.status.is_finished())
        .collect();
    assert_eq!(fin.len(), 1, "{ev:?}");
    assert!(matches!(fin[0].status, TaskStatus::Unknown(_)));
    let after = f.stats();
    assert!(after.bad_lines >= before.bad_lines + 3, "{after:?}");
    assert!(after.bad_log_lines > before.bad_log_lines, "{after:?}");
}

#[tokio::test]
async fn ha_fencing_shows_in_ha_status() {
    let srv = server().await;
    {
        let mut st = srv.state();
        st.fence_node = Some("pve2".into());
        st.nodes[1].1 = false;
    }
    let facts = Collector::new(CollectorConfig::new("pve1"))
        .sweep(&client(&srv, MONITOR))
        .await;
    let ha = facts
        .iter()
        .find_map(|f| match f {
            PveFact::Ha(h) => Some(h),
            _ => None,
        })
        .unwrap();
    assert_eq!(ha.fencing.len(), 1, "{ha:?}");
    assert_eq!(ha.fencing[0].node, "pve2");
    assert_eq!(ha.fencing[0].sid.as_deref(), Some("vm:200"));
    assert!(
        ha.services
            .iter()
            .any(|s| s.sid == "vm:200" && s.state == "fence")
    );
    assert!(
        ha.lrms
            .iter()
            .any(|l| l.node == "pve2" && l.status.contains("dead"))
    );
    let cs = facts
        .iter()
        .find_map(|f| match f {
            PveFact::Cluster(c) => Some(c),
            _ => None,
        })
        .unwrap();
    assert!(cs.nodes.iter().any(|n| n.name == "pve2" && !n.online));
}

#[tokio::test]
async fn storage_filling_time_to_full_shrinks() {
    let srv = server().await;
    let c = client(&srv, MONITOR);
    let mut col = Collector::new(CollectorConfig::new("pve1"));
    let gib = 1_073_741_824u64;
    let t0 = 1_750_000_000_000i64;
    let mut ttfs = Vec::new();
    for step in 0..4i64 {
        srv.state().storage_mut("local").unwrap().used = (40 + 10 * step as u64) * gib;
        let facts = col.sweep_at(&c, t0 + step * 600_000).await;
        let local = facts
            .iter()
            .find_map(|f| match f {
                PveFact::Storage(s) if s.storage == "local" => Some(s),
                _ => None,
            })
            .unwrap();
        ttfs.push(local.time_to_full_s);
        // The static storage never gets an estimate.
        assert!(facts.iter().any(|f| matches!(f, PveFact::Storage(s) if s.storage == "local-zfs" && s.time_to_full_s.is_none())));
    }
    assert_eq!(ttfs[0], None);
    // 10 GiB per 10 min: 50, 40, 30 GiB left → 50, 40, 30 minutes.
    assert_eq!(ttfs[1], Some(3000));
    assert_eq!(ttfs[2], Some(2400));
    assert_eq!(ttfs[3], Some(1800));
}

#[tokio::test]
async fn zfs_degraded_and_smart_failing() {
    let srv = server().await;
    {
        let mut st = srv.state();
        st.zfs[0].health = "DEGRADED".into();
        st.zfs[0].detail = zfs_detail_degraded("rpool");
        st.disks[1].health = "FAILED!".into();
    }
    let facts = Collector::new(CollectorConfig::new("pve1"))
        .sweep(&client(&srv, MONITOR))
        .await;
    let z = facts
        .iter()
        .find_map(|f| match f {
            PveFact::Zfs(z) => Some(z),
            _ => None,
        })
        .unwrap();
    assert_eq!(z.health, "DEGRADED");
    assert!(z.status.as_deref().unwrap().contains("degraded state"));
    assert!(z.action.as_deref().unwrap().contains("zpool replace"));
    let names: Vec<(&str, &str)> = z
        .problems
        .iter()
        .map(|p| (p.name.as_str(), p.state.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("mirror-0", "DEGRADED"),
            ("12345678901234567890", "UNAVAIL")
        ]
    );
    assert_eq!((z.problems[1].read, z.problems[1].cksum), (3, 12));
    assert!(z.problems[1].msg.starts_with("was /dev/disk/by-id/"));
    let scrub = z.scrub.as_ref().unwrap();
    assert!(scrub.resilver && scrub.repaired == 1_288_490_189);
    let bad = facts
        .iter()
        .find_map(|f| match f {
            PveFact::Smart(d) if d.devpath == "/dev/sdb" => Some(d),
            _ => None,
        })
        .unwrap();
    assert_eq!(bad.health, SmartHealth::Failed);
    assert_eq!(bad.health_raw, "FAILED!");
}

#[tokio::test]
async fn action_is_executed_and_reported_with_upid_and_status() {
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    srv.attach_task_dir(dir.path()).unwrap();
    srv.state().guest_mut(100).unwrap().status = "stopped".into();
    let c = client(&srv, ACTOR);
    let policy = LocalPolicy::default();
    let mut follower = TaskDirFollower::new(dir.path(), None, StartAt::End);
    assert!(follower.poll().unwrap().is_empty());

    let r = execute(
        &c,
        &policy,
        &PveAction {
            guest: guest(100, GuestKind::Qemu),
            op: PveActionOp::Start,
        },
        &fast(),
    )
    .await;
    assert_eq!(r.outcome, ActionOutcome::Completed, "{r:?}");
    assert_eq!(r.status, TaskStatus::Ok);
    let upid = r.upid.clone().unwrap();
    assert_eq!(upid.task_type, "qmstart");
    assert_eq!(upid.id, "100");
    assert_eq!(upid.user_and_token(), ("wingman@pve", Some("actor")));
    assert_eq!(r.chain, vec![upid.clone()]);
    assert_eq!(srv.state().guest_mut(100).unwrap().status, "running");

    // The server wrote the task in the real layout; the follower saw it.
    let log = std::fs::read_to_string(upid.log_path(dir.path())).unwrap();
    assert_eq!(log.lines().last(), Some("TASK OK"));
    let ev = follower.poll().unwrap();
    assert!(
        ev.iter()
            .any(|t| t.upid == upid && t.status == TaskStatus::Ok),
        "{ev:?}"
    );

    // A failing task is reported with its error.
    srv.state().fail_next.insert(
        "qmsnapshot".into(),
        "snapshot feature is not available".into(),
    );
    let r = execute(
        &c,
        &policy,
        &PveAction {
            guest: guest(100, GuestKind::Qemu),
            op: PveActionOp::SnapshotCreate {
                name: "pre_fix".into(),
            },
        },
        &fast(),
    )
    .await;
    assert_eq!(r.outcome, ActionOutcome::Completed);
    assert_eq!(
        r.status,
        TaskStatus::Failed("snapshot feature is not available".into())
    );

    // Backup now: remove=0 is sent, the outcome is parsed from the log.
    let r = execute(
        &c,
        &policy,
        &PveAction {
            guest: guest(101, GuestKind::Lxc),
            op: PveActionOp::BackupNow {
                storage: Some("local".into()),
                mode: BackupMode::Snapshot,
            },
        },
        &fast(),
    )
    .await;
    assert_eq!(
        (r.outcome, r.status.clone()),
        (ActionOutcome::Completed, TaskStatus::Ok),
        "{r:?}"
    );
    let sent = srv.state().requests_matching("/vzdump");
    let body = sent[0].body.clone().unwrap();
    assert_eq!(body["remove"], 0);
    assert_eq!(body["vmid"], "101");
    let mut col = Collector::new(CollectorConfig {
        task_dir: Some(dir.path().to_path_buf()),
        ..CollectorConfig::new("pve1")
    });
    let ev = follower.poll().unwrap();
    let task = ev
        .iter()
        .find(|t| t.upid.task_type == "vzdump" && t.status.is_finished())
        .unwrap();
    let out = col.backup_outcomes(None, task).await;
    assert_eq!(out.len(), 1);
    assert!(out[0].ok);
    assert_eq!(out[0].vmid, 101);
    assert_eq!(out[0].size_bytes, Some(1_610_612_736));
    assert_eq!(out[0].duration_s, Some(5));
    assert_eq!(out[0].storage.as_deref(), Some("local"));
    assert!(
        col.backup_outcomes(None, task).await.is_empty(),
        "once per task"
    );
}

#[tokio::test]
async fn ha_managed_guest_action_follows_the_chain() {
    let srv = server().await;
    {
        let mut st = srv.state();
        let g = st.guest_mut(102).unwrap();
        g.status = "stopped".into();
        g.ha_request = "stopped".into();
        g.ha_state = "stopped".into();
    }
    let c = client(&srv, ACTOR);
    let policy = LocalPolicy::default();
    let r = execute(
        &c,
        &policy,
        &PveAction {
            guest: guest(102, GuestKind::Qemu),
            op: PveActionOp::Start,
        },
        &fast(),
    )
    .await;
    assert_eq!(r.outcome, ActionOutcome::Completed, "{r:?}");
    assert_eq!(r.status, TaskStatus::Ok);
    assert_eq!(r.chain.len(), 2, "{r:?}");
    assert_eq!(r.chain[0].task_type, "hastart");
    let worker = r.upid.clone().unwrap();
    assert_eq!(worker.task_type, "qmstart");
    assert_eq!(worker.user, "root@pam");
    assert_eq!(r.chain[1], worker);
    assert_eq!(r.ha_state.as_deref(), Some("started"));
    assert_eq!(srv.state().guest_mut(102).unwrap().status, "running");

    // Migration goes through hamigrate → qmigrate and lands on the target.
    let r = execute(
        &c,
        &policy,
        &PveAction {
            guest: guest(102, GuestKind::Qemu),
            op: PveActionOp::Migrate {
                target: "pve2".into(),
                online: true,
            },
        },
        &fast(),
    )
    .await;
    assert_eq!(
        (r.outcome, r.status.clone()),
        (ActionOutcome::Completed, TaskStatus::Ok),
        "{r:?}"
    );
    assert_eq!(r.chain[0].task_type, "hamigrate");
    assert_eq!(r.upid.as_ref().unwrap().task_type, "qmigrate");
    assert_eq!(srv.state().guest_mut(102).unwrap().node, "pve2");

    // A failing worker is the reported outcome, not the OK request task.
    srv.state().fail_next.insert(
        "qmshutdown".into(),
        "VM quit/powerdown failed - got timeout".into(),
    );
    let mut g = guest(102, GuestKind::Qemu);
    g.node = "pve2".into();
    let r = execute(
        &c,
        &policy,
        &PveAction {
            guest: g,
            op: PveActionOp::Shutdown {
                timeout_s: Some(60),
            },
        },
        &fast(),
    )
    .await;
    assert_eq!(r.chain[0].task_type, "hastop");
    assert_eq!(r.upid.as_ref().unwrap().task_type, "qmshutdown");
    assert_eq!(
        r.status,
        TaskStatus::Failed("VM quit/powerdown failed - got timeout".into())
    );
}

#[tokio::test]
async fn destructive_actions_are_refused_locally_and_never_sent() {
    let srv = server().await;
    let c = client(&srv, ACTOR);
    let policy = LocalPolicy::default();
    for op in [
        PveActionOp::SnapshotRollback {
            name: "before_upgrade".into(),
        },
        PveActionOp::Stop,
    ] {
        let r = execute(
            &c,
            &policy,
            &PveAction {
                guest: guest(100, GuestKind::Qemu),
                op,
            },
            &fast(),
        )
        .await;
        assert_eq!(r.outcome, ActionOutcome::Refused);
        assert!(r.upid.is_none() && r.chain.is_empty());
        assert!(r.message.contains("destructive"), "{}", r.message);
    }
    assert!(
        srv.state().requests.is_empty(),
        "the server saw {:?}",
        srv.state().requests
    );
    assert_eq!(srv.state().guest_mut(100).unwrap().status, "running");
}

#[tokio::test]
async fn wrong_token_gives_a_clear_401_status() {
    let srv = server().await;
    let mut cfg = srv.client_config(MONITOR);
    cfg.token_secret = "deadbeef-0000-4000-8000-000000000000".into();
    let c = PveClient::new(&cfg).unwrap();
    let facts = Collector::new(CollectorConfig::new("pve1")).sweep(&c).await;
    assert_eq!(facts.len(), 1);
    let st = statuses(&facts)[0];
    assert!(!st.reachable);
    assert_eq!(st.problem, PveProblem::Unauthorized);
    assert!(
        st.message.contains("401") && st.message.contains("token"),
        "{}",
        st.message
    );
}

#[tokio::test]
async fn missing_privileges_give_a_403_status_naming_the_privilege() {
    let srv = server().await;
    let facts = Collector::new(CollectorConfig::new("pve1"))
        .sweep(&client(&srv, LIMITED))
        .await;
    let forbidden: Vec<_> = statuses(&facts)
        .into_iter()
        .filter(|s| matches!(s.problem, PveProblem::Forbidden { .. }))
        .collect();
    assert!(!forbidden.is_empty());
    let node = forbidden
        .iter()
        .find(|s| s.endpoint.as_deref() == Some("/nodes/pve1/status"))
        .unwrap();
    assert!(node.reachable);
    assert_eq!(
        node.problem,
        PveProblem::Forbidden {
            path: Some("/nodes/pve1".into()),
            privileges: vec!["Sys.Audit".into()]
        }
    );
    assert!(
        node.message.contains("Sys.Audit on /nodes/pve1"),
        "{}",
        node.message
    );
    // The sweep went on: guests and storage still arrive.
    assert!(facts.iter().any(|f| matches!(f, PveFact::Guest(_))));
    assert!(facts.iter().any(|f| matches!(f, PveFact::Storage(_))));

    // apt needs Sys.Modify: reported once, then no longer asked.
    let c = client(&srv, MONITOR);
    let mut col = Collector::new(CollectorConfig::new("pve1"));
    let apt_before = srv.state().requests_matching("/apt/update").len();
    let first = col.sweep(&c).await;
    assert!(
        statuses(&first)
            .iter()
            .any(|s| s.message.contains("Sys.Modify"))
    );
    let second = col.sweep(&c).await;
    assert_eq!(statuses(&second).len(), 1);
    assert_eq!(statuses(&second)[0].problem, PveProblem::None);
    assert_eq!(
        srv.state().requests_matching("/apt/update").len(),
        apt_before + 1
    );

    // An action without VM.PowerMgmt names it.
    srv.state().tokens.push(TokenSpec::new(
        "wingman@pve!nopower",
        "55555555-5555-4555-8555-555555555555",
        &["VM.Audit", "Sys.Audit"],
    ));
    let r = execute(
        &client(&srv, "wingman@pve!nopower"),
        &LocalPolicy::default(),
        &PveAction {
            guest: guest(100, GuestKind::Qemu),
            op: PveActionOp::Reboot,
        },
        &fast(),
    )
    .await;
    assert_eq!(r.outcome, ActionOutcome::RequestFailed);
    assert!(
        r.message.contains("VM.PowerMgmt on /vms/100"),
        "{}",
        r.message
    );
}

#[tokio::test]
async fn api_down_is_reported_and_the_collector_recovers() {
    let srv = server().await;
    let c = client(&srv, MONITOR);
    let mut col = Collector::new(CollectorConfig::new("pve1"));
    assert!(col.sweep(&c).await.len() > 5);

    srv.set_down(DownMode::Http500);
    let facts = col.sweep(&c).await;
    assert_eq!(facts.len(), 1);
    let st = statuses(&facts)[0];
    assert_eq!((st.reachable, &st.problem), (false, &PveProblem::ApiDown));

    srv.set_down(DownMode::Refuse);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let facts = col.sweep(&c).await;
    assert_eq!(facts.len(), 1);
    let st = statuses(&facts)[0];
    assert_eq!((st.reachable, &st.problem), (false, &PveProblem::ApiDown));
    assert!(st.message.contains("connection refused"), "{}", st.message);

    srv.set_down(DownMode::Up);
    let mut recovered = false;
    for _ in 0..50 {
        let facts = col.sweep(&c).await;
        if facts.iter().any(|f| matches!(f, PveFact::Node(_))) {
            let s = statuses(&facts);
            assert!(s.iter().all(|s| s.reachable));
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered);
}

#[tokio::test]
async fn certificate_pinning_refuses_a_wrong_fingerprint() {
    let srv = server().await;
    let mut cfg = srv.client_config(MONITOR);
    cfg.fingerprint = [0x42; 32];
    let c = PveClient::new(&cfg).unwrap();
    let e = c.version().await.unwrap_err();
    let PveError::CertificateMismatch { presented } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(
        presented.as_deref(),
        Some(format_fingerprint(&srv.fingerprint).as_str())
    );
    let facts = Collector::new(CollectorConfig::new("pve1")).sweep(&c).await;
    assert!(matches!(
        statuses(&facts)[0].problem,
        PveProblem::CertificateMismatch { .. }
    ));
    assert!(srv.state().requests.is_empty(), "no request got through");
    // The right pin works.
    assert!(client(&srv, MONITOR).version().await.is_ok());
}

#[tokio::test]
async fn api_task_fallback_reports_tasks_and_backups() {
    let srv = server().await;
    let actor = client(&srv, ACTOR);
    let c = client(&srv, MONITOR);
    let mut col = Collector::new(CollectorConfig {
        tasks_via_api: true,
        ..CollectorConfig::new("pve1")
    });
    let _ = col.sweep(&c).await;
    srv.state().fail_next.insert("vzdump".into(), String::new());
    let r = execute(
        &actor,
        &LocalPolicy::default(),
        &PveAction {
            guest: guest(100, GuestKind::Qemu),
            op: PveActionOp::BackupNow {
                storage: None,
                mode: BackupMode::Snapshot,
            },
        },
        &fast(),
    )
    .await;
    assert!(matches!(r.status, TaskStatus::Failed(_)), "{r:?}");
    let facts = col.sweep(&c).await;
    let task = facts
        .iter()
        .find_map(|f| match f {
            PveFact::Task(t) if t.upid.task_type == "vzdump" => Some(t),
            _ => None,
        })
        .unwrap();
    let TaskStatus::Failed(text) = &task.status else {
        panic!("{task:?}")
    };
    assert!(text.starts_with("job errors"), "{text}");
    assert!(text.contains("Input/output error"), "{text}");
    let backup = facts
        .iter()
        .find_map(|f| match f {
            PveFact::Backup(b) => Some(b),
            _ => None,
        })
        .unwrap();
    assert_eq!((backup.vmid, backup.ok), (100, false));
    assert!(
        backup
            .error_summary
            .as_deref()
            .unwrap()
            .contains("Input/output error")
    );
    // Reported once.
    let again = col.sweep(&c).await;
    assert!(
        !again
            .iter()
            .any(|f| matches!(f, PveFact::Task(_) | PveFact::Backup(_)))
    );
}
