//! The hardened outbound client every notification goes through (SSRF
//! guard, security design §4.2 "Outbound requests"):
//!
//! * only `http` and `https` URLs, no user-info in the URL;
//! * the host is resolved once and **every** address is checked: link-local
//!   (`169.254.0.0/16`, `fe80::/10`, incl. the `169.254.169.254` and
//!   `fd00:ec2::254` metadata services), unspecified, multicast, broadcast
//!   and reserved addresses are always refused; loopback only with
//!   `allow_loopback = true`; private ranges (RFC 1918, CGNAT
//!   `100.64.0.0/10`, IPv6 ULA) unless `allow_private = false`. IPv4-mapped,
//!   IPv4-compatible, NAT64 and 6to4 IPv6 forms are judged by the IPv4
//!   address they carry; numeric host encodings (`http://2130706433/`) are
//!   normalised by the URL parser first;
//! * the connection goes to the checked addresses only: the request's client
//!   pins them with `reqwest::ClientBuilder::resolve_to_addrs`, so a second
//!   DNS answer (rebinding) is never used;
//! * redirects are not followed, proxies from the environment are ignored,
//!   and requests have connect and total timeouts;
//! * TLS is rustls with the ring provider and the platform verifier.
//!
//! Error texts name the host only, never the URL: Discord and Slack webhook
//! URLs carry their secret in the path.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};
use rustls_platform_verifier::BuilderVerifierExt;
use serde::{Deserialize, Serialize};

use super::channel::SendError;

/// Default total request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which address classes a channel may reach besides public addresses
/// (by default neither: the admin allows them per channel).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressPolicy {
    /// Allow `127.0.0.0/8` and `::1` (off by default; for tests and
    /// services on the hub host itself).
    pub allow_loopback: bool,
    /// Allow RFC 1918, CGNAT and IPv6 ULA addresses (off unless the admin
    /// sets it on the channel; a homelab ntfy or Gotify on the LAN needs it).
    pub allow_private: bool,
}

/// What kind of address an IP is, for the SSRF decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrClass {
    /// Globally routable (or at least not special).
    Public,
    /// RFC 1918, CGNAT (`100.64.0.0/10`), IPv6 ULA or site-local.
    Private,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// A cloud instance-metadata address (`169.254.169.254`, `fd00:ec2::254`).
    CloudMetadata,
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `240.0.0.0/4`.
    Reserved,
}

impl AddrClass {
    /// Why an address of this class is refused, as the tail of a sentence.
    fn refusal(self) -> &'static str {
        match self {
            Self::Public => "it is a public address",
            Self::Private => {
                "it is a private (LAN) address and this channel has allow_private = false"
            }
            Self::Loopback => {
                "it is a loopback address; set allow_loopback = true on this channel to allow it"
            }
            Self::LinkLocal => "it is a link-local address, which is never allowed",
            Self::CloudMetadata => "it is a cloud metadata address, which is never allowed",
            Self::Unspecified => "it is an unspecified address, which is never allowed",
            Self::Multicast => "it is a multicast address, which is never allowed",
            Self::Broadcast => "it is a broadcast address, which is never allowed",
            Self::Reserved => "it is a reserved address, which is never allowed",
        }
    }
}

/// Why an outbound URL or host was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    /// The URL did not parse.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// Not http or https.
    #[error("refused URL scheme \"{scheme}\": only http and https are allowed")]
    Scheme {
        /// The scheme found.
        scheme: String,
    },
    /// `user:pass@` in the URL.
    #[error(
        "refused URL with a user name or password in it: put credentials in the channel settings"
    )]
    Userinfo,
    /// No host in the URL.
    #[error("URL has no host")]
    NoHost,
    /// DNS failed.
    #[error("could not resolve {host}: {detail}")]
    Resolve {
        /// Host name.
        host: String,
        /// Resolver message.
        detail: String,
    },
    /// DNS returned nothing.
    #[error("{host} resolved to no address")]
    NoAddress {
        /// Host name.
        host: String,
    },
    /// An address the policy forbids.
    #[error("refused to connect to {host} ({ip}): {}", class.refusal())]
    Forbidden {
        /// Host as written.
        host: String,
        /// The offending address.
        ip: IpAddr,
        /// Its class.
        class: AddrClass,
    },
}

