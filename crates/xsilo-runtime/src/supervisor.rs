//! The CleanupSupervisor: the party's shutdown state machine. Every trigger
//! of shutdown or failure is a message to it, handled one at a time, so the
//! exactly-once guarantees need no lock (MISSION E8, E11).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;
use xsilo_transport::{Transport, TransportError};
use xsilo_wire::{ControlFrame, PartyName};

use crate::driver::{self, Driver};
use crate::error::RuntimeError;
use crate::receiver::{self, ReceiverProxy};
use crate::sender::{Drain, SendControl, SenderProxy};
use crate::RuntimeOptions;

#[derive(Debug, Clone)]
enum State {
    Running,
    Draining,
    /// Shut down, with the result every later request gets too.
    Closed(Result<(), RuntimeError>),
    /// Telling the peers and closing; shutdown requests wait for it.
    Aborting,
    Aborted(RuntimeError),
}

/// How long an abort waits for its frames (and whatever else is in flight)
/// to leave before the transport closes.
const ABORT_GRACE: Duration = Duration::from_secs(2);

/// How long an aborting party keeps its endpoint open at least: a peer that
/// started at about the same time and dials us now gets our answer (a
/// refusal, a TLS alert, the abort frame) instead of silence, which it could
/// only end after its whole connect bound.
const ABORT_LINGER: Duration = Duration::from_secs(1);

/// Owns shutdown and abort for one party.
pub struct CleanupSupervisor {
    party: PartyName,
    peers: Vec<PartyName>,
    state: State,
    transport: Arc<dyn Transport>,
    driver: Addr<Driver>,
    sender: Addr<SenderProxy>,
    receiver: Addr<ReceiverProxy>,
    waiters: Vec<oneshot::Sender<Result<(), RuntimeError>>>,
    options: RuntimeOptions,
    last_send_error: Option<TransportError>,
    /// An error was sent or received (MISSION E7).
    saw_error: bool,
    /// Set by the first unintended shutdown: the handler runs once.
    unintended: bool,
    /// The process exit status after an unintended shutdown: 1 for a
    /// sending failure, 128 + the signal number for a signal.
    exit_status: i32,
}

impl CleanupSupervisor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        party: PartyName,
        peers: Vec<PartyName>,
        transport: Arc<dyn Transport>,
        driver: Addr<Driver>,
        sender: Addr<SenderProxy>,
        receiver: Addr<ReceiverProxy>,
        options: RuntimeOptions,
    ) -> Self {
        Self {
            party,
            peers,
            state: State::Running,
            transport,
            driver,
            sender,
            receiver,
            waiters: Vec::new(),
            options,
            last_send_error: None,
            saw_error: false,
            unintended: false,
            exit_status: 1,
        }
    }

    /// How long shutdown waits for sends in flight: the full bound, or the
    /// short grace once an error was exchanged (MISSION E7).
    fn drain_bound(&self) -> Duration {
        if self.saw_error && !self.options.continue_waiting_for_data_sending_on_error {
            ABORT_GRACE
        } else {
            self.options.drain_timeout
        }
    }

    fn fail_everything(&self, error: &RuntimeError) {
        self.driver.do_send(driver::FailAll(error.clone()));
        self.receiver.do_send(receiver::FailAll(error.clone()));
    }

    fn finish(&mut self, result: Result<(), RuntimeError>) {
        for w in self.waiters.drain(..) {
            let _ = w.send(result.clone());
        }
    }
}

impl Actor for CleanupSupervisor {
    type Context = Context<Self>;
}

/// Intended shutdown: wait until every send is acknowledged (bounded), say
/// goodbye, close. Any number of requests run it once; all get its result.
#[derive(Message)]
#[rtype(result = "Result<(), RuntimeError>")]
pub(crate) struct Shutdown;

