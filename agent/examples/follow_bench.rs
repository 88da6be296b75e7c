//! Agent cost of following a journal: CPU share of one core and memory of the
//! agent's log path (the `journalctl` child plus the pipeline in this
//! process) while a writer appends entries at a fixed rate.
//!
//! Run: `cargo run --release -p wingman-agent --example follow_bench -- [RATE ...]`
//! (default rates 1000 and 10000 lines/s, 20 s each). Needs
//! `systemd-journal-remote` (Debian package of that name): a separate writer
//! process feeds it export-format entries, and it writes the journal files
//! that `journalctl --follow` reads, as journald would. The QUIC link is not
//! part of the measurement: it only carries one summary per source and window.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wingman_agent::config::LogsConfig;

fn ticks(pid: u32) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn journalctl_pids() -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(format!("/proc/{me}/task")) else {
        return out;
    };
    for t in rd.flatten() {
        if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
            for p in c.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
                let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                if comm.trim() == "journalctl" {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// Writer mode: prints export-format entries at `rate` per second for `secs`.
fn writer(rate: u64, secs: u64) {
    let msgs = [
        "Accepted publickey for root from 192.168.1.{i} port {p} ssh2: ED25519 SHA256:abc{i}",
        "pam_unix(sshd:session): session opened for user root(uid=0) by (uid=0)",
        "nginx: 10.0.0.{i} - - \"GET /api/v1/items/{p} HTTP/1.1\" 200 {p} \"-\" \"curl/8.0\"",
        "kernel: EXT4-fs (sda{i}): mounted filesystem with ordered data mode",
        "pvedaemon[{p}]: <root@pam> starting task UPID:pve1:0000{p}:00{i}:65A0:qmstart:{i}:root@pam:",
        "zed[{p}]: eid={i} class=history_event pool='rpool'",
        "CRON[{p}]: (root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)",
        "systemd[1]: Started session {p} of user root.",
    ];
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let start = Instant::now();
    let total = rate * secs;
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    for n in 0..total {
        let due = Duration::from_micros(n * 1_000_000 / rate);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            out.flush().unwrap();
            std::thread::sleep(wait);
        }
        let m = msgs[(n % msgs.len() as u64) as usize]
            .replace("{i}", &(n % 251).to_string())
            .replace("{p}", &(1000 + n % 30011).to_string());
        let ts = now_us + n;
        write!(
            out,
            "__REALTIME_TIMESTAMP={ts}\n__MONOTONIC_TIMESTAMP={ts}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n\
             _MACHINE_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=bench\n_SYSTEMD_UNIT=bench{}.service\n\
             PRIORITY={}\nMESSAGE={m}\n\n",
            n % 4,
            if n % 50 == 0 { 3 } else { 6 }
        )
        .unwrap();
    }
    out.flush().unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--writer") {
        writer(args[2].parse().unwrap(), args[3].parse().unwrap());
        return;
    }
    let remote = [
        "/lib/systemd/systemd-journal-remote",
        "/usr/lib/systemd/systemd-journal-remote",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("systemd-journal-remote is needed (apt-get install systemd-journal-remote)");
    let rates: Vec<u64> = if args.len() > 1 {
        args[1..].iter().map(|a| a.parse().unwrap()).collect()
    } else {
        vec![1000, 10_000]
    };
    let secs = 20u64;
    let hz = 100.0; // USER_HZ on Linux
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for rate in rates {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("journal");
        std::fs::create_dir_all(&jdir).unwrap();
        // Seed the journal so journalctl has a file to follow from the start.
        let mut seed = Command::new(remote)
            .arg(format!(
                "--output={}",
                jdir.join("remote.journal").display()
            ))
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed.stdin
            .take()
            .unwrap()
            .write_all(b"__REALTIME_TIMESTAMP=1\n_BOOT_ID=0123456789abcdef0123456789abcdef\n_MACHINE_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=b\nMESSAGE=seed\n\n")
            .unwrap();
        seed.wait().unwrap();

        let mut cfg = LogsConfig::default();
        cfg.journal.directory = Some(jdir.clone());
        cfg.window_ms = 10_000;
        let shutdown = CancellationToken::new();
        let (lines, summaries) = rt.block_on(async {
            let (batch_tx, mut rx) = tokio::sync::mpsc::channel(64);
            let _lines = wingman_agent::logs::sources::spawn(&cfg, dir.path(), &BTreeMap::new(), batch_tx, shutdown.clone());
            tokio::time::sleep(Duration::from_millis(800)).await;
            let me = std::process::id();
            let jpids = journalctl_pids();
            let j0: u64 = jpids.iter().map(|p| ticks(*p)).sum();
            let a0 = ticks(me);
            let started = Instant::now();
            let exe = std::env::current_exe().unwrap();
            let mut w = Command::new(exe)
                .args(["--writer", &rate.to_string(), &secs.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut sink = Command::new(remote)
                .arg(format!("--output={}", jdir.join("remote.journal").display()))
                .arg("-")
                .stdin(w.stdout.take().unwrap())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut lines = 0u64;
            let mut summaries = 0u64;
            let mut peak_rss = 0u64;
            let mut cpu: Option<(u64, u64, f64)> = None;
            let mut writer_done = false;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(secs + 12);
            loop {
                tokio::select! {
                    b = rx.recv() => {
                        let Some(b) = b else { break };
                        for f in b.facts {
                            if let wingman_protocol::FactBody::LogSummary(s) = f.body {
                                lines += s.lines;
                                summaries += 1;
                            }
                        }
                    }
                    () = tokio::time::sleep_until(deadline) => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                peak_rss = peak_rss.max(rss_kb(me) + jpids.iter().map(|p| rss_kb(*p)).sum::<u64>());
                if !writer_done && matches!(w.try_wait(), Ok(Some(_))) {
                    writer_done = true;
                }
                // CPU is sampled over the writing period (plus a second to
                // drain), not over the wait for the last window to close.
                if writer_done && cpu.is_none() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    cpu = Some((
                        ticks(me) - a0,
                        jpids.iter().map(|p| ticks(*p)).sum::<u64>() - j0,
                        started.elapsed().as_secs_f64(),
                    ));
                }
                if lines >= rate * secs {
                    break;
                }
            }
            let (agent_t, jctl_t, el) = cpu.unwrap_or((ticks(me) - a0, jpids.iter().map(|p| ticks(*p)).sum::<u64>() - j0, started.elapsed().as_secs_f64()));
            let _ = w.wait();
            let _ = sink.wait();
            println!(
                "rate {rate:>6}/s: {lines} lines summarised in {summaries} summaries; over {el:.1} s of writing: \
                 agent {:.2}% + journalctl {:.2}% = {:.2}% of one core; peak RSS {} KiB (of which journalctl {} KiB, mostly mapped journal files)",
                agent_t as f64 / hz / el * 100.0,
                jctl_t as f64 / hz / el * 100.0,
                (agent_t + jctl_t) as f64 / hz / el * 100.0,
                peak_rss,
                jpids.iter().map(|p| rss_kb(*p)).sum::<u64>()
            );
            shutdown.cancel();
            (lines, summaries)
        });
        let _ = (lines, summaries);
    }
}
