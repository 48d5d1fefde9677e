//! CheckpointContainer: the running container dumped by CRIU (left running) into an archive at
//! the request's `location`, in the layout CRI-O and kubelet use: `checkpoint/` (CRIU's
//! images and `dump.log`), `spec.dump` (the OCI config), `config.dump` (what the container was
//! made from), `rootfs-diff.tar` (its writable layer) and `deleted.files` (what it deleted from
//! the image).
//!
//! runc, and crun built with CRIU, dump through their own `checkpoint` command. For the built-in
//! handler (and a crun without CRIU) CRIU is run on the container's init directly: bind mounts
//! from the host (the spec's) and cgroup mounts are declared external, as runc does; a network
//! namespace the container shares with its pod is external too, so that a restore can join
//! another pod's.

use crate::engine::{blocking, ContainerState, Engine, EngineError, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// CRI's `timeout` is in seconds; 0 means this.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(240);
/// The longest a client may ask CRIU to take.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

impl Engine {
    pub async fn checkpoint_container(
        self: &Arc<Self>,
        s: &str,
        location: &str,
        timeout_secs: i64,
    ) -> Result<()> {
        let started = Instant::now();
        crate::engine::validate::absolute("location", location)?;
        let location = PathBuf::from(location);
        let l = location.clone();
        if blocking(move || l.is_dir()).await? {
            return Err(EngineError::invalid(format!(
                "location {} is a directory; CheckpointContainer writes an archive file",
                location.display()
            )));
        }
        let id = self.container_id(s)?;
        let lock = self.lock_for(&id);
        let _g = lock.lock().await;
        let rec = self
            .refreshed(&id)
            .ok_or_else(|| EngineError::not_found(format!("container {s:?} not found")))?;
        if rec.state != ContainerState::Running || rec.pid <= 0 {
            return Err(EngineError::precondition(format!(
                "container {id} is not running"
            )));
        }
        let criu = self.cfg().runtime.criu_path.clone();
        // A client's timeout is bounded: the container's lock is held meanwhile.
        let timeout = match u64::try_from(timeout_secs) {
            Ok(0) | Err(_) => DEFAULT_TIMEOUT,
            Ok(n) => Duration::from_secs(n.min(MAX_TIMEOUT.as_secs())),
        };
        let paths = self.ctr_paths(&id);
        let work_root = self.cfg().run_root.join("checkpoints");
        let record = serde_json::json!({
            "id": rec.id,
            "name": rec.config.name,
            "podId": rec.pod_id,
            "rootfsImage": rec.image,
            "rootfsImageRef": rec.image_id,
            "runtimeHandler": rec.handler,
            "createdTime": rec.created_at_ns,
            "checkpointedTime": crate::engine::now_ns(),
            "config": rec.config,
        });
        let pid = rec.pid;
        let dest = location.clone();
        // runc, and crun with CRIU, checkpoint through their own command; the built-in handler
        // (libcontainer 0.7's checkpoint needs its own CRIU RPC build) and a crun without CRIU
        // through CRIU directly.
        let runtime = match self.handler(&rec.handler) {
            Ok(crate::runtime::Handler::Oci { path, root }) => Some((path, root)),
            _ => None,
        };
        let via = blocking(move || -> Result<String> {
            std::fs::create_dir_all(&work_root)
                .map_err(EngineError::io("creating the checkpoint directory"))?;
            let work = tempfile::Builder::new()
                .prefix(&format!("{id}-"))
                .tempdir_in(&work_root)
                .map_err(EngineError::io("creating the checkpoint directory"))?;
            let images = work.path().join("checkpoint");
            std::fs::create_dir(&images)
                .map_err(EngineError::io("creating the checkpoint directory"))?;
            let spec = std::fs::read(paths.bundle().join("config.json"))
                .map_err(EngineError::io("reading the container's config.json"))?;
            let by_runtime = runtime.and_then(|(path, root)| {
                match crate::runtime::cli::criu_support(&path) {
                    Ok(how) => Some((path, root, how)),
                    Err(why) => {
                        tracing::info!(runtime = %path.display(), %why, "checkpointing with CRIU directly");
                        None
                    }
                }
            });
            let via = match by_runtime {
                Some((path, root, how)) => {
                    let rt = RuntimeCheckpoint {
                        runtime: &path,
                        root: &root,
                        how,
                        criu: &criu,
                    };
                    rt.checkpoint(&id, &images, timeout)?;
                    format!("{} checkpoint", path.display())
                }
                None => {
                    dump(&criu, pid, &images, &spec, timeout)?;
                    format!("{} dump", criu.display())
                }
            };
            std::fs::write(work.path().join("spec.dump"), &spec)
                .map_err(EngineError::io("writing spec.dump"))?;
            std::fs::write(
                work.path().join("config.dump"),
                serde_json::to_vec_pretty(&record).unwrap_or_default(),
            )
            .map_err(EngineError::io("writing config.dump"))?;
            let deleted = rootfs_diff(&paths.upper(), &work.path().join("rootfs-diff.tar"))?;
            std::fs::write(
                work.path().join("deleted.files"),
                serde_json::to_vec(&deleted).unwrap_or_default(),
            )
            .map_err(EngineError::io("writing deleted.files"))?;
            archive(work.path(), &dest)?;
            Ok(via)
        })
        .await??;
        tracing::info!(container = %s, location = %location.display(), via = %via, ms = started.elapsed().as_millis(), "container checkpointed");
        Ok(())
    }
}

/// An OCI runtime CLI that checkpoints with CRIU.
struct RuntimeCheckpoint<'a> {
    runtime: &'a Path,
    root: &'a Path,
    how: crate::runtime::cli::Restorer,
    criu: &'a Path,
}

