//! Loghub-2k accuracy harness for the template miner.
//!
//! Usage: `cargo run --release --example loghub_eval -- DIR [--out OUTDIR]`
//!
//! For every `DIR/<S>/` holding `<S>_2k.log` and
//! `<S>_2k.log_structured_corrected.csv`, the header is cut off with the
//! system's `log_format` from `DIR/drain_benchmark_settings.json`, and the
//! contents are mined in two modes:
//! - `defaults`: `MinerConfig::default()`, nothing dataset-specific besides
//!   the header format;
//! - `published-settings`: the dataset's published Drain preprocessing
//!   regexes (each match replaced by `<*>`) applied before the miner.
//!
//! Options: `--gt original|khan2022` scores against the other ground-truth
//! variants, `--published-st` also maps Drain's `st` onto our similarity in
//! the published-settings mode, `--similarity X` / `--variable-after K`
//! change the miner configuration (for sensitivity checks), `--verbose`
//! lists mis-grouped and mis-templated ground-truth groups.
//!
//! GA, PA and FGA are computed against the corrected ground truth as the
//! Loghub-2.0 evaluator does (keyed on template strings, PA by exact string
//! equality). With `--out`, `OUTDIR/<S>_2k.log_predicted.csv` receives the
//! defaults-mode templates (`LineId,EventTemplate`).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use regex::Regex;
use wingman_agent::logs::miner::{Miner, MinerConfig};

/// Command-line options shared by all systems.
struct Opts {
    out: Option<PathBuf>,
    verbose: bool,
    gt_suffix: String,
    /// Miner configuration of the defaults mode (and the base of the
    /// published-settings mode).
    base: MinerConfig,
    /// Also use Drain's published `st` as our similarity threshold.
    published_st: bool,
}

#[derive(Default, Clone, Copy)]
struct Scores {
    ga: f64,
    pa: f64,
    fga: f64,
}

