//! Spec files written into temporary directories, loaded and resolved.

use super::*;
use std::path::Path;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn dirs(n: usize) -> Vec<tempfile::TempDir> {
    (0..n).map(|_| tempfile::tempdir().unwrap()).collect()
}

fn paths(dirs: &[tempfile::TempDir]) -> Vec<PathBuf> {
    dirs.iter().map(|d| d.path().to_path_buf()).collect()
}

/// A vendor spec with spec-level edits and two devices.
const VENDOR_JSON: &str = r#"{
  "cdiVersion": "0.7.0",
  "kind": "vendor.com/gpu",
  "containerEdits": {
    "env": ["VENDOR_DRIVER=1.2"],
    "deviceNodes": [{"path": "/dev/vendorctl", "type": "c", "major": 240, "minor": 0}],
    "mounts": [{"hostPath": "/usr/lib/vendor", "containerPath": "/usr/lib/vendor", "options": ["ro", "bind"]}]
  },
  "devices": [
    {
      "name": "gpu0",
      "containerEdits": {
        "env": ["VENDOR_VISIBLE=0"],
        "deviceNodes": [{
          "path": "/dev/vendor0", "hostPath": "/dev/host-vendor0", "type": "c", "major": 241,
          "minor": 0, "fileMode": 432, "permissions": "rw", "uid": 10, "gid": 20
        }]
      }
    },
    {
      "name": "gpu1",
      "annotations": {"vendor.com/slot": "1"},
      "containerEdits": {
        "env": ["VENDOR_VISIBLE=1"],
        "deviceNodes": [{"path": "/dev/vendor1", "permissions": "none"}],
        "mounts": [{"hostPath": "tmpfs", "containerPath": "/run/vendor", "type": "tmpfs", "options": ["size=1m"]}],
        "hooks": [{"hookName": "createContainer", "path": "/usr/bin/vendor-hook", "args": ["vendor-hook", "ldconfig"], "env": ["A=b"], "timeout": 5}],
        "additionalGids": [0, 44]
      }
    }
  ]
}"#;

fn node(path: &str) -> DeviceNode {
    DeviceNode {
        path: PathBuf::from(path),
        host_path: PathBuf::from(path),
        device_type: None,
        major: None,
        minor: None,
        file_mode: None,
        permissions: "rwm".into(),
        uid: None,
        gid: None,
    }
}

fn spec_level() -> ContainerEdits {
    ContainerEdits {
        env: vec!["VENDOR_DRIVER=1.2".into()],
        device_nodes: vec![DeviceNode {
            device_type: Some(DeviceType::Char),
            major: Some(240),
            minor: Some(0),
            ..node("/dev/vendorctl")
        }],
        mounts: vec![Mount {
            host_path: "/usr/lib/vendor".into(),
            container_path: "/usr/lib/vendor".into(),
            mount_type: None,
            options: vec!["ro".into(), "bind".into()],
        }],
        ..ContainerEdits::default()
    }
}

fn gpu0() -> ContainerEdits {
    ContainerEdits {
        env: vec!["VENDOR_VISIBLE=0".into()],
        device_nodes: vec![DeviceNode {
            host_path: "/dev/host-vendor0".into(),
            device_type: Some(DeviceType::Char),
            major: Some(241),
            minor: Some(0),
            file_mode: Some(0o660),
            permissions: "rw".into(),
            uid: Some(10),
            gid: Some(20),
            ..node("/dev/vendor0")
        }],
        ..ContainerEdits::default()
    }
}

fn gpu1() -> ContainerEdits {
    ContainerEdits {
        env: vec!["VENDOR_VISIBLE=1".into()],
        device_nodes: vec![DeviceNode {
            permissions: String::new(),
            ..node("/dev/vendor1")
        }],
        mounts: vec![Mount {
            host_path: "tmpfs".into(),
            container_path: "/run/vendor".into(),
            mount_type: Some("tmpfs".into()),
            options: vec!["size=1m".into()],
        }],
        hooks: vec![Hook {
            hook_name: "createContainer".into(),
            path: "/usr/bin/vendor-hook".into(),
            args: vec!["vendor-hook".into(), "ldconfig".into()],
            env: vec!["A=b".into()],
            timeout: Some(5),
        }],
        additional_gids: vec![44],
        ..ContainerEdits::default()
    }
}

