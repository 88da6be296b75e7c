//! A write-only secret string: readable from config, redacted in `Debug`,
//! and serialized only as `{"set": true}` so that an API returning a
//! channel config never echoes a token, password or secret-bearing URL.

use std::fmt;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret value (token, password, webhook URL with an embedded key, HMAC
/// key). Compare, log and serialize it only through this type.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is put on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Serializes as the write-only view `{"set": true}`, never the value.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        write_only_view(true, s)
    }
}

fn write_only_view<S: Serializer>(set: bool, s: S) -> Result<S::Ok, S::Error> {
    let mut st = s.serialize_struct("SecretView", 1)?;
    st.serialize_field("set", &set)?;
    st.end()
}

/// `serialize_with` helper for `Option<Secret>`: `{"set": false}` when absent.
pub(crate) fn serialize_opt<S: Serializer>(v: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
    write_only_view(v.is_some(), s)
}
