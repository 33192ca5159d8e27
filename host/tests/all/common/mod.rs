//! Shared by the integration tests and the benchmarks: where the repository, the built
//! plugins and the policies are, and the real services the tests start.

#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A built plugin component; `make build` (which `make test` and `make bench` run first)
/// puts them there.
pub fn plugin(name: &str) -> PathBuf {
    let path = root().join("plugins/dist").join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} is missing: run `make build` (or `make test`) first", path.display());
    path
}

/// A test-only guest (a hostile fixture); `make test-plugins` (which `make test` runs first)
/// builds them into var/test-plugins.
pub fn fixture_plugin(name: &str) -> PathBuf {
    let path = root().join("var/test-plugins").join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} is missing: run `make test-plugins` (or `make test`) first", path.display());
    path
}

/// The `host` binary built for these tests.
pub fn host_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_host"))
}
/// Every record of an audit log, in order (none when the file is not there).
pub fn records(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

pub mod faults;
pub mod k8s;
pub mod node;
pub mod prometheus;
