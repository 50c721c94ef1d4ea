//! The `Objects` actor: the shell around the [`ObjectTable`]. It feeds the
//! table the driver's calls, gets and dropped handles and the objects that
//! arrive, and carries out what the table asks: hand bodies to the worker
//! pool or the async executor (never running user code itself: promise
//! X1), keep the user actors' states between their calls, answer gets, and
//! report pushes, needs and divergences up to the supervisor.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;
use xsilo_transport::InboundObject;
use xsilo_wire::payload::Payload;
use xsilo_wire::{FinishedFrame, ObjectId, PartyName};

use crate::call::{AsyncMethodFn, AsyncTaskFn, CtorFn, MethodFn, TaskFn, Work};
use crate::errors::{RuntimeError, TaskError};
use crate::memory::{self, TrimPolicy};
use crate::messages::{
    Arrived, ArrivedError, FailAll, Finish, Flush, Get, HeldNow, PeerFinished, PeerGone, PushDone,
    Release, ReleaseActor, Report, Submit,
};
use crate::options::WorkerThreadHooks;
use crate::rules::objects::{Action, CallId, GetId, Held, ObjectTable, Op, Submission};

/// What a body is.
pub(crate) enum Body {
    Task(TaskFn),
    AsyncTask(AsyncTaskFn),
    Ctor(CtorFn),
    Method(MethodFn),
    AsyncMethod(AsyncMethodFn),
}

