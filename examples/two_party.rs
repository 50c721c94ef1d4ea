//! The quick start: two parties, alice and bob, each with a counter actor;
//! a task in bob sums the two counters; both parties get the sum.
//!
//! ```text
//! cargo run --example two_party                                   # both parties, two processes, on this machine
//! cargo run --example two_party -- --party alice --config alice.toml   # one party (a real deployment)
//! ```
//!
//! Without arguments it writes development certificates and two
//! configuration files into a temporary folder, starts alice and bob as two
//! processes of this program over QUIC on 127.0.0.1, and exits 0 when both
//! print their result.

mod common;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use xsilo::Config;

/// A counter: the actor of the quick start.
struct Counter {
    value: i64,
}

impl Counter {
    fn new(value: i64) -> Self {
        Self { value }
    }

    fn inc(&mut self, by: i64) -> i64 {
        self.value += by;
        self.value
    }
}

/// The driver program: the very same code runs in alice and in bob.
async fn driver(fed: &xsilo::Fed) -> Result<i64, xsilo::Error> {
    let a = fed.party("alice").actor(|| Counter::new(1)); // lives only in alice
    let b = fed.party("bob").actor(|| Counter::new(1)); // lives only in bob
    let va = a.call(|c| c.inc(1)); // 2, owned by alice
    let vb = b.call(|c| c.inc(2)); // 3, owned by bob
    let sum = fed.party("bob").task((va, vb), |(x, y)| x + y); // runs in bob; alice pushes va
    fed.get(&sum).await // 5, in alice and in bob
}

#[derive(Debug, Parser)]
#[command(about = "xsilo quick start: two parties sum their counters")]
struct Args {
    /// Run only this party (needs --config).
    #[arg(long, requires = "config")]
    party: Option<String>,
    /// The party's configuration file (TOML).
    #[arg(long, requires = "party")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    common::init_logging("warn");
    let args = Args::parse();
    let result = match (&args.party, &args.config) {
        (Some(party), Some(config)) => run_party(party, config),
        _ => run_both(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One party, as in production.
fn run_party(party: &str, config: &Path) -> Result<()> {
    let config = Config::from_file(config)?;
    xsilo::block_on(async {
        let fed = xsilo::init(config, party).await?;
        let result = driver(&fed).await;
        // Shut down in any case: it waits until every value we sent is
        // acknowledged, then tells the peers goodbye.
        let shutdown = fed.shutdown().await;
        let sum = result?;
        shutdown?;
        println!("The result in party {party} is {sum}");
        Ok(())
    })
}

/// Both parties as two processes of this program, with development
/// certificates in a temporary folder.
fn run_both() -> Result<()> {
    common::run_local_job(
        "two-party-demo",
        &["alice", "bob"],
        |_, _| {},
        |_| Vec::new(),
    )
}
