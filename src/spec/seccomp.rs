//! Seccomp profiles: the RuntimeDefault profile and the translation of a profile into the OCI
//! runtime spec's `linux.seccomp` section.
//!
//! A profile is in the JSON format Docker, Podman and CRI-O read (see
//! `seccomp-profiles/README.md`): OCI's seccomp section plus conditions on rules (`includes` /
//! `excludes` by capability, architecture and kernel version) and an architecture map.
//! [`Profile::resolve`] evaluates those conditions for one container on one host and returns the
//! plain OCI section. Everything here is pure: the caller passes the host architecture, the
//! container's capabilities and the kernel version.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use nix::libc;
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscallBuilder,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{ErrorKind, Kind};

/// The RuntimeDefault profile, compiled in.
const DEFAULT_PROFILE: &[u8] = include_bytes!("../../seccomp-profiles/default.json");

/// Syscalls take at most six arguments.
const MAX_ARG_INDEX: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// Not JSON, or JSON not in the profile format (unknown key, wrong type, missing key).
    #[error("seccomp profile: {source}")]
    Parse {
        #[source]
        source: serde_json::Error,
    },
    /// Well-formed JSON with a value that makes no sense; `at` says where (`syscalls[3].args[0]`).
    #[error("seccomp profile: {at}: {reason}")]
    Invalid { at: String, reason: String },
    #[error("seccomp: host architecture {arch:?} is not supported (supported: {supported})")]
    UnsupportedArch { arch: String, supported: String },
    #[error("seccomp: building the OCI seccomp section: {source}")]
    Build {
        #[source]
        source: oci_spec::OciSpecError,
    },
}

impl ErrorKind for SeccompError {
    fn kind(&self) -> Kind {
        match self {
            SeccompError::Parse { .. } | SeccompError::Invalid { .. } => Kind::InvalidArgument,
            SeccompError::UnsupportedArch { .. } => Kind::FailedPrecondition,
            SeccompError::Build { .. } => Kind::Internal,
        }
    }
}

fn invalid(at: impl Into<String>, reason: impl Into<String>) -> SeccompError {
    SeccompError::Invalid {
        at: at.into(),
        reason: reason.into(),
    }
}

/// A kernel version as profiles compare it: `major.minor`, patch level and suffixes ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
}

impl KernelVersion {
    pub const fn new(major: u32, minor: u32) -> Self {
        KernelVersion { major, minor }
    }

    /// The version in a `uname -r` release string: `"6.1.0-18-amd64"` → 6.1,
    /// `"5.15.0-rc5"` → 5.15, `"4.8"` → 4.8. `None` if it does not start with `<n>.<n>`.
    pub fn parse_release(release: &str) -> Option<KernelVersion> {
        let mut parts = release.trim().splitn(3, '.');
        let major = parts.next()?.parse().ok()?;
        let minor_part = parts.next()?;
        let digits = minor_part
            .find(|c: char| !c.is_ascii_digit())
            .map_or(minor_part, |end| &minor_part[..end]);
        let minor = digits.parse().ok()?;
        Some(KernelVersion { major, minor })
    }

    /// The strict `"<major>.<minor>"` form a profile's `minKernel` uses.
    fn parse_min_kernel(s: &str) -> Option<KernelVersion> {
        let (major, minor) = s.split_once('.')?;
        let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(major) || !all_digits(minor) {
            return None;
        }
        let v = KernelVersion {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        };
        (v != KernelVersion::new(0, 0)).then_some(v)
    }
}

impl From<(u32, u32)> for KernelVersion {
    fn from((major, minor): (u32, u32)) -> Self {
        KernelVersion { major, minor }
    }
}

impl std::fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A parsed, checked seccomp profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub default_action: LinuxSeccompAction,
    pub default_errno_ret: Option<u32>,
    /// OCI-style flat list of architectures (older profiles); used as is when not empty.
    pub architectures: Vec<Arch>,
    /// Native architecture → the architectures to filter when running on it.
    pub arch_map: Vec<ArchMapEntry>,
    pub flags: Vec<LinuxSeccompFilterFlag>,
    pub listener_path: Option<PathBuf>,
    pub listener_metadata: Option<String>,
    pub syscalls: Vec<SyscallRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchMapEntry {
    pub architecture: Arch,
    pub sub_architectures: Vec<Arch>,
}

/// One rule: an action for some syscalls, maybe only for some arguments, maybe only under
/// conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyscallRule {
    pub names: Vec<String>,
    pub action: LinuxSeccompAction,
    pub errno_ret: Option<u32>,
    /// All must hold (they are ANDed).
    pub args: Vec<ArgRule>,
    pub comment: Option<String>,
    pub includes: Condition,
    pub excludes: Condition,
}

/// A comparison of one syscall argument. For `SCMP_CMP_MASKED_EQ`, `value` is the mask and
/// `value_two` what the masked argument must equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgRule {
    pub index: u32,
    pub value: u64,
    pub value_two: u64,
    pub op: LinuxSeccompOperator,
}

