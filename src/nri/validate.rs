//! NRI's default validator (containerd/nri's `00-default-validator`), built in: with
//! `[nri.default_validator] enable`, a CreateContainer whose merged adjustment adds OCI hooks,
//! changes the seccomp policy, namespaces or sysctls (each behind its `reject_*` switch), or
//! that lacks a required plugin, is refused. Required plugins
//! come from `required_plugins` and from the pod annotation
//! `required-plugins.noderesource.dev` (looked up as `<key>/container.<name>`, `<key>/pod`,
//! `<key>`; a YAML or JSON list of names); a name matches a plugin's name or `NN-name`. A pod
//! annotation named by `tolerate_missing_plugins_annotation` set to "true" skips that check.
//! The seccomp switches go by the container's own profile: RuntimeDefault, Localhost
//! ("custom"), or Unconfined/unset.

use super::{adjust::Merged, api, PluginInfo};
use crate::config::DefaultValidatorConfig;

/// The pod annotation listing the plugins a container needs.
pub const REQUIRED_PLUGINS: &str = "required-plugins.noderesource.dev";

/// A pod annotation as NRI looks it up for one container: the container's own scope, then the
/// pod's, then the bare key.
fn effective<'a>(pod: &'a api::PodSandbox, key: &str, container: &str) -> Option<&'a String> {
    [
        format!("{key}/container.{container}"),
        format!("{key}/pod"),
        key.to_string(),
    ]
    .iter()
    .find_map(|k| pod.annotations.get(k))
}

/// A list of names as YAML (`[a, b]`, `- a` lines) or JSON.
fn names(v: &str) -> Vec<String> {
    v.split(['\n', ','])
        .map(|s| {
            s.trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .trim_start_matches("- ")
                .trim()
                .trim_matches(|c| c == '"' || c == '\'')
                .to_string()
        })
        .filter(|s| !s.is_empty() && s != "-")
        .collect()
}

