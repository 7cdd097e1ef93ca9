//! Python scripts run by tests with the tests' venv (`SLUICE_PYTHON`, set by tests/run.sh; the
//! system `python3` otherwise): each prints one JSON object, and a failing script fails the test
//! with its stderr.

use std::path::Path;
use std::process::Command;

/// Runs `script` with `args` (and `env`), returns the JSON object it printed.
pub fn run(script: &Path, args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let interpreter = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&interpreter)
        .arg(script)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("run {interpreter}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed (tests/run.sh installs what it needs into target/py-venv):\n{stderr}",
        script.display()
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{} printed no JSON object ({e}): {}",
            script.display(),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
