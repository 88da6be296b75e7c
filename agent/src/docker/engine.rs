//! Finding the engine's socket, connecting with API version negotiation, telling
//! Docker from Podman, and turning client errors into a clear [`DockerStatus`].

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::SystemVersion;

use super::facts::{DockerStatus, EngineInfo, EngineKind};

/// Oldest engine API this integration supports: Docker 19.03 / Podman 3+ (1.40).
/// Everything used here (events with `timeNano`, health, `NanoCpus`) exists there.
pub const MIN_API_VERSION: (u32, u32) = (1, 40);

/// Rootful Docker socket.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// Rootful Podman socket.
pub const PODMAN_SOCKET: &str = "/run/podman/podman.sock";

/// Why the engine cannot be used. Every variant maps to a [`DockerStatus`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerError {
    /// No socket at the path (or none found by auto-detection).
    #[error("socket missing: {0}")]
    SocketMissing(String),
    /// The socket exists but this user may not open it.
    #[error(
        "permission denied: {0} (add the agent's user to the docker group, or run rootless Podman's socket as that user)"
    )]
    PermissionDenied(String),
    /// The engine speaks an API this client cannot use.
    #[error("unsupported API version {found} (need >= {min})")]
    UnsupportedApi {
        /// What the engine reported.
        found: String,
        /// What this client needs.
        min: String,
    },
    /// Nothing answers, the connection broke, or a request timed out.
    #[error("engine unreachable: {0}")]
    Unreachable(String),
    /// The engine answered something this client cannot decode.
    #[error("unexpected response from the engine: {0}")]
    Protocol(String),
    /// The container (or image) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Any other error status from the engine.
    #[error("engine error {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Engine's message.
        message: String,
    },
}

impl DockerError {
    /// The status to report for this error.
    pub fn status(&self) -> DockerStatus {
        let reachable = matches!(self, Self::NotFound(_) | Self::Api { .. });
        DockerStatus {
            reachable,
            message: self.to_string(),
        }
    }

    /// Classifies a bollard error. `socket` names the socket in messages.
    pub fn from_bollard(err: BollardError, socket: &Path) -> Self {
        let sock = socket.display().to_string();
        match err {
            BollardError::DockerResponseServerError {
                status_code,
                message,
            } => {
                if status_code == 404 {
                    Self::NotFound(message)
                } else if status_code == 400
                    && message.contains("client version")
                    && message.contains("too new")
                {
                    Self::UnsupportedApi {
                        found: message,
                        min: version_string(MIN_API_VERSION),
                    }
                } else {
                    Self::Api {
                        status: status_code,
                        message,
                    }
                }
            }
            BollardError::JsonDataError { message, .. } => Self::Protocol(message),
            BollardError::APIVersionParseError {} => Self::UnsupportedApi {
                found: "unparseable".to_owned(),
                min: version_string(MIN_API_VERSION),
            },
            BollardError::RequestTimeoutError => Self::Unreachable(format!("{sock}: timed out")),
            BollardError::SocketNotFoundError(p) => Self::SocketMissing(p),
            BollardError::IOError { err } => Self::from_io(&err, &sock),
            other => match io_kind(&other) {
                Some(
                    k @ (io::ErrorKind::NotFound
                    | io::ErrorKind::PermissionDenied
                    | io::ErrorKind::ConnectionRefused),
                ) => Self::from_io(&io::Error::from(k), &sock),
                _ => Self::Unreachable(format!("{sock}: {}", chain(&other))),
            },
        }
    }
}

impl DockerError {
    fn from_io(err: &io::Error, sock: &str) -> Self {
        match err.kind() {
            io::ErrorKind::NotFound => Self::SocketMissing(sock.to_owned()),
            io::ErrorKind::PermissionDenied => Self::PermissionDenied(sock.to_owned()),
            io::ErrorKind::ConnectionRefused => {
                Self::Unreachable(format!("{sock}: connection refused (stale socket?)"))
            }
            _ => Self::Unreachable(format!("{sock}: {err}")),
        }
    }
}

