//! `xsilo certs` writes certificates that the transport accepts, each naming
//! its party.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use xsilo_transport::TlsIdentity;
use xsilo_wire::PartyName;

fn xsilo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xsilo"))
}

#[test]
fn certs_writes_a_ca_and_one_named_certificate_per_party() {
    let dir = tempfile::tempdir().unwrap();
    let out = xsilo()
        .args(["certs", "--parties", "alice,bob,carol", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("DEVELOPMENT"), "{stdout}");
    for p in ["alice", "bob", "carol"] {
        let id = TlsIdentity::from_pem_files(
            &dir.path().join("ca.pem"),
            &dir.path().join(format!("{p}.pem")),
            &dir.path().join(format!("{p}.key")),
        )
        .unwrap();
        let party: PartyName = p.parse().unwrap();
        assert!(id.names(&party), "{p}.pem does not name {p}");
        for other in ["alice", "bob", "carol"].iter().filter(|o| **o != p) {
            assert!(
                !id.names(&other.parse().unwrap()),
                "{p}.pem also names {other}"
            );
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(format!("{p}.key")))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{p}.key is readable by others");
        }
    }
    // Refuses to overwrite without --force.
    let again = xsilo()
        .args(["certs", "--parties", "alice", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
}

#[test]
fn certs_rejects_invalid_party_names_with_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let out = xsilo()
        .args(["certs", "--parties", "alice,Bob", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid party name \"Bob\""), "{err}");
}

#[test]
fn help_says_the_certificates_are_for_development() {
    let out = xsilo().args(["certs", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("DEVELOPMENT") && help.contains("Not for production"),
        "{help}"
    );
}