impl RuntimeCheckpoint<'_> {
    /// `<runtime> checkpoint --leave-running` of container `id` into `images` (its work
    /// directory too, so that `dump.log` is in the archive as CRIU's own dump puts it).
    fn checkpoint(&self, id: &str, images: &Path, timeout: Duration) -> Result<()> {
        let mut cmd = std::process::Command::new(self.runtime);
        cmd.arg("--root").arg(self.root);
        if self.how == crate::runtime::cli::Restorer::CriuFlag {
            cmd.arg("--criu").arg(self.criu);
        }
        crate::runtime::cli::criu_first_in_path(&mut cmd, self.criu);
        // Its stderr in an anonymous file: nothing beside the archive's contents, no pipe to
        // wait on.
        let stderr = tempfile::tempfile()
            .map_err(EngineError::io("creating a file for the runtime's stderr"))?;
        let said = stderr
            .try_clone()
            .map_err(EngineError::io("creating a file for the runtime's stderr"))?;
        cmd.arg("checkpoint")
            .arg("--image-path")
            .arg(images)
            .arg("--work-path")
            .arg(images)
            .args(["--leave-running", "--tcp-established", "--file-locks"])
            .arg(id)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr);
        // Its own process group: on a timeout the CRIU it started goes with it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let name = self.runtime.display();
        let mut child = cmd
            .spawn()
            .map_err(|e| EngineError::precondition(format!("running {name} checkpoint: {e}")))?;
        let pgid = i32::try_from(child.id()).unwrap_or(0);
        let Some(status) = crate::sys::process::wait_or_kill(&mut child, timeout) else {
            if pgid > 0 {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return Err(EngineError::new(
                crate::error::Kind::DeadlineExceeded,
                format!("{name} checkpoint did not finish within {timeout:?}"),
            ));
        };
        if !status.success() {
            let said = crate::runtime::cli::read_start(said, 64 << 10);
            let parts: Vec<String> = [said.trim().to_string(), dump_log_errors(images)]
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect();
            let why = if parts.is_empty() {
                "see dump.log".to_string()
            } else {
                parts.join("; ")
            };
            return Err(EngineError::internal(format!(
                "{name} checkpoint failed ({status}): {why}"
            )));
        }
        Ok(())
    }
}

