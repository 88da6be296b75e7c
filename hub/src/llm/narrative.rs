//! The structured incident explanation: its JSON schema, and validation of a
//! model's reply against the schema *and* against the prompt it was given.
//!
//! The wire schema uses only the strict-mode subset (see [`super::schema`]);
//! length and count limits are enforced here, after parsing. Evidence must
//! cite ref ids that were actually in the prompt (`F1`, `T2`, `N1`, …), and
//! at least one; a reply citing anything else is rejected as
//! [`LlmError::InvalidOutput`]. The explanation is text for the operator: it
//! never changes severity and carries no executable action.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::LlmError;
use super::schema::{OutputSchema, validate};

/// Schema name sent to providers.
pub const SCHEMA_NAME: &str = "incident_explanation";
/// Longest summary accepted, chars.
pub const MAX_SUMMARY: usize = 2000;
/// Longest likely cause accepted, chars.
pub const MAX_CAUSE: usize = 1000;
/// Most evidence refs accepted.
pub const MAX_EVIDENCE: usize = 32;
/// Most next steps accepted.
pub const MAX_STEPS: usize = 10;
/// Longest next step accepted, chars.
pub const MAX_STEP: usize = 500;

/// How sure the model says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
}

/// A validated incident explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Explanation {
    /// What happened, in a few sentences.
    pub summary: String,
    /// The most likely cause.
    pub likely_cause: String,
    /// Ref ids of the prompt items that support it.
    pub evidence: Vec<String>,
    /// Confidence.
    pub confidence: Confidence,
    /// Checks or fixes the operator could do (text only, never executed).
    pub suggested_next_steps: Vec<String>,
}

/// The JSON schema of [`Explanation`].
pub fn schema() -> OutputSchema {
    OutputSchema {
        name: SCHEMA_NAME.to_owned(),
        description: "Explanation of a homelab incident, citing evidence by ref id".to_owned(),
        schema: json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["summary", "likely_cause", "evidence", "confidence", "suggested_next_steps"],
            "properties": {
                "summary": {"type": "string", "description": "What happened, 1-4 sentences"},
                "likely_cause": {"type": "string", "description": "The most likely cause"},
                "evidence": {
                    "type": "array",
                    "description": "ref values of the data items that support the explanation",
                    "items": {"type": "string"}
                },
                "confidence": {"type": "string", "enum": ["low", "medium", "high"]},
                "suggested_next_steps": {
                    "type": "array",
                    "description": "Checks the operator could do next",
                    "items": {"type": "string"}
                }
            }
        }),
    }
}

/// Validates a reply against the schema, the limits and the prompt's refs.
pub fn parse(value: &Value, prompt_refs: &BTreeSet<String>) -> Result<Explanation, LlmError> {
    validate(&schema().schema, value).map_err(LlmError::InvalidOutput)?;
    let e: Explanation = serde_json::from_value(value.clone())
        .map_err(|err| LlmError::InvalidOutput(format!("explanation: {err}")))?;
    let too_long = |s: &str, max: usize| s.chars().count() > max;
    if e.summary.trim().is_empty() || too_long(&e.summary, MAX_SUMMARY) {
        return Err(LlmError::InvalidOutput("summary empty or too long".into()));
    }
    if too_long(&e.likely_cause, MAX_CAUSE) {
        return Err(LlmError::InvalidOutput("likely_cause too long".into()));
    }
    if e.evidence.is_empty() || e.evidence.len() > MAX_EVIDENCE {
        return Err(LlmError::InvalidOutput(format!(
            "evidence must cite 1 to {MAX_EVIDENCE} refs"
        )));
    }
    if let Some(bad) = e
        .evidence
        .iter()
        .find(|r| !prompt_refs.contains(r.as_str()))
    {
        let bad = super::error::truncate(bad, 40);
        return Err(LlmError::InvalidOutput(format!(
            "evidence cites {bad:?}, which is not in the prompt"
        )));
    }
    if e.suggested_next_steps.len() > MAX_STEPS
        || e.suggested_next_steps.iter().any(|s| too_long(s, MAX_STEP))
    {
        return Err(LlmError::InvalidOutput(
            "too many or too long next steps".into(),
        ));
    }
    Ok(e)
}

