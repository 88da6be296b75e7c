//! The agent's command line on bad input: one clear sentence on stderr, a
//! non-zero exit, no panic, nothing half-written.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn agent(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wingman-agent"));
    c.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn check_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure: {stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert!(last.starts_with("wingman-agent: "), "{stderr}");
}

#[test]
fn bad_input_gives_one_clear_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let st = state.to_str().unwrap();
    let fp = "ab".repeat(32);

    // Unknown config key, from a file and from the environment.
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, "state_dirr = \"/x\"\n").unwrap();
    check_error(
        &agent(&["--config", cfg.to_str().unwrap(), "run"], &[]),
        "unknown field `state_dirr`",
    );
    check_error(
        &agent(
            &["run"],
            &[
                ("WINGMAN_AGENT__LINK__BOGUS", "1"),
                ("WINGMAN_AGENT_CONFIG", cfg.to_str().unwrap()),
            ],
        ),
        "unknown field",
    );
    std::fs::write(&cfg, "[facts]\nsample_interval_ms = \"soon\"\n").unwrap();
    check_error(
        &agent(&["--config", cfg.to_str().unwrap(), "run"], &[]),
        "invalid configuration",
    );
    check_error(
        &agent(&["--config", "/nonexistent/agent.toml", "run"], &[]),
        "cannot read config file",
    );

    // Not enrolled.
    check_error(&agent(&["--state-dir", st, "run"], &[]), "not enrolled");

    // Bad fingerprint and bad token are refused before any network use.
    check_error(
        &agent(
            &[
                "--state-dir",
                st,
                "enroll",
                "--hub",
                "127.0.0.1:9",
                "--token",
                "wmt_x.y",
                "--ca-sha256",
                "nothex",
            ],
            &[],
        ),
        "--ca-sha256 must be a 64-character hex",
    );
    check_error(
        &agent(
            &[
                "--state-dir",
                st,
                "enroll",
                "--hub",
                "127.0.0.1:9",
                "--token",
                "has space",
                "--ca-sha256",
                &fp,
            ],
            &[],
        ),
        "token is malformed",
    );
    // Unresolvable hub.
    check_error(
        &agent(
            &[
                "--state-dir",
                st,
                "enroll",
                "--hub",
                "nohost.invalid:4433",
                "--token",
                "wmt_0123456789ab.AAAAAAAAAAAAAAAAAAAAAAAA",
                "--ca-sha256",
                &fp,
            ],
            &[],
        ),
        "cannot resolve hub address",
    );
    // Unwritable state dir (a path under a regular file).
    let file = dir.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    let bad_state = file.join("s");
    check_error(
        &agent(
            &[
                "--state-dir",
                bad_state.to_str().unwrap(),
                "enroll",
                "--hub",
                "127.0.0.1:9",
                "--token",
                "wmt_0123456789ab.AAAAAAAAAAAAAAAAAAAAAAAA",
                "--ca-sha256",
                &fp,
            ],
            &[],
        ),
        "cannot access agent state",
    );
    // Raw logs not kept.
    check_error(
        &agent(&["--state-dir", st, "logs", "--since", "1h"], &[]),
        "no raw logs are kept",
    );
    check_error(
        &agent(&["--state-dir", st, "logs", "--since", "soon"], &[]),
        "invalid --since",
    );
    // Nothing half-written.
    assert!(!state.join("enrollment.toml").exists());
}
