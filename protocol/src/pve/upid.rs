//! UPID (task id) parsing and formatting.
//!
//! Format, from `pve-common/src/PVE/UPID.pm` (encode):
//! `sprintf("UPID:%s:%08X:%08X:%08X:%s:%s:%s:", node, pid, pstart, starttime, type, id, user)`,
//! decoded with
//! `^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$`.
//! The trailing colon is part of the id, `pstart` has 9 digits after ~497
//! days of uptime, `id` may be empty and `user` may carry `!tokenid`.
//! Parsing is pure and never panics; anything that does not match the regex
//! above is rejected.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::Upid;

/// Longest UPID accepted (PVE's are far shorter; this bounds garbage).
pub const MAX_UPID_LEN: usize = 512;

/// Why a string is not a UPID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a UPID: {0}")]
pub struct UpidError(&'static str);

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn valid_node(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        }
        _ => false,
    }
}

/// `[^:\s/]*` (empty allowed when `allow_empty`).
fn valid_field(s: &str, allow_empty: bool) -> bool {
    (allow_empty || !s.is_empty()) && !s.chars().any(|c| c == ':' || c == '/' || c.is_whitespace())
}

/// Parses a UPID string.
pub fn parse_upid(s: &str) -> Result<Upid, UpidError> {
    if s.len() > MAX_UPID_LEN {
        return Err(UpidError("too long"));
    }
    let rest = s
        .strip_prefix("UPID:")
        .ok_or(UpidError("missing UPID: prefix"))?;
    let rest = rest
        .strip_suffix(':')
        .ok_or(UpidError("missing trailing colon"))?;
    let parts: Vec<&str> = rest.split(':').collect();
    let [node, pid, pstart, starttime, task_type, id, user] = parts.as_slice() else {
        return Err(UpidError("wrong number of fields"));
    };
    if !valid_node(node) {
        return Err(UpidError("bad node"));
    }
    if pid.len() != 8 || !is_hex(pid) {
        return Err(UpidError("bad pid"));
    }
    if !(8..=9).contains(&pstart.len()) || !is_hex(pstart) {
        return Err(UpidError("bad pstart"));
    }
    if starttime.len() != 8 || !is_hex(starttime) {
        return Err(UpidError("bad starttime"));
    }
    if !valid_field(task_type, false) {
        return Err(UpidError("bad type"));
    }
    if !valid_field(id, true) {
        return Err(UpidError("bad id"));
    }
    if !valid_field(user, false) {
        return Err(UpidError("bad user"));
    }
    Ok(Upid {
        node: (*node).to_owned(),
        pid: u32::from_str_radix(pid, 16).map_err(|_| UpidError("bad pid"))?,
        pstart: u64::from_str_radix(pstart, 16).map_err(|_| UpidError("bad pstart"))?,
        starttime: u64::from_str_radix(starttime, 16).map_err(|_| UpidError("bad starttime"))?,
        task_type: (*task_type).to_owned(),
        id: (*id).to_owned(),
        user: (*user).to_owned(),
    })
}

impl FromStr for Upid {
    type Err = UpidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_upid(s)
    }
}

impl fmt::Display for Upid {
    /// The canonical PVE encoding (uppercase hex, trailing colon).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "UPID:{}:{:08X}:{:08X}:{:08X}:{}:{}:{}:",
            self.node, self.pid, self.pstart, self.starttime, self.task_type, self.id, self.user
        )
    }
}

