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
