//! # xsilo: cross-silo federated applications in Rust
//!
//! Several organisations ("parties") each run **the same driver program**
//! on their own machines. Every task and actor is pinned to one party and
//! runs only there; its result is a [`FedObject`] that the owner **pushes**
//! to the parties that consume it, over QUIC with mutual TLS. When anything
//! fails anywhere, every party learns it and fails with a clear error.
//!
//! ```no_run
//! # fn main() -> Result<(), xsilo::Error> {
//! struct Counter(i64);
//! impl Counter {
//!     fn inc(&mut self, by: i64) -> i64 { self.0 += by; self.0 }
//! }
//!
//! xsilo::block_on(async {
//!     let config = xsilo::Config::from_file("alice.toml")?;
//!     let fed = xsilo::init(config, "alice").await?;            // same code in every party
//!     let a = fed.party("alice").actor(|| Counter(0));          // lives only in alice
//!     let b = fed.party("bob").actor(|| Counter(0));            // lives only in bob
//!     let va = a.call(|c| c.inc(1));                            // FedObject<i64>, owned by alice
//!     let vb = b.call(|c| c.inc(2));                            // owned by bob
//!     let sum = fed.party("bob").task((va, vb), |(x, y)| x + y); // runs in bob; alice pushes va
//!     assert_eq!(fed.get(&sum).await?, 3);                      // 3 in alice AND in bob
//!     fed.shutdown().await
//! })
//! # }
//! ```
//!
//! * [`init`] starts one party from a [`Config`] (TOML or code).
//! * [`Simulation`] runs every party in one process with the same code.
//! * Values crossing silos are serde types (msgpack); `bytes::Bytes` and
//!   `Vec<u8>` cross as raw bytes, and `Vec<f32>`, `Vec<f64>`, `Vec<i32>`,
//!   `Vec<i64>`, `Vec<u32>`, `Vec<u64>` (model weights, gradients) as raw
//!   little-endian arrays behind a checked header, at memory speed (see
//!   [`Value`] for exactly which types).
//! * Each party's control plane (actix actors and the QUIC I/O) runs on a
//!   thread of its own and never runs user code; task bodies and actor
//!   methods run on a worker pool (`[execution] workers`, default one per
//!   core), async bodies ([`Party::task_async`], [`Actor::call_async`]) on
//!   an async executor beside it. The driver runs in any tokio application
//!   (`#[tokio::main]`) or, in a plain `fn main`, inside [`block_on`].
//!   Nothing of actix shows.
//! * A party frees its copy of an object when the last clone of its
//!   [`FedObject`] drops (every party drops at the same program point).
//! * Observability: per-peer metrics through the `metrics` crate (listed
//!   in [`metrics`]), served for Prometheus with
//!   `[observability] prometheus = "127.0.0.1:9464"`; large transfers
//!   report their progress in the log and through [`Fed::progress`].
//!
//! Design: `rfcs/0002-programming-model-and-runtime.md`.

mod args;
pub mod config;
pub mod dev;
mod error;
mod fed;
mod object;
pub mod observability;
mod sim;
mod value;

use std::future::Future;
use std::sync::Arc;

pub use args::FedArgs;
pub use bytes::Bytes;
pub use config::{
    CommConfig, Config, ConfigError, ExecutionConfig, ObservabilityConfig, PartyOverride,
    RetryConfig, TlsPaths,
};
pub use error::Error;
pub use fed::{Actor, Fed, Party, ProgressReceiver};
pub use object::{FedObject, Returns};
pub use sim::{SimNetwork, Simulation};
pub use value::Value;
pub use xsilo_runtime::metrics;
pub use xsilo_runtime::{BoxFuture, Counts, RuntimeError, Stats, TaskError};
pub use xsilo_transport::{Congestion, Direction, TransferProgress, TransportError};
pub use xsilo_wire::{JobName, ObjectId, PartyName};

/// Runs `fut`, a driver program, to completion on a new single-threaded
/// runtime, for a plain `fn main`. A party started inside it ([`init`])
/// keeps its control plane (actors, QUIC I/O) on this same thread, so that
/// the driver's calls and `get`s cost no thread hop; the driver must
/// therefore only await there, and leave computing to tasks (task bodies
/// and actor methods always run on the party's worker pool). Inside any
/// other tokio runtime (`#[tokio::main]`, a runtime of the application's
/// own) a party gets a control thread of its own instead. Tasks may be
/// spawned with `tokio::task::spawn_local` inside `fut`.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    actix_rt::System::new().block_on(fut)
}

/// What [`init_with`] takes besides the configuration.
#[derive(Clone)]
#[non_exhaustive]
pub struct InitOptions {
    /// Called once on unintended shutdown (a sending failure with
    /// `exit_on_sending_failure`, or SIGINT/SIGTERM), with the last sending
    /// error if there was one (promise E5); never twice. A second signal
    /// during the shutdown exits at once, before it if it has not run yet.
    /// Default none.
    pub sending_failure_handler: Option<xsilo_runtime::FailureHandler>,
    /// Treat SIGINT and SIGTERM as unintended shutdown: peers are told, the
    /// handler runs, the process exits with status 128 + the signal number
    /// (130, 143) (promise E9). Default true.
    pub handle_signals: bool,
    /// Exit the process after an unintended shutdown: status 1 after a
    /// sending failure, 128 + the signal number after a signal. Default true.
    pub exit_process: bool,
    /// With `exit_process`: how to exit, instead of `std::process::exit`
    /// (for a language binding whose interpreter must run its own exit
    /// hooks). Called once with the status; it must return at once.
    /// Default none.
    pub exit_hook: Option<xsilo_runtime::ExitHook>,
    /// The TLS identity to use instead of the files of the configuration's
    /// `[tls]` section (for language bindings and tests that make their
    /// certificates in memory). Default none.
    pub tls: Option<xsilo_transport::TlsIdentity>,
    /// Run on each worker thread as it starts and stops (for language
    /// bindings that keep per-thread state). Default none.
    pub worker_thread: Option<xsilo_runtime::WorkerThreadHooks>,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            sending_failure_handler: None,
            handle_signals: true,
            exit_process: true,
            exit_hook: None,
            tls: None,
            worker_thread: None,
        }
    }
}

