//! The Driver: the party's view of every federated object, local execution
//! of tasks and actors, and the push rules (MISSION M1-M6).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;
use xsilo_wire::{ControlFrame, ObjectId, PartyName, RemoteErrorFrame};

use crate::call::{Call, MethodFn, ObjRef, Work};
use crate::error::{RuntimeError, TaskError};
use crate::receiver::{Await, ReceiverProxy};
use crate::sender::{SendControl, SendObject, SenderProxy};

type Value = Result<Bytes, RuntimeError>;
pub(crate) type InputsFuture =
    Pin<Box<dyn Future<Output = Result<Vec<Bytes>, RuntimeError>> + Send>>;

enum SlotState {
    Pending(Vec<oneshot::Sender<Value>>),
    Ready(Value),
}

struct Slot {
    fingerprint: u64,
    state: SlotState,
    /// Pushes requested before the value was ready: (destination, consumer).
    pushes: Vec<(PartyName, u64)>,
}

enum ActorSlot {
    Live(Addr<ActorHost>),
    Unavailable(String),
}

/// Runs the driver program's calls for this party.
pub struct Driver {
    party: PartyName,
    peers: Vec<PartyName>,
    store: HashMap<ObjectId, Slot>,
    actors: HashMap<ObjectId, ActorSlot>,
    pushed: HashSet<(ObjectId, PartyName)>,
    sender: Addr<SenderProxy>,
    receiver: Addr<ReceiverProxy>,
    expose_error_trace: bool,
    failed: Option<RuntimeError>,
    /// Waiters of [`Flush`]: resolved when no push waits for a value.
    flushed: Vec<oneshot::Sender<()>>,
}

impl Driver {
    pub(crate) fn new(
        party: PartyName,
        peers: Vec<PartyName>,
        sender: Addr<SenderProxy>,
        receiver: Addr<ReceiverProxy>,
        expose_error_trace: bool,
    ) -> Self {
        Self {
            party,
            peers,
            store: HashMap::new(),
            actors: HashMap::new(),
            pushed: HashSet::new(),
            sender,
            receiver,
            expose_error_trace,
            failed: None,
            flushed: Vec::new(),
        }
    }

    fn pushes_waiting(&self) -> bool {
        self.store
            .values()
            .any(|s| matches!(s.state, SlotState::Pending(_)) && !s.pushes.is_empty())
    }

    fn check_flushed(&mut self) {
        if !self.flushed.is_empty() && !self.pushes_waiting() {
            for tx in self.flushed.drain(..) {
                let _ = tx.send(());
            }
        }
    }

    /// The value of a local object, now or when it is ready.
    fn local_value(&mut self, id: ObjectId) -> Pin<Box<dyn Future<Output = Value> + Send>> {
        let Some(slot) = self.store.get_mut(&id) else {
            let error = RuntimeError::UnknownObject {
                object: id,
                party: self.party.clone(),
            };
            return Box::pin(async move { Err(error) });
        };
        match &mut slot.state {
            SlotState::Ready(v) => {
                let v = v.clone();
                Box::pin(async move { v })
            }
            SlotState::Pending(waiters) => {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                Box::pin(async move { rx.await.unwrap_or(Err(RuntimeError::ActorGone("driver"))) })
            }
        }
    }

    fn value_of(&mut self, r: &ObjRef) -> Pin<Box<dyn Future<Output = Value> + Send>> {
        if r.owner == self.party {
            return self.local_value(r.id);
        }
        let request = self.receiver.send(Await {
            src: r.owner.clone(),
            id: r.id,
            fingerprint: r.fingerprint,
        });
        Box::pin(async move {
            request
                .await
                .unwrap_or(Err(RuntimeError::ActorGone("receiver")))
        })
    }

    fn resolve(&mut self, inputs: &[ObjRef]) -> InputsFuture {
        let futures: Vec<_> = inputs.iter().map(|r| self.value_of(r)).collect();
        Box::pin(async move {
            let mut values = Vec::with_capacity(futures.len());
            for f in futures {
                values.push(f.await?);
            }
            Ok(values)
        })
    }

