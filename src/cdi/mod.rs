//! Container Device Interface (CDI): the devices CreateContainer's `cdi_devices` names
//! (`vendor.com/class=name`), resolved from the spec files that device vendors install, into
//! the edits the spec generator applies to a container's OCI spec.
//!
//! - [`Registry::load`] reads every `*.json`, `*.yaml` and `*.yml` file directly in the spec
//!   directories (default `/etc/cdi`, then `/var/run/cdi`; no subdirectories). JSON files are
//!   read as JSON, the others as YAML. A file is validated whole: a supported `cdiVersion`
//!   ([`SUPPORTED_VERSIONS`], 0.3.0 to 1.1.0) no older than the fields it uses need, a valid
//!   `kind` and device names, no unknown fields, at least one device, each device with edits.
//! - A device defined in a later directory overrides the same fully qualified device of an
//!   earlier one. The same device in two files of one directory is a conflict: requesting it is
//!   an error naming both files (other devices stay usable).
//! - A spec file that cannot be read or is invalid is skipped and logged (warn); the rest stay
//!   usable, as one vendor's broken file must not take every device away. The skipped files
//!   are in [`Registry::spec_errors`], and an unknown-device error lists them too.
//! - [`Registry::resolve`] turns requested names into one [`ContainerEdits`]: for each device
//!   (in request order, duplicates once), its spec file's spec-level `containerEdits` (once per
//!   file) followed by the device's own. This is pure.
//! - [`ContainerEdits::fill_device_info`] is the one step that reads the host: device nodes
//!   without type, major or minor get them from `stat(2)` of their host path.
//!
//! Hooks are carried in [`ContainerEdits::hooks`] but this module runs nothing; see
//! [`ContainerEdits`] for what the spec generator is expected to do with each field. Spec and
//! device `annotations` are accepted (for the version check) and otherwise ignored.

mod edits;
mod name;
mod spec;
#[cfg(test)]
mod tests;

pub use edits::{
    ContainerEdits, DeviceNode, DeviceType, Hook, HostDeviceInfo, IntelRdt, Mount, NetDevice,
};
pub use name::QualifiedName;
pub use spec::SUPPORTED_VERSIONS;

use crate::error::{ErrorKind, Kind};
use spec::Spec;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The spec directories the CDI specification names, lowest priority first.
pub const DEFAULT_SPEC_DIRS: &[&str] = &["/etc/cdi", "/var/run/cdi"];

#[derive(Debug, thiserror::Error)]
pub enum CdiError {
    #[error("invalid CDI device name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error(
        "unknown CDI device {name:?}: no spec file in {} defines it{}",
        join_paths(.dirs),
        skipped_note(.skipped)
    )]
    UnknownDevice {
        name: String,
        /// The spec directories searched.
        dirs: Vec<PathBuf>,
        /// Spec files that were skipped because they are invalid or unreadable.
        skipped: Vec<PathBuf>,
    },
    #[error("CDI device {name:?} is defined twice in {}: in {} and in {}", .dir.display(), .first.display(), .second.display())]
    Conflict {
        name: String,
        dir: PathBuf,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("reading CDI spec directory {}: {source}", .dir.display())]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading CDI spec file {}: {source}", .path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CDI spec file {}: {message}", .path.display())]
    InvalidSpec { path: PathBuf, message: String },
    #[error("CDI device {name:?} asks for {what}, which is not supported by ferrio yet")]
    Unsupported { name: String, what: &'static str },
    #[error("annotation {key:?}: {reason}")]
    InvalidAnnotation { key: String, reason: String },
    #[error("CDI device node {} (host path {}): {reason}", .path.display(), .host_path.display())]
    HostDevice {
        path: PathBuf,
        host_path: PathBuf,
        reason: String,
    },
}

fn join_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "no spec directory".into();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn skipped_note(skipped: &[PathBuf]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!(" (skipped as invalid: {})", join_paths(skipped))
    }
}

impl ErrorKind for CdiError {
    fn kind(&self) -> Kind {
        match self {
            CdiError::InvalidName { .. }
            | CdiError::UnknownDevice { .. }
            | CdiError::Conflict { .. }
            | CdiError::Unsupported { .. }
            | CdiError::InvalidAnnotation { .. }
            | CdiError::ReadFile { .. }
            | CdiError::InvalidSpec { .. } => Kind::InvalidArgument,
            // The host lacks what a valid spec file describes.
            CdiError::HostDevice { .. } => Kind::FailedPrecondition,
            CdiError::ReadDir { .. } => Kind::Internal,
        }
    }
}

