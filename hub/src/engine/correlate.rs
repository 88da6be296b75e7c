//! Causal rules: which detector can explain which, and the likely cause of an
//! incident.
//!
//! A candidate cause explains an effect when the pair is in [`explains`] and
//! both are on the same node (or both are cluster-level findings). The likely
//! cause is the candidate that explains the most other conditions; ties go to
//! the more fundamental detector ([`cause_rank`]), then the earlier one. When
//! nothing explains anything, the first condition is the likely cause.

use super::model::{Detector, Subject};

/// A condition as seen by the causal rules.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CondInfo<'a> {
    /// Engine-internal condition id (creation order).
    pub(crate) id: u64,
    pub(crate) detector: Detector,
    pub(crate) subject: &'a Subject,
    pub(crate) since_ms: i64,
}

/// The outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cause {
    /// The cause condition.
    pub(crate) cond: u64,
    /// `storage full on pve1:/var/lib/vz`.
    pub(crate) text: String,
    /// Cause detector, then the detectors it explains in order of
    /// appearance.
    pub(crate) chain: Vec<Detector>,
}

/// Lower is more fundamental.
pub(crate) fn cause_rank(d: Detector) -> u8 {
    match d {
        Detector::NodeSilent => 0,
        Detector::QuorumLost => 1,
        Detector::HaFencing => 2,
        Detector::SmartFailing => 3,
        Detector::ZfsDegraded => 4,
        Detector::StorageFull => 5,
        Detector::StorageFilling => 6,
        Detector::ResourcePressure => 7,
        Detector::OomKill => 8,
        Detector::TimeDrift => 9,
        _ => 10,
    }
}

/// Can `cause` (on `cs`) explain `effect`?
pub(crate) fn explains(cause: Detector, cs: &Subject, effect: Detector) -> bool {
    use Detector::*;
    match cause {
        NodeSilent => matches!(
            effect,
            GuestCrashed
                | ContainerCrashLoop
                | ContainerUnhealthy
                | ServiceFailing
                | BackupFailed
                | TaskFailed
                | HaFencing
                | QuorumLost
                | LogErrorBurst
        ),
        QuorumLost => matches!(
            effect,
            HaFencing | GuestCrashed | BackupFailed | TaskFailed | ServiceFailing | LogErrorBurst
        ),
        HaFencing => matches!(
            effect,
            GuestCrashed | TaskFailed | BackupFailed | ServiceFailing
        ),
        SmartFailing => matches!(
            effect,
            ZfsDegraded | LogErrorBurst | BackupFailed | TaskFailed | GuestCrashed | ServiceFailing
        ),
        ZfsDegraded => matches!(
            effect,
            LogErrorBurst | BackupFailed | TaskFailed | GuestCrashed | ServiceFailing
        ),
        StorageFull | StorageFilling => matches!(
            effect,
            BackupFailed
                | TaskFailed
                | GuestCrashed
                | ServiceFailing
                | LogErrorBurst
                | ContainerCrashLoop
                | ContainerUnhealthy
        ),
        ResourcePressure => {
            let memory = matches!(cs, Subject::Resource { resource, .. } if resource == "memory");
            if memory {
                matches!(
                    effect,
                    OomKill
                        | ServiceFailing
                        | ContainerCrashLoop
                        | ContainerUnhealthy
                        | GuestCrashed
                )
            } else {
                matches!(
                    effect,
                    TaskFailed | BackupFailed | ContainerUnhealthy | LogErrorBurst
                )
            }
        }
        OomKill => matches!(
            effect,
            ContainerCrashLoop
                | ContainerUnhealthy
                | ServiceFailing
                | GuestCrashed
                | TaskFailed
                | LogErrorBurst
        ),
        TimeDrift => matches!(
            effect,
            QuorumLost | TaskFailed | LogErrorBurst | ServiceFailing
        ),
        _ => false,
    }
}

fn related(a: &CondInfo<'_>, b: &CondInfo<'_>) -> bool {
    a.subject.node() == b.subject.node()
        || (a.detector.cluster_scoped() && b.detector.cluster_scoped())
}