/// The `includes` / `excludes` of a rule. Capabilities are stored as `CAP_…`; architectures in
/// libseccomp's spelling (`amd64`, `arm64`, `x86`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Condition {
    pub caps: Vec<String>,
    pub arches: Vec<String>,
    pub min_kernel: Option<KernelVersion>,
}

/// A host architecture this module can resolve a profile for.
struct HostArch {
    /// `std::env::consts::ARCH` spelling.
    name: &'static str,
    arch: Arch,
    /// How profiles' `arches` lists name it (libseccomp's name first).
    aliases: &'static [&'static str],
}

/// s390x is missing on purpose: its `clone` takes the flags in argument 1, and the default
/// profile does not carry the rule for that.
const HOST_ARCHES: &[HostArch] = &[
    HostArch {
        name: "x86_64",
        arch: Arch::ScmpArchX86_64,
        aliases: &["amd64", "x86_64"],
    },
    HostArch {
        name: "aarch64",
        arch: Arch::ScmpArchAarch64,
        aliases: &["arm64", "aarch64"],
    },
    HostArch {
        name: "riscv64",
        arch: Arch::ScmpArchRiscv64,
        aliases: &["riscv64"],
    },
    HostArch {
        name: "x86",
        arch: Arch::ScmpArchX86,
        aliases: &["x86"],
    },
    HostArch {
        name: "arm",
        arch: Arch::ScmpArchArm,
        aliases: &["arm"],
    },
];

impl Profile {
    /// Parses and checks a profile. Errors name the offending place (`syscalls[3].action`).
    pub fn from_json(bytes: &[u8]) -> Result<Profile, SeccompError> {
        let raw: RawProfile =
            serde_json::from_slice(bytes).map_err(|source| SeccompError::Parse { source })?;
        raw.check()
    }

