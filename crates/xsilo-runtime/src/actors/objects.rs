//! The `Objects` actor: the shell around the [`ObjectTable`]. It feeds the
//! table the driver's calls, gets and dropped handles and the objects that
//! arrive, and carries out what the table asks: hand bodies to the worker
//! [`Pool`] or the async executor (never running user code itself: promise
//! X1), keep the user actors' states between their calls, answer gets, and
//! report pushes, needs and divergences up to the coordinator.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;
use xsilo_transport::InboundObject;
use xsilo_wire::payload::Payload;
use xsilo_wire::{Consumer, Fingerprint, FinishedFrame, ObjectId, PartyName};

use crate::actors::pool::Pool;
use crate::call::{AsyncMethodFn, AsyncTaskFn, CtorFn, MethodFn, TaskFn, Work};
use crate::errors::{RuntimeError, TaskError};
use crate::memory::{self, TrimPolicy};
use crate::messages::{
    Arrived, ArrivedError, FailAll, Finish, Flush, Get, HeldNow, PeerFinished, PeerGone, PushDone,
    Release, ReleaseActor, Report, Submit,
};
use crate::rules::object_table::{Action, CallId, GetId, Held, ObjectTable, Op, Submission};

/// The code of a call's body, by how it runs.
pub(crate) enum Code {
    Task(TaskFn),
    AsyncTask(AsyncTaskFn),
    Ctor(CtorFn),
    Method(MethodFn),
    AsyncMethod(AsyncMethodFn),
}

/// A call's body as the object table holds it until the call runs: its
/// code and the call's name (for errors and logs). What the driver
/// submitted as [`Work`]; the table's [`Op`] says which call it is.
pub(crate) struct Body {
    code: Code,
    name: Option<Arc<str>>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.code {
            Code::Task(_) => "Task",
            Code::AsyncTask(_) => "AsyncTask",
            Code::Ctor(_) => "Ctor",
            Code::Method(_) => "Method",
            Code::AsyncMethod(_) => "AsyncMethod",
        };
        write!(f, "{kind}({:?})", self.name)
    }
}

type State = Box<dyn Any + Send>;

/// Runs `f`, turning a panic into a [`TaskError`].
fn run_catching<T>(f: impl FnOnce() -> Result<T, TaskError>) -> Result<T, TaskError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(TaskError::from_panic(payload.as_ref())),
    }
}

/// A body finished on a worker or the async executor.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Completed {
    call: CallId,
    result: Result<Vec<Payload>, TaskError>,
    first: ObjectId,
    name: Option<Arc<str>>,
    /// The actor and its state, handed back after a method.
    actor: Option<(ObjectId, Option<State>)>,
}

/// An actor's constructor finished on a worker.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Created {
    actor: ObjectId,
    result: Result<State, TaskError>,
}

/// The object table of one party and the user actors' states.
pub(crate) struct Objects {
    me: PartyName,
    table: ObjectTable<Body>,
    report: Recipient<Report>,
    pool: Pool,
    gets: HashMap<GetId, oneshot::Sender<Result<Vec<Payload>, RuntimeError>>>,
    next_get: GetId,
    states: HashMap<ObjectId, State>,
    flush_waiters: Vec<oneshot::Sender<()>>,
    /// The last divergence reported (for the answer to `Finish`).
    diverged: Option<RuntimeError>,
    /// When to hand freed memory back to the operating system.
    trim: TrimPolicy,
    /// Objects sent ahead of our driver past the table's early bound, in
    /// arrival order per peer, not yet answered (promise S1): the
    /// transport's budget and the peer's streams bound them.
    deferred: HashMap<PartyName, VecDeque<InboundObject>>,
}

impl Objects {
    pub(crate) fn new(
        me: PartyName,
        peers: Vec<PartyName>,
        expose_error_trace: bool,
        early_bytes_per_peer: u64,
        pool: Pool,
        report: Recipient<Report>,
    ) -> Self {
        let mut table = ObjectTable::new(me.clone(), peers, expose_error_trace);
        table.limit_early_bytes(early_bytes_per_peer);
        Self {
            table,
            me,
            report,
            pool,
            gets: HashMap::new(),
            next_get: GetId(1),
            states: HashMap::new(),
            flush_waiters: Vec::new(),
            diverged: None,
            trim: TrimPolicy::new(),
            deferred: HashMap::new(),
        }
    }

    /// Takes an arrived object: acknowledges it and gives it to the table,
    /// or, if it is ahead of our driver past the early bound, holds it
    /// unanswered until the driver catches up.
    fn take(&mut self, obj: InboundObject) {
        let queue = self.deferred.entry(obj.from.clone()).or_default();
        let room = self
            .table
            .early_room(&obj.from, obj.header.object, obj.payload.len() as u64);
        if !queue.is_empty() || !room {
            tracing::debug!(party = %self.me, from = %obj.from, object = %obj.header.object,
                "held unanswered: its sender is far ahead of this party's driver");
            queue.push_back(obj);
            return;
        }
        self.accept(obj);
    }