/// Where a fully qualified device name leads.
#[derive(Debug, Clone)]
enum Slot {
    /// `specs[spec].devices[device]`.
    Device { spec: usize, device: usize },
    /// Defined by two files of one directory.
    Conflict {
        dir: PathBuf,
        first: PathBuf,
        second: PathBuf,
    },
}

/// The CDI devices of a set of spec directories, as loaded at one moment.
#[derive(Debug, Default)]
pub struct Registry {
    dirs: Vec<PathBuf>,
    specs: Vec<Spec>,
    devices: BTreeMap<String, Slot>,
    spec_errors: Vec<CdiError>,
}

impl Registry {
    /// Reads the spec files of `dirs` (lowest priority first). A missing directory is skipped;
    /// a directory that cannot be read is an error. Invalid spec files are skipped and kept in
    /// [`Registry::spec_errors`].
    pub fn load<P: AsRef<Path>>(dirs: &[P]) -> Result<Registry, CdiError> {
        let mut reg = Registry {
            dirs: dirs.iter().map(|d| d.as_ref().to_path_buf()).collect(),
            ..Registry::default()
        };
        for dir in dirs.iter().map(AsRef::as_ref) {
            let files = match spec_files(dir) {
                Ok(files) => files,
                Err(source) if source.kind() == std::io::ErrorKind::NotFound => {
                    tracing::debug!(dir = %dir.display(), "no CDI spec directory");
                    continue;
                }
                Err(source) => {
                    return Err(CdiError::ReadDir {
                        dir: dir.to_path_buf(),
                        source,
                    })
                }
            };
            let mut here: BTreeMap<String, Slot> = BTreeMap::new();
            for path in files {
                let parsed = std::fs::read(&path)
                    .map_err(|source| CdiError::ReadFile {
                        path: path.clone(),
                        source,
                    })
                    .and_then(|bytes| spec::parse(&path, &bytes));
                let spec = match parsed {
                    Ok(spec) => spec,
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping CDI spec file");
                        reg.spec_errors.push(e);
                        continue;
                    }
                };
                let index = reg.specs.len();
                for (device, (name, _)) in spec.devices.iter().enumerate() {
                    let qualified = format!("{}={}", spec.kind, name);
                    let slot = match here.get(&qualified) {
                        None => Slot::Device {
                            spec: index,
                            device,
                        },
                        Some(Slot::Device { spec: other, .. }) => {
                            let first = reg.specs[*other].path.clone();
                            tracing::warn!(
                                device = %qualified,
                                first = %first.display(),
                                second = %path.display(),
                                "CDI device defined twice in one directory; it cannot be used"
                            );
                            Slot::Conflict {
                                dir: dir.to_path_buf(),
                                first,
                                second: path.clone(),
                            }
                        }
                        Some(conflict @ Slot::Conflict { .. }) => conflict.clone(),
                    };
                    here.insert(qualified, slot);
                }
                tracing::debug!(
                    file = %path.display(),
                    kind = %spec.kind,
                    devices = spec.devices.len(),
                    "CDI spec file loaded"
                );
                reg.specs.push(spec);
            }
            // A later directory overrides an earlier one, device by device.
            reg.devices.extend(here);
        }
        Ok(reg)
    }

    /// The spec directories, lowest priority first.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Every fully qualified device name that resolves (conflicting ones left out), sorted.
    pub fn device_names(&self) -> Vec<String> {
        self.devices
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Device { .. }))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The spec files that were skipped, each error naming its file.
    pub fn spec_errors(&self) -> &[CdiError] {
        &self.spec_errors
    }

    /// The spec file that defines a device, if it resolves.
    pub fn spec_file_of(&self, name: &str) -> Option<&Path> {
        match self.devices.get(name)? {
            Slot::Device { spec, .. } => Some(&self.specs[*spec].path),
            Slot::Conflict { .. } => None,
        }
    }

    /// Resolves fully qualified device names into the union of their edits (see the module
    /// doc for the order). Every name must be well-formed, known and unambiguous. Device nodes
    /// may still lack type and numbers: call [`ContainerEdits::fill_device_info`] next.
    pub fn resolve<S: AsRef<str>>(&self, names: &[S]) -> Result<ContainerEdits, CdiError> {
        let mut wanted: Vec<(usize, usize)> = Vec::new();
        for name in names.iter().map(AsRef::as_ref) {
            let qualified = QualifiedName::parse(name).map_err(|reason| CdiError::InvalidName {
                name: name.to_string(),
                reason,
            })?;
            match self.devices.get(&qualified.to_string()) {
                None => {
                    return Err(CdiError::UnknownDevice {
                        name: name.to_string(),
                        dirs: self.dirs.clone(),
                        skipped: self.skipped_files(),
                    })
                }
                Some(Slot::Conflict { dir, first, second }) => {
                    return Err(CdiError::Conflict {
                        name: name.to_string(),
                        dir: dir.clone(),
                        first: first.clone(),
                        second: second.clone(),
                    })
                }
                Some(&Slot::Device { spec, device }) => {
                    if !wanted.contains(&(spec, device)) {
                        wanted.push((spec, device));
                    }
                }
            }
        }
        let mut edits = ContainerEdits::default();
        let mut specs_applied = BTreeSet::new();
        for (index, device) in wanted {
            let spec = &self.specs[index];
            if specs_applied.insert(index) {
                edits.append(&spec.edits);
            }
            edits.append(&spec.devices[device].1);
        }
        tracing::debug!(devices = ?names.iter().map(AsRef::as_ref).collect::<Vec<_>>(), "CDI devices resolved");
        Ok(edits)
    }

    /// [`Registry::resolve`], refusing devices whose edits ferrio cannot apply yet (`intelRdt`,
    /// `netDevices`; see [`ContainerEdits::unsupported`]): the error names the first such device.
    pub fn resolve_supported<S: AsRef<str>>(
        &self,
        names: &[S],
    ) -> Result<ContainerEdits, CdiError> {
        let edits = self.resolve(names)?;
        let Some(what) = edits.unsupported() else {
            return Ok(edits);
        };
        // Find the device that carries it (its own edits or its spec file's).
        let name = names.iter().map(AsRef::as_ref).find_map(|n| {
            let one = self.resolve(&[n]).ok()?;
            one.unsupported().map(|w| (n.to_string(), w))
        });
        let (name, what) = name.unwrap_or_else(|| (names_list(names), what));
        Err(CdiError::Unsupported { name, what })
    }

    fn skipped_files(&self) -> Vec<PathBuf> {
        self.spec_errors
            .iter()
            .filter_map(|e| match e {
                CdiError::ReadFile { path, .. } | CdiError::InvalidSpec { path, .. } => {
                    Some(path.clone())
                }
                _ => None,
            })
            .collect()
    }
}

