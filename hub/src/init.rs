//! `wingman-hub init`: set up an installed hub in one step.
//!
//! It asks (line by line on standard input, or not at all with `--yes`) for
//! the admin account, the HTTP and QUIC listen addresses, the public address
//! agents dial and optional LLM provider keys, then:
//! - writes `hub.toml` as TOML serialized from a table of known keys (the
//!   existing file's settings are kept; the result must load as a
//!   [`HubConfig`], which rejects unknown keys, before anything is written);
//! - writes the credentials file (`hub.credentials`, mode 0600, owned by the
//!   service user): `[pve] webhook_secret` (generated unless given) and
//!   `[llm.PROVIDER] api_key` entries, which the hub merges over `hub.toml`;
//! - opens the store (creating the CA and the database) and creates the admin
//!   user, or sets its password when it exists;
//! - when run as root, gives the data dir to the service user;
//! - prints the next steps with the exact commands.
//!
//! [`plan`] does the asking and validation (no writes), [`apply`] the writes.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use toml::{Table, Value};
use wingman_agent::enroll::{Account, chown_tree, running_as_root, system_account};
use wingman_agent::fsutil::write_atomic;

use crate::{Hub, HubConfig, auth, commands};

/// The user the packaged hub service runs as (`packaging/hub/wingman-hub.sysusers`).
pub const SERVICE_USER: &str = "wingman-hub";

/// Flags of `wingman-hub init`. Every flag also answers its question in the
/// interactive wizard; `--yes` asks nothing and uses defaults for the rest.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// Ask nothing: take every answer from flags, the existing config and defaults.
    #[arg(long)]
    pub yes: bool,
    /// Admin account name.
    #[arg(long, value_name = "NAME")]
    pub admin_user: Option<String>,
    /// Read the admin password from this file (its first line). Without it,
    /// `--yes` creates a new admin with a one-time password (changed at first
    /// sign-in) and leaves an existing admin's password alone.
    #[arg(long, value_name = "FILE")]
    pub admin_password_file: Option<PathBuf>,
    /// HTTP listen address (dashboard and API).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// QUIC listen address (agents).
    #[arg(long, value_name = "ADDR")]
    pub quic_listen: Option<SocketAddr>,
    /// HOST:PORT agents dial, printed in enrollment commands.
    #[arg(long, value_name = "HOST:PORT")]
    pub public_addr: Option<String>,
    /// An LLM provider's API key, read from a file (repeatable), e.g.
    /// `--llm-key-file openai=/root/openai.key`.
    #[arg(long = "llm-key-file", value_name = "PROVIDER=FILE")]
    pub llm_key_files: Vec<String>,
    /// Read the Proxmox VE webhook secret from this file (default: keep the
    /// existing one, or generate one).
    #[arg(long, value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Credentials file (default: `hub.credentials` beside the config file).
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// The service user that gets the data dir and the credentials file when
    /// init runs as root and that user exists.
    #[arg(long, value_name = "USER", default_value = SERVICE_USER)]
    pub service_user: String,
}

/// Where init writes, from the global flags.
#[derive(Debug, Clone)]
pub struct InitPaths {
    /// The config file to write (`--config`, default `/etc/wingman/hub.toml`).
    pub config: PathBuf,
    /// `--data-dir`, written into the config when given.
    pub data_dir: Option<PathBuf>,
    /// `--database-url`, written into the config when given.
    pub database_url: Option<String>,
}

/// What [`apply`] will do: every answer, validated.
#[derive(Clone)]
pub struct InitPlan {
    /// The config file.
    pub config_path: PathBuf,
    /// The settings table written to it.
    pub config_table: Table,
    /// The same settings, as the hub will load them.
    pub config: HubConfig,
    /// The credentials file.
    pub credentials_path: PathBuf,
    /// Its content.
    pub credentials: Table,
    /// Admin account name.
    pub admin_user: String,
    /// The admin password; `None` keeps an existing admin's password or
    /// creates a one-time password for a new admin.
    pub admin_password: Option<String>,
    /// The service user.
    pub service_user: String,
}