/// The first errors of CRIU's dump log in `images`.
fn dump_log_errors(images: &Path) -> String {
    crate::runtime::criu::log_file_errors(&images.join("dump.log"))
}

/// `criu dump` of the process tree at `pid`, left running, into `images`.
fn dump(criu: &Path, pid: i32, images: &Path, spec: &[u8], timeout: Duration) -> Result<()> {
    let spec: serde_json::Value = serde_json::from_slice(spec)
        .map_err(|e| EngineError::internal(format!("the container's config.json: {e}")))?;
    let mut args: Vec<String> = [
        "dump",
        "--tree",
        &pid.to_string(),
        "--images-dir",
        &images.display().to_string(),
        "--leave-running",
        "--manage-cgroups",
        "--tcp-established",
        "--file-locks",
        "--log-file",
        "dump.log",
        "-v4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for dest in external_mounts(&spec, pid) {
        args.push("--ext-mount-map".into());
        args.push(format!("{dest}:{dest}"));
    }
    // A network namespace given by path (the pod's) is not the container's to dump.
    let shared_net = spec["linux"]["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|n| n["type"] == "network" && n["path"].is_string());
    if shared_net {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/ns/net")) {
            args.push("--external".into());
            // runc's key: `runc restore` hands the new pod's namespace in under it.
            args.push(format!("net[{}]:extRootNetNS", m.ino()));
        }
    }
    let mut child = std::process::Command::new(criu)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| {
            EngineError::precondition(format!(
                "CheckpointContainer needs CRIU: cannot run {} (runtime.criu_path): {e}",
                criu.display()
            ))
        })?;
    let Some(status) = crate::sys::process::wait_or_kill(&mut child, timeout) else {
        return Err(EngineError::new(
            crate::error::Kind::DeadlineExceeded,
            format!("criu dump did not finish within {timeout:?}"),
        ));
    };
    // What the init's stdio were, as runc records them (`descriptors.json`), so that a restore
    // can hand in new pipes for them.
    let descriptors: Vec<String> = (0..3)
        .map(|n| {
            std::fs::read_link(format!("/proc/{pid}/fd/{n}"))
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "/dev/null".into())
        })
        .collect();
    if !status.success() {
        return Err(EngineError::internal(format!(
            "criu dump failed ({status}): {}",
            dump_log_errors(images)
        )));
    }
    std::fs::write(
        images.join("descriptors.json"),
        serde_json::to_vec(&descriptors).unwrap_or_default(),
    )
    .map_err(EngineError::io("writing descriptors.json"))
}

