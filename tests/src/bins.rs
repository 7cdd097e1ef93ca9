//! Paths to the workspace's binaries for tests that run them as real processes.
//!
//! Cargo only exposes `CARGO_BIN_EXE_*` to a package's own tests, so the harness finds the
//! binary in the same target directory and profile, and builds it only when it is missing or
//! older than the sources.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::SystemTime;

static BUILD: Mutex<()> = Mutex::new(());

/// The profile folder of the running executable (`target/debug`, `target/release`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    // Tests live in target/<profile>/deps/, binaries (the demo) in target/<profile>/.
    let dir = exe.parent().expect("executable has a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(PathBuf::from).expect("target/<profile>")
    } else {
        dir.to_path_buf()
    }
}

/// The newest modification time of the workspace's sources (what a binary is built from).
fn newest_source() -> Option<SystemTime> {
    fn walk(dir: &Path, newest: &mut Option<SystemTime>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, newest);
            } else if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                *newest = (*newest).max(Some(m));
            }
        }
    }
    let root = workspace_root();
    let mut newest = None;
    for dir in ["common", "producer", "worker", "tests/src"] {
        walk(&root.join(dir), &mut newest);
    }
    for file in ["Cargo.toml", "Cargo.lock"] {
        if let Ok(m) = std::fs::metadata(root.join(file)).and_then(|m| m.modified()) {
            newest = newest.max(Some(m));
        }
    }
    newest
}

/// Returns the path of `bin` from `package`, building it first unless it is newer than every
/// source file (`cargo test --workspace` has built it then; building it again with another
/// package selection would unify features differently and recompile its dependencies).
pub fn cargo_bin(package: &str, bin: &str) -> PathBuf {
    let dir = profile_dir();
    let path = dir.join(bin);
    let _guard = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    if let (Some(built), Some(newest)) = (built, newest_source())
        && built > newest
    {
        return path;
    }
    let release = dir.file_name().is_some_and(|n| n == "release");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--quiet", "-p", package, "--bin", bin]);
    if release {
        cmd.arg("--release");
    }
    if let Some(target_dir) = dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target_dir);
    }
    let status = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "cargo build -p {package} --bin {bin} failed"
    );
    assert!(path.exists(), "{} missing after build", path.display());
    path
}

/// The workspace root (for files such as producer/python/ and config/).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .expect("tests/ sits in the workspace root")
}