struct GtRow {
    line_id: String,
    content: String,
    template: String,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut dir: Option<PathBuf> = None;
    let mut opts = Opts {
        out: None,
        verbose: false,
        gt_suffix: String::from("_corrected"),
        base: MinerConfig::default(),
        published_st: false,
    };
    let usage = "usage: loghub_eval DIR [--out OUTDIR] [--verbose] [--gt corrected|original|khan2022] \
                 [--published-st] [--similarity X] [--variable-after K]";
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned();
        match args[i].as_str() {
            "--out" => {
                let Some(p) = value else {
                    eprintln!("error: --out needs a directory");
                    return ExitCode::from(2);
                };
                opts.out = Some(PathBuf::from(p));
                i += 1;
            }
            "--verbose" | "-v" => opts.verbose = true,
            "--published-st" => opts.published_st = true,
            "--gt" => {
                opts.gt_suffix = match value.as_deref() {
                    Some("corrected") => "_corrected".into(),
                    Some("original") => String::new(),
                    Some("khan2022") => "_khan2022".into(),
                    _ => {
                        eprintln!("error: --gt takes corrected, original or khan2022");
                        return ExitCode::from(2);
                    }
                };
                i += 1;
            }
            "--similarity" => {
                let Some(v) = value.and_then(|v| v.parse::<f32>().ok()) else {
                    eprintln!("error: --similarity needs a number");
                    return ExitCode::from(2);
                };
                opts.base.similarity = v;
                i += 1;
            }
            "--variable-after" => {
                let Some(v) = value.and_then(|v| v.parse::<usize>().ok()) else {
                    eprintln!("error: --variable-after needs an integer");
                    return ExitCode::from(2);
                };
                opts.base.variable_after = v;
                i += 1;
            }
            "-h" | "--help" => {
                println!("{usage}");
                return ExitCode::SUCCESS;
            }
            other if other.starts_with("--") => {
                eprintln!("error: unknown option {other}\n{usage}");
                return ExitCode::from(2);
            }
            other => dir = Some(PathBuf::from(other)),
        }
        i += 1;
    }
    let Some(dir) = dir else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    match run(&dir, &opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(dir: &Path, opts: &Opts) -> Result<(), String> {
    let out = opts.out.as_deref();
    let gt_suffix = opts.gt_suffix.as_str();

    let settings_path = dir.join("drain_benchmark_settings.json");
    let settings_text = fs::read_to_string(&settings_path)
        .map_err(|e| format!("cannot read {}: {e}", settings_path.display()))?;
    let settings: serde_json::Value = serde_json::from_str(&settings_text)
        .map_err(|e| format!("cannot parse {}: {e}", settings_path.display()))?;
    let datasets = settings
        .get("datasets")
        .and_then(|d| d.as_object())
        .ok_or_else(|| format!("{}: no \"datasets\" object", settings_path.display()))?;
    let published = load_published(&dir.join("published/loghub2.0_RQ2_effectiveness_results.csv"));

    if let Some(o) = out {
        fs::create_dir_all(o).map_err(|e| format!("cannot create {}: {e}", o.display()))?;
    }

    let mut systems: Vec<String> = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let log = path.join(format!("{name}_2k.log"));
        let gt = path.join(format!("{name}_2k.log_structured{gt_suffix}.csv"));
        if log.is_file() && gt.is_file() {
            systems.push(name);
        }
    }
    systems.sort();
    if systems.is_empty() {
        return Err(format!(
            "no <S>/<S>_2k.log with corrected ground truth under {}",
            dir.display()
        ));
    }

    println!(
        "{:<10} {:>5} | {:>5} {:>5} {:>5} | {:>5} {:>5} {:>5} | {:>5} {:>5} {:>5} | {:>4} {:>4}",
        "system",
        "lines",
        "GA",
        "PA",
        "FGA",
        "GA*",
        "PA*",
        "FGA*",
        "dGA",
        "dPA",
        "dFGA",
        "tpl",
        "gt"
    );
    println!("{}", "-".repeat(100));
    let mut sum_d = Scores::default();
    let mut sum_p = Scores::default();
    let mut n = 0usize;
    for s in &systems {
        let Some(cfg) = datasets.get(s) else {
            eprintln!("warning: {s}: no settings in drain_benchmark_settings.json, skipped");
            continue;
        };
        let result = eval_system(dir, s, cfg, opts);
        let (d, p, lines, ntpl, ngt) = match result {
            Ok(r) => r,
            Err(e) => {
                eprintln!("warning: {s}: {e}, skipped");
                continue;
            }
        };
        let pub_s = published.get(s).copied();
        let fmt = |v: Option<f64>| {
            v.map(|x| format!("{x:.3}"))
                .unwrap_or_else(|| "  -  ".into())
        };
        println!(
            "{:<10} {:>5} | {:.3} {:.3} {:.3} | {:.3} {:.3} {:.3} | {} {} {} | {:>4} {:>4}",
            s,
            lines,
            d.ga,
            d.pa,
            d.fga,
            p.ga,
            p.pa,
            p.fga,
            fmt(pub_s.map(|x| x.ga)),
            fmt(pub_s.map(|x| x.pa)),
            fmt(pub_s.map(|x| x.fga)),
            ntpl,
            ngt
        );
        sum_d.ga += d.ga;
        sum_d.pa += d.pa;
        sum_d.fga += d.fga;
        sum_p.ga += p.ga;
        sum_p.pa += p.pa;
        sum_p.fga += p.fga;
        n += 1;
    }
    if n == 0 {
        return Err("no system could be evaluated".into());
    }
    println!("{}", "-".repeat(100));
    println!("GA/PA/FGA = defaults; * = published Drain regexes before our miner;");
    println!(
        "dGA/dPA/dFGA = Drain (published settings), Loghub-2.0 RQ2 on Loghub-2k; tpl = our templates, gt = GT templates"
    );
    let k = n as f64;
    println!(
        "mean(defaults) GA={:.3} PA={:.3} FGA={:.3} n={}",
        sum_d.ga / k,
        sum_d.pa / k,
        sum_d.fga / k,
        n
    );
    println!(
        "mean(published-settings) GA={:.3} PA={:.3} FGA={:.3} n={}",
        sum_p.ga / k,
        sum_p.pa / k,
        sum_p.fga / k,
        n
    );
    Ok(())
}

type SystemResult = (Scores, Scores, usize, usize, usize);