    /// The RuntimeDefault profile (`seccomp-profiles/default.json`, compiled in), parsed once.
    pub fn default_profile() -> &'static Profile {
        static DEFAULT: OnceLock<Profile> = OnceLock::new();
        // The file is part of the source and a unit test parses it, so this cannot fail in a
        // tested build.
        DEFAULT.get_or_init(|| {
            Profile::from_json(DEFAULT_PROFILE).expect("seccomp-profiles/default.json is valid")
        })
    }

    /// The OCI seccomp section for one container on one host.
    ///
    /// `arch` is the host architecture as `std::env::consts::ARCH` spells it (`"x86_64"`,
    /// `"aarch64"`), `caps` the container's capabilities (`"CAP_SYS_ADMIN"`; `"SYS_ADMIN"` is
    /// accepted too), `kernel` the running kernel's version (for `minKernel`).
    pub fn resolve(
        &self,
        arch: &str,
        caps: &[String],
        kernel: KernelVersion,
    ) -> Result<LinuxSeccomp, SeccompError> {
        let host = HOST_ARCHES.iter().find(|h| h.name == arch).ok_or_else(|| {
            SeccompError::UnsupportedArch {
                arch: arch.to_string(),
                supported: HOST_ARCHES
                    .iter()
                    .map(|h| h.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })?;
        let caps: HashSet<String> = caps.iter().map(|c| normalize_cap(c)).collect();

        let architectures: Vec<Arch> = if !self.architectures.is_empty() {
            self.architectures.clone()
        } else {
            self.arch_map
                .iter()
                .find(|entry| entry.architecture == host.arch)
                .map(|entry| {
                    std::iter::once(entry.architecture)
                        .chain(entry.sub_architectures.iter().copied())
                        .collect()
                })
                .unwrap_or_default()
        };

        let mut syscalls = Vec::new();
        for rule in &self.syscalls {
            if !rule.applies(host, &caps, kernel) {
                continue;
            }
            let mut builder = LinuxSyscallBuilder::default()
                .names(rule.names.clone())
                .action(rule.action);
            if let Some(errno) = rule.errno_ret {
                builder = builder.errno_ret(errno);
            }
            if !rule.args.is_empty() {
                let args = rule
                    .args
                    .iter()
                    .map(|arg| arg.to_oci())
                    .collect::<Result<Vec<_>, _>>()?;
                builder = builder.args(args);
            }
            syscalls.push(
                builder
                    .build()
                    .map_err(|source| SeccompError::Build { source })?,
            );
        }

        let mut builder = LinuxSeccompBuilder::default()
            .default_action(self.default_action)
            .syscalls(syscalls);
        if let Some(errno) = self.default_errno_ret {
            builder = builder.default_errno_ret(errno);
        }
        if !architectures.is_empty() {
            builder = builder.architectures(architectures);
        }
        if !self.flags.is_empty() {
            builder = builder.flags(self.flags.clone());
        }
        if let Some(path) = &self.listener_path {
            builder = builder.listener_path(path.clone());
        }
        if let Some(metadata) = &self.listener_metadata {
            builder = builder.listener_metadata(metadata.clone());
        }
        builder
            .build()
            .map_err(|source| SeccompError::Build { source })
    }
}

impl SyscallRule {
    fn applies(&self, host: &HostArch, caps: &HashSet<String>, kernel: KernelVersion) -> bool {
        let on_host = |arches: &[String]| arches.iter().any(|a| host.aliases.contains(&a.as_str()));

        let inc = &self.includes;
        if !inc.arches.is_empty() && !on_host(&inc.arches) {
            return false;
        }
        if !inc.caps.iter().all(|c| caps.contains(c)) {
            return false;
        }
        if inc.min_kernel.is_some_and(|min| kernel < min) {
            return false;
        }

        let exc = &self.excludes;
        if on_host(&exc.arches) {
            return false;
        }
        if exc.caps.iter().any(|c| caps.contains(c)) {
            return false;
        }
        if exc.min_kernel.is_some_and(|min| kernel >= min) {
            return false;
        }
        true
    }
}

impl ArgRule {
    fn to_oci(self) -> Result<LinuxSeccompArg, SeccompError> {
        LinuxSeccompArgBuilder::default()
            .index(self.index as usize)
            .value(self.value)
            .value_two(self.value_two)
            .op(self.op)
            .build()
            .map_err(|source| SeccompError::Build { source })
    }
}

/// The same section with the operands of every `SCMP_CMP_MASKED_EQ` comparison swapped, for
/// youki's libcontainer (0.7).
///
/// The OCI runtime spec (as runc and crun implement it, and as profiles are written) reads
/// `{"value": mask, "valueTwo": expected}`: the rule matches when `arg & value == valueTwo`.
/// libcontainer 0.7 builds its libseccomp comparison the other way round (mask = `valueTwo`,
/// expected = `value`), so the RuntimeDefault `clone` rule `{"value": 0x7e020000, "valueTwo": 0}`
/// would become `arg & 0 == 0x7e020000`, which libseccomp reduces to "always true": namespace
/// flags would no longer be filtered. Pass the section through this function before handing it
/// to libcontainer's own seccomp code — only done for filters with notify actions; ferrio
/// compiles every other filter itself (`runtime::seccomp`), and runc and crun get
/// [`Profile::resolve`]'s output.
pub fn for_libcontainer(seccomp: &LinuxSeccomp) -> Result<LinuxSeccomp, SeccompError> {
    let swap = |arg: &LinuxSeccompArg| -> Result<LinuxSeccompArg, SeccompError> {
        if arg.op() != LinuxSeccompOperator::ScmpCmpMaskedEq {
            return Ok(*arg);
        }
        ArgRule {
            // The section is `Profile::resolve`'s, whose indexes are checked (≤ MAX_ARG_INDEX).
            index: u32::try_from(arg.index()).unwrap_or(u32::MAX),
            value: arg.value_two().unwrap_or(0),
            value_two: arg.value(),
            op: arg.op(),
        }
        .to_oci()
    };
    let mut out = seccomp.clone();
    if let Some(syscalls) = seccomp.syscalls() {
        let mut swapped = Vec::with_capacity(syscalls.len());
        for syscall in syscalls {
            let mut syscall = syscall.clone();
            if let Some(args) = syscall.args() {
                let args = args.iter().map(swap).collect::<Result<Vec<_>, _>>()?;
                syscall.set_args(Some(args));
            }
            swapped.push(syscall);
        }
        out.set_syscalls(Some(swapped));
    }
    Ok(out)
}

/// `"sys_admin"`, `"SYS_ADMIN"`, `"CAP_SYS_ADMIN"` → `"CAP_SYS_ADMIN"`.
fn normalize_cap(cap: &str) -> String {
    let cap = cap.trim().to_ascii_uppercase();
    if cap.starts_with("CAP_") {
        cap
    } else {
        format!("CAP_{cap}")
    }
}

/// Errno names a profile may use in `errno` / `defaultErrno` (the Podman/CRI-O form).
const ERRNO_NAMES: &[(&str, i32)] = &[
    ("EPERM", libc::EPERM),
    ("ENOENT", libc::ENOENT),
    ("ESRCH", libc::ESRCH),
    ("EINTR", libc::EINTR),
    ("EIO", libc::EIO),
    ("ENXIO", libc::ENXIO),
    ("E2BIG", libc::E2BIG),
    ("ENOEXEC", libc::ENOEXEC),
    ("EBADF", libc::EBADF),
    ("ECHILD", libc::ECHILD),
    ("EAGAIN", libc::EAGAIN),
    ("EWOULDBLOCK", libc::EWOULDBLOCK),
    ("ENOMEM", libc::ENOMEM),
    ("EACCES", libc::EACCES),
    ("EFAULT", libc::EFAULT),
    ("EBUSY", libc::EBUSY),
    ("EEXIST", libc::EEXIST),
    ("EXDEV", libc::EXDEV),
    ("ENODEV", libc::ENODEV),
    ("ENOTDIR", libc::ENOTDIR),
    ("EISDIR", libc::EISDIR),
    ("EINVAL", libc::EINVAL),
    ("ENFILE", libc::ENFILE),
    ("EMFILE", libc::EMFILE),
    ("ENOTTY", libc::ENOTTY),
    ("ETXTBSY", libc::ETXTBSY),
    ("EFBIG", libc::EFBIG),
    ("ENOSPC", libc::ENOSPC),
    ("ESPIPE", libc::ESPIPE),
    ("EROFS", libc::EROFS),
    ("EMLINK", libc::EMLINK),
    ("EPIPE", libc::EPIPE),
    ("EDOM", libc::EDOM),
    ("ERANGE", libc::ERANGE),
    ("ENOSYS", libc::ENOSYS),
    ("ENOTSOCK", libc::ENOTSOCK),
    ("EPROTONOSUPPORT", libc::EPROTONOSUPPORT),
    ("EOPNOTSUPP", libc::EOPNOTSUPP),
    ("ENOTSUP", libc::ENOTSUP),
    ("EAFNOSUPPORT", libc::EAFNOSUPPORT),
    ("EADDRINUSE", libc::EADDRINUSE),
    ("EADDRNOTAVAIL", libc::EADDRNOTAVAIL),
    ("ENETUNREACH", libc::ENETUNREACH),
    ("ECONNREFUSED", libc::ECONNREFUSED),
];

/// `errnoRet` wins over `errno`; an `errno` name must be known.
fn errno_value(
    at: &str,
    number: Option<u32>,
    name: Option<&str>,
) -> Result<Option<u32>, SeccompError> {
    if number.is_some() {
        return Ok(number);
    }
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    ERRNO_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, v)| Some(v.unsigned_abs()))
        .ok_or_else(|| {
            invalid(
                at,
                format!("unknown errno name {name:?}; give the number in errnoRet instead"),
            )
        })
}

