//! Development helpers: a whole job on one machine, with development
//! certificates. **Not for production**: the CA is made on the spot and its
//! key is thrown away; production certificates come from the parties' own
//! PKI (see `xsilo certs` and the README).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use xsilo_transport::devcert::DevCa;
use xsilo_wire::PartyName;

use crate::config::{Config, TlsPaths};

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Writes, into `dir`, a development CA (`ca.pem`), a certificate and key
/// per party (`<party>.pem`, `<party>.key`), and one configuration file per
/// party (`<party>.toml`) for job `job`, each party on a free UDP port of
/// 127.0.0.1. `tweak(party, config)` adjusts each configuration before it is
/// written. Returns each party's configuration file.
///
/// ```
/// let dir = tempfile_dir();
/// let configs = xsilo::dev::write_local_job(&dir, "demo", &["alice", "bob"], |_, c| {
///     c.comm.barrier_on_initializing = true;
/// })
/// .unwrap();
/// let alice = xsilo::Config::from_file(&configs["alice"]).unwrap();
/// assert!(alice.comm.barrier_on_initializing);
/// # fn tempfile_dir() -> std::path::PathBuf {
/// #     let d = std::env::temp_dir().join(format!("xsilo-dev-doc-{}", std::process::id()));
/// #     std::fs::create_dir_all(&d).unwrap();
/// #     d
/// # }
/// ```
pub fn write_local_job(
    dir: &Path,
    job: &str,
    parties: &[&str],
    tweak: impl Fn(&str, &mut Config),
) -> io::Result<BTreeMap<String, PathBuf>> {
    let ca = DevCa::new().map_err(other)?;
    std::fs::write(dir.join("ca.pem"), ca.ca_pem())?;
    let mut book = Vec::new();
    // Ports free now; each party binds its own when it starts. The sockets
    // stay open until every port is chosen, so that no two parties of the
    // job get the same one (a party dialling a peer's port would otherwise
    // reach itself).
    let mut held = Vec::new();
    for p in parties {
        let party: PartyName = p.parse().map_err(other)?;
        let cert = ca.issue(&party).map_err(other)?;
        std::fs::write(dir.join(format!("{p}.pem")), &cert.cert_pem)?;
        std::fs::write(dir.join(format!("{p}.key")), &cert.key_pem)?;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        book.push((party, socket.local_addr()?));
        held.push(socket);
    }
    drop(held);
    let mut paths = BTreeMap::new();
    for p in parties {
        let mut config = Config::new(job.parse().map_err(other)?, book.clone()).map_err(other)?;
        config.tls = Some(TlsPaths::new(
            "ca.pem",
            format!("{p}.pem"),
            format!("{p}.key"),
        ));
        tweak(p, &mut config);
        let path = dir.join(format!("{p}.toml"));
        std::fs::write(&path, config.to_toml_string().map_err(other)?)?;
        paths.insert((*p).to_owned(), path);
    }
    Ok(paths)
}