    /// Pushes a local object to `dest` once (MISSION M3), now or when ready.
    fn push(&mut self, r: &ObjRef, dest: &PartyName, consumer: u64) {
        if !self.pushed.insert((r.id, dest.clone())) {
            return;
        }
        let Some(slot) = self.store.get_mut(&r.id) else {
            return;
        };
        match &slot.state {
            SlotState::Ready(v) => {
                let v = v.clone();
                let fp = slot.fingerprint;
                self.send_value(r.id, fp, dest.clone(), consumer, v);
            }
            SlotState::Pending(_) => slot.pushes.push((dest.clone(), consumer)),
        }
    }

    fn send_value(
        &self,
        id: ObjectId,
        fingerprint: u64,
        dest: PartyName,
        consumer: u64,
        value: Value,
    ) {
        match value {
            Ok(payload) => self.sender.do_send(SendObject {
                dest,
                object: id,
                consumer,
                fingerprint,
                payload,
            }),
            // A failed object travels as a RemoteError on the control
            // stream instead of the data (MISSION E2).
            Err(error) => self.sender.do_send(SendControl {
                dest,
                frame: ControlFrame::RemoteError(self.error_frame(id, &error)),
            }),
        }
    }

    fn error_frame(&self, id: ObjectId, error: &RuntimeError) -> RemoteErrorFrame {
        let expose = self.expose_error_trace;
        match error {
            RuntimeError::Task { error, object, .. } => RemoteErrorFrame {
                origin: self.party.clone(),
                object: id,
                origin_object: *object,
                kind: error.kind.clone(),
                message: expose.then(|| error.message.clone()),
                causes: if expose {
                    error.causes.clone()
                } else {
                    Vec::new()
                },
            },
            // Forwarded as received: the origin decided what crosses.
            RuntimeError::Remote {
                origin,
                object,
                kind,
                message,
                causes,
            } => RemoteErrorFrame {
                origin: origin.clone(),
                object: id,
                origin_object: *object,
                kind: kind.clone(),
                message: message.clone(),
                causes: causes.clone(),
            },
            other => RemoteErrorFrame {
                origin: self.party.clone(),
                object: id,
                origin_object: id,
                kind: error_kind(other).to_owned(),
                message: expose.then(|| other.to_string()),
                causes: Vec::new(),
            },
        }
    }

    fn complete(&mut self, outputs: &[ObjRef], result: Result<Vec<Bytes>, RuntimeError>) {
        let values: Vec<Value> = match result {
            Ok(values) if values.len() == outputs.len() => values.into_iter().map(Ok).collect(),
            Ok(values) => {
                let error = RuntimeError::Encode {
                    object: outputs.first().map_or(ObjectId(0), |o| o.id),
                    reason: format!(
                        "the call returned {} values for {} outputs",
                        values.len(),
                        outputs.len()
                    ),
                };
                vec![Err(error); outputs.len()]
            }
            Err(e) => vec![Err(e); outputs.len()],
        };
        for (out, value) in outputs.iter().zip(values) {
            let Some(slot) = self.store.get_mut(&out.id) else {
                continue;
            };
            if matches!(slot.state, SlotState::Ready(_)) {
                // Already settled (the job failed meanwhile): keep that.
                continue;
            }
            let SlotState::Pending(waiters) =
                std::mem::replace(&mut slot.state, SlotState::Ready(value.clone()))
            else {
                continue;
            };
            for w in waiters {
                let _ = w.send(value.clone());
            }
            let fp = slot.fingerprint;
            for (dest, consumer) in std::mem::take(&mut slot.pushes) {
                self.send_value(out.id, fp, dest, consumer, value.clone());
            }
            if let Err(error) = &value {
                if broadcasts(error) {
                    // A failure goes to every party, consumer or not
                    // (MISSION E3): whoever waits on this object, now or
                    // later, fails at once with the origin named.
                    for peer in self.peers.clone() {
                        if self.pushed.insert((out.id, peer.clone())) {
                            self.send_value(out.id, fp, peer, 0, value.clone());
                        }
                    }
                }
            }
        }
        self.check_flushed();
    }

    fn task_error(&self, outputs: &[ObjRef], error: TaskError) -> RuntimeError {
        RuntimeError::Task {
            party: self.party.clone(),
            object: outputs.first().map_or(ObjectId(0), |o| o.id),
            error,
        }
    }
}