/// Classifies an address.
pub fn classify(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(v4: Ipv4Addr) -> AddrClass {
    let o = v4.octets();
    if o[0] == 0 {
        AddrClass::Unspecified
    } else if v4.is_broadcast() {
        AddrClass::Broadcast
    } else if v4.is_loopback() {
        AddrClass::Loopback
    } else if v4 == Ipv4Addr::new(169, 254, 169, 254) {
        AddrClass::CloudMetadata
    } else if v4.is_link_local() {
        AddrClass::LinkLocal
    } else if v4.is_multicast() {
        AddrClass::Multicast
    } else if o[0] >= 240 {
        AddrClass::Reserved
    } else if v4.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
        AddrClass::Private
    } else {
        AddrClass::Public
    }
}

fn embedded_v4(hi: u16, lo: u16) -> Ipv4Addr {
    let [a, b] = hi.to_be_bytes();
    let [c, d] = lo.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

fn classify_v6(v6: Ipv6Addr) -> AddrClass {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = v6.segments();
    if v6.is_unspecified() {
        AddrClass::Unspecified
    } else if v6.is_loopback() {
        AddrClass::Loopback
    } else if s == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254] {
        AddrClass::CloudMetadata
    } else if (s[0] & 0xffc0) == 0xfe80 {
        AddrClass::LinkLocal
    } else if (s[0] & 0xff00) == 0xff00 {
        AddrClass::Multicast
    } else if s[..6] == [0; 6] {
        // Deprecated IPv4-compatible form ::a.b.c.d.
        classify_v4(embedded_v4(s[6], s[7]))
    } else if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        // NAT64 well-known prefix 64:ff9b::/96.
        classify_v4(embedded_v4(s[6], s[7]))
    } else if s[0] == 0x2002 {
        // 6to4 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
        classify_v4(embedded_v4(s[1], s[2]))
    } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfec0 {
        AddrClass::Private
    } else {
        AddrClass::Public
    }
}

/// Whether `policy` lets a channel reach `ip`; the refused class otherwise.
pub fn check_ip(ip: IpAddr, policy: EgressPolicy) -> Result<(), AddrClass> {
    match classify(ip) {
        AddrClass::Public => Ok(()),
        AddrClass::Private if policy.allow_private => Ok(()),
        AddrClass::Loopback if policy.allow_loopback => Ok(()),
        class => Err(class),
    }
}

/// A checked destination: the connection must go to `addrs` only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host as written in the URL (no brackets for IPv6).
    pub host: String,
    /// Whether `host` is a DNS name (and so needs pinning).
    pub is_domain: bool,
    /// Every resolved address, all allowed by the policy.
    pub addrs: Vec<SocketAddr>,
}

/// Parses `raw` and refuses anything but http(s) without user-info.
pub fn parse_url(raw: &str) -> Result<Url, SsrfError> {
    let url = Url::parse(raw).map_err(|e| SsrfError::InvalidUrl(e.to_string()))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(SsrfError::Scheme {
                scheme: other.to_owned(),
            });
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SsrfError::Userinfo);
    }
    if url.host().is_none() {
        return Err(SsrfError::NoHost);
    }
    Ok(url)
}

/// Checks a URL's scheme and resolves and checks its host.
pub async fn check_url(url: &Url, policy: EgressPolicy) -> Result<Target, SsrfError> {
    let url = parse_url(url.as_str())?;
    let port = url.port_or_known_default().unwrap_or(443);
    // `host_str` is normalised by the WHATWG parser: numeric IPv4 forms
    // become dotted quads and IPv6 literals keep their brackets.
    let host = url.host_str().ok_or(SsrfError::NoHost)?;
    resolve_checked(host, port, policy).await
}

