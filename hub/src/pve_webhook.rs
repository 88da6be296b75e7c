//! The receiver for Proxmox VE notifications (PVE 8.3+ webhook target,
//! `integrations.md` §2): parsing and checking the body PVE renders from the
//! documented template, turning it into a [`PveNotification`] fact (free text
//! redacted and masked into templates: a backup notification's message
//! carries the task log), the dedup key, and the engine signals it implies.
//!
//! The body template to paste into PVE (Datacenter → Notifications → Add →
//! Webhook, method POST, header `Content-Type: application/json`, header
//! `Authorization: Bearer {{ secrets.hubtoken }}`, secret `hubtoken`):
//!
//! ```text
//! {"source":"pve","title":"{{ escape title }}","message":"{{ escape message }}","severity":"{{ severity }}","timestamp":{{ timestamp }},"fields":{{ json fields }}}
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use wingman_protocol::logs::{MaskedTemplate, Redactor};
use wingman_protocol::pve::PveNotification;

use crate::engine::{Signal, SignalBody};

/// The template above, for the settings page and docs.
pub const BODY_TEMPLATE: &str = r#"{"source":"pve","title":"{{ escape title }}","message":"{{ escape message }}","severity":"{{ severity }}","timestamp":{{ timestamp }},"fields":{{ json fields }}}"#;

/// Longest title kept, characters.
const MAX_TITLE: usize = 300;
/// Most problem templates kept per notification.
const MAX_PROBLEMS: usize = 8;
/// Words that make a message line a problem line.
const PROBLEM_WORDS: &[&str] = &[
    "error",
    "fail",
    "failed",
    "unable",
    "cannot",
    "can't",
    "timeout",
    "timed out",
    "abort",
    "no space",
    "i/o",
    "fenc",
    "lost",
];

/// The JSON the template renders.
#[derive(Debug, Deserialize)]
struct Body {
    #[serde(default)]
    source: Option<String>,
    title: String,
    #[serde(default)]
    message: String,
    severity: String,
    timestamp: i64,
    #[serde(default)]
    fields: BTreeMap<String, serde_json::Value>,
}

/// A parsed notification and its dedup key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The fact.
    pub fact: PveNotification,
    /// `(hostname, type, job-id, timestamp, title)`, joined.
    pub dedup_key: String,
}

fn field(fields: &BTreeMap<String, serde_json::Value>, key: &str) -> Option<String> {
    match fields.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Parses a webhook body. The error is a sentence for the sender.
pub fn parse(body: &[u8], redactor: &Redactor) -> Result<Received, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
    let b: Body = serde_json::from_str(text).map_err(|e| {
        format!("the body is not the documented JSON template ({e}); see the PVE webhook setup in the README")
    })?;
    if let Some(src) = &b.source
        && src != "pve"
    {
        return Err(format!("source must be \"pve\", not \"{}\"", clip(src, 40)));
    }
    let severity = b.severity.trim().to_ascii_lowercase();
    if !["info", "notice", "warning", "error", "unknown"].contains(&severity.as_str()) {
        return Err("severity must be one of info, notice, warning, error, unknown".into());
    }
    // PVE sends seconds; anything beyond year 3000 is not a timestamp.
    if !(0..=32_503_680_000).contains(&b.timestamp) {
        return Err("timestamp must be Unix seconds".into());
    }
    let node = field(&b.fields, "hostname").unwrap_or_default();
    let valid_node = !node.is_empty()
        && node.len() <= 63
        && node
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.');
    let node = if valid_node { node } else { "unknown".into() };
    let kind = clip(
        &field(&b.fields, "type").unwrap_or_else(|| "unknown".into()),
        40,
    );
    let job_id = field(&b.fields, "job-id").map(|j| clip(&j, 80));
    let title = clip(&redactor.redact(b.title.trim()).text, MAX_TITLE);
    let mut problems: Vec<(MaskedTemplate, u32)> = Vec::new();
    let mut lines = 0u32;
    for line in b.message.lines() {
        lines = lines.saturating_add(1);
        let lower = line.to_ascii_lowercase();
        if !PROBLEM_WORDS.iter().any(|w| lower.contains(w)) {
            continue;
        }
        let line = line.trim();
        let (template, _) = MaskedTemplate::mask(line.get(..1024).unwrap_or(line), redactor);
        if let Some(i) = problems.iter().position(|(t, _)| *t == template) {
            problems[i].1 = problems[i].1.saturating_add(1);
        } else if problems.len() < MAX_PROBLEMS {
            problems.push((template, 1));
        }
    }
    let dedup_key = format!(
        "{node}\u{1f}{kind}\u{1f}{}\u{1f}{}\u{1f}{title}",
        job_id.as_deref().unwrap_or(""),
        b.timestamp
    );
    Ok(Received {
        fact: PveNotification {
            node,
            kind,
            severity,
            title,
            job_id,
            at_ms: b.timestamp.saturating_mul(1000),
            problems,
            message_lines: lines,
        },
        dedup_key,
    })
}

