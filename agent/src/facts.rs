//! Host facts collector: identity, OS, CPU, load, memory, filesystems and
//! interfaces via `sysinfo`, plus detection of the node kind.

use std::path::Path;

use sysinfo::{Disks, Networks, System};
use wingman_protocol::{Filesystem, HostFacts, HostKind, NetInterface};

/// Filesystem types that are not real storage and only add noise.
const PSEUDO_FS: &[&str] = &[
    "tmpfs",
    "devtmpfs",
    "overlay",
    "squashfs",
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "nsfs",
    "fuse.lxcfs",
    "autofs",
    "efivarfs",
    "ramfs",
    "tracefs",
    "debugfs",
];

/// Reads Linux pressure stall information under `root` (normally `/`):
/// `proc/pressure/{cpu,memory,io}`. `None` where the kernel has no PSI.
pub fn read_pressure(root: &Path) -> Option<wingman_protocol::Pressure> {
    let read = |name: &str| std::fs::read_to_string(root.join("proc/pressure").join(name)).ok();
    let cpu = read("cpu")?;
    let memory = read("memory")?;
    let io = read("io")?;
    Some(wingman_protocol::Pressure {
        cpu_some: psi_avg10(&cpu, "some")?,
        memory_some: psi_avg10(&memory, "some")?,
        io_some: psi_avg10(&io, "some")?,
        io_full: psi_avg10(&io, "full").unwrap_or(0.0),
    })
}

/// The `avg10` of the `some` or `full` line of a PSI file.
pub fn psi_avg10(text: &str, which: &str) -> Option<f32> {
    let line = text.lines().find(|l| l.starts_with(which))?;
    let v: f32 = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("avg10="))?
        .parse()
        .ok()?;
    (v.is_finite() && (0.0..=100.0).contains(&v)).then_some(v)
}

/// Detects what kind of node this is, from files under `root` (normally `/`).
///
/// A Proxmox VE node has `/etc/pve` or `pveversion`; a Docker or Podman host has
/// the engine's socket.
pub fn detect_kind(root: &Path) -> HostKind {
    if root.join("etc/pve").exists() || root.join("usr/bin/pveversion").exists() {
        return HostKind::Proxmox;
    }
    let sockets = [
        "var/run/docker.sock",
        "run/docker.sock",
        "run/podman/podman.sock",
    ];
    if sockets.iter().any(|s| root.join(s).exists()) {
        return HostKind::Docker;
    }
    HostKind::Plain
}

/// Keeps sysinfo state between samples (CPU usage needs two readings).
pub struct HostCollector {
    sys: System,
    disks: Disks,
    networks: Networks,
    kind: HostKind,
}

impl std::fmt::Debug for HostCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostCollector")
            .field("kind", &self.kind)
            .finish()
    }
}

impl HostCollector {
    /// Creates a collector for a node of `kind`.
    pub fn new(kind: HostKind) -> Result<Self, sysinfo::Error> {
        let mut sys = System::new()?;
        sys.refresh_cpu_usage();
        Ok(Self {
            sys,
            disks: Disks::new_with_refreshed_list()?,
            networks: Networks::new_with_refreshed_list()?,
            kind,
        })
    }

    /// Takes one sample. Blocking: call it off the async runtime's workers.
    pub fn sample(&mut self) -> HostFacts {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        self.disks.refresh(true);
        self.networks.refresh(true);
        let load = System::load_average().unwrap_or(sysinfo::LoadAvg {
            one: 0.0,
            five: 0.0,
            fifteen: 0.0,
        });
        let mut filesystems: Vec<Filesystem> = self
            .disks
            .into_iter()
            .filter(|d| {
                let fs = d.file_system().to_string_lossy();
                !PSEUDO_FS.contains(&fs.as_ref()) && d.total_space() > 0
            })
            .map(|d| Filesystem {
                mount: d.mount_point().to_string_lossy().into_owned(),
                fs_type: d.file_system().to_string_lossy().into_owned(),
                total: d.total_space(),
                available: d.available_space(),
            })
            .collect();
        filesystems.sort_by(|a, b| a.mount.cmp(&b.mount));
        filesystems.dedup_by(|a, b| a.mount == b.mount);
        let mut interfaces: Vec<NetInterface> = self
            .networks
            .into_iter()
            .map(|(name, data)| NetInterface {
                name: name.to_string_lossy().into_owned(),
                mac: data.mac_address().to_string().to_ascii_lowercase(),
                addrs: data
                    .ip_networks()
                    .iter()
                    .map(|n| format!("{}/{}", n.addr, n.prefix))
                    .collect(),
                rx_bytes: data.total_received(),
                tx_bytes: data.total_transmitted(),
            })
            .collect();
        interfaces.sort_by(|a, b| a.name.cmp(&b.name));
        let total = self.sys.total_memory();
        HostFacts {
            hostname: System::host_name().unwrap_or_else(|_| "unknown".into()),
            kind: self.kind,
            os: System::long_os_version().unwrap_or_else(|_| "unknown".into()),
            kernel: System::kernel_version().unwrap_or_else(|_| "unknown".into()),
            uptime_s: System::uptime().unwrap_or(0),
            cpu_count: u32::try_from(self.sys.cpus().len()).unwrap_or(u32::MAX),
            cpu_usage_pct: self.sys.global_cpu_usage(),
            load: [load.one as f32, load.five as f32, load.fifteen as f32],
            mem_total: total,
            mem_used: total.saturating_sub(self.sys.available_memory()),
            swap_total: self.sys.total_swap(),
            swap_used: self.sys.used_swap(),
            filesystems,
            interfaces,
        }
    }
}