fn union(parts: &[ContainerEdits]) -> ContainerEdits {
    let mut all = ContainerEdits::default();
    for p in parts {
        all.append(p);
    }
    all
}

#[test]
fn two_devices_and_spec_level_edits_resolve_to_the_union() {
    let d = dirs(1);
    write(d[0].path(), "vendor.json", VENDOR_JSON);
    let reg = Registry::load(&paths(&d)).unwrap();
    assert!(reg.spec_errors().is_empty(), "{:?}", reg.spec_errors());
    assert_eq!(
        reg.device_names(),
        ["vendor.com/gpu=gpu0", "vendor.com/gpu=gpu1"]
    );

    // Spec-level edits once, then each device's, in request order; a repeated name counts once.
    let both = reg
        .resolve(&[
            "vendor.com/gpu=gpu1",
            "vendor.com/gpu=gpu0",
            "vendor.com/gpu=gpu1",
        ])
        .unwrap();
    assert_eq!(both, union(&[spec_level(), gpu1(), gpu0()]));

    let one = reg.resolve(&["vendor.com/gpu=gpu0"]).unwrap();
    assert_eq!(one, union(&[spec_level(), gpu0()]));

    assert!(reg.resolve::<&str>(&[]).unwrap().is_empty());
}

#[test]
fn spec_level_edits_come_once_per_file_across_kinds() {
    let d = dirs(1);
    write(d[0].path(), "vendor.json", VENDOR_JSON);
    write(
        d[0].path(),
        "other.yaml",
        "cdiVersion: 0.3.0\nkind: other.org/nic\ncontainerEdits:\n  env: [OTHER=1]\ndevices:\n- name: eth\n  containerEdits:\n    env: [NIC=eth]\n",
    );
    let reg = Registry::load(&paths(&d)).unwrap();
    let got = reg
        .resolve(&["other.org/nic=eth", "vendor.com/gpu=gpu0"])
        .unwrap();
    assert_eq!(
        got.env,
        [
            "OTHER=1",
            "NIC=eth",
            "VENDOR_DRIVER=1.2",
            "VENDOR_VISIBLE=0"
        ]
    );
}

#[test]
fn a_later_dir_overrides_an_earlier_one_device_by_device() {
    let d = dirs(2);
    write(d[0].path(), "vendor.json", VENDOR_JSON);
    let over = write(
        d[1].path(),
        "override.yml",
        r#"
cdiVersion: "1.1.0"
kind: vendor.com/gpu
containerEdits:
  env: ["FROM_DYNAMIC=1"]
devices:
  - name: gpu0
    containerEdits:
      env: ["VENDOR_VISIBLE=dynamic0"]
"#,
    );
    let reg = Registry::load(&paths(&d)).unwrap();
    assert_eq!(
        reg.spec_file_of("vendor.com/gpu=gpu0"),
        Some(over.as_path())
    );

    let got = reg.resolve(&["vendor.com/gpu=gpu0"]).unwrap();
    assert_eq!(got.env, ["FROM_DYNAMIC=1", "VENDOR_VISIBLE=dynamic0"]);
    assert!(got.device_nodes.is_empty());

    // gpu1 is only in the first directory and still comes from there.
    let got = reg.resolve(&["vendor.com/gpu=gpu1"]).unwrap();
    assert_eq!(got, union(&[spec_level(), gpu1()]));

    // The other order: the first directory wins.
    let reversed: Vec<PathBuf> = paths(&d).into_iter().rev().collect();
    let reg = Registry::load(&reversed).unwrap();
    let got = reg.resolve(&["vendor.com/gpu=gpu0"]).unwrap();
    assert_eq!(got, union(&[spec_level(), gpu0()]));
}

