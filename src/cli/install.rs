//! `ferrio install` and `ferrio uninstall`: the binary, a systemd unit, the default config and,
//! with `--cni-bridge`, a CNI bridge network.
//!
//! Every path is joined below `--root-fs` (default `/`), so a staging root gets the same tree;
//! under one, systemctl is never run. The file work is in [`install_files`], [`plan_purge`] and
//! [`uninstall_files`], which take explicit paths (tests run them on a temporary directory).

use super::GlobalOpts;
use crate::config::{Config, DEFAULT_CONFIG_PATH};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The unit, with `@BINDIR@` for the directory of the binary.
const UNIT_TEMPLATE: &str = include_str!("ferrio.service");
const UNIT_NAME: &str = "ferrio.service";
const UNIT_PATH: &str = "/etc/systemd/system/ferrio.service";
const CONFLIST_FILE: &str = "10-ferrio-bridge.conflist";
/// The CNI network name of the bridge conflist; `uninstall --purge` removes only a conflist
/// with this name.
pub const NETWORK_NAME: &str = "ferrio";
const BRIDGE: &str = "ferrio0";
/// The plugins the bridge conflist runs (`host-local` is the bridge's IPAM).
const BRIDGE_PLUGINS: [&str; 3] = ["bridge", "host-local", "portmap"];

#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Installation prefix: the binary is <DIR>/bin/ferrio
    #[arg(long, value_name = "DIR", default_value = "/usr/local")]
    pub prefix: PathBuf,
    /// A staging root: every path is joined below DIR and systemctl is not run
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root_fs: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct InstallArgs {
    #[command(flatten)]
    pub target: Target,
    /// Also write a CNI bridge network, /etc/cni/net.d/10-ferrio-bridge.conflist (bridge
    /// ferrio0, host-local IPAM, masquerade, portmap)
    #[arg(long)]
    pub cni_bridge: bool,
    /// The bridge network's pod subnet
    #[arg(long, value_name = "CIDR", default_value = "10.88.0.0/16")]
    pub cni_subnet: String,
    /// Enable and start ferrio.service (systemctl enable --now)
    #[arg(long)]
    pub now: bool,
    /// Overwrite an existing /etc/ferrio/ferrio.toml and bridge conflist
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug, Clone)]
pub struct UninstallArgs {
    #[command(flatten)]
    pub target: Target,
    /// Also remove /etc/ferrio, the config's root and run_root (images, pod and container
    /// state) and ferrio's CNI bridge conflist
    #[arg(long)]
    pub purge: bool,
}

/// Where things go: the target system's paths, and the directory they are joined below.
#[derive(Debug, Clone)]
pub struct Layout {
    root_fs: PathBuf,
    prefix: PathBuf,
}

impl Layout {
    pub fn new(root_fs: &Path, prefix: &Path) -> Result<Layout> {
        if !prefix.is_absolute() {
            bail!("--prefix {} must be an absolute path", prefix.display());
        }
        // The bin directory goes into ExecStart=, where whitespace separates words and `%`, `$`,
        // `\` and quotes mean something to systemd.
        let text = prefix
            .to_str()
            .with_context(|| format!("--prefix {} is not UTF-8", prefix.display()))?;
        if let Some(c) = text
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || "%$\\\"'".contains(*c))
        {
            bail!("--prefix {text:?}: {c:?} cannot go into the unit's ExecStart=");
        }
        let root_fs = std::fs::canonicalize(root_fs)
            .or_else(|_| std::path::absolute(root_fs))
            .with_context(|| format!("resolving --root-fs {}", root_fs.display()))?;
        Ok(Layout {
            root_fs,
            prefix: prefix.to_path_buf(),
        })
    }

    /// Installing below a staging root rather than into the running system.
    pub fn staged(&self) -> bool {
        self.root_fs != Path::new("/")
    }

    /// A path of the target system, as seen from here.
    pub fn host(&self, p: &Path) -> PathBuf {
        self.root_fs.join(p.strip_prefix("/").unwrap_or(p))
    }

    /// The binary's path as the unit names it.
    fn exec_path(&self) -> PathBuf {
        self.prefix.join("bin").join("ferrio")
    }

    fn binary(&self) -> PathBuf {
        self.host(&self.exec_path())
    }

    fn unit(&self) -> PathBuf {
        self.host(Path::new(UNIT_PATH))
    }

    fn config_file(&self) -> PathBuf {
        self.host(Path::new(DEFAULT_CONFIG_PATH))
    }
}

/// The unit text with the bin directory filled in.
pub fn render_unit(bindir: &Path) -> String {
    UNIT_TEMPLATE.replace("@BINDIR@", &bindir.to_string_lossy())
}

/// The binary the unit's `ExecStart=` runs.
fn unit_exec(unit_text: &str) -> Option<PathBuf> {
    unit_text
        .lines()
        .find_map(|l| l.trim().strip_prefix("ExecStart="))
        .and_then(|cmd| cmd.split_whitespace().next())
        .map(|bin| PathBuf::from(bin.trim_start_matches(['-', '@', '+', '!', ':'])))
}

