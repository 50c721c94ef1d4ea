//! # xsilo-runtime: the actors of one party
//!
//! Inside each party the runtime is four actix actors exchanging typed
//! messages, each owning its state alone:
//!
//! ```text
//!   user API ──Submit/Get──▶ Driver ──SendObject/SendControl──▶ SenderProxy ──▶ Transport
//!                              │  ▲                                   │
//!                        Await │  │ values                  SendFailed│
//!                              ▼  │                                   ▼
//!   Transport events ──▶ ReceiverProxy ──Abort──────────────▶ CleanupSupervisor
//! ```
//!
//! * [`Driver`]: the party's view of every object (ids assigned in program
//!   order by the user API), local execution of tasks and actor calls, and
//!   the push rules: a value goes once to each party that consumes it.
//! * [`SenderProxy`]: sends through the [`Transport`] and counts what is in
//!   flight, so that shutdown can wait for every acknowledgement.
//! * [`ReceiverProxy`]: the mailbox of pushed objects, keyed by (source,
//!   object id), with the waiters parked on it; checks call-site
//!   fingerprints (MISSION M8).
//! * [`CleanupSupervisor`]: shutdown and abort as a state machine; every
//!   trigger is a message, so "exactly once" needs no lock.
//!
//! The facade crate `xsilo` builds the typed user API on [`Runtime`].
//! `rfcs/0002-programming-model-and-runtime.md` explains the design.

mod call;
mod driver;
mod error;
mod receiver;
mod sender;
mod stats;
mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use tokio_stream::wrappers::UnboundedReceiverStream;
use xsilo_transport::Transport;
use xsilo_wire::{JobName, PartyName};

pub use call::{Call, CtorFn, MethodFn, ObjRef, TaskFn, Work};
pub use driver::Driver;
pub use error::{RuntimeError, TaskError};
pub use receiver::ReceiverProxy;
pub use sender::SenderProxy;
pub use stats::{Counts, Stats};
pub use supervisor::CleanupSupervisor;

/// The user's sending-failure handler (MISSION E5): called exactly once on
/// unintended shutdown, with the last sending error if there was one.
pub type FailureHandler = Arc<dyn Fn(Option<&xsilo_transport::TransportError>) + Send + Sync>;

/// Options of the runtime.
#[derive(Clone)]
#[non_exhaustive]
pub struct RuntimeOptions {
    /// Send error messages and causes with RemoteErrors (MISSION E4).
    /// Default false: only the kind and origin cross.
    pub expose_error_trace: bool,
    /// Bound on waiting for the sends in flight at shutdown. Default 65 s:
    /// the transport's default send timeout plus a margin.
    pub drain_timeout: Duration,
    /// A sending failure is an unintended shutdown (MISSION E6): peers are
    /// told, the handler runs, calls fail, and, with `exit_process`, the
    /// process exits with status 1. Default false: the job is aborted (every
    /// party's waits fail with the reason) but the process goes on.
    pub exit_on_sending_failure: bool,
    /// After an error was sent or received, shutdown still waits for queued
    /// data (MISSION E7). Default false: it waits at most 2 s.
    pub continue_waiting_for_data_sending_on_error: bool,
    /// Run on unintended shutdown, exactly once (MISSION E5).
    pub failure_handler: Option<FailureHandler>,
    /// SIGINT and SIGTERM are unintended shutdowns (MISSION E9). Default
    /// false; `xsilo::init` turns it on. Only one runtime per process should.
    pub handle_signals: bool,
    /// Exit the process (status 1) after an unintended shutdown. Default
    /// false; `xsilo::init` turns it on.
    pub exit_process: bool,
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
            .field("handle_signals", &self.handle_signals)
            .field("exit_process", &self.exit_process)
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
            handle_signals: false,
            exit_process: false,
        }
    }
}

/// The running actors of one party. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    party: PartyName,
    job: JobName,
    peers: Vec<PartyName>,
    transport: Arc<dyn Transport>,
    driver: Addr<Driver>,
    sender: Addr<SenderProxy>,
    receiver: Addr<ReceiverProxy>,
    supervisor: Addr<CleanupSupervisor>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("party", &self.party)
            .field("job", &self.job)
            .finish()
    }
}

