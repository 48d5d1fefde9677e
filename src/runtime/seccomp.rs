//! seccomp for the built-in handler: each distinct filter is compiled to BPF once (libseccomp)
//! and cached; the container's own process loads the cached program right before it execs.
//!
//! libcontainer 0.7 compiles the spec's `linux.seccomp` with libseccomp inside every container
//! init and every exec'd process — about 15 ms for the RuntimeDefault profile on this machine,
//! half of CreateContainer + StartContainer. So the engine leaves `linux.seccomp` out of the
//! built-in handler's `config.json` and writes a [`Plan`] beside it (`seccomp.json`); the
//! helpers compile it once per distinct filter into `<handler root>/.bpf/<key>.bpf` and load it
//! with seccomp(2) from [`Confined`], libcontainer's executor hook, which runs after
//! libcontainer has set the user, the capabilities and the working directory.
//!
//! Loading a filter needs no_new_privs or CAP_SYS_ADMIN. A container that does not ask for
//! no_new_privs must not get it (setuid binaries keep working, as with runc), so its spec
//! keeps CAP_SYS_ADMIN in the effective and permitted sets only — never in the bounding,
//! inheritable or ambient sets — and [`Confined`] drops it after loading the filter. execve(2)
//! would drop it anyway: the new permitted set is built from the inheritable, ambient and
//! bounding sets and the file's capabilities, never from the old permitted set.
//!
//! The translation from the OCI section to libseccomp rules follows runc (the OCI reference):
//! `SCMP_CMP_MASKED_EQ` takes the mask from `value` and the expected value from `valueTwo`.

use super::RuntimeError;
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

/// The plan file's name in a bundle.
pub const PLAN_FILE: &str = "seccomp.json";

/// What the built-in handler's helpers need to confine a container's processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The cache key: SHA-256 of `filter` as JSON.
    pub key: String,
    /// The spec grants CAP_SYS_ADMIN (effective and permitted) only so that the filter can be
    /// loaded without no_new_privs; [`Confined`] drops it once the filter is in.
    pub drop_sys_admin: bool,
    /// The OCI section, compiled when the cache has no program for `key`.
    pub filter: LinuxSeccomp,
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: {0}")]
    Compile(String),
    #[error("seccomp: the built-in handler does not support SCMP_ACT_NOTIFY (seccomp notify)")]
    Notify,
}

impl crate::error::ErrorKind for SeccompError {
    fn kind(&self) -> crate::error::Kind {
        crate::error::Kind::InvalidArgument
    }
}

impl Plan {
    /// The plan for a container with this filter. `no_new_privs`: the container's process asks
    /// for it; `has_sys_admin`: its effective set already holds CAP_SYS_ADMIN. Either way no
    /// capability needs to be lent for the load.
    pub fn new(
        filter: LinuxSeccomp,
        no_new_privs: bool,
        has_sys_admin: bool,
    ) -> Result<Plan, SeccompError> {
        if uses_notify(&filter) {
            return Err(SeccompError::Notify);
        }
        let json = serde_json::to_vec(&filter).map_err(|e| SeccompError::Compile(e.to_string()))?;
        use sha2::Digest;
        // The compiler is part of the key: a program cached by another ferrio or libseccomp
        // is not reused.
        let v = libseccomp::ScmpVersion::current()
            .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
            .unwrap_or_default();
        let mut h = sha2::Sha256::new();
        h.update(format!(
            "ferrio {} libseccomp {v}\n",
            env!("CARGO_PKG_VERSION")
        ));
        h.update(&json);
        Ok(Plan {
            key: hex::encode(h.finalize()),
            drop_sys_admin: !no_new_privs && !has_sys_admin,
            filter,
        })
    }

    /// seccomp(2) flags for the filter's OCI flags. The program itself does not carry them.
    pub fn flags(&self) -> u32 {
        let mut flags = 0;
        for f in self.filter.flags().iter().flatten() {
            flags |= match f {
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 1, // SECCOMP_FILTER_FLAG_TSYNC
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => 2,   // SECCOMP_FILTER_FLAG_LOG
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => 4, // ..._SPEC_ALLOW
                // Only meaningful with a notify listener, which the built-in handler refuses.
                LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
            };
        }
        flags
    }
}

/// Whether a filter has a notify action (it needs a listener and the notify fd dance).
pub fn uses_notify(filter: &LinuxSeccomp) -> bool {
    filter.default_action() == LinuxSeccompAction::ScmpActNotify
        || filter
            .syscalls()
            .iter()
            .flatten()
            .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify)
        || filter.listener_path().is_some()
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, SeccompError> {
    let errno = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(
            u16::try_from(errno)
                .map_err(|_| SeccompError::Compile(format!("SCMP_ACT_TRACE value {errno}")))?,
        ),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => return Err(SeccompError::Notify),
    })
}