#[test]
fn unknown_device_names_the_device_and_the_dirs_searched() {
    let d = dirs(2);
    write(d[0].path(), "vendor.json", VENDOR_JSON);
    let missing = d[1].path().join("absent");
    let search = vec![d[0].path().to_path_buf(), missing.clone()];
    let reg = Registry::load(&search).unwrap();
    let err = reg
        .resolve(&["vendor.com/gpu=gpu0", "vendor.com/gpu=gpu7"])
        .unwrap_err();
    assert!(matches!(err, CdiError::UnknownDevice { .. }), "{err:?}");
    assert_eq!(err.kind(), Kind::InvalidArgument);
    let msg = err.to_string();
    assert!(msg.contains("\"vendor.com/gpu=gpu7\""), "{msg}");
    assert!(msg.contains(&d[0].path().display().to_string()), "{msg}");
    assert!(msg.contains(&missing.display().to_string()), "{msg}");

    let err = reg.resolve(&["nobody.com/gpu=0"]).unwrap_err();
    assert!(err.to_string().contains("nobody.com/gpu=0"), "{err}");
}

#[test]
fn malformed_names_are_invalid_arguments_that_say_why() {
    let d = dirs(1);
    write(d[0].path(), "vendor.json", VENDOR_JSON);
    let reg = Registry::load(&paths(&d)).unwrap();
    for (bad, says) in [
        ("gpu0", "no '='"),
        ("vendor.com=gpu0", "no '/'"),
        ("vendor.com/gpu=", "device name is empty"),
        ("vendor.com/gpu=gpu 0", "invalid character ' '"),
        ("/dev/vendor0", "no '='"),
    ] {
        let err = reg.resolve(&[bad]).unwrap_err();
        assert!(
            matches!(err, CdiError::InvalidName { .. }),
            "{bad}: {err:?}"
        );
        assert_eq!(err.kind(), Kind::InvalidArgument);
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("{bad:?}")) && msg.contains(says),
            "{bad}: {msg}"
        );
    }
}

#[test]
fn the_same_device_in_two_files_of_one_dir_is_a_conflict_naming_both() {
    let d = dirs(2);
    let a = write(d[0].path(), "a.json", VENDOR_JSON);
    let b = write(
        d[0].path(),
        "b.yaml",
        "cdiVersion: 0.3.0\nkind: vendor.com/gpu\ndevices:\n- name: gpu0\n  containerEdits:\n    env: [B=1]\n",
    );
    let reg = Registry::load(&paths(&d[..1])).unwrap();
    let err = reg.resolve(&["vendor.com/gpu=gpu0"]).unwrap_err();
    assert!(matches!(err, CdiError::Conflict { .. }), "{err:?}");
    assert_eq!(err.kind(), Kind::InvalidArgument);
    let msg = err.to_string();
    assert!(msg.contains(&a.display().to_string()), "{msg}");
    assert!(msg.contains(&b.display().to_string()), "{msg}");
    assert_eq!(reg.device_names(), ["vendor.com/gpu=gpu1"]);
    // The other device of a.json is unaffected.
    assert!(reg.resolve(&["vendor.com/gpu=gpu1"]).is_ok());

    // A later directory that defines the device settles it.
    write(
        d[1].path(),
        "c.json",
        r#"{"cdiVersion":"0.3.0","kind":"vendor.com/gpu","devices":[{"name":"gpu0","containerEdits":{"env":["C=1"]}}]}"#,
    );
    let reg = Registry::load(&paths(&d)).unwrap();
    assert_eq!(reg.resolve(&["vendor.com/gpu=gpu0"]).unwrap().env, ["C=1"]);
}

#[test]
fn bad_json_names_the_file_and_leaves_the_others_usable() {
    let d = dirs(1);
    write(d[0].path(), "vendor.json", VENDOR_JSON);
    let bad = write(
        d[0].path(),
        "broken.json",
        "{\"cdiVersion\": \"0.6.0\",\n \"kind\": \"broken.com/x\",\n \"devices\": [,]}",
    );
    let reg = Registry::load(&paths(&d)).unwrap();
    assert_eq!(reg.spec_errors().len(), 1);
    let err = &reg.spec_errors()[0];
    assert_eq!(err.kind(), Kind::InvalidArgument);
    let msg = err.to_string();
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
    assert!(msg.contains("bad JSON") && msg.contains("line 3"), "{msg}");

    assert!(reg.resolve(&["vendor.com/gpu=gpu0"]).is_ok());
    // A device that may have been in the broken file: the error points at it.
    let msg = reg.resolve(&["broken.com/x=0"]).unwrap_err().to_string();
    assert!(
        msg.contains("skipped as invalid") && msg.contains(&bad.display().to_string()),
        "{msg}"
    );
}

