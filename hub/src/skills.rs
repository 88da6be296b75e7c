//! Skills: the validator and the loader for Wingman's markdown runbooks.
//!
//! A skill is one markdown file with a small YAML frontmatter; its contract is
//! `docs/specs/skill.md`. This module checks every MUST rule of that
//! specification that can be checked mechanically ([`parse_skill`] for one
//! file, [`check_library`] for `skills/skills-library.md`), loads built-in and
//! operator skills into a [`Library`] ([`load`]), and matches skills to
//! incidents ([`suggest`]) or to a free-text query ([`search`]).
//!
//! The frontmatter is read by a small, strict parser for exactly the YAML
//! subset the specification allows (scalars, flow or block lists of scalars,
//! one level of nested mapping). Anything outside that subset, or anything a
//! full YAML parser could read differently (anchors, aliases, tags, multi-line
//! strings, comments after values, unquoted values YAML would read as numbers
//! or booleans), is reported instead of guessed.
//!
//! Everything here is pure except [`check_dir`], which reads a skills folder.
//! Nothing found in a skill is ever executed, followed or fetched.

include!(concat!(env!("OUT_DIR"), "/builtin_skills.rs"));

/// Loads the built-in library (embedded in the binary) plus the operator's
/// skills from `operator_dir` (missing directory: none). Problems are
/// reported in the result; broken skills are skipped, never fatal.
pub fn load_all(operator_dir: &Path) -> Library {
    let mut operator = Vec::new();
    let mut io_problems = Vec::new();
    if let Ok(rd) = std::fs::read_dir(operator_dir) {
        let mut paths: Vec<std::path::PathBuf> = rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "md"))
            .collect();
        paths.sort();
        for p in paths {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match std::fs::read(&p) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => operator.push((name, text)),
                    Err(_) => io_problems.push(Problem {
                        file: p.display().to_string(),
                        line: None,
                        message: "not valid UTF-8".into(),
                    }),
                },
                Err(e) => io_problems.push(Problem {
                    file: p.display().to_string(),
                    line: None,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
    }
    let mut lib = load(BUILTIN_SKILLS, Some(BUILTIN_LIBRARY), &operator);
    lib.problems.extend(io_problems);
    lib
}

use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

/// The hub's incident detector names (spec section 3.1).
pub const DETECTORS: &[&str] = &[
    "node_silent",
    "guest_crashed",
    "container_crash_loop",
    "container_unhealthy",
    "service_failing",
    "oom_kill",
    "storage_filling",
    "storage_full",
    "backup_failed",
    "zfs_degraded",
    "smart_failing",
    "ha_fencing",
    "quorum_lost",
    "log_error_burst",
    "resource_pressure",
    "cert_expiring",
    "security_updates",
    "task_failed",
    "time_drift",
];

/// Allowed `platforms` entries.
pub const PLATFORMS: &[&str] = &[
    "proxmox", "zfs", "lxc", "qemu", "docker", "podman", "host", "pbs",
];

/// Allowed `risk` values, lowest first.
pub const RISKS: &[&str] = &["read-only", "low", "medium", "destructive"];

/// Allowed `applies_to` keys.
pub const APPLIES_TO_KEYS: &[&str] = &["pve", "pbs", "docker", "podman", "zfs", "debian"];

/// Allowed code fence languages.
pub const CODE_LANGUAGES: &[&str] = &["sh", "text", "ini", "yaml", "json"];

/// The level-2 headings every skill has, exactly once each, in this order.
pub const SECTIONS: &[&str] = &[
    "Summary",
    "When to use",
    "Diagnosis",
    "Steps",
    "Verification",
    "Rollback",
    "References",
];

/// The frontmatter fields, in the recommended order.
pub const FIELDS: &[&str] = &[
    "id",
    "title",
    "tier",
    "platforms",
    "tags",
    "triggers",
    "risk",
    "privileges",
    "estimated_minutes",
    "applies_to",
    "version",
];

/// File name of the library listing inside `skills/`.
pub const LIBRARY_FILE: &str = "skills-library.md";

/// Folder of templates inside `skills/`, skipped by the validator and the loader.
pub const TEMPLATES_DIR: &str = "templates";

/// First line of the library listing.
pub const LIBRARY_HEADING: &str = "# Skills library";

/// Commands (as consecutive words in an `sh` block) that force quorum, wipe
/// labels, roll back snapshots or delete data. A step that runs one MUST be
/// marked destructive; `## Diagnosis` and Tier 1 steps MUST NOT run them.
/// Deliberately short: only commands that are destructive whatever their arguments.
const DESTRUCTIVE_COMMANDS: &[&[&str]] = &[
    &["pvecm", "expected"],
    &["zfs", "rollback"],
    &["qm", "rollback"],
    &["pct", "rollback"],
    &["zfs", "destroy"],
    &["zpool", "destroy"],
    &["zpool", "labelclear"],
    &["qm", "destroy"],
    &["pct", "destroy"],
    &["lvremove"],
    &["docker", "volume", "prune"],
    &["docker", "volume", "rm"],
    &["docker", "system", "prune"],
    &["podman", "volume", "prune"],
    &["podman", "volume", "rm"],
    &["podman", "system", "prune"],
];

/// Score of one matching detector in [`suggest`].
pub const SCORE_DETECTOR: u32 = 100;
/// Score of one keyword found in the evidence in [`suggest`].
pub const SCORE_KEYWORD: u32 = 10;
/// Score of one matching platform in [`suggest`] (only added to skills that matched otherwise).
pub const SCORE_PLATFORM: u32 = 1;

/// A valid skill.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Skill {
    pub id: String,
    pub title: String,
    pub tier: u8,
    pub platforms: Vec<String>,
    pub tags: Vec<String>,
    /// `triggers.detectors`
    pub detectors: Vec<String>,
    /// `triggers.keywords`
    pub keywords: Vec<String>,
    pub risk: String,
    pub privileges: Vec<String>,
    pub estimated_minutes: u32,
    /// `applies_to` as (key, constraint) pairs in frontmatter order.
    pub applies_to: Vec<(String, String)>,
    pub version: u32,
    /// The markdown after the frontmatter.
    pub body: String,
    pub source: SkillSource,
}

/// Where a skill comes from.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub enum SkillSource {
    /// Shipped in `skills/`.
    BuiltIn,
    /// Placed by the operator in `/etc/wingman/skills`.
    Operator,
}

/// One violation of the specification, with the file and (when known) the line.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for Problem {}

/// The loaded skills and everything that was wrong on the way.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Library {
    /// Valid skills, sorted by id.
    pub skills: Vec<Skill>,
    /// Broken files, refused skills, duplicate ids and listing problems.
    pub problems: Vec<Problem>,
}

/// A skill proposed for an incident by [`suggest`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Suggestion {
    pub id: String,
    pub title: String,
    pub tier: u8,
    pub score: u32,
    /// Why it matched, e.g. `detector zfs_degraded`, `keyword "degraded"`, `platform zfs`.
    pub reasons: Vec<String>,
}

// ---------------------------------------------------------------------------
// Problems and lines
// ---------------------------------------------------------------------------

struct Problems<'a> {
    file: &'a str,
    list: Vec<Problem>,
}

impl<'a> Problems<'a> {
    fn new(file: &'a str) -> Self {
        Self {
            file,
            list: Vec::new(),
        }
    }

    fn at(&mut self, line: usize, message: impl Into<String>) {
        self.list.push(Problem {
            file: self.file.to_string(),
            line: Some(line),
            message: message.into(),
        });
    }

    fn whole(&mut self, message: impl Into<String>) {
        self.list.push(Problem {
            file: self.file.to_string(),
            line: None,
            message: message.into(),
        });
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn into_sorted(self) -> Vec<Problem> {
        let mut list = self.list;
        list.sort_by_key(|p| p.line);
        list
    }
}

/// One line of a file: 1-based number, text without the line ending, byte offset of its start.
#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    no: usize,
    text: &'a str,
    start: usize,
}

fn split_lines(text: &str) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, raw) in text.split('\n').enumerate() {
        out.push(Line {
            no: i + 1,
            text: raw.strip_suffix('\r').unwrap_or(raw),
            start,
        });
        start += raw.len() + 1;
    }
    out
}

/// Shortens `s` to at most `max` characters for messages.
fn snippet(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

fn is_kebab_id(s: &str) -> bool {
    !s.is_empty()
        && s.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

fn file_base(name: &str) -> &str {
    name.rsplit(['/', '\\']).next().unwrap_or(name)
}

// ---------------------------------------------------------------------------
// The YAML subset
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct Scalar {
    text: String,
    /// Unquoted: YAML may resolve it to a non-string.
    plain: bool,
    line: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// A key without a value and without an indented block.
    Null,
    Scalar(Scalar),
    List(Vec<Scalar>),
    Map(Vec<Entry>),
    /// Already reported.
    Invalid,
}

impl Node {
    fn describe(&self) -> &'static str {
        match self {
            Node::Null => "no value",
            Node::Scalar(_) => "a single value",
            Node::List(_) => "a list",
            Node::Map(_) => "a mapping",
            Node::Invalid => "an invalid value",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    key: String,
    line: usize,
    value: Node,
}

fn insignificant(s: &str) -> bool {
    let t = s.trim();
    t.is_empty() || t.starts_with('#')
}

fn leading_spaces(s: &str) -> usize {
    s.bytes().take_while(|&b| b == b' ').count()
}

fn tab_in_indent(s: &str) -> bool {
    s.bytes()
        .take_while(|&b| b == b' ' || b == b'\t')
        .any(|b| b == b'\t')
}

fn is_dash_item(content: &str) -> bool {
    content == "-" || content.starts_with("- ") || content.starts_with("-\t")
}

/// Splits `key: rest` (or `key:`); the key is `[A-Za-z0-9_-]+`.
fn split_key(content: &str) -> Option<(&str, &str)> {
    let end = content.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))?;
    if end == 0 {
        return None;
    }
    let key = content.get(..end)?;
    let rest = content.get(end..)?.strip_prefix(':')?;
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
        return None;
    }
    Some((key, rest.trim()))
}

/// Reads one scalar at the start of `s`. Returns (text, plain, bytes consumed).
fn scan_scalar(s: &str, in_flow: bool) -> Result<(String, bool, usize), String> {
    let mut chars = s.char_indices().peekable();
    let Some(&(_, first)) = chars.peek() else {
        return Ok((String::new(), true, 0));
    };
    match first {
        '"' => {
            chars.next();
            let mut out = String::new();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => return Ok((out, false, i + 1)),
                    '\\' => match chars.next() {
                        Some((_, '"')) => out.push('"'),
                        Some((_, '\\')) => out.push('\\'),
                        Some((_, '/')) => out.push('/'),
                        Some((_, 't')) => out.push('\t'),
                        Some((_, other)) => {
                            return Err(format!(
                                "unsupported escape `\\{other}` in a double-quoted string (only \\\" \\\\ \\/ \\t are allowed; multi-line strings are not allowed)"
                            ));
                        }
                        None => break,
                    },
                    _ => out.push(c),
                }
            }
            Err("double-quoted string is not closed on its line (multi-line strings are not allowed)".into())
        }
        '\'' => {
            chars.next();
            let mut out = String::new();
            while let Some((i, c)) = chars.next() {
                if c == '\'' {
                    if matches!(chars.peek(), Some(&(_, '\''))) {
                        chars.next();
                        out.push('\'');
                    } else {
                        return Ok((out, false, i + 1));
                    }
                } else {
                    out.push(c);
                }
            }
            Err("single-quoted string is not closed on its line (multi-line strings are not allowed)".into())
        }
        '&' => Err("YAML anchors (`&name`) are not allowed".into()),
        '*' => Err("YAML aliases (`*name`) are not allowed".into()),
        '!' => Err("YAML tags (`!tag`) are not allowed".into()),
        '|' | '>' => Err(format!(
            "multi-line strings (block scalar `{first}`) are not allowed; quote values that start with `{first}`"
        )),
        '%' | '@' | '`' | ',' | ']' | '}' | '[' | '{' => {
            Err(format!("a value starting with `{first}` must be quoted"))
        }
        '#' => Err("a value starting with `#` must be quoted (YAML reads it as a comment)".into()),
        '?' | ':' | '-' => {
            let second = s.get(first.len_utf8()..).and_then(|r| r.chars().next());
            if second.is_none_or(char::is_whitespace) {
                Err(format!(
                    "`{first}` followed by a space at the start of a value is not allowed (nested lists and complex keys are not part of the simple YAML subset); quote the value"
                ))
            } else {
                scan_plain(s, in_flow)
            }
        }
        _ => scan_plain(s, in_flow),
    }
}

