//! SMTP email against a tiny loopback SMTP server (220, EHLO, optional
//! AUTH PLAIN, MAIL/RCPT/DATA, 354, dot-terminated data, 250, QUIT).

use std::net::SocketAddr;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::common::{channel, sample};
use super::subject::{ChannelKind, Severity, Transition};

/// One SMTP session as the server saw it.
#[derive(Debug, Default, Clone)]
struct Session {
    ehlo: String,
    auth: Option<(String, String)>,
    mail_from: String,
    rcpt_to: Vec<String>,
    /// DATA lines exactly as on the wire (still dot-stuffed), CRLF-joined.
    raw: String,
    /// DATA after removing dot-stuffing.
    data: String,
}

#[derive(Clone, Copy)]
enum AuthMode {
    None,
    Accept,
    Reject,
}

async fn smtp_server(auth: AuthMode) -> (SocketAddr, mpsc::UnboundedReceiver<Session>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                let mut s = Session::default();
                w.write_all(b"220 test.local ESMTP ready\r\n")
                    .await
                    .unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO ") {
                        s.ehlo = line[5..].to_owned();
                        match auth {
                            AuthMode::None => b"250 test.local\r\n",
                            _ => b"250-test.local\r\n250 AUTH PLAIN\r\n",
                        }
                    } else if upper.starts_with("AUTH PLAIN ") {
                        let raw = base64::engine::general_purpose::STANDARD
                            .decode(line[11..].trim())
                            .unwrap();
                        let parts: Vec<String> = raw
                            .split(|b| *b == 0)
                            .map(|p| String::from_utf8_lossy(p).into_owned())
                            .collect();
                        s.auth = Some((parts[1].clone(), parts[2].clone()));
                        match auth {
                            AuthMode::Reject => b"535 5.7.8 Authentication credentials invalid\r\n",
                            _ => b"235 2.7.0 Authentication successful\r\n",
                        }
                    } else if upper.starts_with("MAIL FROM:") {
                        s.mail_from = line[10..].to_owned();
                        b"250 2.1.0 OK\r\n"
                    } else if upper.starts_with("RCPT TO:") {
                        s.rcpt_to.push(line[8..].to_owned());
                        b"250 2.1.5 OK\r\n"
                    } else if upper == "DATA" {
                        w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                            .await
                            .unwrap();
                        let mut raw = Vec::new();
                        let mut data = Vec::new();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            data.push(l.strip_prefix('.').unwrap_or(&l).to_owned());
                            raw.push(l);
                        }
                        s.raw = raw.join("\r\n");
                        s.data = data.join("\r\n");
                        b"250 2.0.0 queued as 1234\r\n"
                    } else if upper == "QUIT" {
                        w.write_all(b"221 2.0.0 bye\r\n").await.unwrap();
                        break;
                    } else if upper == "RSET" || upper == "NOOP" {
                        b"250 OK\r\n"
                    } else {
                        b"502 5.5.2 command not recognized\r\n"
                    };
                    w.write_all(reply).await.unwrap();
                }
                let _ = tx.send(s);
            });
        }
    });
    (addr, rx)
}

fn header<'a>(data: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("{name}: ");
    data.split("\r\n")
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix(prefix.as_str()))
}

fn body(data: &str) -> &str {
    data.split_once("\r\n\r\n").map(|(_, b)| b).unwrap()
}