fn check_literal(
    host: String,
    ip: IpAddr,
    port: u16,
    policy: EgressPolicy,
) -> Result<Target, SsrfError> {
    check_ip(ip, policy).map_err(|class| SsrfError::Forbidden {
        host: host.clone(),
        ip,
        class,
    })?;
    Ok(Target {
        host,
        is_domain: false,
        addrs: vec![SocketAddr::new(ip, port)],
    })
}

/// Resolves `host` (a name or an IP literal, IPv6 with or without brackets)
/// and checks every address. Refuses the whole host if any address is
/// forbidden, so a mixed answer cannot smuggle in an internal address.
pub async fn resolve_checked(
    host: &str,
    port: u16,
    policy: EgressPolicy,
) -> Result<Target, SsrfError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return check_literal(bare.to_owned(), ip, port, policy);
    }
    if bare.is_empty() {
        return Err(SsrfError::NoHost);
    }
    let found = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| SsrfError::Resolve {
            host: bare.to_owned(),
            detail: e.to_string(),
        })?;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for addr in found {
        check_ip(addr.ip(), policy).map_err(|class| SsrfError::Forbidden {
            host: bare.to_owned(),
            ip: addr.ip(),
            class,
        })?;
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(SsrfError::NoAddress {
            host: bare.to_owned(),
        });
    }
    Ok(Target {
        host: bare.to_owned(),
        is_domain: true,
        addrs,
    })
}

/// Errors setting up the egress client.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// rustls or the platform verifier refused the configuration.
    #[error("TLS setup for outbound notifications failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// Shared outbound HTTP settings: TLS configuration and timeouts. Cheap to
/// clone. Each request builds a short-lived client pinned to the addresses
/// checked for that request.
#[derive(Clone)]
pub struct Egress {
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    connect_timeout: Duration,
}

impl fmt::Debug for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Egress")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl Egress {
    /// rustls with the ring provider and the platform's trust store.
    pub fn new() -> Result<Self, EgressError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_platform_verifier()?
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: Arc::new(tls),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        })
    }

    /// Replaces the total and connect timeouts.
    pub fn with_timeouts(mut self, timeout: Duration, connect_timeout: Duration) -> Self {
        self.timeout = timeout;
        self.connect_timeout = connect_timeout;
        self
    }

    /// The total request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// POSTs `body` to `url` after the SSRF check, pinned to the checked
    /// addresses. Returns the status; the response body is discarded (never
    /// shown back to the user).
    pub(crate) async fn post(
        &self,
        service: &'static str,
        policy: EgressPolicy,
        url: &Url,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<StatusCode, SendError> {
        let target = check_url(url, policy).await?;
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured((*self.tls).clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .no_proxy()
            .pool_max_idle_per_host(0)
            .user_agent(concat!("wingman-hub/", env!("CARGO_PKG_VERSION")));
        if target.is_domain {
            builder = builder.resolve_to_addrs(&target.host, &target.addrs);
        }
        let client = builder.build().map_err(|e| SendError::Config {
            service,
            detail: format!("HTTP client: {}", root_cause(&e.without_url())),
        })?;
        tracing::debug!(service, host = %target.host, addrs = ?target.addrs, "notification POST");
        let resp = client
            .post(url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| self.map_error(service, &target.host, e))?;
        Ok(resp.status())
    }

    fn map_error(&self, service: &'static str, host: &str, e: reqwest::Error) -> SendError {
        let e = e.without_url();
        if e.is_timeout() {
            return SendError::Timeout {
                service,
                secs: self.timeout.as_secs_f64(),
            };
        }
        let detail = connect_detail(&e);
        if e.is_connect() || is_tls_error(&e) {
            SendError::Connect {
                service,
                host: host.to_owned(),
                detail,
            }
        } else {
            SendError::Transport { service, detail }
        }
    }
}

/// Whether a rustls error is somewhere in the chain (also inside an
/// `io::Error`).
pub(crate) fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.is::<rustls::Error>() {
        return true;
    }
    // `io::Error::source` skips the wrapped error itself, so look inside.
    if let Some(io) = e.downcast_ref::<std::io::Error>()
        && let Some(inner) = io.get_ref()
        && is_tls_error(inner)
    {
        return true;
    }
    e.source().is_some_and(is_tls_error)
}

