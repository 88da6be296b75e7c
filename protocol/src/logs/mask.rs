//! Byte-level masking of variable tokens in log messages.
//!
//! [`mask`] and [`mask_into`] replace the parts of a log message that are
//! almost certainly variables with the placeholder `<*>`, without regular
//! expressions and in a single left-to-right pass over the bytes.
//!
//! What is masked (each occurrence becomes one `<*>`):
//! - numbers, including signed and fractional ones (`42`, `-17`, `0.25`),
//!   and anything that starts with a digit (`10000ms`, `126MB`, `2.5s`,
//!   `80x25`, `0x1f`);
//! - hex runs of 8 or more characters (`ffff3000`, `deadbeef`);
//! - identifiers carrying 4 or more digits (`blk_3886504906`,
//!   `job_1445144423722_0020`) and compounds joined by `.`/`-` in which any
//!   part is variable (`msra-sa-41`, `2.6.5-1.358`, UUIDs);
//! - IPv4 (`10.0.0.1`), IPv6 and MAC addresses; a port after an address is
//!   masked on its own, giving `<*>:<*>`;
//! - domain names that end in a common top-level domain (`ns.example.com`);
//! - absolute paths (`/var/log/syslog`, `C:\Temp\x`), and the part after
//!   `://` of URLs with a path or user part when it holds a digit
//!   (`hdfs://host:9000/x` becomes `hdfs://<*>`);
//! - clock times, together with an adjacent weekday, month, day and year
//!   (`Fri Jun 17 07:07:00 2005` becomes `<*>:<*>:<*>`), and ISO dates;
//! - the value of `key=value` when it holds a variable part (`uid=0`);
//! - a size unit written after a masked number (`16.0 KB` becomes `<*>`);
//! - the well-known value words `true`, `false`, `null`, `root` and `admin`
//!   (any case).
//!
//! Whitespace is collapsed to single spaces and trimmed, and adjacent
//! placeholders (`<*><*>`, `<*>.<*>`) are merged, following the Loghub-2.0
//! template conventions so that masked text compares equal to annotated
//! templates as often as possible.
//!
//! The functions never panic, allocate nothing beyond the output string and
//! accept any input, including binary garbage and very long lines.

/// The placeholder written in place of a variable.
pub const PLACEHOLDER: &str = "<*>";

/// Masks `content` and returns the result as a new string.
pub fn mask(content: &str) -> String {
    let mut out = String::with_capacity(content.len());
    mask_into(content, &mut out);
    out
}

/// Masks `content` into `out`, which is cleared first.
///
/// Reusing one `out` buffer across calls avoids an allocation per line.
pub fn mask_into(content: &str, out: &mut String) {
    out.clear();
    let bytes = content.as_bytes();
    let n = bytes.len();
    let mut recent = Recent::default();
    let mut pos = 0usize;
    let mut merge_candidate = false;
    loop {
        while pos < n && class(bytes[pos]) & C_SPACE != 0 {
            pos += 1;
        }
        if pos >= n {
            break;
        }
        let start = pos;
        let (end, special) = scan_token(bytes, start);
        pos = end;
        let tok = &bytes[start..end];
        let after_number = matches!(recent.last_kind(), Some(Kind::Var | Kind::Day));

        // Fast path: no digit and none of `. / :`: only value words and
        // long hex words could be masked here.
        if !special && tok != PLACEHOLDER.as_bytes() {
            if after_number {
                let core_len = tok
                    .iter()
                    .position(|b| matches!(b, b',' | b';' | b')' | b']'))
                    .unwrap_or(tok.len());
                if is_size_unit(&tok[..core_len]) {
                    push_bytes(out, content, start + core_len, end);
                    recent.set_last_kind(Kind::Other);
                    continue;
                }
            }
            if !word_needs_mask(tok) {
                if !out.is_empty() {
                    out.push(' ');
                }
                let at = out.len();
                push_bytes(out, content, start, end);
                recent.push(at, classify_word(tok));
                continue;
            }
        }

        // Times absorb the date words before them and a year after them.
        let time_form = if special {
            time_token(tok)
        } else {
            // An already masked time after a date (`Jun 17 <*>`).
            (tok == PLACEHOLDER.as_bytes() && recent.date_prefix_start().is_some())
                .then_some(PLACEHOLDER)
        };
        if let Some(time_form) = time_form {
            if let Some(cut) = recent.date_prefix_start() {
                out.truncate(cut);
                recent.clear();
            } else if !out.is_empty() {
                out.push(' ');
            }
            let at = out.len();
            out.push_str(time_form);
            if let Some((ys, ye)) = next_token(bytes, pos)
                && is_year(bytes.get(ys..ye).unwrap_or(&[]))
            {
                pos = ye;
            }
            recent.push(at, Kind::Var);
            continue;
        }
        // A size unit after a masked number joins the number.
        if after_number {
            let core_len = tok
                .iter()
                .position(|b| matches!(b, b',' | b';' | b')' | b']' | b'.' | b':'))
                .unwrap_or(tok.len());
            if is_size_unit(&tok[..core_len]) {
                push_bytes(out, content, start + core_len, end);
                recent.set_last_kind(Kind::Other);
                continue;
            }
        }
        if !out.is_empty() {
            out.push(' ');
        }
        let at = out.len();
        let vars = mask_token(content, start, end, out);
        if vars > 0 && !merge_candidate && out.len() - at != PLACEHOLDER.len() {
            merge_candidate = out.as_bytes().get(at..).is_some_and(needs_merge);
        }
        let kind = classify_emitted(tok, out.get(at..).unwrap_or(""));
        recent.push(at, kind);
    }
    if merge_candidate {
        merge_placeholders(out);
    }
}