#[tokio::test]
async fn plain_email_with_dot_stuffing() {
    let (addr, mut rx) = smtp_server(AuthMode::None).await;
    let ch = channel(&format!(
        r#"kind = "email"
name = "mail"
host = "127.0.0.1"
port = {}
tls = "none"
from = "Wingman <wingman@lab.example>"
to = ["ops@lab.example", "me@lab.example"]
allow_loopback = true"#,
        addr.port()
    ));
    assert_eq!(ch.kind(), ChannelKind::Email);
    let mut n = sample(Severity::Critical, Transition::Opened);
    n.body = "Severity: critical | Nodes: pve1\n\nThe pool is full.\n.hidden line starting with a dot\n..two dots\n.".to_owned();
    let sent = ch.send(&n).await.unwrap();
    assert_eq!(sent.status, 250);

    let s = rx.recv().await.unwrap();
    assert_eq!(s.ehlo, "wingman.localdomain");
    assert_eq!(s.mail_from, "<wingman@lab.example>");
    assert_eq!(s.rcpt_to, vec!["<ops@lab.example>", "<me@lab.example>"]);
    assert!(s.auth.is_none());
    assert_eq!(
        header(&s.data, "From"),
        Some("Wingman <wingman@lab.example>")
    );
    assert_eq!(
        header(&s.data, "To"),
        Some("ops@lab.example, me@lab.example")
    );
    assert_eq!(
        header(&s.data, "Subject"),
        Some("[Wingman] Opened: Disk almost full on pve1")
    );
    assert_eq!(
        header(&s.data, "Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    // Dot-stuffing on the wire, removed by the server.
    assert!(
        s.raw.contains("\r\n..hidden line starting with a dot\r\n"),
        "{}",
        s.raw
    );
    assert!(s.raw.contains("\r\n...two dots\r\n"));
    assert!(s.raw.contains("\r\n..\r\n"));
    assert_eq!(
        body(&s.data),
        "Severity: critical | Nodes: pve1\r\n\r\nThe pool is full.\r\n.hidden line starting with a dot\r\n..two dots\r\n.\r\n\r\nDashboard: https://wingman.lan/incidents/inc-42\r\n"
    );
}

#[tokio::test]
async fn auth_plain_and_long_lines_wrapped() {
    let (addr, mut rx) = smtp_server(AuthMode::Accept).await;
    let ch = channel(&format!(
        r#"kind = "email"
name = "mail"
host = "localhost"
port = {}
tls = "none"
username = "wingman"
password = "smtp-pass"
from = "wingman@lab.example"
to = ["ops@lab.example"]
subject_prefix = "[lab]"
allow_loopback = true"#,
        addr.port()
    ));
    let mut n = sample(Severity::Warning, Transition::Resolved);
    n.body = "word ".repeat(40).trim_end().to_owned();
    ch.send(&n).await.unwrap();
    let s = rx.recv().await.unwrap();
    assert_eq!(s.auth, Some(("wingman".to_owned(), "smtp-pass".to_owned())));
    assert_eq!(
        header(&s.data, "Subject"),
        Some("[lab] Resolved: Disk almost full on pve1")
    );
    let b = body(&s.data);
    assert!(b.split("\r\n").all(|l| l.len() <= 76), "{b}");
    assert_eq!(b.matches("word").count(), 40);
}

#[tokio::test]
async fn auth_rejected_is_a_clear_error() {
    let (addr, _rx) = smtp_server(AuthMode::Reject).await;
    let ch = channel(&format!(
        r#"kind = "email"
name = "mail"
host = "127.0.0.1"
port = {}
tls = "none"
username = "wingman"
password = "wrong"
from = "wingman@lab.example"
to = ["ops@lab.example"]
allow_loopback = true"#,
        addr.port()
    ));
    let err = ch
        .send(&sample(Severity::Warning, Transition::Opened))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("SMTP server answered 535")
            && msg.ends_with(": check the username and password"),
        "{msg}"
    );
    assert!(!msg.contains("wrong"));
    assert!(!err.is_retryable());
}

#[test]
fn password_without_tls_is_refused_off_loopback() {
    let cfg = super::common::channel_config(
        r#"kind = "email"
name = "mail"
host = "mail.lab.example"
tls = "none"
username = "u"
password = "p"
from = "wingman@lab.example"
to = ["ops@lab.example"]"#,
    );
    let err = cfg.build(&super::common::egress()).unwrap_err();
    assert!(err.to_string().contains("without TLS"), "{err}");
}
