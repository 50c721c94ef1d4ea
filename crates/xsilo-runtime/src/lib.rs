//! # xsilo-runtime: the control plane of one party
//!
//! Inside each party the runtime is a few actix actors exchanging typed
//! messages, around two plain state machines that hold the rules:
//!
//! ```text
//!  Fed / Party / Actor (facade) ──Submit, Get, Release──▶ Objects ──Report──┐
//!                               ──Shutdown, Barrier────▶ Coordinator ◀──────┤
//!  Transport events ──router (in the Coordinator)──▶ Objects | Link[p] | Lifecycle
//!  Coordinator ──SendObject, SendControl, Drain, Probe──▶ Link[p] ──Report──┘
//!                                                            └──▶ Transport
//! ```
//!
//! * [`rules::object_table::ObjectTable`]: one table for local and remote
//!   objects (owner, fingerprint, state, waiters, push plan, handles), the
//!   actor queues, the divergence checks and the lifetime rule (promises
//!   M1-M8, E1-E3, L1). Driven by `Objects` (`actors/objects.rs`).
//! * [`rules::lifecycle::Lifecycle`]: intended shutdown and abort, time
//!   passed in (promises E5-E9, E11). Driven by the coordinator.
//! * [`rules::peer::PeerState`]: everything this party knows of one peer
//!   and owes it: sends in flight, up and down, the probe, the barrier's
//!   dial, statistics. Driven by that peer's `Link`.
//! * The coordinator is the only actor that holds the others' addresses; it
//!   creates them wired, before any handles a message. The others report to
//!   it through one type. Every internal message is in `messages.rs`.
//!
//! The facade crate `xsilo` builds the typed user API on [`Runtime`].
//! `rfcs/0002-programming-model-and-runtime.md` explains the design.

mod actors;
mod call;
mod errors;
mod memory;
mod messages;
pub mod metrics;
mod options;
pub mod rules;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;
use xsilo_transport::Transport;
use xsilo_wire::payload::Payload;
use xsilo_wire::{JobName, ObjectId, PartyName};

use actors::coordinator::Coordinator;
use actors::objects::Objects;
pub use call::{
    AsyncMethodFn, AsyncTaskFn, BoxFuture, Call, CtorFn, MethodFn, ObjRef, TaskFn, Work,
};
pub use errors::{RuntimeError, TaskError};
pub use options::{
    default_workers, ExitHook, FailureHandler, ProgressSink, RuntimeOptions, WorkerThreadHooks,
};
pub use stats::{Counts, Stats};

/// The running control plane of one party: a handle the driver's code
/// uses from any thread or executor. Cheap to clone. When the last clone is
/// dropped, a party started with [`Runtime::launch`] shuts down (if it has
/// not) and its control thread ends.
#[derive(Clone)]
pub struct Runtime {
    party: PartyName,
    job: JobName,
    peers: Vec<PartyName>,
    objects: Addr<Objects>,
    coordinator: Addr<Coordinator>,
    _alive: Arc<KeepAlive>,
    stopped: Option<Stopped>,
}

/// Set when the control thread that [`Runtime::launch`] started has ended:
/// its actors, its transport and the transport's sockets are gone, so the
/// same listen address can be bound again at once (a language binding that
/// runs one job after another in a process waits for it).
#[derive(Clone, Default)]
pub struct Stopped(Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

impl std::fmt::Debug for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Stopped").field(&self.is_set()).finish()
    }
}

impl Stopped {
    fn set(&self) {
        let (done, cv) = &*self.0;
        *done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        cv.notify_all();
    }

    fn is_set(&self) -> bool {
        *self
            .0
             .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits, at most `bound`, for the control thread to end; whether it
    /// has. Drop every [`Runtime`] clone first: the thread ends after the
    /// last one.
    pub fn wait(&self, bound: Duration) -> bool {
        let (done, cv) = &*self.0;
        let guard = done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (guard, _) = cv
            .wait_timeout_while(guard, bound, |d| !*d)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard
    }
}

/// Sets its [`Stopped`] when dropped: the last thing the control thread
/// does, panicking or not.
struct SetOnDrop(Stopped);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// Dropped with the last [`Runtime`] clone: tells the control thread.
struct KeepAlive(Option<oneshot::Sender<()>>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("party", &self.party)
            .field("job", &self.job)
            .finish()
    }
}