impl std::fmt::Debug for InitPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitPlan")
            .field("config_path", &self.config_path)
            .field("config", &self.config)
            .field("credentials_path", &self.credentials_path)
            .field("admin_user", &self.admin_user)
            .field("service_user", &self.service_user)
            .finish_non_exhaustive()
    }
}

/// What [`apply`] did, for the summary.
#[derive(Debug, Clone)]
pub struct InitOutcome {
    /// The config file written.
    pub config_path: PathBuf,
    /// The credentials file written.
    pub credentials_path: PathBuf,
    /// Admin account name.
    pub admin_user: String,
    /// `created`, `password set` or `unchanged`.
    pub admin_action: &'static str,
    /// A generated one-time password, to print once.
    pub one_time_password: Option<String>,
    /// The hub CA's SHA-256 fingerprint.
    pub ca_sha256: String,
    /// The address agents dial.
    pub public_address: String,
    /// The HTTP listen address.
    pub http_listen: SocketAddr,
    /// The service user that now owns the data dir and credentials, if any.
    pub owner: Option<String>,
}

/// Runs `wingman-hub init` on the process's standard input and output.
pub fn main(args: &InitArgs, paths: &InitPaths) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let mut input = stdin.lock();
    let mut out = std::io::stdout().lock();
    let plan = plan(args, paths, &mut input, &mut out, tty)?;
    wingman_agent::tls::install_default_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = rt.block_on(apply(&plan))?;
    out.write_all(summary(&outcome).as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Line-by-line questions. `tty`: standard input is a terminal, so secrets
/// are read with echo turned off (`stty -echo`).
struct Prompter<'a> {
    input: &'a mut dyn BufRead,
    out: &'a mut dyn Write,
    tty: bool,
}

impl Prompter<'_> {
    fn line(&mut self) -> anyhow::Result<String> {
        let mut s = String::new();
        let n = self
            .input
            .read_line(&mut s)
            .context("cannot read standard input")?;
        if n == 0 {
            bail!(
                "standard input closed before every question was answered (use --yes for automation)"
            );
        }
        Ok(s.trim_end_matches(['\r', '\n']).trim().to_string())
    }

    /// Asks `question`; an empty answer takes `default`. `check` turns an
    /// answer into the value or says what is wrong, and the question is asked again.
    fn ask<T>(
        &mut self,
        question: &str,
        default: &str,
        check: impl Fn(&str) -> Result<T, String>,
    ) -> anyhow::Result<T> {
        for _ in 0..5 {
            if default.is_empty() {
                write!(self.out, "{question}: ")?;
            } else {
                write!(self.out, "{question} [{default}]: ")?;
            }
            self.out.flush()?;
            let answer = self.line()?;
            let answer = if answer.is_empty() { default } else { &answer };
            match check(answer) {
                Ok(v) => return Ok(v),
                Err(e) => writeln!(self.out, "  {e}")?,
            }
        }
        bail!("too many invalid answers to {question:?}")
    }

    /// Reads a secret line; the terminal does not echo it.
    fn secret(&mut self, question: &str) -> anyhow::Result<String> {
        write!(self.out, "{question}: ")?;
        self.out.flush()?;
        let guard = EchoOff::new(self.tty);
        let s = self.line();
        if guard.0 {
            writeln!(self.out)?;
        }
        drop(guard);
        s
    }
}

/// Turns terminal echo off while it lives (through `stty`, which acts on the
/// inherited standard input; no terminal crate needed).
struct EchoOff(bool);

impl EchoOff {
    fn new(tty: bool) -> Self {
        let off = tty
            && std::process::Command::new("stty")
                .arg("-echo")
                .status()
                .is_ok_and(|s| s.success());
        Self(off)
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if self.0 {
            let _ = std::process::Command::new("stty").arg("echo").status();
        }
    }
}

fn check_user_name(s: &str) -> Result<String, String> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
    {
        return Err(
            "user names are 1-64 characters of letters, digits, '.', '_', '-' or '@'".into(),
        );
    }
    Ok(s.to_string())
}

fn check_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an IP:PORT address, e.g. 0.0.0.0:4433"))
}