/// For a token without digits and without `. / :`: true when one of its
/// compounds is a value word (`true`, `root`, ...) or a long hex word.
fn word_needs_mask(tok: &[u8]) -> bool {
    for comp in tok.split(|&b| class(b) & C_COMPOUND == 0) {
        let mut c = comp;
        while let [b'-', rest @ ..] = c {
            c = rest;
        }
        while let [rest @ .., b'-'] = c {
            c = rest;
        }
        if (c.len() == 4 || c.len() == 5) && is_value_word(c) {
            return true;
        }
        if c.len() >= 8
            && c.split(|&b| b == b'-')
                .any(|a| a.len() >= 8 && a.iter().all(u8::is_ascii_hexdigit))
        {
            return true;
        }
    }
    false
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Bytes of `x` below `n` (n <= 128); the lowest flagged byte is exact.
#[inline]
fn swar_less(x: u64, n: u8) -> u64 {
    x.wrapping_sub(LO * u64::from(n)) & !x & HI
}

/// Bytes `b` of `x` with `m < b < n` (m, n <= 127); exact per byte.
#[inline]
fn swar_between(x: u64, m: u8, n: u8) -> u64 {
    let t = LO * 127;
    ((LO * (127 + u64::from(n))).wrapping_sub(x & t) & !x & ((x & t) + LO * (127 - u64::from(m))))
        & HI
}

/// Finds the end of the token starting at `start` (the next ASCII
/// whitespace) and whether it holds a digit or one of `. / :`, eight bytes
/// at a time.
#[inline]
fn scan_token(bytes: &[u8], start: usize) -> (usize, bool) {
    let mut pos = start;
    let mut special = false;
    while let Some(chunk) = bytes.get(pos..).and_then(|s| s.first_chunk::<8>()) {
        let w = u64::from_le_bytes(*chunk);
        let low = swar_less(w, 0x21);
        let sp = swar_between(w, b'.' - 1, b':' + 1);
        if low == 0 {
            special |= sp != 0;
            pos += 8;
            continue;
        }
        let k = (low.trailing_zeros() / 8) as usize;
        let before = (1u64 << (8 * k)).wrapping_sub(1);
        special |= sp & before != 0;
        if chunk.get(k).is_some_and(u8::is_ascii_whitespace) {
            return (pos + k, special);
        }
        // A control byte that is not whitespace belongs to the token.
        pos += k + 1;
    }
    while let Some(&b) = bytes.get(pos) {
        if b.is_ascii_whitespace() {
            break;
        }
        special |= matches!(b, b'.'..=b':');
        pos += 1;
    }
    (pos, special)
}

/// Kind of a verbatim word (weekday, month or other).
fn classify_word(tok: &[u8]) -> Kind {
    match tok.first() {
        Some(f) if f.is_ascii_uppercase() && tok.len() <= 10 => {
            let core = strip_trailing_punct(tok);
            if is_weekday(core) {
                Kind::Weekday
            } else if is_month(core) {
                Kind::Month
            } else {
                Kind::Other
            }
        }
        _ => Kind::Other,
    }
}

/// Kinds of recently emitted tokens, used to absorb dates around times.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Weekday,
    Month,
    Day,
    IsoDate,
    Var,
    Other,
}

/// The last few emitted tokens with their start offsets in the output.
#[derive(Default)]
struct Recent {
    items: [(usize, Option<Kind>); 3],
}

