//! `xsilo`: the xsilo command line.
//!
//! * `xsilo certs --parties alice,bob --out DIR`: development certificates.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use xsilo_transport::devcert::DevCa;
use xsilo_wire::PartyName;

/// The xsilo command line.
#[derive(Debug, Parser)]
#[command(
    name = "xsilo",
    version,
    about = "xsilo: cross-silo federated runtime tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write DEVELOPMENT certificates: a CA and one certificate and key per
    /// party. Not for production: use your organisations' own PKI there.
    ///
    /// Writes DIR/ca.pem, and DIR/<party>.pem and DIR/<party>.key for each
    /// party. Each certificate names its party (subjectAltName DNS:<party>),
    /// which is the identity xsilo checks. The CA's private key is not kept,
    /// so nobody can mint more identities from these files; run the command
    /// again for a new set.
    Certs {
        /// Comma-separated party names, e.g. alice,bob,carol.
        #[arg(long, value_delimiter = ',', required = true)]
        parties: Vec<String>,
        /// Output folder (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Certs {
            parties,
            out,
            force,
        } => certs(&parties, &out, force),
    }
}

fn certs(names: &[String], out: &Path, force: bool) -> Result<()> {
    let mut parties: Vec<PartyName> = Vec::new();
    for name in names {
        let party: PartyName = name.trim().parse()?;
        if party.as_str() == "ca" {
            bail!("a party cannot be named 'ca': its files would clash with ca.pem");
        }
        if parties.contains(&party) {
            bail!("party '{party}' is listed twice");
        }
        parties.push(party);
    }
    let mut files = vec![out.join("ca.pem")];
    for p in &parties {
        files.push(out.join(format!("{p}.pem")));
        files.push(out.join(format!("{p}.key")));
    }
    if !force {
        if let Some(existing) = files.iter().find(|f| f.exists()) {
            bail!(
                "{} already exists; pass --force to overwrite",
                existing.display()
            );
        }
    }
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let ca = DevCa::new()?;
    write(&out.join("ca.pem"), &ca.ca_pem(), false)?;
    for p in &parties {
        let cert = ca.issue(p)?;
        write(&out.join(format!("{p}.pem")), &cert.cert_pem, false)?;
        write(&out.join(format!("{p}.key")), &cert.key_pem, true)?;
    }
    println!(
        "Wrote DEVELOPMENT certificates (not for production) to {}:",
        out.display()
    );
    println!("  ca.pem            the development CA (its private key was not kept)");
    for p in &parties {
        println!("  {p}.pem, {p}.key   certificate naming party '{p}' (DNS:{p}), and its key");
    }
    println!("Give each party ca.pem and its own .pem and .key; keep each .key private.");
    Ok(())
}

fn write(path: &Path, text: &str, private: bool) -> Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
