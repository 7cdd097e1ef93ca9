//! Certificates and ACL users for security tests, made in the test's own temp dir: a CA, a
//! server certificate for 127.0.0.1 and a client certificate (by the `openssl` command), and the
//! shipped `deploy/redis/users.acl` with its passwords filled in.

use std::path::{Path, PathBuf};
use std::process::Command;

/// PEM files in one directory.
pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a server (SAN 127.0.0.1, localhost) and a client certificate it signed.
pub fn make(dir: &Path) -> Certs {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=sluice-test-ca",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("write server.ext");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("client.ext");
    for (name, ext) in [("server", "server.ext"), ("client", "client.ext")] {
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN=sluice-{name}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                ext,
            ],
        );
    }
    Certs {
        ca: dir.join("ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
    }
}

/// The shipped ACL file with each CHANGE-ME password replaced; returns (path, password).
pub fn acl_file(dir: &Path) -> (PathBuf, String) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/redis/users.acl");
    let text = std::fs::read_to_string(shipped).expect("deploy/redis/users.acl");
    let password = format!("pw-{}", std::process::id());
    let text = text
        .replace(">CHANGE-ME-producer", &format!(">{password}"))
        .replace(">CHANGE-ME-api", &format!(">{password}"))
        .replace(">CHANGE-ME-worker", &format!(">{password}"))
        .replace(">CHANGE-ME-operator", &format!(">{password}"));
    assert!(!text.contains("CHANGE-ME"), "a password left unreplaced");
    let path = dir.join("users.acl");
    std::fs::write(&path, text).expect("write acl file");
    (path, password)
}
