//! Cross-silo error broadcasting: a task fails in alice, bob's task consumes
//! its result, carol's task consumes bob's; every party gets carol's object.
//! alice gets her full local error; bob and carol get a RemoteError naming
//! alice, at once, without waiting for any timeout; all three exit.
//!
//! ```text
//! cargo run --example error_broadcast                                      # three processes on this machine
//! cargo run --example error_broadcast -- --party bob --config bob.toml     # one party
//! ```

mod common;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Parser;
use xsilo::Config;

/// Why alice's task fails.
#[derive(Debug)]
struct TrainingDiverged;

impl std::fmt::Display for TrainingDiverged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the local model diverged (loss = NaN)")
    }
}
impl std::error::Error for TrainingDiverged {}

/// The driver: the same code in every party. Returns what `get` of carol's
/// report gave, and, in the party that owns the failed update, the full
/// local error of that update.
async fn driver(fed: &xsilo::Fed) -> (Result<String, xsilo::Error>, Option<xsilo::Error>) {
    let update = fed
        .party("alice")
        .try_task((), |()| Err::<Vec<f32>, _>(TrainingDiverged));
    let merged = fed
        .party("bob")
        .task(update.clone(), |u: Vec<f32>| u.iter().sum::<f32>());
    let report = fed
        .party("carol")
        .task(merged, |m: f32| format!("merged {m}"));
    let result = fed.get(&report).await;
    let local = if update.owner() == fed.me() {
        fed.get(&update).await.err()
    } else {
        None
    };
    (result, local)
}

#[derive(Debug, Parser)]
#[command(about = "xsilo: a failure in one party reaches every party")]
struct Args {
    /// Run only this party (needs --config).
    #[arg(long, requires = "config")]
    party: Option<String>,
    /// The party's configuration file (TOML).
    #[arg(long, requires = "party")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    common::init_logging("off");
    let args = Args::parse();
    let result = match (&args.party, &args.config) {
        (Some(party), Some(config)) => run_party(party, config),
        _ => run_all(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One party. The job is expected to fail: the party prints what it got
/// and exits 0 when that is an error, as it should be.
fn run_party(party: &str, config: &Path) -> Result<()> {
    let config = Config::from_file(config)?;
    let start = Instant::now();
    xsilo::block_on(async {
        let fed = xsilo::init(config, party).await?;
        let (result, local) = driver(&fed).await;
        let _ = fed.shutdown().await;
        match (result, local) {
            (Ok(v), _) => bail!("party {party}: expected a failure, got {v:?}"),
            (Err(_), Some(local)) => {
                println!(
                    "party {party} got its local error after {:.0?}:\n    {local}",
                    start.elapsed()
                );
                Ok(())
            }
            (Err(e), None) => {
                let origin = e.remote_origin().map_or("an error".to_owned(), |p| {
                    format!("a RemoteError naming party '{p}'")
                });
                println!(
                    "party {party} got {origin} after {:.0?}:\n    {e}",
                    start.elapsed()
                );
                Ok(())
            }
        }
    })
}

/// alice, bob and carol as three processes of this program.
fn run_all() -> Result<()> {
    common::run_local_job(
        "error-broadcast-demo",
        &["alice", "bob", "carol"],
        |_, c| {
            c.comm.barrier_on_initializing = true;
        },
        |_| Vec::new(),
    )
}