/// Connection failure text, with a hint for TLS failures.
pub(crate) fn connect_detail(e: &(dyn std::error::Error + 'static)) -> String {
    let detail = root_cause(e);
    if is_tls_error(e) {
        format!("TLS failed: {detail} (self-signed, expired or wrong-host certificate?)")
    } else {
        detail
    }
}

/// The innermost error message in a chain (no URL: callers strip it).
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let cases: &[(&str, AddrClass)] = &[
            ("8.8.8.8", AddrClass::Public),
            ("192.168.1.10", AddrClass::Private),
            ("10.0.0.1", AddrClass::Private),
            ("172.16.5.4", AddrClass::Private),
            ("100.100.1.1", AddrClass::Private),
            ("127.0.0.1", AddrClass::Loopback),
            ("127.8.9.10", AddrClass::Loopback),
            ("169.254.169.254", AddrClass::CloudMetadata),
            ("169.254.1.1", AddrClass::LinkLocal),
            ("0.0.0.0", AddrClass::Unspecified),
            ("0.1.2.3", AddrClass::Unspecified),
            ("224.0.0.251", AddrClass::Multicast),
            ("255.255.255.255", AddrClass::Broadcast),
            ("250.1.1.1", AddrClass::Reserved),
            ("::1", AddrClass::Loopback),
            ("::", AddrClass::Unspecified),
            ("fe80::1", AddrClass::LinkLocal),
            ("febf::1", AddrClass::LinkLocal),
            ("ff02::1", AddrClass::Multicast),
            ("fd00:ec2::254", AddrClass::CloudMetadata),
            ("fd12:3456::1", AddrClass::Private),
            ("::ffff:169.254.169.254", AddrClass::CloudMetadata),
            ("::ffff:127.0.0.1", AddrClass::Loopback),
            ("::127.0.0.1", AddrClass::Loopback),
            ("64:ff9b::a9fe:a9fe", AddrClass::CloudMetadata),
            ("2002:a9fe:a9fe::1", AddrClass::CloudMetadata),
            ("2002:0808:0808::1", AddrClass::Public),
            ("2606:4700::1111", AddrClass::Public),
        ];
        for (ip, want) in cases {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(classify(parsed), *want, "{ip}");
        }
    }

    #[test]
    fn policy_table() {
        let strict = EgressPolicy {
            allow_loopback: false,
            allow_private: false,
        };
        let lab = EgressPolicy {
            allow_loopback: false,
            allow_private: true,
        };
        assert_eq!(EgressPolicy::default(), strict);
        let local = EgressPolicy {
            allow_loopback: true,
            allow_private: true,
        };
        let cases: &[(&str, EgressPolicy, bool)] = &[
            ("192.168.1.2", lab, true),
            ("192.168.1.2", strict, false),
            ("127.0.0.1", lab, false),
            ("127.0.0.1", local, true),
            ("169.254.169.254", local, false),
            ("fe80::1", local, false),
            ("1.1.1.1", strict, true),
        ];
        for (ip, policy, ok) in cases {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(check_ip(parsed, *policy).is_ok(), *ok, "{ip} {policy:?}");
        }
    }

    #[test]
    fn url_scheme_and_userinfo() {
        assert!(matches!(
            parse_url("file:///etc/passwd"),
            Err(SsrfError::Scheme { .. })
        ));
        assert!(matches!(
            parse_url("gopher://x/"),
            Err(SsrfError::Scheme { .. })
        ));
        assert_eq!(
            parse_url("https://u:p@ntfy.example/"),
            Err(SsrfError::Userinfo)
        );
        assert!(parse_url("https://ntfy.example/topic").is_ok());
    }
}