#[test]
fn bad_yaml_names_the_file() {
    let d = dirs(1);
    let bad = write(
        d[0].path(),
        "bad.yaml",
        "cdiVersion: 0.6.0\nkind: [unclosed\n",
    );
    let reg = Registry::load(&paths(&d)).unwrap();
    let msg = reg.spec_errors()[0].to_string();
    assert!(
        msg.contains(&bad.display().to_string()) && msg.contains("bad YAML"),
        "{msg}"
    );
}

/// A spec file with one device whose edits are `edits` (a JSON object body).
fn spec_with(version: &str, kind: &str, edits: &str) -> String {
    format!(
        r#"{{"cdiVersion":"{version}","kind":"{kind}","devices":[{{"name":"d","containerEdits":{{{edits}}}}}]}}"#
    )
}

fn load_one(text: &str) -> Result<Registry, String> {
    let d = dirs(1);
    write(d[0].path(), "spec.json", text);
    let reg = Registry::load(&paths(&d)).unwrap();
    match reg.spec_errors().first() {
        Some(e) => Err(e.to_string()),
        None => Ok(reg),
    }
}

#[test]
fn versions_are_checked_against_the_released_ones_and_the_fields_used() {
    let env = r#""env":["A=1"]"#;
    for v in ["0.3.0", "0.8.0", "1.0.0", "1.1.0", "v0.5.0"] {
        assert!(load_one(&spec_with(v, "vendor.com/x", env)).is_ok(), "{v}");
    }
    for v in ["0.2.0", "0.9.0", "1.2.0", "2.0.0", "1.0", "", "latest"] {
        let err = load_one(&spec_with(v, "vendor.com/x", env)).unwrap_err();
        assert!(err.contains("is not supported"), "{v}: {err}");
    }
    for (v, edits, kind, needs) in [
        (
            "0.3.0",
            r#""mounts":[{"hostPath":"/a","containerPath":"/a","type":"bind"}]"#,
            "vendor.com/x",
            "needs 0.4.0",
        ),
        (
            "0.4.0",
            r#""deviceNodes":[{"path":"/dev/x","hostPath":"/dev/y"}]"#,
            "vendor.com/x",
            "needs 0.5.0",
        ),
        ("0.5.0", env, "vendor.com/x.y", "needs 0.6.0"),
        (
            "0.6.0",
            r#""additionalGids":[5]"#,
            "vendor.com/x",
            "needs 0.7.0",
        ),
        (
            "1.0.0",
            r#""netDevices":[{"hostInterfaceName":"eth1","name":"net1"}]"#,
            "vendor.com/x",
            "needs 1.1.0",
        ),
    ] {
        let err = load_one(&spec_with(v, kind, edits)).unwrap_err();
        assert!(err.contains(needs), "{v} {edits}: {err}");
        let newer = needs.trim_start_matches("needs ");
        assert!(
            load_one(&spec_with(newer, kind, edits)).is_ok(),
            "{newer} {edits}"
        );
    }
}

