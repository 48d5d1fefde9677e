//! What the daemon and a container's monitor know of it, for `ferrio status containers`.

use super::{blocking, ContainerRecord, Engine, Result};
use crate::monitor::proto::ExitInfo;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The monitor's answer to `State`.
pub struct MonitorAnswer {
    pub pid: i32,
    pub started: bool,
    pub exit: Option<ExitInfo>,
    /// Its protocol version (0: started by a release before versioning).
    pub protocol: u32,
}

pub struct ContainerDebug {
    /// The record, with the exit file applied if there is one.
    pub rec: ContainerRecord,
    pub run_dir: PathBuf,
    pub exit_file_path: PathBuf,
    /// `None`: no exit file.
    pub exit_file: Option<ExitInfo>,
    /// Err: the monitor did not answer, and why.
    pub monitor: std::result::Result<MonitorAnswer, String>,
}

/// How long the monitor gets to answer.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(2);

impl Engine {
    /// The record of container `s` (ID or unique prefix), its exit file and its monitor's own
    /// state. A monitor that does not answer is reported, not an error.
    pub async fn container_debug(self: &Arc<Self>, s: &str) -> Result<ContainerDebug> {
        let rec = self.container_status(s)?;
        let answer = self.monitor(&rec.id).state(MONITOR_TIMEOUT).await;
        let this = self.clone();
        blocking(move || {
            let paths = this.ctr_paths(&rec.id);
            let (run_dir, exit_file_path) = (paths.run.clone(), paths.exit_file());
            let exit_file = crate::state::read_json::<ExitInfo>(&exit_file_path).ok();
            let monitor = answer
                .map_err(|e| e.to_string())
                .and_then(|r| match r.error {
                    Some(e) => Err(e),
                    None => Ok(MonitorAnswer {
                        pid: r.pid,
                        started: r.started,
                        exit: r.exit,
                        protocol: r.v,
                    }),
                });
            ContainerDebug {
                rec,
                run_dir,
                exit_file_path,
                exit_file,
                monitor,
            }
        })
        .await
    }
}
