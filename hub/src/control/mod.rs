//! The control plane's pure core: the action [`catalog`], [`plan`]s and
//! their validation, the [`policy`] state machine that decides what may run,
//! and the hash-chained [`audit`] trail.
//!
//! Nothing here reads a clock, the store or the network: every function that
//! needs the time takes `now` (Unix seconds), and the hub's shell does the
//! I/O (store, transport, signing, inventory refresh).

pub mod audit;
pub mod catalog;
pub mod plan;
pub mod policy;

/// The executor types the catalog builds. When this directory moves into
/// the hub, point these at `wingman_protocol` (the only lines that change).
pub(crate) mod exec {
    pub(crate) use wingman_protocol::docker::{ContainerRunState, DockerAction};
    pub(crate) use wingman_protocol::pve::{
        BackupMode, GuestKind, GuestRef, PveAction, PveActionOp,
    };
}

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Canonical JSON: object keys sorted (by UTF-16 code units would be JCS;
/// we sort by bytes, which agrees for the ASCII keys we use), no whitespace,
/// serde_json's number and string formatting. Independent of serde_json's
/// `preserve_order` feature.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(child) = map.get(k) {
                    write_canonical(child, out);
                }
            }
            out.push('}');
        }
        Value::Array(xs) => {
            out.push('[');
            for (i, x) in xs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Lowercase hex SHA-256 of `domain` (a version tag), a newline, and the
/// canonical JSON of `v`.
pub fn domain_hash(domain: &str, v: &Value) -> String {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    h.update(b"\n");
    h.update(canonical_json(v).as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_sorts_keys_at_every_level() {
        let a = json!({"b": 1, "a": {"z": [3, {"y": 1, "x": 2}], "c": "s"}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":"s","z":[3,{"x":2,"y":1}]},"b":1}"#
        );
        let b: Value =
            serde_json::from_str(r#"{"a":{"z":[3,{"x":2,"y":1}],"c":"s"},"b":1}"#).unwrap();
        assert_eq!(domain_hash("t", &a), domain_hash("t", &b));
        assert_ne!(domain_hash("t", &a), domain_hash("u", &a));
    }

    #[test]
    fn canonical_escapes_strings() {
        assert_eq!(canonical_json(&json!({"k\"": "a\nb"})), r#"{"k\"":"a\nb"}"#);
    }
}
