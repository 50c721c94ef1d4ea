//! The `Objects` actor: the shell around the [`ObjectTable`]. It feeds the
//! table the driver's calls, gets and dropped handles and the objects that
//! arrive, and carries out what the table asks: run bodies (holding the
//! user actors' states), answer gets, and report pushes, needs and
//! divergences up to the supervisor.

use std::any::Any;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;
use xsilo_wire::{FinishedFrame, ObjectId, PartyName};

use crate::call::{CtorFn, MethodFn, TaskFn, Work};
use crate::errors::{RuntimeError, TaskError};
use crate::messages::{
    Arrived, ArrivedError, FailAll, Finish, Flush, Get, HeldNow, PeerFinished, PeerGone, PushDone,
    Release, ReleaseActor, Report, Submit,
};
use crate::rules::objects::{Action, GetId, Held, ObjectTable, Op, Submission};

/// The work a call carries, as the table holds it.
pub(crate) enum Body {
    Task(TaskFn),
    Ctor(CtorFn),
    Method(MethodFn),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Task(_) => "Task",
            Self::Ctor(_) => "Ctor",
            Self::Method(_) => "Method",
        })
    }
}

/// Runs `f`, turning a panic into a [`TaskError`].
fn run_catching<T>(f: impl FnOnce() -> Result<T, TaskError>) -> Result<T, TaskError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(TaskError::from_panic(payload.as_ref())),
    }
}

/// The object table of one party and the user actors' states.
pub(crate) struct Objects {
    me: PartyName,
    table: ObjectTable<Body>,
    report: Recipient<Report>,
    gets: HashMap<GetId, oneshot::Sender<Result<Vec<Bytes>, RuntimeError>>>,
    next_get: GetId,
    states: HashMap<ObjectId, Box<dyn Any + Send>>,
    flush_waiters: Vec<oneshot::Sender<()>>,
    /// The last divergence reported (for the answer to `Finish`).
    diverged: Option<RuntimeError>,
}

impl Objects {
    pub(crate) fn new(
        me: PartyName,
        peers: Vec<PartyName>,
        expose_error_trace: bool,
        report: Recipient<Report>,
    ) -> Self {
        Self {
            table: ObjectTable::new(me.clone(), peers, expose_error_trace),
            me,
            report,
            gets: HashMap::new(),
            next_get: 1,
            states: HashMap::new(),
            flush_waiters: Vec::new(),
            diverged: None,
        }
    }

    /// Carries out every action the table queued.
    fn pump(&mut self) {
        while let Some(action) = self.table.poll_action() {
            match action {
                Action::Run {
                    call,
                    work,
                    inputs,
                    actor,
                    outputs: _,
                    first,
                } => {
                    let result = self.run(work, inputs, actor, first);
                    self.table.completed(call, result);
                }
                Action::CreateActor { actor, ctor } => {
                    let result = match ctor {
                        Body::Ctor(ctor) => match run_catching(ctor) {
                            Ok(state) => {
                                self.states.insert(actor, state);
                                Ok(())
                            }
                            Err(e) => Err(e.to_string()),
                        },
                        other => Err(format!("internal: {other:?} given as a constructor")),
                    };
                    self.table.actor_created(actor, result);
                }
                Action::DropActor(actor) => {
                    self.states.remove(&actor);
                }
                Action::Push {
                    dest,
                    object,
                    consumer,
                    fingerprint,
                    payload,
                } => self.report.do_send(Report::Push {
                    dest,
                    object,
                    consumer,
                    fingerprint,
                    payload,
                }),
                Action::PushError { dest, frame } => {
                    self.report.do_send(Report::PushError { dest, frame });
                }
                Action::Answer { get, result } => {
                    if let Some(tx) = self.gets.remove(&get) {
                        let _ = tx.send(result);
                    }
                }
                Action::NeedPeer(peer) => self.report.do_send(Report::NeedPeer(peer)),
                Action::Diverged(error) => {
                    self.diverged = Some(error.clone());
                    self.report.do_send(Report::Diverged(error));
                }
                Action::ErrorSeen => self.report.do_send(Report::ErrorSeen),
            }
        }
        if !self.flush_waiters.is_empty() && self.table.flushed() {
            for tx in self.flush_waiters.drain(..) {
                let _ = tx.send(());
            }
        }
    }