impl Upid {
    /// Task start in Unix ms.
    pub fn start_ms(&self) -> i64 {
        i64::try_from(self.starttime)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000)
    }

    /// The vmid if `id` is one.
    pub fn vmid(&self) -> Option<u32> {
        self.id.parse().ok()
    }

    /// `(user@realm, Some(tokenid))` for token-started tasks.
    pub fn user_and_token(&self) -> (&str, Option<&str>) {
        match self.user.split_once('!') {
            Some((u, t)) => (u, Some(t)),
            None => (self.user.as_str(), None),
        }
    }

    /// Sub-directory of `/var/log/pve/tasks/` holding this task's log: the
    /// last hex digit of the starttime field, uppercase (`UPID.pm`:
    /// `substr($starttime_hex, 7, 1)`).
    pub fn log_subdir(&self) -> char {
        let digit = u32::try_from(self.starttime & 0xF).unwrap_or(0);
        char::from_digit(digit, 16)
            .unwrap_or('0')
            .to_ascii_uppercase()
    }

    /// Path of this task's log file under a task directory.
    pub fn log_path(&self, task_dir: &Path) -> PathBuf {
        task_dir
            .join(self.log_subdir().to_string())
            .join(self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reference_example() {
        let s = "UPID:pve1:000A1B2C:0042F1A0:6650C3E1:qmstart:100:root@pam:";
        let u = parse_upid(s).unwrap();
        assert_eq!(u.node, "pve1");
        assert_eq!(u.pid, 0x000A_1B2C);
        assert_eq!(u.pstart, 0x0042_F1A0);
        assert_eq!(u.starttime, 0x6650_C3E1);
        assert_eq!(u.task_type, "qmstart");
        assert_eq!(u.id, "100");
        assert_eq!(u.user, "root@pam");
        assert_eq!(u.vmid(), Some(100));
        assert_eq!(u.to_string(), s);
        assert_eq!(u.log_subdir(), '1');
    }

    #[test]
    fn round_trips_token_empty_id_and_nine_digit_pstart() {
        for s in [
            "UPID:node-a:00001234:1A2B3C4D5:6650C3EF:vzdump::wingman@pve!actor:",
            "UPID:n:FFFFFFFF:00000000:00000000:aptupdate::root@pam:",
            "UPID:pve2:00000001:00000002:6650C3EA:hamigrate:101:u@pve!t:",
        ] {
            let u: Upid = s.parse().unwrap();
            assert_eq!(u.to_string(), s);
        }
        let u = parse_upid("UPID:node-a:00001234:1A2B3C4D5:6650C3EF:vzdump::wingman@pve!actor:")
            .unwrap();
        assert_eq!(u.user_and_token(), ("wingman@pve", Some("actor")));
        assert_eq!(u.log_subdir(), 'F');
        assert_eq!(
            u.log_path(Path::new("/var/log/pve/tasks")),
            PathBuf::from(
                "/var/log/pve/tasks/F/UPID:node-a:00001234:1A2B3C4D5:6650C3EF:vzdump::wingman@pve!actor:"
            )
        );
    }

    #[test]
    fn lowercase_hex_is_accepted_and_canonicalised() {
        let u = parse_upid("UPID:pve1:000a1b2c:0042f1a0:6650c3e1:qmstart:100:root@pam:").unwrap();
        assert_eq!(
            u.to_string(),
            "UPID:pve1:000A1B2C:0042F1A0:6650C3E1:qmstart:100:root@pam:"
        );
    }

    #[test]
    fn rejects_garbage() {
        let long = format!("UPID:{}:", "a".repeat(600));
        for s in [
            "",
            "UPID:",
            "UPID::::::::",
            "upid:pve1:000A1B2C:0042F1A0:6650C3E1:qmstart:100:root@pam:",
            "UPID:pve1:000A1B2C:0042F1A0:6650C3E1:qmstart:100:root@pam",
            "UPID:-pve:000A1B2C:0042F1A0:6650C3E1:qmstart:100:root@pam:",
            "UPID:pve1-:000A1B2C:0042F1A0:6650C3E1:qmstart:100:root@pam:",
            "UPID:pv_e:000A1B2C:0042F1A0:6650C3E1:qmstart:100:root@pam:",
            "UPID:pve1:0A1B2C:0042F1A0:6650C3E1:qmstart:100:root@pam:",
            "UPID:pve1:000A1B2G:0042F1A0:6650C3E1:qmstart:100:root@pam:",
            "UPID:pve1:000A1B2C:042F1A0:6650C3E1:qmstart:100:root@pam:",
            "UPID:pve1:000A1B2C:0042F1A000:6650C3E1:qmstart:100:root@pam:",
            "UPID:pve1:000A1B2C:0042F1A0:6650C3E:qmstart:100:root@pam:",
            "UPID:pve1:000A1B2C:0042F1A0:6650C3E1::100:root@pam:",
            "UPID:pve1:000A1B2C:0042F1A0:6650C3E1:qm start:100:root@pam:",
            "UPID:pve1:000A1B2C:0042F1A0:6650C3E1:qmstart:1/0:root@pam:",
            "UPID:pve1:000A1B2C:0042F1A0:6650C3E1:qmstart:100::",
            "UPID:pve1:000A1B2C:0042F1A0:6650C3E1:qmstart:100:root@pam:extra:",
            "UPID:pve1:+00A1B2C:0042F1A0:6650C3E1:qmstart:100:root@pam:",
            "UPID:pvé:000A1B2C:0042F1A0:6650C3E1:qmstart:100:root@pam:",
            long.as_str(),
        ] {
            assert!(parse_upid(s).is_err(), "accepted {s:?}");
        }
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // Cheap deterministic fuzz: mutate a valid UPID byte by byte.
        let base = b"UPID:pve1:000A1B2C:0042F1A0:6650C3E1:qmstart:100:root@pam:".to_vec();
        for i in 0..base.len() {
            for b in [0u8, b':', b' ', b'/', b'Z', 0xC3, 0xFF] {
                let mut m = base.clone();
                m[i] = b;
                let s = String::from_utf8_lossy(&m);
                if let Ok(u) = parse_upid(&s) {
                    // Whatever parses must re-parse from its own encoding.
                    assert_eq!(parse_upid(&u.to_string()).unwrap(), u);
                }
            }
        }
    }
}