fn names_list<S: AsRef<str>>(names: &[S]) -> String {
    names
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(",")
}

/// The prefix of the container annotations that request CDI devices, as CRI-O reads them:
/// `cdi.k8s.io/<key>` with a comma-separated list of fully qualified device names.
pub const ANNOTATION_PREFIX: &str = "cdi.k8s.io/";

/// The devices a container asks for: `cdi_devices` (the CRI field) in order, then those of the
/// `cdi.k8s.io/*` annotations (by key) that the field does not already name; duplicates once.
/// Every annotated name must be fully qualified (spaces around the commas are allowed); an
/// annotation key with nothing after the prefix is an error.
pub fn requested_devices<'a, I>(
    cdi_devices: &[String],
    annotations: I,
) -> Result<Vec<String>, CdiError>
where
    I: IntoIterator<Item = (&'a String, &'a String)>,
{
    let mut out: Vec<String> = Vec::new();
    for name in cdi_devices {
        if !out.contains(name) {
            out.push(name.clone());
        }
    }
    for (key, value) in annotations {
        let Some(rest) = key.strip_prefix(ANNOTATION_PREFIX) else {
            continue;
        };
        if rest.is_empty() {
            return Err(CdiError::InvalidAnnotation {
                key: key.clone(),
                reason: "no key after the prefix".into(),
            });
        }
        for name in value.split(',').map(str::trim) {
            QualifiedName::parse(name).map_err(|reason| CdiError::InvalidAnnotation {
                key: key.clone(),
                reason: format!("invalid CDI device name {name:?}: {reason}"),
            })?;
            if !out.iter().any(|n| n == name) {
                out.push(name.to_string());
            }
        }
    }
    Ok(out)
}

/// The spec files directly in `dir`, by name. Entries that are (or point to) directories are
/// left out; a dangling symlink with a spec file's name is kept, so that reading it reports it.
fn spec_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if spec::is_spec_file_name(&path) && !path.is_dir() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
