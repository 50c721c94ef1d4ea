//! # xsilo-runtime: the control plane of one party
//!
//! Inside each party the runtime is a few actix actors exchanging typed
//! messages, around two plain state machines that hold the rules:
//!
//! ```text
//!  Fed / Party / Actor (facade) ──Submit, Get, Release──▶ Objects ──Report──┐
//!                               ──Shutdown, Barrier────▶ Supervisor ◀───────┤
//!  Transport events ──router (in the Supervisor)──▶ Objects | Link[p] | Lifecycle
//!  Supervisor ──SendObject, SendControl, Drain, Probe──▶ Link[p] ──Report──┘
//!                                                           └──▶ Transport
//! ```
//!
//! * [`rules::objects::ObjectTable`]: one table for local and remote objects
//!   (owner, fingerprint, state, waiters, push plan, handles), the actor
//!   queues, the divergence checks and the lifetime rule (MISSION M1-M8,
//!   E1-E3, L1). Driven by `Objects`.
//! * [`rules::lifecycle::Lifecycle`]: intended shutdown and abort, time
//!   passed in (MISSION E5-E9, E11). Driven by the supervisor.
//! * One `Link` per peer owns everything about that peer: sends in flight,
//!   up and down, the probe, statistics.
//! * The supervisor is the only actor that holds the others' addresses; it
//!   creates them wired, before any handles a message. The others report to
//!   it through one type. Every internal message is in `messages.rs`.
//!
//! The facade crate `xsilo` builds the typed user API on [`Runtime`].
//! `rfcs/0002-programming-model-and-runtime.md` explains the design.

mod actors;
mod call;
mod errors;
mod messages;
mod options;
pub mod rules;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;
use xsilo_transport::Transport;
use xsilo_wire::{JobName, ObjectId, PartyName};

use actors::objects::Objects;
use actors::supervisor::Supervisor;
pub use call::{Call, CtorFn, MethodFn, ObjRef, TaskFn, Work};
pub use errors::{RuntimeError, TaskError};
pub use options::{FailureHandler, RuntimeOptions};
pub use stats::{Counts, Stats};

/// The running actors of one party. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    party: PartyName,
    job: JobName,
    peers: Vec<PartyName>,
    objects: Addr<Objects>,
    supervisor: Addr<Supervisor>,
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
/// or an actor (MISSION L1). Cheap to clone; usable from any thread.
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
        let handle_signals = options.handle_signals;
        let (supervisor, objects) = Supervisor::launch(transport, events, options);
        let objects = objects.ok_or(RuntimeError::ActorGone("objects"))?;
        if handle_signals {
            actors::supervisor::watch_signals(supervisor.clone());
        }
        tracing::debug!(%party, %job, "runtime started");
        Ok(Self {
            party,
            job,
            peers,
            objects,
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
        self.objects.do_send(messages::Submit(call));
    }

    /// What the facade's handles use to report that they are gone.
    pub fn releaser(&self) -> Releaser {
        Releaser(self.objects.clone())
    }

    /// The encoded values of `refs`, in order.
    pub async fn get(&self, refs: Vec<ObjRef>) -> Result<Vec<Bytes>, RuntimeError> {
        let (reply, rx) = oneshot::channel();
        self.objects.do_send(messages::Get { refs, reply });
        rx.await.unwrap_or(Err(RuntimeError::ActorGone("objects")))
    }

    /// Waits, at most `bound`, until every peer is known to be up (MISSION
    /// C6): we connected to it, or it connected to us (a fast peer may
    /// finish and leave before our own dial would reach it).
    pub async fn barrier(&self, bound: Duration) -> Result<(), RuntimeError> {
        let (tx, rx) = oneshot::channel();
        self.supervisor.do_send(messages::Barrier(tx));
        let all = async {
            let waits = rx
                .await
                .map_err(|_| RuntimeError::ActorGone("supervisor"))?;
            for w in waits {
                w.await.unwrap_or(Err(RuntimeError::ActorGone("link")))?;
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
        self.supervisor.do_send(messages::AbortJob(reason.into()));
    }

    /// Intended shutdown (MISSION E8): waits until every send is
    /// acknowledged, tells the peers where the driver finished, says
    /// goodbye, closes. Idempotent; concurrent callers all get the one
    /// result.
    pub async fn shutdown(&self) -> Result<(), RuntimeError> {
        let (tx, rx) = oneshot::channel();
        self.supervisor.do_send(messages::Shutdown(tx));
        rx.await
            .unwrap_or(Err(RuntimeError::ActorGone("supervisor")))
    }

    /// How many times the shutdown sequence has run in this party: 0 before
    /// the first `shutdown`, then 1 however often it is called.
    pub async fn shutdowns_run(&self) -> u32 {
        self.supervisor
            .send(messages::ShutdownsRun)
            .await
            .unwrap_or_default()
    }

    /// Traffic statistics of this party, and what it holds.
    pub async fn stats(&self) -> Stats {
        let (tx, rx) = oneshot::channel();
        self.supervisor.do_send(messages::GatherStats(tx));
        rx.await.unwrap_or_default()
    }
}
