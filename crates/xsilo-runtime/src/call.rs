//! What the facade submits: calls with their inputs and outputs, and the
//! type-erased work to run where the call is pinned.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use xsilo_wire::payload::Payload;
use xsilo_wire::{Consumer, Fingerprint, ObjectId, PartyName};

use crate::errors::{RuntimeError, TaskError};

/// A reference to a federated object: its id, its owner, and the call-site
/// fingerprint the local driver computed for it (promises M1, M8).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjRef {
    /// The object's id (the driver's sequence number).
    pub id: ObjectId,
    /// The party that produces it.
    pub owner: PartyName,
    /// Call-site fingerprint ([`Fingerprint::of_rust_call`],
    /// [`Fingerprint::of_python_call`]).
    pub fingerprint: Fingerprint,
}

/// A task body: takes the inputs' encoded values, returns the outputs'.
pub type TaskFn = Box<dyn FnOnce(Vec<Payload>) -> Result<Vec<Payload>, TaskError> + Send>;
/// An actor constructor.
pub type CtorFn = Box<dyn FnOnce() -> Result<Box<dyn Any + Send>, TaskError> + Send>;
/// An actor method body.
pub type MethodFn =
    Box<dyn FnOnce(&mut (dyn Any + Send), Vec<Payload>) -> Result<Vec<Payload>, TaskError> + Send>;
/// A boxed future that may borrow for `'a`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// An async task body: the future it returns runs on the party's async
/// executor, not on a worker.
pub type AsyncTaskFn =
    Box<dyn FnOnce(Vec<Payload>) -> BoxFuture<'static, Result<Vec<Payload>, TaskError>> + Send>;
/// An async actor method body; its future borrows the actor's state.
pub type AsyncMethodFn = Box<
    dyn for<'a> FnOnce(
            &'a mut (dyn Any + Send),
            Vec<Payload>,
        ) -> BoxFuture<'a, Result<Vec<Payload>, TaskError>>
        + Send,
>;

/// The work of a call, run only in the party it is pinned to.
pub enum Work {
    /// A stateless task, run on a worker.
    Task(TaskFn),
    /// A stateless async task, run on the party's async executor.
    AsyncTask(AsyncTaskFn),
    /// Create an actor; `Call::outputs` is empty and `actor` is its id.
    NewActor {
        /// The actor's id.
        actor: ObjectId,
        /// Its constructor.
        ctor: CtorFn,
    },
    /// Call a method of an actor; runs after the actor's earlier calls.
    Method {
        /// The actor's id.
        actor: ObjectId,
        /// The method body.
        f: MethodFn,
    },
    /// Call an async method of an actor; runs after the actor's earlier
    /// calls, and the next one waits until its future is done.
    AsyncMethod {
        /// The actor's id.
        actor: ObjectId,
        /// The method body.
        f: AsyncMethodFn,
    },
    /// Stop an actor (promise M6).
    Kill {
        /// The actor's id.
        actor: ObjectId,
    },
    /// Fail the outputs at once (for example a call on an unknown party);
    /// every party makes the same call, so every party fails alike.
    Fail(RuntimeError),
}

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Task(_) => f.write_str("Task"),
            Self::AsyncTask(_) => f.write_str("AsyncTask"),
            Self::AsyncMethod { actor, .. } => write!(f, "AsyncMethod({actor})"),
            Self::NewActor { actor, .. } => write!(f, "NewActor({actor})"),
            Self::Method { actor, .. } => write!(f, "Method({actor})"),
            Self::Kill { actor } => write!(f, "Kill({actor})"),
            Self::Fail(e) => write!(f, "Fail({e})"),
        }
    }
}

/// A call submitted by the driver program, in program order.
#[derive(Debug)]
pub struct Call {
    /// The party that runs it.
    pub party: PartyName,
    /// The federated objects it consumes, in argument order.
    pub inputs: Vec<ObjRef>,
    /// The objects it produces (owned by `party`).
    pub outputs: Vec<ObjRef>,
    /// The call as the parties that push its inputs name it (RayFed's
    /// downstream id): `Consumer::Call` of its first output, or of the
    /// actor's id.
    pub consumer: Consumer,
    /// What to run.
    pub work: Work,
    /// The call's name (`Party::named`), for errors and logs.
    pub name: Option<Arc<str>>,
}
