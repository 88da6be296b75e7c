//! The log pipeline end to end: lines written on the agent's node arrive at
//! the hub as template counts; secrets and raw lines are found nowhere in the
//! hub's database; positions resume across restarts without loss or double
//! counting; the journal source follows a real journal through `journalctl`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wingman_agent::config::FileSourceConfig;

use crate::common::{TestAgent, TestHub, eventually};

const CANARY: &str = "CANARY-s3cr3t-9f8e7d6c5b4a";

fn append(path: &Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    f.sync_all().unwrap();
}

async fn template_count(th: &TestHub, agent: &str, needle: &str) -> i64 {
    th.hub
        .store
        .log_templates(agent, 1000)
        .await
        .unwrap()
        .iter()
        .filter(|t| t.template.contains(needle))
        .map(|t| t.count)
        .sum()
}

/// Every byte the hub persisted: the SQLite file and its WAL, plus every
/// table's rows rendered as text.
async fn hub_storage_dump(data_dir: &Path) -> Vec<u8> {
    use sqlx::{Column, Connection, Row, TypeInfo};
    let mut bytes = Vec::new();
    for name in ["wingman.db", "wingman.db-wal"] {
        if let Ok(b) = std::fs::read(data_dir.join(name)) {
            bytes.extend(b);
        }
    }
    let url = format!("sqlite://{}", data_dir.join("wingman.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let tables: Vec<String> = sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table'")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
    for t in tables {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM \"{t}\"")))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        for r in rows {
            for (i, c) in r.columns().iter().enumerate() {
                let v = match c.type_info().name() {
                    "BLOB" => r.try_get::<Vec<u8>, _>(i).unwrap_or_default(),
                    _ => r
                        .try_get::<String, _>(i)
                        .map(String::into_bytes)
                        .unwrap_or_default(),
                };
                bytes.extend(v);
                bytes.push(b'\n');
            }
        }
    }
    bytes
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_lines_become_template_counts_and_secrets_never_reach_the_hub() {
    let mut th = TestHub::start(|_| {}).await;
    let dir = th.dir.path().join("agent");
    let id = th.enroll(&dir).await;
    let agent_id = id.enrollment.agent_id.clone();
    let log: PathBuf = th.dir.path().join("app.log");
    let with_file = |cfg: &mut wingman_agent::AgentConfig| {
        cfg.logs.files = vec![FileSourceConfig {
            path: th.dir.path().join("app.log"),
            examples: false,
            raw: true,
        }];
    };
    let mut agent = TestAgent::start_with(&dir, with_file);
    eventually(Duration::from_secs(5), "agent connected", || {
        let th = &th;
        async move { (th.hub.registry.connected() == 1).then_some(()) }
    })
    .await;

    // The file does not exist yet: it is read from its start when it appears.
    let raw_line = "RAWLINE job 7f3e9d2a1b44 finished for user 48213 from 10.77.3.9 port 5522";
    let mut lines: Vec<String> = (0..20)
        .map(|i| {
            format!("ERROR upstream timed out after {i}ms while connecting to 10.0.0.{i}:8080")
        })
        .collect();
    lines.push(format!("db connect user=app password={CANARY} host=db1"));
    lines.push(format!("Authorization: Bearer {CANARY}"));
    lines.push(raw_line.to_string());
    append(&log, &lines);

    eventually(Duration::from_secs(5), "template counts at the hub", || {
        let (th, a) = (&th, &agent_id);
        async move { (template_count(th, a, "upstream timed out").await == 20).then_some(()) }
    })
    .await;
    let rows = th.hub.store.log_templates(&agent_id, 100).await.unwrap();
    let timeout_row = rows
        .iter()
        .find(|r| r.template.contains("upstream timed out"))
        .unwrap();
    assert_eq!(timeout_row.severity, 3, "ERROR detected");
    assert_eq!(timeout_row.source_kind, "file");
    assert!(rows.iter().any(|r| r.template.contains("RAWLINE")));
    eventually(Duration::from_secs(5), "all three other templates", || {
        let (th, a) = (&th, &agent_id);
        async move {
            let n = th.hub.store.log_templates(a, 100).await.ok()?.len();
            (n >= 4).then_some(())
        }
    })
    .await;

    // The API serves the counts.
    let key = th.api_key().await;
    let v: serde_json::Value = crate::common::http_client()
        .get(th.url(&format!("/api/v1/nodes/{agent_id}/logs")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v["templates"].as_array().unwrap().len() >= 4);
    let tid = timeout_row.template_id.clone();
    let v: serde_json::Value = crate::common::http_client()
        .get(th.url(&format!("/api/v1/templates/{tid}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["total"], 20);

    // Restart with lines written while the agent is down: no loss, no double count.
    agent.stop().await;
    let more: Vec<String> = (0..7)
        .map(|i| {
            format!(
                "ERROR upstream timed out after {}ms while connecting to 10.0.1.{i}:8080",
                100 + i
            )
        })
        .collect();
    append(&log, &more);
    let mut agent = TestAgent::start_with(&dir, with_file);
    eventually(Duration::from_secs(8), "counts after restart", || {
        let (th, a) = (&th, &agent_id);
        async move { (template_count(th, a, "upstream timed out").await == 27).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        template_count(&th, &agent_id, "upstream timed out").await,
        27,
        "no double count"
    );
    agent.stop().await;

    // The raw line stays on the node, in the opt-in local store.
    let kept = wingman_agent::logs::raw::RawStore::read(&dir.join("raw"), 0, None).unwrap();
    assert!(kept.iter().any(|r| r.line == raw_line));

    // Nothing the hub stored contains the canary or the raw line's values.
    th.stop().await;
    let dump = hub_storage_dump(&th.dir.path().join("hub")).await;
    assert!(dump.len() > 10_000, "dump too small to be meaningful");
    for needle in [
        CANARY,
        raw_line,
        "7f3e9d2a1b44",
        "48213",
        "10.77.3.9",
        "10.0.0.7",
    ] {
        assert!(!contains(&dump, needle), "hub storage contains {needle:?}");
    }
}

/// Writes journal entries (export format) into a journal file in `dir` with
/// systemd-journal-remote, as journald would.
fn write_journal(dir: &Path, entries: &[(&str, u8, String)], start_us: u64) -> bool {
    let remote = [
        "/lib/systemd/systemd-journal-remote",
        "/usr/lib/systemd/systemd-journal-remote",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    let Some(remote) = remote else { return false };
    let mut export = Vec::new();
    for (i, (unit, prio, msg)) in entries.iter().enumerate() {
        let ts = start_us + i as u64 * 1000;
        export.extend_from_slice(
            format!(
                "__REALTIME_TIMESTAMP={ts}\n__MONOTONIC_TIMESTAMP={ts}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n\
                 _MACHINE_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=node\n_SYSTEMD_UNIT={unit}\n\
                 SYSLOG_IDENTIFIER=test\nPRIORITY={prio}\nMESSAGE={msg}\n\n"
            )
            .as_bytes(),
        );
    }
    let mut child = std::process::Command::new(remote)
        .arg(format!("--output={}", dir.join("remote.journal").display()))
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&export).unwrap();
    child.wait().unwrap().success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_entries_are_summarised_and_the_cursor_resumes() {
    let jdir = tempfile::tempdir().unwrap();
    let now_us = wingman_agent::now_ms() as u64 * 1000;
    let first: Vec<(&str, u8, String)> = (0..12)
        .map(|i| {
            (
                "nginx.service",
                3u8,
                format!("upstream prematurely closed connection {i} while reading response header"),
            )
        })
        .chain((0..3).map(|i| {
            (
                "sshd.service",
                6u8,
                format!("Accepted publickey for root from 192.168.1.{i} port 22{i}"),
            )
        }))
        .collect();
    if !write_journal(jdir.path(), &first, now_us) {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "systemd-journal-remote is required in CI (apt-get install systemd-journal-remote)"
            );
        }
        eprintln!("journal test skipped: systemd-journal-remote is not installed");
        return;
    }
    let mut th = TestHub::start(|_| {}).await;
    let dir = th.dir.path().join("agent");
    let id = th.enroll(&dir).await;
    let agent_id = id.enrollment.agent_id.clone();
    let jpath = jdir.path().to_path_buf();
    let with_journal = move |cfg: &mut wingman_agent::AgentConfig| {
        cfg.logs.journal.enabled = true;
        cfg.logs.journal.directory = Some(jpath.clone());
    };
    // With no saved cursor the journal is followed from its end: the first
    // 15 entries are history and are not summarised.
    let mut agent = TestAgent::start_with(&dir, with_journal.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second: Vec<(&str, u8, String)> = (0..5)
        .map(|i| {
            (
                "nginx.service",
                3u8,
                format!(
                    "upstream prematurely closed connection {} while reading response header",
                    100 + i
                ),
            )
        })
        .collect();
    assert!(write_journal(jdir.path(), &second, now_us + 1_000_000));
    eventually(
        Duration::from_secs(8),
        "journal template at the hub",
        || {
            let (th, a) = (&th, &agent_id);
            async move { (template_count(th, a, "prematurely closed").await == 5).then_some(()) }
        },
    )
    .await;
    let rows = th.hub.store.log_templates(&agent_id, 100).await.unwrap();
    let row = rows
        .iter()
        .find(|r| r.template.contains("prematurely closed"))
        .unwrap();
    assert_eq!(
        (
            row.source_kind.as_str(),
            row.source_name.as_str(),
            row.severity
        ),
        ("journal", "nginx.service", 3)
    );
    assert!(
        !rows
            .iter()
            .any(|r| r.template.contains("Accepted publickey")),
        "history was skipped"
    );

    // Stop, write while stopped, restart: resumes after the saved cursor.
    agent.stop().await;
    let third: Vec<(&str, u8, String)> = (0..4)
        .map(|i| {
            (
                "nginx.service",
                3u8,
                format!(
                    "upstream prematurely closed connection {} while reading response header",
                    200 + i
                ),
            )
        })
        .collect();
    assert!(write_journal(jdir.path(), &third, now_us + 2_000_000));
    let mut agent = TestAgent::start_with(&dir, with_journal);
    eventually(Duration::from_secs(8), "resumed journal counts", || {
        let (th, a) = (&th, &agent_id);
        async move { (template_count(th, a, "prematurely closed").await == 9).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        template_count(&th, &agent_id, "prematurely closed").await,
        9,
        "no double count"
    );
    agent.stop().await;
    th.stop().await;
}
