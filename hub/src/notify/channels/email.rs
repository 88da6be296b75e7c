//! SMTP email through `lettre` (rustls with ring): plain-text body,
//! STARTTLS (default, port 587), implicit TLS (465) or none (25; meant for
//! loopback relays and tests), optional AUTH PLAIN/LOGIN.
//!
//! The server name is resolved and checked by the SSRF guard and lettre is
//! given the checked IP address, while TLS verifies the certificate against
//! the configured host name. Credentials are never sent over an
//! unencrypted connection except to a loopback address.

use std::net::SocketAddr;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::{Deserialize, Serialize};

use super::one_line;
use crate::notify::channel::{Channel, ChannelKind, SMTP_SERVICE, SendError, Sent};
use crate::notify::config::ConfigError;
use crate::notify::egress::{
    AddrClass, Egress, EgressPolicy, classify, connect_detail, resolve_checked, root_cause,
};
use crate::notify::message::Notification;
use crate::notify::secret::{self, Secret};

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No TLS (port 25); only sensible for a loopback relay.
    None,
}

impl SmtpTls {
    fn default_port(self) -> u16 {
        match self {
            Self::Starttls => 587,
            Self::Implicit => 465,
            Self::None => 25,
        }
    }
}

/// `kind = "email"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// Channel name.
    pub name: String,
    /// SMTP server host name or IP.
    pub host: String,
    /// Port (default by `tls`: 587, 465 or 25).
    #[serde(default)]
    pub port: Option<u16>,
    /// `starttls` (default), `implicit` or `none`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// SMTP user.
    #[serde(default)]
    pub username: Option<String>,
    /// SMTP password.
    #[serde(default, serialize_with = "secret::serialize_opt")]
    pub password: Option<Secret>,
    /// Sender, e.g. `Wingman <wingman@example.org>`.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Subject prefix (default `[Wingman]`).
    #[serde(default)]
    pub subject_prefix: Option<String>,
    /// EHLO name (default `wingman.localdomain`).
    #[serde(default)]
    pub hello_name: Option<String>,
    /// Allow a loopback server.
    #[serde(default)]
    pub allow_loopback: bool,
    /// Allow a private-range (LAN) server; off unless the admin allows it.
    #[serde(default)]
    pub allow_private: bool,
}

/// An SMTP email channel.
pub struct EmailChannel {
    name: String,
    host: String,
    port: u16,
    tls: SmtpTls,
    credentials: Option<(String, Secret)>,
    from: Mailbox,
    to: Vec<Mailbox>,
    subject_prefix: String,
    hello_name: String,
    policy: EgressPolicy,
    egress: Egress,
}

