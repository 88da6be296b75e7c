//! Golden byte fixtures and round-trip properties for the wire encoding.
//!
//! The fixtures under `tests/golden/` pin the exact bytes of sample messages. If
//! one fails, the encoding of an existing message changed: that breaks deployed
//! agents. Regenerate them (`WINGMAN_BLESS=1 cargo test -p wingman-protocol`)
//! only for a deliberate, versioned change.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use proptest::prelude::*;
use wingman_protocol::*;

fn sample_host() -> HostFacts {
    HostFacts {
        hostname: "pve1".into(),
        kind: HostKind::Proxmox,
        os: "Debian GNU/Linux 12 (bookworm)".into(),
        kernel: "6.8.12-4-pve".into(),
        uptime_s: 86_400,
        cpu_count: 8,
        cpu_usage_pct: 12.5,
        load: [0.5, 0.25, 0.125],
        mem_total: 32 << 30,
        mem_used: 12 << 30,
        swap_total: 8 << 30,
        swap_used: 0,
        filesystems: vec![Filesystem {
            mount: "/".into(),
            fs_type: "ext4".into(),
            total: 100 << 30,
            available: 60 << 30,
        }],
        interfaces: vec![NetInterface {
            name: "vmbr0".into(),
            mac: "bc:24:11:00:00:01".into(),
            addrs: vec!["192.168.1.10/24".into()],
            rx_bytes: 1234,
            tx_bytes: 5678,
        }],
    }
}

/// A command body as the hub puts it into a [`SignedCommand`].
fn encode_body(b: &CommandBody) -> Vec<u8> {
    postcard::to_stdvec(b).unwrap()
}

#[test]
fn signing_input_covers_every_signed_field() {
    let base = SignedCommand {
        id: 1,
        body_bytes: encode_body(&CommandBody::Ping),
        audience: "a".into(),
        plan_hash: [1; 32],
        step_hash: [2; 32],
        issued_at: 10,
        expires_at: 20,
        nonce: [3; 16],
        key_id: "k".into(),
        signature: vec![],
    };
    let input = base.signing_input();
    // The id and the signature are not covered.
    let mut other = base.clone();
    other.id = 99;
    other.signature = vec![1];
    assert_eq!(other.signing_input(), input);
    type Change = Box<dyn Fn(&mut SignedCommand)>;
    let changes: Vec<Change> = vec![
        Box::new(|c| c.body_bytes.push(0)),
        Box::new(|c| c.audience = "b".into()),
        Box::new(|c| c.plan_hash[0] = 0),
        Box::new(|c| c.step_hash[31] = 0),
        Box::new(|c| c.issued_at = 11),
        Box::new(|c| c.expires_at = 21),
        Box::new(|c| c.nonce[5] = 0),
        Box::new(|c| c.key_id = "j".into()),
    ];
    for change in changes {
        let mut c = base.clone();
        change(&mut c);
        assert_ne!(c.signing_input(), input);
    }
    // Length prefixes keep field boundaries: moving a byte between the key
    // id and the audience changes the input.
    let mut shifted = base.clone();
    shifted.key_id = "ka".into();
    shifted.audience = String::new();
    assert_ne!(shifted.signing_input(), input);
}

fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let agent = vec![
        (
            "agent_hello",
            AgentMessage::Hello(Hello {
                protocol_version: 1,
                agent_version: "0.1.0".into(),
                host_kind: HostKind::Docker,
                hostname: "docker1".into(),
                stream_id: 0x0123_4567_89ab_cdef,
            }),
        ),
        (
            "agent_heartbeat",
            AgentMessage::Heartbeat(Heartbeat {
                sent_at_ms: 1_764_000_000_000,
            }),
        ),
        (
            "agent_facts_host",
            AgentMessage::Facts(FactBatch {
                stream_id: 42,
                seq: 7,
                facts: vec![Fact {
                    observed_at_ms: 1_764_000_000_123,
                    body: FactBody::Host(sample_host()),
                }],
            }),
        ),
        (
            "agent_renew",
            AgentMessage::Renew(RenewRequest {
                csr_der: vec![0x30, 0x82, 0x01],
            }),
        ),
        (
            "agent_command_result",
            AgentMessage::CommandResult(CommandResult {
                id: 9,
                ok: true,
                detail: "pong".into(),
            }),
        ),
        (
            "agent_audit_head_kept",
            AgentMessage::AuditHeadKept(AuditHead {
                seq: 12,
                hash: "ab".repeat(32),
            }),
        ),
    ];
    let hub = vec![
        (
            "hub_welcome",
            HubMessage::Welcome(Welcome {
                protocol_version: 1,
                agent_id: "0190a5f0-0000-7000-8000-000000000001".into(),
                hub_version: "0.1.0".into(),
                heartbeat_interval_ms: 5000,
                committed_seq: 41,
            }),
        ),
        (
            "hub_ack",
            HubMessage::Ack(Ack {
                stream_id: 42,
                seq: 7,
            }),
        ),
        (
            "hub_busy",
            HubMessage::Busy(Busy {
                seq: 8,
                retry_after_ms: 250,
            }),
        ),
        (
            "hub_renewed",
            HubMessage::Renewed(RenewResponse::Issued {
                cert_der: vec![1, 2, 3],
                not_after_ms: 1_766_000_000_000,
            }),
        ),
        (
            "hub_command",
            HubMessage::Command(Command {
                id: 9,
                body: CommandBody::Ping,
            }),
        ),
        (
            "hub_refused",
            HubMessage::Refused(Refused {
                reason: "revoked".into(),
            }),
        ),
        (
            "hub_signed",
            HubMessage::Signed(SignedCommand {
                id: 3,
                body_bytes: encode_body(&CommandBody::Ping),
                audience: "agent-1".into(),
                plan_hash: [1; 32],
                step_hash: [2; 32],
                issued_at: 1_764_000_000,
                expires_at: 1_764_000_120,
                nonce: [7; 16],
                key_id: "0011223344556677".into(),
                signature: vec![9; 64],
            }),
        ),
        (
            "hub_audit_head",
            HubMessage::AuditHead(AuditHead {
                seq: 12,
                hash: "ab".repeat(32),
            }),
        ),
    ];
    let enroll_req = EnrollRequest {
        protocol_version: 1,
        token: "wmt_abc.def".into(),
        csr_der: vec![0x30, 0x00],
        hostname: "node1".into(),
        host_kind: HostKind::Plain,
        agent_version: "0.1.0".into(),
    };
    let enroll_resp = EnrollResponse::Enrolled {
        agent_id: "0190a5f0-0000-7000-8000-000000000001".into(),
        cert_der: vec![0x30, 0x01],
        not_after_ms: 1_766_000_000_000,
    };
    let mut out: Vec<(&'static str, Vec<u8>)> = agent
        .into_iter()
        .map(|(n, m)| (n, encode(&m).unwrap()))
        .collect();
    out.extend(hub.into_iter().map(|(n, m)| (n, encode(&m).unwrap())));
    let redactor = logs::Redactor::new(&logs::RedactConfig::default());
    let (template, _) = logs::MaskedTemplate::mask("disk sda error at sector 12345", &redactor);
    let summary = AgentMessage::Facts(FactBatch {
        stream_id: 42,
        seq: 8,
        facts: vec![
            Fact {
                observed_at_ms: 1_764_000_010_000,
                body: FactBody::LogSummary(logs::LogSummary {
                    source: logs::LogSource {
                        kind: logs::LogSourceKind::Journal,
                        name: "smartd.service".into(),
                    },
                    window_start_ms: 1_764_000_000_000,
                    window_end_ms: 1_764_000_010_000,
                    lines: 3,
                    templates: vec![logs::TemplateCount {
                        template_id: template.id(),
                        template,
                        count: 3,
                        severity: logs::Severity::Error,
                        first_seen_ms: 1_764_000_001_000,
                        last_seen_ms: 1_764_000_009_000,
                        new_template: true,
                        burst: false,
                        examples: vec![],
                    }],
                    skipped: logs::SkipCounts {
                        invalid_utf8: 1,
                        ..Default::default()
                    },
                }),
            },
            Fact {
                observed_at_ms: 1_764_000_010_000,
                body: FactBody::Gap(Gap {
                    stream_id: 42,
                    from_seq: 3,
                    to_seq: 5,
                    batches: 3,
                    facts: 7,
                    reason: GapReason::Overflow,
                }),
            },
            Fact {
                observed_at_ms: 1_764_000_010_000,
                body: FactBody::AgentHealth(AgentHealth {
                    spool_depth_batches: 2,
                    log_lines: 99,
                    ..Default::default()
                }),
            },
        ],
    });
    out.push(("agent_facts_logs_gap_health", encode(&summary).unwrap()));
    let policy = AgentMessage::Facts(FactBatch {
        stream_id: 42,
        seq: 0,
        facts: vec![Fact {
            observed_at_ms: 1_764_000_010_000,
            body: FactBody::AgentPolicy(AgentPolicy {
                command_key_pinned: true,
                docker_actions: true,
                docker_allow_destructive: false,
                pve_actions: false,
                pve_allow_destructive: false,
            }),
        }],
    });
    out.push(("agent_facts_policy", encode(&policy).unwrap()));
    out.push(("enroll_request", encode(&enroll_req).unwrap()));
    out.push(("enroll_response", encode(&enroll_resp).unwrap()));
    let with_key = EnrollResponse::EnrolledWithKey {
        agent_id: "0190a5f0-0000-7000-8000-000000000001".into(),
        cert_der: vec![0x30, 0x01],
        not_after_ms: 1_766_000_000_000,
        command_key: vec![5; 32],
    };
    out.push(("enroll_response_with_key", encode(&with_key).unwrap()));
    out
}