/// Parses one of oci_spec's string enums (`"SCMP_ACT_ALLOW"`, `"SCMP_ARCH_X86_64"`, …).
fn parse_enum<T: DeserializeOwned>(at: &str, what: &str, value: &str) -> Result<T, SeccompError> {
    serde_json::from_value(serde_json::Value::String(value.to_string()))
        .map_err(|e| invalid(at, format!("{what} {value:?}: {e}")))
}

// ---- the JSON format, as read ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawProfile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    default_errno: Option<String>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    arch_map: Option<Vec<RawArchMap>>,
    #[serde(default)]
    flags: Option<Vec<String>>,
    #[serde(default)]
    listener_path: Option<PathBuf>,
    #[serde(default)]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Option<Vec<RawSyscall>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSyscall {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    names: Option<Vec<String>>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    errno: Option<String>,
    #[serde(default)]
    args: Option<Vec<RawArg>>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    includes: Option<RawCondition>,
    #[serde(default)]
    excludes: Option<RawCondition>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawArg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: Option<u64>,
    op: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCondition {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

impl RawProfile {
    fn check(self) -> Result<Profile, SeccompError> {
        let default_action = parse_enum("defaultAction", "action", &self.default_action)?;
        let default_errno_ret = errno_value(
            "defaultErrno",
            self.default_errno_ret,
            self.default_errno.as_deref(),
        )?;

        let architectures = self.architectures.unwrap_or_default();
        let arch_map = self.arch_map.unwrap_or_default();
        if !architectures.is_empty() && !arch_map.is_empty() {
            return Err(invalid(
                "architectures",
                "both architectures and archMap are given; use one of them",
            ));
        }
        let architectures = architectures
            .iter()
            .enumerate()
            .map(|(i, a)| parse_enum(&format!("architectures[{i}]"), "architecture", a))
            .collect::<Result<Vec<Arch>, _>>()?;
        let arch_map = arch_map
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let at = format!("archMap[{i}]");
                Ok(ArchMapEntry {
                    architecture: parse_enum(&at, "architecture", &entry.architecture)?,
                    sub_architectures: entry
                        .sub_architectures
                        .iter()
                        .flatten()
                        .map(|a| parse_enum(&at, "sub-architecture", a))
                        .collect::<Result<_, _>>()?,
                })
            })
            .collect::<Result<Vec<_>, SeccompError>>()?;

        let flags = self
            .flags
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, f)| parse_enum(&format!("flags[{i}]"), "flag", f))
            .collect::<Result<Vec<LinuxSeccompFilterFlag>, _>>()?;

        let syscalls = self
            .syscalls
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, raw)| raw.check(&format!("syscalls[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Profile {
            default_action,
            default_errno_ret,
            architectures,
            arch_map,
            flags,
            listener_path: self.listener_path.filter(|p| !p.as_os_str().is_empty()),
            listener_metadata: self.listener_metadata.filter(|m| !m.is_empty()),
            syscalls,
        })
    }
}

