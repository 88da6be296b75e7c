//! Local action policy: the node owner's last word on what the hub may do to
//! containers here. Pure: no I/O, checked before anything is executed.
//!
//! Rules:
//! - A container matching `deny_containers` is never touched.
//! - An action runs only if `allowed` names its risk class or its action name.
//! - A destructive action additionally needs `allow_destructive = true`.
//!
//! The default allows low-risk actions (start, restart) only.

use serde::Deserialize;

use super::facts::{DockerAction, Risk};

/// One entry of [`LocalPolicy::allowed`]: a risk class or an action name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyRule {
    /// Every low-risk action.
    Low,
    /// Every medium-risk action.
    Medium,
    /// Every destructive action (still needs `allow_destructive`).
    Destructive,
    /// `start`.
    Start,
    /// `stop`.
    Stop,
    /// `restart`.
    Restart,
    /// `remove`.
    Remove,
}

impl PolicyRule {
    fn allows(self, action: &DockerAction) -> bool {
        match self {
            Self::Low => action.risk() == Risk::Low,
            Self::Medium => action.risk() == Risk::Medium,
            Self::Destructive => action.risk() == Risk::Destructive,
            Self::Start => matches!(action, DockerAction::Start { .. }),
            Self::Stop => matches!(action, DockerAction::Stop { .. }),
            Self::Restart => matches!(action, DockerAction::Restart { .. }),
            Self::Remove => matches!(action, DockerAction::Remove { .. }),
        }
    }
}

/// Why an action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused by local policy: {reason}")]
pub struct Refusal {
    /// Human-readable reason.
    pub reason: String,
}

/// The node's policy for container actions (agent configuration).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalPolicy {
    /// Destructive actions are refused unless this is true (and `allowed` names them).
    pub allow_destructive: bool,
    /// Risk classes and/or action names that may run.
    pub allowed: Vec<PolicyRule>,
    /// Containers never touched: exact names, ids or id prefixes of at least 12
    /// characters, or a name prefix ending in `*` (e.g. `db-*`).
    pub deny_containers: Vec<String>,
}

impl Default for LocalPolicy {
    fn default() -> Self {
        Self {
            allow_destructive: false,
            allowed: vec![PolicyRule::Low],
            deny_containers: Vec::new(),
        }
    }
}

impl LocalPolicy {
    /// Whether any destructive action can pass (on some container).
    pub fn allows_destructive(&self) -> bool {
        self.allow_destructive
            && self
                .allowed
                .iter()
                .any(|r| matches!(r, PolicyRule::Destructive | PolicyRule::Remove))
    }

    /// Checks an action against the container reference it carries.
    pub fn check(&self, action: &DockerAction) -> Result<(), Refusal> {
        self.check_target(action, &[action.container()])
    }

    /// Checks an action against every known identity of its target (the name and
    /// id from `inspect`), so a deny entry by name also stops a request by id.
    pub fn check_target(&self, action: &DockerAction, identities: &[&str]) -> Result<(), Refusal> {
        if let Some(entry) = self
            .deny_containers
            .iter()
            .find(|d| identities.iter().any(|id| deny_matches(d, id)))
        {
            return Err(Refusal {
                reason: format!(
                    "container {} is protected (deny_containers: {entry})",
                    action.container()
                ),
            });
        }
        let risk = action.risk();
        if risk == Risk::Destructive && !self.allow_destructive {
            return Err(Refusal {
                reason: format!(
                    "{} is destructive and allow_destructive is false",
                    action.name()
                ),
            });
        }
        if !self.allowed.iter().any(|r| r.allows(action)) {
            return Err(Refusal {
                reason: format!(
                    "{} ({} risk) is not in the allowed list",
                    action.name(),
                    risk.name()
                ),
            });
        }
        Ok(())
    }
}

fn deny_matches(entry: &str, identity: &str) -> bool {
    let entry = entry.trim().trim_start_matches('/');
    let identity = identity.trim().trim_start_matches('/');
    if entry.is_empty() || identity.is_empty() {
        return false;
    }
    if let Some(prefix) = entry.strip_suffix('*') {
        return identity.starts_with(prefix);
    }
    entry == identity
        || (entry.len() >= 12
            && entry.bytes().all(|b| b.is_ascii_hexdigit())
            && identity.starts_with(entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restart(c: &str) -> DockerAction {
        DockerAction::Restart {
            container: c.to_owned(),
            timeout_s: None,
        }
    }

    fn remove(c: &str) -> DockerAction {
        DockerAction::Remove {
            container: c.to_owned(),
            force: true,
        }
    }

    #[test]
    fn risk_classes() {
        assert_eq!(restart("a").risk(), Risk::Low);
        assert_eq!(
            DockerAction::Start {
                container: "a".into()
            }
            .risk(),
            Risk::Low
        );
        assert_eq!(
            DockerAction::Stop {
                container: "a".into(),
                timeout_s: None
            }
            .risk(),
            Risk::Medium
        );
        assert_eq!(remove("a").risk(), Risk::Destructive);
    }

    #[test]
    fn default_allows_low_only() {
        let p = LocalPolicy::default();
        assert!(p.check(&restart("web")).is_ok());
        let stop = DockerAction::Stop {
            container: "web".into(),
            timeout_s: Some(5),
        };
        let e = p.check(&stop).unwrap_err();
        assert!(e.reason.contains("not in the allowed list"), "{e}");
        let e = p.check(&remove("web")).unwrap_err();
        assert!(e.reason.contains("allow_destructive is false"), "{e}");
    }

    #[test]
    fn destructive_needs_both_switches() {
        let mut p = LocalPolicy {
            allow_destructive: true,
            ..Default::default()
        };
        assert!(p.check(&remove("web")).is_err());
        p.allowed.push(PolicyRule::Remove);
        assert!(p.check(&remove("web")).is_ok());
        p.allow_destructive = false;
        assert!(p.check(&remove("web")).is_err());
        let by_class = LocalPolicy {
            allow_destructive: true,
            allowed: vec![PolicyRule::Destructive],
            deny_containers: vec![],
        };
        assert!(by_class.check(&remove("web")).is_ok());
        assert!(by_class.check(&restart("web")).is_err());
    }

    #[test]
    fn deny_list_by_name_id_prefix_and_glob() {
        let p = LocalPolicy {
            deny_containers: vec!["/db".into(), "db-*".into(), "0123456789ab".into()],
            ..Default::default()
        };
        assert!(p.check(&restart("db")).is_err());
        assert!(p.check(&restart("db-replica")).is_err());
        assert!(p.check(&restart("0123456789abcdef")).is_err());
        assert!(p.check(&restart("web")).is_ok());
        // requested by id, denied by name
        assert!(p.check_target(&restart("ffff"), &["ffff", "db"]).is_err());
        // short id prefixes in the deny list do not match by prefix
        let short = LocalPolicy {
            deny_containers: vec!["01".into(), String::new()],
            ..Default::default()
        };
        assert!(short.check(&restart("0123456789abcdef")).is_ok());
    }
}
