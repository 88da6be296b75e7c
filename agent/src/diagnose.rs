//! Read-only diagnostics for approved plan steps ([`Diagnostic`]): a
//! container's state, a container's recent logs, a Proxmox VE task log, a
//! guest's configuration, a systemd unit's state. The answer is a short
//! summary: states and counts; log lines become masked templates with
//! counts (the same masker and redactor as the log pipeline), never raw
//! lines; configuration values pass the redactor.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bollard::query_parameters::{InspectContainerOptions, LogsOptions};
use futures_util::StreamExt as _;
use wingman_protocol::docker::ActionResult;
use wingman_protocol::logs::{MaskedTemplate, RedactConfig, Redactor};
use wingman_protocol::{Diagnostic, HostKind};

use crate::config::AgentConfig;

/// Longest answer, characters.
pub const MAX_DETAIL: usize = 4_000;
/// Most log lines read for one diagnostic.
pub const MAX_LINES: usize = 5_000;
/// Most templates listed.
pub const MAX_TEMPLATES: usize = 25;

/// The redactor the log pipeline uses, from `[logs]`.
pub fn redactor(cfg: &AgentConfig) -> Redactor {
    Redactor::new(&RedactConfig {
        disabled_rules: cfg.logs.disabled_redaction_rules.clone(),
        extra_secret_keys: cfg.logs.extra_secret_keys.clone(),
        generic_entropy: cfg.logs.redact_high_entropy,
    })
}

/// Lines as masked templates with counts, most frequent first.
pub fn summarize_lines<I, S>(lines: I, redactor: &Redactor) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut n = 0u64;
    for line in lines.into_iter().take(MAX_LINES) {
        let line = line.as_ref().trim_end();
        if line.is_empty() {
            continue;
        }
        n += 1;
        let (t, _) = MaskedTemplate::mask(line, redactor);
        *counts.entry(t.as_str().to_owned()).or_default() += 1;
    }
    let mut rows: Vec<(String, u64)> = counts.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut out = format!("{n} lines, {} templates", rows.len());
    for (t, c) in rows.iter().take(MAX_TEMPLATES) {
        out.push_str(&format!("\n{c} × {t}"));
    }
    if rows.len() > MAX_TEMPLATES {
        out.push_str(&format!(
            "\n… {} more templates",
            rows.len() - MAX_TEMPLATES
        ));
    }
    cap(out)
}

fn cap(mut s: String) -> String {
    if s.chars().count() > MAX_DETAIL {
        s = s.chars().take(MAX_DETAIL).collect();
        s.push('…');
    }
    s
}

/// A systemd unit name: letters, digits and `@._:-`, with a unit suffix.
pub fn valid_unit(unit: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        ".service", ".socket", ".timer", ".mount", ".target", ".path", ".slice", ".scope",
    ];
    (1..=200).contains(&unit.len())
        && !unit.starts_with('-')
        && unit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@._:-\\".contains(c))
        && SUFFIXES.iter().any(|s| unit.ends_with(s))
}

/// The properties kept from `systemctl show`.
const UNIT_PROPS: &[&str] = &[
    "Id",
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "NRestarts",
    "ExecMainStatus",
    "ActiveEnterTimestamp",
    "UnitFileState",
];