impl Runtime {
    /// Starts the actors on the current actix System, over `transport`.
    pub fn start(
        transport: Arc<dyn Transport>,
        options: RuntimeOptions,
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
        let receiver = {
            let party = party.clone();
            ReceiverProxy::create(move |ctx| {
                ctx.add_stream(UnboundedReceiverStream::new(events));
                ReceiverProxy::new(party)
            })
        };
        let sender = SenderProxy::new(transport.clone()).start();
        let driver = Driver::new(
            party.clone(),
            peers.clone(),
            sender.clone(),
            receiver.clone(),
            options.expose_error_trace,
        )
        .start();
        let supervisor = CleanupSupervisor::new(
            party.clone(),
            peers.clone(),
            transport.clone(),
            driver.clone(),
            sender.clone(),
            receiver.clone(),
            options.clone(),
        )
        .start();
        if options.handle_signals {
            supervisor::watch_signals(supervisor.clone());
        }
        receiver.do_send(receiver::SetSupervisor(supervisor.clone(), sender.clone()));
        sender.do_send(sender::SetSupervisor(supervisor.clone()));
        tracing::debug!(%party, %job, "runtime started");
        Ok(Self {
            party,
            job,
            peers,
            transport,
            driver,
            sender,
            receiver,
            supervisor,
        })
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
        self.driver.do_send(driver::Submit(call));
    }

    /// The encoded values of `refs`, in order.
    pub async fn get(&self, refs: Vec<ObjRef>) -> Result<Vec<Bytes>, RuntimeError> {
        self.driver
            .send(driver::Get(refs))
            .await
            .unwrap_or(Err(RuntimeError::ActorGone("driver")))
    }

    /// Waits, at most `bound`, until every peer is known to be up (MISSION
    /// C6): we connected to it, or it connected to us (a fast peer may
    /// finish and leave before our own dial would reach it).
    pub async fn barrier(&self, bound: Duration) -> Result<(), RuntimeError> {
        let waits: Vec<_> = self
            .peers
            .iter()
            .map(|p| {
                // The dial runs to its end on its own even when the peer's
                // own connection proves it up first: a dial cancelled in
                // its handshake would only make noise at the peer.
                let connect = tokio::spawn(self.transport.connect(p));
                let seen = self.receiver.send(receiver::WaitSeen(p.clone()));
                async move {
                    tokio::select! {
                        r = connect => match r {
                            Ok(r) => r.map_err(RuntimeError::from),
                            Err(_) => Err(RuntimeError::ActorGone("barrier dial")),
                        },
                        _ = seen => Ok(()),
                    }
                }
            })
            .collect();
        let all = async {
            for w in waits {
                w.await?;
            }
            Ok::<(), RuntimeError>(())
        };
        match tokio::time::timeout(bound, all).await {
            Ok(r) => r,
            Err(_) => Err(RuntimeError::Timeout {
                what: format!(
                    "the barrier (reaching {})",
                    self.peers
                        .iter()
                        .map(PartyName::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                after: bound,
            }),
        }
    }

    /// Aborts the job from this party (for example when start-up failed):
    /// every wait fails, peers are told, and the endpoint stays open a short
    /// while so that peers dialling us get our answer. Await [`shutdown`]
    /// (which then returns the abort error) to wait for it.
    ///
    /// [`shutdown`]: Runtime::shutdown
    pub fn abort(&self, reason: impl Into<String>) {
        self.supervisor
            .do_send(supervisor::Abort::local(reason.into()));
    }

    /// Intended shutdown (MISSION E8): waits until every send is
    /// acknowledged, says goodbye, closes. Idempotent; concurrent callers all
    /// get the one result.
    pub async fn shutdown(&self) -> Result<(), RuntimeError> {
        self.supervisor
            .send(supervisor::Shutdown)
            .await
            .unwrap_or(Err(RuntimeError::ActorGone("supervisor")))
    }

    /// Traffic statistics of this party.
    pub async fn stats(&self) -> Stats {
        let sent = self
            .sender
            .send(sender::SentStats)
            .await
            .unwrap_or_default();
        let received = self
            .receiver
            .send(receiver::ReceivedStats)
            .await
            .unwrap_or_default();
        Stats {
            sent: sent.into_iter().collect(),
            received: received.into_iter().collect(),
        }
    }
}