fn compare(op: LinuxSeccompOperator, index: u32, value: u64, two: u64) -> ScmpArgCompare {
    let op = match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        // `arg & value == valueTwo`, as runc and crun read it.
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            return ScmpArgCompare::new(index, ScmpCompareOp::MaskedEqual(value), two)
        }
    };
    ScmpArgCompare::new(index, op, value)
}

/// Compiles an OCI seccomp section to a BPF program for this machine (libseccomp): a whole
/// number of `struct sock_filter`, ready for [`crate::sys::seccomp::set_filter`]. Syscall names
/// libseccomp does not know are skipped, as runc does; rules whose action is the default one
/// are redundant and skipped.
pub fn compile(filter: &LinuxSeccomp) -> Result<Vec<u8>, SeccompError> {
    let err = |what: &str, e: libseccomp::error::SeccompError| {
        SeccompError::Compile(format!("{what}: {e}"))
    };
    let default = action(filter.default_action(), filter.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| err("new filter", e))?;
    for arch in filter.architectures().iter().flatten() {
        let name = serde_json::to_value(arch).map_err(|e| SeccompError::Compile(e.to_string()))?;
        let arch: ScmpArch = name
            .as_str()
            .unwrap_or_default()
            .parse()
            .map_err(|e| err("architecture", e))?;
        ctx.add_arch(arch)
            .map_err(|e| err("adding an architecture", e))?;
    }
    for rule in filter.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue;
        }
        let cmps: Vec<ScmpArgCompare> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| {
                let index = u32::try_from(a.index()).map_err(|_| {
                    SeccompError::Compile(format!("argument index {} is out of range", a.index()))
                })?;
                Ok(compare(
                    a.op(),
                    index,
                    a.value(),
                    a.value_two().unwrap_or(0),
                ))
            })
            .collect::<Result<_, SeccompError>>()?;
        // libseccomp compares each argument at most once per rule: comparisons of one argument
        // become separate rules (any of them matches), as runc does.
        let mut seen = HashSet::new();
        let separate = rule
            .args()
            .iter()
            .flatten()
            .any(|a| !seen.insert(a.index()));
        for name in rule.names() {
            let Ok(nr) = libseccomp::ScmpSyscall::from_name(name) else {
                continue;
            };
            let added = if cmps.is_empty() {
                ctx.add_rule(act, nr).map(drop)
            } else if separate {
                cmps.iter().try_for_each(|c| {
                    ctx.add_rule_conditional(act, nr, std::slice::from_ref(c))
                        .map(drop)
                })
            } else {
                ctx.add_rule_conditional(act, nr, &cmps).map(drop)
            };
            added.map_err(|e| err(&format!("rule for {name}"), e))?;
        }
    }
    // libseccomp 2.5 (Debian 12) has no seccomp_export_bpf_mem: export through a file.
    let mut file = tempfile::tempfile().map_err(|e| SeccompError::Compile(e.to_string()))?;
    ctx.export_bpf(&file).map_err(|e| err("export", e))?;
    let mut bpf = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut bpf))
        .map_err(|e| SeccompError::Compile(e.to_string()))?;
    Ok(bpf)
}

/// The program for a plan: from the cache under `root` (`.bpf/<key>.bpf`), else compiled and
/// stored there (atomically, so concurrent helpers at worst compile it twice).
pub fn program(root: &Path, plan: &Plan, id: &str) -> Result<Vec<u8>, RuntimeError> {
    let fail = |m: String| RuntimeError::new("ferrio(libcontainer)", "seccomp", id, m);
    if plan.key.is_empty() || !plan.key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(fail(format!("bad filter key {:?}", plan.key)));
    }
    let path = cache_path(root, &plan.key);
    let whole = |b: &[u8]| !b.is_empty() && b.len() % 8 == 0;
    if let Ok(bpf) = std::fs::read(&path) {
        if whole(&bpf) {
            return Ok(bpf);
        }
    }
    let bpf = compile(&plan.filter).map_err(|e| fail(e.to_string()))?;
    // Refused here, at create, rather than by the kernel when the process is about to exec.
    if !whole(&bpf) || bpf.len() / 8 > crate::sys::seccomp::MAX_INSNS {
        return Err(fail(format!(
            "the filter compiles to {} bytes; the kernel takes at most {} instructions",
            bpf.len(),
            crate::sys::seccomp::MAX_INSNS
        )));
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = crate::state::write_volatile(&path, &bpf) {
        tracing::warn!(path = %path.display(), error = %e, "caching a compiled seccomp filter");
    }
    Ok(bpf)
}

fn cache_path(root: &Path, key: &str) -> PathBuf {
    root.join(".bpf").join(format!("{key}.bpf"))
}

