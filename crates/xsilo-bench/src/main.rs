//! xsilo benchmark programs. Each prints one JSON object per line per figure,
//! with the baseline measured in the same run on the same machine.
//!
//! ```text
//! cargo run --release -p xsilo-bench -- transport [--quick]
//! ```

mod child;
mod stats;
mod transport;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "xsilo-bench",
    about = "xsilo benchmarks, each against a baseline measured in the same run"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The transport against raw quinn with the same TLS and QUIC settings:
    /// one 256 MiB object (MiB/s) and 10,000 sequential 64-byte objects with
    /// acknowledgement (median and p99 microseconds). Two processes, each on
    /// an actix System (one thread), as parties run in production.
    Transport {
        /// A run under a minute: 64 MiB and 2,000 small objects.
        #[arg(long)]
        quick: bool,
    },
    /// Internal: the receiving party of `transport`, started by it.
    #[command(hide = true)]
    ServeTransport,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Transport { quick } => transport::run(quick),
        Command::ServeTransport => transport::serve(),
    }
}
