//! `xsilo`: the xsilo command line.
//!
//! * `xsilo certs --parties alice,bob --out DIR`: development certificates.
//! * `xsilo check --config alice.toml --party alice`: a pre-flight of one
//!   party's deployment (configuration, certificates, listen address, every
//!   peer), changing nothing and joining no job.

mod check;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    /// Check one party's deployment before starting it: changes nothing and
    /// joins no job.
    ///
    /// Loads the configuration as `init` does; checks the TLS files (the CA
    /// parses, the certificate is signed by it, is valid now and for 30 more
    /// days (else a warning), names the party (a certificate naming no party
    /// of the job is a shared one: a warning, since party identities are
    /// then not bound to certificates; one naming another party is an
    /// error), and fits the key); that the listen address can be bound; and
    /// for every peer that a QUIC handshake completes within
    /// connect_timeout, that its certificate names it (or, with a shared
    /// certificate, no party of the job) and is signed by our CA, that it
    /// accepts our job name and party, and the round trip. A peer answers the probe without it reaching its running
    /// job. Prints one line per check (ok, warning, error with what to
    /// change); exits 0 when no check failed (warnings pass), 1 otherwise.
    Check {
        /// The party's configuration file (TOML), as given to the program.
        #[arg(long)]
        config: PathBuf,
        /// The party to check, as given to the program.
        #[arg(long)]
        party: String,
        /// Also send MIB mebibytes to each peer (discarded there) and print
        /// the throughput; 1 to 1024.
        #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=1024))]
        throughput: Option<u64>,
        /// Print JSON lines instead of text (one object per check, then a
        /// summary).
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Certs {
            parties,
            out,
            force,
        } => match certs(&parties, &out, force) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Check {
            config,
            party,
            throughput,
            json,
        } => {
            if check::run(&config, &party, throughput, json) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
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