impl Recent {
    fn push(&mut self, at: usize, kind: Kind) {
        self.items[0] = self.items[1];
        self.items[1] = self.items[2];
        self.items[2] = (at, Some(kind));
    }
    fn clear(&mut self) {
        self.items = [(0, None); 3];
    }
    fn last_kind(&self) -> Option<Kind> {
        self.items[2].1
    }
    fn set_last_kind(&mut self, kind: Kind) {
        if self.items[2].1.is_some() {
            self.items[2].1 = Some(kind);
        }
    }
    /// Output offset where a date written before a time starts, if any
    /// (`[Weekday] Month Day`, `Weekday`, or an ISO date).
    fn date_prefix_start(&self) -> Option<usize> {
        let k = |i: usize| self.items[i].1;
        let at = |i: usize| self.items[i].0;
        match (k(0), k(1), k(2)) {
            (Some(Kind::Weekday), Some(Kind::Month), Some(Kind::Day)) => Some(at(0)),
            (_, Some(Kind::Month), Some(Kind::Day)) => Some(at(1)),
            (_, _, Some(Kind::IsoDate)) => Some(at(2)),
            (_, Some(Kind::Weekday), Some(Kind::Month)) => Some(at(1)),
            _ => None,
        }
    }
}

/// Finds the next whitespace-separated token at or after `pos`.
fn next_token(bytes: &[u8], mut pos: usize) -> Option<(usize, usize)> {
    while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
        pos += 1;
    }
    if pos >= bytes.len() {
        return None;
    }
    let start = pos;
    while pos < bytes.len() && !bytes[pos].is_ascii_whitespace() {
        pos += 1;
    }
    Some((start, pos))
}

/// Appends `content[a..b]`; both ends are ASCII boundaries in practice.
fn push_bytes(out: &mut String, content: &str, a: usize, b: usize) {
    if let Some(s) = content.get(a..b) {
        out.push_str(s);
    }
}

fn classify_emitted(tok: &[u8], emitted: &str) -> Kind {
    if emitted == PLACEHOLDER {
        if tok.len() <= 2 && tok.iter().all(u8::is_ascii_digit) {
            return Kind::Day;
        }
        if is_iso_date(tok) {
            return Kind::IsoDate;
        }
        return Kind::Var;
    }
    let core = strip_trailing_punct(tok);
    if is_weekday(core) {
        Kind::Weekday
    } else if is_month(core) {
        Kind::Month
    } else {
        Kind::Other
    }
}

fn strip_trailing_punct(tok: &[u8]) -> &[u8] {
    let mut end = tok.len();
    while end > 0 && matches!(tok[end - 1], b',' | b'.' | b';') {
        end -= 1;
    }
    &tok[..end]
}

fn is_weekday(t: &[u8]) -> bool {
    matches!(
        t,
        b"Mon"
            | b"Tue"
            | b"Wed"
            | b"Thu"
            | b"Fri"
            | b"Sat"
            | b"Sun"
            | b"Monday"
            | b"Tuesday"
            | b"Wednesday"
            | b"Thursday"
            | b"Friday"
            | b"Saturday"
            | b"Sunday"
    )
}

fn is_month(t: &[u8]) -> bool {
    matches!(
        t,
        b"Jan"
            | b"Feb"
            | b"Mar"
            | b"Apr"
            | b"May"
            | b"Jun"
            | b"Jul"
            | b"Aug"
            | b"Sep"
            | b"Sept"
            | b"Oct"
            | b"Nov"
            | b"Dec"
            | b"January"
            | b"February"
            | b"March"
            | b"April"
            | b"June"
            | b"July"
            | b"August"
            | b"September"
            | b"October"
            | b"November"
            | b"December"
    )
}

fn is_year(t: &[u8]) -> bool {
    t.len() == 4 && t.iter().all(u8::is_ascii_digit) && (t[0] == b'1' || t[0] == b'2')
}

/// `YYYY-MM-DD` (optionally followed by `T...`, handled as one compound).
fn is_iso_date(t: &[u8]) -> bool {
    t.len() >= 10
        && t[..4].iter().all(u8::is_ascii_digit)
        && t[4] == b'-'
        && t[5..7].iter().all(u8::is_ascii_digit)
        && t[7] == b'-'
        && t[8..10].iter().all(u8::is_ascii_digit)
}

