//! The container edits that resolving CDI devices yields, in plain types for the spec generator,
//! and the one step that looks at the host: filling a device node's type, major, minor and mode
//! from `stat(2)` of its host path when the spec file leaves them out.

use super::CdiError;
use std::path::{Path, PathBuf};

/// Everything the requested devices ask of a container, in order: for each requested device
/// (first occurrence), the spec-level edits of its spec file (once per file), then the device's
/// own edits.
///
/// Mapping into the OCI spec is the generator's job:
/// - `env`: appended to `process.env` (`NAME=value`; a later entry for a name wins).
/// - `device_nodes`: `linux.devices`, and for block and char devices a `linux.resources.devices`
///   allow rule of `permissions`. A node whose uid/gid are `None` takes the container process's.
///   Call [`ContainerEdits::fill_device_info`] first, so that type, major and minor are known.
/// - `mounts`: `mounts` (a mount replaces an earlier one at the same container path).
/// - `hooks`: OCI hooks by `hook_name`. This module only carries them; the spec generator
///   copies them into the OCI spec's `hooks`, and the OCI runtime runs them.
/// - `additional_gids`: `process.user.additionalGids` (zeros are already left out).
/// - `intel_rdt`: `linux.intelRdt` (the last device that sets it wins). Not applied by ferrio
///   yet: [`ContainerEdits::unsupported`] names it and CreateContainer refuses such a device.
/// - `net_devices`: `linux.netDevices` (host interfaces moved into the container). Not applied
///   by ferrio yet either.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerEdits {
    pub env: Vec<String>,
    pub device_nodes: Vec<DeviceNode>,
    pub mounts: Vec<Mount>,
    pub hooks: Vec<Hook>,
    pub additional_gids: Vec<u32>,
    pub intel_rdt: Option<IntelRdt>,
    pub net_devices: Vec<NetDevice>,
}

/// The kind of a device node, as `linux.devices[].type` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceType {
    /// `b`
    Block,
    /// `c`
    Char,
    /// `u`: an unbuffered character device.
    Unbuffered,
    /// `p`
    Fifo,
}

impl DeviceType {
    pub(crate) fn parse(s: &str) -> Option<DeviceType> {
        match s {
            "b" => Some(DeviceType::Block),
            "c" => Some(DeviceType::Char),
            "u" => Some(DeviceType::Unbuffered),
            "p" => Some(DeviceType::Fifo),
            _ => None,
        }
    }

    /// The OCI letter: `b`, `c`, `u` or `p`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::Block => "b",
            DeviceType::Char => "c",
            DeviceType::Unbuffered => "u",
            DeviceType::Fifo => "p",
        }
    }

    /// `c` and `u` are the same kind of node on the host; stat cannot tell them apart.
    fn same_node_kind(self, other: DeviceType) -> bool {
        let norm = |t| match t {
            DeviceType::Unbuffered => DeviceType::Char,
            t => t,
        };
        norm(self) == norm(other)
    }
}

/// A device node to create in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    /// Where the node appears in the container (absolute).
    pub path: PathBuf,
    /// The node on the host; the spec file's `hostPath`, or `path` when it gives none.
    pub host_path: PathBuf,
    /// `None` until [`ContainerEdits::fill_device_info`] if the spec file left it out.
    pub device_type: Option<DeviceType>,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    /// The node's permission bits (`fileMode`), e.g. `0o666`.
    pub file_mode: Option<u32>,
    /// The cgroup access to allow, already normalised: the spec file's `permissions`, `"rwm"`
    /// when it gives none, `""` for `"none"`.
    pub permissions: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// A mount to add to the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: PathBuf,
    /// The filesystem type (`type`, spec v0.4.0 and later); `None` for a bind mount that
    /// gives none.
    pub mount_type: Option<String>,
    pub options: Vec<String>,
}

/// An OCI lifecycle hook asked for by a spec file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// One of `prestart`, `createRuntime`, `createContainer`, `startContainer`, `poststart`,
    /// `poststop`.
    pub hook_name: String,
    /// Absolute path of the program.
    pub path: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// Seconds, greater than zero when set.
    pub timeout: Option<i64>,
}

/// Intel RDT (resctrl) settings (`intelRdt`, spec v0.7.0 and later).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IntelRdt {
    pub clos_id: Option<String>,
    pub l3_cache_schema: Option<String>,
    pub mem_bw_schema: Option<String>,
    pub schemata: Vec<String>,
    pub enable_monitoring: bool,
}

/// A host network interface to move into the container (`netDevices`, spec v1.1.0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDevice {
    pub host_interface_name: String,
    /// Its name inside the container.
    pub name: String,
}