fn error_kind(e: &RuntimeError) -> &'static str {
    match e {
        RuntimeError::Task { .. } => "TaskFailed",
        RuntimeError::Remote { .. } => "RemoteError",
        RuntimeError::PeerLost { .. } => "PeerLost",
        RuntimeError::Diverged { .. } => "Diverged",
        RuntimeError::Aborted { .. } => "Aborted",
        RuntimeError::Decode { .. } => "Decode",
        RuntimeError::Encode { .. } => "Encode",
        RuntimeError::UnknownParty { .. } => "UnknownParty",
        RuntimeError::UnknownObject { .. } => "UnknownObject",
        RuntimeError::ActorUnavailable { .. } => "ActorUnavailable",
        RuntimeError::Transport(_) => "Transport",
        RuntimeError::ShutDown { .. } => "ShutDown",
        RuntimeError::ActorGone(_) => "Internal",
        RuntimeError::Timeout { .. } => "Timeout",
        RuntimeError::NoSystem => "NoSystem",
    }
}

/// Whether a failed object is announced to every party. Failures that every
/// party learns otherwise (the job aborted, which a divergence also does, or
/// shut down; a call on an unknown party, which fails everywhere alike) are
/// not.
fn broadcasts(error: &RuntimeError) -> bool {
    !matches!(
        error,
        RuntimeError::Aborted { .. }
            | RuntimeError::Diverged { .. }
            | RuntimeError::ShutDown { .. }
            | RuntimeError::UnknownParty { .. }
            | RuntimeError::ActorGone(_)
    )
}

/// Runs `f`, turning a panic into a [`TaskError`].
pub(crate) fn run_catching<T>(f: impl FnOnce() -> Result<T, TaskError>) -> Result<T, TaskError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(TaskError::from_panic(payload.as_ref())),
    }
}

impl Actor for Driver {
    type Context = Context<Self>;
}

/// A call of the driver program, in program order.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Submit(pub(crate) Call);

impl Handler<Submit> for Driver {
    type Result = ();

    fn handle(&mut self, Submit(call): Submit, ctx: &mut Self::Context) {
        let Call {
            party,
            inputs,
            outputs,
            consumer,
            work,
        } = call;
        if party != self.party {
            // Not ours: push our inputs to where it runs (M1, M3).
            let me = self.party.clone();
            for input in inputs.iter().filter(|i| i.owner == me) {
                self.push(input, &party, consumer);
            }
            return;
        }
        for out in &outputs {
            let state = match &self.failed {
                Some(e) => SlotState::Ready(Err(e.clone())),
                None => SlotState::Pending(Vec::new()),
            };
            self.store.insert(
                out.id,
                Slot {
                    fingerprint: out.fingerprint,
                    state,
                    pushes: Vec::new(),
                },
            );
        }
        if self.failed.is_some() {
            return;
        }
        match work {
            Work::Task(f) => {
                let resolved = self.resolve(&inputs);
                ctx.spawn(resolved.into_actor(self).map(move |inputs, act, _| {
                    let result = inputs.and_then(|values| {
                        run_catching(|| f(values)).map_err(|e| act.task_error(&outputs, e))
                    });
                    act.complete(&outputs, result);
                }));
            }
            Work::NewActor { actor, ctor } => {
                let slot = match run_catching(ctor) {
                    Ok(state) => ActorSlot::Live(
                        ActorHost {
                            state,
                            party: self.party.clone(),
                            actor,
                        }
                        .start(),
                    ),
                    Err(e) => ActorSlot::Unavailable(format!("its constructor failed: {e}")),
                };
                self.actors.insert(actor, slot);
            }
            Work::Method { actor, f } => match self.actors.get(&actor) {
                Some(ActorSlot::Live(host)) => {
                    let host = host.clone();
                    let inputs = self.resolve(&inputs);
                    host.do_send(HostCall {
                        inputs,
                        f,
                        outputs,
                        driver: ctx.address(),
                    });
                }
                other => {
                    let reason = match other {
                        Some(ActorSlot::Unavailable(r)) => r.clone(),
                        _ => "no such actor was created here".to_owned(),
                    };
                    let error = RuntimeError::ActorUnavailable {
                        actor,
                        party: self.party.clone(),
                        reason,
                    };
                    self.complete(&outputs, Err(error));
                }
            },
            Work::Kill { actor } => {
                if let Some(ActorSlot::Live(host)) = self.actors.get(&actor) {
                    host.do_send(StopHost);
                }
                self.actors
                    .insert(actor, ActorSlot::Unavailable("it was killed".into()));
            }
            Work::Fail(error) => self.complete(&outputs, Err(error)),
        }
    }
}