/// Recognises a whole token that is a clock time: `H:MM`, `HH:MM:SS`, with
/// an optional fraction (`.123` or `,123`) and an optional trailing `Z`.
/// Returns the masked form.
fn time_token(t: &[u8]) -> Option<&'static str> {
    let t = strip_trailing_punct(t);
    let mut groups = 0usize;
    let mut i = 0usize;
    loop {
        let s = i;
        while i < t.len() && t[i].is_ascii_digit() {
            i += 1;
        }
        let len = i - s;
        if len == 0 || len > 2 || (groups > 0 && len != 2) {
            return None;
        }
        groups += 1;
        if i < t.len() && t[i] == b':' && groups < 3 {
            i += 1;
            continue;
        }
        break;
    }
    if groups < 2 {
        return None;
    }
    if i < t.len() && (t[i] == b'.' || t[i] == b',') && groups == 3 {
        let s = i + 1;
        i = s;
        while i < t.len() && t[i].is_ascii_digit() {
            i += 1;
        }
        if i == s {
            return None;
        }
    }
    if i < t.len() && t[i] == b'Z' {
        i += 1;
    }
    if i != t.len() {
        return None;
    }
    Some(if groups == 3 {
        "<*>:<*>:<*>"
    } else {
        "<*>:<*>"
    })
}

fn is_size_unit(t: &[u8]) -> bool {
    matches!(
        t,
        b"B" | b"KB"
            | b"kB"
            | b"MB"
            | b"GB"
            | b"TB"
            | b"PB"
            | b"KiB"
            | b"MiB"
            | b"GiB"
            | b"TiB"
            | b"PiB"
    )
}

const C_COMPOUND: u8 = 1;
const C_PATH_DELIM: u8 = 2;
const C_VALUE_STOP: u8 = 4;
const C_TOKEN_DELIM: u8 = 8;
const C_HEX: u8 = 16;
const C_DIGIT: u8 = 32;
const C_SPACE: u8 = 64;

/// Byte classes, computed at compile time.
static CLASS: [u8; 256] = build_classes();

const fn build_classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0usize;
    while i < 256 {
        let b = i as u8;
        let mut c = 0u8;
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-' {
            c |= C_COMPOUND;
        }
        if b.is_ascii_digit() {
            c |= C_DIGIT;
        }
        if b.is_ascii_hexdigit() {
            c |= C_HEX;
        }
        let path_delim = matches!(
            b,
            b',' | b'!'
                | b';'
                | b':'
                | b'='
                | b'|'
                | b'"'
                | b'\''
                | b'['
                | b']'
                | b'('
                | b')'
                | b'{'
                | b'}'
        ) || b.is_ascii_whitespace();
        if path_delim {
            c |= C_PATH_DELIM | C_VALUE_STOP | C_TOKEN_DELIM;
        }
        if matches!(b, b'<' | b'>' | b'&') {
            c |= C_VALUE_STOP;
        }
        if b.is_ascii_whitespace() {
            c |= C_SPACE;
        }
        if matches!(b, b'.' | b'-' | b'+' | b'@' | b'#' | b'$' | b'%' | b'&') {
            c |= C_TOKEN_DELIM;
        }
        t[i] = c;
        i += 1;
    }
    t
}

#[inline]
fn class(b: u8) -> u8 {
    CLASS[usize::from(b)]
}

/// Bytes that end a path (the Loghub "path delimiters").
#[inline]
fn is_path_delim(b: u8) -> bool {
    class(b) & C_PATH_DELIM != 0
}