fn check_public(s: &str) -> Result<String, String> {
    let ok = s.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && !host.contains(char::is_whitespace)
            && port.parse::<u16>().is_ok_and(|p| p > 0)
    });
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not HOST:PORT, e.g. hub.lan:4433 (agents dial it over UDP)"
        ))
    }
}

fn check_provider(s: &str) -> Result<String, String> {
    if s.is_empty()
        || s.len() > 32
        || !s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(format!(
            "LLM provider {s:?} must be 1-32 characters of a-z, 0-9, '-' or '_', e.g. openai"
        ));
    }
    Ok(s.to_string())
}

/// Reads the first line of a secret file.
fn read_secret_file(path: &Path, what: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} from {}", path.display()))?;
    let first = text.lines().next().unwrap_or("").trim().to_string();
    if first.is_empty() {
        bail!("{} is empty; it must hold the {what}", path.display());
    }
    Ok(first)
}

fn read_table(path: &Path, what: &str) -> anyhow::Result<Table> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.parse::<Table>().map_err(|e| {
            anyhow::anyhow!(
                "{what} {} is not valid TOML: {}",
                path.display(),
                e.message()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Table::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {what} {}", path.display())),
    }
}

/// Sets `path` (e.g. `["http", "listen"]`) in `table`, creating sections.
fn set(table: &mut Table, path: &[&str], value: Value) -> anyhow::Result<()> {
    let (last, sections) = path.split_last().context("empty configuration key")?;
    let mut t = table;
    for s in sections {
        let entry = t
            .entry((*s).to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        t = entry
            .as_table_mut()
            .with_context(|| format!("`{s}` must be a section ([{s}])"))?;
    }
    t.insert((*last).to_string(), value);
    Ok(())
}

fn get_str<'t>(table: &'t Table, path: &[&str]) -> Option<&'t str> {
    let (last, sections) = path.split_last()?;
    let mut t = table;
    for s in sections {
        t = t.get(*s)?.as_table()?;
    }
    t.get(*last)?.as_str()
}