/// Phrase used as "likely cause".
pub(crate) fn cause_phrase(d: Detector, s: &Subject, title: &str) -> String {
    let node = s.node();
    match (d, s) {
        (Detector::NodeSilent, _) => format!("node {node} offline (agent silent)"),
        (Detector::QuorumLost, _) => format!("cluster quorum lost on {node}"),
        (Detector::HaFencing, Subject::Node { .. }) => format!("HA fencing of node {node}"),
        (Detector::SmartFailing, Subject::Disk { device, .. }) => {
            format!("failing disk {device} on {node}")
        }
        (Detector::ZfsDegraded, Subject::Pool { pool, .. }) => {
            format!("unhealthy ZFS pool {pool} on {node}")
        }
        (Detector::StorageFull, Subject::Filesystem { mount, .. }) => {
            format!("storage full on {node}:{mount}")
        }
        (Detector::StorageFilling, Subject::Filesystem { mount, .. }) => {
            format!("storage filling up on {node}:{mount}")
        }
        (Detector::ResourcePressure, Subject::Resource { resource, .. }) => {
            format!("sustained {resource} pressure on {node}")
        }
        (Detector::OomKill, Subject::Container { container, .. }) => {
            format!("out-of-memory kill in container {container} on {node}")
        }
        (Detector::OomKill, _) => format!("out-of-memory kill on {node}"),
        (Detector::TimeDrift, _) => format!("clock drift on {node}"),
        _ => {
            let mut t = title.to_string();
            if let Some(first) = t.get(..1) {
                let lower = first.to_lowercase();
                t.replace_range(..1, &lower);
            }
            t
        }
    }
}

/// The likely cause of a set of conditions (given in creation order).
/// `title_of` returns a condition's title.
pub(crate) fn likely_cause<'a>(
    conds: &[CondInfo<'a>],
    title_of: impl Fn(u64) -> &'a str,
) -> Option<Cause> {
    let mut best: Option<(usize, u8, i64, u64, usize)> = None; // (score, rank, since, id, index)
    for (i, c) in conds.iter().enumerate() {
        let score = conds
            .iter()
            .filter(|e| {
                e.id != c.id && related(c, e) && explains(c.detector, c.subject, e.detector)
            })
            .count();
        if score == 0 {
            continue;
        }
        let key = (score, cause_rank(c.detector), c.since_ms, c.id, i);
        let better = match best {
            None => true,
            Some((bs, br, bt, bid, _)) => {
                score > bs || (score == bs && (key.1, key.2, key.3) < (br, bt, bid))
            }
        };
        if better {
            best = Some(key);
        }
    }
    let cause = match best {
        Some((_, _, _, _, i)) => conds.get(i)?,
        None => conds.iter().min_by_key(|c| (c.since_ms, c.id))?,
    };
    let mut effects: Vec<&CondInfo<'_>> = conds
        .iter()
        .filter(|e| {
            e.id != cause.id
                && related(cause, e)
                && explains(cause.detector, cause.subject, e.detector)
        })
        .collect();
    effects.sort_by_key(|e| (e.since_ms, e.id));
    let mut chain = vec![cause.detector];
    for e in effects {
        if !chain.contains(&e.detector) {
            chain.push(e.detector);
        }
    }
    Some(Cause {
        cond: cause.id,
        text: cause_phrase(cause.detector, cause.subject, title_of(cause.id)),
        chain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs() -> Subject {
        Subject::Filesystem {
            node: "pve1".into(),
            mount: "/var/lib/vz".into(),
        }
    }

    #[test]
    fn storage_full_explains_backup_and_guest() {
        let full = fs();
        let guest = Subject::Guest {
            node: "pve1".into(),
            guest_id: 100,
            guest_kind: None,
            name: String::new(),
        };
        let conds = [
            CondInfo {
                id: 2,
                detector: Detector::BackupFailed,
                subject: &guest,
                since_ms: 10,
            },
            CondInfo {
                id: 1,
                detector: Detector::StorageFull,
                subject: &full,
                since_ms: 20,
            },
            CondInfo {
                id: 3,
                detector: Detector::GuestCrashed,
                subject: &guest,
                since_ms: 30,
            },
        ];
        let c = likely_cause(&conds, |_| "x").unwrap();
        assert_eq!(c.cond, 1);
        assert_eq!(c.text, "storage full on pve1:/var/lib/vz");
        assert_eq!(
            c.chain,
            vec![
                Detector::StorageFull,
                Detector::BackupFailed,
                Detector::GuestCrashed
            ]
        );
    }

    #[test]
    fn other_node_is_not_explained() {
        let full = fs();
        let other = Subject::Guest {
            node: "pve2".into(),
            guest_id: 100,
            guest_kind: None,
            name: String::new(),
        };
        let conds = [
            CondInfo {
                id: 1,
                detector: Detector::StorageFull,
                subject: &full,
                since_ms: 20,
            },
            CondInfo {
                id: 2,
                detector: Detector::BackupFailed,
                subject: &other,
                since_ms: 10,
            },
        ];
        let c = likely_cause(&conds, |_| "Backup of guest 100 on pve2 failed").unwrap();
        assert_eq!(c.cond, 2);
        assert_eq!(c.text, "backup of guest 100 on pve2 failed");
        assert_eq!(likely_cause(&[], |_| ""), None);
    }
}
