//! Paths to the workspace's binaries for tests that run them as real processes.
//!
//! Cargo only exposes `CARGO_BIN_EXE_*` to a package's own tests, so the harness builds the
//! binary it needs (a no-op when it is fresh) into the same target directory and profile.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

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

/// Builds (if needed) and returns the path of `bin` from `package`.
pub fn cargo_bin(package: &str, bin: &str) -> PathBuf {
    let dir = profile_dir();
    let path = dir.join(bin);
    let _guard = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let release = dir.file_name().is_some_and(|n| n == "release");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // The whole workspace's binaries, as tests/run.sh builds them first: building one package
    // alone would unify features differently and recompile its dependencies.
    cmd.args(["build", "--quiet", "--workspace", "--bins"]);
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

/// The workspace root (for files such as tests/clients/ and config/).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .expect("tests/ sits in the workspace root")
}