/// Reads a bundle's plan; `None` when the container runs without seccomp.
pub fn read_plan(bundle: &Path, id: &str) -> Result<Option<Plan>, RuntimeError> {
    let path = bundle.join(PLAN_FILE);
    match std::fs::read(&path) {
        Ok(data) => serde_json::from_slice(&data).map(Some).map_err(|e| {
            RuntimeError::new(
                "ferrio(libcontainer)",
                "seccomp",
                id,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RuntimeError::new(
            "ferrio(libcontainer)",
            "seccomp",
            id,
            format!("{}: {e}", path.display()),
        )),
    }
}

/// libcontainer's executor for a confined process: loads the filter, gives back the capability
/// lent for it, then execs as libcontainer's default executor does.
#[derive(Clone)]
pub struct Confined {
    filter: Filter,
}

#[derive(Clone)]
enum Filter {
    /// A cached program (see the module documentation).
    Program {
        bpf: Vec<u8>,
        flags: u32,
        drop_sys_admin: bool,
    },
    /// A section libcontainer compiles itself (in its operand order), with no_new_privs: a
    /// filter with notify actions, or the spec of a container made by an older ferrio.
    Libcontainer(LinuxSeccomp),
}

impl Confined {
    pub fn program(bpf: Vec<u8>, flags: u32, drop_sys_admin: bool) -> Confined {
        Confined {
            filter: Filter::Program {
                bpf,
                flags,
                drop_sys_admin,
            },
        }
    }

    pub fn libcontainer(section: LinuxSeccomp) -> Confined {
        Confined {
            filter: Filter::Libcontainer(section),
        }
    }
}

impl libcontainer::workload::Executor for Confined {
    fn exec(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorError> {
        use libcontainer::workload::ExecutorError;
        match &self.filter {
            Filter::Program {
                bpf,
                flags,
                drop_sys_admin,
            } => {
                crate::sys::seccomp::set_filter(*flags, bpf).map_err(|e| {
                    ExecutorError::Other(format!("loading the seccomp filter: {e}"))
                })?;
                if *drop_sys_admin {
                    // A filter may refuse capset(2); execve drops the capability regardless
                    // (see the module documentation), so a failure here leaves nothing behind.
                    for set in [caps::CapSet::Effective, caps::CapSet::Permitted] {
                        let _ = caps::drop(None, set, caps::Capability::CAP_SYS_ADMIN);
                    }
                }
            }
            Filter::Libcontainer(section) => {
                nix::sys::prctl::set_no_new_privs()
                    .map_err(|e| ExecutorError::Other(format!("setting no_new_privs: {e}")))?;
                libcontainer::seccomp::initialize_seccomp(section).map_err(|e| {
                    ExecutorError::Other(format!("loading the seccomp filter: {e}"))
                })?;
            }
        }
        libcontainer::workload::default::get_executor().exec(spec)
    }

    fn validate(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::get_executor().validate(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::seccomp::{KernelVersion, Profile};

    fn default_filter() -> LinuxSeccomp {
        Profile::default_profile()
            .resolve(
                std::env::consts::ARCH,
                &["CAP_CHOWN".to_string()],
                KernelVersion::new(6, 1),
            )
            .unwrap()
    }

    #[test]
    fn the_default_profile_compiles_to_whole_instructions() {
        let t = std::time::Instant::now();
        let bpf = compile(&default_filter()).unwrap();
        eprintln!("compiled {} bytes in {:?}", bpf.len(), t.elapsed());
        assert!(!bpf.is_empty());
        assert_eq!(bpf.len() % 8, 0);
        // Deterministic, so a cached program is the program.
        assert_eq!(bpf, compile(&default_filter()).unwrap());
    }

    #[test]
    fn plans_lend_sys_admin_only_without_no_new_privs() {
        let f = default_filter();
        assert!(Plan::new(f.clone(), false, false).unwrap().drop_sys_admin);
        assert!(!Plan::new(f.clone(), true, false).unwrap().drop_sys_admin);
        assert!(!Plan::new(f.clone(), false, true).unwrap().drop_sys_admin);
        let a = Plan::new(f.clone(), false, false).unwrap();
        assert_eq!(a.key, Plan::new(f, true, true).unwrap().key);
        assert_eq!(a.key.len(), 64);
    }

    #[test]
    fn notify_is_refused() {
        let mut f = default_filter();
        f.set_default_action(LinuxSeccompAction::ScmpActNotify);
        assert!(matches!(
            Plan::new(f, false, false),
            Err(SeccompError::Notify)
        ));
    }

    #[test]
    fn the_cache_compiles_once_and_rejects_bad_keys() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan::new(default_filter(), false, false).unwrap();
        let bpf = program(dir.path(), &plan, "c").unwrap();
        assert_eq!(
            std::fs::read(cache_path(dir.path(), &plan.key)).unwrap(),
            bpf
        );
        // A hit is the file, whatever the filter says; a torn file is compiled again.
        std::fs::write(cache_path(dir.path(), &plan.key), [1u8; 8]).unwrap();
        assert_eq!(program(dir.path(), &plan, "c").unwrap(), vec![1u8; 8]);
        std::fs::write(cache_path(dir.path(), &plan.key), [1u8; 5]).unwrap();
        assert_eq!(program(dir.path(), &plan, "c").unwrap(), bpf);
        let bad = Plan {
            key: "../x".into(),
            ..plan
        };
        assert!(program(dir.path(), &bad, "c").is_err());
    }
}