/// Asks the questions (unless `--yes`) and validates every answer. Writes nothing.
pub fn plan(
    args: &InitArgs,
    paths: &InitPaths,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    tty: bool,
) -> anyhow::Result<InitPlan> {
    let mut table = read_table(&paths.config, "config file")?;
    if let Some(d) = &paths.data_dir {
        set(
            &mut table,
            &["data_dir"],
            Value::String(d.display().to_string()),
        )?;
    }
    if let Some(u) = &paths.database_url {
        set(&mut table, &["database_url"], Value::String(u.clone()))?;
    }
    // The current settings: the existing file over the defaults. Unknown keys
    // in an existing file stop init here, before any question.
    let current: HubConfig =
        Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| {
                anyhow::anyhow!(
                    "{} has invalid settings: {}; fix or remove it and run init again",
                    paths.config.display(),
                    e.message()
                )
            })?;
    let credentials_path = args
        .credentials
        .clone()
        .unwrap_or_else(|| paths.config.with_file_name("hub.credentials"));
    let mut credentials = read_table(&credentials_path, "credentials file")?;

    let admin_password = match &args.admin_password_file {
        Some(p) => {
            let pw = read_secret_file(p, "admin password")?;
            auth::check_new_password(&pw).map_err(anyhow::Error::msg)?;
            Some(pw)
        }
        None => None,
    };
    let default_public = if current.public_address.is_empty() {
        current.agent_address(args.quic_listen.unwrap_or(current.quic.listen))
    } else {
        current.public_address.clone()
    };
    let mut llm_keys: Vec<(String, String)> = Vec::new();
    for spec in &args.llm_key_files {
        let Some((provider, file)) = spec.split_once('=') else {
            bail!("--llm-key-file takes PROVIDER=FILE, e.g. openai=/root/openai.key");
        };
        let provider = check_provider(provider).map_err(anyhow::Error::msg)?;
        let key = read_secret_file(Path::new(file), &format!("{provider} API key"))?;
        llm_keys.push((provider, key));
    }
    let mut webhook = match &args.webhook_secret_file {
        Some(p) => Some(read_secret_file(p, "webhook secret")?),
        None => None,
    };
    if webhook.as_ref().is_some_and(|w| w.len() < 16) {
        bail!("the webhook secret must be at least 16 characters");
    }

    let (admin_user, admin_password, listen, quic_listen, public) = if args.yes {
        let admin_user = check_user_name(args.admin_user.as_deref().unwrap_or("admin"))
            .map_err(anyhow::Error::msg)?;
        let public = check_public(args.public_addr.as_deref().unwrap_or(&default_public))
            .map_err(anyhow::Error::msg)?;
        (
            admin_user,
            admin_password,
            args.listen.unwrap_or(current.http.listen),
            args.quic_listen.unwrap_or(current.quic.listen),
            public,
        )
    } else {
        let mut p = Prompter { input, out, tty };
        writeln!(
            p.out,
            "Wingman hub setup. Press Enter to keep the value in brackets.\n\
             Settings go to {}, secrets to {}.\n",
            paths.config.display(),
            credentials_path.display()
        )?;
        let admin_user = match &args.admin_user {
            Some(u) => check_user_name(u).map_err(anyhow::Error::msg)?,
            None => p.ask("Admin account name", "admin", check_user_name)?,
        };
        let admin_password = match admin_password {
            Some(pw) => Some(pw),
            None => {
                if !tty {
                    writeln!(
                        p.out,
                        "(standard input is not a terminal: the password is read as a plain line; \
                         --admin-password-file avoids that)"
                    )?;
                }
                ask_password(&mut p)?
            }
        };
        let listen = match args.listen {
            Some(a) => a,
            None => p.ask(
                "HTTP listen address for the dashboard and API (keep it on 127.0.0.1 unless HTTPS is in front)",
                &current.http.listen.to_string(),
                check_addr,
            )?,
        };
        let quic_listen = match args.quic_listen {
            Some(a) => a,
            None => p.ask(
                "QUIC listen address for agents (UDP)",
                &current.quic.listen.to_string(),
                check_addr,
            )?,
        };
        let public = match &args.public_addr {
            Some(a) => check_public(a).map_err(anyhow::Error::msg)?,
            None => p.ask(
                "Public address agents dial, HOST:PORT",
                &default_public,
                check_public,
            )?,
        };
        if args.llm_key_files.is_empty() {
            for provider in ["openai", "anthropic"] {
                let key = p.secret(&format!("{provider} API key (optional, Enter to skip)"))?;
                if !key.is_empty() {
                    llm_keys.push((provider.to_string(), key));
                }
            }
        }
        if webhook.is_none() {
            for _ in 0..5 {
                let s = p.secret(
                    "Proxmox VE webhook secret (at least 16 characters; Enter: keep or generate one)",
                )?;
                if s.is_empty() {
                    break;
                }
                if s.len() < 16 {
                    writeln!(p.out, "  the webhook secret must be at least 16 characters")?;
                    continue;
                }
                webhook = Some(s);
                break;
            }
        }
        let go = p.ask(
            &format!(
                "Write {} and {}, and set up admin {admin_user:?}? (yes/no)",
                paths.config.display(),
                credentials_path.display()
            ),
            "yes",
            |s| match s.to_ascii_lowercase().as_str() {
                "y" | "yes" => Ok(true),
                "n" | "no" => Ok(false),
                _ => Err("answer yes or no".to_string()),
            },
        )?;
        if !go {
            bail!("nothing written");
        }
        (admin_user, admin_password, listen, quic_listen, public)
    };

    set(
        &mut table,
        &["http", "listen"],
        Value::String(listen.to_string()),
    )?;
    set(
        &mut table,
        &["quic", "listen"],
        Value::String(quic_listen.to_string()),
    )?;
    set(&mut table, &["public_address"], Value::String(public))?;
    let config: HubConfig = Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("invalid settings: {}", e.message()))?;
    config.validate()?;

    match webhook {
        Some(s) => set(
            &mut credentials,
            &["pve", "webhook_secret"],
            Value::String(s),
        )?,
        None if get_str(&credentials, &["pve", "webhook_secret"]).is_none() => set(
            &mut credentials,
            &["pve", "webhook_secret"],
            Value::String(auth::random_secret(32)),
        )?,
        None => {}
    }
    for (provider, key) in llm_keys {
        set(
            &mut credentials,
            &["llm", &provider, "api_key"],
            Value::String(key),
        )?;
    }

    Ok(InitPlan {
        config_path: paths.config.clone(),
        config_table: table,
        config,
        credentials_path,
        credentials,
        admin_user,
        admin_password,
        service_user: args.service_user.clone(),
    })
}

