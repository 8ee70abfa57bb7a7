//! Where Cargo keeps things, seen from the harness: the workspace root (for
//! repository files such as `.tools/bin/`) and the target directory (for
//! the suites' scratch and results files).

use std::path::{Path, PathBuf};

/// The workspace root: the harness crate lives in `<root>/harness`.
pub(crate) fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the harness crate lives inside the workspace")
}

/// The target directory: `CARGO_TARGET_DIR`, else `<root>/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}