/// The innermost `io::Error` kind in an error's source chain.
fn io_kind(err: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut found = None;
    while let Some(e) = cur {
        if let Some(ioe) = e.downcast_ref::<io::Error>() {
            found = Some(ioe.kind());
        }
        cur = e.source();
    }
    found
}

/// "outer: inner: innermost", without repeating identical messages.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

fn version_string(v: (u32, u32)) -> String {
    format!("{}.{}", v.0, v.1)
}

/// Parses "1.41" into (1, 41).
pub(crate) fn parse_api_version(s: &str) -> Option<(u32, u32)> {
    let (maj, min) = s.trim().split_once('.')?;
    Some((maj.parse().ok()?, min.parse().ok()?))
}

/// Socket paths to try, in order: `DOCKER_HOST` (only `unix://`), Docker's
/// socket, rootful Podman, `$XDG_RUNTIME_DIR/podman/podman.sock`,
/// `/run/user/<uid>/podman/podman.sock`.
pub fn socket_candidates(
    docker_host: Option<&str>,
    xdg_runtime_dir: Option<&str>,
    uid: Option<u32>,
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = docker_host.and_then(|h| h.strip_prefix("unix://"))
        && !p.is_empty()
    {
        out.push(PathBuf::from(p));
    }
    out.push(PathBuf::from(DOCKER_SOCKET));
    out.push(PathBuf::from(PODMAN_SOCKET));
    if let Some(x) = xdg_runtime_dir.filter(|x| !x.is_empty()) {
        out.push(Path::new(x).join("podman/podman.sock"));
    }
    if let Some(u) = uid {
        out.push(PathBuf::from(format!("/run/user/{u}/podman/podman.sock")));
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    out
}

/// The current user's uid, read from `/proc/self` (no libc needed).
fn current_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Picks the first existing socket among [`socket_candidates`] for this process's
/// environment.
pub fn detect_socket() -> Result<PathBuf, DockerError> {
    let host = std::env::var("DOCKER_HOST").ok();
    if let Some(h) = host.as_deref()
        && !h.starts_with("unix://")
    {
        tracing::debug!(
            docker_host = h,
            "DOCKER_HOST is not a unix socket; ignoring it"
        );
    }
    let xdg = std::env::var("XDG_RUNTIME_DIR").ok();
    let candidates = socket_candidates(host.as_deref(), xdg.as_deref(), current_uid());
    pick_socket(&candidates)
}

/// First existing path, or `SocketMissing` listing all that were tried.
pub(crate) fn pick_socket(candidates: &[PathBuf]) -> Result<PathBuf, DockerError> {
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or_else(|| {
            DockerError::SocketMissing(
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
}

/// Docker or Podman, from a `/version` answer: Podman lists a component whose
/// name contains "Podman" ("Podman Engine").
pub fn detect_kind(v: &SystemVersion) -> EngineKind {
    let podman = v
        .components
        .iter()
        .flatten()
        .any(|c| c.name.to_ascii_lowercase().contains("podman"))
        || v.platform
            .as_ref()
            .is_some_and(|p| p.name.to_ascii_lowercase().contains("podman"));
    if podman {
        EngineKind::Podman
    } else {
        EngineKind::Docker
    }
}

/// The engine version to report: Podman's own component version, else `Version`.
fn engine_version(v: &SystemVersion, kind: EngineKind) -> String {
    if kind == EngineKind::Podman
        && let Some(c) = v
            .components
            .iter()
            .flatten()
            .find(|c| c.name.to_ascii_lowercase().contains("podman"))
    {
        return c.version.clone();
    }
    v.version.clone().unwrap_or_default()
}

/// Checks a `/version` answer against [`MIN_API_VERSION`] and what this client
/// speaks. Returns the engine's maximum API version.
pub(crate) fn check_api(v: &SystemVersion) -> Result<(u32, u32), DockerError> {
    let min = version_string(MIN_API_VERSION);
    let found = v.api_version.clone().unwrap_or_default();
    let Some(max) = parse_api_version(&found) else {
        return Err(DockerError::UnsupportedApi {
            found: if found.is_empty() {
                "missing".to_owned()
            } else {
                found
            },
            min,
        });
    };
    if max < MIN_API_VERSION {
        return Err(DockerError::UnsupportedApi { found, min });
    }
    let ours = bollard::API_DEFAULT_VERSION;
    let client = (
        u32::try_from(ours.major_version).unwrap_or(u32::MAX),
        u32::try_from(ours.minor_version).unwrap_or(u32::MAX),
    );
    if let Some(engine_min) = v.min_api_version.as_deref().and_then(parse_api_version)
        && engine_min > client
    {
        return Err(DockerError::UnsupportedApi {
            found: format!(
                "{found} (engine requires >= {})",
                version_string(engine_min)
            ),
            min: format!("{min}, client speaks up to {}", version_string(client)),
        });
    }
    Ok(max)
}

/// A connected, version-negotiated engine.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The client, already negotiated down to the engine's API version.
    pub docker: Docker,
    /// Kind, version and negotiated API version.
    pub info: EngineInfo,
    /// The socket in use.
    pub socket: PathBuf,
}

impl Engine {
    /// The "connected" status line for this engine.
    pub fn connected_status(&self) -> DockerStatus {
        let kind = match self.info.kind {
            EngineKind::Docker => "Docker",
            EngineKind::Podman => "Podman",
        };
        DockerStatus {
            reachable: true,
            message: format!(
                "connected to {kind} {} (API {}) at {}",
                self.info.version,
                self.info.api_version,
                self.socket.display()
            ),
        }
    }

    /// Maps a bollard error from this engine.
    pub(crate) fn err(&self, e: BollardError) -> DockerError {
        DockerError::from_bollard(e, &self.socket)
    }
}

/// Connects to `socket` (or the auto-detected one), checks the API version and
/// negotiates down to it, and detects Docker vs Podman.
pub async fn connect(socket: Option<&Path>, timeout: Duration) -> Result<Engine, DockerError> {
    let socket = match socket {
        Some(p) => p.to_path_buf(),
        None => detect_socket()?,
    };
    match std::fs::metadata(&socket) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(DockerError::PermissionDenied(socket.display().to_string()));
        }
        Err(_) => return Err(DockerError::SocketMissing(socket.display().to_string())),
    }
    let Some(path) = socket.to_str() else {
        return Err(DockerError::SocketMissing(format!(
            "{} (not valid UTF-8)",
            socket.display()
        )));
    };
    let docker =
        Docker::connect_with_unix(path, timeout.as_secs().max(1), bollard::API_DEFAULT_VERSION)
            .map_err(|e| DockerError::from_bollard(e, &socket))?;
    // `/version` is answered whatever API version the client asks for, so read it
    // first: it tells the kind and lets us refuse too-old engines with a clear message.
    let version = docker
        .version()
        .await
        .map_err(|e| DockerError::from_bollard(e, &socket))?;
    check_api(&version)?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| DockerError::from_bollard(e, &socket))?;
    let kind = detect_kind(&version);
    let info = EngineInfo {
        kind,
        version: engine_version(&version, kind),
        api_version: docker.client_version().to_string(),
    };
    Ok(Engine {
        docker,
        info,
        socket,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{SystemVersionComponents, SystemVersionPlatform};

    #[test]
    fn candidates_follow_documented_order() {
        let c = socket_candidates(
            Some("unix:///custom/d.sock"),
            Some("/run/user/1000"),
            Some(1000),
        );
        let c: Vec<String> = c.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            c,
            [
                "/custom/d.sock",
                "/var/run/docker.sock",
                "/run/podman/podman.sock",
                "/run/user/1000/podman/podman.sock",
            ]
        );
        let c = socket_candidates(Some("tcp://1.2.3.4:2375"), None, Some(7));
        assert_eq!(
            c.first().map(|p| p.as_path()),
            Some(Path::new(DOCKER_SOCKET))
        );
        assert_eq!(
            c.last().map(|p| p.as_path()),
            Some(Path::new("/run/user/7/podman/podman.sock"))
        );
    }

    #[test]
    fn picks_first_existing_socket() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.sock");
        let b = dir.path().join("b.sock");
        std::fs::write(&b, b"").unwrap();
        assert_eq!(pick_socket(&[a.clone(), b.clone()]).unwrap(), b);
        let err = pick_socket(std::slice::from_ref(&a)).unwrap_err();
        assert!(matches!(err, DockerError::SocketMissing(ref m) if m.contains("a.sock")));
        assert!(!err.status().reachable);
    }

    fn version(api: &str, components: &[&str]) -> SystemVersion {
        SystemVersion {
            api_version: Some(api.to_owned()),
            version: Some("20.10.24".to_owned()),
            components: Some(
                components
                    .iter()
                    .map(|n| SystemVersionComponents {
                        name: (*n).to_owned(),
                        version: "4.9.3".to_owned(),
                        details: None,
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn detects_podman_and_docker() {
        let d = version("1.41", &["Engine", "containerd", "runc"]);
        assert_eq!(detect_kind(&d), EngineKind::Docker);
        assert_eq!(engine_version(&d, EngineKind::Docker), "20.10.24");
        let p = version("1.41", &["Podman Engine", "Conmon", "OCI Runtime (crun)"]);
        assert_eq!(detect_kind(&p), EngineKind::Podman);
        assert_eq!(engine_version(&p, EngineKind::Podman), "4.9.3");
        let mut p2 = version("1.41", &[]);
        p2.platform = Some(SystemVersionPlatform {
            name: "Podman Engine".to_owned(),
        });
        assert_eq!(detect_kind(&p2), EngineKind::Podman);
    }

    #[test]
    fn api_version_checks() {
        assert_eq!(check_api(&version("1.41", &[])).unwrap(), (1, 41));
        assert_eq!(check_api(&version("1.53", &[])).unwrap(), (1, 53));
        let e = check_api(&version("1.12", &[])).unwrap_err();
        assert_eq!(e.to_string(), "unsupported API version 1.12 (need >= 1.40)");
        assert!(matches!(
            check_api(&version("banana", &[])),
            Err(DockerError::UnsupportedApi { .. })
        ));
        let mut future = version("2.10", &[]);
        future.min_api_version = Some("2.0".to_owned());
        let e = check_api(&future).unwrap_err();
        assert!(e.to_string().contains("engine requires >= 2.0"), "{e}");
    }

    #[test]
    fn classifies_errors() {
        let sock = Path::new("/x.sock");
        let perm = BollardError::IOError {
            err: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(
            DockerError::from_bollard(perm, sock),
            DockerError::PermissionDenied("/x.sock".to_owned())
        );
        let missing = BollardError::IOError {
            err: io::Error::from(io::ErrorKind::NotFound),
        };
        assert!(matches!(
            DockerError::from_bollard(missing, sock),
            DockerError::SocketMissing(_)
        ));
        let too_new = BollardError::DockerResponseServerError {
            status_code: 400,
            message: "client version 1.53 is too new. Maximum supported API version is 1.41"
                .to_owned(),
        };
        assert!(matches!(
            DockerError::from_bollard(too_new, sock),
            DockerError::UnsupportedApi { .. }
        ));
        let nf = BollardError::DockerResponseServerError {
            status_code: 404,
            message: "No such container: x".to_owned(),
        };
        let nf = DockerError::from_bollard(nf, sock);
        assert!(matches!(nf, DockerError::NotFound(_)));
        assert!(nf.status().reachable);
    }
}
