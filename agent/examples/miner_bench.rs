//! Throughput of masking + mining, per core (single thread).
//!
//! Usage: `cargo run --release --example miner_bench -- [LOGHUB_DIR] [--lines N]`
//!
//! - Synthetic: a journal-like corpus of N lines (default 1,000,000) built
//!   in code from ~40 homelab message shapes (systemd, sshd, sudo, kernel,
//!   docker, nginx, cron, ...) with random variables. Its true templates are
//!   known, so the grouping accuracy (GA) on it is printed as well.
//! - Loghub: for every system under LOGHUB_DIR, the 2k contents (header cut
//!   with the published log_format) are repeated up to N lines.
//!
//! It also prints the RSS growth of a miner filled with 5,000 distinct
//! templates and then pushed past its cap (eviction).
//!
//! For each corpus it prints mask-only throughput (MB/s) and mask+mine
//! throughput (lines/s), best of three runs, measured in this thread's CPU
//! time (so per core, even on a shared machine).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use wingman_agent::logs::miner::{Miner, MinerConfig, TemplateId};
use wingman_protocol::logs::mask::mask_into;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut lines = 1_000_000usize;
    let mut dir: Option<String> = None;
    let mut only: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--only" {
            i += 1;
            only = args.get(i).cloned();
        } else if args[i] == "--lines" {
            i += 1;
            lines = args.get(i).and_then(|v| v.parse().ok()).unwrap_or(lines);
        } else {
            dir = Some(args[i].clone());
        }
        i += 1;
    }

    println!(
        "{:<12} {:>9} {:>9} {:>12} {:>14} {:>9} {:>8}",
        "corpus", "lines", "MB", "mask MB/s", "mine lines/s", "templates", "GA"
    );
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    // First, while the heap is still small, so that RSS growth is meaningful.
    if wanted("memory") {
        memory();
    }
    if wanted("synthetic") {
        let (corpus, truth) = synthetic(lines, 42);
        let ga = synthetic_ga(&corpus, &truth);
        bench("synthetic", &corpus, Some(ga));
    }
    if wanted("unique-words") {
        bench("unique-words", &unique_words(lines, 7), None);
    }
    if wanted("many-shapes") {
        bench("many-shapes", &many_shapes(lines, 9), None);
    }

    if let Some(dir) = dir {
        match loghub_corpora(Path::new(&dir), lines) {
            Ok(sets) => {
                for (name, corpus) in sets {
                    if !wanted(&name) {
                        continue;
                    }
                    bench(&name, &corpus, None);
                }
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
}

fn bench(name: &str, corpus: &[String], ga: Option<f64>) {
    let bytes: usize = corpus.iter().map(|l| l.len() + 1).sum();
    let mut best_mask = f64::MAX;
    let mut best_mine = f64::MAX;
    let mut templates = 0;
    let mut buf = String::new();
    for _ in 0..3 {
        let t = Clock::start();
        let mut sink = 0usize;
        for l in corpus {
            mask_into(l, &mut buf);
            sink = sink.wrapping_add(buf.len());
        }
        std::hint::black_box(sink);
        best_mask = best_mask.min(t.seconds());

        let mut miner = Miner::new(MinerConfig::default());
        let t = Clock::start();
        let mut acc = 0u64;
        for l in corpus {
            acc ^= miner.observe(l).id.0;
        }
        std::hint::black_box(acc);
        best_mine = best_mine.min(t.seconds());
        templates = miner.len();
    }
    let mb = bytes as f64 / 1e6;
    println!(
        "{:<12} {:>9} {:>9.1} {:>12.0} {:>14.0} {:>9} {:>8}",
        name,
        corpus.len(),
        mb,
        mb / best_mask,
        corpus.len() as f64 / best_mine,
        templates,
        ga.map(|g| format!("{g:.3}")).unwrap_or_else(|| "-".into())
    );
}

/// Resident set size of this process in KiB (Linux), if available.
fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// RSS growth of a miner filled to its default cap with distinct
/// journal-like templates (about 10 tokens each), then pushed 4x past it.
fn memory() {
    let before = rss_kib().unwrap_or(0);
    let mut miner = Miner::new(MinerConfig::default());
    let cap = miner.config().max_templates;
    // Every word is specific to template i (letters only, so masking keeps
    // it), so no two templates merge.
    let line = |i: usize, n: usize| {
        let mut k = i;
        let mut w = String::new();
        for _ in 0..4 {
            w.push(char::from(b'a' + (k % 26) as u8));
            k /= 26;
        }
        format!(
            "svc{w}: worker{w} reported{w} {n} errors{w} on{w} vol{w} during{w} sync{w} phase{w} {n}"
        )
    };
    for i in 0..cap {
        for n in 0..3 {
            miner.observe(&line(i, n));
        }
    }
    let full = rss_kib().unwrap_or(0);
    for i in cap..5 * cap {
        miner.observe(&line(i, 1));
    }
    let after = rss_kib().unwrap_or(0);
    println!(
        "memory: {} templates -> RSS +{} KiB ({} B/template); after {} more distinct templates: \
         {} live, {} evicted, RSS +{} KiB",
        cap,
        full.saturating_sub(before),
        full.saturating_sub(before) * 1024 / cap.max(1) as u64,
        4 * cap,
        miner.len(),
        miner.evicted(),
        after.saturating_sub(before)
    );
}

/// CPU time of this thread (from /proc/thread-self/schedstat, in ns), so
/// that figures are per core even when other processes share the machine;
/// falls back to wall-clock time.
struct Clock {
    wall: Instant,
    cpu: Option<u64>,
}

impl Clock {
    fn start() -> Self {
        Self {
            wall: Instant::now(),
            cpu: thread_cpu_ns(),
        }
    }
    fn seconds(&self) -> f64 {
        match (self.cpu, thread_cpu_ns()) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
            _ => self.wall.elapsed().as_secs_f64(),
        }
    }
}

fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// GA of the default miner on the synthetic corpus (first 20,000 lines).
fn synthetic_ga(corpus: &[String], truth: &[usize]) -> f64 {
    let n = corpus.len().min(20_000);
    let mut miner = Miner::new(MinerConfig::default());
    let ids: Vec<TemplateId> = corpus[..n].iter().map(|l| miner.observe(l).id).collect();
    let pred: Vec<TemplateId> = ids.iter().map(|&id| miner.resolve(id)).collect();
    let mut gt_groups: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut pred_count: HashMap<TemplateId, usize> = HashMap::new();
    for i in 0..n {
        gt_groups.entry(truth[i]).or_default().push(i);
        *pred_count.entry(pred[i]).or_default() += 1;
    }
    let mut correct = 0usize;
    let mut bad: Vec<(usize, usize)> = Vec::new();
    for (g, m) in &gt_groups {
        let p = pred[m[0]];
        if m.iter().all(|&i| pred[i] == p) && pred_count.get(&p) == Some(&m.len()) {
            correct += m.len();
        } else {
            bad.push((*g, m.len()));
        }
    }
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        for (g, len) in bad {
            let mut seen: Vec<TemplateId> = Vec::new();
            eprintln!("synthetic template {g} ({len} lines) split or merged:");
            for i in 0..n {
                if truth[i] == g && !seen.contains(&pred[i]) {
                    seen.push(pred[i]);
                    let others = (0..n)
                        .filter(|&j| pred[j] == pred[i] && truth[j] != g)
                        .count();
                    if seen.len() <= 4 {
                        eprintln!(
                            "    {} -> {} (+{others} lines of other templates)",
                            corpus[i],
                            miner.template(pred[i]).unwrap_or("?")
                        );
                    }
                }
            }
            eprintln!("    {} predicted templates", seen.len());
        }
    }
    correct as f64 / n as f64
}