fn ask_password(p: &mut Prompter<'_>) -> anyhow::Result<Option<String>> {
    for _ in 0..5 {
        let pw = p.secret(
            "Admin password (at least 10 characters; Enter: a one-time password for a new admin, or keep the current one)",
        )?;
        if pw.is_empty() {
            return Ok(None);
        }
        if let Err(e) = auth::check_new_password(&pw) {
            writeln!(p.out, "  {e}")?;
            continue;
        }
        if p.tty {
            let again = p.secret("Repeat the password")?;
            if again != pw {
                writeln!(p.out, "  the passwords differ")?;
                continue;
            }
        }
        return Ok(Some(pw));
    }
    bail!("too many invalid passwords")
}

const CONFIG_HEADER: &str = "\
# Wingman hub settings, written by `wingman-hub init`. Keys not listed here
# take their defaults; `wingman-hub default-config` prints every key with a
# comment. Environment variables (WINGMAN_HUB__SECTION__KEY) override this
# file. Unknown keys are rejected.

";

const CREDENTIALS_HEADER: &str = "\
# Wingman hub secrets, written by `wingman-hub init` (mode 0600, owned by the
# hub's service user). Re-running init keeps what is here and replaces only
# what it is given.
#
# [pve] webhook_secret: the shared secret Proxmox VE webhook notifications
#   must present.
# [llm.PROVIDER] api_key: API keys for the assistant's LLM providers
#   (e.g. [llm.openai], [llm.anthropic]).
#
# The hub does not read this file yet; these sections are its documented
# format.

";

fn write_owned(
    path: &Path,
    text: &str,
    mode: u32,
    owner: Option<Account>,
    group_only: bool,
) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_atomic(path, text.as_bytes(), mode)
        .with_context(|| format!("cannot write {}", path.display()))?;
    if let Some(a) = owner {
        let uid = if group_only { None } else { Some(a.uid) };
        std::os::unix::fs::chown(path, uid, Some(a.gid))
            .with_context(|| format!("cannot change the owner of {}", path.display()))?;
    }
    Ok(())
}

/// Writes the files, opens the store and sets up the admin account.
pub async fn apply(plan: &InitPlan) -> anyhow::Result<InitOutcome> {
    let owner = if running_as_root() {
        system_account(&plan.service_user)
    } else {
        None
    };
    let config_text = format!(
        "{CONFIG_HEADER}{}",
        toml::to_string(&plan.config_table).context("cannot serialize the settings")?
    );
    // Round trip: what is written loads as the hub will load it.
    let reread: HubConfig = toml::from_str(&config_text)
        .map_err(|e| anyhow::anyhow!("the settings do not round-trip: {}", e.message()))?;
    // (Compared through `Debug`, which shows every setting but no secret.)
    if format!("{reread:?}") != format!("{:?}", plan.config) {
        bail!("the settings do not round-trip through TOML");
    }
    // Root keeps the config; the service user's group may read it (0640).
    write_owned(&plan.config_path, &config_text, 0o640, owner, true)?;
    let credentials_text = format!(
        "{CREDENTIALS_HEADER}{}",
        toml::to_string(&plan.credentials).context("cannot serialize the credentials")?
    );
    write_owned(
        &plan.credentials_path,
        &credentials_text,
        0o600,
        owner,
        false,
    )?;

    // From here on, the settings as the service loads them: the file just
    // written, then WINGMAN_HUB__* variables (e.g. a database URL given only
    // through the environment, as in the container example).
    let effective = HubConfig::load(Some(plan.config_path.clone()))?;
    let hub = Hub::open(effective.clone())
        .await
        .context("cannot open the hub's data dir and database")?;
    let (admin_action, one_time_password) = match hub.store.user_by_name(&plan.admin_user).await? {
        None => match &plan.admin_password {
            Some(pw) => {
                commands::add_user(&hub, &plan.admin_user, pw, "admin", false).await?;
                ("created", None)
            }
            None => {
                let pw = auth::random_secret(12);
                commands::add_user(&hub, &plan.admin_user, &pw, "admin", true).await?;
                ("created", Some(pw))
            }
        },
        Some(user) => match &plan.admin_password {
            Some(pw) => {
                let hash = auth::hash_password(pw).map_err(anyhow::Error::msg)?;
                hub.store.set_password(&user.id, &hash, false).await?;
                ("password set", None)
            }
            None => ("unchanged", None),
        },
    };
    let ca_sha256 = hub.pki.fingerprint().to_string();
    drop(hub);
    if let Some(a) = owner
        && effective.data_dir.exists()
    {
        chown_tree(&effective.data_dir, a).with_context(|| {
            format!(
                "cannot give {} to user {}",
                effective.data_dir.display(),
                plan.service_user
            )
        })?;
    }
    Ok(InitOutcome {
        config_path: plan.config_path.clone(),
        credentials_path: plan.credentials_path.clone(),
        admin_user: plan.admin_user.clone(),
        admin_action,
        one_time_password,
        ca_sha256,
        public_address: effective.public_address.clone(),
        http_listen: effective.http.listen,
        owner: owner.map(|_| plan.service_user.clone()),
    })
}