impl InitOptions {
    /// Sets the sending-failure handler.
    pub fn on_sending_failure(
        mut self,
        handler: impl Fn(Option<&TransportError>) + Send + Sync + 'static,
    ) -> Self {
        self.sending_failure_handler = Some(Arc::new(handler));
        self
    }
}

impl std::fmt::Debug for InitOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitOptions")
            .field(
                "sending_failure_handler",
                &self.sending_failure_handler.is_some(),
            )
            .field("handle_signals", &self.handle_signals)
            .field("exit_process", &self.exit_process)
            .field("exit_hook", &self.exit_hook.is_some())
            .field("tls", &self.tls.is_some())
            .field("worker_thread", &self.worker_thread.is_some())
            .finish()
    }
}

/// Starts party `party` of the job described by `config`: binds its QUIC
/// endpoint with its TLS identity, starts its actors, and, if
/// `barrier_on_initializing` is set, waits (bounded) until every party is
/// reachable (promise C6). Call it inside [`block_on`]. SIGINT and SIGTERM
/// become an unintended shutdown; see [`init_with`] for a sending-failure
/// handler.
pub async fn init(config: Config, party: &str) -> Result<Fed, Error> {
    init_with(config, party, InitOptions::default()).await
}

/// [`init`] with options: a sending-failure handler, signal handling.
pub async fn init_with(config: Config, party: &str, init: InitOptions) -> Result<Fed, Error> {
    let party: PartyName = party.parse().map_err(|e: xsilo_wire::NameError| {
        Error::Config(ConfigError::Invalid {
            key: "party".into(),
            reason: e.to_string(),
        })
    })?;
    config.check_party(&party)?;
    if let Some(addr) = config.observability.prometheus {
        observability::serve_prometheus(addr)?;
    }
    let tls = match init.tls {
        Some(tls) => tls,
        None => config.tls_identity()?,
    };
    let transport_config = config.transport_config_for(&party);
    let mut options = config
        .comm
        .runtime_options(&transport_config, &config.execution);
    options.failure_handler = init.sending_failure_handler;
    options.handle_signals = init.handle_signals;
    options.exit_process = init.exit_process;
    options.exit_hook = init.exit_hook;
    options.worker_thread = init.worker_thread;
    let (progress_tx, progress_rx) = tokio::sync::mpsc::channel(64);
    options.progress = Some(progress_tx);
    let (job, listen, book) = (
        config.job.clone(),
        config.listen_addr(&party)?,
        config.address_book(&party),
    );
    // The listen port must be free for TCP as well as for QUIC's UDP: the
    // TLS-over-TCP transport for networks that drop UDP is to take the same
    // port, and RayFed's users (gRPC, over TCP) expect a port another
    // program holds to fail `init`. Checked only: nothing listens on TCP yet.
    if let Err(error) = std::net::TcpListener::bind(listen) {
        if error.kind() == std::io::ErrorKind::AddrInUse {
            return Err(Error::Setup(xsilo_transport::SetupError::Bind {
                addr: listen,
                error,
            }));
        }
    }
    let me = party.clone();
    let rt = xsilo_runtime::Runtime::launch(
        move || async move {
            // On the control thread: the endpoint lives on its runtime.
            let transport = xsilo_transport::QuicTransport::bind(
                job,
                me,
                listen,
                book,
                &tls,
                transport_config,
            )?;
            Ok::<_, Error>(Arc::new(transport) as Arc<dyn xsilo_transport::Transport>)
        },
        options,
    )
    .await?;
    if config.comm.barrier_on_initializing {
        if let Err(e) = rt.barrier(config.comm.barrier_timeout).await {
            let e = match e {
                xsilo_runtime::RuntimeError::Unreached { peers, reason } => {
                    let book = config.address_book(&party);
                    Error::Unreached {
                        peers: peers
                            .into_iter()
                            .map(|p| {
                                let addr =
                                    book.get(&p).map(|a| a.addr.to_string()).unwrap_or_default();
                                (p, addr)
                            })
                            .collect(),
                        party: party.clone(),
                        reason,
                    }
                }
                other => Error::Runtime(other),
            };
            // Tell whoever we can reach (an abort frame on our own
            // connections, the reason in the close of theirs), so that
            // peers learn why instead of finding us gone.
            rt.abort(format!("party '{party}' could not start: {e}"));
            let _ = rt.shutdown().await;
            return Err(e);
        }
    }
    tracing::info!(%party, job = %config.job, "party started");
    Ok(Fed::new(rt, Some(progress_rx)))
}