/// Tells the runtime that the driver dropped its last handle on an object
/// or an actor (promise L1). Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct Releaser(Addr<Objects>);

impl std::fmt::Debug for Releaser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Releaser")
    }
}

impl Releaser {
    /// The last handle on object `id` is gone.
    pub fn object(&self, id: ObjectId) {
        self.0.do_send(messages::Release(id));
    }

    /// The last handle on actor `id` is gone.
    pub fn actor(&self, id: ObjectId) {
        self.0.do_send(messages::ReleaseActor(id));
    }
}

impl Runtime {
    /// Starts a party's control plane (the actors and the transport's I/O)
    /// from any executor. Inside an actix System (what `xsilo::block_on`
    /// runs) it starts on that System's thread, beside the driver, which
    /// only awaits there: a call or a `get` then costs no thread hop.
    /// Anywhere else (a `#[tokio::main]` application, a runtime of the
    /// caller's own) it starts a thread of its own. `make` runs on the
    /// control plane's thread and builds the transport there (a QUIC
    /// endpoint lives on the runtime that made it). User code never runs on
    /// the control plane in either case: bodies run on the worker pool
    /// (`RuntimeOptions::workers`) and the async executor beside it.
    pub async fn launch<F, Fut, E>(make: F, options: RuntimeOptions) -> Result<Self, E>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Arc<dyn Transport>, E>> + 'static,
        E: From<RuntimeError> + Send + 'static,
    {
        if actix_rt::System::try_current().is_some() {
            let transport = make().await?;
            return Self::start(transport, options).map_err(E::from);
        }
        let (tx, rx) = oneshot::channel::<Result<Self, E>>();
        let stopped = Stopped::default();
        let stopped_here = stopped.clone();
        let thread = std::thread::Builder::new()
            .name("xsilo-control".into())
            .spawn(move || {
                let _stopped = SetOnDrop(stopped_here);
                let system = actix_rt::System::new();
                system.block_on(async move {
                    let transport = match make().await {
                        Ok(t) => t,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let (stop_tx, stop_rx) = oneshot::channel();
                    match Self::start_with(transport, options, stop_tx) {
                        Ok(mut rt) => {
                            rt.stopped = Some(stopped);
                            let coordinator = rt.coordinator.clone();
                            if tx.send(Ok(rt)).is_err() {
                                return;
                            }
                            // Until the last handle is gone; then finish
                            // the job if the driver did not.
                            let _ = stop_rx.await;
                            let (done_tx, done_rx) = oneshot::channel();
                            coordinator.do_send(messages::Shutdown(done_tx));
                            let _ = done_rx.await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(E::from(e)));
                        }
                    }
                });
            });
        if let Err(e) = thread {
            return Err(E::from(RuntimeError::Setup(format!(
                "cannot start the control thread: {e}"
            ))));
        }
        rx.await
            .unwrap_or(Err(E::from(RuntimeError::ActorGone("control thread"))))
    }

    /// Starts the actors on the current actix System, over `transport`:
    /// the System's thread is the control thread, and whatever else runs on
    /// it must only await (bodies run on the worker pool regardless).
    pub fn start(
        transport: Arc<dyn Transport>,
        options: RuntimeOptions,
    ) -> Result<Self, RuntimeError> {
        let (stop, _) = oneshot::channel();
        Self::start_with(transport, options, stop)
    }