/// The summary and next steps, with the exact commands.
pub fn summary(o: &InitOutcome) -> String {
    let owner = o
        .owner
        .as_deref()
        .map(|u| format!(", owner {u}"))
        .unwrap_or_default();
    let admin = match (&o.one_time_password, o.admin_action) {
        (Some(pw), _) => format!(
            "{} created with the one-time password {pw}\n    (you choose your own at first sign-in)",
            o.admin_user
        ),
        (None, action) => format!("{} ({action})", o.admin_user),
    };
    let url_host = if o.http_listen.ip().is_unspecified() {
        format!("HUB:{}", o.http_listen.port())
    } else {
        o.http_listen.to_string()
    };
    format!(
        "\nWingman hub is set up.\n\
         \n  Settings:     {config}\
         \n  Secrets:      {creds} (mode 0600{owner})\
         \n  Admin:        {admin}\
         \n  Hub CA:       {fp}\
         \n\nNext steps:\
         \n  1. Start the hub now and at every boot:\
         \n       systemctl enable --now wingman-hub\
         \n  2. Create a one-time enrollment token (it prints the exact command for the node):\
         \n       wingman-hub token create --ttl 1h\
         \n  3. On each node, after installing the wingman-agent package:\
         \n       wingman-agent enroll --hub {public} --token <TOKEN> --ca-sha256 {fp}\
         \n       systemctl enable --now wingman-agent\
         \n  4. Sign in at http://{url_host}/ as {user}.\n",
        config = o.config_path.display(),
        creds = o.credentials_path.display(),
        fp = o.ca_sha256,
        public = o.public_address,
        user = o.admin_user,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_checked() {
        assert!(check_public("hub.lan:4433").is_ok());
        assert!(check_public("[::1]:4433").is_ok());
        assert!(check_public("hub.lan").is_err());
        assert!(check_public(":4433").is_err());
        assert!(check_public("hub:0").is_err());
        assert!(check_addr("0.0.0.0:4433").is_ok());
        assert!(check_addr("localhost:4433").is_err());
        assert!(check_provider("openai").is_ok());
        assert!(check_provider("Open AI").is_err());
        assert!(check_user_name("admin").is_ok());
        assert!(check_user_name("a b").is_err());
    }

    #[test]
    fn set_creates_sections_and_refuses_to_replace_a_value_with_one() {
        let mut t = Table::new();
        set(
            &mut t,
            &["llm", "openai", "api_key"],
            Value::String("k".into()),
        )
        .unwrap();
        assert_eq!(get_str(&t, &["llm", "openai", "api_key"]), Some("k"));
        set(&mut t, &["http"], Value::Integer(1)).unwrap();
        assert!(set(&mut t, &["http", "listen"], Value::String("x".into())).is_err());
    }
}
