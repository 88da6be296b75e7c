//! The SSRF guard: refused destinations never get a connection and the
//! message says why; loopback works only with `allow_loopback = true`.

use super::common::{channel, egress, recording_server, sample};
use super::subject::egress::{AddrClass, check_url, parse_url};
use super::subject::{ChannelConfig, EgressPolicy, SendError, Severity, SsrfError, Transition};

fn ntfy(server: &str, extra: &str) -> std::sync::Arc<dyn super::subject::Channel> {
    channel(&format!(
        "kind = \"ntfy\"\nname = \"phone\"\nserver = \"{server}\"\ntopic = \"t\"\n{extra}"
    ))
}

async fn refused(server: &str, extra: &str) -> SsrfError {
    let err = ntfy(server, extra)
        .send(&sample(Severity::Warning, Transition::Opened))
        .await
        .unwrap_err();
    match err {
        SendError::Blocked(e) => e,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test]
async fn cloud_metadata_refused() {
    let e = refused("http://169.254.169.254", "allow_loopback = true").await;
    assert_eq!(
        e.to_string(),
        "refused to connect to 169.254.169.254 (169.254.169.254): it is a cloud metadata address, which is never allowed"
    );
    let e = refused("http://169.254.10.1:8080", "").await;
    assert!(matches!(
        e,
        SsrfError::Forbidden {
            class: AddrClass::LinkLocal,
            ..
        }
    ));
    let e = refused("http://[::ffff:169.254.169.254]", "").await;
    assert!(matches!(
        e,
        SsrfError::Forbidden {
            class: AddrClass::CloudMetadata,
            ..
        }
    ));
}

#[tokio::test]
async fn ipv6_link_local_refused() {
    let e = refused("http://[fe80::1]:8080", "allow_loopback = true").await;
    assert_eq!(
        e.to_string(),
        "refused to connect to fe80::1 (fe80::1): it is a link-local address, which is never allowed"
    );
}

#[tokio::test]
async fn loopback_needs_the_flag() {
    let (addr, rec) = recording_server("/t").await;
    let e = refused(&format!("http://{addr}"), "").await;
    assert_eq!(
        e.to_string(),
        "refused to connect to 127.0.0.1 (127.0.0.1): it is a loopback address; set allow_loopback = true on this channel to allow it"
    );
    // Decimal and IPv6 spellings of loopback too.
    let e = refused(&format!("http://2130706433:{}", addr.port()), "").await;
    assert!(
        matches!(
            e,
            SsrfError::Forbidden {
                class: AddrClass::Loopback,
                ..
            }
        ),
        "{e}"
    );
    let e = refused(&format!("http://[::1]:{}", addr.port()), "").await;
    assert!(
        matches!(
            e,
            SsrfError::Forbidden {
                class: AddrClass::Loopback,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        rec.requests().is_empty(),
        "a refused request reached the server"
    );

    ntfy(&format!("http://{addr}"), "allow_loopback = true")
        .send(&sample(Severity::Warning, Transition::Opened))
        .await
        .unwrap();
    assert_eq!(rec.requests().len(), 1);
}

#[tokio::test]
async fn hostname_resolving_to_loopback_refused_then_allowed() {
    let (addr, rec) = recording_server("/t").await;
    let url = format!("http://localhost:{}", addr.port());
    let e = refused(&url, "").await;
    let msg = e.to_string();
    assert!(
        msg.starts_with("refused to connect to localhost ("),
        "{msg}"
    );
    assert!(
        msg.ends_with("set allow_loopback = true on this channel to allow it"),
        "{msg}"
    );
    assert!(rec.requests().is_empty());
    ntfy(&url, "allow_loopback = true")
        .send(&sample(Severity::Warning, Transition::Opened))
        .await
        .unwrap();
    assert_eq!(rec.requests().len(), 1);
}

#[tokio::test]
async fn private_ranges_follow_allow_private() {
    let strict = EgressPolicy {
        allow_loopback: false,
        allow_private: false,
    };
    let url = parse_url("http://192.168.1.10:8080/").unwrap();
    let e = check_url(&url, strict).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "refused to connect to 192.168.1.10 (192.168.1.10): it is a private (LAN) address and this channel has allow_private = false"
    );
    // Refused by default: the admin must allow it on the channel.
    assert!(check_url(&url, EgressPolicy::default()).await.is_err());
    // Allowed when allow_private is set (no connection is made by check_url).
    let lan = EgressPolicy {
        allow_loopback: false,
        allow_private: true,
    };
    let t = check_url(&url, lan).await.unwrap();
    assert_eq!(t.addrs, vec!["192.168.1.10:8080".parse().unwrap()]);
    assert!(!t.is_domain);
    // Unspecified, multicast and broadcast are never allowed.
    let all = EgressPolicy {
        allow_loopback: true,
        allow_private: true,
    };
    for (u, class) in [
        ("http://0.0.0.0/", AddrClass::Unspecified),
        ("http://[::]/", AddrClass::Unspecified),
        ("http://224.0.0.1/", AddrClass::Multicast),
        ("http://255.255.255.255/", AddrClass::Broadcast),
        ("http://[fd00:ec2::254]/", AddrClass::CloudMetadata),
    ] {
        let e = check_url(&parse_url(u).unwrap(), all).await.unwrap_err();
        assert!(
            matches!(e, SsrfError::Forbidden { class: c, .. } if c == class),
            "{u}: {e}"
        );
    }
}

#[tokio::test]
async fn resolved_name_is_pinned() {
    let t = check_url(
        &parse_url("http://localhost:9/x").unwrap(),
        EgressPolicy {
            allow_loopback: true,
            allow_private: false,
        },
    )
    .await
    .unwrap();
    assert!(t.is_domain);
    assert_eq!(t.host, "localhost");
    assert!(!t.addrs.is_empty());
    assert!(
        t.addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 9)
    );
}

#[test]
fn non_http_schemes_refused_at_config_time() {
    for (server, want) in [
        (
            "file:///etc/passwd",
            "refused URL scheme \"file\": only http and https are allowed",
        ),
        (
            "ftp://files.lab/",
            "refused URL scheme \"ftp\": only http and https are allowed",
        ),
        (
            "https://user:pw@ntfy.lab/",
            "refused URL with a user name or password in it",
        ),
    ] {
        let cfg: ChannelConfig = toml::from_str(&format!(
            "kind = \"ntfy\"\nname = \"phone\"\nserver = \"{server}\"\ntopic = \"t\""
        ))
        .unwrap();
        let err = cfg.build(&egress()).unwrap_err().to_string();
        assert!(
            err.starts_with("notification channel \"phone\": server: "),
            "{err}"
        );
        assert!(err.contains(want), "{err}");
        assert!(!err.contains("pw@"), "{err}");
    }
    assert!(matches!(
        parse_url("file:///etc/passwd"),
        Err(SsrfError::Scheme { .. })
    ));
}

#[tokio::test]
async fn secret_url_never_in_errors() {
    // Nothing listens on loopback port 1: connection refused.
    let ch = channel(
        r#"kind = "discord"
name = "d"
webhook_url = "http://127.0.0.1:1/api/webhooks/1/SUPERSECRETTOKEN"
allow_loopback = true"#,
    );
    let err = ch
        .send(&sample(Severity::Warning, Transition::Opened))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SendError::Connect { .. }), "{msg}");
    assert!(
        msg.starts_with("could not connect to Discord at 127.0.0.1"),
        "{msg}"
    );
    assert!(!msg.contains("SUPERSECRETTOKEN"), "{msg}");
    assert!(err.is_retryable());
}