fn scan_plain(s: &str, in_flow: bool) -> Result<(String, bool, usize), String> {
    let mut end = s.len();
    let mut prev: Option<char> = None;
    let mut it = s.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        let next = it.peek().map(|&(_, n)| n);
        if c == '#' && prev.is_some_and(char::is_whitespace) {
            return Err("` #` starts a YAML comment: comments after values are not allowed; quote the value if `#` belongs to it".into());
        }
        if c == ':' && next.is_none_or(|n| n.is_whitespace() || (in_flow && ",[]{}".contains(n))) {
            return Err(format!(
                "`:` inside the unquoted value `{}` makes it a mapping; quote the value",
                snippet(s.trim(), 40)
            ));
        }
        if in_flow {
            if c == ',' || c == ']' {
                end = i;
                break;
            }
            if c == '[' || c == '{' || c == '}' {
                return Err(format!(
                    "`{c}` inside the unquoted list item `{}`; quote the item (nested lists and mappings are not allowed)",
                    snippet(s.get(..i).unwrap_or(s).trim(), 40)
                ));
            }
        }
        prev = Some(c);
    }
    let text = s.get(..end).unwrap_or("").trim_end();
    Ok((text.to_string(), true, end))
}

/// A scalar that must fill the rest of a line.
fn scalar_line(s: &str, line: usize) -> Result<Scalar, String> {
    let (text, plain, used) = scan_scalar(s, false)?;
    if !plain {
        let rest = s.get(used..).unwrap_or("").trim();
        if rest.starts_with('#') {
            return Err("comments after values are not allowed".into());
        }
        if !rest.is_empty() {
            return Err(format!(
                "unexpected text `{}` after the closing quote",
                snippet(rest, 30)
            ));
        }
    }
    Ok(Scalar { text, plain, line })
}

fn parse_flow_list(s: &str, line: usize) -> Result<Vec<Scalar>, String> {
    const NOT_CLOSED: &str = "flow list `[` is not closed on its line (a multi-line list must use the block form with one `- item` per line)";
    let mut rest = s.strip_prefix('[').unwrap_or(s);
    let mut items = Vec::new();
    loop {
        rest = rest.trim_start();
        if items.is_empty()
            && let Some(after) = rest.strip_prefix(']')
        {
            return finish_flow(after, items);
        }
        let Some(first) = rest.chars().next() else {
            return Err(NOT_CLOSED.into());
        };
        match first {
            '[' => return Err("nested lists are not allowed".into()),
            '{' => return Err("mappings inside lists are not allowed".into()),
            ',' | ']' => return Err("empty list item".into()),
            _ => {}
        }
        let (text, plain, used) = scan_scalar(rest, true)?;
        if plain && text.is_empty() {
            return Err("empty list item".into());
        }
        items.push(Scalar { text, plain, line });
        rest = rest.get(used..).unwrap_or("").trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            if after.trim_start().starts_with(']') {
                return Err("trailing comma in a list".into());
            }
            rest = after;
        } else if let Some(after) = rest.strip_prefix(']') {
            return finish_flow(after, items);
        } else if rest.is_empty() {
            return Err(NOT_CLOSED.into());
        } else {
            return Err(format!(
                "unexpected `{}` in a list; quote items that contain special characters",
                snippet(rest, 20)
            ));
        }
    }
}

fn finish_flow(after: &str, items: Vec<Scalar>) -> Result<Vec<Scalar>, String> {
    let after = after.trim();
    if after.is_empty() {
        Ok(items)
    } else if after.starts_with('#') {
        Err("comments after values are not allowed".into())
    } else {
        Err(format!(
            "unexpected text `{}` after the list",
            snippet(after, 30)
        ))
    }
}

fn parse_inline(s: &str, line: usize, p: &mut Problems<'_>) -> Node {
    let result = if s.starts_with('[') {
        parse_flow_list(s, line).map(Node::List)
    } else if let Some(inner) = s.strip_prefix('{') {
        if inner.trim() == "}" {
            Ok(Node::Map(Vec::new()))
        } else {
            Err("flow mappings `{...}` are not allowed except `{}` for an empty mapping; use an indented block".into())
        }
    } else {
        scalar_line(s, line).map(Node::Scalar)
    };
    result.unwrap_or_else(|message| {
        p.at(line, message);
        Node::Invalid
    })
}

/// Parses a block mapping whose keys sit at `indent`. `depth` 0 is the top level.
fn parse_mapping(
    lines: &[Line<'_>],
    indent: usize,
    depth: usize,
    p: &mut Problems<'_>,
) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut i = 0;
    while let Some(line) = lines.get(i) {
        if insignificant(line.text) {
            i += 1;
            continue;
        }
        // The block of this line: following lines indented deeper, or list items at the same indent.
        let mut j = i + 1;
        while let Some(next) = lines.get(j) {
            let ind = leading_spaces(next.text);
            let content = next.text.get(ind..).unwrap_or("");
            if insignificant(next.text)
                || ind > indent
                || tab_in_indent(next.text)
                || (ind == indent && is_dash_item(content))
            {
                j += 1;
            } else {
                break;
            }
        }
        let children = lines.get(i + 1..j).unwrap_or(&[]);
        let no = line.no;
        i = j;
        if tab_in_indent(line.text) {
            p.at(no, "tabs are not allowed in YAML indentation");
            continue;
        }
        let ind = leading_spaces(line.text);
        let content = line.text.get(ind..).unwrap_or("");
        if ind != indent {
            p.at(no, "unexpected indentation");
            continue;
        }
        if is_dash_item(content) {
            p.at(no, "expected `key: value`, found a list item");
            continue;
        }
        if content == "---" || content == "..." {
            p.at(no, "only one YAML document is allowed in the frontmatter");
            continue;
        }
        let Some((key, rest)) = split_key(content) else {
            p.at(
                no,
                format!("expected `key: value`, found `{}`", snippet(content, 40)),
            );
            continue;
        };
        let value = if rest.is_empty() {
            parse_block_value(children, depth, p)
        } else if let Some(cont) = children.iter().find(|l| !insignificant(l.text)) {
            if tab_in_indent(cont.text) {
                p.at(cont.no, "tabs are not allowed in YAML indentation");
            } else {
                p.at(
                    cont.no,
                    format!(
                        "the value of `{key}` continues on this line: multi-line values are not allowed"
                    ),
                );
            }
            Node::Invalid
        } else {
            parse_inline(rest, no, p)
        };
        if entries.iter().any(|e| e.key == key) {
            p.at(no, format!("duplicate key `{key}`"));
        } else {
            entries.push(Entry {
                key: key.to_string(),
                line: no,
                value,
            });
        }
    }
    entries
}