/// Schema name of the incident narrative the reasoner asks for.
pub const NARRATIVE_SCHEMA_NAME: &str = "incident_narrative";
/// Most likely causes accepted.
pub const MAX_CAUSES: usize = 5;
/// Longest impact accepted, chars.
pub const MAX_IMPACT: usize = 1000;

/// One ranked likely cause and the evidence refs that support it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankedCause {
    /// The cause, in a sentence.
    pub cause: String,
    /// Ref ids of prompt items (`E3`, `T1`, ...) that support it; at least one.
    pub evidence: Vec<String>,
}

/// One next step and the skills (runbooks) that cover it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextStep {
    /// What to check or do (text only, never executed).
    pub step: String,
    /// Ids of skills given in the prompt; may be empty.
    pub skill_ids: Vec<String>,
}

/// A validated structured incident narrative: summary, ranked likely causes
/// citing evidence, impact, next steps citing skills, confidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentNarrative {
    /// What happened, in a few sentences.
    pub summary: String,
    /// Likely causes, most likely first.
    pub likely_causes: Vec<RankedCause>,
    /// What is affected and how badly.
    pub impact: String,
    /// Next steps for the operator.
    pub next_steps: Vec<NextStep>,
    /// Confidence.
    pub confidence: Confidence,
}

/// The JSON schema of [`IncidentNarrative`] (strict-mode subset).
pub fn narrative_schema() -> OutputSchema {
    OutputSchema {
        name: NARRATIVE_SCHEMA_NAME.to_owned(),
        description: "Narrative of a homelab incident citing evidence refs and skill ids"
            .to_owned(),
        schema: json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["summary", "likely_causes", "impact", "next_steps", "confidence"],
            "properties": {
                "summary": {"type": "string", "description": "What happened, 1-4 sentences"},
                "likely_causes": {
                    "type": "array",
                    "description": "Likely causes, most likely first",
                    "items": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["cause", "evidence"],
                        "properties": {
                            "cause": {"type": "string"},
                            "evidence": {
                                "type": "array",
                                "description": "ref values of the data items that support this cause",
                                "items": {"type": "string"}
                            }
                        }
                    }
                },
                "impact": {"type": "string", "description": "What is affected"},
                "next_steps": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["step", "skill_ids"],
                        "properties": {
                            "step": {"type": "string"},
                            "skill_ids": {
                                "type": "array",
                                "description": "ids of the reference runbooks that cover this step",
                                "items": {"type": "string"}
                            }
                        }
                    }
                },
                "confidence": {"type": "string", "enum": ["low", "medium", "high"]}
            }
        }),
    }
}