/// A pod subnet, `ADDRESS/LENGTH` with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    addr: IpAddr,
    len: u8,
}

impl Subnet {
    pub fn parse(s: &str) -> Result<Subnet> {
        let (a, l) = s
            .split_once('/')
            .with_context(|| format!("--cni-subnet {s:?} is not ADDRESS/LENGTH"))?;
        let addr: IpAddr = a
            .parse()
            .with_context(|| format!("--cni-subnet {s:?}: {a:?} is not an IP address"))?;
        let len: u8 = l
            .parse()
            .with_context(|| format!("--cni-subnet {s:?}: {l:?} is not a prefix length"))?;
        // host-local needs room for the gateway and at least one pod.
        let (bits, max, host) = match addr {
            IpAddr::V4(v) => (32, 30, u128::from(u32::from(v))),
            IpAddr::V6(v) => (128, 126, u128::from(v)),
        };
        if len > max {
            bail!("--cni-subnet {s:?}: a /{len} leaves no room for pods (at most /{max})");
        }
        let host_mask = if len == 0 {
            u128::MAX >> (128 - bits)
        } else {
            (1u128 << (bits - u32::from(len))) - 1
        };
        if host & host_mask != 0 {
            bail!("--cni-subnet {s:?} has host bits set; a subnet starts at its network address");
        }
        Ok(Subnet { addr, len })
    }

    fn default_route(&self) -> &'static str {
        match self.addr {
            IpAddr::V4(_) => "0.0.0.0/0",
            IpAddr::V6(_) => "::/0",
        }
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The bridge network: a CNI 1.0.0 conflist named `ferrio`.
pub fn bridge_conflist(subnet: Subnet) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": subnet.to_string() }]],
                    "routes": [{ "dst": subnet.default_route() }]
                }
            },
            {
                "type": "portmap",
                "capabilities": { "portMappings": true }
            }
        ]
    })
}

/// Creates `dir` and its missing parents, 0755.
fn ensure_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    // The umask may have taken bits away.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod 0755 {}", dir.display()))
}

/// Writes `path` through a temporary file in its directory and a rename, so a reader sees the
/// old file or the new one, never part of one.
fn write_atomic(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut std::fs::File) -> Result<()>,
) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    ensure_dir(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".ferrio-install-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let ctx = || format!("writing {}", path.display());
    fill(tmp.as_file_mut()).with_context(ctx)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(ctx)?;
    tmp.as_file().sync_all().with_context(ctx)?;
    tmp.persist(path).map_err(|e| e.error).with_context(ctx)?;
    Ok(())
}

fn write_text(path: &Path, text: &str, mode: u32) -> Result<()> {
    write_atomic(path, mode, |f| Ok(f.write_all(text.as_bytes())?))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// What `install_files` does besides the binary, unit and config.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// Write the bridge conflist with this subnet.
    pub cni_bridge: Option<Subnet>,
    /// Overwrite an existing config and conflist.
    pub force: bool,
}

/// Installs the binary `exe`, the unit, the config and (optionally) the bridge conflist below
/// `layout`, printing each file written or kept. Returns the config the daemon will load.
pub fn install_files(
    layout: &Layout,
    exe: &Path,
    opts: &InstallOptions,
    out: &mut dyn Write,
) -> Result<Config> {
    // The binary.
    let bin = layout.binary();
    if same_file(exe, &bin) {
        writeln!(out, "kept   {} (it is this binary)", bin.display())?;
    } else {
        let mut src =
            std::fs::File::open(exe).with_context(|| format!("opening {}", exe.display()))?;
        write_atomic(&bin, 0o755, |f| {
            std::io::copy(&mut src, f)?;
            Ok(())
        })?;
        writeln!(out, "wrote  {}", bin.display())?;
    }

    // The unit, always: it is ours, and names the binary just installed.
    let unit = layout.unit();
    write_text(&unit, &render_unit(&layout.prefix.join("bin")), 0o644)?;
    writeln!(out, "wrote  {}", unit.display())?;

    // The config: the operator's file is kept.
    let config = layout.config_file();
    if config.exists() && !opts.force {
        writeln!(
            out,
            "kept   {} (it exists; --force overwrites it)",
            config.display()
        )?;
    } else {
        write_text(&config, &crate::config::default_toml(), 0o644)?;
        writeln!(out, "wrote  {}", config.display())?;
    }
    let cfg = match Config::load(Some(&config)) {
        Ok(c) => c,
        Err(e) => {
            writeln!(
                out,
                "warning: {e:#}; the daemon will not start until it is fixed"
            )?;
            Config::default()
        }
    };

    // CNI: where ferrio looks, and the bridge network.
    let net_dir = layout.host(&cfg.network.network_dir);
    if let Some(subnet) = opts.cni_bridge {
        let path = net_dir.join(CONFLIST_FILE);
        if path.exists() && !opts.force {
            writeln!(
                out,
                "kept   {} (it exists; --force overwrites it)",
                path.display()
            )?;
        } else {
            let mut text = serde_json::to_string_pretty(&bridge_conflist(subnet))?;
            text.push('\n');
            write_text(&path, &text, 0o644)?;
            writeln!(
                out,
                "wrote  {} (network {NETWORK_NAME}, bridge {BRIDGE}, subnet {subnet})",
                path.display()
            )?;
        }
        network_notes(layout, &cfg, out)?;
    }
    let dirs: Vec<String> = cfg
        .network
        .plugin_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    writeln!(
        out,
        "CNI: ferrio reads networks from {} and runs plugins from {}",
        cfg.network.network_dir.display(),
        dirs.join(", ")
    )?;
    Ok(cfg)
}

