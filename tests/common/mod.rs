//! End-to-end harness: a real ferrio daemon per test (temp root, run root and socket), real
//! registries (Debian's docker-registry on 127.0.0.1, started by hack/registry.sh), real images
//! (hack/build-test-images.sh). Nothing is mocked.
//!
//! - `daemon`: the daemon per test; dropping it removes what the test left and runs the one leak
//!   check every test gets (no mount, process or cgroup of that daemon left on the host).
//! - `registry`: registries, test images, a throttling proxy.
//! - `cri`: request builders and client helpers.
//! - `leaks`: the probes behind the leak check, for tests that check mid-way.
//! - `tinyhttp`: a tiny HTTP server for token endpoints and webhooks.
//!
//! Every test begins with [`e2e!`]: without root the suites are skipped with one line saying why,
//! so that `cargo test` as a normal user runs the unit tests and passes.
#![allow(dead_code)]

pub mod cri;
pub mod daemon;
pub mod leaks;
pub mod registry;
pub mod tinyhttp;

#[allow(unused_imports)]
pub use cri::*;
#[allow(unused_imports)]
pub use daemon::*;
#[allow(unused_imports)]
pub use leaks::*;
#[allow(unused_imports)]
pub use registry::*;
#[allow(unused_imports)]
pub use tinyhttp::*;

/// Whether this process may run the end-to-end tests: they start real containers, mounts and
/// cgroups, which needs root. Otherwise it says so once, on the terminal (libtest captures a
/// test's `eprintln!`, not a direct write to stderr).
pub fn e2e_allowed() -> bool {
    static SAID: std::sync::Once = std::sync::Once::new();
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    SAID.call_once(|| {
        use std::io::Write;
        let bin = std::env::args()
            .next()
            .and_then(|a| {
                std::path::Path::new(&a)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
            })
            .unwrap_or_default();
        let name = bin
            .rsplit_once('-')
            .map(|(n, _)| n)
            .unwrap_or(&bin)
            .to_string();
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: the end-to-end tests of tests/{name}.rs need root (real containers, mounts, \
             cgroups and CNI); run them as root, as hack/test.sh does"
        );
    });
    false
}

/// First statement of every end-to-end test: returns early (the test skipped) without root.
#[allow(unused_macros)]
macro_rules! e2e {
    () => {
        if !$crate::common::e2e_allowed() {
            return;
        }
    };
}