/// Mount points CRIU must treat as external: the spec's bind mounts, masked files and the
/// cgroup mounts the container has (their sources are outside its root).
fn external_mounts(spec: &serde_json::Value, pid: i32) -> Vec<String> {
    let mut out: Vec<String> = spec["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            m["type"] == "bind"
                || m["options"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"))
        })
        .filter_map(|m| m["destination"].as_str().map(str::to_string))
        .collect();
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    // (mount point, device, root in its filesystem) of each of the container's mounts.
    let mounts: Vec<(&str, &str, &str)> = mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((*f.get(4)?, *f.get(2)?, *f.get(3)?))
        })
        .collect();
    // Masked files bound from a filesystem the container does not mount itself (crun binds
    // the host's /dev/null; libcontainer and runc the container's own) are external too, under
    // their path as runc names them.
    for p in spec["linux"]["maskedPaths"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(p) = p.as_str() else { continue };
        let Some((_, dev, _)) = mounts.iter().rev().find(|(mp, _, _)| mp == &p) else {
            continue;
        };
        let own = mounts.iter().any(|(_, d, root)| d == dev && *root == "/");
        if !own {
            out.push(p.to_string());
        }
    }
    for l in mountinfo.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let fstype = f.iter().position(|x| *x == "-").and_then(|i| f.get(i + 1));
        if matches!(fstype, Some(&"cgroup") | Some(&"cgroup2")) {
            if let Some(mp) = f.get(4) {
                out.push((*mp).to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The writable layer as a tar (whiteouts left out), and the paths it deleted from the image
/// (its overlayfs whiteouts), relative to the root.
fn rootfs_diff(upper: &Path, tar_path: &Path) -> Result<Vec<String>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let f = std::fs::File::create(tar_path).map_err(EngineError::io("writing rootfs-diff.tar"))?;
    let mut tar = tar::Builder::new(f);
    tar.follow_symlinks(false);
    let mut deleted = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = upper.join(&rel);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let r = rel.join(e.file_name());
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.file_type().is_char_device() && m.rdev() == 0 {
                deleted.push(r.display().to_string());
                continue;
            }
            tar.append_path_with_name(e.path(), &r)
                .map_err(EngineError::io("writing rootfs-diff.tar"))?;
            if m.is_dir() {
                stack.push(r);
            }
        }
    }
    tar.finish()
        .map_err(EngineError::io("writing rootfs-diff.tar"))?;
    Ok(deleted)
}

/// Everything in `dir` as an uncompressed tar at `dest` (written to a new temporary file beside
/// it, 0600, then renamed).
fn archive(dir: &Path, dest: &Path) -> Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("/"));
    let tmp = tempfile::Builder::new()
        .prefix(".checkpoint-")
        .tempfile_in(parent)
        .map_err(EngineError::io(format_args!(
            "creating a file in {}",
            parent.display()
        )))?;
    let mut tar = tar::Builder::new(tmp.as_file());
    tar.follow_symlinks(false);
    tar.append_dir_all(".", dir)
        .and_then(|()| tar.finish())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(EngineError::io("writing the checkpoint archive"))?;
    drop(tar);
    tmp.persist(dest).map_err(|e| {
        EngineError::io(format_args!(
            "moving the checkpoint archive to {}",
            dest.display()
        ))(e.error)
    })?;
    Ok(())
}

/// The manifest annotation that marks an image holding a checkpoint (CRI-O's and Podman's
/// `--create-image`); its value is the checkpointed container's name.
pub const CHECKPOINT_IMAGE_ANNOTATION: &str = "io.kubernetes.cri-o.annotations.checkpoint.name";

/// Where a CreateContainer's checkpoint is.
#[derive(Clone)]
pub(in crate::engine) enum Restore {
    /// A checkpoint archive, by its path.
    Archive(PathBuf),
    /// A checkpoint image's layer (the archive's contents as files), by its directory, and
    /// the image as the request named it.
    Layer { dir: PathBuf, image: String },
}

