//! The user API of one party: [`Fed`], [`Party`], [`Actor`].

use std::marker::PhantomData;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use xsilo_runtime::{
    BoxFuture, Call, ObjRef, Releaser, Runtime, RuntimeError, Stats, TaskError, Work,
};
use xsilo_wire::payload::Payload;
use xsilo_wire::{Consumer, ObjectId, PartyName};

use crate::args::{ArgShape, FedArgs};
use crate::error::Error;
use crate::object::{encode_one, fingerprint, FedObject, Returns};
use crate::value::Value;

struct Inner {
    rt: Runtime,
    release: Releaser,
    seq: AtomicU64,
    progress: std::sync::Mutex<Option<ProgressReceiver>>,
}

/// Receives the progress reports of this party's large transfers
/// ([`Fed::progress`]).
pub type ProgressReceiver = tokio::sync::mpsc::Receiver<xsilo_transport::TransferProgress>;

/// One party's handle on a federated job: the same driver code runs in
/// every party, each with its own `Fed`.
///
/// Calls return at once with [`FedObject`] handles; values are computed
/// where the call is pinned and pushed where they are consumed. Clones
/// share one sequence of object ids: make the calls from one task (the
/// driver program), in the same order in every party. Calls made from
/// several tasks or threads at once get ids in an order other parties
/// cannot reproduce, which the fingerprints then report as a divergence.
#[derive(Clone)]
pub struct Fed {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Fed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fed")
            .field("party", self.inner.rt.party())
            .field("job", self.inner.rt.job())
            .finish()
    }
}

fn type_mismatch<T>(actor: ObjectId) -> TaskError {
    TaskError {
        kind: "ActorTypeMismatch".into(),
        message: format!("actor {actor} is not a {}", std::any::type_name::<T>()),
        causes: Vec::new(),
    }
}

fn decode_error(e: RuntimeError) -> TaskError {
    TaskError {
        kind: "DecodeError".into(),
        message: e.to_string(),
        causes: Vec::new(),
    }
}

impl Fed {
    pub(crate) fn new(rt: Runtime, progress: Option<ProgressReceiver>) -> Self {
        Self {
            inner: Arc::new(Inner {
                release: rt.releaser(),
                rt,
                seq: AtomicU64::new(0),
                progress: std::sync::Mutex::new(progress),
            }),
        }
    }

