//! The CNI exec protocol: how one plugin binary is run, and what it answers.
//!
//! A plugin is found by its `type` in the plugin directories and run with `CNI_*` variables in
//! its environment and its config (JSON) on stdin; it answers a result or an error
//! (`{"code","msg","details"}`) on stdout. Results of spec 0.3.x/0.4.0 and 1.x share the
//! `ips[].address` / `interfaces` shape read here.

use super::NetworkError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Plugin output beyond this is not read (results and errors are a few KiB).
const MAX_OUTPUT: usize = 1024 * 1024;

/// A CNI operation (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// Whether the command is about one attachment (and so gets CNI_CONTAINERID and friends).
    fn per_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The per-attachment part of a plugin's environment.
#[derive(Debug, Clone, Default)]
pub struct Attachment<'a> {
    pub container_id: &'a str,
    /// The network namespace path; empty when it no longer exists (DEL only).
    pub netns: &'a str,
    pub ifname: &'a str,
    /// `CNI_ARGS`, see [`cni_args`].
    pub args: &'a str,
}

/// Formats `CNI_ARGS` for a Kubernetes pod, as kubelet-era runtimes do.
pub fn cni_args(namespace: &str, name: &str, pod_id: &str, uid: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};\
         K8S_POD_INFRA_CONTAINER_ID={pod_id};K8S_POD_UID={uid}"
    )
}

/// Finds the plugin binary `plugin` in `dirs`.
pub fn find_plugin(plugin: &str, dirs: &[PathBuf]) -> Result<PathBuf, NetworkError> {
    use std::os::unix::fs::PermissionsExt;
    for d in dirs {
        let p = d.join(plugin);
        if let Ok(md) = std::fs::metadata(&p) {
            if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                return Ok(p);
            }
        }
    }
    Err(NetworkError::PluginNotFound {
        plugin: plugin.to_string(),
        dirs: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// A plugin's error answer (spec "Error" type).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PluginError {
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

/// Reads a plugin's error answer from its stdout, if it is one.
pub fn parse_error(stdout: &[u8]) -> Option<PluginError> {
    let e: PluginError = serde_json::from_slice(stdout).ok()?;
    (e.code != 0 || !e.msg.is_empty()).then_some(e)
}

/// One invocation of one plugin.
pub struct Exec<'a> {
    pub network: &'a str,
    pub plugin: &'a str,
    pub binary: &'a Path,
    pub command: Command,
    pub attachment: Option<&'a Attachment<'a>>,
    /// `CNI_PATH`.
    pub cni_path: &'a str,
    pub stdin: &'a Value,
    pub timeout: Duration,
}

impl Exec<'_> {
    /// Runs the plugin (killed after the timeout) and returns what it printed on success
    /// (`None` for empty output, which DEL, CHECK, STATUS and GC may give).
    pub async fn run(&self) -> Result<Option<Value>, NetworkError> {
        let mut cmd = tokio::process::Command::new(self.binary);
        // The daemon's environment goes to the plugin (PATH for iptables and friends), minus
        // any CNI_ variable of its own.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CNI_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("CNI_COMMAND", self.command.as_str())
            .env("CNI_PATH", self.cni_path);
        if self.command.per_attachment() {
            let a = self.attachment.cloned().unwrap_or_default();
            cmd.env("CNI_CONTAINERID", a.container_id)
                .env("CNI_NETNS", a.netns)
                .env("CNI_IFNAME", a.ifname)
                .env("CNI_ARGS", a.args);
        }
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let input = serde_json::to_vec(self.stdin).map_err(|e| self.bad_output(e.to_string()))?;
        tracing::debug!(
            network = self.network,
            plugin = self.plugin,
            command = %self.command,
            "running CNI plugin"
        );
        // ETXTBSY: the binary is still open for writing somewhere (being installed, or a
        // concurrent fork inherited the writer's fd for an instant); try again shortly.
        let mut attempts = 0;
        let mut child = loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 5 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                r => {
                    break r.map_err(|source| NetworkError::Exec {
                        path: self.binary.to_path_buf(),
                        source,
                    })?
                }
            }
        };
        let mut stdin = child.stdin.take();
        let write = async move {
            if let Some(s) = stdin.as_mut() {
                // A plugin may exit without reading its input: EPIPE is not our error.
                let _ = s.write_all(&input).await;
            }
            drop(stdin);
        };
        let run = async { tokio::join!(write, child.wait_with_output()).1 };
        let out = match tokio::time::timeout(self.timeout, run).await {
            Ok(out) => out.map_err(|source| NetworkError::Exec {
                path: self.binary.to_path_buf(),
                source,
            })?,
            // Dropping the child (kill_on_drop) kills the plugin.
            Err(_) => {
                return Err(NetworkError::Timeout {
                    network: self.network.to_string(),
                    plugin: self.plugin.to_string(),
                    command: self.command.as_str(),
                    secs: self.timeout.as_secs(),
                })
            }
        };
        let stdout = &out.stdout[..out.stdout.len().min(MAX_OUTPUT)];
        if !out.status.success() {
            if let Some(e) = parse_error(stdout) {
                return Err(NetworkError::Plugin {
                    network: self.network.to_string(),
                    plugin: self.plugin.to_string(),
                    command: self.command.as_str(),
                    code: e.code,
                    msg: e.msg,
                    details: e.details,
                });
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            let text = if stderr.trim().is_empty() {
                String::from_utf8_lossy(stdout).into_owned()
            } else {
                stderr.into_owned()
            };
            return Err(NetworkError::PluginFailed {
                network: self.network.to_string(),
                plugin: self.plugin.to_string(),
                command: self.command.as_str(),
                status: out.status.to_string(),
                output: tail(text.trim(), 4096),
            });
        }
        if !out.stderr.is_empty() {
            tracing::debug!(plugin = self.plugin, stderr = %String::from_utf8_lossy(&out.stderr), "CNI plugin stderr");
        }
        if stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(stdout).map(Some).map_err(|e| {
            self.bad_output(format!(
                "{e}: {}",
                tail(&String::from_utf8_lossy(stdout), 512)
            ))
        })
    }

    fn bad_output(&self, message: String) -> NetworkError {
        NetworkError::BadOutput {
            network: self.network.to_string(),
            plugin: self.plugin.to_string(),
            command: self.command.as_str(),
            message,
        }
    }
}

