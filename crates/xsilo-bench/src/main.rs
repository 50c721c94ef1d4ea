//! xsilo benchmark programs. Each prints one JSON object per line per figure,
//! with the baseline measured in the same run on the same machine.
//!
//! ```text
//! cargo run --release -p xsilo-bench -- transport [--quick]
//! cargo run --release -p xsilo-bench -- tiny-tasks [--quick]
//! cargo run --release -p xsilo-bench -- errors [--quick]
//! cargo run --release -p xsilo-bench -- fedavg-memory [--quick]
//! cargo run --release -p xsilo-bench -- workload [--quick]
//! cargo run --release -p xsilo-bench -- codec [--quick]
//! cargo run --release -p xsilo-bench -- fedavg [--quick]
//! ```

mod child;
mod codec;
mod errors;
mod fedavg;
mod fedavg_memory;
mod stats;
mod tiny_tasks;
mod transport;
mod wan;
mod workload;

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
    /// xsilo's transport through an emulated wide-area link at (10 ms,
    /// 0%), (50 ms, 0.1%), (100 ms, 1%), 1 Gbit/s: bulk and small round
    /// trips, against raw quinn with quinn's defaults through the same
    /// emulator and against the link's capacity.
    Wan {
        /// 64 MiB only, 10 s caps, 20 round trips (under 2 minutes).
        #[arg(long)]
        quick: bool,
        /// Only this link: 10ms_0pct, 50ms_0.1pct or 100ms_1pct.
        #[arg(long)]
        link: Option<String>,
    },
    /// Internal: bob of `wan`, started by it.
    #[command(hide = true)]
    ServeWan,
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
    /// RayFed's many-tiny-tasks benchmark: per round, one call on an actor
    /// in alice and one in bob, an aggregating call on an actor in alice
    /// consuming both, and `get` of its result; 10,000 rounds; two parties
    /// as processes over QUIC. Baseline: the raw quinn request/response
    /// round trip between the same two processes, measured in the same run.
    TinyTasks {
        /// 1,000 rounds.
        #[arg(long)]
        quick: bool,
    },
    /// Error propagation and peer loss: three parties as processes over
    /// QUIC; (a) time from a failing task's return to the RemoteError in the
    /// consumer and in the third party, 200 trials; (b) time from SIGKILL of
    /// a party to the error in the party waiting on it, 5 trials, against
    /// the configured liveness bound.
    Errors {
        /// 50 trials of (a), 3 of (b).
        #[arg(long)]
        quick: bool,
    },
    /// Internal: one party of `errors`, started by it.
    #[command(hide = true)]
    ErrorsParty {
        #[command(flatten)]
        at: PartyAt,
        /// `propagation` or `loss`.
        #[arg(long)]
        scenario: String,
        /// Trials.
        #[arg(long)]
        trials: usize,
    },
    /// Memory over many FedAvg rounds (promise L1): three parties as
    /// processes, a 1M-element f32 model, 500 rounds; resident memory per
    /// party at round 10, at the end, and at its peak.
    FedavgMemory {
        /// 100 rounds.
        #[arg(long)]
        quick: bool,
    },
    /// Internal: one party of `fedavg-memory`, started by it.
    #[command(hide = true)]
    FedavgMemoryParty {
        #[command(flatten)]
        at: PartyAt,
        /// Rounds.
        #[arg(long)]
        rounds: usize,
    },
    /// The execution engine under load: (a) 8 CPU tasks of 0.5 s against
    /// 8 x 0.5 s / workers, (b) error propagation while every worker is busy
    /// (p50, p99), (c) a 30 s CPU task with peer_lost_timeout = 5 s.
    Workload {
        /// 30 trials of (b), a 12 s task in (c).
        #[arg(long)]
        quick: bool,
    },
    /// Internal: one party of `workload`, started by it.
    #[command(hide = true)]
    WorkloadParty {
        #[command(flatten)]
        at: PartyAt,
        /// Trials of (b).
        #[arg(long)]
        trials: usize,
        /// Seconds of (c).
        #[arg(long)]
        long_s: u64,
        /// Which of a, b, c to run.
        #[arg(long)]
        phases: String,
    },
    /// Encode plus decode of a 1M-element `Vec<f32>`: the numeric-array path
    /// against msgpack, in the same run (milliseconds, median).
    Codec {
        /// 30 samples instead of 200.
        #[arg(long)]
        quick: bool,
    },
    /// The FedAvg round (promise L2): three parties as processes, a
    /// 1M-element f32 model, 100 rounds; median round against raw quinn
    /// moving the same bytes between the same processes in the same run;
    /// then 100 rounds with 100 ms of CPU training per party.
    Fedavg {
        /// 30 rounds, then 10 with training.
        #[arg(long)]
        quick: bool,
    },
    /// Internal: one party of `fedavg`, started by it.
    #[command(hide = true)]
    FedavgParty {
        #[command(flatten)]
        at: PartyAt,
        /// Measured rounds.
        #[arg(long)]
        rounds: usize,
        /// Milliseconds of CPU training per party per round.
        #[arg(long)]
        train_ms: u64,
    },
    /// Internal: party bob of `tiny-tasks`, started by it.
    #[command(hide = true)]
    TinyTasksParty {
        /// The configuration file.
        #[arg(long)]
        config: std::path::PathBuf,
        /// Rounds.
        #[arg(long)]
        rounds: usize,
    },
}

/// Which party a hidden `*-party` subcommand runs, and from which file.
#[derive(Debug, clap::Args)]
struct PartyAt {
    /// The configuration file.
    #[arg(long)]
    config: std::path::PathBuf,
    /// This party.
    #[arg(long)]
    party: String,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Transport { quick } => transport::run(quick),
        Command::ServeTransport => transport::serve(),
        Command::Wan { quick, link } => wan::run(quick, link.as_deref()),
        Command::ServeWan => wan::serve(),
        Command::TinyTasks { quick } => tiny_tasks::run(quick),
        Command::Errors { quick } => errors::run(quick),
        Command::ErrorsParty {
            at,
            scenario,
            trials,
        } => errors::party(&at.config, &at.party, &scenario, trials),
        Command::TinyTasksParty { config, rounds } => tiny_tasks::bob(&config, rounds),
        Command::FedavgMemory { quick } => fedavg_memory::run(quick),
        Command::Workload { quick } => workload::run(quick),
        Command::Codec { quick } => codec::run(quick),
        Command::Fedavg { quick } => fedavg::run(quick),
        Command::FedavgParty {
            at,
            rounds,
            train_ms,
        } => fedavg::party(&at.config, &at.party, rounds, train_ms),
        Command::WorkloadParty {
            at,
            trials,
            long_s,
            phases,
        } => workload::party(&at.config, &at.party, trials, long_s, &phases),
        Command::FedavgMemoryParty { at, rounds } => {
            fedavg_memory::party(&at.config, &at.party, rounds)
        }
    }
}
