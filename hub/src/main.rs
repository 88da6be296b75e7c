//! `wingman-hub` command line: parse flags, load config, call the library.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use wingman_hub::commands;
use wingman_hub::{Hub, HubConfig, Listeners};

#[derive(Parser)]
#[command(
    name = "wingman-hub",
    version,
    about = "Wingman hub: enrollment CA, ingest, API and dashboard"
)]
struct Cli {
    /// Config file (default /etc/wingman/hub.toml).
    #[arg(long, global = true, env = "WINGMAN_HUB_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides `data_dir`).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Database URL (overrides `database_url`): sqlite://PATH or postgres://...
    #[arg(long, global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub.
    Serve {
        /// HTTP listen address.
        #[arg(long)]
        http: Option<SocketAddr>,
        /// QUIC listen address.
        #[arg(long)]
        quic: Option<SocketAddr>,
    },
    /// Set up this hub: settings, secrets and the admin account, then print
    /// the next steps. Asks on standard input; `--yes` asks nothing.
    Init(wingman_hub::init::InitArgs),
    /// Run the hub on SQLite in ./wingman-data with an agent for this machine.
    Quickstart {
        /// HTTP listen address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        /// QUIC listen address.
        #[arg(long, default_value = "127.0.0.1:4433")]
        quic: SocketAddr,
    },
    /// Enrollment tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Enrolled agents.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Dashboard users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// API keys for scripts.
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// Print a commented example config file.
    DefaultConfig,
    /// The skills library.
    Skills {
        #[command(subcommand)]
        command: SkillsCommand,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain; exits 1 and names the first broken entry.
    Verify,
    /// Print every entry as JSON lines.
    Export,
}

#[derive(Subcommand)]
enum SkillsCommand {
    /// Validate skills against docs/specs/skill.md: a skills folder (with its
    /// skills-library.md), or by default the built-in library plus the
    /// operator skills in `skills_dir`.
    Check {
        /// A skills folder to check.
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a one-time enrollment token and print the agent command.
    Create {
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long)]
        ttl: Option<String>,
    },
}