#[test]
fn golden_fixtures_match() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var_os("WINGMAN_BLESS").is_some();
    for (name, bytes) in samples() {
        let path = dir.join(format!("{name}.bin"));
        if bless {
            std::fs::write(&path, &bytes).unwrap();
            continue;
        }
        let want = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("missing golden fixture {}: {e}", path.display()));
        assert_eq!(
            bytes, want,
            "encoding of {name} changed; see tests/wire.rs header"
        );
    }
}

#[test]
fn golden_fixtures_decode() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let hello = std::fs::read(dir.join("agent_hello.bin")).unwrap();
    let (msg, used) = decode::<AgentMessage>(&hello).unwrap().unwrap();
    assert_eq!(used, hello.len());
    match msg {
        AgentMessage::Hello(h) => {
            assert_eq!(h.hostname, "docker1");
            assert_eq!(h.host_kind, HostKind::Docker);
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn arb_host() -> impl Strategy<Value = HostFacts> {
    (
        ".{0,20}",
        0u64..u64::MAX,
        0u32..1024,
        -1e6f32..1e6,
        any::<u64>(),
        proptest::collection::vec((".{0,10}", any::<u64>(), any::<u64>()), 0..4),
    )
        .prop_map(|(hostname, uptime_s, cpu_count, cpu, mem, fss)| HostFacts {
            hostname,
            kind: HostKind::Plain,
            os: "os".into(),
            kernel: "k".into(),
            uptime_s,
            cpu_count,
            cpu_usage_pct: cpu,
            load: [cpu, 0.0, 1.0],
            mem_total: mem,
            mem_used: mem / 2,
            swap_total: 0,
            swap_used: 0,
            filesystems: fss
                .into_iter()
                .map(|(mount, total, available)| Filesystem {
                    mount,
                    fs_type: "zfs".into(),
                    total,
                    available,
                })
                .collect(),
            interfaces: vec![],
        })
}

proptest! {
    #[test]
    fn batches_round_trip(stream_id in any::<u64>(), seq in any::<u64>(),
                          hosts in proptest::collection::vec(arb_host(), 0..5),
                          ts in any::<i64>()) {
        let msg = AgentMessage::Facts(FactBatch {
            stream_id, seq,
            facts: hosts.into_iter().map(|h| Fact { observed_at_ms: ts, body: FactBody::Host(h) }).collect(),
        });
        let bytes = encode(&msg).unwrap();
        let (back, used) = decode::<AgentMessage>(&bytes).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn hub_messages_round_trip(seq in any::<u64>(), ms in any::<u32>(), reason in ".{0,64}") {
        for msg in [
            HubMessage::Ack(Ack { stream_id: seq ^ 1, seq }),
            HubMessage::Busy(Busy { seq, retry_after_ms: ms }),
            HubMessage::Refused(Refused { reason: reason.clone() }),
        ] {
            let bytes = encode(&msg).unwrap();
            let (back, _) = decode::<HubMessage>(&bytes).unwrap().unwrap();
            prop_assert_eq!(back, msg);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut framed = (body.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        let _ = decode::<AgentMessage>(&framed);
        let _ = decode::<HubMessage>(&framed);
        let _ = decode::<EnrollRequest>(&framed);
        let mut d = FrameDecoder::new();
        d.push(&body);
        let _ = d.next_frame::<AgentMessage>();
    }
}