/// Tells what would keep the bridge network from working: missing plugins, another network
/// chosen before it.
fn network_notes(layout: &Layout, cfg: &Config, out: &mut dyn Write) -> Result<()> {
    let missing: Vec<&str> = BRIDGE_PLUGINS
        .into_iter()
        .filter(|p| {
            !cfg.network
                .plugin_dirs
                .iter()
                .any(|d| layout.host(d).join(p).is_file())
        })
        .collect();
    if !missing.is_empty() {
        writeln!(
            out,
            "note: CNI plugins not found: {} (the containernetworking/plugins release has them)",
            missing.join(", ")
        )?;
    }
    let chosen = &cfg.network.default_network;
    if !chosen.is_empty() {
        if chosen != NETWORK_NAME {
            writeln!(
                out,
                "note: network.default_network is {chosen:?}; set it to {NETWORK_NAME:?} to use the bridge"
            )?;
        }
        return Ok(());
    }
    let mut files: Vec<String> = std::fs::read_dir(layout.host(&cfg.network.network_dir))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".conflist") || n.ends_with(".conf") || n.ends_with(".json"))
        .collect();
    files.sort();
    if let Some(first) = files.first().filter(|f| *f != CONFLIST_FILE) {
        writeln!(
            out,
            "note: ferrio uses the first network in file-name order, {first}; set \
             network.default_network = {NETWORK_NAME:?} to use the bridge"
        )?;
    }
    Ok(())
}

/// What `uninstall --purge` removes, with the checks done before anything is touched.
#[derive(Debug, Clone)]
pub struct Purge {
    config_dir: PathBuf,
    /// root, run_root; whether it is a mount point itself (then only its contents go).
    state: Vec<(PathBuf, bool)>,
    /// State directories kept, with the reason.
    kept: Vec<(PathBuf, String)>,
    socket: PathBuf,
    lock: PathBuf,
    conflist: PathBuf,
}

/// The config the installed daemon loads: the target's config file (or `--config`, below the
/// staging root) with the command-line flags on top.
fn target_config(layout: &Layout, global: &GlobalOpts) -> Result<Config> {
    let file = layout.host(
        global
            .config
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_CONFIG_PATH)),
    );
    let mut opts = global.clone();
    if file.exists() || global.config.is_some() {
        opts.config = Some(file);
        return opts.load_config();
    }
    opts.config = None;
    if !layout.staged() {
        return opts.load_config();
    }
    // No config file below the staging root: the defaults, with the flags on top.
    let mut cfg = Config::default();
    for (flag, field) in [
        (&global.root, &mut cfg.root),
        (&global.run_root, &mut cfg.run_root),
        (&global.listen, &mut cfg.api.listen),
    ] {
        if let Some(v) = flag {
            *field = super::absolute(v)?;
        }
    }
    Ok(cfg)
}

/// Whether `dir` (a path of the target) can go in a purge; the reason when not.
fn purgeable(target_path: &Path, host_path: &Path) -> std::result::Result<(), String> {
    let depth = target_path
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .count();
    if depth < 2 {
        return Err("a top-level directory is never purged; remove it by hand".into());
    }
    let named = target_path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("ferrio"));
    if !named && !host_path.join("ferrio.lock").exists() {
        return Err(
            "neither its name nor a ferrio.lock in it says it is ferrio's; remove it by hand"
                .into(),
        );
    }
    Ok(())
}

/// Reads the config and checks what a purge would remove: no mounts left below the state
/// directories (pods and containers not yet removed). Done before the daemon is stopped.
pub fn plan_purge(layout: &Layout, global: &GlobalOpts) -> Result<Purge> {
    let cfg = target_config(layout, global)?;
    let mut state = Vec::new();
    let mut kept = Vec::new();
    for dir in [&cfg.root, &cfg.run_root] {
        let host = layout.host(dir);
        // mountinfo has canonical paths (/var/run is a link to /run).
        let host = std::fs::canonicalize(&host).unwrap_or(host);
        if state.iter().any(|(d, _)| d == &host) {
            continue;
        }
        if let Err(why) = purgeable(dir, &host) {
            kept.push((host, why));
            continue;
        }
        let (own, mounts): (Vec<PathBuf>, Vec<PathBuf>) = crate::sys::mount::mounts_under(&host)
            .into_iter()
            .partition(|m| m == &host);
        if let Some(m) = mounts.first() {
            bail!(
                "{} mount(s) remain below {} (such as {}): pods or containers still exist. Remove \
                 them first (`crictl rmp -fa` while the daemon runs), or unmount them, then purge",
                mounts.len(),
                host.display(),
                m.display()
            );
        }
        state.push((host, !own.is_empty()));
    }
    Ok(Purge {
        config_dir: layout.host(
            Path::new(DEFAULT_CONFIG_PATH)
                .parent()
                .unwrap_or(Path::new("/etc/ferrio")),
        ),
        state,
        kept,
        socket: layout.host(&cfg.socket_path()),
        lock: layout.host(&cfg.root.join("ferrio.lock")),
        conflist: layout.host(&cfg.network.network_dir.join(CONFLIST_FILE)),
    })
}

