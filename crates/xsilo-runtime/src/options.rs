//! The runtime's options.

use std::sync::Arc;
use std::time::Duration;

/// The user's sending-failure handler (promise E5): called exactly once on
/// unintended shutdown, with the last sending error if there was one.
pub type FailureHandler = Arc<dyn Fn(Option<&xsilo_transport::TransportError>) + Send + Sync>;

/// How the process exits after an unintended shutdown, instead of
/// `std::process::exit` ([`RuntimeOptions::exit_hook`]): called once, on
/// the control thread, with the exit status, after the sending-failure
/// handler ran. For a language binding whose interpreter must exit itself
/// (so that its exit hooks run and its buffers flush). It must return at
/// once: hand the exit to another thread.
pub type ExitHook = Arc<dyn Fn(i32) + Send + Sync>;

/// Where transfer progress goes ([`RuntimeOptions::progress`]).
pub type ProgressSink = tokio::sync::mpsc::Sender<xsilo_transport::TransferProgress>;

/// Code run on each worker thread (blocking and executor threads alike)
/// when it starts, before any body, and when it stops, after its last
/// ([`RuntimeOptions::worker_thread`]). For a language binding that keeps
/// per-thread state for the life of the thread, such as a Python thread
/// state, instead of making and freeing it around every body.
#[derive(Clone)]
pub struct WorkerThreadHooks {
    /// Run first on every new worker thread.
    pub on_start: Arc<dyn Fn() + Send + Sync>,
    /// Run last on every worker thread that stops (idle too long, or the
    /// pool shut down).
    pub on_stop: Arc<dyn Fn() + Send + Sync>,
}

/// Options of the runtime.
#[derive(Clone)]
#[non_exhaustive]
pub struct RuntimeOptions {
    /// Send error messages and causes with RemoteErrors (promise E4).
    /// Default false: only the kind and origin cross.
    pub expose_error_trace: bool,
    /// Bound on waiting for the sends in flight at shutdown. Default 65 s:
    /// the transport's default send timeout plus a margin.
    pub drain_timeout: Duration,
    /// A sending failure is an unintended shutdown (promise E6): peers are
    /// told, the handler runs, calls fail, and, with `exit_process`, the
    /// process exits with status 1. Default false: the job is aborted (every
    /// party's waits fail with the reason) but the process goes on.
    pub exit_on_sending_failure: bool,
    /// After an error was sent or received, shutdown still waits for queued
    /// data (promise E7). Default false: it waits at most 2 s.
    pub continue_waiting_for_data_sending_on_error: bool,
    /// Run on unintended shutdown, exactly once (promise E5).
    pub failure_handler: Option<FailureHandler>,
    /// How many task bodies and actor methods run at once, each on a worker
    /// thread of its own, never on the control thread (promises X1, X2);
    /// async bodies run on as many executor threads. Default: the cores
    /// available to the process.
    pub workers: usize,
    /// SIGINT and SIGTERM are unintended shutdowns (promise E9). Default
    /// false; `xsilo::init` turns it on. Only one runtime per process should.
    pub handle_signals: bool,
    /// How long an intended shutdown waits, after its sends are
    /// acknowledged, for every peer's driver to finish too, so that drivers
    /// that ended at different places are reported as diverged at both ends
    /// (promise M8). A peer still busy after this is not waited for (it
    /// still checks our position against its own). Not waited at all once
    /// an error was seen. Default 10 s.
    pub finish_wait: Duration,
    /// Exit the process (status 1) after an unintended shutdown. Default
    /// false; `xsilo::init` turns it on.
    pub exit_process: bool,
    /// With `exit_process`: exit through this hook instead of
    /// `std::process::exit`. Default none.
    pub exit_hook: Option<ExitHook>,
    /// Progress reports of large transfers (the transport's
    /// `TransferProgress`, at most eight per object of 32 MiB or more) are
    /// logged at INFO and, when this is set, offered to this channel; a
    /// report that finds it full is dropped (the control plane never waits
    /// for its reader, and no user code runs there). Default none.
    pub progress: Option<ProgressSink>,
    /// How often the sampled gauges of [`crate::metrics`] (round-trip
    /// times, live objects and bytes) are set. Default none: not sampled
    /// (counters are kept regardless); `xsilo::init` sets 1 s.
    pub metrics_interval: Option<Duration>,
    /// Bytes of values one peer may send before this party's driver made
    /// them (a peer whose driver runs ahead); more wait unanswered in the
    /// transport, whose budget then holds the sender (promise S1). At most
    /// `MAX_EARLY_OBJECTS` objects per peer in any case. Default 500 MiB;
    /// `xsilo::init` sets the per-peer inbound budget.
    pub early_bytes_per_peer: u64,
    /// Run on each worker thread as it starts and stops. Default none.
    pub worker_thread: Option<WorkerThreadHooks>,
}

impl std::fmt::Debug for RuntimeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeOptions")
            .field("expose_error_trace", &self.expose_error_trace)
            .field("drain_timeout", &self.drain_timeout)
            .field("exit_on_sending_failure", &self.exit_on_sending_failure)
            .field(
                "continue_waiting_for_data_sending_on_error",
                &self.continue_waiting_for_data_sending_on_error,
            )
            .field("failure_handler", &self.failure_handler.is_some())
            .field("workers", &self.workers)
            .field("handle_signals", &self.handle_signals)
            .field("finish_wait", &self.finish_wait)
            .field("exit_process", &self.exit_process)
            .field("exit_hook", &self.exit_hook.is_some())
            .field("progress", &self.progress.is_some())
            .field("metrics_interval", &self.metrics_interval)
            .field("early_bytes_per_peer", &self.early_bytes_per_peer)
            .field("worker_thread", &self.worker_thread.is_some())
            .finish()
    }
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            expose_error_trace: false,
            drain_timeout: Duration::from_secs(65),
            exit_on_sending_failure: false,
            continue_waiting_for_data_sending_on_error: false,
            failure_handler: None,
            workers: default_workers(),
            handle_signals: false,
            finish_wait: Duration::from_secs(10),
            exit_process: false,
            exit_hook: None,
            progress: None,
            metrics_interval: None,
            early_bytes_per_peer: 500 << 20,
            worker_thread: None,
        }
    }
}

/// The cores available to this process (1 if unknown).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}
