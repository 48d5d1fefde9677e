//! The commented default configuration that `ferrio config` prints. Values come from
//! `Config::default()`, so the text can never disagree with the code; a unit test parses it back.

use super::{CgroupDriver, Config};

fn s(v: &std::path::Path) -> String {
    toml_str(&v.to_string_lossy())
}

fn toml_str(v: &str) -> String {
    toml::Value::String(v.to_string()).to_string()
}

pub fn default_toml() -> String {
    let c = Config::default();
    let dv_required = format!(
        "[{}]",
        c.nri
            .default_validator
            .required_plugins
            .iter()
            .map(|r| toml_str(r))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let driver = match c.runtime.cgroup_driver {
        CgroupDriver::Cgroupfs => "cgroupfs",
        CgroupDriver::Systemd => "systemd",
    };
    let insecure: Vec<String> = c
        .image
        .insecure_registries
        .iter()
        .map(|r| toml_str(r))
        .collect();
    format!(
        r#"# ferrio configuration: /etc/ferrio/ferrio.toml, then /etc/ferrio/ferrio.d/*.toml in name order.
# Every key below shows its default. Unknown keys are an error.

# Persistent state: the image store and pod/container records.
root = {root}
# Runtime state: the socket, bundles and pinned namespaces (usually a tmpfs).
run_root = {run_root}
# error, warn, info, debug, trace, or a tracing filter such as "ferrio=debug,info".
log_level = {log_level}

[api]
# The CRI gRPC unix socket (mode 0660). Empty: <run_root>/ferrio.sock.
listen = {listen}
# Largest gRPC message received and sent, in bytes.
grpc_max_recv_msg_size = {recv}
grpc_max_send_msg_size = {send}
# Seconds in-flight RPCs get to finish on SIGTERM/SIGINT before they are cancelled.
shutdown_timeout = {shutdown}

[runtime]
# The cgroup driver reported to kubelet: "cgroupfs" or "systemd".
cgroup_driver = "{driver}"
# The runtime handler for pods whose RunPodSandbox names none.
default_runtime = {default_runtime}
# The parent cgroup of pods whose request gives no cgroup_parent.
default_cgroup_parent = {cgroup_parent}
# Size of each pod's /dev/shm tmpfs, in bytes.
shm_size = {shm_size}
# Missing host paths of container mounts are created as directories, except at or below these.
absent_mount_sources_to_reject = [{reject}]
# Containers whose request names no seccomp profile get RuntimeDefault (true) or none (false,
# as CRI-O and containerd; kubelet always names one: RuntimeDefault or Unconfined).
seccomp_use_default_when_empty = {seccomp_default}
# A seccomp profile file for privileged containers; empty: they run without seccomp whatever
# profile they name (CRI-O's privileged_seccomp_profile).
privileged_seccomp_profile = {privileged_seccomp}
# Container Device Interface spec directories (*.json, *.yaml, *.yml), for CreateContainer's
# cdi_devices. A device defined in a later directory overrides the same one in an earlier.
cdi_spec_dirs = [{cdi_dirs}]
# Block I/O classes (goresctrl's blockio YAML, as CRI-O's and containerd's blockio_config_file),
# chosen by an NRI plugin or by the annotations io.kubernetes.cri.blockio-class (container) and
# blockio.resources.beta.kubernetes.io/pod or .../container.<name> (pod). Read at each create
# that names a class. Empty: no classes (annotations ignored, a plugin's class refused).
blockio_config_file = {blockio}
# The CRIU binary for CheckpointContainer (a bare name is looked up in PATH).
criu_path = {criu}

# Runtime handlers, selected by RunPodSandbox's runtime_handler.
# runtime_type "builtin": youki's libcontainer inside ferrio (no external runtime).
# runtime_type "oci": an OCI runtime CLI such as runc or crun, at runtime_path.
# runtime_root: the runtime's state directory; empty: <run_root>/runtimes/<name>.
{runtimes}
[streaming]
# The HTTP server behind Exec, Attach and PortForward URLs (WebSocket v4/v5.channel.k8s.io).
address = {s_addr}
# 0: a free port picked at start.
port = {s_port}
# Seconds a streaming URL stays valid; each URL is single-use.
token_ttl = {s_ttl}
# Seconds a session may pass without traffic before it is closed; 0: never.
idle_timeout = {s_idle}
# A PEM certificate chain and its private key: the server speaks HTTPS. Both empty: plain HTTP.
tls_cert = {s_cert}
tls_key = {s_key}

[image]
# A containers-registries.conf(5) v2 file ([[registry]] prefix/location/insecure/blocked and
# [[registry.mirror]] entries). A missing file means no rules.
registries_conf = {regconf}
# An auth file in the {{"auths": {{...}}}} format. Empty: none.
global_auth_file = {authfile}
# Registries reached over plain HTTP, besides those marked insecure in registries.conf:
# "host:port", or "host" for every port of that host.
insecure_registries = [{insecure}]
# Layers downloaded at once, across all pulls.
max_concurrent_downloads = {downloads}
# Seconds a pull may receive nothing before it is aborted. 0 disables.
pull_progress_timeout = {stall}
# OCI-archive and docker-save tarballs in this directory are imported once, at start.
# Empty: <root>/import.
import_dir = {import_dir}
# Images kubelet's image GC keeps (pinned): exact names ("registry.k8s.io/pause:3.10"),
# "prefix*" or "*keyword*", case-insensitive. Images from import_dir are always pinned.
pinned_images = []
# How a short name (no registry: "busybox") resolves, through registries.conf's [aliases] and
# unqualified-search-registries: "enforcing" (an alias, or the one search registry; more is an
# error), "permissive" or "disabled" (every search registry in order). Empty: registries.conf's
# short-name-mode, else enforcing. Without an alias or search registry a short name is refused.
short_name_mode = ""
# Per-registry TLS (containers-certs.d(5)): <certs_dir>/<host[:port]>/*.crt are CA certificates
# for that registry, <name>.cert and <name>.key a client certificate. Read for every pull.
certs_dir = {certs_dir}
# Image trust (containers-policy.json(5)): checked at PullImage and again at CreateContainer
# for the pod's namespace. Supported: insecureAcceptAnything, reject, sigstoreSigned with public
# keys, signedBy with GPG keyrings (checked by the host's gpgv); Fulcio/Rekor are refused. A
# missing file accepts every image.
signature_policy = {policy}
# <dir>/<namespace>.json replaces signature_policy for pods of that namespace.
signature_policy_dir = {policy_dir}
# containers-registries.d(5): use-sigstore-attachments says a repository's sigstore
# signatures are in the registry (cosign's sha256-<digest>.sig tags); lookaside (or sigstore)
# where its GPG signatures are (file://, http://, https://).
registries_d = {registries_d}

[network]
# CNI network configs: .conflist files, and .conf/.json single-plugin files.
network_dir = {network_dir}
# CNI plugin binaries are looked for in these directories, in order.
plugin_dirs = [{plugin_dirs}]
# The network (its "name") pods are attached to. Empty: the first config file by file name.
default_network = {default_network}
# Cached CNI results, so pods are detached after a restart. Empty: <root>/cni.
cache_dir = {cache_dir}
# Seconds one CNI plugin may run before it is killed.
plugin_timeout = {plugin_timeout}

[metrics]
# Prometheus metrics (ferrio_*) over HTTP at GET /metrics. Off by default.
enable = {metrics_enable}
# The TCP address ("host:port") the metrics endpoint listens on.
address = {metrics_address}

[nri]
# NRI (Node Resource Interface) plugins: they see pod and container events and may adjust
# containers as they are created. On by default, as in CRI-O and containerd 2.
enable = {nri_enable}
# The unix socket (mode 0600) external plugins connect to.
socket_path = {nri_socket}
# Pre-installed plugins, executables named NN-name, started by ferrio on a socket pair.
plugin_path = {nri_plugin_path}
# Their configs: NN-name.conf, else name.conf.
plugin_config_path = {nri_plugin_config_path}
# How long a plugin may take to register, and to answer one event ("5s", "500ms").
plugin_registration_timeout = {nri_reg_timeout}
plugin_request_timeout = {nri_req_timeout}
# Accept no external plugins on the socket (pre-installed ones still start).
disable_connections = {nri_disable_connections}

[nri.default_validator]
# NRI's default validator, built in: refuses a create whose plugin adjustments are of a kind
# switched on below, or that lacks a required plugin (required_plugins, plus the pod
# annotation required-plugins.noderesource.dev). A pod annotation named by
# tolerate_missing_plugins_annotation set to "true" waives the required plugins.
enable = {dv_enable}
reject_oci_hook_adjustment = {dv_hooks}
# Refuse seccomp policy changes of containers whose profile is RuntimeDefault, Unconfined (or
# unset), or Localhost; refuse namespace changes; refuse sysctl changes.
reject_runtime_default_seccomp_adjustment = {dv_sc_default}
reject_unconfined_seccomp_adjustment = {dv_sc_unconfined}
reject_custom_seccomp_adjustment = {dv_sc_custom}
reject_namespace_adjustment = {dv_ns}
reject_sysctl_adjustment = {dv_sysctl}
required_plugins = {dv_required}
tolerate_missing_plugins_annotation = {dv_tolerate}
"#,
        default_runtime = toml_str(&c.runtime.default_runtime),
        cgroup_parent = toml_str(&c.runtime.default_cgroup_parent),
        shm_size = c.runtime.shm_size,
        seccomp_default = c.runtime.seccomp_use_default_when_empty,
        privileged_seccomp = s(&c.runtime.privileged_seccomp_profile),
        reject = c
            .runtime
            .absent_mount_sources_to_reject
            .iter()
            .map(|p| s(p))
            .collect::<Vec<_>>()
            .join(", "),
        blockio = s(&c.runtime.blockio_config_file),
        criu = s(&c.runtime.criu_path),
        cdi_dirs = c
            .runtime
            .cdi_spec_dirs
            .iter()
            .map(|p| s(p))
            .collect::<Vec<_>>()
            .join(", "),
        runtimes = c
            .runtime
            .runtimes
            .iter()
            .map(|(name, h)| format!(
                "[runtime.runtimes.{name}]\nruntime_type = {}\nruntime_path = {}\nruntime_root = {}\n",
                toml_str(&h.runtime_type),
                s(&h.runtime_path),
                s(&h.runtime_root)
            ))
            .collect::<Vec<_>>()
            .join("\n"),
        s_addr = toml_str(&c.streaming.address),
        s_port = c.streaming.port,
        s_ttl = c.streaming.token_ttl,
        s_idle = c.streaming.idle_timeout,
        s_cert = s(&c.streaming.tls_cert),
        s_key = s(&c.streaming.tls_key),
        root = s(&c.root),
        run_root = s(&c.run_root),
        log_level = toml_str(&c.log_level),
        listen = s(&c.api.listen),
        recv = c.api.grpc_max_recv_msg_size,
        send = c.api.grpc_max_send_msg_size,
        shutdown = c.api.shutdown_timeout,
        regconf = s(&c.image.registries_conf),
        authfile = s(&c.image.global_auth_file),
        insecure = insecure.join(", "),
        downloads = c.image.max_concurrent_downloads,
        stall = c.image.pull_progress_timeout,
        import_dir = s(&c.image.import_dir),
        certs_dir = s(&c.image.certs_dir),
        policy = s(&c.image.signature_policy),
        policy_dir = s(&c.image.signature_policy_dir),
        registries_d = s(&c.image.registries_d),
        network_dir = s(&c.network.network_dir),
        plugin_dirs = c
            .network
            .plugin_dirs
            .iter()
            .map(|p| s(p))
            .collect::<Vec<_>>()
            .join(", "),
        default_network = toml_str(&c.network.default_network),
        cache_dir = s(&c.network.cache_dir),
        plugin_timeout = c.network.plugin_timeout,
        metrics_enable = c.metrics.enable,
        metrics_address = toml_str(&c.metrics.address.to_string()),
        nri_enable = c.nri.enable,
        nri_socket = s(&c.nri.socket_path),
        nri_plugin_path = s(&c.nri.plugin_path),
        nri_plugin_config_path = s(&c.nri.plugin_config_path),
        nri_reg_timeout = toml_str(&c.nri.plugin_registration_timeout),
        nri_req_timeout = toml_str(&c.nri.plugin_request_timeout),
        nri_disable_connections = c.nri.disable_connections,
        dv_enable = c.nri.default_validator.enable,
        dv_hooks = c.nri.default_validator.reject_oci_hook_adjustment,
        dv_sc_default = c
            .nri
            .default_validator
            .reject_runtime_default_seccomp_adjustment,
        dv_sc_unconfined = c.nri.default_validator.reject_unconfined_seccomp_adjustment,
        dv_sc_custom = c.nri.default_validator.reject_custom_seccomp_adjustment,
        dv_ns = c.nri.default_validator.reject_namespace_adjustment,
        dv_sysctl = c.nri.default_validator.reject_sysctl_adjustment,
        dv_required = dv_required,
        dv_tolerate = toml_str(&c.nri.default_validator.tolerate_missing_plugins_annotation),
    )
}