/// The binary the installed unit runs, after checking it is the one `layout` names.
/// `None`: no unit.
fn installed_binary(layout: &Layout) -> Result<Option<PathBuf>> {
    let unit = layout.unit();
    let text = match std::fs::read_to_string(&unit) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", unit.display())),
    };
    let want = layout.exec_path();
    match unit_exec(&text) {
        Some(bin) if bin == want => Ok(Some(bin)),
        Some(bin) => bail!(
            "{} runs {}, not {}: pass the --prefix it was installed with ({})",
            unit.display(),
            bin.display(),
            want.display(),
            bin.parent()
                .and_then(Path::parent)
                .unwrap_or(Path::new("/"))
                .display()
        ),
        None => bail!("{} has no ExecStart=", unit.display()),
    }
}

/// Checks that no daemon is left before a purge: none answers on the socket, none holds the
/// root lock.
fn check_no_daemon(p: &Purge) -> Result<()> {
    if std::os::unix::net::UnixStream::connect(&p.socket).is_ok() {
        bail!(
            "a ferrio daemon answers on {}: stop it before purging",
            p.socket.display()
        );
    }
    if p.lock.exists() {
        let held = crate::sys::FileLock::try_lock(&p.lock)
            .with_context(|| format!("locking {}", p.lock.display()))?
            .is_none();
        if held {
            bail!(
                "a ferrio daemon holds {}: stop it before purging",
                p.lock.display()
            );
        }
    }
    Ok(())
}

fn remove_dir(dir: &Path, what: &str, out: &mut dyn Write) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => writeln!(out, "removed {} ({what})", dir.display())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
    }
    Ok(())
}

/// Removes what is in `dir`, a mount point, and keeps `dir`.
fn empty_dir(dir: &Path, out: &mut dyn Write) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for e in entries {
        let path = e?.path();
        let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .with_context(|| format!("removing {}", path.display()))?;
    }
    writeln!(
        out,
        "emptied {} (images and state; it is a mount point)",
        dir.display()
    )?;
    Ok(())
}

fn remove_file(path: &Path, out: &mut dyn Write) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            writeln!(out, "removed {}", path.display())?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Removes the unit and the binary it runs and, with `purge`, the config directory, the state
/// directories and ferrio's conflist. The daemon must be stopped already.
pub fn uninstall_files(layout: &Layout, purge: Option<&Purge>, out: &mut dyn Write) -> Result<()> {
    if let Some(p) = purge {
        check_no_daemon(p)?;
    }
    let binary = installed_binary(layout)?;
    remove_file(&layout.unit(), out)?;
    let bin = layout.binary();
    match binary {
        Some(_) => {
            remove_file(&bin, out)?;
        }
        None if bin.exists() => writeln!(
            out,
            "kept   {} (no {UNIT_NAME} names it; remove it by hand if it is ferrio's)",
            bin.display()
        )?,
        None => {}
    }
    let Some(p) = purge else {
        let cfg = layout.config_file();
        writeln!(
            out,
            "kept   {} and ferrio's images and state (--purge removes them)",
            cfg.parent().unwrap_or(&cfg).display()
        )?;
        return Ok(());
    };
    remove_dir(&p.config_dir, "config", out)?;
    for (dir, mount_point) in &p.state {
        if *mount_point {
            empty_dir(dir, out)?;
        } else {
            remove_dir(dir, "images and state", out)?;
        }
    }
    for (dir, why) in &p.kept {
        if dir.exists() {
            writeln!(out, "kept   {}: {why}", dir.display())?;
        }
    }
    match std::fs::read(&p.conflist) {
        Ok(bytes) => {
            let name = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("name")?.as_str().map(str::to_string));
            if name.as_deref() == Some(NETWORK_NAME) {
                remove_file(&p.conflist, out)?;
                writeln!(
                    out,
                    "note: the {BRIDGE} bridge, its masquerade rules and host-local's leases \
                     (/var/lib/cni/networks/{NETWORK_NAME}) stay until removed by hand or a reboot"
                )?;
            } else {
                writeln!(
                    out,
                    "kept   {} (not the {NETWORK_NAME:?} network)",
                    p.conflist.display()
                )?;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.conflist.display())),
    }
    Ok(())
}

