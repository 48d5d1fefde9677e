//! The built-in handler: youki's libcontainer, linked in. No runc, no shim.

use super::{ExecProcess, Execed, OciRuntime, OciStatus, RuntimeError, Stdio};
use libcgroups::common::CgroupManager;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::syscall::syscall::SyscallType;
use std::path::{Path, PathBuf};

pub struct Libcontainer {
    root: PathBuf,
}

const NAME: &str = "ferrio(libcontainer)";

impl Libcontainer {
    pub fn new(root: PathBuf) -> Self {
        Libcontainer { root }
    }

    fn load(&self, id: &str, op: &'static str) -> Result<Option<Container>, RuntimeError> {
        let dir = self.root.join(id);
        if !dir.join("state.json").exists() {
            return Ok(None);
        }
        Container::load(dir)
            .map(Some)
            .map_err(|e| RuntimeError::new(NAME, op, id, e.to_string()))
    }

    fn err<'a>(
        op: &'static str,
        id: &'a str,
    ) -> impl Fn(libcontainer::error::LibcontainerError) -> RuntimeError + 'a {
        move |e| RuntimeError::new(NAME, op, id, crate::image::unpack::error_chain(&e))
    }
}

/// Runs an exec'd process under the container's seccomp filter. At this point the process has
/// its final user and capabilities, so loading a filter needs no_new_privs: exec'd processes of
/// a seccomp-confined container always get it (they cannot gain privileges through setuid
/// binaries), a deliberate tightening over runc, which loads the filter earlier.
#[derive(Clone)]
struct ConfinedExec {
    seccomp: oci_spec::runtime::LinuxSeccomp,
}

impl libcontainer::workload::Executor for ConfinedExec {
    fn exec(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorError> {
        use libcontainer::workload::ExecutorError;
        nix::sys::prctl::set_no_new_privs()
            .map_err(|e| ExecutorError::Other(format!("setting no_new_privs: {e}")))?;
        libcontainer::seccomp::initialize_seccomp(&self.seccomp)
            .map_err(|e| ExecutorError::Other(format!("loading the seccomp filter: {e}")))?;
        libcontainer::workload::default::get_executor().exec(spec)
    }

    fn validate(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::get_executor().validate(spec)
    }
}

impl Libcontainer {
    /// Exec on a terminal: the container's own process settings (capabilities, rlimits, …)
    /// with this command, user and environment, `terminal: true`; the PTY master goes to
    /// `console`. libcontainer's tenant builder only takes a terminal through a process file.
    fn exec_tty(
        &self,
        id: &str,
        process: &ExecProcess,
        console: &Path,
        seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    ) -> Result<Execed, RuntimeError> {
        let c = self
            .load(id, "exec")?
            .ok_or_else(|| RuntimeError::new(NAME, "exec", id, "container state not found"))?;
        let spec = oci_spec::runtime::Spec::load(c.bundle().join("config.json")).map_err(|e| {
            RuntimeError::new(NAME, "exec", id, format!("reading the bundle's spec: {e}"))
        })?;
        let mut proc_ = spec.process().clone().ok_or_else(|| {
            RuntimeError::new(NAME, "exec", id, "the container's spec has no process")
        })?;
        let mut env = proc_.env().clone().unwrap_or_default();
        for kv in &process.env {
            let key = kv.split('=').next().unwrap_or("");
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        if !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        proc_.set_args(Some(process.args.clone()));
        proc_.set_env(Some(env));
        proc_.set_terminal(Some(true));
        if let Some(cwd) = &process.cwd {
            proc_.set_cwd(cwd.clone());
        }
        let file = console.with_extension("process.json");
        let json = serde_json::to_vec(&proc_)
            .map_err(|e| RuntimeError::new(NAME, "exec", id, e.to_string()))?;
        std::fs::write(&file, json)
            .map_err(|e| RuntimeError::new(NAME, "exec", id, format!("{}: {e}", file.display())))?;
        let mut builder = ContainerBuilder::new(id.to_string(), SyscallType::Linux);
        if let Some(seccomp) = seccomp {
            builder = builder.with_executor(ConfinedExec { seccomp });
        }
        let built = builder
            .with_root_path(&self.root)
            .map_err(Self::err("exec", id))?
            .with_console_socket(Some(console))
            .as_tenant()
            .with_process(Some(&file))
            .with_detach(true)
            .build();
        let _ = std::fs::remove_file(&file);
        let pid = built.map_err(Self::err("exec", id))?;
        Ok(Execed { pid: pid.as_raw() })
    }

    /// The seccomp section of a created container's spec (from its bundle's config.json).
    fn container_seccomp(
        &self,
        id: &str,
    ) -> Result<Option<oci_spec::runtime::LinuxSeccomp>, RuntimeError> {
        let c = self
            .load(id, "exec")?
            .ok_or_else(|| RuntimeError::new(NAME, "exec", id, "container state not found"))?;
        let spec = oci_spec::runtime::Spec::load(c.bundle().join("config.json")).map_err(|e| {
            RuntimeError::new(NAME, "exec", id, format!("reading the bundle's spec: {e}"))
        })?;
        Ok(spec.linux().as_ref().and_then(|l| l.seccomp().clone()))
    }
}

impl OciRuntime for Libcontainer {
    fn name(&self) -> String {
        NAME.to_string()
    }