/// The last `max` bytes of `s`, on a char boundary.
fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

/// An interface from a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: String,
    /// The network namespace it is in; empty for host-side interfaces.
    #[serde(default)]
    pub sandbox: String,
}

/// An address from a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    /// Index into the result's interfaces.
    pub interface: Option<usize>,
}

/// What a result says, in the shape shared by spec 0.3.x, 0.4.0 and 1.x.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CniResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
}

impl CniResult {
    /// The pod's addresses: those on an interface inside the sandbox (all of them when the
    /// result does not say which interface an address is on), in the result's order.
    pub fn pod_ips(&self) -> Vec<IpAddr> {
        self.ips
            .iter()
            .filter(
                |ip| match ip.interface.and_then(|i| self.interfaces.get(i)) {
                    Some(iface) => !iface.sandbox.is_empty(),
                    None => true,
                },
            )
            .map(|ip| ip.address)
            .collect()
    }
}

/// Parses a plugin's result (0.3.x/0.4.0: `ips[].version` is ignored; 1.x).
pub fn parse_result(v: &Value) -> Result<CniResult, String> {
    #[derive(Deserialize)]
    struct RawIp {
        address: String,
        #[serde(default)]
        gateway: Option<String>,
        #[serde(default)]
        interface: Option<usize>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Raw {
        #[serde(default)]
        cni_version: String,
        #[serde(default)]
        interfaces: Vec<Interface>,
        #[serde(default)]
        ips: Vec<RawIp>,
    }
    let raw: Raw = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    let mut ips = Vec::new();
    for ip in raw.ips {
        let (addr, prefix) = ip
            .address
            .split_once('/')
            .ok_or_else(|| format!("address {:?} is not in CIDR form", ip.address))?;
        let address: IpAddr = addr
            .parse()
            .map_err(|_| format!("address {:?} is not an IP address", ip.address))?;
        let prefix_len: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= if address.is_ipv4() { 32 } else { 128 })
            .ok_or_else(|| format!("address {:?} has a bad prefix length", ip.address))?;
        let gateway = match ip.gateway.as_deref() {
            None | Some("") => None,
            Some(g) => Some(
                g.parse()
                    .map_err(|_| format!("gateway {g:?} is not an IP address"))?,
            ),
        };
        ips.push(IpConfig {
            address,
            prefix_len,
            gateway,
            interface: ip.interface,
        });
    }
    Ok(CniResult {
        cni_version: raw.cni_version,
        interfaces: raw.interfaces,
        ips,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn result_0_4_0_is_parsed() {
        let v = json!({
            "cniVersion": "0.4.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:02"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/ferrio/pods/x/ns/net"}
            ],
            "ips": [{"version": "4", "interface": 2, "address": "10.22.0.5/24", "gateway": "10.22.0.1"}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        });
        let r = parse_result(&v).unwrap();
        assert_eq!(r.cni_version, "0.4.0");
        assert_eq!(r.interfaces.len(), 3);
        assert_eq!(r.ips[0].prefix_len, 24);
        assert_eq!(r.ips[0].gateway, Some("10.22.0.1".parse().unwrap()));
        assert_eq!(r.pod_ips(), vec!["10.22.0.5".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn result_1_0_0_dual_stack_keeps_only_sandbox_addresses() {
        let v = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "br", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "eth0", "sandbox": "/ns"}
            ],
            "ips": [
                {"interface": 1, "address": "10.1.0.7/16", "gateway": "10.1.0.1"},
                {"interface": 1, "address": "fd00::7/64"},
                {"interface": 0, "address": "10.1.0.1/16"}
            ]
        });
        let r = parse_result(&v).unwrap();
        let ips: Vec<String> = r.pod_ips().iter().map(|i| i.to_string()).collect();
        assert_eq!(ips, ["10.1.0.7", "fd00::7"]);
        assert_eq!(r.ips[1].prefix_len, 64);
        // No interface index: every address is the pod's.
        let r =
            parse_result(&json!({"cniVersion":"1.0.0","ips":[{"address":"10.9.0.2/24"}]})).unwrap();
        assert_eq!(r.pod_ips().len(), 1);
    }

    #[test]
    fn bad_results_are_explained() {
        for (v, want) in [
            (json!({"ips":[{"address":"10.0.0.1"}]}), "CIDR"),
            (json!({"ips":[{"address":"x/24"}]}), "not an IP"),
            (json!({"ips":[{"address":"10.0.0.1/33"}]}), "prefix"),
            (
                json!({"ips":[{"address":"10.0.0.1/8","gateway":"g"}]}),
                "gateway",
            ),
            (json!({"ips":"no"}), "invalid type"),
        ] {
            let e = parse_result(&v).unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn cni_args_are_formatted_for_kubernetes() {
        assert_eq!(
            cni_args("default", "web-0", "abc123", "1f2e-3d"),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=1f2e-3d"
        );
    }

    #[test]
    fn error_json_is_recognised() {
        let e = parse_error(
            br#"{"cniVersion":"1.0.0","code":7,"msg":"invalid subnet","details":"10.0.0.0/33"}"#,
        )
        .unwrap();
        assert_eq!(
            e,
            PluginError {
                code: 7,
                msg: "invalid subnet".into(),
                details: "10.0.0.0/33".into()
            }
        );
        assert_eq!(
            parse_error(br#"{"code":11,"msg":"busy"}"#).unwrap().details,
            ""
        );
        assert!(parse_error(b"not json").is_none());
        assert!(parse_error(br#"{"cniVersion":"1.0.0","ips":[]}"#).is_none());
    }

    #[test]
    fn missing_plugin_names_the_dirs() {
        let d = tempfile::tempdir().unwrap();
        let err = find_plugin("nope", &[d.path().into(), "/opt/cni/bin".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"nope\""), "{err}");
        assert!(
            err.contains(&format!("{}, /opt/cni/bin", d.path().display())),
            "{err}"
        );
    }
}