/// Whether systemctl is to be run: the running system (not a staging root) with systemd as
/// PID 1.
fn use_systemd(layout: &Layout) -> bool {
    !layout.staged() && Path::new("/run/systemd/system").is_dir()
}

fn systemctl(args: &[&str]) -> Result<()> {
    let status = std::process::Command::new("systemctl")
        .args(args)
        .status()
        .context("running systemctl")?;
    if !status.success() {
        bail!("systemctl {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// `ferrio install`.
pub fn install(args: InstallArgs) -> Result<()> {
    let layout = Layout::new(&args.target.root_fs, &args.target.prefix)?;
    let opts = InstallOptions {
        cni_bridge: if args.cni_bridge {
            Some(Subnet::parse(&args.cni_subnet)?)
        } else {
            None
        },
        force: args.force,
    };
    let mut out = std::io::stdout().lock();
    let cfg = install_files(&layout, Path::new("/proc/self/exe"), &opts, &mut out)?;
    let start = format!("systemctl enable --now {UNIT_NAME}");
    if use_systemd(&layout) {
        systemctl(&["daemon-reload"])?;
        writeln!(out, "ran    systemctl daemon-reload")?;
        if args.now {
            systemctl(&["enable", "--now", UNIT_NAME])?;
            writeln!(out, "ran    {start}")?;
        } else {
            writeln!(out, "next:  {start}")?;
        }
    } else if layout.staged() {
        writeln!(
            out,
            "staged below {}{}; on the target: systemctl daemon-reload && {start}",
            layout.root_fs.display(),
            if args.now {
                ", so --now does nothing"
            } else {
                ""
            },
        )?;
    } else {
        writeln!(
            out,
            "systemd is not running (no /run/systemd/system){}: have the init system run `{} \
             --config {DEFAULT_CONFIG_PATH}`",
            if args.now {
                ", so --now does nothing"
            } else {
                ""
            },
            layout.exec_path().display()
        )?;
    }
    writeln!(
        out,
        "kubelet: --container-runtime-endpoint=unix://{}",
        cfg.socket_path().display()
    )?;
    Ok(())
}

/// `ferrio uninstall`.
pub fn uninstall(global: &GlobalOpts, args: UninstallArgs) -> Result<()> {
    let layout = Layout::new(&args.target.root_fs, &args.target.prefix)?;
    // Everything that can refuse runs before the daemon is stopped.
    installed_binary(&layout)?;
    let purge = if args.purge {
        Some(plan_purge(&layout, global)?)
    } else {
        None
    };
    let mut out = std::io::stdout().lock();
    let systemd = use_systemd(&layout);
    if systemd && layout.unit().exists() {
        systemctl(&["disable", "--now", UNIT_NAME])?;
        writeln!(out, "ran    systemctl disable --now {UNIT_NAME}")?;
        writeln!(
            out,
            "note: containers still running keep running under their monitors (`ferrio \
             __monitor`, KillMode=process); they are left to you"
        )?;
    }
    uninstall_files(&layout, purge.as_ref(), &mut out)?;
    if systemd {
        systemctl(&["daemon-reload"])?;
        writeln!(out, "ran    systemctl daemon-reload")?;
    }
    // A daemon systemd did not run (a purge has refused one already).
    if purge.is_none() {
        if let Ok(cfg) = target_config(&layout, global) {
            let socket = layout.host(&cfg.socket_path());
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                writeln!(
                    out,
                    "note: a ferrio daemon still answers on {}; stop it yourself",
                    socket.display()
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Stage {
        _dir: tempfile::TempDir,
        exe: PathBuf,
        layout: Layout,
    }

    fn stage() -> Stage {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("build-ferrio");
        std::fs::write(&exe, b"\x7fELF not really").unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let layout = Layout::new(&root, Path::new("/opt/fx")).unwrap();
        Stage {
            _dir: dir,
            exe,
            layout,
        }
    }

    impl Stage {
        fn p(&self, p: &str) -> PathBuf {
            self.layout.host(Path::new(p))
        }
        fn install(&self, opts: &InstallOptions) -> String {
            let mut out = Vec::new();
            install_files(&self.layout, &self.exe, opts, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        }
        fn uninstall(&self, purge: bool) -> Result<String> {
            let p = if purge {
                Some(plan_purge(&self.layout, &GlobalOpts::default())?)
            } else {
                None
            };
            let mut out = Vec::new();
            uninstall_files(&self.layout, p.as_ref(), &mut out)?;
            Ok(String::from_utf8(out).unwrap())
        }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o7777
    }

    fn bridge() -> InstallOptions {
        InstallOptions {
            cni_bridge: Some(Subnet::parse("10.88.0.0/16").unwrap()),
            force: false,
        }
    }

    #[test]
    fn install_writes_binary_unit_and_config() {
        let s = stage();
        let out = s.install(&InstallOptions::default());

        let bin = s.p("/opt/fx/bin/ferrio");
        assert_eq!(std::fs::read(&bin).unwrap(), b"\x7fELF not really");
        assert_eq!(mode(&bin), 0o755);

        let unit_path = s.p("/etc/systemd/system/ferrio.service");
        let unit = std::fs::read_to_string(&unit_path).unwrap();
        assert_eq!(mode(&unit_path), 0o644);
        assert!(!unit.contains("@BINDIR@"), "{unit}");
        let lines: Vec<&str> = unit.lines().map(str::trim).collect();
        for want in [
            "ExecStart=/opt/fx/bin/ferrio --config /etc/ferrio/ferrio.toml",
            "Type=notify",
            "KillMode=process",
            "Delegate=yes",
            "WantedBy=multi-user.target",
        ] {
            assert!(lines.contains(&want), "{want} missing from\n{unit}");
        }
        assert_eq!(unit_exec(&unit), Some(PathBuf::from("/opt/fx/bin/ferrio")));

        let cfg = s.p("/etc/ferrio/ferrio.toml");
        assert_eq!(
            std::fs::read_to_string(&cfg).unwrap(),
            crate::config::default_toml()
        );
        assert_eq!(mode(&cfg), 0o644);
        assert_eq!(mode(&s.p("/etc/ferrio")), 0o755);
        assert!(!s.p("/etc/cni/net.d").exists());
        // No temporary files left behind.
        for d in ["/opt/fx/bin", "/etc/systemd/system", "/etc/ferrio"] {
            assert_eq!(std::fs::read_dir(s.p(d)).unwrap().count(), 1, "{d}");
        }

        for f in [&bin, &unit_path, &cfg] {
            assert!(out.contains(&format!("wrote  {}", f.display())), "{out}");
        }
        assert!(out.contains("reads networks from /etc/cni/net.d"), "{out}");
        assert!(out.contains("/opt/cni/bin"), "{out}");
    }

    #[test]
    fn install_keeps_the_operators_config_unless_forced() {
        let s = stage();
        let cfg = s.p("/etc/ferrio/ferrio.toml");
        std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
        std::fs::write(&cfg, "log_level = \"debug\"\n").unwrap();

        let out = s.install(&InstallOptions::default());
        assert_eq!(
            std::fs::read_to_string(&cfg).unwrap(),
            "log_level = \"debug\"\n"
        );
        assert!(out.contains(&format!("kept   {}", cfg.display())), "{out}");

        s.install(&InstallOptions {
            force: true,
            ..Default::default()
        });
        assert_eq!(
            std::fs::read_to_string(&cfg).unwrap(),
            crate::config::default_toml()
        );
    }

    #[test]
    fn install_skips_copying_a_binary_onto_itself() {
        let s = stage();
        s.install(&InstallOptions::default());
        let bin = s.p("/opt/fx/bin/ferrio");
        let installed = Stage {
            exe: bin.clone(),
            layout: s.layout.clone(),
            _dir: tempfile::tempdir().unwrap(),
        };
        let out = installed.install(&InstallOptions::default());
        assert!(
            out.contains(&format!("kept   {} (it is this binary)", bin.display())),
            "{out}"
        );
        assert_eq!(std::fs::read(&bin).unwrap(), b"\x7fELF not really");
    }

    #[test]
    fn install_writes_the_bridge_conflist_once() {
        let s = stage();
        let out = s.install(&InstallOptions {
            cni_bridge: Some(Subnet::parse("10.99.0.0/24").unwrap()),
            force: false,
        });
        let path = s.p("/etc/cni/net.d/10-ferrio-bridge.conflist");
        assert_eq!(mode(&path), 0o644);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["name"], "ferrio");
        let plugins = v["plugins"].as_array().unwrap();
        let types: Vec<&str> = plugins
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["bridge", "portmap"]);
        let b = &plugins[0];
        assert_eq!(b["bridge"], "ferrio0");
        assert_eq!(b["isGateway"], true);
        assert_eq!(b["ipMasq"], true);
        assert_eq!(b["hairpinMode"], true);
        assert_eq!(b["ipam"]["type"], "host-local");
        assert_eq!(b["ipam"]["ranges"][0][0]["subnet"], "10.99.0.0/24");
        assert_eq!(b["ipam"]["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(plugins[1]["capabilities"]["portMappings"], true);
        // ferrio's own parser takes it.
        let list = crate::network::conf::NetworkList::parse(&path, &std::fs::read(&path).unwrap());
        assert!(list.is_ok(), "{list:?}");
        assert!(
            out.contains("CNI plugins not found: bridge, host-local, portmap"),
            "{out}"
        );

        // Present: kept, even with another subnet asked for.
        let out = s.install(&bridge());
        assert!(out.contains(&format!("kept   {}", path.display())), "{out}");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.99.0.0/24"
        );
    }

    #[test]
    fn install_says_when_another_network_comes_first() {
        let s = stage();
        let dir = s.p("/etc/cni/net.d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("05-other.conflist"), "{}").unwrap();
        for p in BRIDGE_PLUGINS {
            let f = s.p("/opt/cni/bin").join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, "").unwrap();
        }
        let out = s.install(&bridge());
        assert!(
            out.contains("first network in file-name order, 05-other.conflist"),
            "{out}"
        );
        assert!(!out.contains("not found"), "{out}");
    }

    #[test]
    fn command_lines() {
        use clap::{CommandFactory, Parser};
        super::super::Cli::command().debug_assert();
        let parse = |args: &[&str]| {
            super::super::Cli::try_parse_from(std::iter::once("ferrio").chain(args.iter().copied()))
                .unwrap()
                .command
                .unwrap()
        };
        let super::super::Command::Install(a) = parse(&["install"]) else {
            panic!("not install")
        };
        assert_eq!(a.target.prefix, Path::new("/usr/local"));
        assert_eq!(a.target.root_fs, Path::new("/"));
        assert_eq!(a.cni_subnet, "10.88.0.0/16");
        assert!(!a.cni_bridge && !a.now && !a.force);
        let super::super::Command::Install(a) = parse(&[
            "install",
            "--prefix",
            "/opt/f",
            "--root-fs",
            "/tmp/s",
            "--cni-bridge",
            "--cni-subnet",
            "10.1.0.0/24",
            "--now",
            "--force",
            "--root",
            "/x",
        ]) else {
            panic!("not install")
        };
        assert_eq!(a.target.prefix, Path::new("/opt/f"));
        assert_eq!(a.target.root_fs, Path::new("/tmp/s"));
        assert_eq!(a.cni_subnet, "10.1.0.0/24");
        assert!(a.cni_bridge && a.now && a.force);
        let super::super::Command::Uninstall(u) =
            parse(&["uninstall", "--purge", "--root-fs", "/tmp/s"])
        else {
            panic!("not uninstall")
        };
        assert!(u.purge);
        assert_eq!(u.target.root_fs, Path::new("/tmp/s"));
    }

    #[test]
    fn subnets() {
        assert_eq!(
            Subnet::parse("10.88.0.0/16").unwrap().to_string(),
            "10.88.0.0/16"
        );
        let v6 = Subnet::parse("fd00:88::/64").unwrap();
        assert_eq!(v6.default_route(), "::/0");
        for bad in [
            "10.88.0.0",
            "10.88.0.1/16",
            "10.88.0.0/31",
            "10.88.0.0/x",
            "ten/8",
            "fd00::1/64",
        ] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_must_fit_exec_start() {
        let root = Path::new("/tmp");
        assert!(Layout::new(root, Path::new("usr/local")).is_err());
        assert!(Layout::new(root, Path::new("/opt/my dir")).is_err());
        assert!(Layout::new(root, Path::new("/opt/100%")).is_err());
        assert!(Layout::new(root, Path::new("/opt/ferrio-1.0")).is_ok());
        assert!(!Layout::new(Path::new("/"), Path::new("/usr/local"))
            .unwrap()
            .staged());
    }

    #[test]
    fn uninstall_removes_unit_and_binary_and_keeps_config() {
        let s = stage();
        s.install(&bridge());
        std::fs::create_dir_all(s.p("/var/lib/ferrio/images")).unwrap();
        let out = s.uninstall(false).unwrap();
        assert!(!s.p("/etc/systemd/system/ferrio.service").exists());
        assert!(!s.p("/opt/fx/bin/ferrio").exists());
        assert!(s.p("/etc/ferrio/ferrio.toml").exists());
        assert!(s.p("/var/lib/ferrio/images").exists());
        assert!(s.p("/etc/cni/net.d/10-ferrio-bridge.conflist").exists());
        assert!(out.contains("--purge removes them"), "{out}");
    }

    #[test]
    fn uninstall_keeps_a_binary_no_unit_names() {
        let s = stage();
        let bin = s.p("/opt/fx/bin/ferrio");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::write(&bin, "").unwrap();
        let out = s.uninstall(false).unwrap();
        assert!(bin.exists());
        assert!(out.contains("no ferrio.service names it"), "{out}");
    }

    #[test]
    fn uninstall_refuses_another_prefix() {
        let s = stage();
        s.install(&InstallOptions::default());
        let other = Stage {
            layout: Layout::new(&s.layout.root_fs, Path::new("/usr/local")).unwrap(),
            exe: s.exe.clone(),
            _dir: tempfile::tempdir().unwrap(),
        };
        let err = other.uninstall(false).unwrap_err().to_string();
        assert!(
            err.contains("pass the --prefix it was installed with (/opt/fx)"),
            "{err}"
        );
        assert!(s.p("/etc/systemd/system/ferrio.service").exists());
        assert!(s.p("/opt/fx/bin/ferrio").exists());
    }

    #[test]
    fn purge_removes_config_state_and_ferrios_conflist() {
        let s = stage();
        s.install(&bridge());
        std::fs::create_dir_all(s.p("/var/lib/ferrio/images/blobs")).unwrap();
        std::fs::write(s.p("/var/lib/ferrio/ferrio.lock"), "").unwrap();
        std::fs::create_dir_all(s.p("/run/ferrio/ctr")).unwrap();
        let out = s.uninstall(true).unwrap();
        for gone in [
            "/etc/systemd/system/ferrio.service",
            "/opt/fx/bin/ferrio",
            "/etc/ferrio",
            "/var/lib/ferrio",
            "/run/ferrio",
            "/etc/cni/net.d/10-ferrio-bridge.conflist",
        ] {
            assert!(!s.p(gone).exists(), "{gone} left; {out}");
        }
        assert!(s.p("/var/lib").exists());
        assert!(s.p("/etc/cni/net.d").exists());
    }

    #[test]
    fn purge_keeps_a_conflist_that_is_not_ferrios_and_foreign_state_dirs() {
        let s = stage();
        s.install(&InstallOptions::default());
        // The operator's config puts the state elsewhere.
        std::fs::write(
            s.p("/etc/ferrio/ferrio.toml"),
            "root = \"/data/cri\"\nrun_root = \"/run/ferrio-x\"\n",
        )
        .unwrap();
        std::fs::create_dir_all(s.p("/data/cri/images")).unwrap();
        std::fs::create_dir_all(s.p("/run/ferrio-x")).unwrap();
        let net = s.p("/etc/cni/net.d/10-ferrio-bridge.conflist");
        std::fs::create_dir_all(net.parent().unwrap()).unwrap();
        std::fs::write(&net, r#"{"cniVersion":"1.0.0","name":"mine","plugins":[]}"#).unwrap();
        let out = s.uninstall(true).unwrap();
        assert!(net.exists(), "{out}");
        assert!(s.p("/data/cri/images").exists(), "{out}");
        assert!(out.contains("remove it by hand"), "{out}");
        assert!(!s.p("/run/ferrio-x").exists(), "{out}");
        assert!(!s.p("/etc/ferrio").exists(), "{out}");
    }

    #[test]
    fn purge_is_refused_while_the_daemon_answers() {
        let s = stage();
        s.install(&InstallOptions::default());
        std::fs::create_dir_all(s.p("/run/ferrio")).unwrap();
        let _listener =
            std::os::unix::net::UnixListener::bind(s.p("/run/ferrio/ferrio.sock")).unwrap();
        let err = s.uninstall(true).unwrap_err().to_string();
        assert!(err.contains("answers on"), "{err}");
        assert!(s.p("/etc/systemd/system/ferrio.service").exists());
        assert!(s.p("/etc/ferrio/ferrio.toml").exists());
    }

    #[test]
    fn purge_is_refused_while_the_root_is_locked() {
        let s = stage();
        s.install(&InstallOptions::default());
        std::fs::create_dir_all(s.p("/var/lib/ferrio")).unwrap();
        let _lock = crate::sys::FileLock::try_lock(&s.p("/var/lib/ferrio/ferrio.lock"))
            .unwrap()
            .unwrap();
        let err = s.uninstall(true).unwrap_err().to_string();
        assert!(err.contains("holds"), "{err}");
        assert!(s.p("/var/lib/ferrio").exists());
    }

    /// Unmounts on drop, so a failed assertion leaves no mount behind.
    struct Mounted(PathBuf);
    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = crate::sys::mount::unmount(&self.0);
        }
    }

    // Bind mounts: root only (the test suite runs as root).
    #[test]
    fn purge_is_refused_while_mounts_remain_and_empties_a_mounted_root() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let s = stage();
        s.install(&InstallOptions::default());
        let rootfs = s.p("/run/ferrio/ctr/c1/bundle/rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        let m = Mounted(rootfs.clone());
        crate::sys::mount::bind(&s.exe.parent().unwrap().join("root/etc"), &rootfs).unwrap();
        let err = s.uninstall(true).unwrap_err().to_string();
        assert!(err.contains("1 mount(s) remain below"), "{err}");
        assert!(s.p("/etc/systemd/system/ferrio.service").exists());
        drop(m);

        // The state directory itself a mount point: its contents go, the directory stays.
        let root = s.p("/var/lib/ferrio");
        let backing = s.exe.parent().unwrap().join("backing");
        std::fs::create_dir_all(backing.join("images/blobs")).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        let _m = Mounted(root.clone());
        crate::sys::mount::bind(&backing, &root).unwrap();
        let out = s.uninstall(true).unwrap();
        assert!(out.contains("emptied"), "{out}");
        assert!(root.is_dir());
        assert_eq!(std::fs::read_dir(&backing).unwrap().count(), 0);
        assert!(!s.p("/etc/ferrio").exists());
    }

    #[test]
    fn unit_template_is_plain_key_value() {
        let unit = render_unit(Path::new("/usr/local/bin"));
        let mut section = "";
        for line in unit.lines() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if l.starts_with('[') {
                assert!(l.ends_with(']'), "{l}");
                section = l;
                continue;
            }
            assert!(!section.is_empty(), "{l} before any section");
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{l}"));
            assert!(!k.is_empty() && !v.is_empty() && !k.contains(' '), "{l}");
        }
        assert_eq!(section, "[Install]");
    }
}
