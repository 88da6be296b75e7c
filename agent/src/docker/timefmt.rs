//! Timestamps: the engine's RFC 3339 strings to Unix nanoseconds, and the
//! wall clock. No calendar crate needed for the few formats the engine emits.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall clock, Unix nanoseconds (0 if the clock is before 1970).
pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Wall clock, Unix milliseconds.
pub fn now_ms() -> i64 {
    now_ns() / 1_000_000
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn num(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` to Unix nanoseconds.
///
/// Returns `None` for anything else, and for Go's zero time
/// (`0001-01-01T00:00:00Z`), which the engine uses for "never".
pub fn parse_rfc3339_ns(s: &str) -> Option<i64> {
    let s = s.trim();
    let date = s.get(0..10)?;
    let sep = s.get(10..11)?;
    if sep != "T" && sep != "t" && sep != " " {
        return None;
    }
    let rest = s.get(11..)?;
    let (y, mo, d) = (
        num(date.get(0..4)?)?,
        num(date.get(5..7)?)?,
        num(date.get(8..10)?)?,
    );
    if date.get(4..5)? != "-" || date.get(7..8)? != "-" {
        return None;
    }
    if y <= 1 || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let (h, mi, sec) = (
        num(rest.get(0..2)?)?,
        num(rest.get(3..5)?)?,
        num(rest.get(6..8)?)?,
    );
    if rest.get(2..3)? != ":" || rest.get(5..6)? != ":" || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut tail = rest.get(8..)?;
    let mut frac_ns = 0i64;
    if let Some(f) = tail.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let mut scale = 100_000_000i64;
        for b in f.bytes().take(digits.min(9)) {
            frac_ns += i64::from(b - b'0') * scale;
            scale /= 10;
        }
        tail = f.get(digits..)?;
    }
    let offset_s = match tail {
        "Z" | "z" => 0,
        _ => {
            let sign = match tail.get(0..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            if tail.len() != 6 || tail.get(3..4)? != ":" {
                return None;
            }
            let (oh, om) = (num(tail.get(1..3)?)?, num(tail.get(4..6)?)?);
            sign * (oh * 3600 + om * 60)
        }
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

/// Formats Unix nanoseconds as the engine's `since` argument: `seconds.nanoseconds`.
pub(crate) fn since_arg(ns: i64) -> String {
    format!(
        "{}.{:09}",
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_engine_timestamps() {
        assert_eq!(parse_rfc3339_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ns("2026-11-25T10:24:35.123456789Z"),
            Some(1_795_602_275_123_456_789)
        );
        assert_eq!(
            parse_rfc3339_ns("2026-11-25T11:24:35.5+01:00"),
            Some(1_795_602_275_500_000_000)
        );
        // more than 9 fraction digits are truncated
        assert_eq!(
            parse_rfc3339_ns("1970-01-01T00:00:01.1234567899Z"),
            Some(1_123_456_789)
        );
        assert_eq!(parse_rfc3339_ns("0001-01-01T00:00:00Z"), None);
        for bad in [
            "",
            "garbage",
            "2026-13-01T00:00:00Z",
            "2026-11-25T10:24:35",
            "2026-11-25T10:24:35.Z",
            "2026-11-25T1a:24:35Z",
            "2026-11-25T10:24:35+0100",
            "ü026-11-25T10:24:35Z",
        ] {
            assert_eq!(parse_rfc3339_ns(bad), None, "{bad}");
        }
    }

    #[test]
    fn since_argument_has_nanoseconds() {
        assert_eq!(since_arg(1_700_000_000_000_000_001), "1700000000.000000001");
        assert_eq!(since_arg(5), "0.000000005");
    }
}
