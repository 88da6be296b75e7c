//! `wingman-agent` command line: parse flags, load config, call the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use wingman_agent::config::AgentConfig;
use wingman_agent::enroll::{EnrollOptions, enroll};
use wingman_agent::facts::detect_kind;

#[derive(Parser)]
#[command(name = "wingman-agent", version, about = "Wingman node agent")]
struct Cli {
    /// Config file (default /etc/wingman/agent.toml).
    #[arg(long, global = true, env = "WINGMAN_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// State directory (overrides `state_dir`).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run,
    /// Enroll this node with a hub using a one-time token.
    Enroll {
        /// The hub's QUIC address, HOST:PORT.
        #[arg(long)]
        hub: String,
        /// The one-time token from `wingman-hub token create`.
        #[arg(long)]
        token: String,
        /// The hub CA's SHA-256 fingerprint from `wingman-hub token create`.
        #[arg(long = "ca-sha256")]
        ca_sha256: String,
        /// Replace an existing enrollment.
        #[arg(long)]
        force: bool,
    },
    /// Print a commented example config file.
    DefaultConfig,
    /// Read raw log lines kept on this node (only for sources with `raw = true`).
    Logs {
        /// Only this unit, file path or container.
        #[arg(long)]
        unit: Option<String>,
        /// How far back, e.g. 30m, 1h, 2d.
        #[arg(long, default_value = "1h")]
        since: String,
    },
}

fn parse_since(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1_000),
        Some((i, 'm')) => (&s[..i], 60_000),
        Some((i, 'h')) => (&s[..i], 3_600_000),
        Some((i, 'd')) => (&s[..i], 86_400_000),
        _ => (s, 1_000),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid --since {s:?}; use e.g. 30m, 1h or 2d"))?;
    if n < 0 {
        anyhow::bail!("--since must not be negative");
    }
    Ok(n.saturating_mul(mult))
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}");
            #[allow(clippy::print_stderr)]
            {
                eprintln!("wingman-agent: {msg}");
            }
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::DefaultConfig)) {
        #[allow(clippy::print_stdout)]
        {
            print!("{}", AgentConfig::example());
        }
        return Ok(());
    }
    let mut config = AgentConfig::load(cli.config.clone())?;
    if let Some(dir) = cli.state_dir {
        config.state_dir = dir;
    }
    if let Some(Command::Logs { unit, since }) = &cli.command {
        let since_ms = wingman_agent::now_ms() - parse_since(since)?;
        let dir = config.state_dir.join("raw");
        if !dir.exists() {
            anyhow::bail!(
                "no raw logs are kept on this node ({} does not exist); set `raw = true` on a source in agent.toml to keep them",
                dir.display()
            );
        }
        let records = wingman_agent::logs::raw::RawStore::read(&dir, since_ms, unit.as_deref())
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?;
        let mut out = std::io::stdout().lock();
        for r in records {
            use std::io::Write;
            let line = format!(
                "{} {} {}: {}\n",
                r.ts_ms,
                r.source,
                r.priority
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.line
            );
            if out.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log_level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    wingman_agent::tls::install_default_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Some(Command::Enroll {
                hub,
                token,
                ca_sha256,
                force,
            }) => {
                let opts = EnrollOptions {
                    hub,
                    token,
                    ca_sha256,
                    state_dir: config.state_dir.clone(),
                    force,
                    host_kind: detect_kind(std::path::Path::new("/")),
                    hostname: sysinfo::System::host_name().unwrap_or_else(|_| "unknown".into()),
                };
                let id = enroll(&opts).await?;
                let owner = wingman_agent::enroll::hand_over_state(&config.state_dir)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "enrolled, but cannot give {} to the service user: {e}",
                            config.state_dir.display()
                        )
                    })?;
                let owned = owner
                    .map(|u| format!(" (owned by user {u})"))
                    .unwrap_or_default();
                // The packaged unit waits for the enrollment record
                // (ConditionPathExists); with systemd the one next step is
                // to enable it, without it to run the agent directly.
                let start = if std::path::Path::new("/run/systemd/system").exists() {
                    "systemctl enable --now wingman-agent"
                } else {
                    "wingman-agent run"
                };
                #[allow(clippy::print_stdout)]
                {
                    println!(
                        "Enrolled as agent {} with hub {}.\nState written to {}{owned}.\nStart the agent now and at every boot:\n  {start}",
                        id.enrollment.agent_id,
                        id.enrollment.hub,
                        config.state_dir.display()
                    );
                }
                Ok(())
            }
            Some(Command::Run) | None => {
                let shutdown = CancellationToken::new();
                let signal = shutdown.clone();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    signal.cancel();
                });
                let kind = detect_kind(std::path::Path::new("/"));
                let stats = Arc::new(Mutex::new(wingman_agent::LinkStats::default()));
                wingman_agent::run(config, kind, stats, shutdown).await?;
                Ok(())
            }
            Some(Command::DefaultConfig) | Some(Command::Logs { .. }) => Ok(()),
        }
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
