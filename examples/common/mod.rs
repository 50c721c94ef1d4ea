//! What the examples share: running every party of a job as a process of
//! the example itself, on this machine, with development certificates.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Logs to stderr as `RUST_LOG` asks, else at `default` (a filter such as
/// `"off"` or `"warn"`), so that each party's stdout carries only its
/// result.
pub(crate) fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        // Colour only on a terminal: a file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// How long the parties together may run.
const BOUND: Duration = Duration::from_secs(60);

/// Writes development certificates and one configuration per party into a
/// temporary folder (`tweak` adjusts each), starts this program once per
/// party with `--party NAME --config FILE` and the arguments `args(NAME)`,
/// and waits (bounded) for all. Fails naming every party that failed or
/// did not finish.
pub(crate) fn run_local_job(
    job: &str,
    parties: &[&str],
    tweak: impl Fn(&str, &mut xsilo::Config),
    args: impl Fn(&str) -> Vec<String>,
) -> Result<()> {
    let dir = tempfile::tempdir().context("cannot create a temporary folder")?;
    let configs = xsilo::dev::write_local_job(dir.path(), job, parties, tweak)?;
    let mut children: Vec<(String, Child)> = Vec::new();
    for (p, path) in &configs {
        children.push((p.clone(), spawn_party(p, path, &args(p))?));
    }
    let deadline = Instant::now() + BOUND;
    let mut failed = Vec::new();
    for (p, child) in &mut children {
        match wait_until(child, deadline)? {
            Some(status) if status.success() => {}
            Some(status) => failed.push(format!("party {p} exited with {status}")),
            None => failed.push(format!(
                "party {p} did not finish within {BOUND:?} and was stopped"
            )),
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

fn spawn_party(party: &str, config: &PathBuf, args: &[String]) -> Result<Child> {
    Command::new(std::env::current_exe()?)
        .args(["--party", party, "--config"])
        .arg(config)
        .args(args)
        .spawn()
        .with_context(|| format!("cannot start party {party}"))
}

/// Waits for `child` until `deadline`; kills it after.
fn wait_until(child: &mut Child, deadline: Instant) -> Result<Option<std::process::ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