#[test]
fn invalid_spec_files_are_rejected_with_the_reason() {
    for (text, says) in [
        (
            spec_with("0.6.0", "vendor.com/x", r#""env":["A=1"],"bogus":1"#),
            "unknown field `bogus`",
        ),
        (
            r#"{"cdiVersion":"0.6.0","kind":"vendor.com/x","devices":[],"extra":true}"#.to_string(),
            "unknown field `extra`",
        ),
        (
            r#"{"cdiVersion":"0.6.0","kind":"vendor.com/x","devices":[]}"#.to_string(),
            "no devices",
        ),
        (
            r#"{"cdiVersion":"0.6.0","kind":"vendor.com/x"}"#.to_string(),
            "missing field `devices`",
        ),
        (spec_with("0.6.0", "vendor", r#""env":["A=1"]"#), "no '/'"),
        (
            spec_with("0.6.0", "vendor.com/x", ""),
            "has no containerEdits",
        ),
        (
            spec_with("0.6.0", "vendor.com/x", r#""env":["=1"]"#),
            "not NAME=value",
        ),
        (
            spec_with(
                "0.6.0",
                "vendor.com/x",
                r#""deviceNodes":[{"path":"dev/x"}]"#,
            ),
            "not an absolute path",
        ),
        (
            spec_with(
                "0.6.0",
                "vendor.com/x",
                r#""deviceNodes":[{"path":"/dev/x","type":"z"}]"#,
            ),
            "type \"z\"",
        ),
        (
            spec_with(
                "0.6.0",
                "vendor.com/x",
                r#""deviceNodes":[{"path":"/dev/x","permissions":"rx"}]"#,
            ),
            "permissions \"rx\"",
        ),
        (
            spec_with(
                "0.6.0",
                "vendor.com/x",
                r#""hooks":[{"hookName":"later","path":"/bin/h"}]"#,
            ),
            "hookName \"later\"",
        ),
        (
            spec_with(
                "0.6.0",
                "vendor.com/x",
                r#""hooks":[{"hookName":"poststop","path":"/bin/h","timeout":0}]"#,
            ),
            "greater than zero",
        ),
        (
            spec_with(
                "0.6.0",
                "vendor.com/x",
                r#""mounts":[{"hostPath":"/a","containerPath":""}]"#,
            ),
            "empty containerPath",
        ),
        (
            r#"{"cdiVersion":"0.6.0","kind":"vendor.com/x","devices":[
                {"name":"d","containerEdits":{"env":["A=1"]}},
                {"name":"d","containerEdits":{"env":["A=2"]}}]}"#
                .to_string(),
            "defined twice",
        ),
        (
            r#"{"cdiVersion":"0.6.0","kind":"vendor.com/x","devices":[
                {"name":"-d","containerEdits":{"env":["A=1"]}}]}"#
                .to_string(),
            "must start with a letter or digit",
        ),
    ] {
        let err = load_one(&text).unwrap_err();
        assert!(
            err.contains("spec.json") && err.contains(says),
            "{text}\n → {err}"
        );
    }
}

#[test]
fn only_spec_files_directly_in_a_dir_are_read_and_missing_dirs_are_skipped() {
    let d = dirs(1);
    write(d[0].path(), "vendor.json", VENDOR_JSON);
    write(d[0].path(), "README.txt", "not a spec");
    write(d[0].path(), "vendor.json.bak", "{");
    std::fs::create_dir(d[0].path().join("sub.json")).unwrap();
    std::fs::create_dir(d[0].path().join("nested")).unwrap();
    write(&d[0].path().join("nested"), "n.json", "{");
    let search = vec![
        d[0].path().join("does-not-exist"),
        d[0].path().to_path_buf(),
    ];
    let reg = Registry::load(&search).unwrap();
    assert!(reg.spec_errors().is_empty(), "{:?}", reg.spec_errors());
    assert_eq!(reg.device_names().len(), 2);
    assert_eq!(reg.dirs(), search.as_slice());
}

#[test]
fn a_dir_that_is_a_file_is_an_error() {
    let d = dirs(1);
    let file = write(d[0].path(), "plain", "");
    let err = Registry::load(&[&file]).unwrap_err();
    assert!(matches!(err, CdiError::ReadDir { .. }), "{err:?}");
    assert!(err.to_string().contains(&file.display().to_string()));
}

#[test]
fn a_device_node_gets_type_and_numbers_from_its_host_path() {
    let d = dirs(1);
    write(
        d[0].path(),
        "null.yaml",
        "cdiVersion: 0.5.0\nkind: test.dev/null\ndevices:\n- name: \"0\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/xnull\n      hostPath: /dev/null\n",
    );
    let reg = Registry::load(&paths(&d)).unwrap();
    let mut edits = reg.resolve(&["test.dev/null=0"]).unwrap();
    assert_eq!(edits.device_nodes[0].device_type, None);
    edits.fill_device_info().unwrap();
    let n = &edits.device_nodes[0];
    assert_eq!(n.path, Path::new("/dev/xnull"));
    assert_eq!(n.host_path, Path::new("/dev/null"));
    assert_eq!(n.device_type, Some(DeviceType::Char));
    assert_eq!((n.major, n.minor), (Some(1), Some(3)));
    assert_eq!(n.file_mode, Some(0o666));
    assert_eq!(n.permissions, "rwm");
}

