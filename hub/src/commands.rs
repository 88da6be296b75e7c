//! The operations behind the CLI subcommands (`token create`, `agent list`,
//! `agent revoke`, `user add`, `apikey create`) and `quickstart`. They work on
//! the hub's store directly, so they also work while the hub runs; the running
//! hub picks up revocations within a second.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::auth;
use crate::store::{ApiKeyRow, NewToken, StoreError, UserRow};
use crate::{Hub, HubConfig, Listeners};

/// Parses a duration like `90s`, `15m`, `1h`, `7d` or plain seconds.
pub fn parse_ttl(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('d') => (&s[..s.len() - 1], 86_400),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("invalid duration {s:?}; use e.g. 30m, 1h or 7d"))?;
    if n == 0 {
        bail!("duration must be greater than zero");
    }
    n.checked_mul(mult)
        .with_context(|| format!("duration {s:?} is too large"))
}

/// A created enrollment token and how to use it.
#[derive(Debug, Serialize)]
pub struct TokenInfo {
    /// The one-time token.
    pub token: String,
    /// Expiry, ms.
    pub expires_at: i64,
    /// The CA fingerprint to pin.
    pub ca_sha256: String,
    /// The hub address agents should dial.
    pub hub: String,
    /// The exact command to run on the node.
    pub command: String,
}

/// Creates a one-time enrollment token valid for `ttl_secs`.
pub async fn create_token(hub: &Hub, ttl_secs: u64, hub_addr: &str) -> anyhow::Result<TokenInfo> {
    let minted = auth::mint_token();
    let now = wingman_agent::now_ms();
    let expires_at = now + i64::try_from(ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX / 2);
    hub.store
        .create_enrollment_token(&NewToken {
            id: minted.id.clone(),
            secret_hash: minted.secret_hash.clone(),
            created_at: now,
            expires_at,
        })
        .await
        .context("failed to store the token")?;
    let fp = hub.pki.fingerprint().to_string();
    Ok(TokenInfo {
        command: format!(
            "wingman-agent enroll --hub {hub_addr} --token {} --ca-sha256 {fp}",
            minted.token
        ),
        token: minted.token,
        expires_at,
        ca_sha256: fp,
        hub: hub_addr.to_string(),
    })
}

/// Adds a user.
pub async fn add_user(
    hub: &Hub,
    name: &str,
    password: &str,
    role: &str,
    must_change: bool,
) -> anyhow::Result<()> {
    let name = name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
    {
        bail!("user names are 1-64 characters of letters, digits, '.', '_', '-' or '@'");
    }
    if !["admin", "operator", "viewer"].contains(&role) {
        bail!("role must be admin, operator or viewer");
    }
    auth::check_new_password(password).map_err(anyhow::Error::msg)?;
    let hash = auth::hash_password(password).map_err(anyhow::Error::msg)?;
    let user = UserRow {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.to_string(),
        password_hash: hash,
        role: role.to_string(),
        must_change_password: must_change,
    };
    match hub.store.create_user(&user, wingman_agent::now_ms()).await {
        Ok(()) => Ok(()),
        Err(StoreError::Conflict) => bail!("a user named {name:?} already exists"),
        Err(e) => Err(e).context("failed to store the user"),
    }
}

/// Creates an API key for `user`; returns the key (shown once).
pub async fn create_api_key(
    hub: &Hub,
    name: &str,
    user: &str,
    ttl_days: u32,
) -> anyhow::Result<String> {
    if name.trim().is_empty() || name.len() > 64 {
        bail!("the key name must be 1-64 characters");
    }
    let Some(owner) = hub.store.user_by_name(user).await? else {
        bail!("no user named {user:?}; create one with `wingman-hub user add`");
    };
    let (key, hash) = auth::mint_api_key();
    let now = wingman_agent::now_ms();
    hub.store
        .create_api_key(&ApiKeyRow {
            id: uuid::Uuid::now_v7().to_string(),
            name: name.trim().to_string(),
            key_hash: hash,
            user_id: owner.id,
            created_at: now,
            expires_at: now + i64::from(ttl_days.max(1)) * 86_400_000,
            revoked_at: None,
        })
        .await
        .context("failed to store the API key")?;
    Ok(key)
}

