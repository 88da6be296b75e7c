//! What memory indexes: [`Document`]s of four [`DocKind`]s, each with a
//! [`DataClass`] that decides whether its text may be sent to a cloud
//! embedder, and the [`Payload`] stored with every vector.

use serde::{Deserialize, Serialize};

/// Longest excerpt kept in a [`Payload`], bytes.
pub const MAX_EXCERPT: usize = 480;

/// Longest text embedded for one document, bytes (the rest is cut).
pub const MAX_EMBED_TEXT: usize = 8 * 1024;

/// What a vector stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocKind {
    /// An incident narrative.
    Incident,
    /// A resolution: what was done and whether it worked.
    Outcome,
    /// A log template summary (masked template plus counts).
    TemplateSummary,
    /// A markdown skill (runbook).
    Skill,
}

impl DocKind {
    /// Every kind.
    pub const ALL: [Self; 4] = [
        Self::Incident,
        Self::Outcome,
        Self::TemplateSummary,
        Self::Skill,
    ];

    /// Stable lowercase name, as stored in payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Incident => "incident",
            Self::Outcome => "outcome",
            Self::TemplateSummary => "template_summary",
            Self::Skill => "skill",
        }
    }

    /// Parses [`DocKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The data class of documents of this kind (one to one).
    pub fn class(self) -> DataClass {
        match self {
            Self::Incident => DataClass::IncidentNarrative,
            Self::Outcome => DataClass::OutcomeRecord,
            Self::TemplateSummary => DataClass::TemplateSummary,
            Self::Skill => DataClass::Skill,
        }
    }
}

/// The privacy class of a document's text: a cloud embedder only receives
/// classes on its allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataClass {
    /// Hub-written incident narratives (node names, services, symptoms).
    IncidentNarrative,
    /// Resolution records (commands run, operator notes).
    OutcomeRecord,
    /// Masked log templates with counts.
    TemplateSummary,
    /// Skill (runbook) text.
    Skill,
}

impl DataClass {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IncidentNarrative => "incident_narrative",
            Self::OutcomeRecord => "outcome_record",
            Self::TemplateSummary => "template_summary",
            Self::Skill => "skill",
        }
    }
}

impl std::fmt::Display for DataClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Metadata stored with each vector and returned with each hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// Kind.
    pub kind: DocKind,
    /// Node (agent) id the document is about, if one.
    pub node: Option<String>,
    /// `proxmox`, `docker` or `plain`, if known.
    pub platform: Option<String>,
    /// Title (incident title, skill name, template).
    pub title: String,
    /// A short excerpt (at most [`MAX_EXCERPT`] bytes), never the whole text.
    pub text: String,
    /// The id of the source object: incident id, skill id or template id.
    pub ref_id: String,
    /// Creation time of the source object, ms since the Unix epoch (the
    /// hub's convention); retention compares against it.
    pub created_at: i64,
}

/// A document to index: the full text to embed plus the payload to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Stable point id, e.g. `incident:inc-12` (see [`Document::point_id`]).
    pub id: String,
    /// Text to embed (cut to [`MAX_EMBED_TEXT`] bytes when embedded).
    pub text: String,
    /// Payload; `payload.kind` fixes the [`DataClass`].
    pub payload: Payload,
}

impl Document {
    /// A document whose id is `"{kind}:{ref_id}"` and whose excerpt is cut
    /// from `text`.
    pub fn new(
        kind: DocKind,
        ref_id: impl Into<String>,
        title: impl Into<String>,
        text: impl Into<String>,
        created_at: i64,
    ) -> Self {
        let ref_id = ref_id.into();
        let text = text.into();
        Self {
            id: Self::point_id(kind, &ref_id),
            payload: Payload {
                kind,
                node: None,
                platform: None,
                title: title.into(),
                text: excerpt(&text, MAX_EXCERPT),
                ref_id,
                created_at,
            },
            text,
        }
    }

    /// Sets the node.
    #[must_use]
    pub fn with_node(mut self, node: impl Into<String>) -> Self {
        self.payload.node = Some(node.into());
        self
    }

    /// Sets the platform.
    #[must_use]
    pub fn with_platform(mut self, platform: impl Into<String>) -> Self {
        self.payload.platform = Some(platform.into());
        self
    }

    /// The point id of the document of `kind` about `ref_id`.
    pub fn point_id(kind: DocKind, ref_id: &str) -> String {
        format!("{}:{ref_id}", kind.as_str())
    }

    /// The document's data class.
    pub fn class(&self) -> DataClass {
        self.payload.kind.class()
    }

    /// The text that is embedded: title and body, cut to [`MAX_EMBED_TEXT`].
    pub fn embed_text(&self) -> String {
        let joined = if self.payload.title.is_empty() || self.text.starts_with(&self.payload.title)
        {
            self.text.clone()
        } else {
            format!("{}\n{}", self.payload.title, self.text)
        };
        excerpt(&joined, MAX_EMBED_TEXT)
    }
}

/// `s` cut to at most `max` bytes on a char boundary, `…` appended when cut.
pub fn excerpt(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut cut = max;
    while cut > 0 && !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = s.get(..cut).unwrap_or_default().to_owned();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_map_to_classes() {
        for k in DocKind::ALL {
            assert_eq!(DocKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(DocKind::Outcome.class(), DataClass::OutcomeRecord);
        assert_eq!(DocKind::parse("nope"), None);
    }

    #[test]
    fn excerpt_cuts_on_char_boundary() {
        let s = "é".repeat(300);
        let e = excerpt(&s, 5);
        assert_eq!(e, "éé…");
        let d = Document::new(DocKind::Incident, "inc-1", "t", s, 1);
        assert!(d.payload.text.len() <= MAX_EXCERPT + 3);
        assert_eq!(d.id, "incident:inc-1");
    }
}