#[test]
fn a_missing_or_non_device_host_path_fails_only_when_numbers_are_missing() {
    let mut edits = ContainerEdits {
        device_nodes: vec![node("/dev/ferrio-test-absent")],
        ..ContainerEdits::default()
    };
    let err = edits.fill_device_info().unwrap_err();
    assert_eq!(err.kind(), Kind::FailedPrecondition);
    assert!(err.to_string().contains("/dev/ferrio-test-absent"), "{err}");

    let file = tempfile::NamedTempFile::new().unwrap();
    let mut edits = ContainerEdits {
        device_nodes: vec![DeviceNode {
            host_path: file.path().to_path_buf(),
            ..node("/dev/x")
        }],
        ..ContainerEdits::default()
    };
    let err = edits.fill_device_info().unwrap_err().to_string();
    assert!(
        err.contains("not a device node") && err.contains(&file.path().display().to_string()),
        "{err}"
    );

    // Fully described by the spec file: the host need not have it; minor defaults to 0.
    let mut edits = ContainerEdits {
        device_nodes: vec![DeviceNode {
            device_type: Some(DeviceType::Block),
            major: Some(8),
            ..node("/dev/ferrio-test-absent")
        }],
        ..ContainerEdits::default()
    };
    edits.fill_device_info().unwrap();
    let n = &edits.device_nodes[0];
    assert_eq!((n.major, n.minor, n.file_mode), (Some(8), Some(0), None));
}

#[test]
fn filling_keeps_what_the_spec_gives_and_checks_the_type() {
    let host = HostDeviceInfo {
        device_type: DeviceType::Char,
        major: 195,
        minor: 7,
        file_mode: 0o660,
    };
    // Type given, numbers not: numbers and mode from the host.
    let mut n = DeviceNode {
        device_type: Some(DeviceType::Char),
        ..node("/dev/nv7")
    };
    n.fill_from(Ok(host)).unwrap();
    assert_eq!(
        (n.major, n.minor, n.file_mode),
        (Some(195), Some(7), Some(0o660))
    );

    // Fully given: only the mode is taken.
    let mut n = DeviceNode {
        device_type: Some(DeviceType::Unbuffered),
        major: Some(1),
        minor: Some(2),
        file_mode: Some(0o600),
        ..node("/dev/u")
    };
    n.fill_from(Ok(host)).unwrap();
    assert_eq!(
        (n.device_type, n.major, n.minor, n.file_mode),
        (Some(DeviceType::Unbuffered), Some(1), Some(2), Some(0o600))
    );

    // `u` matches a char node on the host.
    let mut n = DeviceNode {
        device_type: Some(DeviceType::Unbuffered),
        ..node("/dev/u")
    };
    n.fill_from(Ok(host)).unwrap();
    assert_eq!(n.major, Some(195));

    // A block device in the spec, a char node on the host.
    let mut n = DeviceNode {
        device_type: Some(DeviceType::Block),
        ..node("/dev/sdz")
    };
    let err = n.fill_from(Ok(host)).unwrap_err().to_string();
    assert!(
        err.contains("/dev/sdz") && err.contains("\"b\"") && err.contains("\"c\""),
        "{err}"
    );

    // A FIFO needs no numbers.
    let mut n = DeviceNode {
        device_type: Some(DeviceType::Fifo),
        ..node("/run/fifo")
    };
    n.fill_from(Err("gone".into())).unwrap();
    assert_eq!((n.major, n.minor), (None, None));
}