impl Handler<Shutdown> for CleanupSupervisor {
    type Result = ResponseFuture<Result<(), RuntimeError>>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        match &self.state {
            State::Closed(result) => {
                let result = result.clone();
                return Box::pin(async move { result });
            }
            State::Aborted(e) => {
                let e = e.clone();
                return Box::pin(async move { Err(e) });
            }
            State::Draining | State::Aborting => {}
            State::Running => {
                self.state = State::Draining;
                tracing::info!(party = %self.party, "shutting down: draining sends");
                let flush = self.driver.send(driver::Flush);
                let sender = self.sender.clone();
                let bound = self.drain_bound();
                let transport = self.transport.clone();
                let (driver, receiver) = (self.driver.clone(), self.receiver.clone());
                let closed = RuntimeError::ShutDown {
                    party: self.party.clone(),
                };
                ctx.spawn(
                    async move {
                        let drained = tokio::time::timeout(bound, async move {
                            flush.await.map_err(|_| MailboxError::Closed)?;
                            sender.send(Drain).await
                        })
                        .await;
                        // Waits still pending learn of the shutdown before
                        // the transport closes under them.
                        driver.do_send(driver::FailAll(closed.clone()));
                        receiver.do_send(receiver::FailAll(closed));
                        transport.close().await;
                        match drained {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(_)) => Err(RuntimeError::ActorGone("sender")),
                            Err(_) => Err(RuntimeError::Timeout {
                                what: "draining the sends in flight".into(),
                                after: bound,
                            }),
                        }
                    }
                    .into_actor(self)
                    .map(|result, act, _| {
                        if let State::Aborting | State::Aborted(_) = &act.state {
                            // The abort path answers the waiters.
                            return;
                        }
                        act.state = State::Closed(result.clone());
                        tracing::info!(party = %act.party, "shut down");
                        act.finish(result);
                    }),
                );
            }
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        Box::pin(async move {
            rx.await
                .unwrap_or(Err(RuntimeError::ActorGone("supervisor")))
        })
    }
}

/// Abort the job: locally detected (divergence) or told by a peer.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Abort {
    /// `None` when this party detected the failure.
    pub(crate) by: Option<PartyName>,
    pub(crate) reason: String,
}

impl Abort {
    pub(crate) fn local(reason: String) -> Self {
        Self { by: None, reason }
    }
    pub(crate) fn remote(by: PartyName, reason: String) -> Self {
        Self {
            by: Some(by),
            reason,
        }
    }
}

impl Handler<Abort> for CleanupSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Abort, ctx: &mut Self::Context) {
        self.abort(msg, ctx);
    }
}

impl CleanupSupervisor {
    /// Aborts the job once: fail every wait, tell the peers (if we detected
    /// it), let the frames leave within the grace (the full drain bound with
    /// `continue_waiting_for_data_sending_on_error`), close; then, after an
    /// unintended shutdown, run the handler and exit if asked.
    fn abort(&mut self, msg: Abort, ctx: &mut Context<Self>) {
        if matches!(
            self.state,
            State::Aborting | State::Aborted(_) | State::Closed(_)
        ) {
            self.after_abort(ctx);
            return;
        }
        let by = msg.by.clone().unwrap_or_else(|| self.party.clone());
        let error = RuntimeError::Aborted {
            by: by.clone(),
            reason: msg.reason.clone(),
        };
        tracing::error!(party = %self.party, %by, reason = %msg.reason, "job aborted");
        self.state = State::Aborting;
        if msg.by.is_none() {
            // Tell every peer, so that nobody waits on us (MISSION E3).
            for peer in &self.peers {
                self.sender.do_send(SendControl {
                    dest: peer.clone(),
                    frame: ControlFrame::Abort {
                        reason: msg.reason.clone(),
                    },
                });
            }
        }
        self.fail_everything(&error);
        let grace = if self.options.continue_waiting_for_data_sending_on_error {
            self.options.drain_timeout
        } else {
            ABORT_GRACE
        };
        let drain = self.sender.send(Drain);
        let transport = self.transport.clone();
        let linger_until = tokio::time::Instant::now() + ABORT_LINGER;
        ctx.spawn(
            async move {
                let _ = tokio::time::timeout(grace, drain).await;
                tokio::time::sleep_until(linger_until).await;
                transport.close().await;
            }
            .into_actor(self)
            .map(move |(), act, ctx| {
                act.state = State::Aborted(error.clone());
                act.finish(Err(error));
                act.after_abort(ctx);
            }),
        );
    }

