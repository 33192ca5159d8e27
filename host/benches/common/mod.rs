//! Shared by the benchmarks: where the repository and the built plugins are.

#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A built plugin component; `make build` (which `make bench` runs first) puts them there.
pub fn plugin(name: &str) -> PathBuf {
    let path = root().join("plugins/dist").join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} is missing: run `make build` first", path.display());
    path
}