/// Whether `new` differs enough from `old` to be worth sending before the
/// regular interval: the set of filesystems or interfaces changed, a
/// filesystem's use moved by 1% of its size, memory use by 5%, CPU by 20 points.
pub fn changed_materially(old: &HostFacts, new: &HostFacts) -> bool {
    let mounts = |h: &HostFacts| {
        h.filesystems
            .iter()
            .map(|f| f.mount.clone())
            .collect::<Vec<_>>()
    };
    let ifaces = |h: &HostFacts| {
        h.interfaces
            .iter()
            .map(|i| (i.name.clone(), i.addrs.clone()))
            .collect::<Vec<_>>()
    };
    if mounts(old) != mounts(new) || ifaces(old) != ifaces(new) || old.kind != new.kind {
        return true;
    }
    let fs_moved = old.filesystems.iter().zip(&new.filesystems).any(|(a, b)| {
        let step = (a.total / 100).max(1);
        a.available.abs_diff(b.available) >= step
    });
    let mem_step = (new.mem_total / 20).max(1);
    fs_moved
        || old.mem_used.abs_diff(new.mem_used) >= mem_step
        || (old.cpu_usage_pct - new.cpu_usage_pct).abs() >= 20.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_kinds_from_marker_files() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(detect_kind(d.path()), HostKind::Plain);
        std::fs::create_dir_all(d.path().join("run/podman")).unwrap();
        std::fs::write(d.path().join("run/podman/podman.sock"), b"").unwrap();
        assert_eq!(detect_kind(d.path()), HostKind::Docker);
        std::fs::create_dir_all(d.path().join("etc/pve")).unwrap();
        assert_eq!(detect_kind(d.path()), HostKind::Proxmox);
    }

    #[test]
    fn pressure_files_parse_and_bad_ones_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("proc/pressure");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("cpu"), "some avg10=1.50 avg60=0.80 avg300=0.20 total=123\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").unwrap();
        std::fs::write(p.join("memory"), "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").unwrap();
        std::fs::write(p.join("io"), "some avg10=42.10 avg60=30.00 avg300=10.00 total=999\nfull avg10=20.05 avg60=1.00 avg300=0.50 total=99\n").unwrap();
        let got = read_pressure(d.path()).unwrap();
        assert_eq!((got.cpu_some, got.io_some, got.io_full), (1.5, 42.1, 20.05));
        std::fs::write(p.join("io"), "some avg10=banana\n").unwrap();
        assert!(read_pressure(d.path()).is_none());
        assert!(psi_avg10("some avg10=250.0", "some").is_none());
        assert!(read_pressure(&d.path().join("nowhere")).is_none());
    }

    #[test]
    fn samples_this_machine() {
        let mut c = HostCollector::new(HostKind::Plain).unwrap();
        let h = c.sample();
        assert!(h.cpu_count >= 1);
        assert!(h.mem_total > 0);
        assert!(h.mem_used <= h.mem_total);
        assert!(!h.hostname.is_empty());
        assert!(!changed_materially(&h, &h));
        let mut h2 = h.clone();
        h2.filesystems.push(Filesystem {
            mount: "/new".into(),
            fs_type: "ext4".into(),
            total: 1,
            available: 1,
        });
        assert!(changed_materially(&h, &h2));
    }
}
