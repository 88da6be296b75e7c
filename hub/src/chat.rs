//! Chat: commands the hub answers itself, and free questions for the model.
//!
//! Commands (no model needed): `list skills`, `show skill <id>`,
//! `run skill <id> [for <incident>]` (a guided run: the skill's steps become
//! a checklist stored in `skill_runs`), `show incident <id>`, `ack <id>`
//! (through the engine's Acknowledge command, as the signed-in user).
//! Anything else is a question for the routed model ([`crate::reasoner`]),
//! with context the hub builds from its own facts through the privacy gate.
//! Without a model the answer says so and lists what the hub knows. Every
//! message and answer is stored in `chat_messages`; model calls are stored as
//! exchanges of the chat.

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::Hub;
use crate::engine::Command;
use crate::reasoner::ChatError;
use crate::store::{ChatMessageRow, SkillRunRow, StoreError};

/// Longest message accepted, bytes.
pub const MAX_MESSAGE: usize = 4000;

/// A parsed chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatCommand {
    /// `list skills`.
    ListSkills,
    /// `show skill <id>`.
    ShowSkill(String),
    /// `run skill <id> [for <incident>]`.
    RunSkill {
        /// Skill.
        skill: String,
        /// Incident.
        incident: Option<String>,
    },
    /// `show incident <id>`.
    ShowIncident(String),
    /// `ack <id>`.
    Ack(String),
    /// Anything else.
    Question(String),
}

/// Parses a message (case-insensitive keywords; ids kept as typed).
pub fn parse(message: &str) -> ChatCommand {
    let words: Vec<&str> = message.split_whitespace().collect();
    let lower: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let arg = |i: usize| words.get(i).map(|s| (*s).to_owned());
    match l.as_slice() {
        ["list", "skills"] | ["skills"] => ChatCommand::ListSkills,
        ["show", "skill", _] => ChatCommand::ShowSkill(arg(2).unwrap_or_default()),
        ["run", "skill", _] => ChatCommand::RunSkill {
            skill: arg(2).unwrap_or_default(),
            incident: None,
        },
        ["run", "skill", _, "for", _] => ChatCommand::RunSkill {
            skill: arg(2).unwrap_or_default(),
            incident: arg(4),
        },
        ["show", "incident", _] => ChatCommand::ShowIncident(arg(2).unwrap_or_default()),
        ["ack", _] | ["acknowledge", _] => ChatCommand::Ack(arg(1).unwrap_or_default()),
        _ => ChatCommand::Question(message.trim().to_owned()),
    }
}

/// One checklist item of a guided run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStep {
    /// Step title.
    pub text: String,
    /// Ticked.
    pub done: bool,
    /// Who ticked it.
    pub by: Option<String>,
    /// When, Unix ms.
    pub at: Option<i64>,
}

/// The steps of a skill: its `### Step N: ...` headings under `## Steps`,
/// else its numbered list items.
pub fn skill_steps(body: &str) -> Vec<String> {
    let mut steps: Vec<String> = body
        .lines()
        .filter_map(|l| l.trim().strip_prefix("### "))
        .filter(|h| h.to_lowercase().starts_with("step"))
        .map(|h| h.trim().to_owned())
        .collect();
    if steps.is_empty() {
        steps = body
            .lines()
            .map(str::trim)
            .filter_map(|l| {
                let (n, rest) = l.split_once(". ")?;
                (!n.is_empty() && n.chars().all(|c| c.is_ascii_digit())).then(|| rest.to_owned())
            })
            .collect();
    }
    steps.truncate(50);
    steps
}

/// What the hub answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatReply {
    /// `command`, `model` or `no_model`.
    pub kind: &'static str,
    /// The answer (plain text; pages escape it).
    pub text: String,
    /// A page to open (skill run, incident), when the command made one.
    pub link: Option<String>,
    /// Provider and model, when a model answered.
    pub model: Option<String>,
}