impl std::fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailChannel")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("auth", &self.credentials.as_ref().map(|(user, _)| user))
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl EmailChannel {
    /// Validates the config.
    pub fn new(cfg: &EmailConfig, egress: Egress) -> Result<Self, ConfigError> {
        let invalid = |detail: String| ConfigError::Invalid {
            channel: cfg.name.clone(),
            detail,
        };
        let host = cfg.host.trim().to_owned();
        if host.is_empty() || host.contains(['/', ' ', '@']) {
            return Err(invalid("host must be a host name or IP address".to_owned()));
        }
        let from: Mailbox = cfg
            .from
            .parse()
            .map_err(|e| invalid(format!("from address: {e}")))?;
        if cfg.to.is_empty() {
            return Err(invalid("to needs at least one address".to_owned()));
        }
        let to = cfg
            .to
            .iter()
            .map(|t| {
                t.parse::<Mailbox>()
                    .map_err(|e| invalid(format!("to address {t:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let credentials = match (&cfg.username, &cfg.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "SMTP auth needs both username and password".to_owned(),
                ));
            }
        };
        if credentials.is_some() && cfg.tls == SmtpTls::None && !cfg.allow_loopback {
            return Err(invalid(
                "refusing to send the SMTP password without TLS; use tls = \"starttls\" or \"implicit\""
                    .to_owned(),
            ));
        }
        Ok(Self {
            name: cfg.name.clone(),
            host,
            port: cfg.port.unwrap_or(cfg.tls.default_port()),
            tls: cfg.tls,
            credentials,
            from,
            to,
            subject_prefix: cfg
                .subject_prefix
                .clone()
                .unwrap_or_else(|| "[Wingman]".to_owned()),
            hello_name: cfg
                .hello_name
                .clone()
                .unwrap_or_else(|| "wingman.localdomain".to_owned()),
            policy: EgressPolicy {
                allow_loopback: cfg.allow_loopback,
                allow_private: cfg.allow_private,
            },
            egress,
        })
    }

    fn message(&self, n: &Notification) -> Result<Message, SendError> {
        let subject = if self.subject_prefix.is_empty() {
            one_line(&n.title)
        } else {
            format!("{} {}", self.subject_prefix, one_line(&n.title))
        };
        let mut body = wrap_text(&n.body, 76);
        if let Some(url) = &n.url {
            body.push_str("\n\nDashboard: ");
            body.push_str(url);
        }
        body.push('\n');
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder.body(body).map_err(|e| SendError::Config {
            service: SMTP_SERVICE,
            detail: format!("building the message: {e}"),
        })
    }

    async fn send_to(&self, addr: SocketAddr, msg: Message) -> Result<Sent, SendError> {
        let params = || {
            TlsParameters::new(self.host.clone()).map_err(|e| SendError::Config {
                service: SMTP_SERVICE,
                detail: format!("TLS setup: {}", root_cause(&e)),
            })
        };
        let tls = match self.tls {
            SmtpTls::Starttls => Tls::Required(params()?),
            SmtpTls::Implicit => Tls::Wrapper(params()?),
            SmtpTls::None => Tls::None,
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
                .port(addr.port())
                .tls(tls)
                .timeout(Some(self.egress.timeout()))
                .hello_name(ClientId::Domain(self.hello_name.clone()));
        if let Some((user, pass)) = &self.credentials {
            if self.tls == SmtpTls::None && classify(addr.ip()) != AddrClass::Loopback {
                return Err(SendError::Config {
                    service: SMTP_SERVICE,
                    detail:
                        "refusing to send the SMTP password without TLS to a non-loopback address"
                            .to_owned(),
                });
            }
            builder = builder
                .credentials(Credentials::new(user.clone(), pass.expose().to_owned()))
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        let transport = builder.build();
        match transport.send(msg).await {
            Ok(resp) => Ok(Sent {
                status: resp.code().into(),
            }),
            Err(e) => Err(self.map_error(&e)),
        }
    }

    fn map_error(&self, e: &lettre::transport::smtp::Error) -> SendError {
        if let Some(code) = e.status() {
            let code: u16 = code.into();
            let hint = match code {
                530 | 534 | 535 | 538 => "check the username and password",
                552 => "the message is too large for the server",
                550 | 551 | 553 => {
                    "the server refused the sender or a recipient; check from and to"
                }
                554 => "the server rejected the message; check its relay rules for this sender",
                400..=499 => "the server is temporarily unavailable; it will be retried",
                _ => "unexpected answer from the SMTP server",
            };
            let reason = e.source_text().map(|t| one_line(&t)).unwrap_or_default();
            return SendError::Status {
                service: SMTP_SERVICE,
                status: code,
                reason,
                hint: hint.to_owned(),
            };
        }
        if e.is_timeout() {
            return SendError::Timeout {
                service: SMTP_SERVICE,
                secs: self.egress.timeout().as_secs_f64(),
            };
        }
        let detail = connect_detail(e);
        if e.is_tls() && !detail.starts_with("TLS failed") {
            return SendError::Connect {
                service: SMTP_SERVICE,
                host: self.host.clone(),
                detail: format!("TLS failed: {detail}"),
            };
        }
        if e.is_client() && detail.contains("authentication mechanism") {
            return SendError::Config {
                service: SMTP_SERVICE,
                detail: "the server offers no PLAIN or LOGIN authentication (does it need STARTTLS first?)"
                    .to_owned(),
            };
        }
        SendError::Connect {
            service: SMTP_SERVICE,
            host: self.host.clone(),
            detail,
        }
    }
}

trait SourceText {
    fn source_text(&self) -> Option<String>;
}

impl SourceText for lettre::transport::smtp::Error {
    fn source_text(&self) -> Option<String> {
        std::error::Error::source(self).map(|s| s.to_string())
    }
}

/// Wraps lines longer than `width` at spaces (plain-text email convention;
/// keeps short lines so the body stays 7-bit clean when it is ASCII).
pub(crate) fn wrap_text(text: &str, width: usize) -> String {
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut len = 0usize;
        for (j, word) in line.split(' ').enumerate() {
            let wlen = word.chars().count();
            if j > 0 {
                if len + 1 + wlen > width && len > 0 {
                    out.push('\n');
                    len = 0;
                } else {
                    out.push(' ');
                    len += 1;
                }
            }
            out.push_str(word);
            len += wlen;
        }
    }
    out
}

#[async_trait]
impl Channel for EmailChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ChannelKind {
        ChannelKind::Email
    }

    async fn send(&self, n: &Notification) -> Result<Sent, SendError> {
        let target = resolve_checked(&self.host, self.port, self.policy).await?;
        let msg = self.message(n)?;
        let mut last = None;
        for addr in &target.addrs {
            match self.send_to(*addr, msg.clone()).await {
                Ok(sent) => return Ok(sent),
                Err(e @ SendError::Connect { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(SendError::Connect {
            service: SMTP_SERVICE,
            host: self.host.clone(),
            detail: "no address to connect to".to_owned(),
        }))
    }
}