fn parse_block_value(children: &[Line<'_>], depth: usize, p: &mut Problems<'_>) -> Node {
    let Some(first) = children.iter().find(|l| !insignificant(l.text)) else {
        return Node::Null;
    };
    if tab_in_indent(first.text) {
        p.at(first.no, "tabs are not allowed in YAML indentation");
        return Node::Invalid;
    }
    let ind = leading_spaces(first.text);
    let content = first.text.get(ind..).unwrap_or("");
    if is_dash_item(content) {
        Node::List(parse_block_list(children, ind, p))
    } else if depth >= 1 {
        p.at(
            first.no,
            "only one level of nested mapping is allowed in the frontmatter",
        );
        Node::Invalid
    } else {
        Node::Map(parse_mapping(children, ind, depth + 1, p))
    }
}

fn parse_block_list(children: &[Line<'_>], indent: usize, p: &mut Problems<'_>) -> Vec<Scalar> {
    let mut items = Vec::new();
    for line in children {
        if insignificant(line.text) {
            continue;
        }
        if tab_in_indent(line.text) {
            p.at(line.no, "tabs are not allowed in YAML indentation");
            continue;
        }
        let ind = leading_spaces(line.text);
        let content = line.text.get(ind..).unwrap_or("");
        if ind != indent || !is_dash_item(content) {
            if ind > indent {
                p.at(
                    line.no,
                    "a list item continues on this line: multi-line and nested list items are not allowed",
                );
            } else {
                p.at(line.no, "expected a list item `- value`");
            }
            continue;
        }
        let item = content.get(1..).unwrap_or("").trim();
        if item.is_empty() {
            p.at(line.no, "empty list item");
        } else if item.starts_with('[') || is_dash_item(item) {
            p.at(line.no, "nested lists are not allowed");
        } else if item.starts_with('{') {
            p.at(line.no, "mappings inside lists are not allowed");
        } else {
            match scalar_line(item, line.no) {
                Ok(s) => items.push(s),
                Err(message) => p.at(line.no, message),
            }
        }
    }
    items
}

/// What YAML (1.1 or 1.2) would read an unquoted scalar as, when that is not a string.
fn non_string_kind(s: &str) -> Option<&'static str> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Some("null"),
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" | "yes" | "Yes" | "YES" | "no"
        | "No" | "NO" | "on" | "On" | "ON" | "off" | "Off" | "OFF" | "y" | "Y" | "n" | "N" => {
            return Some("a boolean");
        }
        ".inf" | ".Inf" | ".INF" | "-.inf" | "-.Inf" | "-.INF" | "+.inf" | "+.Inf" | "+.INF"
        | ".nan" | ".NaN" | ".NAN" => return Some("a number"),
        _ => {}
    }
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    let lower = unsigned.to_ascii_lowercase();
    let digits_or = |t: &str, extra: &[u8]| {
        !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || extra.contains(&b))
    };
    if let Some(hex) = lower.strip_prefix("0x")
        && !hex.is_empty()
        && hex.bytes().all(|b| b.is_ascii_hexdigit() || b == b'_')
    {
        return Some("a number");
    }
    if let Some(bin) = lower.strip_prefix("0b")
        && digits_or(bin, b"_")
    {
        return Some("a number");
    }
    if let Some(oct) = lower.strip_prefix("0o")
        && digits_or(oct, b"_")
    {
        return Some("a number");
    }
    // Integers, sexagesimal numbers (1.1) and floats.
    if unsigned
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'.')
    {
        let (mantissa, exponent) = match lower.split_once('e') {
            Some((m, e)) => (m, Some(e)),
            None => (lower.as_str(), None),
        };
        let exponent_ok = exponent.is_none_or(|e| {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            digits_or(e, b"")
        });
        if exponent_ok
            && digits_or(mantissa, b"._:")
            && mantissa.bytes().filter(|&b| b == b'.').count() <= 1
            && mantissa.bytes().any(|b| b.is_ascii_digit())
        {
            return Some("a number");
        }
        // Timestamps (1.1): 2024-01-31...
        let b = unsigned.as_bytes();
        if b.len() >= 8
            && b.get(..4).is_some_and(|y| y.iter().all(u8::is_ascii_digit))
            && b.get(4) == Some(&b'-')
        {
            return Some("a date");
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Frontmatter fields
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Fields {
    id: Option<(String, usize)>,
    title: Option<String>,
    tier: Option<u32>,
    platforms: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    detectors: Option<Vec<String>>,
    keywords: Option<Vec<String>>,
    risk: Option<(String, usize)>,
    privileges: Option<Vec<String>>,
    estimated_minutes: Option<u32>,
    applies_to: Option<Vec<(String, String)>>,
    version: Option<u32>,
}

fn string_scalar(s: &Scalar, what: &str, p: &mut Problems<'_>) -> Option<String> {
    if s.plain
        && let Some(kind) = non_string_kind(&s.text)
    {
        p.at(
            s.line,
            format!(
                "{what} `{}` is read as {kind} by YAML, not as a string; quote it",
                s.text
            ),
        );
        return None;
    }
    Some(s.text.clone())
}

fn field_string(e: &Entry, p: &mut Problems<'_>) -> Option<String> {
    match &e.value {
        Node::Scalar(s) => string_scalar(s, &format!("`{}`", e.key), p),
        Node::Invalid => None,
        other => {
            p.at(
                e.line,
                format!("`{}` must be a string, found {}", e.key, other.describe()),
            );
            None
        }
    }
}

fn field_int(e: &Entry, p: &mut Problems<'_>) -> Option<u32> {
    match &e.value {
        Node::Scalar(s) if !s.plain => {
            p.at(
                e.line,
                format!("`{}` must be an integer, not a quoted string", e.key),
            );
            None
        }
        Node::Scalar(s) => {
            let t = s.text.as_str();
            let decimal = !t.is_empty()
                && t.bytes().all(|b| b.is_ascii_digit())
                && (t == "0" || !t.starts_with('0'));
            if !decimal {
                p.at(
                    e.line,
                    format!(
                        "`{}` must be a plain decimal integer, found `{}`",
                        e.key,
                        snippet(t, 30)
                    ),
                );
                return None;
            }
            match t.parse::<u32>() {
                Ok(n) => Some(n),
                Err(_) => {
                    p.at(e.line, format!("`{}` is too large", e.key));
                    None
                }
            }
        }
        Node::Invalid => None,
        other => {
            p.at(
                e.line,
                format!("`{}` must be an integer, found {}", e.key, other.describe()),
            );
            None
        }
    }
}

fn field_list(key: &str, line: usize, value: &Node, p: &mut Problems<'_>) -> Option<Vec<String>> {
    match value {
        Node::List(items) => {
            let mut out = Vec::new();
            let mut ok = true;
            for item in items {
                match string_scalar(item, &format!("`{key}` entry"), p) {
                    Some(s) if s.trim().is_empty() => {
                        p.at(item.line, format!("`{key}` has an empty entry"));
                        ok = false;
                    }
                    Some(s) => out.push(s),
                    None => ok = false,
                }
            }
            ok.then_some(out)
        }
        Node::Invalid => None,
        Node::Null => {
            p.at(
                line,
                format!("`{key}` must be a list (write `[]` for an empty list)"),
            );
            None
        }
        Node::Scalar(_) => {
            p.at(
                line,
                format!("`{key}` must be a list, found a single value; write `[value]`"),
            );
            None
        }
        Node::Map(_) => {
            p.at(line, format!("`{key}` must be a list, found a mapping"));
            None
        }
    }
}

fn field_map<'e>(e: &'e Entry, p: &mut Problems<'_>) -> Option<&'e [Entry]> {
    match &e.value {
        Node::Map(entries) => Some(entries),
        Node::Invalid => None,
        Node::Null => {
            p.at(
                e.line,
                format!(
                    "`{}` must be a mapping (write `{{}}` for an empty one)",
                    e.key
                ),
            );
            None
        }
        other => {
            p.at(
                e.line,
                format!("`{}` must be a mapping, found {}", e.key, other.describe()),
            );
            None
        }
    }
}

fn is_version_constraint(c: &str) -> bool {
    let version = [">=", "<=", ">", "<", "="]
        .iter()
        .find_map(|op| c.strip_prefix(op));
    version.is_some_and(|v| {
        v.split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn extract_fields(entries: &[Entry], stem: Option<&str>, p: &mut Problems<'_>) -> Fields {
    let mut f = Fields::default();
    for e in entries {
        match e.key.as_str() {
            "id" => {
                if let Some(id) = field_string(e, p) {
                    if !is_kebab_id(&id) {
                        p.at(
                            e.line,
                            format!(
                                "`id` `{}` must be lowercase kebab-case matching ^[a-z0-9]+(-[a-z0-9]+)*$",
                                snippet(&id, 60)
                            ),
                        );
                    } else if let Some(stem) = stem
                        && stem != id
                    {
                        p.at(
                            e.line,
                            format!(
                                "`id` `{id}` must equal the file name without `.md` (`{stem}`)"
                            ),
                        );
                    }
                    f.id = Some((id, e.line));
                }
            }
            "title" => {
                if let Some(title) = field_string(e, p) {
                    if title.trim().is_empty() {
                        p.at(e.line, "`title` must not be empty");
                    } else if title.contains(['(', ')', '[', ']']) {
                        p.at(
                            e.line,
                            "`title` must not contain parentheses or square brackets",
                        );
                    } else if title.contains(['\n', '\r']) || title != title.trim() {
                        p.at(
                            e.line,
                            "`title` must be one line without leading or trailing spaces",
                        );
                    }
                    f.title = Some(title);
                }
            }
            "tier" => {
                if let Some(tier) = field_int(e, p) {
                    match tier {
                        1 | 2 => {}
                        3 => p.at(
                            e.line,
                            "tier 3 is reserved for future executable skills and is refused",
                        ),
                        other => p.at(e.line, format!("`tier` must be 1 or 2, found {other}")),
                    }
                    f.tier = Some(tier);
                }
            }
            "platforms" => {
                if let Some(list) = field_list(&e.key, e.line, &e.value, p) {
                    if list.is_empty() {
                        p.at(e.line, "`platforms` must not be empty");
                    }
                    let mut seen = BTreeSet::new();
                    for platform in &list {
                        if !PLATFORMS.contains(&platform.as_str()) {
                            p.at(
                                e.line,
                                format!(
                                    "unknown platform `{}` (allowed: {})",
                                    snippet(platform, 40),
                                    PLATFORMS.join(", ")
                                ),
                            );
                        }
                        if !seen.insert(platform.as_str()) {
                            p.at(e.line, format!("platform `{platform}` is listed twice"));
                        }
                    }
                    f.platforms = Some(list);
                }
            }
            "tags" => {
                if let Some(list) = field_list(&e.key, e.line, &e.value, p) {
                    for tag in &list {
                        if tag.chars().any(char::is_uppercase) {
                            p.at(e.line, format!("tag `{tag}` must be lowercase"));
                        }
                    }
                    f.tags = Some(list);
                }
            }
            "triggers" => extract_triggers(e, p, &mut f),
            "risk" => {
                if let Some(risk) = field_string(e, p) {
                    if !RISKS.contains(&risk.as_str()) {
                        p.at(
                            e.line,
                            format!(
                                "`risk` must be one of {}, found `{}`",
                                RISKS.join(", "),
                                snippet(&risk, 30)
                            ),
                        );
                    }
                    f.risk = Some((risk, e.line));
                }
            }
            "privileges" => {
                if let Some(list) = field_list(&e.key, e.line, &e.value, p) {
                    if list.is_empty() {
                        p.at(e.line, "`privileges` must not be empty");
                    }
                    f.privileges = Some(list);
                }
            }
            "estimated_minutes" => {
                if let Some(n) = field_int(e, p) {
                    if n == 0 {
                        p.at(e.line, "`estimated_minutes` must be positive");
                    }
                    f.estimated_minutes = Some(n);
                }
            }
            "applies_to" => extract_applies_to(e, p, &mut f),
            "version" => {
                if let Some(n) = field_int(e, p) {
                    if n == 0 {
                        p.at(e.line, "`version` must be 1 or greater");
                    }
                    f.version = Some(n);
                }
            }
            other => p.at(
                e.line,
                format!(
                    "unknown field `{}` (the frontmatter must contain exactly: {})",
                    snippet(other, 40),
                    FIELDS.join(", ")
                ),
            ),
        }
    }
    for field in FIELDS {
        if !entries.iter().any(|e| e.key == *field) {
            p.whole(format!("missing field `{field}` in the frontmatter"));
        }
    }
    f
}

fn extract_triggers(e: &Entry, p: &mut Problems<'_>, f: &mut Fields) {
    let Some(map) = field_map(e, p) else {
        return;
    };
    let mut detectors = None;
    let mut keywords = None;
    for sub in map {
        match sub.key.as_str() {
            "detectors" => {
                if let Some(list) = field_list("triggers.detectors", sub.line, &sub.value, p) {
                    for d in &list {
                        if !DETECTORS.contains(&d.as_str()) {
                            p.at(
                                sub.line,
                                format!(
                                    "unknown detector `{}` in `triggers.detectors` (allowed: {})",
                                    snippet(d, 40),
                                    DETECTORS.join(", ")
                                ),
                            );
                        }
                    }
                    detectors = Some(list);
                }
            }
            "keywords" => {
                if let Some(list) = field_list("triggers.keywords", sub.line, &sub.value, p) {
                    for k in &list {
                        if k.chars().any(char::is_uppercase) {
                            p.at(
                                sub.line,
                                format!("keyword `{}` must be lowercase", snippet(k, 40)),
                            );
                        }
                    }
                    keywords = Some(list);
                }
            }
            other => p.at(
                sub.line,
                format!(
                    "unknown key `{}` in `triggers` (allowed: detectors, keywords)",
                    snippet(other, 40)
                ),
            ),
        }
    }
    for (key, present) in [
        ("detectors", map.iter().any(|s| s.key == "detectors")),
        ("keywords", map.iter().any(|s| s.key == "keywords")),
    ] {
        if !present {
            p.at(e.line, format!("`triggers` is missing the key `{key}`"));
        }
    }
    if let (Some(d), Some(k)) = (&detectors, &keywords)
        && d.is_empty()
        && k.is_empty()
    {
        p.at(
            e.line,
            "`triggers`: at least one of `detectors` and `keywords` must be non-empty",
        );
    }
    f.detectors = detectors;
    f.keywords = keywords;
}

fn extract_applies_to(e: &Entry, p: &mut Problems<'_>, f: &mut Fields) {
    let Some(map) = field_map(e, p) else {
        return;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for sub in map {
        if !APPLIES_TO_KEYS.contains(&sub.key.as_str()) {
            p.at(
                sub.line,
                format!(
                    "unknown key `{}` in `applies_to` (allowed: {})",
                    snippet(&sub.key, 40),
                    APPLIES_TO_KEYS.join(", ")
                ),
            );
            ok = false;
            continue;
        }
        let Some(constraint) = field_string(sub, p) else {
            ok = false;
            continue;
        };
        if !constraint.split(',').all(is_version_constraint) {
            p.at(
                sub.line,
                format!(
                    "`applies_to.{}` constraint `{}` must be comparisons like `>=8.0` (operator >=, >, <=, < or = and a dotted version), separated by `,` without spaces",
                    sub.key,
                    snippet(&constraint, 40)
                ),
            );
            ok = false;
            continue;
        }
        out.push((sub.key.clone(), constraint));
    }
    if ok {
        f.applies_to = Some(out);
    }
}

// ---------------------------------------------------------------------------
// HTML, placeholders and commands
// ---------------------------------------------------------------------------

fn is_tag_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
}

/// Reports everything that looks like an HTML tag, comment or autolink (outside code fences).
fn check_html(line: Line<'_>, p: &mut Problems<'_>) {
    let s = line.text;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b.get(i) != Some(&b'<') {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        if b.get(j) == Some(&b'!')
            && b.get(j + 1)
                .is_some_and(|c| *c == b'-' || c.is_ascii_alphabetic())
        {
            p.at(
                line.no,
                "HTML comment or declaration `<!` is not allowed: skills must not contain raw HTML",
            );
            i = j;
            continue;
        }
        let closing = b.get(j) == Some(&b'/');
        if closing {
            j += 1;
        }
        if !b.get(j).is_some_and(u8::is_ascii_alphabetic) {
            i += 1;
            continue;
        }
        let name_start = j;
        while b.get(j).copied().is_some_and(is_tag_name_byte) {
            j += 1;
        }
        let name = s.get(name_start..j).unwrap_or("");
        let tag_end = match b.get(j) {
            Some(b'>') => Some(j + 1),
            Some(b'/') if b.get(j + 1) == Some(&b'>') => Some(j + 2),
            Some(c) if c.is_ascii_whitespace() => {
                // `<word attr=...>`: an attribute name (or `/`) then a `>` before any other `<`.
                let after = s.get(j..).unwrap_or("");
                let next = after.trim_start().bytes().next();
                // The first angle bracket after the name must be the closing `>`.
                let close = after
                    .find(['<', '>'])
                    .filter(|&k| after.as_bytes().get(k) == Some(&b'>'));
                match (next, close) {
                    (Some(n), Some(k)) if n.is_ascii_alphabetic() || n == b'/' => Some(j + k + 1),
                    _ => None,
                }
            }
            Some(b':' | b'@') if !closing => {
                let after = s.get(j..).unwrap_or("");
                let close = after
                    .find(|c: char| c.is_whitespace() || c == '<' || c == '>')
                    .filter(|&k| after.as_bytes().get(k) == Some(&b'>'));
                match close {
                    Some(k) => {
                        p.at(
                            line.no,
                            format!(
                                "autolink `{}` looks like an HTML tag: use markdown link syntax or a bare https:// URL",
                                snippet(s.get(i..j + k + 1).unwrap_or(""), 60)
                            ),
                        );
                        i = j + k + 1;
                        continue;
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        let Some(end) = tag_end else {
            i += 1;
            continue;
        };
        let tag = s.get(i..end).unwrap_or("");
        if !closing && end == j + 1 {
            p.at(
                line.no,
                format!(
                    "`{}` is an angle-bracket placeholder or HTML tag: placeholders must be ALL-CAPS words such as `{}`, and raw HTML is not allowed",
                    snippet(tag, 40),
                    placeholder_suggestion(name)
                ),
            );
        } else {
            p.at(
                line.no,
                format!(
                    "HTML-like tag `{}` outside a code fence: skills must not contain raw HTML",
                    snippet(tag, 60)
                ),
            );
        }
        i = end;
    }
}

fn placeholder_suggestion(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect()
}

/// Reports `<word>` placeholders inside code fences.
fn check_code_placeholders(line: Line<'_>, p: &mut Problems<'_>) {
    let s = line.text;
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(rel) = s.get(i..).and_then(|r| r.find('<')) {
        let start = i + rel;
        let mut j = start + 1;
        if b.get(j).is_some_and(u8::is_ascii_alphabetic) {
            while b.get(j).copied().is_some_and(is_tag_name_byte) {
                j += 1;
            }
            if b.get(j) == Some(&b'>') {
                let name = s.get(start + 1..j).unwrap_or("");
                p.at(
                    line.no,
                    format!(
                        "angle-bracket placeholder `<{}>` in a code block: placeholders must be ALL-CAPS words such as `{}`",
                        snippet(name, 40),
                        placeholder_suggestion(name)
                    ),
                );
            }
        }
        i = j.max(start + 1);
    }
}

/// The destructive command a shell line runs, if any (see [`DESTRUCTIVE_COMMANDS`]).
fn destructive_command(line: &str) -> Option<String> {
    let code = line.trim_start();
    if code.starts_with('#') {
        return None;
    }
    let code = code.split(" #").next().unwrap_or(code);
    let tokens: Vec<&str> = code
        .split(|c: char| c.is_whitespace() || ";|&()`".contains(c))
        .filter(|t| !t.is_empty())
        .collect();
    DESTRUCTIVE_COMMANDS
        .iter()
        .find(|cmd| tokens.windows(cmd.len()).any(|w| w == **cmd))
        .map(|cmd| cmd.join(" "))
}

// ---------------------------------------------------------------------------
// Body
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    Prose,
    Fence,
    Code { sh: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum StepRisk {
    Low,
    Medium,
    Destructive,
}

impl StepRisk {
    fn as_str(self) -> &'static str {
        match self {
            StepRisk::Low => "low",
            StepRisk::Medium => "medium",
            StepRisk::Destructive => "destructive",
        }
    }
}

/// What the body says about the steps' risks, for the frontmatter cross-check.
struct BodyFacts {
    /// Highest step risk and the step that has it; `None` if unknown.
    max_step_risk: Option<(StepRisk, u32)>,
}

fn opening_fence(s: &str) -> Option<(u8, usize, &str)> {
    let t = s.trim_start_matches(' ');
    let ch = *t.as_bytes().first()?;
    if ch != b'`' && ch != b'~' {
        return None;
    }
    let len = t.bytes().take_while(|&b| b == ch).count();
    if len < 3 {
        return None;
    }
    let info = t.get(len..)?.trim();
    if ch == b'`' && info.contains('`') {
        return None;
    }
    Some((ch, len, info))
}

fn is_closing_fence(s: &str, ch: u8, len: usize) -> bool {
    let t = s.trim_start_matches(' ');
    let n = t.bytes().take_while(|&b| b == ch).count();
    n >= len && t.get(n..).is_some_and(|rest| rest.trim().is_empty())
}

fn atx_heading(s: &str) -> Option<(usize, &str)> {
    let indent = leading_spaces(s);
    if indent > 3 {
        return None;
    }
    let t = s.get(indent..)?;
    let level = t.bytes().take_while(|&b| b == b'#').count();
    if level == 0 || level > 6 {
        return None;
    }
    let rest = t.get(level..)?;
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
        return None;
    }
    let mut text = rest.trim();
    let stripped = text.trim_end_matches('#');
    if stripped.len() != text.len() && (stripped.is_empty() || stripped.ends_with([' ', '\t'])) {
        text = stripped.trim_end();
    }
    Some((level, text))
}

fn is_setext_underline(s: &str) -> bool {
    let indent = leading_spaces(s);
    if indent > 3 {
        return false;
    }
    let t = s.get(indent..).unwrap_or("").trim_end();
    t.len() >= 3 && (t.bytes().all(|b| b == b'=') || t.bytes().all(|b| b == b'-'))
}

fn parse_step_heading(text: &str) -> Option<(u32, &str)> {
    let rest = text.strip_prefix("Step ")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number = rest.get(..digits)?.parse().ok()?;
    let description = rest.get(digits..)?.strip_prefix(": ")?.trim();
    (!description.is_empty()).then_some((number, description))
}

struct Step<'a> {
    number: u32,
    line: usize,
    risk: Vec<Line<'a>>,
    verify: Vec<usize>,
    rollback: Vec<usize>,
    shell: Vec<Line<'a>>,
}

fn check_body(
    lines: &[Line<'_>],
    title: Option<&str>,
    tier: Option<u32>,
    p: &mut Problems<'_>,
) -> BodyFacts {
    // Pass 1: fences, HTML, placeholders, setext headings.
    let mut kinds = Vec::with_capacity(lines.len());
    let mut open: Option<(u8, usize, usize, bool)> = None;
    let mut prev_prose: Option<&str> = None;
    for line in lines {
        if let Some((ch, len, _, sh)) = open {
            if is_closing_fence(line.text, ch, len) {
                kinds.push(LineKind::Fence);
                open = None;
            } else {
                kinds.push(LineKind::Code { sh });
                check_code_placeholders(*line, p);
            }
            prev_prose = None;
            continue;
        }
        if let Some((ch, len, info)) = opening_fence(line.text) {
            let lang = info.split_whitespace().next().unwrap_or("");
            if lang.is_empty() {
                p.at(
                    line.no,
                    "code fence without a language: declare one of sh, text, ini, yaml, json (sh for shell commands)",
                );
            } else if !CODE_LANGUAGES.contains(&lang) {
                p.at(
                    line.no,
                    format!(
                        "code fence language `{}` is not allowed: use one of sh, text, ini, yaml, json (sh for shell commands)",
                        snippet(lang, 20)
                    ),
                );
            }
            open = Some((ch, len, line.no, lang == "sh"));
            kinds.push(LineKind::Fence);
            prev_prose = None;
            continue;
        }
        kinds.push(LineKind::Prose);
        check_html(*line, p);
        if let Some(prev) = prev_prose
            && is_setext_underline(line.text)
        {
            let prev_t = prev.trim_start();
            let paragraph = !prev_t.is_empty()
                && atx_heading(prev).is_none()
                && !is_setext_underline(prev)
                && !prev_t.starts_with(['-', '*', '+', '>', '|'])
                && !prev_t.bytes().next().is_some_and(|b| b.is_ascii_digit());
            if paragraph {
                p.at(
                    line.no,
                    "setext heading (a line underlined with `===` or `---`) is not allowed: use `#` headings",
                );
            }
        }
        prev_prose = Some(line.text);
    }
    if let Some((_, _, no, _)) = open {
        p.at(no, "code fence is never closed");
    }

    // Pass 2: headings.
    let mut headings: Vec<(usize, usize, &str)> = Vec::new(); // (index, level, text)
    for (idx, (line, kind)) in lines.iter().zip(&kinds).enumerate() {
        if *kind == LineKind::Prose
            && let Some((level, text)) = atx_heading(line.text)
        {
            headings.push((idx, level, text));
        }
    }

    // The title heading.
    match lines.iter().position(|l| !l.text.trim().is_empty()) {
        None => p.whole("the skill has no body after the frontmatter"),
        Some(first) => {
            let heading = headings.iter().find(|h| h.0 == first);
            let line_no = lines.get(first).map_or(1, |l| l.no);
            match (heading, title) {
                (Some(&(_, 1, text)), Some(title)) if text != title => p.at(
                    line_no,
                    format!(
                        "the level-1 heading `# {}` must repeat the title exactly: `# {}`",
                        snippet(text, 80),
                        title
                    ),
                ),
                (Some(&(_, 1, _)), _) => {}
                _ => p.at(
                    line_no,
                    format!(
                        "the body must begin with the level-1 heading `# {}`",
                        title.unwrap_or("TITLE")
                    ),
                ),
            }
        }
    }

    // Level-2 sections.
    let h2: Vec<(usize, &str)> = headings
        .iter()
        .filter(|h| h.1 == 2)
        .map(|h| (h.0, h.2))
        .collect();
    let mut ranges: Vec<Option<(usize, usize)>> = vec![None; SECTIONS.len()];
    let mut last_known: Option<usize> = None;
    for (n, &(idx, text)) in h2.iter().enumerate() {
        let line_no = lines.get(idx).map_or(0, |l| l.no);
        let end = h2.get(n + 1).map_or(lines.len(), |h| h.0);
        let Some(pos) = SECTIONS.iter().position(|s| *s == text) else {
            p.at(
                line_no,
                format!(
                    "level-2 heading `## {}` is not allowed: only {} (level-3 headings may be used inside sections)",
                    snippet(text, 60),
                    section_list()
                ),
            );
            continue;
        };
        let Some(slot) = ranges.get_mut(pos) else {
            continue;
        };
        if slot.is_some() {
            p.at(line_no, format!("`## {text}` appears more than once"));
            continue;
        }
        *slot = Some((idx, end));
        if let Some(last) = last_known
            && pos < last
        {
            p.at(
                line_no,
                format!(
                    "`## {text}` is out of order: the level-2 headings must be, in this order, {}",
                    section_list()
                ),
            );
        }
        last_known = Some(last_known.map_or(pos, |l| l.max(pos)));
    }
    for (name, range) in SECTIONS.iter().zip(&ranges) {
        if range.is_none() {
            p.whole(format!("missing section `## {name}`"));
        }
    }
    let section = |name: &str| -> Option<(usize, usize)> {
        let pos = SECTIONS.iter().position(|s| *s == name)?;
        ranges.get(pos).copied().flatten()
    };
    let section_lines = |name: &str| -> Vec<(Line<'_>, LineKind)> {
        section(name)
            .map(|(start, end)| {
                lines
                    .iter()
                    .copied()
                    .zip(kinds.iter().copied())
                    .skip(start + 1)
                    .take(end.saturating_sub(start + 1))
                    .collect()
            })
            .unwrap_or_default()
    };

    for name in ["Diagnosis", "Verification", "Rollback"] {
        if let Some((start, _)) = section(name)
            && section_lines(name)
                .iter()
                .all(|(l, _)| l.text.trim().is_empty())
        {
            let line_no = lines.get(start).map_or(0, |l| l.no);
            p.at(line_no, format!("`## {name}` must not be empty"));
        }
    }
    if let Some((start, _)) = section("References")
        && !section_lines("References")
            .iter()
            .any(|(l, _)| l.text.contains("https://"))
    {
        let line_no = lines.get(start).map_or(0, |l| l.no);
        p.at(
            line_no,
            "`## References` must contain at least one https:// link to primary documentation",
        );
    }
    for (l, kind) in section_lines("Diagnosis") {
        if kind == (LineKind::Code { sh: true })
            && let Some(cmd) = destructive_command(l.text)
        {
            p.at(
                l.no,
                format!("`## Diagnosis` must be read-only, but this line runs `{cmd}`"),
            );
        }
    }

    // Steps.
    let mut facts = BodyFacts {
        max_step_risk: None,
    };
    let Some((steps_start, _)) = section("Steps") else {
        return facts;
    };
    let mut steps: Vec<Step<'_>> = Vec::new();
    let mut in_step = false;
    for (l, kind) in section_lines("Steps") {
        match kind {
            LineKind::Prose => {
                if let Some((level, text)) = atx_heading(l.text) {
                    if level == 3 {
                        in_step = false;
                        match parse_step_heading(text) {
                            Some((number, _)) => {
                                let expected = steps.last().map_or(1, |s| s.number.saturating_add(1));
                                if number != expected {
                                    p.at(
                                        l.no,
                                        format!(
                                            "`### Step {number}` should be `### Step {expected}`: steps are numbered from 1 without gaps"
                                        ),
                                    );
                                }
                                steps.push(Step {
                                    number,
                                    line: l.no,
                                    risk: Vec::new(),
                                    verify: Vec::new(),
                                    rollback: Vec::new(),
                                    shell: Vec::new(),
                                });
                                in_step = true;
                            }
                            None => p.at(
                                l.no,
                                format!(
                                    "level-3 heading `### {}` in `## Steps` must have the form `### Step N: description`",
                                    snippet(text, 60)
                                ),
                            ),
                        }
                    }
                    continue;
                }
                let Some(step) = steps.last_mut().filter(|_| in_step) else {
                    if l.text.starts_with("**Risk:**") && tier == Some(1) {
                        p.at(
                            l.no,
                            "Tier 1 skills must not carry `**Risk:**` lines in `## Steps`",
                        );
                    }
                    continue;
                };
                if l.text.starts_with("**Risk:**") {
                    step.risk.push(l);
                } else if l.text.starts_with("**Verify:**") {
                    step.verify.push(l.no);
                } else if l.text.starts_with("**Rollback:**") {
                    step.rollback.push(l.no);
                }
            }
            LineKind::Code { sh: true } => {
                if let Some(step) = steps.last_mut().filter(|_| in_step) {
                    step.shell.push(l);
                }
            }
            _ => {}
        }
    }
    if steps.is_empty() {
        let line_no = lines.get(steps_start).map_or(0, |l| l.no);
        p.at(
            line_no,
            "`## Steps` must contain at least one step `### Step 1: description`",
        );
        return facts;
    }

    match tier {
        Some(1) => {
            for step in &steps {
                for risk in &step.risk {
                    p.at(
                        risk.no,
                        format!(
                            "Step {}: Tier 1 steps are read-only checks and must not carry `**Risk:**` lines",
                            step.number
                        ),
                    );
                }
                for l in &step.shell {
                    if let Some(cmd) = destructive_command(l.text) {
                        p.at(
                            l.no,
                            format!(
                                "Step {}: Tier 1 steps must be read-only, but this line runs `{cmd}`",
                                step.number
                            ),
                        );
                    }
                }
            }
        }
        Some(2) => {
            let mut max: Option<(StepRisk, u32)> = None;
            let mut all_known = true;
            for step in &steps {
                let level = check_tier2_step(step, p);
                match level {
                    Some(level) => {
                        if max.is_none_or(|(m, _)| level > m) {
                            max = Some((level, step.number));
                        }
                    }
                    None => all_known = false,
                }
            }
            if all_known {
                facts.max_step_risk = max;
            }
        }
        _ => {}
    }
    facts
}

fn section_list() -> String {
    SECTIONS
        .iter()
        .map(|s| format!("`## {s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks one Tier 2 step; returns its risk level when it is valid.
fn check_tier2_step(step: &Step<'_>, p: &mut Problems<'_>) -> Option<StepRisk> {
    let n = step.number;
    let risk_lines: Vec<usize> = step.risk.iter().map(|l| l.no).collect();
    let mut complete = true;
    for (label, found) in [
        ("**Risk:**", &risk_lines),
        ("**Verify:**", &step.verify),
        ("**Rollback:**", &step.rollback),
    ] {
        match found.len() {
            0 => {
                p.at(
                    step.line,
                    format!(
                        "Step {n} has no `{label}` line: every Tier 2 step needs lines starting with `**Risk:**`, `**Verify:**` and `**Rollback:**`, in that order"
                    ),
                );
                complete = false;
            }
            1 => {}
            _ => {
                p.at(
                    found.get(1).copied().unwrap_or(step.line),
                    format!("Step {n} has more than one `{label}` line"),
                );
                complete = false;
            }
        }
    }
    if complete
        && let (Some(r), Some(v), Some(b)) = (
            risk_lines.first(),
            step.verify.first(),
            step.rollback.first(),
        )
        && !(r < v && v < b)
    {
        p.at(
            step.line,
            format!(
                "Step {n}: the `**Risk:**`, `**Verify:**` and `**Rollback:**` lines must appear in that order"
            ),
        );
    }
    let risk_line = step.risk.first()?;
    let rest = risk_line
        .text
        .strip_prefix("**Risk:**")
        .unwrap_or("")
        .trim_start();
    let word_len = rest
        .bytes()
        .take_while(|b| b.is_ascii_alphabetic() || *b == b'-')
        .count();
    let word = rest.get(..word_len).unwrap_or("");
    let explanation = rest.get(word_len..).unwrap_or("");
    let level = match word {
        "low" => StepRisk::Low,
        "medium" => StepRisk::Medium,
        "destructive" => StepRisk::Destructive,
        _ => {
            p.at(
                risk_line.no,
                format!(
                    "Step {n}: `**Risk:**` must continue with low, medium or destructive, found `{}`",
                    snippet(rest, 30)
                ),
            );
            return None;
        }
    };
    if level == StepRisk::Destructive
        && !explanation
            .trim_start_matches(|c: char| c.is_whitespace() || ":—–-,;.".contains(c))
            .chars()
            .any(char::is_alphanumeric)
    {
        p.at(
            risk_line.no,
            format!(
                "Step {n} is marked destructive but does not explain on the same line why (what is lost or what can go wrong)"
            ),
        );
    }
    if level != StepRisk::Destructive {
        for l in &step.shell {
            if let Some(cmd) = destructive_command(l.text) {
                p.at(
                    l.no,
                    format!(
                        "Step {n} runs `{cmd}` (it forces quorum, wipes labels, rolls back snapshots or deletes data) and must be marked `**Risk:** destructive`, not {}",
                        level.as_str()
                    ),
                );
            }
        }
    }
    Some(level)
}

// ---------------------------------------------------------------------------
// parse_skill
// ---------------------------------------------------------------------------

/// Parses and validates one skill file. Returns every problem of the file, not just the first.
///
/// `file_name` is the file's name (or path); its last component without `.md` must equal the `id`.
pub fn parse_skill(
    file_name: &str,
    text: &str,
    source: SkillSource,
) -> Result<Skill, Vec<Problem>> {
    let mut p = Problems::new(file_name);
    let stem = file_base(file_name).strip_suffix(".md");
    if stem.is_none() {
        p.whole("a skill file name must end in `.md`");
    }
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => {
            p.at(
                1,
                "the file starts with a byte order mark: save it as UTF-8 without BOM",
            );
            rest
        }
        None => text,
    };
    if let Some(pos) = text.find('\r') {
        let line = text.get(..pos).map_or(0, |t| t.matches('\n').count()) + 1;
        p.at(line, "line endings must be LF, found CR (\\r)");
    }
    let lines = split_lines(text);
    if lines.first().map(|l| l.text) != Some("---") {
        p.at(
            1,
            "a skill must start with YAML frontmatter: a line `---`, the fields, and a closing line `---`",
        );
        for line in &lines {
            check_html(*line, &mut p);
        }
        return Err(p.into_sorted());
    }
    let Some(close) = lines
        .iter()
        .skip(1)
        .position(|l| l.text == "---")
        .map(|i| i + 1)
    else {
        p.at(1, "the frontmatter is not closed by a line `---`");
        return Err(p.into_sorted());
    };
    let frontmatter = lines.get(1..close).unwrap_or(&[]);
    for line in frontmatter {
        check_html(*line, &mut p);
    }
    let entries = parse_mapping(frontmatter, 0, 0, &mut p);
    let fields = extract_fields(&entries, stem, &mut p);
    let body_lines = lines.get(close + 1..).unwrap_or(&[]);
    let body = body_lines
        .first()
        .and_then(|l| text.get(l.start..))
        .unwrap_or("");
    let tier = fields.tier.filter(|t| (1..=3).contains(t));
    let facts = check_body(body_lines, fields.title.as_deref(), tier, &mut p);

    // Tier and risk.
    if let (Some(tier), Some((risk, risk_line))) = (fields.tier, &fields.risk) {
        if tier == 1 && risk != "read-only" {
            p.at(
                *risk_line,
                format!("a Tier 1 skill must have risk: read-only, found `{risk}`"),
            );
        }
        if tier == 2 && risk == "read-only" {
            p.at(
                *risk_line,
                "a Tier 2 skill must not have risk: read-only (use low, medium or destructive)",
            );
        }
        if tier == 2
            && risk != "read-only"
            && let Some((max, step)) = facts.max_step_risk
            && risk != max.as_str()
        {
            p.at(
                *risk_line,
                format!(
                    "risk is `{risk}` but the highest step risk is `{}` (Step {step}): a Tier 2 skill's risk must equal the highest risk of its steps",
                    max.as_str()
                ),
            );
        }
    }

    if !p.is_empty() {
        return Err(p.into_sorted());
    }
    match fields {
        Fields {
            id: Some((id, _)),
            title: Some(title),
            tier: Some(tier),
            platforms: Some(platforms),
            tags: Some(tags),
            detectors: Some(detectors),
            keywords: Some(keywords),
            risk: Some((risk, _)),
            privileges: Some(privileges),
            estimated_minutes: Some(estimated_minutes),
            applies_to: Some(applies_to),
            version: Some(version),
        } => match u8::try_from(tier) {
            Ok(tier) => Ok(Skill {
                id,
                title,
                tier,
                platforms,
                tags,
                detectors,
                keywords,
                risk,
                privileges,
                estimated_minutes,
                applies_to,
                version,
                body: body.to_string(),
                source,
            }),
            Err(_) => {
                p.whole("`tier` must be 1 or 2");
                Err(p.into_sorted())
            }
        },
        _ => {
            // Every missing field was reported; this is only reachable if a check was skipped.
            p.whole("the frontmatter is incomplete");
            Err(p.into_sorted())
        }
    }
}

// ---------------------------------------------------------------------------
// Library listing
// ---------------------------------------------------------------------------

struct ListingLine<'a> {
    id: &'a str,
    title: &'a str,
    tier: &'a str,
    platforms: &'a str,
}

const LISTING_FORM: &str = "`- [ID](ID.md) — Title (Tier N; platforms)`";

fn parse_listing_line(s: &str) -> Result<ListingLine<'_>, String> {
    let bad_form = || format!("a listing line must have the form {LISTING_FORM}");
    let rest = s.strip_prefix("- [").ok_or_else(bad_form)?;
    let (id, rest) = rest.split_once("](").ok_or_else(bad_form)?;
    let (target, rest) = rest.split_once(')').ok_or_else(bad_form)?;
    if target != format!("{id}.md") {
        return Err(format!(
            "the link of `{}` must point to `{id}.md`, not `{}`",
            snippet(id, 60),
            snippet(target, 60)
        ));
    }
    let Some(rest) = rest.strip_prefix(" — ") else {
        return Err(
            "the separator after the link must be an em dash (U+2014) with one space on each side: ` — `"
                .into(),
        );
    };
    let rest = rest.strip_suffix(')').ok_or_else(bad_form)?;
    let (title, meta) = rest.rsplit_once(" (").ok_or_else(bad_form)?;
    let meta = meta.strip_prefix("Tier ").ok_or_else(bad_form)?;
    let (tier, platforms) = meta.split_once("; ").ok_or_else(bad_form)?;
    Ok(ListingLine {
        id,
        title,
        tier,
        platforms,
    })
}

/// Checks that `skills-library.md` lists every built-in skill in `skills` exactly once,
/// nothing else, sorted by id, each line in the exact form of spec section 7.
/// Operator skills in `skills` are ignored (they must not be listed).
pub fn check_library(listing: &str, skills: &[Skill]) -> Vec<Problem> {
    let mut p = Problems::new(LIBRARY_FILE);
    let builtin: Vec<&Skill> = skills
        .iter()
        .filter(|s| s.source == SkillSource::BuiltIn)
        .collect();
    if let Some(pos) = listing.find('\r') {
        let line = listing.get(..pos).map_or(0, |t| t.matches('\n').count()) + 1;
        p.at(line, "line endings must be LF, found CR (\\r)");
    }
    let lines = split_lines(listing);
    let mut idx = 0;
    if lines.first().map(|l| l.text) == Some(LIBRARY_HEADING) {
        idx = 1;
    } else {
        p.at(
            1,
            format!("the listing must start with the heading `{LIBRARY_HEADING}`"),
        );
    }
    // One introduction paragraph.
    while lines.get(idx).is_some_and(|l| l.text.trim().is_empty()) {
        idx += 1;
    }
    let intro_start = idx;
    while lines
        .get(idx)
        .is_some_and(|l| !l.text.trim().is_empty() && !l.text.starts_with("- "))
    {
        idx += 1;
    }
    if idx == intro_start {
        p.at(
            lines.get(idx).map_or(1, |l| l.no),
            "the heading must be followed by a one-paragraph introduction",
        );
    }

    let mut listed: Vec<(&str, usize)> = Vec::new();
    let mut previous: Option<&str> = None;
    for line in lines.iter().skip(idx) {
        if line.text.trim().is_empty() {
            continue;
        }
        let entry = match parse_listing_line(line.text) {
            Ok(entry) => entry,
            Err(message) => {
                if line.text.starts_with("- ") {
                    p.at(line.no, message);
                } else {
                    p.at(
                        line.no,
                        format!(
                            "unexpected line: after the introduction the listing must contain only skill lines of the form {LISTING_FORM}"
                        ),
                    );
                }
                continue;
            }
        };
        let id = entry.id;
        if let Some(&(_, first)) = listed.iter().find(|(l, _)| *l == id) {
            p.at(
                line.no,
                format!("`{id}` is listed twice (first on line {first})"),
            );
            continue;
        }
        if let Some(prev) = previous
            && id < prev
        {
            p.at(
                line.no,
                format!(
                    "`{id}` is listed after `{prev}`: lines must be sorted by id in byte order"
                ),
            );
        }
        previous = Some(id);
        listed.push((id, line.no));
        let Some(skill) = builtin.iter().find(|s| s.id == id) else {
            p.at(
                line.no,
                format!(
                    "the listing names `{}.md`, but no valid built-in skill has that id",
                    snippet(id, 60)
                ),
            );
            continue;
        };
        if entry.title != skill.title {
            p.at(
                line.no,
                format!(
                    "`{id}` is listed with the title `{}`, but its frontmatter says `{}`",
                    snippet(entry.title, 80),
                    skill.title
                ),
            );
        }
        if entry.tier != skill.tier.to_string() {
            p.at(
                line.no,
                format!(
                    "`{id}` is listed as Tier {}, but its frontmatter says tier {}",
                    snippet(entry.tier, 10),
                    skill.tier
                ),
            );
        }
        let platforms = skill.platforms.join(", ");
        if entry.platforms != platforms {
            p.at(
                line.no,
                format!(
                    "`{id}` is listed with the platforms `{}`, but its frontmatter says `{platforms}` (joined with `, ` in frontmatter order)",
                    snippet(entry.platforms, 80)
                ),
            );
        }
    }
    let mut missing: Vec<&str> = builtin
        .iter()
        .map(|s| s.id.as_str())
        .filter(|id| !listed.iter().any(|(l, _)| l == id))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    for id in missing {
        p.whole(format!("skill `{id}` is missing from the listing"));
    }
    p.into_sorted()
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

/// Loads built-in skills (`(file name, text)`, e.g. embedded at build time), checks
/// the built-in listing when given, then loads operator skills.
///
/// Invalid files are reported and skipped, as are tier 3 skills, duplicate ids and
/// operator skills that reuse a built-in id; loading never stops early and never panics.
/// Built-in names under `templates/`, the listing itself and names not ending in `.md`
/// are ignored; built-in names in any other subfolder are reported.
pub fn load(
    builtin: &[(&str, &str)],
    builtin_listing: Option<&str>,
    operator: &[(String, String)],
) -> Library {
    let mut problems = Vec::new();
    let mut builtin_ids: BTreeSet<String> = BTreeSet::new();
    let mut builtin_skills: Vec<Skill> = Vec::new();
    for &(name, text) in builtin {
        let base = file_base(name);
        let folder = name
            .get(..name.len().saturating_sub(base.len()))
            .unwrap_or("");
        let folder = folder
            .trim_start_matches("./")
            .trim_end_matches(['/', '\\']);
        if !base.ends_with(".md") || (base == LIBRARY_FILE && folder.is_empty()) {
            continue;
        }
        if folder == TEMPLATES_DIR {
            continue;
        }
        if !folder.is_empty() {
            problems.push(Problem {
                file: name.to_string(),
                line: None,
                message: "skill files must be placed directly in skills/, not in a subfolder (only templates/ is allowed, and it is skipped)".into(),
            });
            continue;
        }
        if let Some(stem) = base.strip_suffix(".md") {
            builtin_ids.insert(stem.to_string());
        }
        match parse_skill(name, text, SkillSource::BuiltIn) {
            Ok(skill) => {
                if builtin_skills.iter().any(|s| s.id == skill.id) {
                    problems.push(Problem {
                        file: name.to_string(),
                        line: None,
                        message: format!(
                            "duplicate id `{}`: another built-in skill already uses it; skipped",
                            skill.id
                        ),
                    });
                } else {
                    builtin_ids.insert(skill.id.clone());
                    builtin_skills.push(skill);
                }
            }
            Err(found) => problems.extend(found),
        }
    }
    if let Some(listing) = builtin_listing {
        problems.extend(check_library(listing, &builtin_skills));
    }
    let mut operator_skills: Vec<Skill> = Vec::new();
    for (name, text) in operator {
        if !name.ends_with(".md") {
            continue;
        }
        match parse_skill(name, text, SkillSource::Operator) {
            Ok(skill) => {
                if builtin_ids.contains(&skill.id) {
                    problems.push(Problem {
                        file: name.clone(),
                        line: None,
                        message: format!(
                            "operator skill reuses the id `{}` of a built-in skill; skipped (copy the built-in skill and rename it to change it)",
                            skill.id
                        ),
                    });
                } else if operator_skills.iter().any(|s| s.id == skill.id) {
                    problems.push(Problem {
                        file: name.clone(),
                        line: None,
                        message: format!(
                            "duplicate id `{}`: another operator skill already uses it; skipped",
                            skill.id
                        ),
                    });
                } else {
                    operator_skills.push(skill);
                }
            }
            Err(found) => problems.extend(found),
        }
    }
    let mut skills = builtin_skills;
    skills.extend(operator_skills);
    skills.sort_by(|a, b| a.id.cmp(&b.id));
    Library { skills, problems }
}

/// Validates a skills folder: every `DIR/*.md` except the listing is a built-in skill,
/// `DIR/templates/` is skipped, `DIR/skills-library.md` is checked against the skills,
/// and `*.md` files in any other subfolder are reported. The only function here that does I/O.
pub fn check_dir(dir: &Path) -> Result<Library, std::io::Error> {
    let mut entries = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    let mut extra = Vec::new();
    let mut files: Vec<(String, String)> = Vec::new();
    let mut listing: Option<String> = None;
    let mut listing_seen = false;
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            if name != TEMPLATES_DIR {
                stray_skill_files(&entry.path(), &name, 0, &mut extra)?;
            }
            continue;
        }
        if !name.ends_with(".md") {
            continue;
        }
        let bytes = std::fs::read(entry.path())?;
        let is_listing = name == LIBRARY_FILE;
        listing_seen |= is_listing;
        match String::from_utf8(bytes) {
            Ok(text) if is_listing => listing = Some(text),
            Ok(text) => files.push((name, text)),
            Err(_) => extra.push(Problem {
                file: name,
                line: None,
                message: "the file is not valid UTF-8".into(),
            }),
        }
    }
    if !listing_seen {
        extra.push(Problem {
            file: LIBRARY_FILE.into(),
            line: None,
            message: "the library listing is missing".into(),
        });
    }
    let builtin: Vec<(&str, &str)> = files
        .iter()
        .map(|(name, text)| (name.as_str(), text.as_str()))
        .collect();
    let mut library = load(&builtin, listing.as_deref(), &[]);
    extra.append(&mut library.problems);
    library.problems = extra;
    Ok(library)
}

fn stray_skill_files(
    dir: &Path,
    rel: &str,
    depth: usize,
    out: &mut Vec<Problem>,
) -> Result<(), std::io::Error> {
    if depth > 8 {
        return Ok(());
    }
    let mut entries = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = format!("{rel}/{name}");
        if entry.file_type()?.is_dir() {
            stray_skill_files(&entry.path(), &path, depth + 1, out)?;
        } else if name.ends_with(".md") {
            out.push(Problem {
                file: path,
                line: None,
                message: "skill files must not be placed in subfolders of skills/ (only templates/ is allowed)".into(),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------

/// Whether `needle` occurs in `hay` starting at a word start (it may continue into a longer word:
/// `resilver` matches `resilvered`, `lookup` does not match `nslookup`). Both are lowercase.
fn contains_phrase(hay: &str, needle: &str) -> bool {
    let word_start = needle.chars().next().is_some_and(char::is_alphanumeric);
    hay.match_indices(needle).any(|(i, _)| {
        !word_start
            || !hay
                .get(..i)
                .and_then(|before| before.chars().next_back())
                .is_some_and(char::is_alphanumeric)
    })
}

/// Proposes skills for an incident, best first.
///
/// Each fired detector listed in a skill's `triggers.detectors` scores [`SCORE_DETECTOR`],
/// each of its keywords found case-insensitively in the evidence (at a word start) scores
/// [`SCORE_KEYWORD`], and each of its platforms among `platforms` adds [`SCORE_PLATFORM`].
/// Only skills with at least one detector or keyword match are returned; ties go by id.
pub fn suggest(
    skills: &[Skill],
    detectors: &[&str],
    evidence_text: &[&str],
    platforms: &[&str],
) -> Vec<Suggestion> {
    let evidence: Vec<String> = evidence_text.iter().map(|t| t.to_lowercase()).collect();
    let mut out = Vec::new();
    for skill in skills {
        let mut score = 0u32;
        let mut reasons = Vec::new();
        for d in &skill.detectors {
            let reason = format!("detector {d}");
            if detectors.iter().any(|x| x.trim() == d) && !reasons.contains(&reason) {
                score = score.saturating_add(SCORE_DETECTOR);
                reasons.push(reason);
            }
        }
        for k in &skill.keywords {
            let keyword = k.to_lowercase();
            let reason = format!("keyword {keyword:?}");
            if !keyword.trim().is_empty()
                && !reasons.contains(&reason)
                && evidence.iter().any(|e| contains_phrase(e, &keyword))
            {
                score = score.saturating_add(SCORE_KEYWORD);
                reasons.push(reason);
            }
        }
        if reasons.is_empty() {
            continue;
        }
        for platform in &skill.platforms {
            let reason = format!("platform {platform}");
            if platforms.iter().any(|x| x.trim() == platform) && !reasons.contains(&reason) {
                score = score.saturating_add(SCORE_PLATFORM);
                reasons.push(reason);
            }
        }
        out.push(Suggestion {
            id: skill.id.clone(),
            title: skill.title.clone(),
            tier: skill.tier,
            score,
            reasons,
        });
    }
    out.sort_by(|a, b| b.score.cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    out
}

/// Skills matching every word of `query` (case-insensitive, anywhere in id, title, tags,
/// keywords or body) and the exact filters; in the order of `skills`. An empty query
/// matches every skill that passes the filters.
pub fn search<'a>(
    skills: &'a [Skill],
    query: &str,
    tier: Option<u8>,
    platform: Option<&str>,
    tag: Option<&str>,
) -> Vec<&'a Skill> {
    let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
    skills
        .iter()
        .filter(|s| tier.is_none_or(|t| s.tier == t))
        .filter(|s| platform.is_none_or(|pl| s.platforms.iter().any(|x| x == pl)))
        .filter(|s| tag.is_none_or(|t| s.tags.iter().any(|x| x == t)))
        .filter(|s| {
            if words.is_empty() {
                return true;
            }
            let haystack = format!(
                "{}\n{}\n{}\n{}\n{}",
                s.id,
                s.title,
                s.tags.join(" "),
                s.keywords.join("\n"),
                s.body
            )
            .to_lowercase();
            words.iter().all(|w| haystack.contains(w.as_str()))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// The real skills folder of this repository.
    const SKILLS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../skills");

    fn skills_dir() -> std::path::PathBuf {
        std::env::var_os("WINGMAN_SKILLS_DIR").map_or_else(
            || std::path::PathBuf::from(SKILLS_DIR),
            std::path::PathBuf::from,
        )
    }

    const T2: &str = r##"---
id: disk-filling
title: Disk filling up on a node
tier: 2
platforms: [host, proxmox]
tags: [disk, storage]
triggers:
  detectors: [storage_filling, storage_full]
  keywords: ["no space left on device", "disk full", resilver]
risk: destructive
privileges: ["root on the node"]
estimated_minutes: 15
applies_to:
  pve: ">=8.0,<10"
  debian: ">=12"
version: 1
---

# Disk filling up on a node

## Summary

The root filesystem of `NODE` is filling up.

## When to use

- The `storage_filling` detector fired.

## Diagnosis

```sh
df -h /
```

`Use%` near 100 confirms it.

## Steps

### Step 1: Look at the biggest directories

```sh
du -xh / | sort -h | tail -n 20
```

**Risk:** low

**Verify:** the output lists directories.

**Rollback:** nothing to undo.

### Step 2: Delete old files

```sh
rm -rf /var/tmp/OLD
```

**Risk:** destructive — the deleted files are gone for good.

**Verify:** `df -h /` shows more free space.

**Rollback:** restore the files from backup.

## Verification

`df -h /` shows `Use%` below 80.

## Rollback

Deleted files cannot be restored except from backup.

## References

- df(1): https://man7.org/linux/man-pages/man1/df.1.html
"##;

    const T1: &str = r##"---
id: pool-check
title: ZFS pool looks unhealthy
tier: 1
platforms: [zfs]
tags: []
triggers:
  detectors: []
  keywords: [degraded]
risk: read-only
privileges:
  - root on the node
estimated_minutes: 5
applies_to: {}
version: 2
---

# ZFS pool looks unhealthy

## Summary

A pool may be degraded.

## When to use

- `zpool status -x` complains.

## Diagnosis

Run the step below.

## Steps

### Step 1: Show unhealthy pools

```sh
zpool status -x
```

`all pools are healthy` means there is nothing to do.

## Verification

You know which pool is affected.

## Rollback

Nothing to roll back: this skill only reads.

## References

- https://openzfs.github.io/openzfs-docs/man/master/8/zpool-status.8.html
"##;

    fn problems(name: &str, text: &str) -> Vec<Problem> {
        match parse_skill(name, text, SkillSource::BuiltIn) {
            Ok(skill) => panic!("expected problems, {name} parsed as {skill:?}"),
            Err(found) => found,
        }
    }

    /// Asserts that some problem's message contains every one of `needles`.
    fn assert_problem(found: &[Problem], needles: &[&str]) {
        assert!(
            found
                .iter()
                .any(|p| needles.iter().all(|n| p.message.contains(n))),
            "no problem mentions {needles:?}; got:\n{}",
            render(found)
        );
    }

    fn render(found: &[Problem]) -> String {
        found
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn broken(from: &str, to: &str) -> Vec<Problem> {
        assert!(T2.contains(from), "fixture lacks {from:?}");
        problems("disk-filling.md", &T2.replacen(from, to, 1))
    }

    fn broken1(from: &str, to: &str) -> Vec<Problem> {
        assert!(T1.contains(from), "fixture lacks {from:?}");
        problems("pool-check.md", &T1.replacen(from, to, 1))
    }

    fn valid(name: &str, text: &str, source: SkillSource) -> Skill {
        match parse_skill(name, text, source) {
            Ok(skill) => skill,
            Err(found) => panic!("{name} should be valid:\n{}", render(&found)),
        }
    }

    #[test]
    fn valid_fixtures_parse() {
        let s = valid("disk-filling.md", T2, SkillSource::BuiltIn);
        assert_eq!(s.id, "disk-filling");
        assert_eq!(s.title, "Disk filling up on a node");
        assert_eq!(s.tier, 2);
        assert_eq!(s.platforms, ["host", "proxmox"]);
        assert_eq!(s.detectors, ["storage_filling", "storage_full"]);
        assert_eq!(
            s.keywords,
            ["no space left on device", "disk full", "resilver"]
        );
        assert_eq!(s.risk, "destructive");
        assert_eq!(s.estimated_minutes, 15);
        assert_eq!(
            s.applies_to,
            [
                ("pve".to_string(), ">=8.0,<10".to_string()),
                ("debian".to_string(), ">=12".to_string())
            ]
        );
        assert!(s.body.starts_with("\n# Disk filling up on a node\n"));
        let t = valid("skills/pool-check.md", T1, SkillSource::Operator);
        assert_eq!(t.tier, 1);
        assert!(t.tags.is_empty());
        assert!(t.detectors.is_empty());
        assert_eq!(t.privileges, ["root on the node"]);
        assert!(t.applies_to.is_empty());
        assert_eq!(t.version, 2);
        assert_eq!(t.source, SkillSource::Operator);
    }

    #[test]
    fn block_lists_and_quoting() {
        let text = T2
            .replacen(
                "platforms: [host, proxmox]",
                "platforms:\n- host\n- 'proxmox'",
                1,
            )
            .replacen(
                "  detectors: [storage_filling, storage_full]",
                "  detectors:\n    - storage_filling\n    - \"storage_full\"",
                1,
            )
            .replacen("version: 1", "# a comment line\nversion: 1", 1);
        let s = valid("disk-filling.md", &text, SkillSource::BuiltIn);
        assert_eq!(s.platforms, ["host", "proxmox"]);
        assert_eq!(s.detectors, ["storage_filling", "storage_full"]);
    }

    #[test]
    fn problem_display_names_file_and_line() {
        let p = Problem {
            file: "a.md".into(),
            line: Some(3),
            message: "bad".into(),
        };
        assert_eq!(p.to_string(), "a.md:3: bad");
        let q = Problem { line: None, ..p };
        assert_eq!(q.to_string(), "a.md: bad");
    }

    #[test]
    fn missing_field() {
        let found = broken("version: 1\n", "");
        assert_problem(&found, &["missing field `version`"]);
    }

    #[test]
    fn unknown_field() {
        let found = broken("version: 1\n", "version: 1\nowner: me\n");
        assert_problem(&found, &["unknown field `owner`"]);
        let found = broken("  keywords:", "  labels: [x]\n  keywords:");
        assert_problem(&found, &["unknown key `labels` in `triggers`"]);
    }

    #[test]
    fn bad_id() {
        let text = T2.replacen("id: disk-filling", "id: Disk_Filling", 1);
        let found = problems("Disk_Filling.md", &text);
        assert_problem(&found, &["kebab-case"]);
        let text = T2.replacen("id: disk-filling", "id: disk--filling", 1);
        assert_problem(&problems("disk--filling.md", &text), &["kebab-case"]);
    }

    #[test]
    fn id_must_equal_file_name() {
        let found = problems("disk-full.md", T2);
        assert_problem(&found, &["must equal the file name", "disk-full"]);
        let found = problems("disk-filling.txt", T2);
        assert_problem(&found, &["must end in `.md`"]);
    }

    #[test]
    fn tier_3_is_refused() {
        let found = broken("tier: 2", "tier: 3");
        assert_problem(&found, &["tier 3", "refused"]);
        assert_problem(&broken("tier: 2", "tier: 0"), &["must be 1 or 2"]);
        assert_problem(&broken("tier: 2", "tier: \"2\""), &["integer"]);
    }

    #[test]
    fn tier_1_must_be_read_only() {
        let found = broken1("risk: read-only", "risk: low");
        assert_problem(&found, &["Tier 1", "read-only"]);
        let found = broken("risk: destructive", "risk: read-only");
        assert_problem(&found, &["Tier 2", "must not have risk: read-only"]);
        assert_problem(
            &broken("risk: destructive", "risk: high"),
            &["`risk` must be one of"],
        );
    }

    #[test]
    fn tier_2_risk_equals_highest_step_risk() {
        let found = broken("risk: destructive", "risk: medium");
        assert_problem(&found, &["highest step risk is `destructive`", "Step 2"]);
    }

    #[test]
    fn unknown_platform_and_duplicates() {
        let found = broken("[host, proxmox]", "[host, proxmox, windows]");
        assert_problem(&found, &["unknown platform `windows`"]);
        assert_problem(
            &broken("[host, proxmox]", "[host, host]"),
            &["listed twice"],
        );
        assert_problem(
            &broken("[host, proxmox]", "[]"),
            &["`platforms` must not be empty"],
        );
    }

    #[test]
    fn unknown_detector() {
        let found = broken(
            "[storage_filling, storage_full]",
            "[storage_filling, disk_exploded]",
        );
        assert_problem(&found, &["unknown detector `disk_exploded`"]);
        let found = broken1("keywords: [degraded]", "keywords: []");
        assert_problem(&found, &["at least one of `detectors` and `keywords`"]);
    }

    #[test]
    fn field_types_and_values() {
        assert_problem(
            &broken("[disk, storage]", "[Disk]"),
            &["tag `Disk` must be lowercase"],
        );
        assert_problem(
            &broken("\"disk full\"", "\"Disk Full\""),
            &["keyword", "lowercase"],
        );
        assert_problem(
            &broken("[\"root on the node\"]", "[]"),
            &["`privileges` must not be empty"],
        );
        assert_problem(
            &broken("estimated_minutes: 15", "estimated_minutes: 0"),
            &["positive"],
        );
        assert_problem(&broken("version: 1", "version: 0"), &["1 or greater"]);
        assert_problem(&broken("\">=8.0,<10\"", "\"8.0\""), &["constraint"]);
        assert_problem(&broken("\">=8.0,<10\"", "\">= 8.0\""), &["constraint"]);
        assert_problem(
            &broken("  debian:", "  ubuntu:"),
            &["unknown key `ubuntu` in `applies_to`"],
        );
        assert_problem(
            &broken("platforms: [host, proxmox]", "platforms: host"),
            &["must be a list"],
        );
        assert_problem(
            &broken("tags: [disk, storage]", "tags:"),
            &["must be a list"],
        );
        assert_problem(
            &broken("tags: [disk, storage]", "tags: [disk, yes]"),
            &["boolean", "quote"],
        );
        assert_problem(
            &broken(
                "title: Disk filling up on a node",
                "title: Disk filling up (on a node)",
            ),
            &["parentheses"],
        );
    }

    #[test]
    fn bad_yaml_is_rejected() {
        assert_problem(
            &broken("tags: [disk, storage]", "tags: &t [disk]"),
            &["anchor"],
        );
        assert_problem(&broken("tags: [disk, storage]", "tags: *t"), &["alias"]);
        assert_problem(
            &broken("risk: destructive", "risk: !!str destructive"),
            &["tag"],
        );
        assert_problem(
            &broken(
                "title: Disk filling up on a node",
                "title: >\n  Disk filling up on a node",
            ),
            &["multi-line"],
        );
        assert_problem(
            &broken(
                "title: Disk filling up on a node",
                "title: Disk filling\n  up on a node",
            ),
            &["multi-line"],
        );
        assert_problem(
            &broken("tags: [disk, storage]", "tags: [disk,\n  storage]"),
            &["multi-line"],
        );
        assert_problem(
            &broken("tags: [disk, storage]", "tags: [disk, [a, b]]"),
            &["nested lists"],
        );
        assert_problem(
            &broken("tags: [disk, storage]", "tags:\n  - - disk"),
            &["nested lists"],
        );
        assert_problem(
            &broken("  pve: \">=8.0,<10\"", "  pve:\n    x: \">=8\""),
            &["one level"],
        );
        assert_problem(&broken("version: 1", "version: 1 # bump me"), &["comment"]);
        assert_problem(
            &broken("version: 1", "version: 1\nversion: 2"),
            &["duplicate key `version`"],
        );
        assert_problem(
            &broken("  pve: \">=8.0,<10\"", "  pve: >=8.0"),
            &["block scalar"],
        );
        assert_problem(&broken("version: 1", "\tversion: 1"), &["tabs"]);
        assert_problem(&broken("title: Disk", "title: \"Disk"), &["not closed"]);
    }

    #[test]
    fn frontmatter_must_exist_and_close() {
        assert_problem(
            &problems("x.md", "# Title\n"),
            &["must start with YAML frontmatter"],
        );
        assert_problem(&problems("x.md", "---\nid: x\n"), &["not closed"]);
        assert_problem(&problems("x.md", ""), &["must start with YAML frontmatter"]);
    }

    #[test]
    fn crlf_line_endings_are_rejected() {
        let found = problems("disk-filling.md", &T2.replace('\n', "\r\n"));
        assert_problem(&found, &["LF"]);
    }

    #[test]
    fn title_heading_must_match() {
        let found = broken("# Disk filling up on a node\n", "# Disk filling up\n");
        assert_problem(&found, &["must repeat the title"]);
        let found = broken("# Disk filling up on a node\n", "");
        assert_problem(&found, &["must begin with the level-1 heading"]);
    }

    #[test]
    fn headings_missing_out_of_order_or_extra() {
        let found = broken(
            "## Verification\n\n`df -h /` shows `Use%` below 80.\n\n",
            "",
        );
        assert_problem(&found, &["missing section `## Verification`"]);
        let swapped = T2
            .replacen("## Summary", "## TMP", 1)
            .replacen("## When to use", "## Summary", 1)
            .replacen("## TMP", "## When to use", 1);
        assert_problem(&problems("disk-filling.md", &swapped), &["out of order"]);
        assert_problem(
            &broken("## Rollback\n", "## Notes\n\nx\n\n## Rollback\n"),
            &["`## Notes` is not allowed"],
        );
        assert_problem(
            &broken("## Rollback\n", "## Summary\n\nx\n\n## Rollback\n"),
            &["more than once"],
        );
        assert_problem(
            &broken("The root filesystem", "Setext\n---\n\nThe root filesystem"),
            &["setext"],
        );
    }

    #[test]
    fn sections_have_required_content() {
        let found = broken(
            "- df(1): https://man7.org/linux/man-pages/man1/df.1.html",
            "- df(1)",
        );
        assert_problem(&found, &["https://"]);
        let found = broken("Deleted files cannot be restored except from backup.\n", "");
        assert_problem(&found, &["`## Rollback` must not be empty"]);
    }

    #[test]
    fn step_headings() {
        assert_problem(
            &broken("### Step 2: Delete", "### Step 3: Delete"),
            &["numbered from 1 without gaps"],
        );
        assert_problem(
            &broken("### Step 2: Delete", "### Step two: Delete"),
            &["### Step N: description"],
        );
        let found = broken1("### Step 1: Show unhealthy pools", "Show unhealthy pools");
        assert_problem(&found, &["at least one step"]);
    }

    #[test]
    fn tier_2_step_needs_risk_verify_rollback() {
        let found = broken("**Verify:** `df -h /` shows more free space.\n", "");
        assert_problem(&found, &["Step 2 has no `**Verify:**` line"]);
        let found = broken("**Risk:** low\n", "");
        assert_problem(&found, &["Step 1 has no `**Risk:**` line"]);
        let found = broken("**Rollback:** nothing to undo.\n", "");
        assert_problem(&found, &["Step 1 has no `**Rollback:**` line"]);
        let found = broken(
            "**Risk:** low\n\n**Verify:** the output lists directories.",
            "**Verify:** the output lists directories.\n\n**Risk:** low",
        );
        assert_problem(&found, &["in that order"]);
        assert_problem(
            &broken("**Risk:** low", "**Risk:** minor"),
            &["low, medium or destructive"],
        );
        let found = broken(
            "**Risk:** destructive — the deleted files are gone for good.",
            "**Risk:** destructive",
        );
        assert_problem(&found, &["does not explain"]);
        // A destructive step may roll back snapshots.
        let ok = T2.replacen("rm -rf /var/tmp/OLD", "zfs rollback rpool/data@before", 1);
        valid("disk-filling.md", &ok, SkillSource::BuiltIn);
    }

    #[test]
    fn destructive_commands_need_destructive_risk() {
        let found = broken("du -xh / | sort -h | tail -n 20", "pvecm expected 1");
        assert_problem(&found, &["Step 1 runs `pvecm expected`", "destructive"]);
        let found = broken("df -h /\n", "zfs rollback rpool/ROOT@x\n");
        assert_problem(&found, &["`## Diagnosis` must be read-only"]);
        let found = broken1("```sh\nzpool status -x", "```sh\nzpool labelclear DEVICE");
        assert_problem(&found, &["Tier 1 steps must be read-only"]);
    }

    #[test]
    fn tier_1_steps_carry_no_risk_lines() {
        let found = broken1(
            "`all pools are healthy` means",
            "**Risk:** low\n\n`all pools are healthy` means",
        );
        assert_problem(&found, &["Tier 1", "`**Risk:**`"]);
    }

    #[test]
    fn code_fence_languages() {
        assert_problem(
            &broken("```sh\ndf -h /", "```\ndf -h /"),
            &["code fence without a language"],
        );
        assert_problem(
            &broken("```sh\ndf -h /", "```bash\ndf -h /"),
            &["language `bash` is not allowed"],
        );
        assert_problem(
            &broken("## References", "```sh\nnever closed\n\n## References"),
            &["never closed"],
        );
    }

    #[test]
    fn html_outside_code_fences() {
        let found = broken(
            "`Use%` near 100 confirms it.",
            "<div class=\"note\">Use% near 100</div>",
        );
        assert_problem(&found, &["HTML-like tag `<div class=\"note\">`"]);
        assert_problem(&broken("`Use%` near 100", "`<br/>` near 100"), &["HTML"]);
        assert_problem(
            &broken("`Use%` near 100", "<!-- note --> near 100"),
            &["HTML comment"],
        );
        assert_problem(
            &broken(
                "- df(1): https://man7",
                "- df(1): <https://man7.org> https://man7",
            ),
            &["autolink"],
        );
        // Inside a code fence, real HTML closing tags and comparisons are fine.
        let ok = T2.replacen(
            "df -h /\n",
            "df -h / 2>/dev/null | grep '</td>'\n[ 1 -lt 2 ]\n",
            1,
        );
        valid("disk-filling.md", &ok, SkillSource::BuiltIn);
        let ok = T2.replacen(
            "`Use%` near 100",
            "`Use%` < 100 and a<b, x <= 3, `2>&1`, `<0x1>`",
            1,
        );
        valid("disk-filling.md", &ok, SkillSource::BuiltIn);
    }

    #[test]
    fn angle_bracket_placeholders() {
        let found = broken("`Use%` near 100", "Run `qm start <vmid>`; `Use%` near 100");
        assert_problem(&found, &["placeholder", "`VMID`"]);
        let found = broken("df -h /\n", "df -h <mountpoint>\n");
        assert_problem(&found, &["placeholder `<mountpoint>` in a code block"]);
        let found = broken("keywords: [", "keywords: [\"<none>\", ");
        assert_problem(&found, &["placeholder"]);
    }

    #[test]
    fn never_panics_on_prefixes_and_junk() {
        for text in [T1, T2] {
            for (i, _) in text.char_indices() {
                let _ = parse_skill("disk-filling.md", &text[..i], SkillSource::Operator);
            }
        }
        for junk in [
            "",
            "---",
            "---\n---",
            "\u{feff}---\n",
            "---\n: x\n---\n",
            "---\n- a\n---\n",
            "---\nid: [\"\n---\n",
            "---\nid: \"\\\n---\n",
            "---\ntriggers:\n  - x\n    - y\n---\n",
            "---\na:\n\t- b\n---\n# é\n## Steps\n### Step 99999999999: x\n**Risk:**",
            "---\nid: é\ntitle: 'it''s'\n---\n<é <a <a b <a\u{301}> </ <! ```\n~~~~\n<x>",
        ] {
            let _ = parse_skill("x.md", junk, SkillSource::BuiltIn);
            let _ = check_library(junk, &[]);
        }
    }

    fn t2_named(id: &str) -> String {
        T2.replacen("id: disk-filling", &format!("id: {id}"), 1)
    }

    #[test]
    fn duplicate_ids_are_reported() {
        let a = t2_named("disk-filling");
        let lib = load(
            &[("disk-filling.md", &a), ("disk-filling.md", &a)],
            None,
            &[],
        );
        assert_eq!(lib.skills.len(), 1);
        assert_problem(&lib.problems, &["duplicate id `disk-filling`"]);
        let op = vec![
            ("pool-check.md".to_string(), T1.to_string()),
            (
                "/etc/wingman/skills/pool-check.md".to_string(),
                T1.to_string(),
            ),
        ];
        let lib = load(&[], None, &op);
        assert_eq!(lib.skills.len(), 1);
        assert_problem(&lib.problems, &["duplicate id `pool-check`"]);
    }

    #[test]
    fn operator_skill_reusing_builtin_id_is_skipped() {
        let op = vec![
            ("disk-filling.md".to_string(), T2.to_string()),
            ("pool-check.md".to_string(), T1.to_string()),
        ];
        let lib = load(&[("disk-filling.md", T2)], None, &op);
        assert_problem(
            &lib.problems,
            &["reuses the id `disk-filling` of a built-in skill"],
        );
        assert_eq!(lib.skills.len(), 2);
        assert_eq!(lib.skills[0].source, SkillSource::BuiltIn);
        assert_eq!(lib.skills[1].id, "pool-check");
        assert_eq!(lib.skills[1].source, SkillSource::Operator);
    }

    #[test]
    fn load_skips_broken_and_tier_3_and_keeps_going() {
        let tier3 = T1.replacen("tier: 1", "tier: 3", 1);
        let op = vec![
            ("pool-check.md".to_string(), tier3),
            ("broken.md".to_string(), "no frontmatter".to_string()),
            ("notes.txt".to_string(), "ignored".to_string()),
        ];
        let listing = "# Skills library\n\nIntro.\n\n- [disk-filling](disk-filling.md) — Disk filling up on a node (Tier 2; host, proxmox)\n";
        let builtin = [
            ("disk-filling.md", T2),
            ("skills-library.md", "not a skill"),
            ("templates/skill-template.md", "not checked"),
            ("extra/stray.md", "misplaced"),
        ];
        let lib = load(&builtin, Some(listing), &op);
        assert_eq!(lib.skills.len(), 1, "{}", render(&lib.problems));
        assert_problem(&lib.problems, &["tier 3", "refused"]);
        assert_problem(&lib.problems, &["frontmatter"]);
        assert_problem(&lib.problems, &["subfolder"]);
        assert_eq!(lib.problems.len(), 3, "{}", render(&lib.problems));
    }

    fn listing_fixture() -> (Vec<Skill>, String) {
        let skills = vec![
            valid("disk-filling.md", T2, SkillSource::BuiltIn),
            valid("pool-check.md", T1, SkillSource::BuiltIn),
        ];
        let listing = "# Skills library\n\nWingman's runbooks, one line per skill.\nSecond line of the same paragraph.\n\n\
- [disk-filling](disk-filling.md) — Disk filling up on a node (Tier 2; host, proxmox)\n\
- [pool-check](pool-check.md) — ZFS pool looks unhealthy (Tier 1; zfs)\n"
            .to_string();
        (skills, listing)
    }

    #[test]
    fn library_listing_in_sync() {
        let (skills, listing) = listing_fixture();
        let found = check_library(&listing, &skills);
        assert!(found.is_empty(), "{}", render(&found));
    }

    #[test]
    fn library_listing_out_of_sync() {
        let (skills, listing) = listing_fixture();
        let pool_line = "- [pool-check](pool-check.md) — ZFS pool looks unhealthy (Tier 1; zfs)\n";
        let disk_line = "- [disk-filling](disk-filling.md) — Disk filling up on a node (Tier 2; host, proxmox)\n";
        let check = |text: String| check_library(&text, &skills);

        assert_problem(
            &check(listing.replace(pool_line, "")),
            &["`pool-check` is missing from the listing"],
        );
        assert_problem(
            &check(format!("{listing}{pool_line}")),
            &["`pool-check` is listed twice"],
        );
        assert_problem(
            &check(format!("{listing}- [zzz](zzz.md) — Zzz (Tier 1; host)\n")),
            &["`zzz.md`", "no valid built-in skill"],
        );
        assert_problem(
            &check(listing.replace("Disk filling up on a node (", "Disk filling up (")),
            &["listed with the title"],
        );
        assert_problem(
            &check(listing.replace("(Tier 2;", "(Tier 1;")),
            &["listed as Tier 1"],
        );
        assert_problem(
            &check(listing.replace("host, proxmox", "proxmox, host")),
            &["platforms"],
        );
        assert_problem(
            &check(listing.replace(") — Disk", ") - Disk")),
            &["em dash"],
        );
        assert_problem(
            &check(listing.replace("(disk-filling.md)", "(disk.md)")),
            &["must point to `disk-filling.md`"],
        );
        let swapped = listing.replace(disk_line, "").replace(pool_line, "") + pool_line + disk_line;
        assert_problem(&check(swapped), &["sorted by id"]);
        assert_problem(
            &check(listing.replace("# Skills library", "# Skills")),
            &["# Skills library"],
        );
        assert_problem(
            &check(listing.replace(
                "# Skills library\n\nWingman's",
                "# Skills library\n\n- Wingman's",
            )),
            &["introduction"],
        );
        assert_problem(
            &check(format!("{listing}\nTrailing text.\n")),
            &["unexpected line"],
        );
        // Operator skills must not be listed.
        let mut op = skills.clone();
        op[1].source = SkillSource::Operator;
        assert_problem(&check_library(&listing, &op), &["no valid built-in skill"]);
    }

    #[test]
    fn suggest_ranks_detectors_then_keywords_then_platforms() {
        let skills = vec![
            valid("disk-filling.md", T2, SkillSource::BuiltIn),
            valid("pool-check.md", T1, SkillSource::BuiltIn),
        ];
        let found = suggest(
            &skills,
            &["storage_full"],
            &[
                "write failed: No space left on device",
                "pool tank is DEGRADED",
            ],
            &["zfs", "proxmox"],
        );
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].id, "disk-filling");
        assert_eq!(
            found[0].score,
            SCORE_DETECTOR + SCORE_KEYWORD + SCORE_PLATFORM
        );
        assert_eq!(
            found[0].reasons,
            [
                "detector storage_full",
                "keyword \"no space left on device\"",
                "platform proxmox"
            ]
        );
        assert_eq!(found[1].id, "pool-check");
        assert_eq!(found[1].reasons, ["keyword \"degraded\"", "platform zfs"]);
        // Platform alone is not a match; keywords match at a word start only.
        assert!(suggest(&skills, &[], &["nothing here"], &["zfs"]).is_empty());
        assert!(suggest(&skills, &[], &["undegraded"], &[]).is_empty());
        assert_eq!(suggest(&skills, &[], &["resilvered 2G"], &[]).len(), 1);
        // Ties go by id, deterministically.
        let tie = suggest(&skills, &[], &["degraded, disk full"], &[]);
        assert_eq!(
            tie.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["disk-filling", "pool-check"]
        );
        assert_eq!(tie[0].score, tie[1].score);
    }

    #[test]
    fn search_matches_all_words_and_filters() {
        let skills = vec![
            valid("disk-filling.md", T2, SkillSource::BuiltIn),
            valid("pool-check.md", T1, SkillSource::BuiltIn),
        ];
        let ids = |found: Vec<&Skill>| found.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(search(&skills, "", None, None, None)),
            ["disk-filling", "pool-check"]
        );
        assert_eq!(
            ids(search(&skills, "ZPOOL healthy", None, None, None)),
            ["pool-check"]
        );
        assert_eq!(
            ids(search(&skills, "disk zpool", None, None, None)),
            Vec::<String>::new()
        );
        assert_eq!(
            ids(search(&skills, "node", Some(2), None, None)),
            ["disk-filling"]
        );
        assert_eq!(
            ids(search(&skills, "", None, Some("zfs"), None)),
            ["pool-check"]
        );
        assert_eq!(
            ids(search(&skills, "", None, Some("zf"), None)),
            Vec::<String>::new()
        );
        assert_eq!(
            ids(search(&skills, "", None, None, Some("storage"))),
            ["disk-filling"]
        );
        assert_eq!(
            ids(search(&skills, "no space", Some(1), None, None)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn real_library_passes() {
        let dir = skills_dir();
        let lib = match check_dir(&dir) {
            Ok(lib) => lib,
            Err(e) => panic!("cannot read {}: {e}", dir.display()),
        };
        assert!(
            lib.problems.is_empty(),
            "{} problem(s) in {}:\n{}",
            lib.problems.len(),
            dir.display(),
            render(&lib.problems)
        );
        let files = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.ends_with(".md") && n != LIBRARY_FILE
                    })
                    .count()
            })
            .unwrap_or(0);
        assert!(files > 0);
        assert_eq!(lib.skills.len(), files);
    }

    #[test]
    fn real_template_is_valid() {
        let path = skills_dir().join(TEMPLATES_DIR).join("skill-template.md");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => panic!("cannot read {}: {e}", path.display()),
        };
        valid("skill-template.md", &text, SkillSource::BuiltIn);
    }

    #[test]
    fn check_dir_reports_stray_and_missing_files() {
        let dir = std::env::temp_dir().join(format!("wingman-skills-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let made = std::fs::create_dir_all(dir.join("templates"))
            .and_then(|()| std::fs::create_dir_all(dir.join("extra")))
            .and_then(|()| std::fs::write(dir.join("disk-filling.md"), T2))
            .and_then(|()| std::fs::write(dir.join("templates/skill-template.md"), "ignored"))
            .and_then(|()| std::fs::write(dir.join("extra/stray.md"), T1))
            .and_then(|()| std::fs::write(dir.join("bad.md"), [0xff, 0xfe]));
        if let Err(e) = made {
            panic!("cannot set up {}: {e}", dir.display());
        }
        let lib = check_dir(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let lib = match lib {
            Ok(lib) => lib,
            Err(e) => panic!("check_dir failed: {e}"),
        };
        assert_eq!(lib.skills.len(), 1);
        assert_problem(&lib.problems, &["listing is missing"]);
        assert_problem(&lib.problems, &["subfolders"]);
        assert_problem(&lib.problems, &["UTF-8"]);
        assert_eq!(lib.problems.len(), 3, "{}", render(&lib.problems));
    }
}