#[test]
fn null_lists_read_as_empty_and_intel_rdt_is_kept() {
    let reg = load_one(
        r#"{"cdiVersion":"1.1.0","kind":"vendor.com/x","annotations":null,"containerEdits":{"env":null},
            "devices":[{"name":"d","containerEdits":{"mounts":null,
              "intelRdt":{"closID":"gold","l3CacheSchema":"L3:0=f","schemata":["MB:0=50"],"enableMonitoring":true},
              "netDevices":[{"hostInterfaceName":"eth1","name":"net1"}]}}]}"#,
    )
    .unwrap();
    let got = reg.resolve(&["vendor.com/x=d"]).unwrap();
    assert_eq!(
        got.intel_rdt,
        Some(IntelRdt {
            clos_id: Some("gold".into()),
            l3_cache_schema: Some("L3:0=f".into()),
            mem_bw_schema: None,
            schemata: vec!["MB:0=50".into()],
            enable_monitoring: true,
        })
    );
    assert_eq!(
        got.net_devices,
        [NetDevice {
            host_interface_name: "eth1".into(),
            name: "net1".into()
        }]
    );
}

#[test]
fn error_kinds() {
    let io = || std::io::Error::other("x");
    assert_eq!(
        CdiError::ReadDir {
            dir: "/d".into(),
            source: io()
        }
        .kind(),
        Kind::Internal
    );
    assert_eq!(
        CdiError::ReadFile {
            path: "/d/f.json".into(),
            source: io()
        }
        .kind(),
        Kind::InvalidArgument
    );
    assert_eq!(DEFAULT_SPEC_DIRS, ["/etc/cdi", "/var/run/cdi"]);
    let cfg = crate::config::Config::default();
    let want: Vec<PathBuf> = DEFAULT_SPEC_DIRS.iter().map(PathBuf::from).collect();
    assert_eq!(cfg.runtime.cdi_spec_dirs, want);
}

#[test]
fn devices_with_intel_rdt_or_net_devices_are_refused_by_name() {
    let d = dirs(1);
    write(
        d[0].path(),
        "a.json",
        &spec_with("1.1.0", "vendor.com/ok", r#""env":["OK=1"]"#),
    );
    write(
        d[0].path(),
        "b.json",
        &spec_with(
            "1.1.0",
            "vendor.com/net",
            r#""netDevices":[{"hostInterfaceName":"eth1","name":"net1"}]"#,
        ),
    );
    write(
        d[0].path(),
        "c.json",
        &spec_with("0.7.0", "vendor.com/rdt", r#""intelRdt":{"closID":"gold"}"#),
    );
    let reg = Registry::load(&paths(&d)).unwrap();
    assert_eq!(
        reg.resolve_supported(&["vendor.com/ok=d"]).unwrap().env,
        ["OK=1"]
    );
    for (name, what) in [
        ("vendor.com/net=d", "netDevices"),
        ("vendor.com/rdt=d", "intelRdt"),
    ] {
        let e = reg
            .resolve_supported(&["vendor.com/ok=d", name])
            .unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidArgument);
        let msg = e.to_string();
        assert!(
            msg.contains(name) && msg.contains(what) && msg.contains("not supported by ferrio yet"),
            "{msg}"
        );
    }
}

#[test]
fn requested_devices_are_the_field_then_the_annotations_once_each() {
    let field = vec!["vendor.com/gpu=gpu0".to_string()];
    let ann: BTreeMap<String, String> = [
        ("cdi.k8s.io/b", "vendor.com/gpu=gpu1, vendor.com/gpu=gpu0"),
        ("cdi.k8s.io/a", "example.com/x=y"),
        ("other.io/cdi", "not=read"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(
        requested_devices(&field, &ann).unwrap(),
        [
            "vendor.com/gpu=gpu0",
            "example.com/x=y",
            "vendor.com/gpu=gpu1"
        ]
    );
    assert!(requested_devices(&[], &BTreeMap::new()).unwrap().is_empty());
    for (key, value) in [
        ("cdi.k8s.io/a", "gpu0"),
        ("cdi.k8s.io/a", "vendor.com/gpu=gpu0,"),
        ("cdi.k8s.io/", "vendor.com/gpu=gpu0"),
    ] {
        let ann = BTreeMap::from([(key.to_string(), value.to_string())]);
        let e = requested_devices(&[], &ann).unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidArgument);
        assert!(e.to_string().contains(key), "{e}");
    }
}