impl Engine {
    /// When `config.image` is a checkpoint archive (an absolute path to a file with a
    /// `config.dump`), the container to make is the checkpointed one: its config, with the
    /// request's name, attempt, log path, labels and annotations, from the image it was made
    /// from. Otherwise `config` as it is.
    pub(in crate::engine) async fn restore_request(
        &self,
        mut config: crate::model::ContainerConfig,
    ) -> Result<(crate::model::ContainerConfig, Option<Restore>)> {
        let path = PathBuf::from(&config.image);
        let source = if path.is_absolute() {
            let p = path.clone();
            if !blocking(move || p.is_file()).await? {
                return Ok((config, None));
            }
            Restore::Archive(path.clone())
        } else {
            match self.checkpoint_image_layer(&config.image).await? {
                Some(dir) => Restore::Layer {
                    dir,
                    image: config.image.clone(),
                },
                None => return Ok((config, None)),
            }
        };
        let what = match &source {
            Restore::Archive(p) => p.display().to_string(),
            Restore::Layer { .. } => format!("checkpoint image {}", config.image),
        };
        let src = source.clone();
        let dump: serde_json::Value = blocking(move || match &src {
            Restore::Archive(p) => read_member(p, "config.dump"),
            Restore::Layer { dir, .. } => read_layer_file(dir, "config.dump"),
        })
        .await??
        .ok_or_else(|| {
            EngineError::invalid(format!("image {what}: not a checkpoint (no config.dump)"))
        })
        .and_then(|b| {
            serde_json::from_slice(&b)
                .map_err(|e| EngineError::invalid(format!("{what}: config.dump: {e}")))
        })?;
        let mut restored: crate::model::ContainerConfig =
            serde_json::from_value(dump["config"].clone())
                .map_err(|e| EngineError::invalid(format!("{what}: config.dump: {e}")))?;
        restored.image = dump["rootfsImageRef"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if self.images.status(&restored.image).is_none() {
            return Err(EngineError::not_found(format!(
                "{what}: the checkpointed container's image {} ({}) is not on this node; pull it first",
                dump["rootfsImage"].as_str().unwrap_or("?"),
                restored.image
            )));
        }
        // As CRI-O: the request's security context and resources (the mount layout — masked
        // and read-only paths — stays the checkpoint's, which CRIU's images describe), and
        // every bind mount the checkpointed container had must be one the request asks for,
        // by its container path, with the request's host path: an archive never picks host
        // paths to mount by itself.
        let (masked, readonly) = (
            std::mem::take(&mut restored.security.masked_paths),
            std::mem::take(&mut restored.security.readonly_paths),
        );
        restored.security = std::mem::take(&mut config.security);
        restored.security.masked_paths = masked;
        restored.security.readonly_paths = readonly;
        restored.resources = config.resources.take();
        restored.devices = std::mem::take(&mut config.devices);
        restored.cdi_devices = std::mem::take(&mut config.cdi_devices);
        let mut missing = Vec::new();
        for m in &mut restored.mounts {
            match config
                .mounts
                .iter()
                .find(|r| r.container_path == m.container_path)
            {
                Some(r) => *m = r.clone(),
                None => missing.push(m.container_path.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(EngineError::invalid(format!(
                "restoring {what} needs the mounts it was checkpointed with; the request lacks {}",
                missing.join(", ")
            )));
        }
        restored.name = std::mem::take(&mut config.name);
        restored.attempt = config.attempt;
        restored.log_path = std::mem::take(&mut config.log_path);
        restored.labels = std::mem::take(&mut config.labels);
        restored.annotations = std::mem::take(&mut config.annotations);
        Ok((restored, Some(source)))
    }

    /// When `image` is a stored image whose manifest carries [`CHECKPOINT_IMAGE_ANNOTATION`],
    /// the directory of its layer holding the checkpoint (the topmost with a `config.dump`).
    async fn checkpoint_image_layer(&self, image: &str) -> Result<Option<PathBuf>> {
        let Some(rec) = self.images.status(image) else {
            return Ok(None);
        };
        let (images, image) = (self.images.clone(), image.to_string());
        blocking(move || -> Result<Option<PathBuf>> {
            let store = images.store();
            let Ok(manifest) = store.blob(&rec.manifest_digest) else {
                return Ok(None);
            };
            let manifest: serde_json::Value =
                serde_json::from_slice(&manifest).unwrap_or_default();
            if !manifest["annotations"][CHECKPOINT_IMAGE_ANNOTATION].is_string() {
                return Ok(None);
            }
            let layer = rec.layers.iter().rev().map(|l| store.layer_diff_path(&l.chain_id)).find(|d| {
                d.join("config.dump")
                    .symlink_metadata()
                    .is_ok_and(|m| m.is_file())
            });
            match layer {
                Some(d) => Ok(Some(d)),
                None => Err(EngineError::invalid(format!(
                    "image {image} is marked as a checkpoint ({CHECKPOINT_IMAGE_ANNOTATION}) but no layer holds a config.dump"
                ))),
            }
        })
        .await?
    }
}

/// The bytes of file `name` of a checkpoint image's layer (a regular file, not a link, of at
/// most 4 MiB), if it has one.
fn read_layer_file(layer: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let path = layer.join(name);
    match path.symlink_metadata() {
        Ok(m) if m.is_file() => {}
        _ => return Ok(None),
    }
    crate::state::read_capped(&path, 4 << 20)
        .map(Some)
        .map_err(EngineError::io(format_args!("reading {}", path.display())))
}

/// Unpacks a checkpoint image's layer for a restore, as [`unpack_for_restore`] does an archive:
/// through a temporary archive of the layer (links kept as links, so the same checks apply).
pub(in crate::engine) fn unpack_layer_for_restore(
    layer: &Path,
    images: &Path,
    upper: &Path,
) -> Result<()> {
    let parent = images.parent().unwrap_or(images);
    std::fs::create_dir_all(parent).map_err(EngineError::io("creating the restore directory"))?;
    let tmp = tempfile::Builder::new()
        .prefix(".checkpoint-image-")
        .tempfile_in(parent)
        .map_err(EngineError::io("creating the restore directory"))?;
    {
        let mut tar = tar::Builder::new(tmp.as_file());
        tar.follow_symlinks(false);
        tar.append_dir_all(".", layer)
            .and_then(|()| tar.finish())
            .map_err(EngineError::io(format_args!(
                "reading the checkpoint image's layer {}",
                layer.display()
            )))?;
    }
    unpack_for_restore(tmp.path(), images, upper)
}

/// The bytes of member `name` of a tar archive (at most 4 MiB), if it has one.
fn read_member(archive: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let f = std::fs::File::open(archive).map_err(EngineError::io(format_args!(
        "opening {}",
        archive.display()
    )))?;
    let mut ar = tar::Archive::new(f);
    let entries = ar.entries().map_err(EngineError::io(format_args!(
        "reading {}",
        archive.display()
    )))?;
    for e in entries {
        let e = e.map_err(EngineError::io(format_args!(
            "reading {}",
            archive.display()
        )))?;
        let path = e
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if path.trim_start_matches("./") == name {
            let mut buf = Vec::new();
            e.take(4 << 20)
                .read_to_end(&mut buf)
                .map_err(EngineError::io(format_args!(
                    "reading {}",
                    archive.display()
                )))?;
            return Ok(Some(buf));
        }
    }
    Ok(None)
}

/// Unpacks a checkpoint archive for a restore: CRIU's images into `images`, the writable
/// layer into `upper` (before the overlay is mounted) with the deleted files as whiteouts.
pub(in crate::engine) fn unpack_for_restore(
    archive: &Path,
    images: &Path,
    upper: &Path,
) -> Result<()> {
    let io = |what: &str| EngineError::io(format!("restoring from {}: {what}", archive.display()));
    std::fs::create_dir_all(images).map_err(io("images"))?;
    let f = std::fs::File::open(archive).map_err(io("open"))?;
    let mut ar = tar::Archive::new(f);
    let mut deleted: Vec<String> = Vec::new();
    for e in ar.entries().map_err(io("read"))? {
        let mut e = e.map_err(io("read"))?;
        let path = e.path().map_err(io("read"))?.display().to_string();
        let path = path.trim_start_matches("./").to_string();
        if let Some(rest) = path.strip_prefix("checkpoint/") {
            if rest.is_empty() {
                continue;
            }
            // CRIU's images are files and directories: a link could make the restore read a
            // host file into the container.
            let kind = e.header().entry_type();
            if !(kind.is_file() || kind.is_dir()) {
                return Err(EngineError::invalid(format!(
                    "{}: {path} is neither a file nor a directory",
                    archive.display()
                )));
            }
            e.unpack_in(images.parent().unwrap_or(images))
                .map_err(io("images"))?;
        } else if path == "rootfs-diff.tar" {
            let mut diff = tar::Archive::new(&mut e);
            diff.set_preserve_permissions(true);
            diff.set_preserve_ownerships(true);
            diff.set_preserve_mtime(true);
            diff.set_overwrite(true);
            for d in diff.entries().map_err(io("rootfs-diff.tar"))? {
                let mut d = d.map_err(io("rootfs-diff.tar"))?;
                // No device nodes from an archive: a container's devices come from its spec.
                let kind = d.header().entry_type();
                if kind.is_character_special() || kind.is_block_special() {
                    tracing::warn!(archive = %archive.display(), path = ?d.path().ok(), "a device node in rootfs-diff.tar, skipped");
                    continue;
                }
                if !d.unpack_in(upper).map_err(io("rootfs-diff.tar"))? {
                    return Err(EngineError::invalid(format!(
                        "{}: rootfs-diff.tar reaches outside the root",
                        archive.display()
                    )));
                }
            }
        } else if path == "deleted.files" {
            use std::io::Read;
            let mut b = Vec::new();
            e.take(4 << 20)
                .read_to_end(&mut b)
                .map_err(io("deleted.files"))?;
            deleted = serde_json::from_slice(&b).map_err(|err| {
                EngineError::invalid(format!("{}: deleted.files: {err}", archive.display()))
            })?;
        }
    }
    for d in deleted {
        let rel = Path::new(&d);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(EngineError::invalid(format!(
                "{}: deleted.files names {d:?}",
                archive.display()
            )));
        }
        // Each directory on the way must be a real one inside `upper`: rootfs-diff.tar may hold
        // symlinks, which must not carry a whiteout (a removal, a mknod) out to the host.
        let mut dir = upper.to_path_buf();
        let comps: Vec<_> = rel.components().collect();
        for c in &comps[..comps.len().saturating_sub(1)] {
            dir.push(c);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(EngineError::invalid(format!(
                        "{}: deleted.files names {d:?}, below something that is not a directory",
                        archive.display()
                    )))
                }
                Err(_) => std::fs::create_dir(&dir).map_err(io("deleted.files"))?,
            }
        }
        let target = upper.join(rel);
        match std::fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&target).map_err(io("deleted.files"))?,
            Ok(_) => std::fs::remove_file(&target).map_err(io("deleted.files"))?,
            Err(_) => {}
        }
        crate::sys::make_whiteout(&target).map_err(io("a whiteout"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive whose rootfs-diff.tar holds a symlink `x` to `target` and whose deleted.files
    /// names `x/victim`.
    fn hostile_archive(dir: &Path, target: &Path) -> PathBuf {
        let mut diff = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        diff.append_link(&mut h, "x", target).unwrap();
        let diff = diff.into_inner().unwrap();
        let mut ar = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("rootfs-diff.tar", diff),
            ("deleted.files", br#"["x/victim"]"#.to_vec()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            ar.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        let path = dir.join("hostile.tar");
        std::fs::write(&path, ar.into_inner().unwrap()).unwrap();
        path
    }

    #[test]
    fn deleted_files_never_reach_through_a_symlink_of_the_layer() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("victim"), "keep").unwrap();
        let upper = dir.path().join("upper");
        std::fs::create_dir(&upper).unwrap();
        let archive = hostile_archive(dir.path(), &outside);
        let e = unpack_for_restore(&archive, &dir.path().join("images"), &upper).unwrap_err();
        // As root the symlink is made and the whiteout refused; otherwise its chown fails first.
        if nix::unistd::geteuid().is_root() {
            assert!(e.to_string().contains("not a directory"), "{e:?}");
        }
        assert_eq!(
            std::fs::read_to_string(outside.join("victim")).unwrap(),
            "keep"
        );
    }
}