    /// After an unintended shutdown's abort: the handler, exactly once
    /// (this actor handles one message at a time, and `take` empties the
    /// slot), then the exit.
    fn after_abort(&mut self, _: &mut Context<Self>) {
        if !self.unintended || !matches!(self.state, State::Aborted(_)) {
            return;
        }
        if let Some(handler) = self.options.failure_handler.take() {
            tracing::warn!(party = %self.party, "running the sending-failure handler");
            let last = self.last_send_error.clone();
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(last.as_ref())))
                .is_err()
            {
                tracing::error!(party = %self.party, "the sending-failure handler panicked");
            }
        }
        if self.options.exit_process {
            let status = self.exit_status;
            tracing::error!(party = %self.party, "unintended shutdown: exiting with status {status}");
            std::process::exit(status);
        }
    }

    fn unintended_shutdown(&mut self, reason: String, ctx: &mut Context<Self>) {
        if self.unintended {
            return;
        }
        self.unintended = true;
        self.abort(Abort::local(reason), ctx);
    }
}

/// A send failed after the transport's retries.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SendFailed {
    pub(crate) dest: PartyName,
    pub(crate) what: String,
    pub(crate) error: TransportError,
}

impl Handler<SendFailed> for CleanupSupervisor {
    type Result = ();
    fn handle(&mut self, msg: SendFailed, ctx: &mut Self::Context) {
        if let TransportError::PeerClosed { .. } | TransportError::Closed { .. } = msg.error {
            // It left intentionally and waits for nothing more, or we are
            // closing ourselves: nobody is left waiting on this send.
            return;
        }
        tracing::warn!(party = %self.party, dest = %msg.dest, what = %msg.what, error = %msg.error, "sending failed");
        let reason = format!("{} failed: {}", msg.what, msg.error);
        self.last_send_error = Some(msg.error);
        if self.options.exit_on_sending_failure {
            self.unintended_shutdown(reason, ctx);
        } else {
            // Whoever waits for what we failed to send would wait forever:
            // fail the job instead, at every party we can still reach.
            self.abort(Abort::local(reason), ctx);
        }
    }
}

/// An error object was sent or received (for MISSION E7).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ErrorSeen;

impl Handler<ErrorSeen> for CleanupSupervisor {
    type Result = ();
    fn handle(&mut self, _: ErrorSeen, _: &mut Self::Context) {
        self.saw_error = true;
    }
}

/// A signal arrived (SIGINT or SIGTERM): an unintended shutdown (E9). The
/// signal handler only sends this message (tokio's handler writes to a
/// pipe); no lock is taken in signal context, so the seed's deadlock
/// cannot happen (E11).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Signal(pub(crate) &'static str);

impl Handler<Signal> for CleanupSupervisor {
    type Result = ();
    fn handle(&mut self, Signal(name): Signal, ctx: &mut Self::Context) {
        let status = if name == "SIGINT" { 130 } else { 143 };
        // A signal after the job is over, or a second one while the first
        // is being handled: the user wants out now.
        let late = self.unintended || matches!(self.state, State::Closed(_) | State::Aborted(_));
        if late {
            if self.options.exit_process {
                tracing::error!(party = %self.party, "{name}: exiting with status {status}");
                std::process::exit(status);
            }
            return;
        }
        self.exit_status = status;
        self.unintended_shutdown(format!("party '{}' received {name}", self.party), ctx);
    }
}

/// Forwards SIGINT and SIGTERM to the supervisor as messages.
pub(crate) fn watch_signals(supervisor: Addr<CleanupSupervisor>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        for (kind, name) in [
            (SignalKind::interrupt(), "SIGINT"),
            (SignalKind::terminate(), "SIGTERM"),
        ] {
            match signal(kind) {
                Ok(mut stream) => {
                    let supervisor = supervisor.clone();
                    actix_rt::spawn(async move {
                        while stream.recv().await.is_some() {
                            supervisor.do_send(Signal(name));
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "cannot watch {name}"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = supervisor;
}
