//! [`Secret`]: an API key that cannot be printed, serialised or put into a prompt.
//!
//! `Debug` prints `[redacted]`, there is no `Display` and no `Serialize`, and no
//! method returns the key as a `&str` or `String`. The only ways the key leaves
//! this type are as a sensitive HTTP header value (inside this module tree) and
//! as the needle of [`Secret::scrub`], which removes it from text. The prompt
//! builder only accepts strings, so a `Secret` can never be inserted into a
//! prompt.
//!
//! ```compile_fail
//! # use wingman_hub::llm::Secret;
//! let key = Secret::new("sk-live-123");
//! let s: &str = key.as_str(); // no such accessor
//! ```

use std::fmt;

use reqwest::header::HeaderValue;
use serde::{Deserialize, Deserializer};

/// An API key or other credential.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// Reads a key from an environment variable; `None` when unset or empty.
    pub fn from_env(var: &str) -> Option<Self> {
        std::env::var(var)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .map(Self)
    }

    /// True when no key is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key as a sensitive header value, optionally after a prefix
    /// (`"Bearer "`). `None` if the key holds bytes a header cannot carry.
    pub(super) fn header(&self, prefix: &str) -> Option<HeaderValue> {
        let mut v = HeaderValue::from_str(&format!("{prefix}{}", self.0)).ok()?;
        v.set_sensitive(true);
        Some(v)
    }

    /// `text` with every occurrence of the key (and of any 8-character run of
    /// it, for keys of 16 chars or more, to catch partially masked echoes such
    /// as `sk-abc...wxyz`) replaced by `[redacted]`.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.is_empty() {
            return text.to_owned();
        }
        let mut out = text.replace(&self.0, "[redacted]");
        if self.0.len() >= 16 && self.0.is_ascii() {
            let bytes = self.0.as_bytes();
            let mut i = 0;
            while i + 8 <= bytes.len() {
                if let Some(part) = self.0.get(i..i + 8) {
                    // Key prefixes such as `sk-proj-` are public and harmless.
                    if i > 0 && out.contains(part) {
                        out = out.replace(part, "[redacted]");
                    }
                }
                i += 1;
            }
        }
        out
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}