/// What `stat(2)` says about a device node on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostDeviceInfo {
    pub device_type: DeviceType,
    pub major: i64,
    pub minor: i64,
    pub file_mode: u32,
}

impl HostDeviceInfo {
    /// Stats `path` (following symlinks, as `/dev/dri/by-path/*` are). A path that is no device
    /// node or FIFO is an error.
    pub fn stat(path: &Path) -> Result<HostDeviceInfo, String> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
        let ft = meta.file_type();
        let device_type = if ft.is_block_device() {
            DeviceType::Block
        } else if ft.is_char_device() {
            DeviceType::Char
        } else if ft.is_fifo() {
            DeviceType::Fifo
        } else {
            return Err("not a device node".into());
        };
        let rdev = meta.rdev();
        Ok(HostDeviceInfo {
            device_type,
            major: nix::sys::stat::major(rdev) as i64,
            minor: nix::sys::stat::minor(rdev) as i64,
            file_mode: meta.mode() & 0o7777,
        })
    }
}

impl DeviceNode {
    /// True when the spec file gave enough to create the node without the host's help: a type
    /// and a major number (a FIFO needs no numbers).
    pub fn fully_specified(&self) -> bool {
        match self.device_type {
            Some(DeviceType::Fifo) => true,
            Some(_) => self.major.is_some(),
            None => false,
        }
    }

    /// A node given with a type and a major but no minor has minor 0.
    fn default_minor(&mut self) {
        if self.device_type != Some(DeviceType::Fifo) {
            self.minor.get_or_insert(0);
        }
    }

    /// Fills what the spec file left out from what the host says (`host` is `Err` with the
    /// reason when the host path could not be statted). Pure, so that it can be tested without
    /// device nodes.
    ///
    /// A fully specified node keeps its numbers (the host may lack the node: a vendor may
    /// describe a node completely) and only takes the host's mode when it gives none. Otherwise
    /// the host path must be a device node of the same type, and the missing type, major,
    /// minor and mode come from it.
    pub fn fill_from(&mut self, host: Result<HostDeviceInfo, String>) -> Result<(), CdiError> {
        let info = match host {
            Ok(info) => info,
            Err(_) if self.fully_specified() => {
                self.default_minor();
                return Ok(());
            }
            Err(reason) => {
                return Err(CdiError::HostDevice {
                    path: self.path.clone(),
                    host_path: self.host_path.clone(),
                    reason,
                })
            }
        };
        if self.file_mode.is_none() {
            self.file_mode = Some(info.file_mode);
        }
        if self.fully_specified() {
            self.default_minor();
            return Ok(());
        }
        match self.device_type {
            None => self.device_type = Some(info.device_type),
            Some(t) if t.same_node_kind(info.device_type) => {}
            Some(t) => {
                return Err(CdiError::HostDevice {
                    path: self.path.clone(),
                    host_path: self.host_path.clone(),
                    reason: format!(
                        "the spec file says type {:?}, the host node is type {:?}",
                        t.as_str(),
                        info.device_type.as_str()
                    ),
                })
            }
        }
        if info.device_type != DeviceType::Fifo {
            self.major.get_or_insert(info.major);
            self.minor.get_or_insert(info.minor);
        }
        Ok(())
    }
}

impl ContainerEdits {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self == &ContainerEdits::default()
    }

    /// What ferrio cannot apply yet, if these edits ask for it: `"intelRdt"` or `"netDevices"`.
    pub fn unsupported(&self) -> Option<&'static str> {
        if self.intel_rdt.is_some() {
            Some("intelRdt")
        } else if !self.net_devices.is_empty() {
            Some("netDevices")
        } else {
            None
        }
    }

    /// Appends `other` after `self`.
    pub(crate) fn append(&mut self, other: &ContainerEdits) {
        self.env.extend(other.env.iter().cloned());
        self.device_nodes.extend(other.device_nodes.iter().cloned());
        self.mounts.extend(other.mounts.iter().cloned());
        self.hooks.extend(other.hooks.iter().cloned());
        self.additional_gids
            .extend(other.additional_gids.iter().copied());
        if other.intel_rdt.is_some() {
            self.intel_rdt.clone_from(&other.intel_rdt);
        }
        self.net_devices.extend(other.net_devices.iter().cloned());
    }

    /// The step that reads the host: every device node whose type or numbers the spec file
    /// left out gets them from `stat(2)` of its host path (see [`DeviceNode::fill_from`]).
    /// A missing or non-device host path of such a node is an error naming both paths.
    pub fn fill_device_info(&mut self) -> Result<(), CdiError> {
        for node in &mut self.device_nodes {
            let host = HostDeviceInfo::stat(&node.host_path);
            node.fill_from(host)?;
        }
        Ok(())
    }
}
