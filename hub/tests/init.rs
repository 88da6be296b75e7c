//! `wingman-hub init`: the non-interactive form (`--yes` plus flags) and the
//! line-by-line wizard, against real files and a real SQLite store.

use std::io::Cursor;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use wingman_hub::init::{InitArgs, InitOutcome, InitPaths, apply, plan, summary};
use wingman_hub::{Hub, HubConfig};

fn args() -> InitArgs {
    InitArgs {
        yes: true,
        admin_user: None,
        admin_password_file: None,
        listen: None,
        quic_listen: None,
        public_addr: None,
        llm_key_files: Vec::new(),
        webhook_secret_file: None,
        credentials: None,
        // Never an existing account, so nothing changes owner even as root.
        service_user: "wingman-init-test-nobody".into(),
    }
}

fn paths(dir: &Path) -> InitPaths {
    InitPaths {
        config: dir.join("etc/hub.toml"),
        data_dir: Some(dir.join("data")),
        database_url: None,
    }
}

async fn run(args: &InitArgs, paths: &InitPaths, answers: &str) -> anyhow::Result<InitOutcome> {
    let mut input = Cursor::new(answers.as_bytes().to_vec());
    let mut out = Vec::new();
    let p = plan(args, paths, &mut input, &mut out, false)?;
    apply(&p).await
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

async fn admin_password_ok(config: &HubConfig, user: &str, password: &str) -> (bool, bool) {
    let hub = Hub::open(config.clone()).await.unwrap();
    let u = hub
        .store
        .user_by_name(user)
        .await
        .unwrap()
        .expect("admin user");
    assert_eq!(u.role, "admin");
    (
        wingman_hub::auth::verify_password(password, &u.password_hash),
        u.must_change_password,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_yes_writes_config_credentials_and_admin() {
    wingman_agent::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let pw = write(dir.path(), "pw", "correct-horse-battery\n");
    let key = write(dir.path(), "openai.key", "sk-test-123\n");
    let mut a = args();
    a.admin_user = Some("ops".into());
    a.admin_password_file = Some(pw.clone());
    a.listen = Some("0.0.0.0:18080".parse().unwrap());
    a.quic_listen = Some("0.0.0.0:14433".parse().unwrap());
    a.public_addr = Some("hub.test:14433".into());
    a.llm_key_files = vec![format!("openai={}", key.display())];
    let p = paths(dir.path());
    let out = run(&a, &p, "").await.unwrap();

    // The file loads as the hub loads it (unknown keys would be rejected).
    let config = HubConfig::load(Some(p.config.clone())).unwrap();
    assert_eq!(config.http.listen.to_string(), "0.0.0.0:18080");
    assert_eq!(config.quic.listen.to_string(), "0.0.0.0:14433");
    assert_eq!(config.public_address, "hub.test:14433");
    assert_eq!(config.data_dir, dir.path().join("data"));
    assert_eq!(mode(&p.config), 0o640);

    let creds_path = dir.path().join("etc/hub.credentials");
    assert_eq!(out.credentials_path, creds_path);
    assert_eq!(mode(&creds_path), 0o600);
    let creds: toml::Table = std::fs::read_to_string(&creds_path)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        creds["llm"]["openai"]["api_key"].as_str(),
        Some("sk-test-123")
    );
    let secret = creds["pve"]["webhook_secret"].as_str().unwrap().to_string();
    assert!(secret.len() >= 40, "{secret}");

    assert_eq!(out.admin_action, "created");
    assert!(out.one_time_password.is_none());
    assert_eq!(
        admin_password_ok(&config, "ops", "correct-horse-battery").await,
        (true, false)
    );
    let hub = Hub::open(config.clone()).await.unwrap();
    assert_eq!(out.ca_sha256, hub.pki.fingerprint());
    drop(hub);

    let text = summary(&out);
    assert!(text.contains("wingman-hub token create --ttl 1h"), "{text}");
    assert!(
        text.contains(&format!(
            "wingman-agent enroll --hub hub.test:14433 --token <TOKEN> --ca-sha256 {}",
            out.ca_sha256
        )),
        "{text}"
    );
    assert!(
        text.contains("systemctl enable --now wingman-agent"),
        "{text}"
    );

    // Again, without a password: the admin's password and the webhook secret
    // are kept, the settings stay the same.
    let mut again = args();
    again.admin_user = Some("ops".into());
    let before = std::fs::read_to_string(&p.config).unwrap();
    let out2 = run(&again, &p, "").await.unwrap();
    assert_eq!(out2.admin_action, "unchanged");
    assert_eq!(std::fs::read_to_string(&p.config).unwrap(), before);
    let creds2: toml::Table = std::fs::read_to_string(&creds_path)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        creds2["pve"]["webhook_secret"].as_str(),
        Some(secret.as_str())
    );
    assert_eq!(
        creds2["llm"]["openai"]["api_key"].as_str(),
        Some("sk-test-123")
    );
    assert_eq!(
        admin_password_ok(&config, "ops", "correct-horse-battery").await,
        (true, false)
    );
    assert_eq!(out2.ca_sha256, out.ca_sha256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_yes_without_password_creates_a_one_time_password() {
    wingman_agent::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let p = paths(dir.path());
    let out = run(&args(), &p, "").await.unwrap();
    let pw = out.one_time_password.clone().expect("one-time password");
    assert!(summary(&out).contains(&pw));
    let config = HubConfig::load(Some(p.config.clone())).unwrap();
    assert_eq!(config.http.listen, HubConfig::default().http.listen);
    assert_eq!(admin_password_ok(&config, "admin", &pw).await, (true, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_keeps_existing_settings_and_refuses_unknown_keys() {
    wingman_agent::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    let p = paths(dir.path());
    // The packaged file (every key with its default) plus an operator change.
    let shipped =
        HubConfig::example().replace("offline_after_ms = 20000", "offline_after_ms = 45000");
    std::fs::write(&p.config, shipped).unwrap();
    let mut a = args();
    a.public_addr = Some("hub.lan:4433".into());
    run(&a, &p, "").await.unwrap();
    let config = HubConfig::load(Some(p.config.clone())).unwrap();
    assert_eq!(config.agents.offline_after_ms, 45_000);
    assert_eq!(config.public_address, "hub.lan:4433");
    assert_eq!(config.skills_dir, HubConfig::default().skills_dir);

    std::fs::write(&p.config, "bogus_key = 1\n").unwrap();
    let err = run(&a, &p, "").await.unwrap_err().to_string();
    assert!(err.contains("bogus_key"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&p.config).unwrap(),
        "bogus_key = 1\n"
    );

    let mut bad = args();
    bad.llm_key_files = vec!["openai".into()];
    std::fs::remove_file(&p.config).unwrap();
    let err = run(&bad, &p, "").await.unwrap_err().to_string();
    assert!(err.contains("PROVIDER=FILE"), "{err}");
    assert!(!p.config.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_wizard_reads_answers_line_by_line() {
    wingman_agent::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let p = paths(dir.path());
    let mut a = args();
    a.yes = false;
    // name, password (too short, then good), HTTP (default), QUIC (invalid,
    // then one), public, openai key, anthropic (skip), webhook, confirm.
    let answers = "alice\nshort\nlong-enough-password\n\nnot-an-address\n0.0.0.0:5443\n\
                   node-facing.example:5443\nsk-openai\n\nhook-secret-0123456789\nyes\n";
    let mut input = Cursor::new(answers.as_bytes().to_vec());
    let mut out = Vec::new();
    let pl = plan(&a, &p, &mut input, &mut out, false).unwrap();
    let transcript = String::from_utf8(out).unwrap();
    assert!(
        transcript.contains("at least 10 characters"),
        "{transcript}"
    );
    assert!(
        transcript.contains("is not an IP:PORT address"),
        "{transcript}"
    );
    assert!(transcript.contains("not a terminal"), "{transcript}");
    let o = apply(&pl).await.unwrap();
    assert_eq!(o.admin_user, "alice");
    let config = HubConfig::load(Some(p.config.clone())).unwrap();
    assert_eq!(config.http.listen, HubConfig::default().http.listen);
    assert_eq!(config.quic.listen.to_string(), "0.0.0.0:5443");
    assert_eq!(config.public_address, "node-facing.example:5443");
    let creds: toml::Table = std::fs::read_to_string(&o.credentials_path)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        creds["pve"]["webhook_secret"].as_str(),
        Some("hook-secret-0123456789")
    );
    assert_eq!(
        creds["llm"]["openai"]["api_key"].as_str(),
        Some("sk-openai")
    );
    assert!(creds["llm"].get("anthropic").is_none());
    assert_eq!(
        admin_password_ok(&config, "alice", "long-enough-password").await,
        (true, false)
    );

    // Declining writes nothing; a closed input is an error, not a default.
    let dir2 = tempfile::tempdir().unwrap();
    let p2 = paths(dir2.path());
    let mut input = Cursor::new(b"\n\n\n\n\n\n\n\nno\n".to_vec());
    let err = plan(&a, &p2, &mut input, &mut Vec::new(), false).unwrap_err();
    assert!(err.to_string().contains("nothing written"), "{err}");
    let mut input = Cursor::new(b"admin\n".to_vec());
    let err = plan(&a, &p2, &mut input, &mut Vec::new(), false).unwrap_err();
    assert!(err.to_string().contains("standard input closed"), "{err}");
    assert!(!p2.config.exists());
}