    /// The progress of this party's large transfers, as they happen: for
    /// every object of 32 MiB or more sent or received over QUIC, up to
    /// eight reports (peer, object, direction, bytes done of total), the
    /// last when it is complete. The same reports are logged at INFO
    /// (`xsilo_runtime`). The first call takes the receiver (later calls
    /// and simulations get `None`); it holds 64 reports, and reports that
    /// find it full are dropped, so a slow reader never holds up a
    /// transfer.
    ///
    /// ```no_run
    /// # async fn f(fed: &xsilo::Fed) {
    /// if let Some(mut progress) = fed.progress() {
    ///     tokio::task::spawn_local(async move {
    ///         while let Some(p) = progress.recv().await {
    ///             eprintln!("{} {} {}: {} of {} bytes", p.direction, p.object, p.peer, p.done, p.total);
    ///         }
    ///     });
    /// }
    /// # }
    /// ```
    pub fn progress(&self) -> Option<ProgressReceiver> {
        self.inner
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn handle<R>(&self, r: &ObjRef) -> FedObject<R> {
        FedObject::new(r, &self.inner.release)
    }

    /// This party's name.
    pub fn me(&self) -> &PartyName {
        self.inner.rt.party()
    }

    /// The job's name.
    pub fn job(&self) -> &xsilo_wire::JobName {
        self.inner.rt.job()
    }

    /// The other parties of the job.
    pub fn peers(&self) -> &[PartyName] {
        self.inner.rt.peers()
    }

    /// Calls pinned to `name`. An unknown name makes every call on it fail
    /// (in every party alike) with [`RuntimeError::UnknownParty`].
    pub fn party(&self, name: &str) -> Party<'_> {
        let known = name
            .parse::<PartyName>()
            .ok()
            .filter(|p| p == self.me() || self.peers().contains(p));
        let name = known.ok_or_else(|| RuntimeError::UnknownParty {
            party: name.to_owned(),
            known: std::iter::once(self.me())
                .chain(self.peers())
                .map(PartyName::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        });
        Party {
            fed: self,
            name,
            label: None,
        }
    }

    fn next_id(&self) -> ObjectId {
        ObjectId(self.inner.seq.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn outputs(
        &self,
        owner: &PartyName,
        count: usize,
        site: &Location<'_>,
        label: Option<&str>,
    ) -> Vec<ObjRef> {
        (0..count)
            .map(|i| ObjRef {
                id: self.next_id(),
                owner: owner.clone(),
                fingerprint: fingerprint(site, i, label),
            })
            .collect()
    }

    /// Submits a call on `party` (or fails its outputs if the party is
    /// unknown) and returns the output refs.
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        party: &Result<PartyName, RuntimeError>,
        label: &Option<Arc<str>>,
        inputs: Vec<ObjRef>,
        count: usize,
        site: &Location<'_>,
        work: impl FnOnce(&[ObjRef]) -> Work,
    ) -> Vec<ObjRef> {
        let (owner, failed) = match party {
            Ok(p) => (p.clone(), None),
            Err(e) => (self.me().clone(), Some(Work::Fail(e.clone()))),
        };
        let outputs = self.outputs(&owner, count, site, label.as_deref());
        let work = match failed {
            Some(w) => w,
            None => work(&outputs),
        };
        self.inner.rt.submit(Call {
            party: owner,
            inputs,
            consumer: Consumer::Call(outputs.first().map_or(ObjectId(0), |o| o.id)),
            outputs: outputs.clone(),
            work,
            name: label.clone(),
        });
        outputs
    }

    /// The values of FedObjects: one (`&obj`), several (`(&a, &b)`,
    /// `vec![a, b]`), in any shape [`FedArgs`] allows. Every party calling
    /// `get` on the same objects receives the same values: the owner
    /// broadcasts each value to every party that has not received it
    /// (promise M4).
    pub async fn get<A: FedArgs>(&self, args: A) -> Result<A::Value, Error> {
        let mut refs = Vec::new();
        args.refs(&mut refs);
        let shape = args.shape();
        let values = self.inner.rt.get(refs).await?;
        Ok(shape.resolve(&mut values.into_iter())?)
    }

    /// Intended shutdown (promise E8): waits until every value this party
    /// sent is acknowledged, says goodbye to the peers, and stops. Runs once
    /// however often it is called; every call gets its result.
    pub async fn shutdown(&self) -> Result<(), Error> {
        Ok(self.inner.rt.shutdown().await?)
    }

    /// Objects and bytes sent to and received from each peer so far, and
    /// the objects, bytes and actors this party holds now (promise L1).
    pub async fn stats(&self) -> Stats {
        self.inner.rt.stats().await
    }

    /// The runtime under this handle (for tools and tests).
    pub fn runtime(&self) -> &Runtime {
        &self.inner.rt
    }
}

/// Calls pinned to one party: `fed.party("bob").task(...)`.
#[derive(Debug)]
pub struct Party<'f> {
    fed: &'f Fed,
    name: Result<PartyName, RuntimeError>,
    label: Option<Arc<str>>,
}

impl Party<'_> {
    /// Names the calls made through this `Party`: the name goes into their
    /// call-site fingerprint, their log lines and their errors, for example
    /// `task 'train' (object #12) failed in party 'alice' (TrainingDiverged)`.
    /// Every party's driver gives the same names (a name that differs is a
    /// divergence, M8).
    ///
    /// ```no_run
    /// # async fn f(fed: &xsilo::Fed) {
    /// let model = fed.party("alice").named("train").task((), |()| vec![0.5f32; 4]);
    /// # }
    /// ```
    pub fn named(mut self, name: &str) -> Self {
        self.label = Some(Arc::from(name));
        self
    }

