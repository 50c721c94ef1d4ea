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

/// Options of the runtime. Where a setting is one of the configuration's,
/// its meaning and default are documented there, in `xsilo`'s
/// `CommConfig`, `ExecutionConfig` and `InitOptions`; this crate's own
/// default is given where it differs.
#[derive(Clone)]
#[non_exhaustive]
pub struct RuntimeOptions {
    /// See `xsilo::CommConfig::expose_error_trace` (promise E4).
    pub expose_error_trace: bool,
    /// Bound on flushing and draining the sends in flight at an intended
    /// shutdown. Derived, see [`RuntimeOptions::for_transport`]: 65 s by
    /// default.
    pub drain_timeout: Duration,
    /// See `xsilo::CommConfig::exit_on_sending_failure` (promise E6); the
    /// process exits only with `exit_process`.
    pub exit_on_sending_failure: bool,
    /// See `xsilo::CommConfig::continue_waiting_for_data_sending_on_error`
    /// (promise E7).
    pub continue_waiting_for_data_sending_on_error: bool,
    /// See `xsilo::InitOptions::sending_failure_handler` (promise E5).
    pub failure_handler: Option<FailureHandler>,
    /// See `xsilo::ExecutionConfig::workers` (promises X1, X2). Default:
    /// the cores available to the process.
    pub workers: usize,
    /// See `xsilo::InitOptions::handle_signals` (promise E9). Default
    /// false. Only one runtime per process should.
    pub handle_signals: bool,
    /// How long an intended shutdown waits, after its sends are
    /// acknowledged, for every peer's driver to finish too, so that drivers
    /// that ended at different places are reported as diverged at both ends
    /// (promise M8). A peer still busy after this is not waited for (it
    /// still checks our position against its own). Not waited at all once
    /// an error was seen. Default 10 s.
    pub finish_wait: Duration,
    /// See `xsilo::InitOptions::exit_process`. Default false.
    pub exit_process: bool,
    /// See `xsilo::InitOptions::exit_hook`. Default none.
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
    /// `MAX_EARLY_OBJECTS` objects per peer in any case. Derived, see
    /// [`RuntimeOptions::for_transport`]: 500 MiB by default.
    pub early_bytes_per_peer: u64,
    /// See `xsilo::InitOptions::worker_thread`. Default none.
    pub worker_thread: Option<WorkerThreadHooks>,
}

/// How much longer than the send timeout an intended shutdown's flush and
/// drain may take: a send started just before the shutdown may use its
/// whole `send_timeout`.
const DRAIN_MARGIN: Duration = Duration::from_secs(5);

impl RuntimeOptions {
    /// The default options for a party whose transport has these settings,
    /// with what derives from them derived (the one place it is):
    /// `drain_timeout` is the send timeout plus 5 s, and
    /// `early_bytes_per_peer` the per-peer inbound budget (by default
    /// `max_message_size`), so that values a peer's driver sends ahead are
    /// held within what the transport admits from it.
    pub fn for_transport(transport: &xsilo_transport::TransportConfig) -> Self {
        Self {
            expose_error_trace: false,
            drain_timeout: transport.send_timeout.saturating_add(DRAIN_MARGIN),
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
            early_bytes_per_peer: transport.inbound_limits().1,
            worker_thread: None,
        }
    }
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
    /// [`RuntimeOptions::for_transport`] with the transport's defaults.
    fn default() -> Self {
        Self::for_transport(&xsilo_transport::TransportConfig::default())
    }
}

/// The cores available to this process (1 if unknown).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}