pub fn default_validator(
    cfg: &DefaultValidatorConfig,
    pod: &api::PodSandbox,
    ctr: &api::Container,
    merged: &Merged,
    plugins: &[PluginInfo],
) -> Result<(), String> {
    if cfg.reject_oci_hook_adjustment && !merged.hook_owners().is_empty() {
        return Err(format!(
            "validation error: OCI hook injection by plugin(s) {} is not allowed",
            merged.hook_owners().join(", ")
        ));
    }
    let by = |field: &str| merged.field_owners(field).join(", ");
    if cfg.reject_namespace_adjustment && !by("Namespace").is_empty() {
        return Err(format!(
            "validation error: namespace adjustment by plugin(s) {} is not allowed",
            by("Namespace")
        ));
    }
    if cfg.reject_sysctl_adjustment && !by("Sysctl").is_empty() {
        return Err(format!(
            "validation error: sysctl adjustment by plugin(s) {} is not allowed",
            by("Sysctl")
        ));
    }
    if !by("SeccompPolicy").is_empty() {
        use api::security_profile::ProfileType;
        let profile = ctr
            .linux
            .as_ref()
            .and_then(|l| l.seccomp_profile.as_ref())
            .map(|p| p.profile_type);
        let (refused, kind) = match profile.and_then(|t| ProfileType::try_from(t).ok()) {
            Some(ProfileType::RuntimeDefault) => (
                cfg.reject_runtime_default_seccomp_adjustment,
                "runtime default",
            ),
            Some(ProfileType::Localhost) => (cfg.reject_custom_seccomp_adjustment, "custom"),
            _ => (cfg.reject_unconfined_seccomp_adjustment, "unconfined"),
        };
        if refused {
            return Err(format!(
                "validation error: {kind} seccomp policy adjustment by plugin(s) {} is not allowed",
                by("SeccompPolicy")
            ));
        }
    }
    let tolerated = !cfg.tolerate_missing_plugins_annotation.is_empty()
        && effective(pod, &cfg.tolerate_missing_plugins_annotation, &ctr.name)
            .is_some_and(|v| v.trim() == "true");
    if tolerated {
        return Ok(());
    }
    let mut required = cfg.required_plugins.clone();
    if let Some(v) = effective(pod, REQUIRED_PLUGINS, &ctr.name) {
        required.extend(names(v));
    }
    for r in required {
        let present = plugins
            .iter()
            .any(|p| p.name == r || format!("{}-{}", p.index, p.name) == r);
        if !present {
            return Err(format!(
                "validation error: required plugin {r:?} is not present"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(idx: &str, name: &str) -> PluginInfo {
        PluginInfo {
            name: name.into(),
            index: idx.into(),
            events: 0,
            launched: false,
        }
    }

    #[test]
    fn required_plugins_come_from_the_config_and_scoped_annotations() {
        let cfg = DefaultValidatorConfig {
            enable: true,
            required_plugins: vec!["base".into()],
            tolerate_missing_plugins_annotation: "tolerate.test".into(),
            ..Default::default()
        };
        let ctr = api::Container {
            name: "app".into(),
            ..Default::default()
        };
        let mut pod = api::PodSandbox::default();
        let m = Merged::default();
        let e = default_validator(&cfg, &pod, &ctr, &m, &[]).unwrap_err();
        assert!(e.contains(r#"required plugin "base""#), "{e}");
        default_validator(&cfg, &pod, &ctr, &m, &[info("10", "base")]).unwrap();
        pod.annotations.insert(
            format!("{REQUIRED_PLUGINS}/container.app"),
            "- 20-extra\n- more".into(),
        );
        pod.annotations
            .insert(REQUIRED_PLUGINS.into(), "[ignored]".into());
        let e = default_validator(
            &cfg,
            &pod,
            &ctr,
            &m,
            &[info("10", "base"), info("20", "extra")],
        )
        .unwrap_err();
        assert!(e.contains(r#""more""#), "{e}");
        default_validator(
            &cfg,
            &pod,
            &ctr,
            &m,
            &[info("10", "base"), info("20", "extra"), info("30", "more")],
        )
        .unwrap();
        pod.annotations
            .insert("tolerate.test/pod".into(), "true".into());
        default_validator(&cfg, &pod, &ctr, &m, &[]).unwrap();
    }

    #[test]
    fn names_reads_yaml_and_json_lists() {
        assert_eq!(names("[a, \"b\"]"), vec!["a", "b"]);
        assert_eq!(names("- a\n- 10-b\n"), vec!["a", "10-b"]);
    }

    #[test]
    fn sysctl_namespace_and_seccomp_switches_refuse_those_adjustments() {
        let mut m = Merged::default();
        let mut shown = api::Container::default();
        m.add(
            "10-a",
            api::ContainerAdjustment {
                linux: Some(api::LinuxContainerAdjustment {
                    sysctl: [("net.core.somaxconn".to_string(), "10".to_string())].into(),
                    seccomp_policy: Some(api::LinuxSeccomp::default()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &mut shown,
        )
        .unwrap();
        let pod = api::PodSandbox::default();
        let rd = |t: api::security_profile::ProfileType| api::Container {
            linux: Some(api::LinuxContainer {
                seccomp_profile: Some(api::SecurityProfile {
                    profile_type: t as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        use api::security_profile::ProfileType;
        let on = DefaultValidatorConfig {
            enable: true,
            ..Default::default()
        };
        default_validator(&on, &pod, &rd(ProfileType::RuntimeDefault), &m, &[]).unwrap();
        let cfg = DefaultValidatorConfig {
            reject_sysctl_adjustment: true,
            ..on.clone()
        };
        let e =
            default_validator(&cfg, &pod, &rd(ProfileType::RuntimeDefault), &m, &[]).unwrap_err();
        assert!(e.contains("sysctl adjustment by plugin(s) 10-a"), "{e}");
        let cfg = DefaultValidatorConfig {
            reject_runtime_default_seccomp_adjustment: true,
            ..on.clone()
        };
        let e =
            default_validator(&cfg, &pod, &rd(ProfileType::RuntimeDefault), &m, &[]).unwrap_err();
        assert!(
            e.contains("runtime default seccomp policy adjustment"),
            "{e}"
        );
        // The same switch does not cover an unconfined container.
        default_validator(&cfg, &pod, &rd(ProfileType::Unconfined), &m, &[]).unwrap();
        let cfg = DefaultValidatorConfig {
            reject_namespace_adjustment: true,
            ..on
        };
        default_validator(&cfg, &pod, &rd(ProfileType::Unconfined), &m, &[]).unwrap();
    }
}