/// Masks one whitespace-free token `content[start..end]` into `out`.
/// Returns the number of placeholders written.
fn mask_token(content: &str, start: usize, end: usize, out: &mut String) -> usize {
    let bytes = content.as_bytes();
    let end = end.min(bytes.len());
    let mut vars = 0usize;
    let mut i = start;
    let mut copied = start; // bytes in [copied, i) are pending literal copy
    while i < end {
        let b = bytes[i];
        let cls = class(b);
        if cls & C_COMPOUND != 0 {
            let s = i;
            let mut j = i;
            let mut var = false;
            let mut has_dot = false;
            let mut has_digit = false;
            let mut plain_hex = true; // only hex digits and letters so far
            let mut a_start = i;
            let mut a_digits = 0usize;
            let mut a_hex = true;
            while j < end {
                let c = bytes[j];
                let k = class(c);
                if k & C_COMPOUND == 0 {
                    break;
                }
                if c == b'.' || c == b'-' {
                    var = var || atom_is_variable(&bytes[a_start..j], a_digits, a_hex);
                    has_dot |= c == b'.';
                    plain_hex = false;
                    a_start = j + 1;
                    a_digits = 0;
                    a_hex = true;
                } else if k & C_DIGIT != 0 {
                    a_digits += 1;
                    has_digit = true;
                } else if k & C_HEX == 0 {
                    a_hex = false;
                    plain_hex = false;
                }
                j += 1;
            }
            var = var || atom_is_variable(&bytes[a_start..j], a_digits, a_hex);
            // Shapes that continue past the compound with a colon.
            if j < end && bytes[j] == b':' {
                if bytes[s].is_ascii_alphabetic()
                    && bytes.get(j + 1..j + 3) == Some(b"//".as_slice())
                {
                    // URL: scheme://rest
                    let rs = j + 3;
                    let mut k = rs;
                    let mut slash_or_at = false;
                    let mut digit = false;
                    while k < end && !matches!(bytes[k], b']' | b'>' | b')' | b'"' | b'\'' | b',') {
                        slash_or_at |= bytes[k] == b'/' || bytes[k] == b'@';
                        digit |= bytes[k].is_ascii_digit();
                        k += 1;
                    }
                    while k > rs && bytes[k - 1] == b'.' {
                        k -= 1;
                    }
                    if slash_or_at {
                        push_bytes(out, content, copied, rs);
                        if digit {
                            out.push_str(PLACEHOLDER);
                            vars += 1;
                            copied = k;
                        } else {
                            copied = rs;
                        }
                        i = k;
                    } else {
                        // Just host[:port]: mask its parts like any text.
                        i = rs;
                    }
                    continue;
                }
                if j == s + 1 && bytes[s].is_ascii_alphabetic() && bytes.get(j + 1) == Some(&b'\\')
                {
                    // Windows path: C:\...
                    push_bytes(out, content, copied, s);
                    let mut k = j + 2;
                    while k < end && !matches!(bytes[k], b'"' | b'\'' | b',' | b';' | b')' | b']') {
                        k += 1;
                    }
                    out.push_str(PLACEHOLDER);
                    vars += 1;
                    i = k;
                    copied = k;
                    continue;
                }
                if plain_hex
                    && j - s <= 4
                    && let Some(k) = hex_colon_run(bytes, s, end)
                {
                    push_bytes(out, content, copied, s);
                    out.push_str(PLACEHOLDER);
                    vars += 1;
                    i = k;
                    copied = k;
                    continue;
                }
            }
            // Trim leading dots/dashes (keeping a minus sign before a digit)
            // and trailing dots/dashes.
            let mut cs = s;
            while cs < j && (bytes[cs] == b'.' || bytes[cs] == b'-') {
                if bytes[cs] == b'-' && cs + 1 < j && bytes[cs + 1].is_ascii_digit() {
                    break;
                }
                cs += 1;
            }
            let mut ce = j;
            while ce > cs && (bytes[ce - 1] == b'.' || bytes[ce - 1] == b'-') {
                ce -= 1;
            }
            if ce > cs {
                let comp = &bytes[cs..ce];
                let variable = var
                    || (has_dot && is_domain(comp))
                    || (!has_digit && (comp.len() == 4 || comp.len() == 5) && is_value_word(comp));
                if variable {
                    push_bytes(out, content, copied, cs);
                    out.push_str(PLACEHOLDER);
                    vars += 1;
                    copied = ce;
                }
            }
            i = j;
            continue;
        }
        match b {
            // Absolute path: /a/b/c, starting at a path boundary.
            b'/' if (i == start || is_path_delim(bytes[i - 1]))
                && i + 1 < end
                && bytes[i + 1] != b'/'
                && !is_path_delim(bytes[i + 1]) =>
            {
                push_bytes(out, content, copied, i);
                let mut j = i + 1;
                while j < end && !is_path_delim(bytes[j]) {
                    j += 1;
                }
                out.push_str(PLACEHOLDER);
                vars += 1;
                i = j;
                copied = j;
                continue;
            }
            // key=value with a variable-looking value.
            b'=' => {
                let vs = i + 1;
                let mut j = vs;
                let mut digit = false;
                while j < end && class(bytes[j]) & C_VALUE_STOP == 0 {
                    digit |= bytes[j].is_ascii_digit();
                    j += 1;
                }
                let value = &bytes[vs..j];
                if digit && value_is_variable(value) {
                    push_bytes(out, content, copied, vs);
                    out.push_str(PLACEHOLDER);
                    vars += 1;
                    i = j;
                    copied = j;
                    continue;
                }
            }
            // IPv6 starting with "::".
            b':' if bytes.get(i + 1) == Some(&b':')
                && (i == start || class(bytes[i - 1]) & C_COMPOUND == 0) =>
            {
                if let Some(k) = hex_colon_run(bytes, i, end) {
                    push_bytes(out, content, copied, i);
                    out.push_str(PLACEHOLDER);
                    vars += 1;
                    i = k;
                    copied = k;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    push_bytes(out, content, copied, end);
    vars
}

/// A `key=value` value is variable when one of its atoms (runs of
/// `[A-Za-z0-9_]`) is.
fn value_is_variable(value: &[u8]) -> bool {
    value
        .split(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
        .any(|a| {
            let digits = a.iter().filter(|c| c.is_ascii_digit()).count();
            let hex = a.iter().all(u8::is_ascii_hexdigit);
            atom_is_variable(a, digits, hex)
        })
}

/// IPv6, MAC and similar hex groups separated by colons. Needs a digit, and
/// three or more groups with a letter or a 3-4 digit group (so clock times
/// do not match), six or more groups, or a `::`. Returns the end of the run.
fn hex_colon_run(bytes: &[u8], i: usize, end: usize) -> Option<usize> {
    let mut j = i;
    let mut groups = 0usize;
    let mut double = false;
    let mut letter = false;
    let mut digit = false;
    let mut long_group = false;
    let mut glen = 0usize;
    while j < end {
        let c = bytes[j];
        if c.is_ascii_hexdigit() {
            glen += 1;
            if glen > 4 {
                return None;
            }
            if c.is_ascii_digit() {
                digit = true;
            } else {
                letter = true;
            }
        } else if c == b':' {
            if glen > 0 {
                groups += 1;
                long_group |= glen >= 3;
            } else if j > i && bytes[j - 1] == b':' {
                double = true;
            }
            glen = 0;
        } else {
            break;
        }
        j += 1;
    }
    if glen > 0 {
        groups += 1;
        long_group |= glen >= 3;
    }
    if j < end && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
        return None;
    }
    let ends_in_colon = j > i && bytes[j - 1] == b':' && !(j > i + 1 && bytes[j - 2] == b':');
    if !digit || ends_in_colon {
        return None;
    }
    let shape = (groups >= 3 && (letter || long_group)) || groups >= 6 || (double && groups >= 1);
    shape.then_some(j)
}

/// Well-known value words masked like Loghub-2.0 (booleans, null and the
/// default user names).
fn is_value_word(c: &[u8]) -> bool {
    c.eq_ignore_ascii_case(b"true")
        || c.eq_ignore_ascii_case(b"null")
        || c.eq_ignore_ascii_case(b"root")
        || c.eq_ignore_ascii_case(b"false")
        || c.eq_ignore_ascii_case(b"admin")
}

/// An atom (a compound part between `.` and `-`) is variable when it starts
/// with a digit, has 4 or more digits, or is a hex run of 8 or more.
#[inline]
fn atom_is_variable(a: &[u8], digits: usize, hex: bool) -> bool {
    match a.first() {
        None => false,
        Some(f) if f.is_ascii_digit() => true,
        Some(_) => digits >= 4 || (hex && a.len() >= 8),
    }
}

/// Host names ending in a common top-level domain.
fn is_domain(c: &[u8]) -> bool {
    let mut labels = 0usize;
    let mut last: &[u8] = &[];
    for label in c.split(|&b| b == b'.') {
        if label.is_empty()
            || !label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return false;
        }
        labels += 1;
        last = label;
    }
    if labels < 2 {
        return false;
    }
    let generic = matches!(
        last,
        b"com"
            | b"net"
            | b"org"
            | b"edu"
            | b"gov"
            | b"mil"
            | b"info"
            | b"biz"
            | b"arpa"
            | b"local"
            | b"lan"
            | b"localdomain"
            | b"internal"
    );
    if generic {
        return true;
    }
    labels >= 3
        && matches!(
            last,
            b"uk"
                | b"de"
                | b"jp"
                | b"cn"
                | b"ru"
                | b"fr"
                | b"pl"
                | b"nl"
                | b"br"
                | b"au"
                | b"es"
                | b"se"
                | b"ch"
                | b"ca"
                | b"kr"
                | b"tw"
                | b"hk"
                | b"cz"
                | b"dk"
                | b"fi"
                | b"gr"
                | b"hu"
                | b"ie"
                | b"il"
                | b"nz"
                | b"sg"
                | b"za"
                | b"mx"
                | b"ar"
                | b"ro"
                | b"ua"
                | b"tr"
                | b"vn"
                | b"th"
                | b"cl"
                | b"pt"
                | b"at"
                | b"be"
                | b"us"
        )
}

/// Loghub-2.0 token delimiters (used by the WV rule).
#[inline]
fn is_token_delim(b: u8) -> bool {
    class(b) & C_TOKEN_DELIM != 0
}

/// True when a masked region has a placeholder that the WV, DV or CV rule
/// would rewrite.
fn needs_merge(region: &[u8]) -> bool {
    let mut k = 0usize;
    while let Some(rel) = region
        .get(k..)
        .and_then(|x| x.iter().position(|&c| c == b'<'))
    {
        let at = k + rel;
        if region.get(at..at + 3) == Some(PLACEHOLDER.as_bytes()) {
            let after = at + 3;
            let before_bad = at > 0 && region.get(at - 1).is_some_and(|&c| !is_token_delim(c));
            let after_bad = region.get(after).is_some_and(|&c| !is_token_delim(c));
            let dotted = region.get(after..after + 4) == Some(b".<*>".as_slice());
            if before_bad || after_bad || dotted {
                return true;
            }
            k = after;
        } else {
            k = at + 1;
        }
    }
    false
}

/// Applies the Loghub-2.0 placeholder rules to a masked text in place:
/// a delimiter-bounded word containing `<*>` (and no `/`) becomes `<*>`
/// (WV), then `<*>.<*>` (DV) and `<*><*>` (CV) become `<*>`.
pub fn merge_placeholders(out: &mut String) {
    let b = out.as_bytes();
    let ph = PLACEHOLDER.as_bytes();
    let mut needed = false;
    let mut k = 0usize;
    while let Some(rel) = b.get(k..).and_then(|x| x.windows(3).position(|w| w == ph)) {
        let at = k + rel;
        let after = at + 3;
        let before_bad = at > 0 && b.get(at - 1).is_some_and(|&c| !is_token_delim(c));
        let after_bad = b.get(after).is_some_and(|&c| !is_token_delim(c));
        let dotted = b.get(after..after + 4) == Some(b".<*>".as_slice());
        if before_bad || after_bad || dotted {
            needed = true;
            break;
        }
        k = after;
    }
    if !needed {
        return;
    }
    let mut res = String::with_capacity(out.len());
    let src = out.as_str();
    let bytes = src.as_bytes();
    let mut i = 0usize;
    while i < bytes.len() {
        if is_token_delim(bytes[i]) {
            let s = i;
            while i < bytes.len() && is_token_delim(bytes[i]) {
                i += 1;
            }
            push_bytes(&mut res, src, s, i);
            continue;
        }
        let s = i;
        while i < bytes.len() && !is_token_delim(bytes[i]) {
            i += 1;
        }
        let word = src.get(s..i).unwrap_or("");
        if word.len() > PLACEHOLDER.len() && word.contains(PLACEHOLDER) && !word.contains('/') {
            res.push_str(PLACEHOLDER);
        } else {
            res.push_str(word);
        }
    }
    loop {
        let before = res.len();
        while res.contains("<*>.<*>") {
            res = res.replace("<*>.<*>", PLACEHOLDER);
        }
        while res.contains("<*><*>") {
            res = res.replace("<*><*>", PLACEHOLDER);
        }
        if res.len() == before {
            break;
        }
    }
    *out = res;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_words() {
        assert_eq!(mask("took 15 ms"), "took <*> ms");
        assert_eq!(mask("value -17 and 0.25"), "value <*> and <*>");
        assert_eq!(
            mask("ssh2 sha256 e820 Slf4jLogger"),
            "ssh2 sha256 e820 Slf4jLogger"
        );
        assert_eq!(
            mask("timeout of 10000ms exceeded"),
            "timeout of <*> exceeded"
        );
        assert_eq!(mask("127MB LOWMEM"), "<*> LOWMEM");
        assert_eq!(mask("Initializing CPU#0"), "Initializing CPU#<*>");
    }

    #[test]
    fn identifiers() {
        assert_eq!(mask("block blk_-12345678901 done"), "block <*> done");
        assert_eq!(mask("task_20230101_0004_m_000001 started"), "<*> started");
        assert_eq!(
            mask("org.example.v2.app.Main loaded"),
            "org.example.v2.app.Main loaded"
        );
        assert_eq!(mask("node web-host-12 up"), "node <*> up");
        assert_eq!(mask("id 123e4567-e89b-12d3-a456-426614174000"), "id <*>");
        assert_eq!(
            mask("session 0x14ed93111f20027 closed"),
            "session <*> closed"
        );
        assert_eq!(mask("object deadbeef01 at ffee0011"), "object <*> at <*>");
    }

    #[test]
    fn addresses() {
        assert_eq!(mask("from 192.168.1.20 port 22"), "from <*> port <*>");
        assert_eq!(mask("peer 10.0.0.1:8080 closed"), "peer <*>:<*> closed");
        assert_eq!(mask("request /10.0.0.7:4455"), "request <*>:<*>");
        assert_eq!(mask("addr fe80::1ff:fe23:4567:890a up"), "addr <*> up");
        assert_eq!(mask("mac 00:1a:2b:3c:4d:5e"), "mac <*>");
        assert_eq!(mask("host mail.example.com said"), "host <*> said");
        assert_eq!(
            mask("class java.io.IOException"),
            "class java.io.IOException"
        );
        assert_eq!(mask("at box-3/10.1.2.3:9000"), "at <*>/<*>:<*>");
    }

    #[test]
    fn paths_and_urls() {
        assert_eq!(mask("open /var/log/syslog failed"), "open <*> failed");
        assert_eq!(mask("node '/dev/sda1'"), "node '<*>'");
        assert_eq!(mask("LABEL=/ and n/a"), "LABEL=/ and n/a");
        assert_eq!(
            mask("see http://example.org/help"),
            "see http://example.org/help"
        );
        assert_eq!(mask("fetch hdfs://box:9000/in.txt"), "fetch hdfs://<*>");
        assert_eq!(mask("to C:\\Users\\me\\x.tmp"), "to <*>");
        assert_eq!(
            mask("ratio A/B PS/2 [8086/2410]"),
            "ratio A/B PS/<*> [<*>/<*>]"
        );
    }

    #[test]
    fn key_values() {
        assert_eq!(
            mask("uid=0 euid=0 tty=ssh ruser= rhost=1.2.3.4"),
            "uid=<*> euid=<*> tty=ssh ruser= rhost=<*>"
        );
        assert_eq!(mask("type=40002,7163.0,old=6983.0"), "type=<*>,<*>,old=<*>");
        assert_eq!(mask("steps=1514##7007##5483"), "steps=<*>");
        assert_eq!(
            mask("limit=<memory:1024, vCores:-17>"),
            "limit=<memory:<*>, vCores:<*>"
        );
        assert_eq!(mask("user=root ok=true"), "user=<*> ok=<*>");
    }

    #[test]
    fn times_and_sizes() {
        assert_eq!(mask("at Fri Jun 17 07:07:00 2005"), "at <*>:<*>:<*>");
        assert_eq!(
            mask("built Sat May 8 09:04:50 EDT 2004"),
            "built <*>:<*>:<*> EDT <*>"
        );
        assert_eq!(mask("at 12:30 today"), "at <*>:<*> today");
        assert_eq!(mask("on 2024-01-02 10:11:12,345 x"), "on <*>:<*>:<*> x");
        assert_eq!(mask("size 16.0 B, free 318.4 KB)"), "size <*>, free <*>)");
        assert_eq!(mask("duration 2.5s"), "duration <*>");
    }

    #[test]
    fn whitespace_and_merging() {
        assert_eq!(mask("  a   b\t c  "), "a b c");
        assert_eq!(mask(""), "");
        assert_eq!(mask("   "), "");
        assert_eq!(mask("v 1.2.3-4.5"), "v <*>");
    }

    #[test]
    fn swar_scan_matches_bytewise() {
        const TABLE: &[u8] = b" \t\r\n\x0b\x01azAZ09-./:;\\<>=\x80\xff";
        let mut seed = 0xdead_beef_u64;
        for _ in 0..5000 {
            let mut v = Vec::new();
            for _ in 0..(seed % 40) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                v.push(TABLE[(seed >> 33) as usize % TABLE.len()]);
            }
            for start in 0..v.len() {
                let mut end = start;
                while end < v.len() && !v[end].is_ascii_whitespace() {
                    end += 1;
                }
                let special = v[start..end].iter().any(|b| matches!(b, b'.'..=b':'));
                assert_eq!(scan_token(&v, start), (end, special), "{v:?} from {start}");
            }
        }
    }

    #[test]
    fn never_panics_on_garbage() {
        let samples: Vec<Vec<u8>> = vec![
            vec![0xff, 0xfe, b'1', b':', b':'],
            b"::::".to_vec(),
            b"=".to_vec(),
            b"a=".to_vec(),
            b"/".to_vec(),
            b"//".to_vec(),
            b"x://".to_vec(),
            b"C:\\".to_vec(),
            b"-".to_vec(),
            b"-.-.-1".to_vec(),
            b"12:".to_vec(),
            b"12:34:".to_vec(),
            b"::1".to_vec(),
            b"\xc3\xa9t\xc3\xa9 42 /caf\xc3\xa9 k=\xc3\xa91".to_vec(),
        ];
        for s in samples {
            let text = String::from_utf8_lossy(&s);
            let _ = mask(&text);
        }
        const TABLE: &[u8] = b" 0123456789abcdefxX:.-=/\\,;'\"[]()<>*#_\t\xc3\xa9Z";
        let mut seed = 0x1234_5678_u64;
        for _ in 0..2000 {
            let mut v = Vec::new();
            for _ in 0..(seed % 64) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                v.push(TABLE[(seed >> 33) as usize % TABLE.len()]);
            }
            let text = String::from_utf8_lossy(&v);
            let m = mask(&text);
            assert!(!m.contains("<*><*>"));
        }
        let big = "word 123 ".repeat(200_000);
        assert!(mask(&big).len() < big.len());
    }
}