/// The engine signals a notification implies: a failed backup or
/// replication job, and HA fencing (whose `hostname` is the fenced node).
/// They are timed at `received_ms` (the hub's clock), not PVE's.
pub fn signals(n: &PveNotification, id: i64, received_ms: i64) -> Vec<Signal> {
    let failed = n.severity == "error";
    let status = n
        .problems
        .first()
        .map(|(t, _)| t.as_str().to_string())
        .unwrap_or_else(|| n.title.clone());
    match n.kind.as_str() {
        "vzdump" | "replication" if failed => vec![Signal::new(
            received_ms,
            SignalBody::TaskFinished {
                node: n.node.clone(),
                upid: format!("pve-notification:{id}"),
                task_type: n.kind.clone(),
                guest_id: None,
                ok: false,
                status_text: status,
            },
        )],
        "fencing" => vec![Signal::new(
            received_ms,
            SignalBody::HaFencing {
                node: n.node.clone(),
                fenced_node: n.node.clone(),
            },
        )],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wingman_protocol::logs::RedactConfig;

    fn redactor() -> Redactor {
        Redactor::new(&RedactConfig::default())
    }

    #[test]
    fn vzdump_failure_is_parsed_masked_and_signalled() {
        let body = serde_json::json!({
            "source": "pve",
            "title": "vzdump backup status (pve1.lan): backup failed",
            "message": "Details\n=======\nVMID Name Status\n101 web err\n\nLogs\n====\nINFO: starting new backup job\nERROR: Backup of VM 101 failed - no space left on device (password=hunter22)\nERROR: Backup of VM 102 failed - no space left on device (password=hunter22)\n",
            "severity": "error",
            "timestamp": 1_764_000_000,
            "fields": {"type": "vzdump", "hostname": "pve1", "job-id": "backup-daily"}
        });
        let r = parse(body.to_string().as_bytes(), &redactor()).unwrap();
        assert_eq!(r.fact.node, "pve1");
        assert_eq!(r.fact.kind, "vzdump");
        assert_eq!(r.fact.job_id.as_deref(), Some("backup-daily"));
        assert_eq!(r.fact.at_ms, 1_764_000_000_000);
        assert_eq!(r.fact.problems.len(), 1, "{:?}", r.fact.problems);
        assert_eq!(r.fact.problems[0].1, 2);
        let all = format!("{:?}", r.fact);
        assert!(!all.contains("hunter22"), "{all}");
        let s = signals(&r.fact, 7, 0);
        assert_eq!(s.len(), 1);
        assert!(
            matches!(&s[0].body, SignalBody::TaskFinished { ok: false, task_type, .. } if task_type == "vzdump")
        );
    }

    #[test]
    fn fencing_names_the_fenced_node_and_bad_bodies_are_refused() {
        let body = br#"{"title":"FENCE: Try to fence node 'pve2'","message":"","severity":"error","timestamp":1764000000,"fields":{"type":"fencing","hostname":"pve2"}}"#;
        let r = parse(body, &redactor()).unwrap();
        let s = signals(&r.fact, 1, 0);
        assert!(
            matches!(&s[0].body, SignalBody::HaFencing { fenced_node, .. } if fenced_node == "pve2")
        );
        for bad in [
            &b"not json"[..],
            br#"{"title":"x","severity":"loud","timestamp":1,"fields":{}}"#,
            br#"{"title":"x","severity":"info","timestamp":-5,"fields":{}}"#,
            br#"{"source":"gotify","title":"x","severity":"info","timestamp":1}"#,
            &[0xff, 0xfe][..],
        ] {
            assert!(parse(bad, &redactor()).is_err());
        }
        // Package updates are stored but open nothing.
        let upd = br#"{"title":"New software packages available (pve1)","message":"","severity":"info","timestamp":1764000000,"fields":{"type":"package-updates","hostname":"pve1"}}"#;
        assert!(signals(&parse(upd, &redactor()).unwrap().fact, 2, 0).is_empty());
    }
}
