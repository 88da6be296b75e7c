//! Layered configuration shared by the agent and the hub.
//!
//! Layers, lowest to highest: built-in defaults (the config type's `Default`),
//! then TOML files, then `WINGMAN_<APP>__SECTION__KEY` environment variables,
//! then command-line flags (applied by the caller on the typed result). Unknown
//! keys are rejected at every layer because config types use
//! `#[serde(deny_unknown_fields)]`.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::{Table, Value};

/// Configuration errors, each one a clear sentence for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A config file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// An environment variable names a key in a way that cannot be merged.
    #[error("environment variable {var} conflicts with another setting")]
    EnvConflict {
        /// The variable.
        var: String,
    },
    /// The merged settings do not fit the config type (unknown key, wrong type).
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Reads and merges the TOML `files` that exist (missing files are skipped),
/// then environment variables starting with `env_prefix` (e.g. `WINGMAN_HUB__`),
/// and deserializes the result over the type's defaults.
pub fn load<T: DeserializeOwned>(
    files: &[PathBuf],
    env_prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let mut merged = Table::new();
    for path in files {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let table: Table =
                    text.parse()
                        .map_err(|e: toml::de::Error| ConfigError::Parse {
                            path: path.clone(),
                            message: e.message().to_string(),
                        })?;
                merge(&mut merged, table);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.clone(),
                    source,
                });
            }
        }
    }
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(env_prefix))
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let Some(rest) = var.strip_prefix(env_prefix) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Invalid(format!(
                "environment variable {var} has an empty key segment"
            )));
        }
        set_path(&mut merged, &path, env_value(&raw))
            .map_err(|()| ConfigError::EnvConflict { var: var.clone() })?;
    }
    Value::Table(merged)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))
}

/// Lists `dir/*.toml` in name order, for the `/etc/wingman/<app>.d` style.
pub fn toml_files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    out.sort();
    out
}

/// An environment value is read as a TOML value when it parses as one
/// (numbers, booleans, arrays, quoted strings), otherwise as a plain string.
fn env_value(raw: &str) -> Value {
    let doc = format!("v = {raw}");
    match doc.parse::<Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| Value::String(raw.to_string())),
        Err(_) => Value::String(raw.to_string()),
    }
}

fn set_path(table: &mut Table, path: &[String], value: Value) -> Result<(), ()> {
    let Some((last, parents)) = path.split_last() else {
        return Err(());
    };
    let mut cur = table;
    for key in parents {
        let entry = cur
            .entry(key.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        let Value::Table(t) = entry else {
            return Err(());
        };
        cur = t;
    }
    cur.insert(last.clone(), value);
    Ok(())
}

fn merge(into: &mut Table, from: Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Table(a)), Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Inner {
        port: u16,
        name: String,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Conf {
        level: String,
        inner: Inner,
    }

    #[test]
    fn env_overrides_file_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.toml");
        std::fs::write(&f, "level = \"info\"\n[inner]\nport = 1\nname = \"x\"\n").unwrap();
        let c: Conf = load(
            std::slice::from_ref(&f),
            "W__",
            vec![("W__INNER__PORT".into(), "9".into())],
        )
        .unwrap();
        assert_eq!(c.inner.port, 9);
        assert_eq!(c.inner.name, "x");
        assert_eq!(c.level, "info");

        let err = load::<Conf>(
            std::slice::from_ref(&f),
            "W__",
            vec![("W__BOGUS".into(), "1".into())],
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `bogus`"), "{err}");

        std::fs::write(&f, "levle = 1").unwrap();
        let err = load::<Conf>(&[f], "W__", vec![]).unwrap_err();
        assert!(err.to_string().contains("levle"), "{err}");
    }

    #[test]
    fn missing_file_is_skipped_and_bad_toml_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let c: Conf = load(&[dir.path().join("none.toml")], "W__", vec![]).unwrap();
        assert_eq!(c, Conf::default());
        let f = dir.path().join("b.toml");
        std::fs::write(&f, "level = ").unwrap();
        let err = load::<Conf>(&[f], "W__", vec![]).unwrap_err();
        assert!(err.to_string().contains("b.toml"), "{err}");
    }
}