    fn create(&self, id: &str, bundle: &Path, stdio: Stdio) -> Result<i32, RuntimeError> {
        std::fs::create_dir_all(&self.root).map_err(|e| {
            RuntimeError::new(NAME, "create", id, format!("{}: {e}", self.root.display()))
        })?;
        let builder = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
            .with_root_path(&self.root)
            .map_err(Self::err("create", id))?;
        let builder = match &stdio.console {
            Some(console) => builder.with_console_socket(Some(console)),
            None => builder
                .with_stdin(stdio.stdin)
                .with_stdout(stdio.stdout)
                .with_stderr(stdio.stderr),
        };
        let container = builder
            .as_init(bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(Self::err("create", id))?;
        container
            .pid()
            .map(|p| p.as_raw())
            .ok_or_else(|| RuntimeError::new(NAME, "create", id, "no init pid after create"))
    }

    fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let mut c = self
            .load(id, "start")?
            .ok_or_else(|| RuntimeError::new(NAME, "start", id, "container state not found"))?;
        c.start().map_err(Self::err("start", id))
    }

    fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuntimeError> {
        let Some(mut c) = self.load(id, "kill")? else {
            return Ok(());
        };
        let sig = libcontainer::signal::Signal::try_from(signal)
            .map_err(|e| RuntimeError::new(NAME, "kill", id, e.to_string()))?;
        c.kill(sig, all).map_err(Self::err("kill", id))
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let Some(mut c) = self.load(id, "delete")? else {
            return Ok(());
        };
        c.delete(force).map_err(Self::err("delete", id))
    }

    fn state(&self, id: &str) -> Result<OciStatus, RuntimeError> {
        let Some(mut c) = self.load(id, "state")? else {
            return Ok(OciStatus::Unknown);
        };
        c.refresh_status().map_err(Self::err("state", id))?;
        Ok(match c.status() {
            ContainerStatus::Creating => OciStatus::Creating,
            ContainerStatus::Created => OciStatus::Created,
            ContainerStatus::Running => OciStatus::Running,
            ContainerStatus::Paused => OciStatus::Paused,
            ContainerStatus::Stopped => OciStatus::Stopped,
        })
    }

    fn exec(&self, id: &str, process: &ExecProcess, stdio: Stdio) -> Result<Execed, RuntimeError> {
        let env = process
            .env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (uid, gid, gids) = match &process.user {
            Some((u, g, a)) => (Some(*u), Some(*g), a.clone()),
            None => (None, None, Vec::new()),
        };
        // libcontainer 0.7's tenant builder drops `linux.seccomp` from the spec it runs exec'd
        // processes with; load the container's filter ourselves, right before the exec.
        let seccomp = self.container_seccomp(id)?;
        if let Some(console) = &process.console_socket {
            return self.exec_tty(id, process, console, seccomp);
        }
        let mut builder = ContainerBuilder::new(id.to_string(), SyscallType::Linux);
        if let Some(seccomp) = seccomp {
            builder = builder.with_executor(ConfinedExec { seccomp });
        }
        let pid = builder
            .with_root_path(&self.root)
            .map_err(Self::err("exec", id))?
            .with_stdin(stdio.stdin)
            .with_stdout(stdio.stdout)
            .with_stderr(stdio.stderr)
            .as_tenant()
            .with_container_args(process.args.clone())
            .with_env(env)
            .with_cwd(process.cwd.clone())
            .with_user(uid)
            .with_group(gid)
            .with_additional_gids(gids)
            .with_detach(false)
            .build()
            .map_err(Self::err("exec", id))?;
        Ok(Execed { pid: pid.as_raw() })
    }

    fn update(
        &self,
        id: &str,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<(), RuntimeError> {
        let c = self
            .load(id, "update")?
            .ok_or_else(|| RuntimeError::new(NAME, "update", id, "container state not found"))?;
        let spec = c.spec().map_err(Self::err("update", id))?;
        let manager = libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
            cgroup_path: spec.cgroup_path.clone(),
            systemd_cgroup: false,
            container_name: id.to_string(),
        })
        .map_err(|e| RuntimeError::new(NAME, "update", id, e.to_string()))?;
        manager
            .apply(&libcgroups::common::ControllerOpt {
                resources,
                disable_oom_killer: false,
                oom_score_adj: None,
                freezer_state: None,
            })
            .map_err(|e| RuntimeError::new(NAME, "update", id, e.to_string()))
    }

    fn stats(&self, id: &str) -> Result<serde_json::Value, RuntimeError> {
        let c = self
            .load(id, "stats")?
            .ok_or_else(|| RuntimeError::new(NAME, "stats", id, "container state not found"))?;
        let spec = c.spec().map_err(Self::err("stats", id))?;
        let manager = libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
            cgroup_path: spec.cgroup_path.clone(),
            systemd_cgroup: false,
            container_name: id.to_string(),
        })
        .map_err(|e| RuntimeError::new(NAME, "stats", id, e.to_string()))?;
        let stats = manager
            .stats()
            .map_err(|e| RuntimeError::new(NAME, "stats", id, e.to_string()))?;
        serde_json::to_value(&stats)
            .map_err(|e| RuntimeError::new(NAME, "stats", id, e.to_string()))
    }
}