    /// Like [`Party::task`] for I/O-bound work: `f` returns a future, which
    /// runs on the party's async executor (not holding a worker while it
    /// waits), concurrently with other bodies.
    ///
    /// ```no_run
    /// # async fn f(fed: &xsilo::Fed) {
    /// let rows = fed.party("bob").task_async((), |()| async {
    ///     tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    ///     42u64
    /// });
    /// # }
    /// ```
    #[track_caller]
    pub fn task_async<A, R, F, Fut>(&self, args: A, f: F) -> FedObject<R>
    where
        A: FedArgs + Send + 'static,
        R: Value,
        F: FnOnce(A::Value) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = R> + Send + 'static,
    {
        self.try_task_async(args, move |v| {
            let fut = f(v);
            async move { Ok::<R, std::convert::Infallible>(fut.await) }
        })
    }

    /// Like [`Party::task_async`] for a fallible future: an `Err` (or a
    /// panic) makes the FedObject an error (promise E1).
    #[track_caller]
    pub fn try_task_async<A, R, E, F, Fut>(&self, args: A, f: F) -> FedObject<R>
    where
        A: FedArgs + Send + 'static,
        R: Value,
        E: std::error::Error + 'static,
        F: FnOnce(A::Value) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<R, E>> + Send + 'static,
    {
        let site = Location::caller();
        let mut inputs = Vec::new();
        args.refs(&mut inputs);
        let shape = args.shape();
        let outputs = self
            .fed
            .submit(&self.name, &self.label, inputs, 1, site, |_| {
                Work::AsyncTask(Box::new(move |values: Vec<Payload>| {
                    let v = shape.resolve(&mut values.into_iter()).map_err(decode_error);
                    Box::pin(async move {
                        let r = f(v?).await.map_err(|e| TaskError::from_error(&e))?;
                        Ok(vec![encode_one(r)?])
                    })
                }))
            });
        self.fed.handle(&outputs[0])
    }

    /// Runs `f` on the inputs' values in this party; its result is a
    /// FedObject owned by this party. Other parties only advance their
    /// sequence and push the inputs they own here.
    #[track_caller]
    pub fn task<A, R, F>(&self, args: A, f: F) -> FedObject<R>
    where
        A: FedArgs + Send + 'static,
        R: Value,
        F: FnOnce(A::Value) -> R + Send + 'static,
    {
        self.try_task(args, move |v| Ok::<R, std::convert::Infallible>(f(v)))
    }

    /// Like [`Party::task`] for a fallible function: an `Err` makes the
    /// FedObject an error (promise E1), as does a panic.
    #[track_caller]
    pub fn try_task<A, R, E, F>(&self, args: A, f: F) -> FedObject<R>
    where
        A: FedArgs + Send + 'static,
        R: Value,
        E: std::error::Error + 'static,
        F: FnOnce(A::Value) -> Result<R, E> + Send + 'static,
    {
        let site = Location::caller();
        let mut inputs = Vec::new();
        args.refs(&mut inputs);
        let shape = args.shape();
        let outputs = self
            .fed
            .submit(&self.name, &self.label, inputs, 1, site, |_| {
                Work::Task(Box::new(move |values: Vec<Payload>| {
                    let v = shape
                        .resolve(&mut values.into_iter())
                        .map_err(decode_error)?;
                    let r = f(v).map_err(|e| TaskError::from_error(&e))?;
                    Ok(vec![encode_one(r)?])
                }))
            });
        self.fed.handle(&outputs[0])
    }

    /// A task returning several values as several FedObjects (promise M5):
    /// `let (a, b) = party.task_multi(args, |v| (x, y));`
    #[track_caller]
    pub fn task_multi<A, R, F>(&self, args: A, f: F) -> R::Handles
    where
        A: FedArgs + Send + 'static,
        R: Returns,
        F: FnOnce(A::Value) -> R + Send + 'static,
    {
        let site = Location::caller();
        let mut inputs = Vec::new();
        args.refs(&mut inputs);
        let shape = args.shape();
        let outputs = self
            .fed
            .submit(&self.name, &self.label, inputs, R::COUNT, site, |_| {
                Work::Task(Box::new(move |values: Vec<Payload>| {
                    let v = shape
                        .resolve(&mut values.into_iter())
                        .map_err(decode_error)?;
                    f(v).encode_all()
                }))
            });
        R::handles(&outputs, &self.fed.inner.release)
    }

