//! Interface counters of a pod's network namespace.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::StatsError;

/// The interface kubelet reports as a pod's own (its `network.DefaultInterfaceName`).
pub const DEFAULT_INTERFACE: &str = "eth0";

/// Counters of one interface, from `/proc/net/dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceStats {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkStats {
    pub timestamp: SystemTime,
    /// Every interface of the namespace, loopback included, in the kernel's order.
    pub interfaces: Vec<InterfaceStats>,
    /// [`DEFAULT_INTERFACE`] when the namespace has it.
    pub default_interface: Option<String>,
}

impl NetworkStats {
    /// The stats of these interfaces, the default one chosen among them.
    pub fn new(timestamp: SystemTime, interfaces: Vec<InterfaceStats>) -> NetworkStats {
        let default_interface = interfaces
            .iter()
            .any(|i| i.name == DEFAULT_INTERFACE)
            .then(|| DEFAULT_INTERFACE.to_string());
        NetworkStats {
            timestamp,
            interfaces,
            default_interface,
        }
    }

    /// The counters of the default interface, if there is one.
    pub fn default(&self) -> Option<&InterfaceStats> {
        let name = self.default_interface.as_deref()?;
        self.interfaces.iter().find(|i| i.name == name)
    }
}

/// Reads the interface counters of the network namespace pinned at `netns`
/// (`<run_root>/pods/<id>/ns/net`). The read happens on a fresh thread that joins the namespace
/// and exits (`sys::net::in_netns`); blocking, so call it from `spawn_blocking`. Needs
/// CAP_SYS_ADMIN.
pub fn network(netns: &Path) -> Result<NetworkStats, StatsError> {
    let timestamp = SystemTime::now();
    let text = crate::sys::net::in_netns(netns, || {
        // /proc/net follows the main thread; thread-self is this thread, in the pod's netns.
        std::fs::read_to_string("/proc/thread-self/net/dev")
    })
    .map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            StatsError::NotFound(netns.to_path_buf())
        } else {
            StatsError::Netns {
                path: netns.to_path_buf(),
                source,
            }
        }
    })?;
    let dev = PathBuf::from(format!(
        "/proc/net/dev (network namespace {})",
        netns.display()
    ));
    let text = text.map_err(|source| StatsError::Io {
        path: dev.clone(),
        source,
    })?;
    let interfaces =
        parse_net_dev(&text).map_err(|reason| StatsError::Parse { path: dev, reason })?;
    Ok(NetworkStats::new(timestamp, interfaces))
}

/// The same counters read through a process in the namespace (`/proc/<pid>/net/dev`), with no
/// thread joining it (what [`network`] costs per pod). Only when the process's namespace is the
/// one pinned at `netns` (same nsfs inode, checked before and after the read, so a pid reused
/// meanwhile is not read for the pod); `None` otherwise, and the caller falls back to
/// [`network`].
pub fn network_of_process(pid: i32, netns: &Path) -> Option<NetworkStats> {
    use std::os::unix::fs::MetadataExt;
    if pid <= 0 {
        return None;
    }
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let pinned = id(netns)?;
    let theirs = PathBuf::from(format!("/proc/{pid}/ns/net"));
    if id(&theirs)? != pinned {
        return None;
    }
    let timestamp = SystemTime::now();
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    if id(&theirs)? != pinned {
        return None;
    }
    let interfaces = parse_net_dev(&text).ok()?;
    Some(NetworkStats::new(timestamp, interfaces))
}

/// Parses `/proc/net/dev`: two header lines, then `name: ` and 16 counters per interface
/// (receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes packets
/// errs drop fifo colls carrier compressed).
pub fn parse_net_dev(text: &str) -> Result<Vec<InterfaceStats>, String> {
    let mut out = Vec::new();
    for line in text.lines().skip(2).filter(|l| !l.trim().is_empty()) {
        // Interface names cannot hold ':' (dev_valid_name), so the first one ends the name.
        let (name, counters) = line
            .split_once(':')
            .ok_or_else(|| format!("no \"name:\" in {line:?}"))?;
        let v: Vec<u64> = counters
            .split_whitespace()
            .map(|c| c.parse::<u64>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("bad counter in {line:?}"))?;
        if v.len() < 16 {
            return Err(format!(
                "expected 16 counters, found {} in {line:?}",
                v.len()
            ));
        }
        out.push(InterfaceStats {
            name: name.trim().to_string(),
            rx_bytes: v[0],
            rx_packets: v[1],
            rx_errors: v[2],
            rx_dropped: v[3],
            tx_bytes: v[8],
            tx_packets: v[9],
            tx_errors: v[10],
            tx_dropped: v[11],
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_process_in_the_namespace_is_read_and_another_namespace_is_not() {
        let me = i32::try_from(std::process::id()).unwrap();
        let own = Path::new("/proc/self/ns/net");
        let stats = super::network_of_process(me, own).expect("our own namespace");
        assert!(stats.interfaces.iter().any(|i| i.name == "lo"), "{stats:?}");
        // Another namespace file (not the process's network namespace): not read.
        assert!(super::network_of_process(me, Path::new("/proc/self/ns/mnt")).is_none());
        assert!(super::network_of_process(0, own).is_none());
    }

    use super::*;

    const DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:   15600     200    0    0    0     0          0         0    15600     200    0    0    0     0       0          0
  eth0: 9876543   12345    3    7    0     0          0        12  1234567    2345    1    2    0     0       0          0
";

    #[test]
    fn net_dev_counters() {
        let v = parse_net_dev(DEV).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].name, "lo");
        assert_eq!((v[0].rx_bytes, v[0].tx_bytes), (15600, 15600));
        let eth0 = &v[1];
        assert_eq!(eth0.name, "eth0");
        assert_eq!(
            (
                eth0.rx_bytes,
                eth0.rx_packets,
                eth0.rx_errors,
                eth0.rx_dropped
            ),
            (9876543, 12345, 3, 7)
        );
        assert_eq!(
            (
                eth0.tx_bytes,
                eth0.tx_packets,
                eth0.tx_errors,
                eth0.tx_dropped
            ),
            (1234567, 2345, 1, 2)
        );
    }

    #[test]
    fn net_dev_garbage() {
        let head = "a\nb\n";
        assert!(parse_net_dev(&format!("{head}lo 1 2 3\n"))
            .unwrap_err()
            .contains("name:"));
        assert!(parse_net_dev(&format!("{head}lo: 1 2 3\n"))
            .unwrap_err()
            .contains("16 counters"));
        assert!(parse_net_dev(&format!("{head}lo: 1 x 3\n"))
            .unwrap_err()
            .contains("bad counter"));
        assert_eq!(parse_net_dev(head).unwrap(), vec![]);
    }

    #[test]
    fn default_interface_is_eth0_when_present() {
        let s = NetworkStats::new(SystemTime::now(), parse_net_dev(DEV).unwrap());
        assert_eq!(s.default_interface.as_deref(), Some("eth0"));
        assert_eq!(s.default().unwrap().rx_bytes, 9876543);
        let mut only_lo = parse_net_dev(DEV).unwrap();
        only_lo.truncate(1);
        let s = NetworkStats::new(SystemTime::now(), only_lo);
        assert_eq!(s.default_interface, None);
        assert!(s.default().is_none());
    }

    #[test]
    fn not_a_namespace_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("net");
        let e = network(&missing).unwrap_err();
        assert!(matches!(e, StatsError::NotFound(_)), "{e}");
        std::fs::write(&missing, "").unwrap();
        let e = network(&missing).unwrap_err();
        assert!(matches!(e, StatsError::Netns { .. }), "{e}");
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );
    }
}