/// The work a call carries, as the table holds it: the body and the
/// call's name.
pub(crate) struct Job {
    body: Body,
    name: Option<Arc<str>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.body {
            Body::Task(_) => "Task",
            Body::AsyncTask(_) => "AsyncTask",
            Body::Ctor(_) => "Ctor",
            Body::Method(_) => "Method",
            Body::AsyncMethod(_) => "AsyncMethod",
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

/// Where user code runs: sync bodies on at most `workers` blocking threads
/// at once, async bodies on `workers` executor threads. Never the control
/// thread.
pub(crate) struct Pool {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Pool {
    pub(crate) fn new(
        me: &PartyName,
        workers: usize,
        hooks: Option<WorkerThreadHooks>,
    ) -> Result<Self, RuntimeError> {
        let workers = workers.max(1);
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder
            .worker_threads(workers)
            .max_blocking_threads(workers)
            .thread_name(format!("xsilo-{me}-worker"));
        let on_start = hooks.as_ref().map(|h| h.on_start.clone());
        builder.on_thread_start(move || {
            lower_priority();
            if let Some(f) = &on_start {
                f();
            }
        });
        if let Some(on_stop) = hooks.map(|h| h.on_stop) {
            builder.on_thread_stop(move || on_stop());
        }
        let runtime = builder.enable_all().build().map_err(|e| {
            RuntimeError::Setup(format!("cannot start {workers} worker threads: {e}"))
        })?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.runtime.as_ref().map(tokio::runtime::Runtime::handle)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Never wait for bodies still running: the job is over for them
        // (RFC 0004, cancellation).
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The object table of one party and the user actors' states.
pub(crate) struct Objects {
    me: PartyName,
    table: ObjectTable<Job>,
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
            next_get: 1,
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
            header.fingerprint,
            header.consumer,
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
                    work,
                    inputs,
                    actor,
                    outputs: _,
                    first,
                } => self.start(ctx, call, work, inputs, actor, first),
                Action::CreateActor { actor, ctor } => self.create(ctx, actor, ctor),
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
        job: Job,
        inputs: Vec<Payload>,
        actor: Option<ObjectId>,
        first: ObjectId,
    ) {
        let Job { body, name } = job;
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
        match (body, actor) {
            (Body::Task(f), _) => {
                pool.spawn_blocking(move || done(run_catching(|| f(inputs)), None));
            }
            (Body::AsyncTask(f), _) => {
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
            (Body::Method(f), Some(actor)) => {
                let Some(mut state) = self.states.remove(&actor) else {
                    done(Err(lost_state(actor)), Some((actor, None)));
                    return;
                };
                pool.spawn_blocking(move || {
                    let result = run_catching(|| f(state.as_mut(), inputs));
                    done(result, Some((actor, Some(state))));
                });
            }
            (Body::AsyncMethod(f), Some(actor)) => {
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
            (Body::Method(_) | Body::AsyncMethod(_), None) | (Body::Ctor(_), _) => {
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

    fn create(&mut self, ctx: &mut Context<Self>, actor: ObjectId, job: Job) {
        let back = ctx.address();
        let Some(pool) = self.pool.handle().cloned() else {
            return;
        };
        match job.body {
            Body::Ctor(ctor) => {
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

/// Worker threads run below the control thread's priority (nice about +10
/// against 0 on Linux): when user code keeps every core busy, the control
/// plane still gets the CPU the moment it has work (an acknowledgement, a
/// RemoteError to pass on), instead of waiting for a time slice (promise
/// X1, RFC 0004). Without the right to change it, workers run as they are.
fn lower_priority() {
    use thread_priority::{ThreadPriority, ThreadPriorityValue};
    if let Ok(value) = ThreadPriorityValue::try_from(22u8) {
        if let Err(e) =
            thread_priority::set_current_thread_priority(ThreadPriority::Crossplatform(value))
        {
            tracing::debug!(error = ?e, "worker priority unchanged");
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
        let job = |body| Job { body, name };
        let op = match call.work {
            Work::Task(f) => Op::Task(job(Body::Task(f))),
            Work::AsyncTask(f) => Op::Task(job(Body::AsyncTask(f))),
            Work::NewActor { actor, ctor } => Op::NewActor(actor, job(Body::Ctor(ctor))),
            Work::Method { actor, f } => Op::Method(actor, job(Body::Method(f))),
            Work::AsyncMethod { actor, f } => Op::Method(actor, job(Body::AsyncMethod(f))),
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
        self.next_get += 1;
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

#[cfg(test)]
mod pool_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::cell::Cell;
    use std::collections::HashSet;
    use std::sync::{Condvar, Mutex};
    use std::thread::ThreadId;
    use std::time::Duration;

    use super::*;

    thread_local! {
        static STARTED_HERE: Cell<bool> = const { Cell::new(false) };
    }

    #[derive(Default)]
    struct Seen {
        threads: Mutex<(HashSet<ThreadId>, HashSet<ThreadId>)>,
        changed: Condvar,
    }

    impl Seen {
        /// Waits (at most 10 s) until `done` holds of (started, stopped).
        fn wait(&self, what: &str, done: impl Fn(&HashSet<ThreadId>, &HashSet<ThreadId>) -> bool) {
            let threads = self.threads.lock().unwrap();
            let (threads, waited) = self
                .changed
                .wait_timeout_while(threads, Duration::from_secs(10), |(s, t)| !done(s, t))
                .unwrap();
            assert!(
                !waited.timed_out(),
                "{what} within 10 s: started {:?}, stopped {:?}",
                threads.0,
                threads.1
            );
        }
    }

    #[test]
    fn the_worker_thread_hooks_run_first_and_last_on_every_worker_thread() {
        let seen = Arc::new(Seen::default());
        let hooks = WorkerThreadHooks {
            on_start: Arc::new({
                let seen = seen.clone();
                move || {
                    STARTED_HERE.with(|s| s.set(true));
                    let me = std::thread::current().id();
                    seen.threads.lock().unwrap().0.insert(me);
                    seen.changed.notify_all();
                }
            }),
            on_stop: Arc::new({
                let seen = seen.clone();
                move || {
                    let me = std::thread::current().id();
                    let mut threads = seen.threads.lock().unwrap();
                    // A thread whose start hook did not run is caught when
                    // the sets are compared.
                    threads.1.insert(me);
                    drop(threads);
                    seen.changed.notify_all();
                }
            }),
        };
        let pool = Pool::new(&"alice".parse().unwrap(), 2, Some(hooks)).unwrap();
        let handle = pool.handle().unwrap().clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let sync_tx = tx.clone();
        handle.spawn_blocking(move || sync_tx.send(("sync", STARTED_HERE.with(Cell::get))));
        handle.spawn(async move { tx.send(("async", STARTED_HERE.with(Cell::get))) });
        for _ in 0..2 {
            let (kind, hooked) = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("a body did not run within 10 s");
            assert!(
                hooked,
                "a {kind} body ran on a thread whose start hook had not run"
            );
        }
        // Both executor threads and the blocking one started; none stopped
        // while the pool lives.
        seen.wait("three worker threads started", |started, stopped| {
            started.len() >= 3 && stopped.is_empty()
        });
        drop(pool);
        seen.wait(
            "every worker thread ran its stop hook",
            |started, stopped| started == stopped,
        );
    }
}
