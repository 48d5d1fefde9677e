//! The built-in handler: youki's libcontainer, linked in. No runc, no shim.

use super::seccomp::{self, Confined};
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

/// A created container's spec, from its bundle (for an exec).
fn bundle_spec(id: &str, bundle: &Path) -> Result<oci_spec::runtime::Spec, RuntimeError> {
    oci_spec::runtime::Spec::load(bundle.join("config.json"))
        .map_err(|e| RuntimeError::new(NAME, "exec", id, format!("reading the bundle's spec: {e}")))
}

impl Libcontainer {
    /// The process an exec runs ([`super::exec_process`]), as a process file for the tenant
    /// builder: the builder's own process would always get no_new_privs (libcontainer 0.7
    /// ignores `with_no_new_privs(false)`) and none of the container's rlimits.
    fn exec_process(
        id: &str,
        bundle: &Path,
        process: &ExecProcess,
    ) -> Result<oci_spec::runtime::Process, RuntimeError> {
        let spec = bundle_spec(id, bundle)?;
        super::exec_process(&spec, process).map_err(|e| RuntimeError::new(NAME, "exec", id, e))
    }

    /// The user namespace the container joined (its spec's `user` namespace path).
    fn user_ns_path(id: &str, bundle: &Path) -> Result<Option<PathBuf>, RuntimeError> {
        let spec = bundle_spec(id, bundle)?;
        Ok(spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .into_iter()
            .flatten()
            .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User)
            .and_then(|n| n.path().clone()))
    }

    /// How a process of this container is confined: its bundle's seccomp plan with the
    /// compiled program (see `runtime::seccomp`).
    fn confined(
        &self,
        id: &str,
        bundle: &Path,
        exec: bool,
    ) -> Result<Option<Confined>, RuntimeError> {
        let Some(plan) = seccomp::read_plan(bundle, id)? else {
            if !exec {
                // The init: libcontainer loads a filter left in the spec itself.
                return Ok(None);
            }
            // No plan but a filter in the spec (notify actions, or a container created by an
            // older ferrio): libcontainer compiled it for the init, and its tenant builder would
            // drop it for an exec — load it as libcontainer does, with no_new_privs.
            let spec = bundle_spec(id, bundle)?;
            return Ok(spec
                .linux()
                .as_ref()
                .and_then(|l| l.seccomp().clone())
                .map(Confined::libcontainer));
        };
        Ok(Some(Confined::program(
            seccomp::program(&self.root, &plan, id)?,
            plan.flags(),
            plan.drop_sys_admin,
        )))
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
        let mut builder = ContainerBuilder::new(id.to_string(), SyscallType::Linux);
        if let Some(confined) = self.confined(id, bundle, false)? {
            builder = builder.with_executor(confined);
        }
        let builder = builder
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
            .with_systemd(super::bundle_uses_systemd(bundle))
            .with_detach(true)
            .build()
            .map_err(Self::err("create", id))?;
        container
            .pid()
            .map(|p| p.as_raw())
            .ok_or_else(|| RuntimeError::new(NAME, "create", id, "no init pid after create"))
    }

    /// libcontainer 0.7 has no restore: CRIU restores the tree ([`super::criu`]) into the
    /// container's cgroup, then the container gets the state libcontainer would have written,
    /// so that every later operation loads it as usual.
    fn restore(
        &self,
        id: &str,
        bundle: &Path,
        from: &super::RestoreFrom,
        stdio: Stdio,
    ) -> Result<i32, RuntimeError> {
        let spec = oci_spec::runtime::Spec::load(bundle.join("config.json")).map_err(|e| {
            RuntimeError::new(
                NAME,
                "restore",
                id,
                format!("reading the bundle's spec: {e}"),
            )
        })?;
        let config = libcontainer::config::YoukiConfig::from_spec(&spec, id)
            .map_err(|e| RuntimeError::new(NAME, "restore", id, e.to_string()))?;
        let systemd = super::bundle_uses_systemd(bundle);
        let cgroup = config.cgroup_path.to_string_lossy().to_string();
        let manager = libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
            cgroup_path: config.cgroup_path.clone(),
            systemd_cgroup: systemd,
            container_name: id.to_string(),
        })
        .map_err(|e| RuntimeError::new(NAME, "restore", id, e.to_string()))?;
        let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
        let dir = self.root.join(id);
        let pid = super::criu::restore(
            id,
            bundle,
            from,
            stdio,
            &manager,
            resources,
            &crate::cgroups::fs_path(&cgroup),
        )?;
        let saved = std::fs::create_dir_all(&dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                config
                    .save(&dir)
                    .map_err(|e| format!("writing the container's config: {e}"))
            })
            .and_then(|()| {
                let mut c = Container::new(id, ContainerStatus::Running, Some(pid), bundle, &dir)
                    .map_err(|e| e.to_string())?;
                c.set_systemd(systemd)
                    .set_creator(nix::unistd::geteuid().as_raw())
                    .set_annotations(spec.annotations().clone());
                c.save().map_err(|e| e.to_string())
            });
        if let Err(e) = saved {
            // Nothing would know of the restored tree: do not leave it running.
            super::criu::remove_restored(&manager);
            return Err(RuntimeError::new(NAME, "restore", id, e));
        }
        Ok(pid)
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
        let c = self
            .load(id, "exec")?
            .ok_or_else(|| RuntimeError::new(NAME, "exec", id, "container state not found"))?;
        let proc_ = Self::exec_process(id, c.bundle(), process)?;
        // libcontainer 0.7's tenant builder joins the container's namespaces except its user
        // namespace (it leaves "user" out of the types it joins): join it here, first, as runc
        // exec does, or the process would be host root inside the container. This helper is
        // single-threaded, as setns(CLONE_NEWUSER) requires; the namespaces joined after it
        // belong to it.
        if let Some(userns) = Self::user_ns_path(id, c.bundle())? {
            let f = std::fs::File::open(&userns).map_err(|e| {
                RuntimeError::new(NAME, "exec", id, format!("{}: {e}", userns.display()))
            })?;
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWUSER).map_err(|e| {
                RuntimeError::new(NAME, "exec", id, format!("joining the user namespace: {e}"))
            })?;
        }
        // Exec'd processes load the container's filter in the executor too (libcontainer 0.7's
        // tenant builder would drop a `linux.seccomp` anyway).
        let confined = self.confined(id, c.bundle(), true)?;
        let fail = |e: std::io::Error| RuntimeError::new(NAME, "exec", id, e.to_string());
        let mut file = tempfile::Builder::new()
            .prefix(".exec-")
            .suffix(".json")
            .tempfile_in(&self.root)
            .map_err(fail)?;
        serde_json::to_writer(&mut file, &proc_)
            .map_err(|e| RuntimeError::new(NAME, "exec", id, e.to_string()))?;
        let mut builder = ContainerBuilder::new(id.to_string(), SyscallType::Linux);
        if let Some(confined) = confined {
            builder = builder.with_executor(confined);
        }
        let builder = builder
            .with_root_path(&self.root)
            .map_err(Self::err("exec", id))?;
        let builder = match &process.console_socket {
            // The PTY master goes to the console socket.
            Some(console) => builder.with_console_socket(Some(console)),
            None => builder
                .with_stdin(stdio.stdin)
                .with_stdout(stdio.stdout)
                .with_stderr(stdio.stderr),
        };
        let pid = builder
            .as_tenant()
            .with_process(Some(file.path()))
            .with_detach(process.console_socket.is_some())
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
            systemd_cgroup: crate::cgroups::is_systemd_name(&spec.cgroup_path.to_string_lossy()),
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
            systemd_cgroup: crate::cgroups::is_systemd_name(&spec.cgroup_path.to_string_lossy()),
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