    /// Creates an actor living in this party only; `ctor` runs there
    /// (promise M2).
    #[track_caller]
    pub fn actor<T, F>(&self, ctor: F) -> Actor<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let id = self.fed.next_id();
        let owner = match &self.name {
            Ok(p) => p.clone(),
            Err(_) => self.fed.me().clone(),
        };
        let work = match &self.name {
            Ok(_) => Work::NewActor {
                actor: id,
                ctor: Box::new(move || Ok(Box::new(ctor()) as Box<dyn std::any::Any + Send>)),
            },
            Err(e) => Work::Fail(e.clone()),
        };
        self.fed.inner.rt.submit(Call {
            party: owner.clone(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            consumer: Consumer::Call(id),
            work,
            name: self.label.clone(),
        });
        Actor {
            inner: Arc::new(ActorInner {
                fed: self.fed.clone(),
                id,
                owner: self.name.clone(),
            }),
            label: self.label.clone(),
            _state: PhantomData,
        }
    }
}

/// What all clones of an actor handle share; when the last one drops, the
/// actor's party frees it (promise L1).
struct ActorInner {
    fed: Fed,
    id: ObjectId,
    owner: Result<PartyName, RuntimeError>,
}

impl Drop for ActorInner {
    fn drop(&mut self) {
        self.fed.inner.release.actor(self.id);
    }
}

/// A stateful object living in one party; its method calls run there, in
/// the order they were made (promise M2). It lives until it is killed or
/// the last clone of its handle is dropped (in every party alike).
pub struct Actor<T> {
    inner: Arc<ActorInner>,
    label: Option<Arc<str>>,
    _state: PhantomData<fn() -> T>,
}

impl<T> Clone for Actor<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            label: self.label.clone(),
            _state: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Actor<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner.owner {
            Ok(p) => write!(f, "Actor({} in '{p}')", self.inner.id),
            Err(_) => write!(f, "Actor({} of an unknown party)", self.inner.id),
        }
    }
}