/// Revokes an agent; the running hub closes its connection within a second.
pub async fn revoke_agent(hub: &Hub, id: &str) -> anyhow::Result<()> {
    if hub.store.get_agent(id).await?.is_none() {
        bail!("no agent with id {id}; see `wingman-hub agent list`");
    }
    if !hub.store.revoke_agent(id, wingman_agent::now_ms()).await? {
        bail!("agent {id} is already revoked");
    }
    hub.registry.revoke(id);
    Ok(())
}

/// What quickstart prints.
#[derive(Debug)]
pub struct QuickstartInfo {
    /// Dashboard URL.
    pub url: String,
    /// Admin user name.
    pub user: String,
    /// One-time password, when one was created.
    pub password: Option<String>,
    /// The enrolled local agent's id.
    pub agent_id: String,
}

/// Starts the hub on SQLite in `config.data_dir`, enrolls an agent for this
/// machine through the real token + CSR + mutual-TLS path over loopback, and
/// runs both until `shutdown`. `ready` receives what to print once it is up.
pub async fn quickstart(
    config: HubConfig,
    shutdown: CancellationToken,
    ready: impl FnOnce(&QuickstartInfo),
) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&config).await?;
    let quic_addr = listeners.quic_addr()?;
    let http_addr = listeners.http_addr()?;
    let hub = Hub::open(config.clone()).await?;

    let user = "admin".to_string();
    let password = match hub.store.user_by_name(&user).await? {
        None => {
            let pw = auth::random_secret(12);
            add_user(&hub, &user, &pw, "admin", true).await?;
            Some(pw)
        }
        Some(u) if u.must_change_password => {
            // The previous one-time password was never used; issue a new one.
            let pw = auth::random_secret(12);
            let hash = auth::hash_password(&pw).map_err(anyhow::Error::msg)?;
            hub.store.set_password(&u.id, &hash, true).await?;
            Some(pw)
        }
        Some(_) => None,
    };

    let hub_task = tokio::spawn(crate::run(hub.clone(), listeners, shutdown.clone()));

    let agent_dir: PathBuf = config.data_dir.join("agent");
    let local_quic = loopback(quic_addr);
    if !wingman_agent::enroll::is_enrolled(&agent_dir) {
        let token = create_token(&hub, 600, &local_quic.to_string()).await?;
        let opts = wingman_agent::enroll::EnrollOptions {
            hub: local_quic.to_string(),
            token: token.token,
            ca_sha256: token.ca_sha256,
            state_dir: agent_dir.clone(),
            force: false,
            host_kind: wingman_agent::facts::detect_kind(std::path::Path::new("/")),
            hostname: sysinfo::System::host_name().unwrap_or_else(|_| "localhost".into()),
        };
        wingman_agent::enroll::enroll(&opts)
            .await
            .context("failed to enroll the local agent")?;
    }
    let mut agent_cfg = wingman_agent::AgentConfig {
        state_dir: agent_dir.clone(),
        hub: Some(local_quic.to_string()),
        ..Default::default()
    };
    agent_cfg.facts.sample_interval_ms = 5_000;
    let identity = wingman_agent::state::Identity::load(&agent_dir)?;
    let kind = wingman_agent::facts::detect_kind(std::path::Path::new("/"));
    let stats = Arc::new(Mutex::new(wingman_agent::LinkStats::default()));
    let agent_task = tokio::spawn(wingman_agent::run(agent_cfg, kind, stats, shutdown.clone()));

    ready(&QuickstartInfo {
        url: format!("http://{}/", loopback(http_addr)),
        user,
        password,
        agent_id: identity.enrollment.agent_id,
    });
    let (hub_res, agent_res) = tokio::join!(hub_task, agent_task);
    hub_res.context("hub task failed")??;
    agent_res.context("agent task failed")??;
    Ok(())
}

fn loopback(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip: std::net::IpAddr = if addr.is_ipv6() {
            std::net::Ipv6Addr::LOCALHOST.into()
        } else {
            std::net::Ipv4Addr::LOCALHOST.into()
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert_eq!(parse_ttl("15m").unwrap(), 900);
        assert_eq!(parse_ttl("1h").unwrap(), 3600);
        assert_eq!(parse_ttl("7d").unwrap(), 604_800);
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("-1h").is_err());
        assert!(parse_ttl("99999999999999999999d").is_err());
    }
}
