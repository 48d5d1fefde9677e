//! The classes a container can be put in by name: block I/O classes (the class file
//! `runtime.blockio_config_file`, chosen by annotation or by an NRI plugin) and RDT classes
//! (resctrl groups that exist on the host, chosen by an NRI plugin).

use crate::engine::{blocking, ContainerRecord, Engine, EngineError, PodRecord, Result};
use serde_json::{json, Value};
use std::path::Path;

/// Where the kernel's resctrl filesystem is mounted.
const RESCTRL: &str = "/sys/fs/resctrl";

impl Engine {
    /// The OCI `blockIO` object of block I/O class `name`, the class file read now (so an edit
    /// applies to the next create). No class file, or no such class: FailedPrecondition.
    pub(crate) async fn blockio_class(&self, name: &str) -> Result<Value> {
        let file = self.cfg().runtime.blockio_config_file.clone();
        if file.as_os_str().is_empty() {
            return Err(EngineError::precondition(format!(
                "block I/O class {name:?}: no runtime.blockio_config_file is configured"
            )));
        }
        let classes = blocking(move || crate::spec::blockio::Classes::load(&file))
            .await?
            .map_err(EngineError::domain)?;
        classes.get(name).cloned().ok_or_else(|| {
            EngineError::precondition(format!(
                "block I/O class {name:?} is not defined (classes: {})",
                classes.names().join(", ")
            ))
        })
    }

    /// The block I/O class the container's or its pod's annotations choose, set in `spec`.
    /// Without a class file the annotations are ignored, as CRI-O does.
    pub(crate) async fn apply_annotated_blockio_class(
        &self,
        pod: &PodRecord,
        rec: &ContainerRecord,
        spec: &mut oci_spec::runtime::Spec,
    ) -> Result<()> {
        if self
            .cfg()
            .runtime
            .blockio_config_file
            .as_os_str()
            .is_empty()
        {
            return Ok(());
        }
        let Some(class) = crate::spec::blockio::class_from_annotations(
            &rec.config.name,
            &rec.config.annotations,
            &pod.config.annotations,
        ) else {
            return Ok(());
        };
        let bio: oci_spec::runtime::LinuxBlockIo =
            serde_json::from_value(self.blockio_class(class).await?)
                .map_err(|e| EngineError::internal(format!("block I/O class {class:?}: {e}")))?;
        let linux = spec.linux_mut().get_or_insert_with(Default::default);
        linux
            .resources_mut()
            .get_or_insert_with(Default::default)
            .set_block_io(Some(bio));
        Ok(())
    }

    /// The OCI `intelRdt` object for RDT class `name`: the resctrl group of that name, which
    /// must exist (ferrio joins groups the node's operator or a resource manager made; it does
    /// not configure cache allocation itself).
    pub(crate) async fn rdt_class(&self, name: &str) -> Result<Value> {
        let name = name.to_string();
        blocking(move || rdt_class_in(Path::new(RESCTRL), &name)).await?
    }
}

fn rdt_class_in(resctrl: &Path, name: &str) -> Result<Value> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.len() > 255 {
        return Err(EngineError::invalid(format!(
            "RDT class {name:?}: not a valid name"
        )));
    }
    if !resctrl.join("schemata").exists() {
        return Err(EngineError::precondition(format!(
            "RDT class {name:?}: this host has no resctrl filesystem at {}",
            resctrl.display()
        )));
    }
    if !resctrl.join(name).join("schemata").exists() {
        return Err(EngineError::precondition(format!(
            "RDT class {name:?}: no such resctrl group in {}",
            resctrl.display()
        )));
    }
    Ok(json!({"closID": name}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdt_classes_are_resctrl_groups_that_exist() {
        let dir = tempfile::tempdir().unwrap();
        let e = rdt_class_in(dir.path(), "gold").unwrap_err();
        assert!(e.to_string().contains("no resctrl filesystem"), "{e}");
        std::fs::write(dir.path().join("schemata"), "L3:0=fff\n").unwrap();
        let e = rdt_class_in(dir.path(), "gold").unwrap_err();
        assert!(e.to_string().contains("no such resctrl group"), "{e}");
        std::fs::create_dir(dir.path().join("gold")).unwrap();
        std::fs::write(dir.path().join("gold/schemata"), "L3:0=f\n").unwrap();
        assert_eq!(
            rdt_class_in(dir.path(), "gold").unwrap(),
            json!({"closID": "gold"})
        );
        for bad in ["", "..", "a/b"] {
            assert!(rdt_class_in(dir.path(), bad).is_err(), "{bad}");
        }
    }
}