fn eval_system(
    dir: &Path,
    s: &str,
    cfg: &serde_json::Value,
    opts: &Opts,
) -> Result<SystemResult, String> {
    let out = opts.out.as_deref();
    let gt_suffix = opts.gt_suffix.as_str();
    let format = cfg
        .get("log_format")
        .and_then(|v| v.as_str())
        .ok_or("no log_format")?;
    let header = format_regex(format)?;
    let regexes: Vec<Regex> = cfg
        .get("regex")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str())
                .map(|r| Regex::new(r).map_err(|e| format!("bad regex {r:?}: {e}")))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();

    let log_path = dir.join(s).join(format!("{s}_2k.log"));
    let gt_path = dir
        .join(s)
        .join(format!("{s}_2k.log_structured{gt_suffix}.csv"));
    let raw =
        fs::read(&log_path).map_err(|e| format!("cannot read {}: {e}", log_path.display()))?;
    let log_text = String::from_utf8_lossy(&raw);
    let gt = read_gt(&gt_path)?;

    // Cut headers (logparser: strip the line, then match the format).
    let mut contents: Vec<String> = Vec::new();
    let mut unmatched = 0usize;
    for line in log_text.split('\n') {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match header.captures(line).and_then(|c| c.name("Content")) {
            Some(m) => contents.push(m.as_str().to_string()),
            None => {
                unmatched += 1;
            }
        }
    }
    if unmatched > 0 {
        eprintln!("warning: {s}: {unmatched} lines did not match the log format and were skipped");
    }
    if contents.len() != gt.len() {
        return Err(format!(
            "{} parsed lines but {} ground-truth rows",
            contents.len(),
            gt.len()
        ));
    }
    let differing = contents
        .iter()
        .zip(&gt)
        .filter(|(c, g)| c.trim() != g.content.trim())
        .count();
    if differing > 0 {
        eprintln!("warning: {s}: {differing} contents differ from the ground-truth Content column");
    }

    let st = cfg.get("st").and_then(|v| v.as_f64());
    let published_config = MinerConfig {
        similarity: match st {
            Some(st) if opts.published_st => st as f32,
            _ => opts.base.similarity,
        },
        ..opts.base.clone()
    };
    let predicted_d = mine(opts.base.clone(), &contents, |c| c.to_string());
    let predicted_p = mine(published_config, &contents, |c| {
        let mut t = c.to_string();
        for r in &regexes {
            t = r.replace_all(&t, "<*>").into_owned();
        }
        t
    });

    let gt_templates: Vec<&str> = gt.iter().map(|r| r.template.as_str()).collect();
    let d = score(&gt_templates, &predicted_d);
    let p = score(&gt_templates, &predicted_p);
    let ntpl = {
        let mut v: Vec<&String> = predicted_d.iter().collect();
        v.sort();
        v.dedup();
        v.len()
    };
    let ngt = {
        let mut v = gt_templates.clone();
        v.retain(|t| !t.is_empty());
        v.sort();
        v.dedup();
        v.len()
    };

    if opts.verbose {
        report_errors(s, &contents, &gt_templates, &predicted_d);
    }

    if let Some(o) = out {
        let path = o.join(format!("{s}_2k.log_predicted.csv"));
        let mut text = String::from("LineId,EventTemplate\n");
        for (row, t) in gt.iter().zip(&predicted_d) {
            text.push_str(&csv_field(&row.line_id));
            text.push(',');
            text.push_str(&csv_field(t));
            text.push('\n');
        }
        fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok((d, p, contents.len(), ntpl, ngt))
}

/// Runs the miner over all contents and returns each line's final template.
fn mine(config: MinerConfig, contents: &[String], prep: impl Fn(&str) -> String) -> Vec<String> {
    let mut miner = Miner::new(config);
    let ids: Vec<_> = contents
        .iter()
        .map(|c| miner.observe(&prep(c)).id)
        .collect();
    ids.iter()
        .map(|&id| {
            let cur = miner.resolve(id);
            miner.template(cur).unwrap_or("<evicted>").to_string()
        })
        .collect()
}

/// GA, PA and FGA as defined by the Loghub-2.0 evaluator.
fn score(gt: &[&str], pred: &[String]) -> Scores {
    let idx: Vec<usize> = (0..gt.len())
        .filter(|&i| !gt[i].trim().is_empty())
        .collect();
    let n = idx.len();
    if n == 0 {
        return Scores::default();
    }
    let mut gt_groups: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut pred_count: HashMap<&str, usize> = HashMap::new();
    for &i in &idx {
        gt_groups.entry(gt[i]).or_default().push(i);
        *pred_count.entry(pred[i].as_str()).or_default() += 1;
    }
    let mut correct = 0usize;
    let mut accurate_groups = 0usize;
    for members in gt_groups.values() {
        let first = pred[members[0]].as_str();
        if members.iter().all(|&i| pred[i] == first)
            && pred_count.get(first) == Some(&members.len())
        {
            correct += members.len();
            accurate_groups += 1;
        }
    }
    let pa = idx.iter().filter(|&&i| pred[i] == gt[i]).count();
    let pga = accurate_groups as f64 / pred_count.len() as f64;
    let rga = accurate_groups as f64 / gt_groups.len() as f64;
    let fga = if pga + rga > 0.0 {
        2.0 * pga * rga / (pga + rga)
    } else {
        0.0
    };
    Scores {
        ga: correct as f64 / n as f64,
        pa: pa as f64 / n as f64,
        fga,
    }
}

