//! The lifecycle of one party, shutdown and abort, as a plain state machine
//! with time passed in (the way `quinn-proto` drives a connection): the
//! coordinator actor feeds it events and `now`, carries out the
//! [`LifeAction`]s it queues, and calls [`Lifecycle::handle_timeout`] when
//! [`Lifecycle::poll_timeout`] passes. Nothing here reads a clock or holds a
//! lock, so "exactly once" (promises E5, E8, E11) follows from the events
//! being handled one at a time.
//!
//! ```text
//!  Running ─shutdown─▶ Flushing ─flushed─▶ Telling ─told─▶ Draining ─drained─▶ Finishing ─peers finished─▶ Closing ─closed─▶ Closed(result)
//!     │                   (flush + tell + drain bound passes: Closing(Timeout))   (finish wait passes)
//!     └──abort / send failure / signal (from any of these)──▶ Aborting ──drained+linger or grace──▶ AbortClosing ──closed──▶ Aborted
//!                                                                                  (unintended: handler once, exit)
//! ```

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use xsilo_wire::PartyName;

use crate::errors::RuntimeError;

/// How long an abort waits for its frames (and whatever else is in flight)
/// to leave before the transport closes, unless
/// `continue_waiting_for_data_sending_on_error` asks for the full drain.
pub const ABORT_GRACE: Duration = Duration::from_secs(2);

/// How long an aborting party keeps its endpoint open at least: a peer that
/// started at about the same time and dials us now gets our answer (a
/// refusal, a TLS alert, the abort frame) instead of silence, which it could
/// only end after its whole connect bound.
pub const ABORT_LINGER: Duration = Duration::from_secs(1);

/// The settings the machine needs: the fields of the same names of
/// [`crate::RuntimeOptions`], which document them.
#[derive(Debug, Clone)]
pub struct LifeOptions {
    /// Bound on flushing and draining at an intended shutdown.
    pub drain_timeout: Duration,
    /// Bound on waiting for the peers' drivers to finish.
    pub finish_wait: Duration,
    /// Promise E7.
    pub continue_waiting_for_data_sending_on_error: bool,
    /// Promise E6.
    pub exit_on_sending_failure: bool,
    /// Exit the process after an unintended shutdown.
    pub exit_process: bool,
}

/// What the machine asks its shell to do.
#[derive(Debug, Clone)]
pub enum LifeAction {
    /// Fail every wait and every later call with this error.
    FailAll(RuntimeError),
    /// Send an Abort frame with this reason to every peer.
    SendAbort(String),
    /// Report [`Lifecycle::flushed`] once every push planned for a value
    /// still being made has been handed to its link.
    Flush,
    /// Report [`Lifecycle::drained`] once no send is in flight.
    Drain,
    /// Tell every peer where this party's driver finished (the frames are
    /// handed to the links, so the drain that follows waits for them),
    /// then report [`Lifecycle::told`].
    Finish,
    /// Close the transport (goodbye), then report [`Lifecycle::closed`].
    Close,
    /// The result for every `shutdown` caller, now and later.
    Answer(Result<(), RuntimeError>),
    /// Run the sending-failure handler (at most once per party).
    RunHandler,
    /// Exit the process with this status.
    Exit(i32),
}

#[derive(Debug, Clone)]
enum Phase {
    Running,
    Flushing,
    Telling,
    Draining,
    Finishing,
    Closing(Result<(), RuntimeError>),
    Closed(Result<(), RuntimeError>),
    Aborting {
        error: RuntimeError,
        drained: bool,
        linger_until: Instant,
    },
    AbortClosing(RuntimeError),
    Aborted(RuntimeError),
}

/// Shutdown and abort of one party.
#[derive(Debug)]
pub struct Lifecycle {
    me: PartyName,
    peers: BTreeSet<PartyName>,
    /// Peers whose driver finished, or that are gone.
    done: BTreeSet<PartyName>,
    phase: Phase,
    options: LifeOptions,
    deadline: Option<Instant>,
    saw_error: bool,
    unintended: bool,
    handler_ran: bool,
    exit_status: i32,
    shutdowns_run: u32,
    /// The bound the running shutdown's flush and drain got.
    drain_bound: Duration,
    actions: VecDeque<LifeAction>,
}