/// Small deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
    fn ip(&mut self) -> String {
        format!(
            "{}.{}.{}.{}",
            self.below(223) + 1,
            self.below(256),
            self.below(256),
            self.below(254) + 1
        )
    }
    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16) as usize]))
            .collect()
    }
}

const USERS: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "oscar", "peggy", "trent", "victor", "walter", "deploy", "backup", "git", "postgres",
];
const UNITS: &[&str] = &[
    "nginx.service",
    "docker.service",
    "sshd.service",
    "cron.service",
    "postgresql.service",
    "grafana-server.service",
    "prometheus.service",
    "node-exporter.service",
    "tailscaled.service",
    "smbd.service",
    "plexmediaserver.service",
    "home-assistant.service",
];
const CONTAINERS: &[&str] = &[
    "jellyfin",
    "pihole",
    "traefik",
    "nextcloud",
    "vaultwarden",
    "homeassistant",
    "mosquitto",
    "zigbee2mqtt",
    "paperless",
    "immich_server",
    "immich_postgres",
    "uptime-kuma",
];
const DISKS: &[&str] = &["sda", "sdb", "sdc", "nvme0n1", "nvme1n1"];
const IFACES: &[&str] = &[
    "eth0",
    "enp3s0",
    "wlan0",
    "br0",
    "docker0",
    "tailscale0",
    "vmbr0",
];
const PATHS: &[&str] = &[
    "/",
    "/api/v1/status",
    "/login",
    "/metrics",
    "/static/app.js",
    "/favicon.ico",
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE"];

/// A journal-like synthetic corpus and each line's true template index.
fn synthetic(n: usize, seed: u64) -> (Vec<String>, Vec<usize>) {
    let mut r = Rng(seed | 1);
    let mut lines = Vec::with_capacity(n);
    let mut truth = Vec::with_capacity(n);
    for _ in 0..n {
        let k = r.below(40) as usize;
        let line = match k {
            0 => format!(
                "Accepted publickey for {} from {} port {} ssh2: ED25519 SHA256:{}",
                r.pick(USERS),
                r.ip(),
                r.below(60000) + 1024,
                r.hex(43)
            ),
            1 => format!(
                "Failed password for invalid user {} from {} port {} ssh2",
                r.pick(USERS),
                r.ip(),
                r.below(60000) + 1024
            ),
            2 => format!(
                "pam_unix(sshd:session): session opened for user {}(uid={}) by (uid=0)",
                r.pick(USERS),
                r.below(2000) + 1000
            ),
            3 => format!(
                "pam_unix(sshd:session): session closed for user {}",
                r.pick(USERS)
            ),
            4 => format!("Started {}.", r.pick(UNITS)),
            5 => format!("Stopped {}.", r.pick(UNITS)),
            6 => format!("{}: Deactivated successfully.", r.pick(UNITS)),
            7 => format!(
                "{}: Consumed {}.{:03}s CPU time.",
                r.pick(UNITS),
                r.below(500),
                r.below(1000)
            ),
            8 => format!(
                "Started Session {} of User {}.",
                r.below(100000),
                r.pick(USERS)
            ),
            9 => format!("New session {} of user {}.", r.below(100000), r.pick(USERS)),
            10 => format!("Removed session {}.", r.below(100000)),
            11 => format!(
                "{} : TTY=pts/{} ; PWD=/home/{} ; USER=root ; COMMAND=/usr/bin/systemctl restart {}",
                r.pick(USERS),
                r.below(10),
                r.pick(USERS),
                r.pick(UNITS)
            ),
            12 => format!(
                "({}) CMD (/usr/local/bin/backup.sh --target /mnt/backup/{} >/dev/null 2>&1)",
                r.pick(USERS),
                r.below(30)
            ),
            13 => format!(
                "[{}.{:06}] EXT4-fs ({}): mounted filesystem with ordered data mode. Quota mode: none.",
                r.below(100000),
                r.below(1000000),
                r.pick(DISKS)
            ),
            14 => format!(
                "[{}.{:06}] {}: Link is Up - {}Mbps/Full - flow control rx/tx",
                r.below(100000),
                r.below(1000000),
                r.pick(IFACES),
                [100, 1000, 2500][r.below(3) as usize]
            ),
            15 => format!(
                "[{}.{:06}] {}: Link is Down",
                r.below(100000),
                r.below(1000000),
                r.pick(IFACES)
            ),
            16 => format!(
                "[UFW BLOCK] IN={} OUT= MAC={}:{}:{}:{}:{}:{} SRC={} DST={} LEN={} TTL={} PROTO=TCP SPT={} DPT={}",
                r.pick(IFACES),
                r.hex(2),
                r.hex(2),
                r.hex(2),
                r.hex(2),
                r.hex(2),
                r.hex(2),
                r.ip(),
                r.ip(),
                r.below(1500),
                r.below(255),
                r.below(65535),
                r.below(65535)
            ),
            17 => format!(
                "Out of memory: Killed process {} ({}) total-vm:{}kB, anon-rss:{}kB, file-rss:{}kB",
                r.below(99999),
                r.pick(CONTAINERS),
                r.below(9999999),
                r.below(999999),
                r.below(99999)
            ),
            18 => format!(
                "time=\"2024-05-{:02}T{:02}:{:02}:{:02}.{}Z\" level=info msg=\"ignoring event\" container={} module=libcontainerd namespace=moby topic=/tasks/delete type=\"*events.TaskDelete\"",
                r.below(28) + 1,
                r.below(24),
                r.below(60),
                r.below(60),
                r.below(999999999),
                r.hex(64)
            ),
            19 => format!(
                "{} - - [{:02}/May/2024:{:02}:{:02}:{:02} +0000] \"{} {} HTTP/1.1\" {} {} \"-\" \"Mozilla/5.0\"",
                r.ip(),
                r.below(28) + 1,
                r.below(24),
                r.below(60),
                r.below(60),
                r.pick(METHODS),
                r.pick(PATHS),
                [200, 301, 404, 500][r.below(4) as usize],
                r.below(100000)
            ),
            20 => format!(
                "Container {} ({}) became unhealthy after {} failed probes",
                r.pick(CONTAINERS),
                r.hex(12),
                r.below(10) + 1
            ),
            21 => format!(
                "Pulling image ghcr.io/example/{}:{}.{}.{}",
                r.pick(CONTAINERS),
                r.below(5),
                r.below(20),
                r.below(10)
            ),
            22 => format!(
                "smartd[{}]: Device: /dev/{} [SAT], SMART Usage Attribute: 194 Temperature_Celsius changed from {} to {}",
                r.below(9999),
                r.pick(DISKS),
                r.below(30) + 20,
                r.below(30) + 20
            ),
            23 => format!(
                "Disk /dev/{} usage {}% exceeds threshold {}%",
                r.pick(DISKS),
                r.below(100),
                90
            ),
            24 => format!(
                "DHCPACK({}) {} {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} {}",
                r.pick(IFACES),
                r.ip(),
                r.below(256),
                r.below(256),
                r.below(256),
                r.below(256),
                r.below(256),
                r.below(256),
                r.pick(USERS)
            ),
            25 => format!(
                "query[A] {}.example.com from {}",
                r.pick(CONTAINERS),
                r.ip()
            ),
            26 => format!(
                "Backup job {} finished in {}.{}s, {} files, {} MB transferred",
                r.hex(8),
                r.below(3600),
                r.below(10),
                r.below(100000),
                r.below(50000)
            ),
            27 => format!(
                "Certificate for {}.example.com expires in {} days",
                r.pick(CONTAINERS),
                r.below(90)
            ),
            28 => format!(
                "Timed out waiting for device /dev/disk/by-uuid/{}-{}-{}-{}-{}.",
                r.hex(8),
                r.hex(4),
                r.hex(4),
                r.hex(4),
                r.hex(12)
            ),
            29 => format!(
                "usb {}-{}: new high-speed USB device number {} using xhci_hcd",
                r.below(4) + 1,
                r.below(8) + 1,
                r.below(128)
            ),
            30 => format!(
                "Temperature above threshold, cpu clock throttled (total events = {})",
                r.below(100000)
            ),
            31 => format!(
                "nut-monitor: UPS ups@localhost on battery, charge {}%, runtime {} seconds",
                r.below(100),
                r.below(4000)
            ),
            32 => format!(
                "zfs: pool tank scrub completed after {}h{}m with {} errors",
                r.below(24),
                r.below(60),
                r.below(3)
            ),
            33 => "Reached target Multi-User System.".to_string(),
            34 => "Startup finished.".to_string(),
            35 => format!(
                "Received disconnect from {} port {}:11: disconnected by user",
                r.ip(),
                r.below(60000) + 1024
            ),
            36 => format!(
                "Connection closed by authenticating user {} {} port {} [preauth]",
                r.pick(USERS),
                r.ip(),
                r.below(60000) + 1024
            ),
            37 => format!(
                "GET /api/v1/query?query=up took {}ms status={}",
                r.below(5000),
                [200, 500][r.below(2) as usize]
            ),
            38 => format!(
                "Rotating log file /var/log/{}/{}.log ({} bytes)",
                r.pick(CONTAINERS),
                r.pick(CONTAINERS),
                r.below(1 << 30)
            ),
            _ => format!(
                "kernel: audit: type=1400 audit({}.{}:{}): apparmor=\"DENIED\" operation=\"open\" profile=\"{}\" name=\"/proc/{}/status\" pid={} comm=\"{}\"",
                r.below(2_000_000_000),
                r.below(1000),
                r.below(100000),
                r.pick(CONTAINERS),
                r.below(99999),
                r.below(99999),
                r.pick(CONTAINERS)
            ),
        };
        lines.push(line);
        truth.push(k);
    }
    (lines, truth)
}

/// Stress case for the slow path: every line carries a fresh random word
/// that masking cannot recognise, so the exact-line cache never hits.
fn unique_words(n: usize, seed: u64) -> Vec<String> {
    let mut r = Rng(seed | 1);
    (0..n)
        .map(|_| {
            let w: String = (0..8)
                .map(|_| char::from(b'a' + r.below(26) as u8))
                .collect();
            match r.below(4) {
                0 => format!("Invalid user {w} from {} port {}", r.ip(), r.below(65535)),
                1 => format!(
                    "Accepted password for {w} from {} port {} ssh2",
                    r.ip(),
                    r.below(65535)
                ),
                2 => format!("session opened for user {w} by (uid={})", r.below(2000)),
                _ => format!(
                    "Connection closed by invalid user {w} {} port {} [preauth]",
                    r.ip(),
                    r.below(65535)
                ),
            }
        })
        .collect()
}

/// Stress case for cluster search: 3,000 distinct message shapes of the
/// same token count (far more than a node usually sees), each line with a
/// fresh random word so that the exact-line cache never hits.
fn many_shapes(n: usize, seed: u64) -> Vec<String> {
    const A: &[&str] = &[
        "disk", "fan", "link", "port", "queue", "cache", "pool", "job", "task", "lease",
    ];
    const B: &[&str] = &[
        "opened",
        "closed",
        "failed",
        "degraded",
        "recovered",
        "resized",
        "flushed",
    ];
    let mut r = Rng(seed | 1);
    (0..n)
        .map(|_| {
            let s = r.below(3000) as usize;
            let w: String = (0..8)
                .map(|_| char::from(b'a' + r.below(26) as u8))
                .collect();
            format!(
                "{}{} {}{} by {w} {}{} value {}",
                A[s % 10],
                s / 10,
                B[s % 7],
                s / 7,
                A[(s / 3) % 10],
                s % 997,
                r.below(1000)
            )
        })
        .collect()
}

/// Contents of each Loghub system repeated to `n` lines.
fn loghub_corpora(dir: &Path, n: usize) -> Result<Vec<(String, Vec<String>)>, String> {
    let settings_path = dir.join("drain_benchmark_settings.json");
    let text = std::fs::read_to_string(&settings_path)
        .map_err(|e| format!("cannot read {}: {e}", settings_path.display()))?;
    let settings: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("bad settings JSON: {e}"))?;
    let datasets = settings
        .get("datasets")
        .and_then(|d| d.as_object())
        .ok_or("settings: no datasets")?;
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|s| dir.join(s).join(format!("{s}_2k.log")).is_file())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for s in names {
        let Some(format) = datasets
            .get(&s)
            .and_then(|d| d.get("log_format"))
            .and_then(|f| f.as_str())
        else {
            continue;
        };
        let re = format_regex(format)?;
        let raw = std::fs::read(dir.join(&s).join(format!("{s}_2k.log")))
            .map_err(|e| format!("cannot read {s}: {e}"))?;
        let text = String::from_utf8_lossy(&raw);
        let contents: Vec<String> = text
            .split('\n')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                re.captures(l)
                    .and_then(|c| c.name("Content"))
                    .map(|m| m.as_str().to_string())
            })
            .collect();
        if contents.is_empty() {
            continue;
        }
        let corpus: Vec<String> = contents.iter().cycle().take(n).cloned().collect();
        out.push((s, corpus));
    }
    Ok(out)
}

fn format_regex(format: &str) -> Result<regex::Regex, String> {
    let mut re = String::from("^");
    let mut rest = format;
    while let Some(open) = rest.find('<') {
        let Some(close_rel) = rest[open..].find('>') else {
            break;
        };
        let close = open + close_rel;
        re.push_str(&spaces_to_ws(&rest[..open]));
        re.push_str(&format!("(?P<{}>.*?)", &rest[open + 1..close]));
        rest = &rest[close + 1..];
    }
    re.push_str(&spaces_to_ws(rest));
    re.push('$');
    regex::Regex::new(&re).map_err(|e| format!("bad log_format {format:?}: {e}"))
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