impl<T: Send + 'static> Actor<T> {
    /// Calls a method: `counter.call(|c| c.inc(1))`.
    #[track_caller]
    pub fn call<R, F>(&self, f: F) -> FedObject<R>
    where
        R: Value,
        F: FnOnce(&mut T) -> R + Send + 'static,
    {
        self.try_call_with((), move |s, ()| Ok::<R, std::convert::Infallible>(f(s)))
    }

    /// Calls a method with FedObject arguments.
    #[track_caller]
    pub fn call_with<A, R, F>(&self, args: A, f: F) -> FedObject<R>
    where
        A: FedArgs + Send + 'static,
        R: Value,
        F: FnOnce(&mut T, A::Value) -> R + Send + 'static,
    {
        self.try_call_with(args, move |s, v| Ok::<R, std::convert::Infallible>(f(s, v)))
    }

    /// Calls a fallible method: an `Err` (or a panic) makes the FedObject
    /// an error (promise E1).
    #[track_caller]
    pub fn try_call_with<A, R, E, F>(&self, args: A, f: F) -> FedObject<R>
    where
        A: FedArgs + Send + 'static,
        R: Value,
        E: std::error::Error + 'static,
        F: FnOnce(&mut T, A::Value) -> Result<R, E> + Send + 'static,
    {
        let outputs = self.method(args, 1, Location::caller(), move |state, v| {
            let r = f(state, v).map_err(|e| TaskError::from_error(&e))?;
            Ok(vec![encode_one(r)?])
        });
        self.inner.fed.handle(&outputs[0])
    }

    /// A method returning several values as several FedObjects (M5).
    #[track_caller]
    pub fn call_multi<A, R, F>(&self, args: A, f: F) -> R::Handles
    where
        A: FedArgs + Send + 'static,
        R: Returns,
        F: FnOnce(&mut T, A::Value) -> R + Send + 'static,
    {
        let outputs = self.method(args, R::COUNT, Location::caller(), move |state, v| {
            f(state, v).encode_all()
        });
        R::handles(&outputs, &self.inner.fed.inner.release)
    }

    /// This actor's handle, naming the calls made through it (see
    /// [`Party::named`]).
    pub fn named(&self, name: &str) -> Self {
        Self {
            label: Some(Arc::from(name)),
            ..self.clone()
        }
    }

    /// Calls an async method, for I/O-bound work: `f` gets the state and the
    /// arguments' values and returns a boxed future that may borrow the
    /// state; it runs on the party's async executor. The actor's calls, sync
    /// and async, still run one at a time in the order they were made: the
    /// next waits until this future is done.
    ///
    /// ```no_run
    /// # async fn f(fed: &xsilo::Fed) {
    /// struct Cache(Vec<u64>);
    /// let cache = fed.party("bob").actor(|| Cache(Vec::new()));
    /// let n = cache.call_async((), |c, ()| Box::pin(async move {
    ///     tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    ///     c.0.push(1);
    ///     c.0.len()
    /// }));
    /// # }
    /// ```
    #[track_caller]
    pub fn call_async<A, R, F>(&self, args: A, f: F) -> FedObject<R>
    where
        A: FedArgs + Send + 'static,
        R: Value,
        F: for<'a> FnOnce(&'a mut T, A::Value) -> BoxFuture<'a, R> + Send + 'static,
    {
        let site = Location::caller();
        let mut inputs = Vec::new();
        args.refs(&mut inputs);
        let shape = args.shape();
        let actor = self.inner.id;
        let outputs =
            self.inner
                .fed
                .submit(&self.inner.owner, &self.label, inputs, 1, site, move |_| {
                    Work::AsyncMethod {
                        actor,
                        f: Box::new(move |state, values| {
                            let Some(state) = state.downcast_mut::<T>() else {
                                let e = type_mismatch::<T>(actor);
                                return Box::pin(async move { Err(e) });
                            };
                            let v = match shape.resolve(&mut values.into_iter()) {
                                Ok(v) => v,
                                Err(e) => {
                                    let e = decode_error(e);
                                    return Box::pin(async move { Err(e) });
                                }
                            };
                            let fut = f(state, v);
                            Box::pin(async move {
                                let r = fut.await;
                                Ok(vec![encode_one(r)?])
                            })
                        }),
                    }
                });
        self.inner.fed.handle(&outputs[0])
    }

    fn method<A, F>(&self, args: A, count: usize, site: &Location<'_>, f: F) -> Vec<ObjRef>
    where
        A: FedArgs + Send + 'static,
        F: FnOnce(&mut T, A::Value) -> Result<Vec<Payload>, TaskError> + Send + 'static,
    {
        let mut inputs = Vec::new();
        args.refs(&mut inputs);
        let shape = args.shape();
        let actor = self.inner.id;
        self.inner.fed.submit(
            &self.inner.owner,
            &self.label,
            inputs,
            count,
            site,
            move |_| Work::Method {
                actor,
                f: Box::new(move |state, values| {
                    let Some(state) = state.downcast_mut::<T>() else {
                        return Err(type_mismatch::<T>(actor));
                    };
                    let v = shape
                        .resolve(&mut values.into_iter())
                        .map_err(decode_error)?;
                    f(state, v)
                }),
            },
        )
    }

    /// Stops the actor in its party (promise M6). Calls made before `kill`
    /// still run; later calls fail with [`RuntimeError::ActorUnavailable`].
    pub fn kill(&self) {
        if let Ok(owner) = &self.inner.owner {
            self.inner.fed.inner.rt.submit(Call {
                party: owner.clone(),
                inputs: Vec::new(),
                outputs: Vec::new(),
                consumer: Consumer::Call(self.inner.id),
                work: Work::Kill {
                    actor: self.inner.id,
                },
                name: None,
            });
        }
    }
}