    fn run(
        &mut self,
        work: Body,
        inputs: Vec<Bytes>,
        actor: Option<ObjectId>,
        first: ObjectId,
    ) -> Result<Vec<Bytes>, RuntimeError> {
        let result = match (work, actor) {
            (Body::Task(f), _) => run_catching(|| f(inputs)),
            (Body::Method(f), Some(actor)) => match self.states.get_mut(&actor) {
                Some(state) => run_catching(|| f(state.as_mut(), inputs)),
                None => {
                    return Err(RuntimeError::ActorUnavailable {
                        actor,
                        party: self.me.clone(),
                        reason: "its state is gone".into(),
                    })
                }
            },
            (other, _) => {
                return Err(RuntimeError::ActorGone(match other {
                    Body::Ctor(_) => "objects (a constructor run as a call)",
                    _ => "objects (a method without its actor)",
                }))
            }
        };
        result.map_err(|error| RuntimeError::Task {
            party: self.me.clone(),
            object: first,
            error,
        })
    }
}

impl Actor for Objects {
    type Context = Context<Self>;
}

impl Handler<Submit> for Objects {
    type Result = ();
    fn handle(&mut self, Submit(call): Submit, _: &mut Self::Context) {
        let op = match call.work {
            Work::Task(f) => Op::Task(Body::Task(f)),
            Work::NewActor { actor, ctor } => Op::NewActor(actor, Body::Ctor(ctor)),
            Work::Method { actor, f } => Op::Method(actor, Body::Method(f)),
            Work::Kill { actor } => Op::Kill(actor),
            Work::Fail(e) => Op::Fail(e),
        };
        self.table.submit(Submission {
            party: call.party,
            inputs: call.inputs,
            outputs: call.outputs,
            consumer: call.consumer,
            op,
        });
        self.pump();
    }
}

impl Handler<Get> for Objects {
    type Result = ();
    fn handle(&mut self, msg: Get, _: &mut Self::Context) {
        let id = self.next_get;
        self.next_get += 1;
        self.gets.insert(id, msg.reply);
        self.table.get(id, &msg.refs);
        self.pump();
    }
}

impl Handler<Release> for Objects {
    type Result = ();
    fn handle(&mut self, Release(id): Release, _: &mut Self::Context) {
        self.table.release(id);
        self.pump();
    }
}

impl Handler<ReleaseActor> for Objects {
    type Result = ();
    fn handle(&mut self, ReleaseActor(id): ReleaseActor, _: &mut Self::Context) {
        self.table.release_actor(id);
        self.pump();
    }
}

impl Handler<Arrived> for Objects {
    type Result = ();
    fn handle(&mut self, Arrived(obj): Arrived, _: &mut Self::Context) {
        let (from, header, payload) = (obj.from, obj.header, obj.payload);
        // Taken by the runtime (kept or discarded): acknowledge (C3).
        obj.ack.accept();
        self.table.arrived(
            &from,
            header.object,
            header.fingerprint,
            header.consumer,
            header.resend,
            payload,
        );
        self.pump();
    }
}

impl Handler<ArrivedError> for Objects {
    type Result = ();
    fn handle(&mut self, msg: ArrivedError, _: &mut Self::Context) {
        self.table.arrived_error(&msg.from, &msg.frame);
        self.pump();
    }
}

impl Handler<PeerFinished> for Objects {
    type Result = ();
    fn handle(&mut self, msg: PeerFinished, _: &mut Self::Context) {
        self.table.peer_finished(&msg.from, msg.frame);
        self.pump();
        // After the comparison's verdict: a finishing party must not close
        // before it knows whether the peer's position matches its own.
        self.report.do_send(Report::PeerFinished(msg.from));
    }
}

impl Handler<PeerGone> for Objects {
    type Result = ();
    fn handle(&mut self, msg: PeerGone, _: &mut Self::Context) {
        self.table.peer_gone(&msg.peer, &msg.reason);
        self.pump();
    }
}

impl Handler<FailAll> for Objects {
    type Result = ();
    fn handle(&mut self, FailAll(error): FailAll, _: &mut Self::Context) {
        self.table.fail_all(error);
        self.pump();
    }
}

impl Handler<PushDone> for Objects {
    type Result = ();
    fn handle(&mut self, PushDone(id): PushDone, _: &mut Self::Context) {
        self.table.push_done(id);
        self.pump();
    }
}

impl Handler<Flush> for Objects {
    type Result = ();
    fn handle(&mut self, Flush(tx): Flush, _: &mut Self::Context) {
        self.flush_waiters.push(tx);
        self.pump();
    }
}

impl Handler<Finish> for Objects {
    type Result = MessageResult<Finish>;
    fn handle(&mut self, _: Finish, _: &mut Self::Context) -> Self::Result {
        self.diverged = None;
        let frame: FinishedFrame = self.table.finish();
        self.pump();
        MessageResult((frame, self.diverged.take()))
    }
}

impl Handler<HeldNow> for Objects {
    type Result = MessageResult<HeldNow>;
    fn handle(&mut self, _: HeldNow, _: &mut Self::Context) -> Self::Result {
        let held: Held = self.table.held();
        MessageResult(held)
    }
}
