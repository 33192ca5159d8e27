//! The key of a file path: the same file always gets the same key, whether the policy named
//! it relatively, absolutely or through `..`. Policies, plugins and the reloader's events are
//! matched by it.

use std::path::{Path, PathBuf};

/// An absolute path with `.` and `..` resolved lexically, for a file that may not exist (any
/// more): the same file always gets the same key. Symbolic links are not followed, so that a
/// file of a mounted ConfigMap keeps its path when the kubelet swaps the `..data` link.
pub fn normal(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
