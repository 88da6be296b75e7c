//! Secrets: never in `Debug`, never serialized back (write-only view shows
//! `{"set": true}`); configs refuse unknown fields.

use serde_json::json;

use super::common::{channel_config, egress};
use super::subject::{ChannelConfig, NotifyConfig, Secret};

const SECRETS: [&str; 6] = [
    "tk_NTFYSECRET",
    "NTFYPASSWORD",
    "GOTIFYSECRET",
    "DISCORDSECRET",
    "SLACKSECRET",
    "HMACSECRET",
];

const ALL: &str = r#"
[[channels]]
kind = "ntfy"
name = "phone"
server = "https://ntfy.sh"
topic = "t"
token = "tk_NTFYSECRET"

[[channels]]
kind = "ntfy"
name = "phone2"
server = "https://ntfy.lab"
topic = "t"
username = "me"
password = "NTFYPASSWORD"

[[channels]]
kind = "gotify"
name = "gotify"
server = "http://gotify.lan"
token = "GOTIFYSECRET"

[[channels]]
kind = "discord"
name = "discord"
webhook_url = "https://discord.com/api/webhooks/1/DISCORDSECRET"

[[channels]]
kind = "slack"
name = "slack"
webhook_url = "https://hooks.slack.com/services/T/B/SLACKSECRET"

[[channels]]
kind = "webhook"
name = "hook"
url = "https://hooks.lab/wingman"
secret = "HMACSECRET"

[[channels]]
kind = "email"
name = "mail"
host = "smtp.lab.example"
username = "wingman"
password = "SMTPSECRET"
from = "wingman@lab.example"
to = ["ops@lab.example"]
"#;

fn all() -> NotifyConfig {
    toml::from_str(ALL).unwrap()
}

fn assert_clean(text: &str) {
    for s in SECRETS.iter().chain(&["SMTPSECRET"]) {
        assert!(!text.contains(s), "secret {s} leaked in: {text}");
    }
}

#[test]
fn debug_shows_no_secret() {
    let cfg = all();
    assert_clean(&format!("{cfg:?}"));
    assert_clean(&format!("{cfg:#?}"));
    for c in &cfg.channels {
        assert_clean(&format!("{c:?}"));
    }
    let built = cfg.build_channels(&egress()).unwrap();
    assert_eq!(built.len(), 7);
    for ch in &built {
        assert_clean(&format!("{ch:?}"));
    }
    assert_eq!(format!("{:?}", Secret::new("x")), "Secret(<redacted>)");
}

#[test]
fn write_only_view() {
    let cfg = all();
    let view = cfg.public_view();
    assert_clean(&view.to_string());
    let ch = &view["channels"];
    assert_eq!(ch[0]["token"], json!({ "set": true }));
    assert_eq!(ch[0]["password"], json!({ "set": false }));
    assert_eq!(ch[0]["kind"], json!("ntfy"));
    assert_eq!(ch[0]["server"], json!("https://ntfy.sh"));
    assert_eq!(ch[1]["token"], json!({ "set": false }));
    assert_eq!(ch[1]["password"], json!({ "set": true }));
    assert_eq!(ch[2]["token"], json!({ "set": true }));
    assert_eq!(ch[3]["webhook_url"], json!({ "set": true }));
    assert_eq!(ch[4]["webhook_url"], json!({ "set": true }));
    assert_eq!(ch[5]["secret"], json!({ "set": true }));
    assert_eq!(ch[5]["url"], json!("https://hooks.lab/wingman"));
    assert_eq!(ch[6]["password"], json!({ "set": true }));
    assert_eq!(ch[6]["username"], json!("wingman"));
    // Serializing to TOML cannot write a secret back either.
    let one = &cfg.channels[0];
    assert_eq!(one.public_view()["token"], json!({ "set": true }));
    assert_clean(&toml::to_string(one).unwrap());
}

#[test]
fn unknown_fields_and_kinds_refused() {
    let typo = r#"kind = "ntfy"
name = "p"
server = "https://ntfy.sh"
topic = "t"
tokne = "x""#;
    let err = toml::from_str::<ChannelConfig>(typo)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `tokne`"), "{err}");
    let err = toml::from_str::<ChannelConfig>("kind = \"pager\"\nname = \"x\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown variant `pager`"), "{err}");
    let err = toml::from_str::<NotifyConfig>("dedup = 5")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `dedup`"), "{err}");
}

#[test]
fn config_validation_messages() {
    let both = channel_config(
        r#"kind = "ntfy"
name = "p"
server = "https://ntfy.sh"
topic = "t"
token = "a"
username = "u"
password = "b""#,
    );
    assert_eq!(
        both.build(&egress()).unwrap_err().to_string(),
        "notification channel \"p\": set either token or username/password, not both"
    );
    let topic = channel_config(
        r#"kind = "ntfy"
name = "p"
server = "https://ntfy.sh"
topic = "a/b""#,
    );
    assert!(topic.build(&egress()).is_err());
    let dup: NotifyConfig = toml::from_str(&format!(
        "{ALL}\n[[channels]]\nkind = \"gotify\"\nname = \"phone\"\nserver = \"http://g\"\ntoken = \"t\""
    ))
    .unwrap();
    assert_eq!(
        dup.validate().unwrap_err().to_string(),
        "two notification channels are named \"phone\""
    );
}