impl Lifecycle {
    /// A running party `me` with `peers`.
    pub fn new(
        me: PartyName,
        peers: impl IntoIterator<Item = PartyName>,
        options: LifeOptions,
    ) -> Self {
        let drain_bound = options.drain_timeout;
        Self {
            me,
            peers: peers.into_iter().collect(),
            done: BTreeSet::new(),
            phase: Phase::Running,
            options,
            deadline: None,
            saw_error: false,
            unintended: false,
            handler_ran: false,
            exit_status: 1,
            shutdowns_run: 0,
            drain_bound,
            actions: VecDeque::new(),
        }
    }

    /// The next action, in order.
    pub fn poll_action(&mut self) -> Option<LifeAction> {
        self.actions.pop_front()
    }

    /// When [`Lifecycle::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Aborting {
                drained: true,
                linger_until,
                ..
            } => Some(
                self.deadline
                    .map_or(*linger_until, |d| d.min(*linger_until)),
            ),
            _ => self.deadline,
        }
    }

    /// How many times the shutdown sequence has started (at most once).
    pub fn shutdowns_run(&self) -> u32 {
        self.shutdowns_run
    }

    /// The final result once there is one (what later callers get).
    pub fn result(&self) -> Option<Result<(), RuntimeError>> {
        match &self.phase {
            Phase::Closed(r) => Some(r.clone()),
            Phase::Aborted(e) => Some(Err(e.clone())),
            _ => None,
        }
    }

    /// The abort being closed, while the transport closes after one: its
    /// text goes to the peers that dialled us, in the close of their
    /// connections (they cannot get our Abort frame otherwise).
    pub fn abort_closing(&self) -> Option<&RuntimeError> {
        match &self.phase {
            Phase::AbortClosing(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the party is running (no shutdown or abort has begun).
    pub fn running(&self) -> bool {
        matches!(self.phase, Phase::Running)
    }

    /// An error object was sent or received (promise E7).
    pub fn error_seen(&mut self) {
        self.saw_error = true;
    }

    /// `shutdown()` was called. Returns the result at once if there is one;
    /// otherwise the caller waits for [`LifeAction::Answer`].
    pub fn shutdown(&mut self, now: Instant) -> Option<Result<(), RuntimeError>> {
        if let Some(result) = self.result() {
            return Some(result);
        }
        if matches!(self.phase, Phase::Running) {
            self.shutdowns_run += 1;
            self.phase = Phase::Flushing;
            let bound =
                if self.saw_error && !self.options.continue_waiting_for_data_sending_on_error {
                    ABORT_GRACE
                } else {
                    self.options.drain_timeout
                };
            self.drain_bound = bound;
            self.deadline = Some(now + bound);
            self.actions.push_back(LifeAction::Flush);
        }
        None
    }

    /// Every planned push was handed to its link: the driver's position is
    /// final, tell the peers.
    pub fn flushed(&mut self, _now: Instant) {
        if matches!(self.phase, Phase::Flushing) {
            self.phase = Phase::Telling;
            self.actions.push_back(LifeAction::Finish);
        }
    }

    /// The Finished frames are with the links: drain them with the rest.
    pub fn told(&mut self, _now: Instant) {
        if matches!(self.phase, Phase::Telling) {
            self.phase = Phase::Draining;
            self.actions.push_back(LifeAction::Drain);
        }
    }

    /// No send is in flight any more.
    pub fn drained(&mut self, now: Instant) {
        match &mut self.phase {
            Phase::Draining => {
                self.phase = Phase::Finishing;
                if self.saw_error || self.all_done() {
                    // After an error, drivers may end anywhere: nobody
                    // compares positions, so nobody waits for them.
                    self.close_with(Ok(()));
                } else {
                    self.deadline = Some(now + self.options.finish_wait);
                }
            }
            Phase::Aborting { drained, .. } => {
                *drained = true;
                self.handle_timeout(now);
            }
            _ => {}
        }
    }

    /// `peer`'s driver finished (its Finished frame arrived), or `peer` is
    /// gone: a finishing party waits for it no more.
    pub fn peer_done(&mut self, peer: &PartyName) {
        self.done.insert(peer.clone());
        if matches!(self.phase, Phase::Finishing) && self.all_done() {
            self.close_with(Ok(()));
        }
    }

    /// The transport closed.
    pub fn closed(&mut self) {
        match std::mem::replace(&mut self.phase, Phase::Running) {
            // The handler and the exit of an unintended shutdown come before
            // the answer: a driver woken by the answer on another thread
            // must not end the process first, with another status.
            Phase::Closing(result) => {
                self.phase = Phase::Closed(result.clone());
                // A signal that came while closing: its handler and exit.
                self.after_abort();
                self.actions.push_back(LifeAction::Answer(result));
            }
            Phase::AbortClosing(error) => {
                self.phase = Phase::Aborted(error.clone());
                self.after_abort();
                self.actions.push_back(LifeAction::Answer(Err(error)));
            }
            other => self.phase = other,
        }
    }

    /// Abort the job: detected here (`by` is `None`: the peers are told) or
    /// told by peer `by`.
    pub fn abort(&mut self, by: Option<&PartyName>, reason: &str, now: Instant) {
        match self.phase {
            Phase::Running
            | Phase::Flushing
            | Phase::Telling
            | Phase::Draining
            | Phase::Finishing => {}
            _ => return,
        }
        let error = RuntimeError::Aborted {
            by: by.unwrap_or(&self.me).clone(),
            reason: reason.to_owned(),
        };
        if by.is_none() {
            self.actions
                .push_back(LifeAction::SendAbort(reason.to_owned()));
        }
        self.actions.push_back(LifeAction::FailAll(error.clone()));
        self.actions.push_back(LifeAction::Drain);
        let grace = if self.options.continue_waiting_for_data_sending_on_error {
            self.options.drain_timeout
        } else {
            ABORT_GRACE
        };
        self.deadline = Some(now + grace);
        self.phase = Phase::Aborting {
            error,
            drained: false,
            linger_until: now + ABORT_LINGER,
        };
    }

    /// A send failed for good (after the transport's retries).
    pub fn send_failed(&mut self, reason: &str, now: Instant) {
        if self.options.exit_on_sending_failure {
            self.unintended(reason, now);
        } else {
            // Whoever waits for what we failed to send would wait forever:
            // fail the job instead, at every party we can still reach.
            self.abort(None, reason, now);
        }
    }

    /// SIGINT or SIGTERM (promise E9).
    pub fn signal(&mut self, name: &str, now: Instant) {
        let status = if name == "SIGINT" { 130 } else { 143 };
        let late = self.unintended || matches!(self.phase, Phase::Closed(_) | Phase::Aborted(_));
        if late {
            // A second signal, or one after the job is over: out now.
            if self.options.exit_process {
                self.actions.push_back(LifeAction::Exit(status));
            }
            return;
        }
        self.exit_status = status;
        let reason = format!("party '{}' received {name}", self.me);
        self.unintended(&reason, now);
    }

    /// Time passed: ends the waits whose bound is over.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due = self.deadline.is_some_and(|d| now >= d);
        match &self.phase {
            Phase::Flushing | Phase::Telling | Phase::Draining if due => {
                self.close_with(Err(RuntimeError::Timeout {
                    what: "draining the sends in flight".into(),
                    after: self.drain_bound,
                }));
            }
            Phase::Finishing if due => self.close_with(Ok(())),
            Phase::Aborting {
                error,
                drained,
                linger_until,
            } if due || (*drained && now >= *linger_until) => {
                let error = error.clone();
                self.deadline = None;
                self.phase = Phase::AbortClosing(error);
                self.actions.push_back(LifeAction::Close);
            }
            _ => {}
        }
    }

    fn all_done(&self) -> bool {
        self.peers.iter().all(|p| self.done.contains(p))
    }

    fn close_with(&mut self, result: Result<(), RuntimeError>) {
        self.deadline = None;
        // Waits still pending learn of the shutdown before the transport
        // closes under them.
        self.actions
            .push_back(LifeAction::FailAll(RuntimeError::ShutDown {
                party: self.me.clone(),
            }));
        self.actions.push_back(LifeAction::Close);
        self.phase = Phase::Closing(result);
    }

    fn unintended(&mut self, reason: &str, now: Instant) {
        if self.unintended {
            return;
        }
        self.unintended = true;
        match self.phase {
            Phase::Aborted(_) | Phase::Closed(_) => self.after_abort(),
            // Closing: the goodbye is on its way; the handler and the exit
            // follow the close.
            Phase::Closing(_) => {}
            _ => self.abort(None, reason, now),
        }
    }

    /// After an unintended shutdown's abort (or a signal during the final
    /// close): the handler, exactly once, then the exit.
    fn after_abort(&mut self) {
        if !self.unintended || !matches!(self.phase, Phase::Aborted(_) | Phase::Closed(_)) {
            return;
        }
        if !self.handler_ran {
            self.handler_ran = true;
            self.actions.push_back(LifeAction::RunHandler);
        }
        if self.options.exit_process {
            self.actions.push_back(LifeAction::Exit(self.exit_status));
        }
    }
}

#[cfg(test)]
mod tests;