/// Prints grouping and template errors (for development).
fn report_errors(s: &str, contents: &[String], gt: &[&str], pred: &[String]) {
    let mut gt_groups: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut pred_groups: HashMap<&str, Vec<usize>> = HashMap::new();
    for i in 0..gt.len() {
        gt_groups.entry(gt[i]).or_default().push(i);
        pred_groups.entry(pred[i].as_str()).or_default().push(i);
    }
    let mut groups: Vec<(&&str, &Vec<usize>)> = gt_groups.iter().collect();
    groups.sort_by_key(|(_, m)| std::cmp::Reverse(m.len()));
    for (t, members) in groups {
        let mut preds: HashMap<&str, usize> = HashMap::new();
        for &i in members.iter() {
            *preds.entry(pred[i].as_str()).or_default() += 1;
        }
        let pure = preds.len() == 1
            && preds
                .keys()
                .next()
                .is_some_and(|p| pred_groups.get(p).map(|v| v.len()) == Some(members.len()));
        let exact = preds.len() == 1 && preds.contains_key(*t);
        if pure && exact {
            continue;
        }
        println!(
            "[{s}] GT({}) {}{}",
            members.len(),
            t,
            if pure { "  [grouping ok]" } else { "" }
        );
        for (p, c) in &preds {
            let total = pred_groups.get(p).map(|v| v.len()).unwrap_or(0);
            let example = pred_groups
                .get(p)
                .and_then(|v| v.iter().find(|&&i| !gt[i].eq(*t)))
                .map(|&i| format!("  also: {}", contents[i]))
                .unwrap_or_default();
            println!("      {c:>4}/{total:<4} -> {p}{example}");
        }
    }
}

/// Reads the corrected ground truth: LineId, Content and EventTemplate.
fn read_gt(path: &Path) -> Result<Vec<GtRow>, String> {
    let raw = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&raw);
    let rows = parse_csv(&text);
    let header = rows
        .first()
        .ok_or_else(|| format!("{}: empty CSV", path.display()))?;
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}') == name)
            .ok_or_else(|| format!("{}: no {name} column", path.display()))
    };
    let (li, ci, ti) = (col("LineId")?, col("Content")?, col("EventTemplate")?);
    let mut out = Vec::new();
    for (k, r) in rows.iter().enumerate().skip(1) {
        if r.len() == 1 && r[0].is_empty() {
            continue;
        }
        let get = |i: usize| {
            r.get(i)
                .cloned()
                .ok_or_else(|| format!("{}: row {} has {} fields", path.display(), k + 1, r.len()))
        };
        out.push(GtRow {
            line_id: get(li)?,
            content: get(ci)?,
            template: get(ti)?,
        });
    }
    Ok(out)
}

/// Minimal RFC-4180 CSV parser: quoted fields, doubled quotes, CRLF.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            _ => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Turns a logparser `log_format` into a regex, as logparser does: fields
/// become lazy named groups, runs of spaces match `\s+`.
fn format_regex(format: &str) -> Result<Regex, String> {
    let mut re = String::from("^");
    let mut rest = format;
    while let Some(open) = rest.find('<') {
        let Some(close_rel) = rest[open..].find('>') else {
            break;
        };
        let close = open + close_rel;
        re.push_str(&spaces_to_ws(&rest[..open]));
        let name = &rest[open + 1..close];
        re.push_str(&format!("(?P<{name}>.*?)"));
        rest = &rest[close + 1..];
    }
    re.push_str(&spaces_to_ws(rest));
    re.push('$');
    Regex::new(&re).map_err(|e| format!("bad log_format {format:?}: {e}"))
}

fn spaces_to_ws(s: &str) -> String {
    let mut out = String::new();
    let mut in_space = false;
    for c in s.chars() {
        if c == ' ' {
            if !in_space {
                out.push_str(r"\s+");
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// Drain's published 2k scores (GA/PA/FGA) from the Loghub-2.0 RQ2 table.
fn load_published(path: &Path) -> HashMap<String, Scores> {
    let mut out: HashMap<String, Scores> = HashMap::new();
    let Ok(text) = fs::read_to_string(path) else {
        return out;
    };
    let rows = parse_csv(&text);
    let Some(header) = rows.first() else {
        return out;
    };
    let Some(col) = header.iter().position(|h| h == "Drain") else {
        return out;
    };
    for r in rows.iter().skip(1) {
        let (Some(key), Some(cell)) = (r.first(), r.get(col)) else {
            continue;
        };
        let mut parts = key.rsplitn(2, ' ');
        let (Some(metric), Some(system)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(v) = cell
            .split('/')
            .next()
            .and_then(|x| x.trim().parse::<f64>().ok())
        else {
            continue;
        };
        let e = out.entry(system.to_string()).or_default();
        match metric {
            "GA" => e.ga = v,
            "PA" => e.pa = v,
            "FGA" => e.fga = v,
            _ => {}
        }
    }
    out
}
