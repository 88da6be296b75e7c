//! Spool benchmark: bytes written per fact with the default fsync policy,
//! append throughput and replay (read) throughput.
//!
//! ```text
//! cargo run --release --example spool_bench [-- <dir>]
//! ```
//!
//! The spool lives in a temporary directory (or under `<dir>`, to measure a
//! particular disk). Two batch shapes: a typical 300-byte batch of 1 fact and
//! a 4 KiB batch of 20 facts.

#![allow(clippy::print_stdout)]

use std::error::Error;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wingman_agent::spool::{FsyncPolicy, Spool, SpoolConfig};

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

struct Shape {
    name: &'static str,
    payload: usize,
    facts: u32,
}

/// Healthy link at a realistic rate: one batch every `every_ms` of simulated
/// time, each acked right away, `flush_due` on every tick. Measures what the
/// default policy writes per fact, cursor file included.
fn steady_state(base: &Path, s: &Shape, batches: u64, every_ms: i64) -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir_in(base)?;
    let (mut sp, _) = Spool::open(SpoolConfig::new(dir.path()), 0)?;
    let before = sp.stats();
    let body = payload(s.payload, 1);
    let mut now = 0i64;
    for seq in 1..=batches {
        now += every_ms;
        sp.append(seq, s.facts, &body, now)?;
        sp.flush_due(now)?;
        sp.ack(seq)?;
    }
    sp.sync()?;
    let st = sp.stats();
    let facts = batches * u64::from(s.facts);
    let bytes = st.bytes_written - before.bytes_written;
    let secs = (now as f64) / 1000.0;
    println!(
        "  steady state, 1 batch / {every_ms} ms, each acked: {:.1} B/fact written ({:.1} of it record bytes), {:.2} fsyncs/s",
        bytes as f64 / facts as f64,
        (s.payload as f64 + 28.0) / f64::from(s.facts),
        (st.fsyncs - before.fsyncs) as f64 / secs,
    );
    Ok(())
}

/// Outage: append as fast as possible (no acks), timer-driven group commit
/// on the wall clock, then replay everything.
fn burst(base: &Path, s: &Shape, batches: u64) -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir_in(base)?;
    let (mut sp, _) = Spool::open(SpoolConfig::new(dir.path()), wall_ms())?;
    let body = payload(s.payload, 2);
    let t0 = Instant::now();
    for seq in 1..=batches {
        sp.append(seq, s.facts, &body, wall_ms())?;
        if seq % 32 == 0 {
            sp.flush_due(wall_ms())?;
        }
    }
    sp.sync()?;
    let append = t0.elapsed();
    let st = sp.stats();
    // CPU cost alone, for comparison.
    let cpu_dir = tempfile::tempdir_in(base)?;
    let mut cfg = SpoolConfig::new(cpu_dir.path());
    cfg.fsync = FsyncPolicy::Never;
    let (mut cpu, _) = Spool::open(cfg, 0)?;
    let t1 = Instant::now();
    for seq in 1..=batches {
        cpu.append(seq, s.facts, &body, 0)?;
    }
    let cpu_t = t1.elapsed();
    drop(cpu);
    let facts = batches * u64::from(s.facts);
    println!(
        "  append: {batches} batches in {:.2?}: {:.0} batches/s, {:.0} facts/s, {:.1} MB/s, {:.1} B/fact, {} fsyncs, dropped {}",
        append,
        per_sec(batches, append),
        per_sec(facts, append),
        st.bytes_written as f64 / append.as_secs_f64() / 1e6,
        st.bytes_written as f64 / facts as f64,
        st.fsyncs,
        st.dropped_batches,
    );
    println!(
        "  append, fsync never (CPU + page cache only): {:.0} batches/s, {:.0} facts/s",
        per_sec(batches, cpu_t),
        per_sec(batches * u64::from(s.facts), cpu_t),
    );
    drop(sp);

    // Replay after a restart, as on reconnect.
    let t0 = Instant::now();
    let (mut sp, rep) = Spool::open(SpoolConfig::new(dir.path()), wall_ms())?;
    let open = t0.elapsed();
    let t0 = Instant::now();
    let mut after = 0;
    let mut n = 0u64;
    let mut bytes = 0u64;
    loop {
        let (recs, _) = sp.read_after(after, 1024, 4 << 20)?;
        let Some(last) = recs.last() else { break };
        after = last.seq;
        n += recs.len() as u64;
        bytes += recs.iter().map(|r| r.payload.len() as u64).sum::<u64>();
    }
    let replay = t0.elapsed();
    println!(
        "  replay: open {:.2?} ({} records recovered), read {n} batches in {:.2?}: {:.0} batches/s, {:.0} facts/s, {:.1} MB/s payload",
        open,
        rep.recovered_records,
        replay,
        per_sec(n, replay),
        per_sec(n * u64::from(s.facts), replay),
        bytes as f64 / replay.as_secs_f64() / 1e6,
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let base = std::env::args()
        .nth(1)
        .map_or_else(std::env::temp_dir, Into::into);
    println!(
        "spool bench in {} (default config: 4 MiB segments, 256 MiB cap, fsync every 256 records or 200 ms)",
        base.display()
    );
    for s in [
        Shape {
            name: "300 B batch, 1 fact",
            payload: 300,
            facts: 1,
        },
        Shape {
            name: "4 KiB batch, 20 facts",
            payload: 4096,
            facts: 20,
        },
    ] {
        println!("{}:", s.name);
        steady_state(&base, &s, 3000, 20)?;
        let batches = if s.payload > 1000 { 50_000 } else { 200_000 };
        burst(&base, &s, batches)?;
    }
    Ok(())
}