    fn accept(&mut self, obj: InboundObject) {
        let (from, header, payload) = (obj.from, obj.header, obj.payload);
        // Taken by the runtime (kept or discarded): acknowledge (C3).
        obj.ack.accept();
        self.table.arrived(
            &from,
            header.object,
            Fingerprint(header.fingerprint),
            Consumer::from_wire(header.consumer),
            header.resend,
            payload,
        );
    }

    /// Offers held objects again, oldest first per peer.
    fn take_deferred(&mut self) {
        if self.deferred.values().all(VecDeque::is_empty) {
            return;
        }
        let peers: Vec<PartyName> = self.deferred.keys().cloned().collect();
        for peer in peers {
            while let Some(obj) = self.deferred.get_mut(&peer).and_then(VecDeque::pop_front) {
                let room =
                    self.table
                        .early_room(&obj.from, obj.header.object, obj.payload.len() as u64);
                if !room {
                    if let Some(q) = self.deferred.get_mut(&peer) {
                        q.push_front(obj);
                    }
                    break;
                }
                self.accept(obj);
            }
        }
        self.deferred.retain(|_, q| !q.is_empty());
    }

    /// Carries out every action the table queued.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        self.take_deferred();
        while let Some(action) = self.table.poll_action() {
            match action {
                Action::Run {
                    call,
                    body,
                    inputs,
                    actor,
                    outputs: _,
                    first,
                } => self.start(ctx, call, body, inputs, actor, first),
                Action::CreateActor { actor, ctor } => self.create(ctx, actor, ctor),
                Action::DropActor(actor) => {
                    self.states.remove(&actor);
                }
                Action::Push { dest, push } => self.report.do_send(Report::Push { dest, push }),
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
        if self
            .trim
            .due(self.table.bytes_freed(), std::time::Instant::now())
        {
            // Off the control thread: a trim takes each arena's lock.
            drop(tokio::task::spawn_blocking(memory::return_free_memory));
        }
    }

    /// Hands a body to the pool; its result comes back as [`Completed`].
    fn start(
        &mut self,
        ctx: &mut Context<Self>,
        call: CallId,
        body: Body,
        inputs: Vec<Payload>,
        actor: Option<ObjectId>,
        first: ObjectId,
    ) {
        let Body { code, name } = body;
        let me = self.me.clone();
        let back = ctx.address();
        let Some(pool) = self.pool.handle().cloned() else {
            return;
        };
        tracing::debug!(party = %me, object = %first, task = name.as_deref().unwrap_or(""), "starting");
        let done = move |result, actor| {
            back.do_send(Completed {
                call,
                result,
                first,
                name,
                actor,
            });
        };
        match (code, actor) {
            (Code::Task(f), _) => {
                pool.spawn_blocking(move || done(run_catching(|| f(inputs)), None));
            }
            (Code::AsyncTask(f), _) => {
                let inner = pool.clone();
                pool.spawn(async move {
                    // Its own task, so that a panic in it is caught here.
                    let result = match inner.spawn(async move { f(inputs).await }).await {
                        Ok(r) => r,
                        Err(e) => Err(join_error(e)),
                    };
                    done(result, None);
                });
            }
            (Code::Method(f), Some(actor)) => {
                let Some(mut state) = self.states.remove(&actor) else {
                    done(Err(lost_state(actor)), Some((actor, None)));
                    return;
                };
                pool.spawn_blocking(move || {
                    let result = run_catching(|| f(state.as_mut(), inputs));
                    done(result, Some((actor, Some(state))));
                });
            }
            (Code::AsyncMethod(f), Some(actor)) => {
                let Some(state) = self.states.remove(&actor) else {
                    done(Err(lost_state(actor)), Some((actor, None)));
                    return;
                };
                let inner = pool.clone();
                pool.spawn(async move {
                    let run = inner.spawn(async move {
                        let mut state = state;
                        let result = f(state.as_mut(), inputs).await;
                        (state, result)
                    });
                    match run.await {
                        Ok((state, result)) => done(result, Some((actor, Some(state)))),
                        // The state went down with the panicking future.
                        Err(e) => done(Err(join_error(e)), Some((actor, None))),
                    }
                });
            }
            (Code::Method(_) | Code::AsyncMethod(_), None) | (Code::Ctor(_), _) => {
                done(
                    Err(TaskError {
                        kind: "Internal".into(),
                        message: format!("a malformed call reached party '{me}'"),
                        causes: Vec::new(),
                    }),
                    None,
                );
            }
        }
    }

    fn create(&mut self, ctx: &mut Context<Self>, actor: ObjectId, body: Body) {
        let back = ctx.address();
        let Some(pool) = self.pool.handle().cloned() else {
            return;
        };
        match body.code {
            Code::Ctor(ctor) => {
                pool.spawn_blocking(move || {
                    back.do_send(Created {
                        actor,
                        result: run_catching(ctor),
                    });
                });
            }
            _ => self
                .table
                .actor_created(actor, Err("internal: not a constructor".into())),
        }
    }
}

fn lost_state(actor: ObjectId) -> TaskError {
    TaskError {
        kind: "ActorStateLost".into(),
        message: format!("actor {actor} lost its state when an earlier method panicked"),
        causes: Vec::new(),
    }
}

fn join_error(e: tokio::task::JoinError) -> TaskError {
    if e.is_panic() {
        TaskError::from_panic(e.into_panic().as_ref())
    } else {
        TaskError {
            kind: "Cancelled".into(),
            message: "the body was cancelled".into(),
            causes: Vec::new(),
        }
    }
}

impl Actor for Objects {
    type Context = Context<Self>;
}

impl Handler<Completed> for Objects {
    type Result = ();
    fn handle(&mut self, msg: Completed, ctx: &mut Self::Context) {
        if let Some((actor, Some(state))) = msg.actor {
            // Back in place for the actor's next call, unless the actor
            // is gone meanwhile (killed, freed, the job failed).
            if self.table.actor_live(actor) {
                self.states.insert(actor, state);
            }
        }
        let me = self.me.clone();
        let result = msg.result.map_err(|error| RuntimeError::Task {
            party: me,
            object: msg.first,
            name: msg.name.clone(),
            error: Box::new(error),
        });
        self.table.completed(msg.call, result);
        self.pump(ctx);
    }
}

impl Handler<Created> for Objects {
    type Result = ();
    fn handle(&mut self, msg: Created, ctx: &mut Self::Context) {
        let result = match msg.result {
            Ok(state) => {
                if self.table.actor_live(msg.actor) {
                    self.states.insert(msg.actor, state);
                }
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        };
        self.table.actor_created(msg.actor, result);
        self.pump(ctx);
    }
}

impl Handler<Submit> for Objects {
    type Result = ();
    fn handle(&mut self, Submit(call): Submit, ctx: &mut Self::Context) {
        let name = call.name;
        let body = |code| Body { code, name };
        let op = match call.work {
            Work::Task(f) => Op::Task(body(Code::Task(f))),
            Work::AsyncTask(f) => Op::Task(body(Code::AsyncTask(f))),
            Work::NewActor { actor, ctor } => Op::NewActor(actor, body(Code::Ctor(ctor))),
            Work::Method { actor, f } => Op::Method(actor, body(Code::Method(f))),
            Work::AsyncMethod { actor, f } => Op::Method(actor, body(Code::AsyncMethod(f))),
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
        self.pump(ctx);
    }
}

impl Handler<Get> for Objects {
    type Result = ();
    fn handle(&mut self, msg: Get, ctx: &mut Self::Context) {
        let id = self.next_get;
        self.next_get.0 += 1;
        self.gets.insert(id, msg.reply);
        self.table.get(id, &msg.refs);
        self.pump(ctx);
    }
}

impl Handler<Release> for Objects {
    type Result = ();
    fn handle(&mut self, Release(id): Release, ctx: &mut Self::Context) {
        self.table.release(id);
        self.pump(ctx);
    }
}

impl Handler<ReleaseActor> for Objects {
    type Result = ();
    fn handle(&mut self, ReleaseActor(id): ReleaseActor, ctx: &mut Self::Context) {
        self.table.release_actor(id);
        self.pump(ctx);
    }
}

impl Handler<Arrived> for Objects {
    type Result = ();
    fn handle(&mut self, Arrived(obj): Arrived, ctx: &mut Self::Context) {
        self.take(obj);
        self.pump(ctx);
    }
}

impl Handler<ArrivedError> for Objects {
    type Result = ();
    fn handle(&mut self, msg: ArrivedError, ctx: &mut Self::Context) {
        self.table.arrived_error(&msg.from, &msg.frame);
        self.pump(ctx);
    }
}

impl Handler<PeerFinished> for Objects {
    type Result = ();
    fn handle(&mut self, msg: PeerFinished, ctx: &mut Self::Context) {
        self.table.peer_finished(&msg.from, msg.frame);
        self.pump(ctx);
        // After the comparison's verdict: a finishing party must not close
        // before it knows whether the peer's position matches its own.
        self.report.do_send(Report::PeerFinished(msg.from));
    }
}

impl Handler<PeerGone> for Objects {
    type Result = ();
    fn handle(&mut self, msg: PeerGone, ctx: &mut Self::Context) {
        self.table.peer_gone(&msg.peer, &msg.reason);
        self.pump(ctx);
    }
}

impl Handler<FailAll> for Objects {
    type Result = ();
    fn handle(&mut self, FailAll(error): FailAll, ctx: &mut Self::Context) {
        self.table.fail_all(error);
        self.pump(ctx);
    }
}

impl Handler<PushDone> for Objects {
    type Result = ();
    fn handle(&mut self, PushDone(id): PushDone, ctx: &mut Self::Context) {
        self.table.push_done(id);
        self.pump(ctx);
    }
}

impl Handler<Flush> for Objects {
    type Result = ();
    fn handle(&mut self, Flush(tx): Flush, ctx: &mut Self::Context) {
        self.flush_waiters.push(tx);
        self.pump(ctx);
    }
}

impl Handler<Finish> for Objects {
    type Result = MessageResult<Finish>;
    fn handle(&mut self, _: Finish, ctx: &mut Self::Context) -> Self::Result {
        self.diverged = None;
        let frame: FinishedFrame = self.table.finish();
        self.pump(ctx);
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