#[derive(Subcommand)]
enum AgentCommand {
    /// List enrolled agents.
    List,
    /// Revoke an agent: its live link is closed and its handshakes fail.
    Revoke {
        /// The agent id.
        id: String,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a dashboard user; the password is read from standard input.
    Add {
        /// Login name.
        name: String,
        /// Read the password from standard input (required).
        #[arg(long)]
        password_stdin: bool,
        /// admin, operator or viewer.
        #[arg(long, default_value = "admin")]
        role: String,
    },
}

#[derive(Subcommand)]
enum ApikeyCommand {
    /// Create an API key (printed once).
    Create {
        /// A name for the key.
        #[arg(long)]
        name: String,
        /// The user the key acts as (default: the first admin named "admin").
        #[arg(long, default_value = "admin")]
        user: String,
        /// Lifetime in days (default from config, 90).
        #[arg(long)]
        ttl_days: Option<u32>,
    },
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wingman-hub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout)]
fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if matches!(cli.command, Command::DefaultConfig) {
        print!("{}", HubConfig::example());
        return Ok(());
    }
    if let Command::Init(args) = &cli.command {
        return wingman_hub::init::main(
            args,
            &wingman_hub::init::InitPaths {
                config: cli
                    .config
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(wingman_hub::config::DEFAULT_CONFIG_FILE)),
                data_dir: cli.data_dir.clone(),
                database_url: cli.database_url.clone(),
            },
        );
    }
    let mut config = HubConfig::load(cli.config.clone())?;
    if let Command::Skills {
        command: SkillsCommand::Check { dir },
    } = &cli.command
    {
        let lib = match dir {
            Some(d) => wingman_hub::skills::check_dir(d)
                .with_context(|| format!("cannot read skills folder {}", d.display()))?,
            None => wingman_hub::skills::load_all(&config.skills_dir),
        };
        for p in &lib.problems {
            println!("{p}");
        }
        let t1 = lib.skills.iter().filter(|s| s.tier == 1).count();
        println!(
            "{} skills ({t1} tier 1, {} tier 2), {} problems",
            lib.skills.len(),
            lib.skills.len() - t1,
            lib.problems.len()
        );
        if !lib.problems.is_empty() {
            bail!("the skills library has {} problems", lib.problems.len());
        }
        return Ok(());
    }
    let quickstart = matches!(cli.command, Command::Quickstart { .. });
    if quickstart && cli.data_dir.is_none() && !config_given(&cli) {
        config.data_dir = PathBuf::from("wingman-data");
    }
    if let Some(d) = cli.data_dir.clone() {
        config.data_dir = d;
    }
    if let Some(u) = cli.database_url.clone() {
        config.database_url = u;
    }
    match &cli.command {
        Command::Serve { http, quic } => {
            if let Some(a) = http {
                config.http.listen = *a;
            }
            if let Some(a) = quic {
                config.quic.listen = *a;
            }
        }
        Command::Quickstart { http, quic } => {
            config.http.listen = *http;
            config.quic.listen = *quic;
            if !config.database_url.is_empty() && !config.database_url.starts_with("sqlite:") {
                bail!(
                    "quickstart runs on the embedded SQLite database; use `serve` for PostgreSQL"
                );
            }
        }
        _ => {}
    }
    config.validate()?;
    let quiet = !matches!(
        cli.command,
        Command::Serve { .. } | Command::Quickstart { .. }
    );
    let filter = if quiet {
        "warn".to_string()
    } else {
        config.log_level.clone()
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    wingman_agent::tls::install_default_provider();
    // Read the password before starting the runtime.
    let password = match &cli.command {
        Command::User {
            command: UserCommand::Add { password_stdin, .. },
        } => {
            if !password_stdin {
                bail!(
                    "pass --password-stdin and pipe the password, e.g. `echo 'secret' | wingman-hub user add NAME --password-stdin`"
                );
            }
            let mut s = String::new();
            std::io::stdin()
                .take(4096)
                .read_to_string(&mut s)
                .context("failed to read the password from standard input")?;
            Some(s.trim_end_matches(['\r', '\n']).to_string())
        }
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve { .. } => {
                let listeners = Listeners::bind(&config).await?;
                let hub = Hub::open(config).await?;
                let shutdown = CancellationToken::new();
                spawn_signal(shutdown.clone());
                wingman_hub::run(hub, listeners, shutdown).await?;
            }
            Command::Quickstart { .. } => {
                let shutdown = CancellationToken::new();
                spawn_signal(shutdown.clone());
                commands::quickstart(config, shutdown, |info| {
                    println!("\nWingman is running.\n");
                    println!("  Dashboard: {}", info.url);
                    match &info.password {
                        Some(pw) => println!("  Sign in as {} with the one-time password: {pw}\n  (you will choose your own password at first sign-in)", info.user),
                        None => println!("  Sign in as {} with your password.", info.user),
                    }
                    println!("  This machine is enrolled as agent {}.", info.agent_id);
                    println!("\nPress Ctrl-C to stop.");
                })
                .await?;
            }
            Command::Token {
                command: TokenCommand::Create { ttl },
            } => {
                let ttl = match ttl {
                    Some(t) => commands::parse_ttl(&t)?,
                    None => config.agents.token_ttl_secs,
                };
                let hub_addr = config.agent_address(config.quic.listen);
                let hub = Hub::open(config).await?;
                let info = commands::create_token(&hub, ttl, &hub_addr).await?;
                println!("Enrollment token (single use, valid for {}):\n  {}\n", human(ttl), info.token);
                println!("Hub CA SHA-256 fingerprint:\n  {}\n", info.ca_sha256);
                println!("On the node, run:\n  {}", info.command);
            }
            Command::Agent { command } => {
                let hub = Hub::open(config).await?;
                match command {
                    AgentCommand::List => {
                        let agents = hub.store.list_agents().await?;
                        println!("{:<38} {:<24} {:<8} {:<8} LAST SEEN", "ID", "HOSTNAME", "KIND", "STATE");
                        let now = wingman_agent::now_ms();
                        for a in agents {
                            let state = if a.revoked_at.is_some() { "revoked" } else if a.online { "online" } else { "offline" };
                            let seen = a.last_seen.map(|t| format!("{} s ago", (now - t) / 1000)).unwrap_or_else(|| "never".into());
                            println!("{:<38} {:<24} {:<8} {:<8} {seen}", a.id, a.hostname, a.kind, state);
                        }
                    }
                    AgentCommand::Revoke { id } => {
                        commands::revoke_agent(&hub, &id).await?;
                        println!("Agent {id} revoked. A running hub closes its connection within a second.");
                    }
                }
            }
            Command::User {
                command: UserCommand::Add { name, role, .. },
            } => {
                let hub = Hub::open(config).await?;
                commands::add_user(&hub, &name, password.as_deref().unwrap_or(""), &role, false).await?;
                println!("User {name} added with role {role}.");
            }
            Command::Apikey {
                command: ApikeyCommand::Create { name, user, ttl_days },
            } => {
                let days = ttl_days.unwrap_or(config.auth.api_key_ttl_days);
                let hub = Hub::open(config).await?;
                let key = commands::create_api_key(&hub, &name, &user, days).await?;
                println!("API key {name:?} for user {user} (valid {days} days; shown only once):\n  {key}\n\nUse it as:  curl -H 'Authorization: Bearer {key}' http://HUB/api/v1/nodes");
            }
            Command::Audit { command } => {
                let hub = Hub::open(config).await?;
                match command {
                    AuditCommand::Verify => match wingman_hub::audit::verify(&hub.store).await {
                        Ok((n, head)) => {
                            let head = head.map(|h| format!("head #{} {}", h.seq, h.hash)).unwrap_or_else(|| "empty".into());
                            println!("audit trail OK: {n} entries, {head}");
                        }
                        Err(e) => bail!("{e}"),
                    },
                    AuditCommand::Export => {
                        let all = wingman_hub::audit::read_all(&hub.store).await?;
                        print!("{}", wingman_hub::control::audit::to_jsonl(&all));
                    }
                }
            }
            Command::DefaultConfig | Command::Skills { .. } | Command::Init(_) => {}
        }
        Ok(())
    })
}

fn config_given(cli: &Cli) -> bool {
    cli.config.is_some() || std::path::Path::new(wingman_hub::config::DEFAULT_CONFIG_FILE).exists()
}

fn human(secs: u64) -> String {
    if secs.is_multiple_of(86_400) {
        format!("{} d", secs / 86_400)
    } else if secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

fn spawn_signal(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
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
        shutdown.cancel();
    });
}
