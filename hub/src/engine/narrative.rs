//! The deterministic narrative: what happened, where, since when, the likely
//! cause, what is affected and the evidence it rests on.
//!
//! Built only from the incident's own fields (facts, masked templates and
//! evidence summaries); it never sees a raw log line. Times are UTC,
//! formatted without a clock or time-zone database. The LLM narrative, when
//! there is one, is a separate artefact the shell adds on top.

use std::fmt::Write as _;

use super::model::{Incident, IncidentState};

/// Renders the narrative of `inc`.
pub(crate) fn render(inc: &Incident) -> String {
    let mut s = String::with_capacity(512 + 96 * inc.evidence.len());
    let _ = writeln!(
        s,
        "{} incident {}: {}.",
        capitalize(inc.severity.as_str()),
        inc.id,
        inc.title
    );
    if !inc.nodes.is_empty() {
        let _ = writeln!(s, "Where: {}.", inc.nodes.join(", "));
    }
    let _ = write!(
        s,
        "Since {} (opened {}); ",
        utc(inc.since_ms),
        utc(inc.opened_at_ms)
    );
    match (inc.state, &inc.acknowledged, &inc.resolved) {
        (IncidentState::Resolved, _, Some(r)) => {
            let how = if r.by == super::ENGINE_ACTOR {
                " automatically after its signals cleared"
            } else {
                ""
            };
            let _ = writeln!(s, "resolved by {} at {}{how}.", r.by, utc(r.at_ms));
        }
        (IncidentState::Acknowledged, Some(a), _) => {
            let _ = writeln!(s, "acknowledged by {} at {}.", a.by, utc(a.at_ms));
        }
        (state, _, _) => {
            let _ = writeln!(s, "{}.", state.as_str());
        }
    }
    if inc.reopen_count > 0 {
        let _ = writeln!(s, "Reopened {} time(s).", inc.reopen_count);
    }
    if let Some(cause) = &inc.likely_cause {
        let cites = cause_citations(inc);
        let _ = writeln!(s, "Likely cause: {cause}{cites}.");
    }
    if inc.cause_chain.len() > 1 {
        let chain: Vec<&str> = inc.cause_chain.iter().map(|d| d.as_str()).collect();
        let _ = writeln!(s, "Chain: {}.", chain.join(" -> "));
    }
    let flaps: Vec<String> = inc
        .conditions
        .iter()
        .filter(|c| c.activations > 1)
        .map(|c| format!("{} ({} times)", c.subject.display(), c.activations))
        .collect();
    if !flaps.is_empty() {
        let _ = writeln!(s, "Flapping: {}.", flaps.join(", "));
    }
    if !inc.affected.is_empty() {
        let _ = writeln!(s, "Affected: {}.", inc.affected.join(", "));
    }
    if inc.storm {
        let _ = writeln!(
            s,
            "Storm: throttling merged {} new problem(s) into this incident.",
            inc.merged_count
        );
    }
    let _ = write!(s, "Evidence ({} entries", inc.evidence_total);
    if inc.evidence_omitted > 0 {
        let _ = write!(s, ", {} omitted", inc.evidence_omitted);
    }
    s.push_str("):\n");
    for e in &inc.evidence {
        let _ = write!(
            s,
            "- [E{}] {} {} ({}): {}",
            e.n,
            utc(e.at_ms),
            e.detector.as_str(),
            e.severity.as_str(),
            e.summary
        );
        if e.count > 1 {
            let _ = write!(s, " (x{} until {})", e.count, utc(e.last_at_ms));
        }
        s.push('\n');
    }
    s
}

/// ` [E1, E4]`: the evidence entries of the cause condition (at most three).
fn cause_citations(inc: &Incident) -> String {
    let Some(cause_fp) = inc.cause_fingerprint.as_deref() else {
        return String::new();
    };
    let refs: Vec<String> = inc
        .evidence
        .iter()
        .filter(|e| e.fingerprint == cause_fp)
        .take(3)
        .map(|e| format!("E{}", e.n))
        .collect();
    if refs.is_empty() {
        String::new()
    } else {
        format!(" [{}]", refs.join(", "))
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `2024-05-01 10:00:00Z` from Unix ms (proleptic Gregorian, UTC).
pub(crate) fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era.saturating_mul(400);
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y.saturating_add(1) } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(1_714_557_600_000), "2024-05-01 10:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(utc(-1000), "1969-12-31 23:59:59Z");
        // Extreme values render something without panicking.
        let _ = utc(i64::MAX);
        let _ = utc(i64::MIN);
    }
}
