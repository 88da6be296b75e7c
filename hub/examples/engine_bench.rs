//! Incident-engine throughput on one core: signals per second with 1,000
//! open incidents, draining every action like the hub shell would.
//!
//! Run: `cargo run --release --example engine_bench [signals]`.
//!
//! Setup: 1,000 nodes, each with a full filesystem (one open `storage_full`
//! incident per node). Measured mix, cycling over the nodes: 40% host samples
//! (three filesystems each, one of them still full), 25% log summaries (half
//! error bursts that add evidence to the open incident, half benign), 15%
//! container events, 10% guest states, 5% finished tasks, 5% replayed
//! duplicates. Time advances 1 ms per signal.

#![allow(clippy::print_stdout)]

use std::time::Instant;

use wingman_hub::engine::{
    Action, ContainerEventKind, Engine, EngineConfig, FsSample, GuestKind, GuestStatus,
    IncidentState, LogSourceKind, Signal, SignalBody,
};

const NODES: u64 = 1_000;
const GIB: u64 = 1024 * 1024 * 1024;

fn node(i: u64) -> String {
    format!("pve{:04}", i % NODES)
}

fn host(i: u64) -> SignalBody {
    SignalBody::HostSample {
        node: node(i),
        cpu_pct: 20.0 + (i % 50) as f32,
        mem_pct: 40.0,
        swap_pct: 1.0,
        load1: 1.5,
        cpu_count: 8,
        iowait_pct: Some(2.0),
        filesystems: vec![
            FsSample {
                mount: "/".into(),
                total_bytes: 100 * GIB,
                avail_bytes: 2 * GIB,
            },
            FsSample {
                mount: "/var/lib/vz".into(),
                total_bytes: 1000 * GIB,
                avail_bytes: 400 * GIB,
            },
            FsSample {
                mount: "/boot".into(),
                total_bytes: GIB,
                avail_bytes: GIB / 2,
            },
        ],
    }
}

fn body(i: u64) -> SignalBody {
    match i % 20 {
        0..=7 => host(i),
        8..=12 => SignalBody::LogTemplate {
            node: node(i),
            source_kind: LogSourceKind::Journal,
            source: "postgresql.service".into(),
            template_id: i % 2,
            template: if i.is_multiple_of(2) {
                "FATAL: could not write to file <*>: No space left".into()
            } else {
                "checkpoint complete: wrote <*> buffers".into()
            },
            count: 5,
            severity: if i.is_multiple_of(2) { 3 } else { 6 },
            new_template: false,
            burst: i.is_multiple_of(2),
        },
        13..=15 => SignalBody::ContainerEvent {
            node: node(i),
            container: format!("app{}", i % 3),
            kind: if i.is_multiple_of(2) {
                ContainerEventKind::Start
            } else {
                ContainerEventKind::Die
            },
            exit_code: Some(0),
        },
        16 | 17 => SignalBody::GuestState {
            node: node(i),
            guest_id: 100 + (i % 5) as u32,
            guest_kind: GuestKind::Qemu,
            name: "vm".into(),
            status: GuestStatus::Running,
            expected_running: true,
            ha_managed: false,
        },
        _ => SignalBody::TaskFinished {
            node: node(i),
            upid: format!("UPID:{}:{i:08X}:0:0:qmstart:100:root@pam:", node(i)),
            task_type: "qmstart".into(),
            guest_id: Some(100),
            ok: true,
            status_text: "OK".into(),
        },
    }
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let mut cfg = EngineConfig::default();
    // Let the setup open all 1,000 incidents at once.
    cfg.throttle.global.burst = 10_000;
    let mut engine = Engine::new(cfg);
    let base: i64 = 1_714_557_600_000;
    let mut now = base;
    let mut actions = 0u64;
    let mut updates = 0u64;

    for i in 0..NODES {
        engine.handle_signal(now, Signal::new(now, host(i)));
        now += 1;
    }
    while engine.poll_action().is_some() {}
    let open = engine
        .incidents()
        .filter(|i| i.state != IncidentState::Resolved)
        .count();
    println!("setup: {open} open incidents");

    let mut dup: Option<Signal> = None;
    let start = Instant::now();
    for i in 0..n {
        now += 1;
        let signal = if i % 20 == 19 {
            dup.clone().unwrap_or_else(|| Signal::new(now, body(i)))
        } else {
            Signal::new(now, body(i))
        };
        if i.is_multiple_of(97) {
            dup = Some(signal.clone());
        }
        engine.handle_signal(now, signal);
        while let Some(a) = engine.poll_action() {
            actions += 1;
            if matches!(a, Action::IncidentUpdated(_)) {
                updates += 1;
            }
        }
        if engine.poll_timeout().is_some_and(|t| t <= now) {
            engine.handle_timeout(now);
            while engine.poll_action().is_some() {
                actions += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let open = engine
        .incidents()
        .filter(|i| i.state != IncidentState::Resolved)
        .count();
    let s = engine.stats();
    println!(
        "{n} signals in {secs:.2} s: {:.0} signals/s (one core, release)",
        n as f64 / secs
    );
    println!(
        "open incidents at end: {open}; actions drained: {actions} ({updates} updates); \
         accepted {}, duplicates {}, out of order {}",
        s.accepted, s.duplicates, s.out_of_order
    );
}