/// Why a chat message could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ChatFailure {
    /// The message is not acceptable.
    #[error("{0}")]
    BadRequest(String),
    /// The model is busy or failing.
    #[error("{reason}")]
    Busy {
        /// Seconds to wait.
        retry_after_secs: u64,
        /// Why.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The chat of a user.
pub fn chat_id(user_id: &str) -> String {
    format!("user:{user_id}")
}

fn reply(kind: &'static str, text: String, link: Option<String>) -> ChatReply {
    ChatReply {
        kind,
        text,
        link,
        model: None,
    }
}

/// What retrieval finds for `q`, cited with links (empty when off).
async fn retrieved(hub: &Hub, q: &str) -> String {
    let Some(m) = hub.memory.as_ref() else {
        return String::new();
    };
    match m.search(q, 5, &crate::memory::Filter::default()).await {
        Ok(hits) if !hits.is_empty() => {
            let mut out = String::from("\nRelated, from memory:");
            for h in &hits {
                let v = crate::http::search_view(h);
                out.push_str(&format!(
                    "\n- {} {}: {} ({})",
                    v.kind, v.ref_id, v.title, v.href
                ));
            }
            out
        }
        Ok(_) => String::new(),
        Err(e) => format!("\n(Search is unavailable: {e}.)"),
    }
}

async fn what_the_hub_knows(hub: &Hub) -> Result<String, StoreError> {
    let agents = hub.store.list_agents().await?;
    let online = agents.iter().filter(|a| a.online).count();
    let filter = crate::store::IncidentFilter {
        limit: 20,
        ..Default::default()
    };
    let (rows, _) = hub.store.list_incidents(&filter).await?;
    let open: Vec<String> = rows
        .iter()
        .filter(|r| r.state != "resolved")
        .map(|r| format!("- {} [{}, {}] {}", r.id, r.severity, r.state, r.title))
        .collect();
    let mut s = format!(
        "Nodes: {} enrolled, {online} online. Open incidents: {}.",
        agents.len(),
        open.len()
    );
    if !open.is_empty() {
        s.push('\n');
        s.push_str(&open.join("\n"));
    }
    Ok(s)
}

/// Handles one message from `user` (name, id) and records both sides.
pub async fn handle(
    hub: &Hub,
    user_id: &str,
    user_name: &str,
    message: &str,
) -> Result<ChatReply, ChatFailure> {
    let message = message.trim();
    if message.is_empty() || message.len() > MAX_MESSAGE {
        return Err(ChatFailure::BadRequest(format!(
            "message must be 1 to {MAX_MESSAGE} bytes"
        )));
    }
    let chat = chat_id(user_id);
    let now = wingman_agent::now_ms();
    hub.store
        .append_chat(&ChatMessageRow {
            id: 0,
            chat_id: chat.clone(),
            role: "user".into(),
            author: user_name.to_owned(),
            text: message.to_owned(),
            created_at: now,
        })
        .await?;
    let r = answer(hub, &chat, user_name, message).await;
    let text = match &r {
        Ok(r) => r.text.clone(),
        Err(e) => format!("(not answered: {e})"),
    };
    hub.store
        .append_chat(&ChatMessageRow {
            id: 0,
            chat_id: chat,
            role: "assistant".into(),
            author: "wingman".into(),
            text,
            created_at: wingman_agent::now_ms(),
        })
        .await?;
    r
}

async fn answer(
    hub: &Hub,
    chat: &str,
    user_name: &str,
    message: &str,
) -> Result<ChatReply, ChatFailure> {
    let skills = &hub.skills.skills;
    match parse(message) {
        ChatCommand::ListSkills => {
            let lines: Vec<String> = skills
                .iter()
                .map(|s| format!("- {} (tier {}): {}", s.id, s.tier, s.title))
                .collect();
            Ok(reply(
                "command",
                format!("{} skills:\n{}", skills.len(), lines.join("\n")),
                Some("/skills".into()),
            ))
        }
        ChatCommand::ShowSkill(id) => match skills.iter().find(|s| s.id == id) {
            Some(s) => {
                let steps = skill_steps(&s.body);
                let mut t = format!(
                    "{} (tier {}, risk {}, about {} min): {}",
                    s.id, s.tier, s.risk, s.estimated_minutes, s.title
                );
                for (i, st) in steps.iter().enumerate() {
                    t.push_str(&format!("\n{}. {st}", i + 1));
                }
                Ok(reply("command", t, Some(format!("/skills/{}", s.id))))
            }
            None => Ok(reply(
                "command",
                format!("No skill {id:?}. Try `list skills`."),
                None,
            )),
        },
        ChatCommand::RunSkill { skill, incident } => {
            let Some(s) = skills.iter().find(|s| s.id == skill) else {
                return Ok(reply(
                    "command",
                    format!("No skill {skill:?}. Try `list skills`."),
                    None,
                ));
            };
            if let Some(i) = &incident
                && hub.store.get_incident(i).await?.is_none()
            {
                return Ok(reply("command", format!("No incident {i:?}."), None));
            }
            let steps: Vec<RunStep> = skill_steps(&s.body)
                .into_iter()
                .map(|text| RunStep {
                    text,
                    done: false,
                    by: None,
                    at: None,
                })
                .collect();
            let now = wingman_agent::now_ms();
            let id = uuid::Uuid::now_v7().to_string();
            hub.store
                .create_skill_run(&SkillRunRow {
                    id: id.clone(),
                    skill_id: s.id.clone(),
                    incident_id: incident.clone(),
                    started_by: user_name.to_owned(),
                    steps: serde_json::to_string(&steps).unwrap_or_else(|_| "[]".into()),
                    created_at: now,
                    updated_at: now,
                })
                .await?;
            info!(skill = %s.id, run = %id, user = %user_name, "guided skill run started");
            Ok(reply(
                "command",
                format!(
                    "Started a guided run of {} with {} steps; tick them off at /runs/{id}.",
                    s.id,
                    steps.len()
                ),
                Some(format!("/runs/{id}")),
            ))
        }
        ChatCommand::ShowIncident(id) => match hub.store.get_incident(&id).await? {
            Some(row) => {
                let inc: Option<crate::engine::Incident> = serde_json::from_str(&row.body).ok();
                let narrative = inc.map(|i| i.narrative).unwrap_or_default();
                Ok(reply(
                    "command",
                    format!(
                        "{} [{}, {}]: {}\n{narrative}",
                        row.id, row.severity, row.state, row.title
                    ),
                    Some(format!("/incidents/{}", row.id)),
                ))
            }
            None => Ok(reply("command", format!("No incident {id:?}."), None)),
        },
        ChatCommand::Ack(id) => {
            let r = hub
                .incidents
                .command(Command::Acknowledge {
                    incident_id: id.clone(),
                    by: user_name.to_owned(),
                })
                .await;
            Ok(match r {
                Ok(()) => {
                    info!(incident = %id, by = %user_name, "incident acknowledged from chat");
                    let _ = hub
                        .audit
                        .record(
                            &format!("user:{user_name}"),
                            crate::control::audit::AuditKind::IncidentAcknowledged,
                            Some(&id),
                            serde_json::json!({"via": "chat"}),
                        )
                        .await;
                    reply(
                        "command",
                        format!("Acknowledged {id} as {user_name}."),
                        Some(format!("/incidents/{id}")),
                    )
                }
                Err(e) => reply("command", format!("Cannot acknowledge {id}: {e}"), None),
            })
        }
        ChatCommand::Question(q) => match hub.reasoner.ask(chat, &q).await {
            Ok(a) => Ok(ChatReply {
                kind: "model",
                text: a.answer,
                link: None,
                model: Some(format!("{}/{}", a.provider, a.model)),
            }),
            Err(ChatError::NoModel) => Ok(reply(
                "no_model",
                format!(
                    "No language model is configured, so I can only run commands: list skills, show skill <id>, run skill <id>, show incident <id>, ack <id>. What the hub knows:\n{}{}",
                    what_the_hub_knows(hub).await?,
                    retrieved(hub, &q).await
                ),
                None,
            )),
            Err(ChatError::Stopped(reason)) => Ok(reply(
                "no_model",
                format!(
                    "The model is not being called: {reason}. What the hub knows:\n{}",
                    what_the_hub_knows(hub).await?
                ),
                None,
            )),
            Err(ChatError::Busy {
                retry_after_secs,
                reason,
            }) => Err(ChatFailure::Busy {
                retry_after_secs,
                reason,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(parse("List Skills"), ChatCommand::ListSkills);
        assert_eq!(
            parse("show skill disk-filling"),
            ChatCommand::ShowSkill("disk-filling".into())
        );
        assert_eq!(
            parse("run skill disk-filling for inc-3"),
            ChatCommand::RunSkill {
                skill: "disk-filling".into(),
                incident: Some("inc-3".into())
            }
        );
        assert_eq!(parse("ack inc-1"), ChatCommand::Ack("inc-1".into()));
        assert_eq!(
            parse("show incident inc-2"),
            ChatCommand::ShowIncident("inc-2".into())
        );
        assert_eq!(
            parse(" why is pve1 slow? "),
            ChatCommand::Question("why is pve1 slow?".into())
        );
    }

    #[test]
    fn steps_from_headings_or_numbers() {
        let b = "## Steps\n\n### Step 1: Save a copy\n\ntext\n\n### Step 2: Fix it\n";
        assert_eq!(
            skill_steps(b),
            vec!["Step 1: Save a copy", "Step 2: Fix it"]
        );
        assert_eq!(skill_steps("1. one\n2. two\nx. no"), vec!["one", "two"]);
    }
}