/// The kept properties of `systemctl show` output, in a fixed order.
pub fn parse_unit_show(text: &str) -> String {
    let mut props: BTreeMap<&str, &str> = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=')
            && UNIT_PROPS.contains(&k)
        {
            props.insert(k, v.trim());
        }
    }
    UNIT_PROPS
        .iter()
        .filter_map(|k| props.get(k).map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn answer(started: Instant, ok: bool, refused: bool, detail: String) -> ActionResult {
    ActionResult {
        ok,
        refused,
        detail: cap(detail),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// Runs one diagnostic on this node.
pub async fn run(cfg: &AgentConfig, kind: HostKind, d: &Diagnostic) -> ActionResult {
    let started = Instant::now();
    let redactor = redactor(cfg);
    let refuse = |why: &str| answer(started, false, true, format!("refused: {why}"));
    match d {
        Diagnostic::DockerInspect { container } | Diagnostic::DockerLogs { container, .. } => {
            if !cfg.docker.enabled {
                return refuse("the Docker integration is disabled on this node");
            }
            let engine =
                match crate::docker::connect(cfg.docker.socket.as_deref(), Duration::from_secs(10))
                    .await
                {
                    Ok(e) => e,
                    Err(e) => return answer(started, false, false, e.to_string()),
                };
            let r = match d {
                Diagnostic::DockerLogs { since_s, .. } => {
                    docker_logs(&engine.docker, container, *since_s, &redactor).await
                }
                _ => docker_inspect(&engine.docker, container, &redactor).await,
            };
            match r {
                Ok(detail) => answer(started, true, false, detail),
                Err(e) => answer(started, false, false, e),
            }
        }
        Diagnostic::PveTaskLog { .. } | Diagnostic::PveGuestConfig { .. } => {
            if !cfg.proxmox.enabled || kind != HostKind::Proxmox {
                return refuse("the Proxmox VE integration is not active on this node");
            }
            let client = match crate::link::pve_client(&cfg.proxmox) {
                Ok(c) => c,
                Err(e) => return answer(started, false, false, e),
            };
            let r = match d {
                Diagnostic::PveTaskLog { upid } => {
                    match wingman_protocol::pve::upid::parse_upid(upid) {
                        Ok(u) => client
                            .task_log_tail(&u, 500)
                            .await
                            .map(|lines| summarize_lines(lines, &redactor))
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(format!("bad task id: {e}")),
                    }
                }
                Diagnostic::PveGuestConfig { guest } => {
                    let path = format!(
                        "/nodes/{}/{}/{}/config",
                        crate::pve::client::enc(&guest.node),
                        guest.kind.as_str(),
                        guest.vmid
                    );
                    client
                        .get::<serde_json::Value>(&path, &[])
                        .await
                        .map(|v| guest_config(&v, &redactor))
                        .map_err(|e| e.to_string())
                }
                _ => Err("unreachable".into()),
            };
            match r {
                Ok(detail) => answer(started, true, false, detail),
                Err(e) => answer(started, false, false, e),
            }
        }
        Diagnostic::UnitStatus { unit } => {
            if !valid_unit(unit) {
                return refuse(&format!("{unit:?} is not a systemd unit name"));
            }
            let out = tokio::time::timeout(
                Duration::from_secs(10),
                tokio::process::Command::new("systemctl")
                    .args(["show", "--no-pager"])
                    .arg(format!("--property={}", UNIT_PROPS.join(",")))
                    .arg("--")
                    .arg(unit)
                    .kill_on_drop(true)
                    .output(),
            )
            .await;
            match out {
                Ok(Ok(o)) if o.status.success() => {
                    let text = String::from_utf8_lossy(&o.stdout);
                    answer(started, true, false, parse_unit_show(&text))
                }
                Ok(Ok(o)) => {
                    let err = String::from_utf8_lossy(&o.stderr);
                    answer(
                        started,
                        false,
                        false,
                        redactor.redact(err.trim()).text.into_owned(),
                    )
                }
                Ok(Err(e)) => answer(started, false, false, format!("cannot run systemctl: {e}")),
                Err(_) => answer(
                    started,
                    false,
                    false,
                    "systemctl did not answer in 10 s".into(),
                ),
            }
        }
    }
}

async fn docker_inspect(
    docker: &bollard::Docker,
    container: &str,
    redactor: &Redactor,
) -> Result<String, String> {
    let i = docker
        .inspect_container(container, None::<InspectContainerOptions>)
        .await
        .map_err(|e| format!("cannot inspect {container}: {e}"))?;
    let lower = |v: String| v.to_lowercase();
    let st = i.state.unwrap_or_default();
    let mut parts = vec![
        format!(
            "state={}",
            st.status
                .map_or_else(|| "?".into(), |s| lower(format!("{s:?}")))
        ),
        format!(
            "health={}",
            st.health
                .and_then(|h| h.status)
                .map_or_else(|| "none".into(), |s| lower(format!("{s:?}")))
        ),
        format!("restarts={}", i.restart_count.unwrap_or(0)),
        format!("exit_code={}", st.exit_code.unwrap_or(0)),
        format!("oom_killed={}", st.oom_killed.unwrap_or(false)),
    ];
    if let Some(t) = st.started_at {
        parts.push(format!("started_at={t}"));
    }
    if let Some(t) = st.finished_at {
        parts.push(format!("finished_at={t}"));
    }
    if let Some(img) = i.config.and_then(|c| c.image) {
        parts.push(format!("image={img}"));
    }
    if let Some(h) = i.host_config {
        if let Some(p) = h.restart_policy.and_then(|p| p.name) {
            parts.push(format!("restart_policy={}", lower(format!("{p:?}"))));
        }
        if let Some(m) = h.memory.filter(|m| *m > 0) {
            parts.push(format!("memory_limit={m}"));
        }
    }
    if let Some(e) = st.error.filter(|e| !e.is_empty()) {
        parts.push(format!("error={}", redactor.redact(&e).text));
    }
    Ok(parts.join(" "))
}

async fn docker_logs(
    docker: &bollard::Docker,
    container: &str,
    since_s: u32,
    redactor: &Redactor,
) -> Result<String, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let since = i32::try_from(now.saturating_sub(u64::from(since_s))).unwrap_or(0);
    let opts = LogsOptions {
        follow: false,
        stdout: true,
        stderr: true,
        since,
        until: 0,
        timestamps: false,
        tail: MAX_LINES.to_string(),
    };
    let mut stream = docker.logs(container, Some(opts));
    let mut lines: Vec<String> = Vec::new();
    let mut partial = String::new();
    while let Some(item) = stream.next().await {
        let out = item.map_err(|e| format!("cannot read the logs of {container}: {e}"))?;
        let bytes = out.into_bytes();
        partial.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(pos) = partial.find('\n') {
            let line: String = partial.drain(..=pos).collect();
            lines.push(line);
        }
        if lines.len() >= MAX_LINES {
            break;
        }
    }
    if !partial.is_empty() {
        lines.push(partial);
    }
    Ok(format!(
        "last {since_s} s: {}",
        summarize_lines(lines, redactor)
    ))
}

/// A guest's configuration as `key=value` lines, sorted, each through the
/// redactor (passwords, keys and tokens never leave the node).
pub fn guest_config(v: &serde_json::Value, redactor: &Redactor) -> String {
    let Some(map) = v.as_object() else {
        return "no configuration".into();
    };
    let secret = |k: &str| {
        let k = k.to_lowercase();
        ["password", "secret", "token", "cipassword"]
            .iter()
            .any(|s| k.contains(s))
    };
    let mut keys: Vec<&String> = map.keys().filter(|k| k.as_str() != "digest").collect();
    keys.sort();
    let lines: Vec<String> = keys
        .into_iter()
        .map(|k| {
            let v = match &map[k] {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if secret(k) {
                format!("{k}=<redacted>")
            } else {
                redactor.redact(&format!("{k}={v}")).text.into_owned()
            }
        })
        .collect();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn r() -> Redactor {
        Redactor::new(&RedactConfig::default())
    }

    #[test]
    fn lines_become_masked_templates_with_counts() {
        let lines = (0..30).map(|i| format!("request {i} served in 4{i}ms for 10.1.2.{i}"));
        let lines: Vec<String> = lines
            .chain(["db password=hunter2 rejected".to_owned(), String::new()])
            .collect();
        let s = summarize_lines(&lines, &r());
        assert!(s.starts_with("31 lines, 2 templates"), "{s}");
        assert!(s.contains("30 × "), "{s}");
        assert!(!s.contains("10.1.2."), "raw values stay on the node: {s}");
        assert!(!s.contains("hunter2"), "secrets are redacted: {s}");
        assert!(s.lines().nth(1).unwrap().starts_with("30 × request"), "{s}");
    }

    #[test]
    fn unit_names_and_systemctl_output() {
        for ok in [
            "ssh.service",
            "pve-cluster.service",
            "getty@tty1.service",
            "var-lib.mount",
        ] {
            assert!(valid_unit(ok), "{ok}");
        }
        for bad in [
            "",
            "ssh",
            "-x.service",
            "a b.service",
            "x;rm.service",
            "../x.service",
        ] {
            assert!(!valid_unit(bad), "{bad}");
        }
        let out = "Id=ssh.service\nLoadState=loaded\nActiveState=failed\nSubState=failed\nResult=exit-code\nNRestarts=5\nExecMainStatus=255\nEnvironment=SECRET=x\n";
        assert_eq!(
            parse_unit_show(out),
            "Id=ssh.service LoadState=loaded ActiveState=failed SubState=failed Result=exit-code NRestarts=5 ExecMainStatus=255"
        );
    }

    #[test]
    fn guest_config_is_sorted_and_redacted() {
        let v = serde_json::json!({
            "memory": 2048, "name": "dns", "cipassword": "hunter2",
            "digest": "abc", "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0"
        });
        let s = guest_config(&v, &r());
        assert_eq!(s.lines().next(), Some("cipassword=<redacted>"));
        assert!(s.contains("memory=2048") && s.contains("name=dns"));
        assert!(!s.contains("hunter2") && !s.contains("digest"));
    }
}