/// The values of objects, in order; the owner of each object broadcasts it
/// to every party that has not received it (MISSION M4).
#[derive(Message)]
#[rtype(result = "Result<Vec<Bytes>, RuntimeError>")]
pub(crate) struct Get(pub(crate) Vec<ObjRef>);

impl Handler<Get> for Driver {
    type Result = ResponseFuture<Result<Vec<Bytes>, RuntimeError>>;

    fn handle(&mut self, Get(refs): Get, _: &mut Self::Context) -> Self::Result {
        if let Some(e) = &self.failed {
            let e = e.clone();
            return Box::pin(async move { Err(e) });
        }
        let me = self.party.clone();
        for r in refs.iter().filter(|r| r.owner == me) {
            for peer in self.peers.clone() {
                self.push(r, &peer, 0);
            }
        }
        self.resolve(&refs)
    }
}

/// A method body finished on its actor host.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Complete {
    outputs: Vec<ObjRef>,
    result: Result<Vec<Bytes>, RuntimeError>,
}

impl Handler<Complete> for Driver {
    type Result = ();
    fn handle(&mut self, msg: Complete, _: &mut Self::Context) {
        self.complete(&msg.outputs, msg.result);
    }
}

/// Fails every pending and later call (abort or shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct FailAll(pub(crate) RuntimeError);

impl Handler<FailAll> for Driver {
    type Result = ();
    fn handle(&mut self, FailAll(error): FailAll, _: &mut Self::Context) {
        for slot in self.store.values_mut() {
            if let SlotState::Pending(waiters) = &mut slot.state {
                for w in waiters.drain(..) {
                    let _ = w.send(Err(error.clone()));
                }
                slot.state = SlotState::Ready(Err(error.clone()));
                // Peers learn of the failure through the abort frame.
                slot.pushes.clear();
            }
        }
        for (_, actor) in self.actors.drain() {
            if let ActorSlot::Live(host) = actor {
                host.do_send(StopHost);
            }
        }
        self.failed.get_or_insert(error);
        self.check_flushed();
    }
}

/// Resolves when every push the driver has promised has been handed to the
/// sender: values still being computed for another party are waited for.
/// The first step of an intended shutdown (MISSION E8).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Flush;

impl Handler<Flush> for Driver {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, _: Flush, _: &mut Self::Context) -> Self::Result {
        if !self.pushes_waiting() {
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        self.flushed.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

/// Hosts one user actor; its calls run one at a time, in submission order
/// (MISSION M2).
pub(crate) struct ActorHost {
    state: Box<dyn std::any::Any + Send>,
    party: PartyName,
    actor: ObjectId,
}

impl Actor for ActorHost {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct HostCall {
    inputs: InputsFuture,
    f: MethodFn,
    outputs: Vec<ObjRef>,
    driver: Addr<Driver>,
}

impl Handler<HostCall> for ActorHost {
    type Result = ();
    fn handle(&mut self, msg: HostCall, ctx: &mut Self::Context) {
        let HostCall {
            inputs,
            f,
            outputs,
            driver,
        } = msg;
        // `wait` holds the mailbox until this call is done: calls run in order.
        ctx.wait(inputs.into_actor(self).map(move |inputs, act, _| {
            let result = inputs.and_then(|values| {
                run_catching(|| f(act.state.as_mut(), values)).map_err(|error| RuntimeError::Task {
                    party: act.party.clone(),
                    object: outputs.first().map_or(act.actor, |o| o.id),
                    error,
                })
            });
            driver.do_send(Complete { outputs, result });
        }));
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct StopHost;

impl Handler<StopHost> for ActorHost {
    type Result = ();
    fn handle(&mut self, _: StopHost, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