impl RawSyscall {
    fn check(self, at: &str) -> Result<SyscallRule, SeccompError> {
        let names = match (self.name.filter(|n| !n.is_empty()), self.names) {
            (Some(_), Some(names)) if !names.is_empty() => {
                return Err(invalid(at, "both name and names are given; use names"));
            }
            (Some(name), _) => vec![name],
            (None, Some(names)) if !names.is_empty() => names,
            (None, _) => return Err(invalid(at, "the rule names no syscall (names is empty)")),
        };
        if let Some(bad) = names.iter().find(|n| !is_syscall_name(n)) {
            return Err(invalid(
                format!("{at}.names"),
                format!("{bad:?} is not a syscall name"),
            ));
        }

        let action: LinuxSeccompAction =
            parse_enum(&format!("{at}.action"), "action", &self.action)?;
        let errno_ret = errno_value(
            &format!("{at}.errno"),
            self.errno_ret,
            self.errno.as_deref(),
        )?;

        let args = self
            .args
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(j, raw)| {
                let at = format!("{at}.args[{j}]");
                if raw.index > MAX_ARG_INDEX {
                    return Err(invalid(
                        &at,
                        format!(
                            "argument index {} is out of range (syscalls have arguments 0 to {MAX_ARG_INDEX})",
                            raw.index
                        ),
                    ));
                }
                Ok(ArgRule {
                    index: raw.index,
                    value: raw.value,
                    value_two: raw.value_two.unwrap_or(0),
                    op: parse_enum(&at, "operator", &raw.op)?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        Ok(SyscallRule {
            names,
            action,
            errno_ret,
            args,
            comment: self.comment.filter(|c| !c.is_empty()),
            includes: RawCondition::check(self.includes, &format!("{at}.includes"))?,
            excludes: RawCondition::check(self.excludes, &format!("{at}.excludes"))?,
        })
    }
}

impl RawCondition {
    fn check(raw: Option<RawCondition>, at: &str) -> Result<Condition, SeccompError> {
        let Some(raw) = raw else {
            return Ok(Condition::default());
        };
        let min_kernel = match raw.min_kernel.as_deref() {
            None | Some("") => None,
            Some(s) => Some(KernelVersion::parse_min_kernel(s).ok_or_else(|| {
                invalid(
                    format!("{at}.minKernel"),
                    format!("{s:?} is not a kernel version of the form \"<major>.<minor>\""),
                )
            })?),
        };
        Ok(Condition {
            caps: raw
                .caps
                .unwrap_or_default()
                .iter()
                .map(|c| normalize_cap(c))
                .collect(),
            arches: raw.arches.unwrap_or_default(),
            min_kernel,
        })
    }
}

fn is_syscall_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxSyscall;

    const X86_64: &str = "x86_64";
    const KERNEL: KernelVersion = KernelVersion::new(6, 1);
    /// The default capabilities of a CRI container (what the kubelet and CRI-O grant).
    const DEFAULT_CAPS: &[&str] = &crate::spec::DEFAULT_CAPABILITIES;
    const CLONE_NS_MASK: u64 = 0x7e02_0000;

    fn caps(extra: &[&str]) -> Vec<String> {
        DEFAULT_CAPS
            .iter()
            .chain(extra)
            .map(|c| c.to_string())
            .collect()
    }

    fn resolve_default(extra_caps: &[&str]) -> LinuxSeccomp {
        Profile::default_profile()
            .resolve(X86_64, &caps(extra_caps), KERNEL)
            .unwrap()
    }

    /// The rules of a resolved section that name `syscall`.
    fn rules_for<'a>(seccomp: &'a LinuxSeccomp, syscall: &str) -> Vec<&'a LinuxSyscall> {
        seccomp
            .syscalls()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter(|r| r.names().iter().any(|n| n == syscall))
            .collect()
    }

    /// Allowed whatever its arguments.
    fn allowed_unconditionally(seccomp: &LinuxSeccomp, syscall: &str) -> bool {
        rules_for(seccomp, syscall).iter().any(|r| {
            r.action() == LinuxSeccompAction::ScmpActAllow
                && r.args().as_ref().is_none_or(|a| a.is_empty())
        })
    }