/// Validates a reply against [`narrative_schema`], the limits, the prompt's
/// refs and the skill ids the prompt offered.
pub fn parse_narrative(
    value: &Value,
    prompt_refs: &BTreeSet<String>,
    skill_ids: &BTreeSet<String>,
) -> Result<IncidentNarrative, LlmError> {
    validate(&narrative_schema().schema, value).map_err(LlmError::InvalidOutput)?;
    let n: IncidentNarrative = serde_json::from_value(value.clone())
        .map_err(|err| LlmError::InvalidOutput(format!("narrative: {err}")))?;
    let too_long = |s: &str, max: usize| s.chars().count() > max;
    let bad = |m: String| Err(LlmError::InvalidOutput(m));
    if n.summary.trim().is_empty() || too_long(&n.summary, MAX_SUMMARY) {
        return bad("summary empty or too long".into());
    }
    if too_long(&n.impact, MAX_IMPACT) {
        return bad("impact too long".into());
    }
    if n.likely_causes.is_empty() || n.likely_causes.len() > MAX_CAUSES {
        return bad(format!("likely_causes must list 1 to {MAX_CAUSES} causes"));
    }
    for c in &n.likely_causes {
        if c.cause.trim().is_empty() || too_long(&c.cause, MAX_CAUSE) {
            return bad("a cause is empty or too long".into());
        }
        if c.evidence.is_empty() || c.evidence.len() > MAX_EVIDENCE {
            return bad(format!("each cause must cite 1 to {MAX_EVIDENCE} refs"));
        }
        if let Some(r) = c
            .evidence
            .iter()
            .find(|r| !prompt_refs.contains(r.as_str()))
        {
            let r = super::error::truncate(r, 40);
            return bad(format!("evidence cites {r:?}, which is not in the prompt"));
        }
    }
    if n.next_steps.len() > MAX_STEPS {
        return bad("too many next steps".into());
    }
    for s in &n.next_steps {
        if s.step.trim().is_empty() || too_long(&s.step, MAX_STEP) {
            return bad("a next step is empty or too long".into());
        }
        if let Some(k) = s.skill_ids.iter().find(|k| !skill_ids.contains(k.as_str())) {
            let k = super::error::truncate(k, 60);
            return bad(format!(
                "next step cites skill {k:?}, which was not offered"
            ));
        }
    }
    Ok(n)
}

/// Asks `provider` for an [`IncidentNarrative`] and validates it.
pub async fn narrate(
    provider: &dyn super::Provider,
    prompt: super::PromptRef<'_>,
    skill_ids: &BTreeSet<String>,
) -> super::Outcome<IncidentNarrative> {
    let out = provider.complete(prompt, &narrative_schema()).await;
    let mut exchanges = out.exchanges;
    let result = out
        .result
        .and_then(|c| parse_narrative(&c.value, prompt.refs(), skill_ids));
    if let (Err(e), Some(last)) = (&result, exchanges.last_mut())
        && last.error.is_none()
    {
        last.error = Some(e.to_string());
    }
    super::Outcome { result, exchanges }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs() -> BTreeSet<String> {
        ["F1", "T1"].iter().map(|s| (*s).to_owned()).collect()
    }

    fn good() -> Value {
        json!({"summary":"Disk filled","likely_cause":"backup","evidence":["F1","T1"],
               "confidence":"medium","suggested_next_steps":["check vzdump"]})
    }

    #[test]
    fn narrative_refs_and_skills_are_checked() {
        let skills: BTreeSet<String> = ["disk-filling".to_owned()].into();
        let good = json!({"summary":"s","likely_causes":[{"cause":"c","evidence":["F1"]}],
            "impact":"i","next_steps":[{"step":"x","skill_ids":["disk-filling"]}],"confidence":"low"});
        assert!(parse_narrative(&good, &refs(), &skills).is_ok());
        let mut v = good.clone();
        v["next_steps"][0]["skill_ids"] = json!(["rm-rf"]);
        assert!(parse_narrative(&v, &refs(), &skills).is_err());
        let mut v = good.clone();
        v["likely_causes"][0]["evidence"] = json!(["E9"]);
        assert!(parse_narrative(&v, &refs(), &skills).is_err());
        let mut v = good;
        v["likely_causes"] = json!([]);
        assert!(parse_narrative(&v, &refs(), &skills).is_err());
    }

    #[test]
    fn accepts_valid() {
        let e = parse(&good(), &refs()).unwrap();
        assert_eq!(e.confidence, Confidence::Medium);
    }

    #[test]
    fn rejects_unknown_ref_extra_field_and_bad_enum() {
        let mut v = good();
        v["evidence"] = json!(["F9"]);
        assert!(matches!(
            parse(&v, &refs()),
            Err(LlmError::InvalidOutput(_))
        ));
        let mut v = good();
        v["action"] = json!("rm -rf /");
        assert!(parse(&v, &refs()).is_err());
        let mut v = good();
        v["confidence"] = json!("certain");
        assert!(parse(&v, &refs()).is_err());
        let mut v = good();
        v["evidence"] = json!([]);
        assert!(parse(&v, &refs()).is_err());
    }
}