    fn start_with(
        transport: Arc<dyn Transport>,
        options: RuntimeOptions,
        stop: oneshot::Sender<()>,
    ) -> Result<Self, RuntimeError> {
        if actix_rt::System::try_current().is_none()
            || tokio::runtime::Handle::try_current().is_err()
        {
            return Err(RuntimeError::NoSystem);
        }
        let party = transport.party().clone();
        let job = transport.job().clone();
        let mut peers = transport.peers();
        peers.sort();
        let events = transport
            .take_events()
            .ok_or(RuntimeError::ActorGone("transport events (already taken)"))?;
        let pool = actors::pool::Pool::new(&party, options.workers, options.worker_thread.clone())?;
        let handle_signals = options.handle_signals;
        let (coordinator, objects) = Coordinator::launch(transport, events, pool, options);
        let objects = objects.ok_or(RuntimeError::ActorGone("objects"))?;
        if handle_signals {
            actors::coordinator::watch_signals(coordinator.clone());
        }
        tracing::debug!(%party, %job, "runtime started");
        Ok(Self {
            party,
            job,
            peers,
            objects,
            coordinator,
            _alive: Arc::new(KeepAlive(Some(stop))),
            stopped: None,
        })
    }

    /// What tells that the control thread [`Runtime::launch`] started has
    /// ended (none when the runtime runs on the caller's actix System).
    pub fn stopped(&self) -> Option<Stopped> {
        self.stopped.clone()
    }

    /// This party.
    pub fn party(&self) -> &PartyName {
        &self.party
    }

    /// The job.
    pub fn job(&self) -> &JobName {
        &self.job
    }

    /// The other parties, sorted.
    pub fn peers(&self) -> &[PartyName] {
        &self.peers
    }

    /// Submits a call, in program order. Returns at once.
    pub fn submit(&self, call: Call) {
        self.objects.do_send(messages::Submit(call));
    }

    /// What the facade's handles use to report that they are gone.
    pub fn releaser(&self) -> Releaser {
        Releaser(self.objects.clone())
    }

    /// The encoded values of `refs`, in order.
    pub async fn get(&self, refs: Vec<ObjRef>) -> Result<Vec<Payload>, RuntimeError> {
        let (reply, rx) = oneshot::channel();
        self.objects.do_send(messages::Get { refs, reply });
        rx.await.unwrap_or(Err(RuntimeError::ActorGone("objects")))
    }

    /// Waits, at most `bound`, until every peer is known to be up (promise
    /// C6): we connected to it, or it connected to us (a fast peer may
    /// finish and leave before our own dial would reach it).
    pub async fn barrier(&self, bound: Duration) -> Result<(), RuntimeError> {
        let (reply, rx) = oneshot::channel();
        self.coordinator.do_send(messages::Barrier { bound, reply });
        rx.await
            .unwrap_or(Err(RuntimeError::ActorGone("coordinator")))
    }

    /// Aborts the job from this party (for example when start-up failed):
    /// every wait fails, peers are told, and the endpoint stays open a short
    /// while so that peers dialling us get our answer. Await [`shutdown`]
    /// (which then returns the abort error) to wait for it.
    ///
    /// [`shutdown`]: Runtime::shutdown
    pub fn abort(&self, reason: impl Into<String>) {
        self.coordinator.do_send(messages::AbortJob(reason.into()));
    }

    /// Intended shutdown (promise E8): waits until every send is
    /// acknowledged, tells the peers where the driver finished, says
    /// goodbye, closes. Idempotent; concurrent callers all get the one
    /// result.
    pub async fn shutdown(&self) -> Result<(), RuntimeError> {
        let (tx, rx) = oneshot::channel();
        self.coordinator.do_send(messages::Shutdown(tx));
        rx.await
            .unwrap_or(Err(RuntimeError::ActorGone("coordinator")))
    }

    /// How many times the shutdown sequence has run in this party: 0 before
    /// the first `shutdown`, then 1 however often it is called.
    pub async fn shutdowns_run(&self) -> u32 {
        self.coordinator
            .send(messages::ShutdownsRun)
            .await
            .unwrap_or_default()
    }

    /// Traffic statistics of this party, and what it holds.
    pub async fn stats(&self) -> Stats {
        let (tx, rx) = oneshot::channel();
        self.coordinator.do_send(messages::GatherStats(tx));
        rx.await.unwrap_or_default()
    }
}