    fn allowed_at_all(seccomp: &LinuxSeccomp, syscall: &str) -> bool {
        rules_for(seccomp, syscall)
            .iter()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActAllow)
    }

    #[test]
    fn default_profile_parses() {
        let profile = Profile::from_json(DEFAULT_PROFILE).unwrap();
        assert_eq!(profile.default_action, LinuxSeccompAction::ScmpActErrno);
        assert_eq!(profile.default_errno_ret, Some(libc::EPERM as u32));
        assert!(profile.architectures.is_empty());
        assert!(!profile.syscalls.is_empty());
        assert_eq!(Profile::default_profile(), &profile);
    }

    #[test]
    fn default_profile_allow_list_size() {
        // The unconditional allow-list (no args, no includes/excludes); kept here so a change
        // to it is a conscious one.
        let profile = Profile::default_profile();
        let names: Vec<&str> = profile
            .syscalls
            .iter()
            .filter(|r| {
                r.action == LinuxSeccompAction::ScmpActAllow
                    && r.args.is_empty()
                    && r.includes == Condition::default()
                    && r.excludes == Condition::default()
            })
            .flat_map(|r| r.names.iter().map(String::as_str))
            .collect();
        let unique: HashSet<&str> = names.iter().copied().collect();
        assert_eq!(names.len(), unique.len(), "a syscall is listed twice");
        assert_eq!(unique.len(), 361);
    }

    #[test]
    fn ordinary_syscalls_are_allowed() {
        let seccomp = resolve_default(&[]);
        for syscall in [
            "read",
            "write",
            "execve",
            "exit_group",
            "openat",
            "mmap",
            "futex",
            "rt_sigreturn",
            "fork",
            "getrandom",
        ] {
            assert!(
                allowed_unconditionally(&seccomp, syscall),
                "{syscall} not allowed"
            );
        }
        assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(seccomp.default_errno_ret(), Some(1));
    }

    #[test]
    fn without_sys_admin_namespaces_and_mounts_are_denied() {
        let seccomp = resolve_default(&[]);
        for syscall in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "fsopen",
            "sethostname",
            "bpf",
        ] {
            assert!(
                rules_for(&seccomp, syscall).is_empty(),
                "{syscall} has a rule"
            );
        }

        let clone3 = rules_for(&seccomp, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(libc::ENOSYS as u32));
        assert_eq!(clone3[0].errno_ret(), Some(38));

        let clone = rules_for(&seccomp, "clone");
        assert_eq!(clone.len(), 1, "{clone:?}");
        assert_eq!(clone[0].action(), LinuxSeccompAction::ScmpActAllow);
        let args = clone[0].args().as_ref().unwrap();
        assert_eq!(args.len(), 1);
        assert_eq!(args[0].index(), 0);
        assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(args[0].value(), CLONE_NS_MASK);
        assert_eq!(args[0].value_two(), Some(0));
        let flags = libc::CLONE_NEWNS
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUSER
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWCGROUP;
        assert_eq!(args[0].value(), flags as u64);
    }

    #[test]
    fn with_sys_admin_namespaces_and_mounts_are_allowed() {
        for cap in ["CAP_SYS_ADMIN", "SYS_ADMIN", "sys_admin"] {
            let seccomp = resolve_default(&[cap]);
            for syscall in ["mount", "umount2", "unshare", "setns", "clone", "clone3"] {
                assert!(
                    allowed_unconditionally(&seccomp, syscall),
                    "{syscall} not allowed with {cap}"
                );
            }
            // Neither the masked clone rule nor clone3's ENOSYS is left.
            assert_eq!(rules_for(&seccomp, "clone").len(), 1);
            assert_eq!(rules_for(&seccomp, "clone3").len(), 1);
        }
    }

    #[test]
    fn capability_groups() {
        let cases: &[(&str, &[&str])] = &[
            (
                "CAP_SYS_MODULE",
                &["init_module", "finit_module", "delete_module"],
            ),
            ("CAP_SYS_TIME", &["settimeofday", "clock_settime"]),
            ("CAP_SYS_BOOT", &["reboot"]),
            ("CAP_SYSLOG", &["syslog"]),
            ("CAP_SYS_NICE", &["mbind", "set_mempolicy"]),
            ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
            ("CAP_SYS_PACCT", &["acct"]),
            ("CAP_SYS_CHROOT", &["chroot"]),
            (
                "CAP_SYS_PTRACE",
                &["kcmp", "pidfd_getfd", "process_madvise"],
            ),
            ("CAP_BPF", &["bpf"]),
            ("CAP_PERFMON", &["perf_event_open"]),
            ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
        ];
        let without = resolve_default(&[]);
        for (cap, syscalls) in cases {
            let with = resolve_default(&[cap]);
            for syscall in *syscalls {
                assert!(
                    !allowed_at_all(&without, syscall),
                    "{syscall} without {cap}"
                );
                assert!(
                    allowed_unconditionally(&with, syscall),
                    "{syscall} with {cap}"
                );
            }
        }
    }

    #[test]
    fn socket_is_filtered_by_address_family() {
        let seccomp = resolve_default(&[]);
        let rules = rules_for(&seccomp, "socket");
        assert!(!rules.is_empty());
        let allowed = |family: u64| {
            rules.iter().any(|r| {
                r.args().as_ref().unwrap().iter().all(|a| match a.op() {
                    LinuxSeccompOperator::ScmpCmpLt => family < a.value(),
                    LinuxSeccompOperator::ScmpCmpEq => family == a.value(),
                    LinuxSeccompOperator::ScmpCmpGt => family > a.value(),
                    op => panic!("unexpected operator {op:?}"),
                })
            })
        };
        for family in [
            libc::AF_UNIX,
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
        ] {
            assert!(allowed(family as u64), "family {family}");
        }
        assert!(allowed(39));
        assert!(allowed(libc::AF_XDP as u64));
        assert!(!allowed(libc::AF_ALG as u64));
        assert!(!allowed(libc::AF_VSOCK as u64));
    }

    #[test]
    fn personality_only_for_allowed_personas() {
        let seccomp = resolve_default(&[]);
        let mut values: Vec<u64> = rules_for(&seccomp, "personality")
            .iter()
            .map(|r| {
                let args = r.args().as_ref().unwrap();
                assert_eq!(args.len(), 1);
                assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpEq);
                args[0].value()
            })
            .collect();
        values.sort_unstable();
        assert_eq!(values, [0, 0x8, 0x20000, 0x20008, 0xffff_ffff]);
    }

    #[test]
    fn ptrace_depends_on_kernel_version() {
        let profile = Profile::default_profile();
        let old = profile
            .resolve(X86_64, &caps(&[]), KernelVersion::new(4, 4))
            .unwrap();
        assert!(!allowed_at_all(&old, "ptrace"));
        let new = profile
            .resolve(X86_64, &caps(&[]), KernelVersion::new(4, 8))
            .unwrap();
        assert!(allowed_unconditionally(&new, "ptrace"));
        assert!(allowed_unconditionally(&new, "process_vm_readv"));
        let old_with_cap = profile
            .resolve(X86_64, &caps(&["CAP_SYS_PTRACE"]), KernelVersion::new(4, 4))
            .unwrap();
        assert!(allowed_unconditionally(&old_with_cap, "ptrace"));
    }

    #[test]
    fn architectures_and_arch_specific_rules() {
        let profile = Profile::default_profile();
        let x86 = profile.resolve("x86_64", &caps(&[]), KERNEL).unwrap();
        assert_eq!(
            x86.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        assert!(allowed_unconditionally(&x86, "arch_prctl"));
        assert!(allowed_unconditionally(&x86, "modify_ldt"));
        assert!(!allowed_at_all(&x86, "set_tls"));

        let arm = profile.resolve("aarch64", &caps(&[]), KERNEL).unwrap();
        assert_eq!(
            arm.architectures().as_deref(),
            Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..])
        );
        assert!(allowed_unconditionally(&arm, "set_tls"));
        assert!(!allowed_at_all(&arm, "arch_prctl"));
        // The clone rule is kept on arm64: only s390 is excluded.
        assert_eq!(rules_for(&arm, "clone").len(), 1);

        let err = profile.resolve("s390x", &caps(&[]), KERNEL).unwrap_err();
        assert!(matches!(err, SeccompError::UnsupportedArch { .. }), "{err}");
        assert!(err.to_string().contains("s390x"), "{err}");
    }

    #[test]
    fn resolved_section_has_the_oci_json_shape() {
        let seccomp = resolve_default(&[]);
        let json = serde_json::to_value(&seccomp).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["defaultErrnoRet"], 1);
        assert_eq!(
            json["architectures"],
            serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        let clone = json["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["names"] == serde_json::json!(["clone"]))
            .unwrap();
        assert_eq!(
            clone,
            &serde_json::json!({
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": CLONE_NS_MASK, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
            })
        );
        let back: LinuxSeccomp = serde_json::from_value(json).unwrap();
        assert_eq!(back, seccomp);
    }

    #[test]
    fn for_libcontainer_swaps_masked_eq_operands_only() {
        let seccomp = resolve_default(&[]);
        let swapped = for_libcontainer(&seccomp).unwrap();
        let clone = rules_for(&swapped, "clone");
        let arg = clone[0].args().as_ref().unwrap()[0];
        assert_eq!(arg.value(), 0);
        assert_eq!(arg.value_two(), Some(CLONE_NS_MASK));
        // Nothing else changes.
        assert_eq!(rules_for(&swapped, "socket"), rules_for(&seccomp, "socket"));
        assert_eq!(
            swapped.syscalls().as_ref().unwrap().len(),
            seccomp.syscalls().as_ref().unwrap().len()
        );
        assert_eq!(for_libcontainer(&swapped).unwrap(), seccomp);
    }

    #[test]
    fn conditions_follow_the_profile_format() {
        let profile = Profile::from_json(
            br#"{
                "defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [
                    {"names": ["chmod"], "action": "SCMP_ACT_ALLOW", "args": null, "includes": {}, "excludes": {}},
                    {"names": ["syslog"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYSLOG", "CAP_SYS_ADMIN"]}},
                    {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN", "CAP_BPF"]}},
                    {"names": ["kcmp"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "5.10"}},
                    {"names": ["iopl"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}},
                    {"name": "rename", "action": "SCMP_ACT_ERRNO", "errno": "ENOSYS"}
                ]
            }"#,
        )
        .unwrap();
        let names = |caps: &[&str], kernel: (u32, u32)| -> Vec<String> {
            let caps: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
            let s = profile.resolve(X86_64, &caps, kernel.into()).unwrap();
            assert_eq!(s.architectures(), &None);
            s.syscalls()
                .as_ref()
                .unwrap()
                .iter()
                .flat_map(|r| r.names().clone())
                .collect()
        };
        // includes.caps needs all of them; excludes.caps drops on any of them.
        assert_eq!(names(&[], (5, 4)), ["chmod", "ptrace", "kcmp", "rename"]);
        assert_eq!(
            names(&["CAP_SYSLOG"], (5, 10)),
            ["chmod", "ptrace", "rename"]
        );
        assert_eq!(
            names(&["CAP_SYSLOG", "CAP_SYS_ADMIN"], (6, 1)),
            ["chmod", "syslog", "rename"]
        );
        let rename = profile.syscalls.last().unwrap();
        assert_eq!(rename.errno_ret, Some(38));
        // iopl is kept on aarch64.
        let s = profile.resolve("aarch64", &[], (6, 1).into()).unwrap();
        assert!(allowed_unconditionally(&s, "iopl"));
    }

    #[test]
    fn old_format_with_flat_architectures() {
        let profile = Profile::from_json(
            br#"{
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
                "syscalls": [{"name": "kexec_load", "action": "SCMP_ACT_ERRNO", "args": []}]
            }"#,
        )
        .unwrap();
        let s = profile.resolve(X86_64, &[], KERNEL).unwrap();
        assert_eq!(
            s.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86][..])
        );
        assert_eq!(s.syscalls().as_ref().unwrap()[0].names(), &["kexec_load"]);
        assert_eq!(s.syscalls().as_ref().unwrap()[0].args(), &None);
    }

    fn error_of(json: &str) -> String {
        Profile::from_json(json.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn invalid_profiles_name_what_is_wrong() {
        let cases: &[(&str, &[&str])] = &[
            ("not json", &["seccomp profile", "line 1"]),
            (r#"{"syscalls": []}"#, &["defaultAction"]),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscals": []}"#,
                &["unknown field", "syscals"],
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_NOPE"}"#,
                &["defaultAction", "SCMP_ACT_NOPE"],
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                    {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                    {"names": ["write"], "action": "SCMP_ACT_ALOW"}]}"#,
                &["syscalls[1].action", "SCMP_ACT_ALOW"],
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                    {"names": ["read"], "action": "SCMP_ACT_ALLOW", "include": {"caps": ["CAP_SYS_ADMIN"]}}]}"#,
                &["unknown field", "include"],
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                    {"names": [], "action": "SCMP_ACT_ALLOW"}]}"#,
                &["syscalls[0]", "names"],
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                    {"name": "read", "names": ["write"], "action": "SCMP_ACT_ALLOW"}]}"#,
                &["syscalls[0]", "both name and names"],
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                    {"names": ["Read me"], "action": "SCMP_ACT_ALLOW"}]}"#,
                &["syscalls[0].names", "Read me"],
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                    {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#,
                &["syscalls[0].args[0]", "index 6"],
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                    {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQUAL"}]}]}"#,
                &["syscalls[0].args[0]", "SCMP_CMP_EQUAL"],
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                    {"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4"}}]}"#,
                &["syscalls[0].includes.minKernel", "\"4\""],
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                    {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errno": "EWHATEVER"}]}"#,
                &["syscalls[0].errno", "EWHATEVER"],
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": []}]}"#,
                &["architectures", "archMap"],
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ERRNO",
                    "archMap": [{"architecture": "SCMP_ARCH_X86_65", "subArchitectures": null}]}"#,
                &["archMap[0]", "SCMP_ARCH_X86_65"],
            ),
        ];
        for (json, expected) in cases {
            let msg = error_of(json);
            for part in *expected {
                assert!(msg.contains(part), "{msg:?} should mention {part:?}");
            }
            let err = Profile::from_json(json.as_bytes()).unwrap_err();
            assert_eq!(err.kind(), Kind::InvalidArgument);
        }
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(
            KernelVersion::parse_release("6.1.0-18-amd64"),
            Some(KernelVersion::new(6, 1))
        );
        assert_eq!(
            KernelVersion::parse_release("5.15-rc5"),
            Some(KernelVersion::new(5, 15))
        );
        assert_eq!(
            KernelVersion::parse_release("4.8"),
            Some(KernelVersion::new(4, 8))
        );
        assert_eq!(KernelVersion::parse_release("linux"), None);
        assert_eq!(KernelVersion::parse_release("6"), None);
        assert!(KernelVersion::new(4, 10) > KernelVersion::new(4, 8));
        assert!(KernelVersion::new(5, 0) > KernelVersion::new(4, 20));
        assert_eq!(KernelVersion::parse_min_kernel("0.0"), None);
        assert_eq!(KernelVersion::parse_min_kernel("4.8.1"), None);
        assert_eq!(KernelVersion::new(4, 8).to_string(), "4.8");
    }
}
