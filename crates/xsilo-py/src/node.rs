//! One party's runtime seen from Python: calls, handles, `get`, shutdown.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use xsilo_runtime::{Call, ObjRef, Releaser, RuntimeError, TaskError, Work};
use xsilo_wire::payload::Payload;
use xsilo_wire::{Consumer, Fingerprint, ObjectId, PartyName};

use crate::codec::{self, Hooks};

create_exception!(
    _xsilo,
    RuntimeFailure,
    PyException,
    "A failure of the runtime, with args (variant, text, origin, kind, message, causes, \
     exception): the package turns it into FedRemoteError, TaskError or XsiloError; \
     `exception` is the original exception object of a task that failed in this party, when \
     it is still kept."
);

/// A handle on a federated object; when the last Python reference to it
/// goes, this party frees its copy once nothing it owes needs it.
#[pyclass(frozen, module = "xsilo._xsilo", name = "FedObject")]
pub(crate) struct FedObject {
    id: ObjectId,
    owner: PartyName,
    fingerprint: Fingerprint,
    release: Releaser,
    /// The `fed.init` that made it ([`Node::session`]).
    session: u64,
}

impl Drop for FedObject {
    fn drop(&mut self) {
        self.release.object(self.id);
    }
}

#[pymethods]
impl FedObject {
    /// The party that produces the value.
    fn get_party(&self) -> String {
        self.owner.to_string()
    }

    /// The object's id (its sequence number in the driver program).
    fn get_fed_task_id(&self) -> u64 {
        self.id.0
    }

    fn __repr__(&self) -> String {
        format!("FedObject({} of '{}')", self.id, self.owner)
    }
}

impl FedObject {
    fn obj_ref(&self) -> ObjRef {
        ObjRef {
            id: self.id,
            owner: self.owner.clone(),
            fingerprint: self.fingerprint,
        }
    }
}

/// A handle on an actor; when the last Python reference to it goes (in
/// every party alike), the actor's party frees it.
#[pyclass(frozen, module = "xsilo._xsilo", name = "ActorRef")]
pub(crate) struct ActorRef {
    id: ObjectId,
    owner: PartyName,
    release: Releaser,
    /// The `fed.init` that made it ([`Node::session`]).
    session: u64,
    /// For an actor whose constructor takes FedObjects: the output of the
    /// call that builds it, an input of every later method call, so that a
    /// constructor (or an argument of it) that failed fails them with its
    /// own error, in every party.
    built: Option<Py<FedObject>>,
}

impl Drop for ActorRef {
    fn drop(&mut self) {
        self.release.actor(self.id);
    }
}

#[pymethods]
impl ActorRef {
    /// The party the actor lives in.
    fn get_party(&self) -> String {
        self.owner.to_string()
    }

    fn __repr__(&self) -> String {
        format!("ActorRef({} in '{}')", self.id, self.owner)
    }
}

/// How many original exceptions of failed bodies a party keeps for
/// `TaskError.cause` (the most recent ones; older failures get a cause
/// rebuilt from the error's kind, message and trace). Their frames' local
/// variables are cleared when they are kept, so what a failed body held
/// (a model, a batch) is not kept with them.
const KEPT_EXCEPTIONS: usize = 256;

/// The original exception objects of bodies that failed in this party, by
/// the objects they were to produce, so that the owner's `fed.get` can hand
/// the very object to the driver as `.cause` (RayFed's shape). Bounded.
#[derive(Default)]
pub(crate) struct Exceptions(Mutex<VecDeque<(ObjectId, Py<PyAny>)>>);

impl Exceptions {
    fn keep(&self, outputs: &[ObjectId], exception: &Bound<'_, PyAny>) {
        if let Ok(tb) = exception.getattr("__traceback__") {
            if !tb.is_none() {
                let _ = exception
                    .py()
                    .import("traceback")
                    .and_then(|m| m.call_method1("clear_frames", (tb,)));
            }
        }
        let Ok(mut kept) = self.0.lock() else {
            return;
        };
        for id in outputs {
            if kept.len() == KEPT_EXCEPTIONS {
                kept.pop_front();
            }
            kept.push_back((*id, exception.clone().unbind()));
        }
    }

    fn find(&self, py: Python<'_>, id: ObjectId) -> Option<Py<PyAny>> {
        let kept = self.0.lock().ok()?;
        kept.iter()
            .rev()
            .find(|(k, _)| *k == id)
            .map(|(_, e)| e.clone_ref(py))
    }
}

/// An actor's state as this party keeps it: built by its constructor, or
/// waiting for the constructor's FedObject arguments, or failed to build.
enum PyActor {
    /// Waiting for the call that builds it (a constructor that takes
    /// FedObjects runs as the actor's first call, once they are here).
    Unbuilt,
    /// The instance.
    Ready(Py<PyAny>),
    /// The constructor failed with this error; every method fails with it.
    Failed(TaskError),
}

/// One party of a job.
#[pyclass(frozen, module = "xsilo._xsilo")]
pub(crate) struct Node {
    fed: xsilo::Fed,
    release: Releaser,
    seq: AtomicU64,
    tokio: tokio::runtime::Runtime,
    hooks: Arc<Hooks>,
    /// `xsilo._api._run(func, args, kwargs, values, num_returns)`: fills the
    /// argument template and calls.
    runner: Arc<Py<PyAny>>,
    /// The original exceptions of failed bodies.
    exceptions: Arc<Exceptions>,
    /// This `fed.init`'s number in the process: handles carry it, and a
    /// handle of an earlier `fed.init` is refused instead of naming an
    /// object of this job that has the same id.
    session: u64,
    /// Whether a sending failure ends the process (the Python side waits
    /// for that exit instead of raising the abort it sees first).
    exits_on_sending_failure: bool,
}

/// Tells when a party's runtime has stopped for good (its sockets closed),
/// for `fed.shutdown()` to wait on before a new `fed.init` binds the same
/// address.
#[pyclass(frozen, module = "xsilo._xsilo")]
pub(crate) struct Stopped(Option<xsilo_runtime::Stopped>);

#[pymethods]
impl Stopped {
    /// Waits, at most `seconds`, with the GIL released; whether it stopped.
    fn wait(&self, py: Python<'_>, seconds: f64) -> bool {
        let Some(stopped) = &self.0 else {
            return true;
        };
        let bound = std::time::Duration::from_secs_f64(seconds.clamp(0.0, 3600.0));
        py.detach(|| stopped.wait(bound))
    }
}

/// The sessions handed out in this process.
static SESSIONS: AtomicU64 = AtomicU64::new(0);

fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// The exception for a runtime failure: its variant, its text, and for a
/// failed task where it began and what it was.
fn failure(e: &RuntimeError) -> PyErr {
    failure_with(e, None)
}

/// [`failure`], with the original exception of a body that failed here.
fn failure_with(e: &RuntimeError, exception: Option<Py<PyAny>>) -> PyErr {
    let text = e.to_string();
    let (variant, origin, kind, message, causes) = match e {
        RuntimeError::Remote {
            origin,
            kind,
            message,
            causes,
            ..
        } => (
            "remote",
            Some(origin.to_string()),
            Some(kind.clone()),
            message.clone(),
            causes.clone(),
        ),
        RuntimeError::Task { party, error, .. } => (
            "task",
            Some(party.to_string()),
            Some(error.kind.clone()),
            Some(error.message.clone()),
            error.causes.clone(),
        ),
        RuntimeError::PeerLost { .. } => ("peer_lost", None, None, None, Vec::new()),
        RuntimeError::Diverged { .. } => ("diverged", None, None, None, Vec::new()),
        RuntimeError::Aborted { by, .. } => {
            ("aborted", Some(by.to_string()), None, None, Vec::new())
        }
        RuntimeError::ActorUnavailable { .. } => {
            ("actor_unavailable", None, None, None, Vec::new())
        }
        RuntimeError::ShutDown { .. } => ("shut_down", None, None, None, Vec::new()),
        _ => ("runtime", None, None, None, Vec::new()),
    };
    RuntimeFailure::new_err((variant, text, origin, kind, message, causes, exception))
}

/// FNV-1a of the Python call site (file name, line), the output index and
/// the call's name: the same in every party running the same driver
/// ([`Fingerprint::of_python_call`]).
fn fingerprint(file: &str, line: u32, index: usize, name: Option<&str>) -> Fingerprint {
    Fingerprint::of_python_call(file, line, index, name)
}

/// A Python exception as the error of an object: its class name is the
/// kind that crosses the silo boundary; the message and the traceback cross
/// only with `expose_error_trace`.
fn task_error(py: Python<'_>, err: &PyErr) -> TaskError {
    let kind = err
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    let message = err
        .value(py)
        .str()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let trace = py
        .import("traceback")
        .and_then(|tb| {
            tb.call_method1(
                "format_exception",
                (err.get_type(py), err.value(py), err.traceback(py)),
            )
        })
        .and_then(|lines| lines.extract::<Vec<String>>())
        .map(|lines| lines.concat())
        .unwrap_or_default();
    TaskError {
        kind,
        message,
        causes: if trace.is_empty() {
            Vec::new()
        } else {
            vec![trace]
        },
    }
}

/// `module.Name` of an exception's class (just `Name` for a builtin), as
/// Python prints it in a traceback: `_pickle.UnpicklingError`.
fn type_path(py: Python<'_>, err: &PyErr) -> String {
    let ty = err.get_type(py);
    let name = ty
        .qualname()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    match ty.module().map(|m| m.to_string()) {
        Ok(module) if module != "builtins" => format!("{module}.{name}"),
        _ => name,
    }
}

/// What a body needs besides its code: the codecs, where its inputs come
/// from (to name the party in a decoding error), the objects it makes and
/// where to keep its exception if it fails.
struct Body {
    hooks: Arc<Hooks>,
    exceptions: Arc<Exceptions>,
    outputs: Vec<ObjectId>,
    sources: Vec<PartyName>,
    me: PartyName,
}

impl Body {
    /// What a body does with the GIL held: decode the inputs, call, encode
    /// the results. A failure of the call keeps its exception for the
    /// owner's `fed.get`.
    fn run(
        &self,
        target: impl FnOnce(Python<'_>, Bound<'_, PyList>) -> PyResult<Py<PyAny>>,
        values: Vec<Payload>,
        count: usize,
    ) -> Result<Vec<Payload>, TaskError> {
        crate::threads::attach(|py| {
            let decoded = PyList::empty(py);
            for (i, v) in values.into_iter().enumerate() {
                let bytes = v.to_bytes();
                let local = self.sources.get(i) == Some(&self.me);
                let value = codec::decode(py, &bytes, &self.hooks, local).map_err(|e| {
                    let from = self
                        .sources
                        .get(i)
                        .map_or_else(|| "a peer".to_owned(), |p| format!("party '{p}'"));
                    TaskError {
                        kind: "DecodeError".into(),
                        message: format!(
                            "a value from {from} was refused: {}: {}",
                            type_path(py, &e),
                            e.value(py)
                        ),
                        causes: Vec::new(),
                    }
                })?;
                decoded.append(value).map_err(|e| task_error(py, &e))?;
            }
            let out = target(py, decoded).map_err(|e| {
                self.exceptions.keep(&self.outputs, e.value(py).as_any());
                task_error(py, &e)
            })?;
            let out = out.bind(py);
            let results: Vec<Bound<'_, PyAny>> = if count == 1 {
                vec![out.clone()]
            } else {
                let items: Vec<Bound<'_, PyAny>> = out.extract().map_err(|e| task_error(py, &e))?;
                if items.len() != count {
                    return Err(TaskError {
                        kind: "ValueError".into(),
                        message: format!(
                            "the call has num_returns={count} but returned {} values",
                            items.len()
                        ),
                        causes: Vec::new(),
                    });
                }
                items
            };
            results
                .iter()
                .map(|r| {
                    codec::encode(r, &self.hooks)
                        .map(Payload::from)
                        .map_err(|e| task_error(py, &e))
                })
                .collect()
        })
    }
}

/// A handle of an earlier `fed.init` of this process.
fn stale(what: &str, id: ObjectId, owner: &PartyName) -> PyErr {
    value_error(format!(
        "this {what} ({id} of party '{owner}') belongs to an earlier fed.init() of this \
         process; handles do not outlive fed.shutdown()"
    ))
}

/// An actor's state that is not a built Python instance (an internal
/// error: the runtime gave a method another actor's state).
fn not_python(id: ObjectId) -> TaskError {
    TaskError {
        kind: "ActorTypeMismatch".into(),
        message: format!("actor {id} is not a built Python object"),
        causes: Vec::new(),
    }
}

impl Node {
    /// The references of `handles`, after checking that each belongs to
    /// this `fed.init` (a handle kept across `fed.shutdown()` and a new
    /// `fed.init` would otherwise name this job's object of the same id).
    fn refs(&self, handles: &[PyRef<'_, FedObject>]) -> PyResult<Vec<ObjRef>> {
        handles
            .iter()
            .map(|h| {
                if h.session == self.session {
                    Ok(h.obj_ref())
                } else {
                    Err(stale("FedObject", h.id, &h.owner))
                }
            })
            .collect()
    }

    fn check_actor(&self, actor: &ActorRef) -> PyResult<()> {
        if actor.session == self.session {
            Ok(())
        } else {
            Err(stale("actor", actor.id, &actor.owner))
        }
    }

    fn next_id(&self) -> ObjectId {
        ObjectId(self.seq.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn party_of(&self, name: &str) -> PyResult<PartyName> {
        let known = name
            .parse::<PartyName>()
            .ok()
            .filter(|p| p == self.fed.me() || self.fed.peers().contains(p));
        known.ok_or_else(|| {
            let all: Vec<&str> = std::iter::once(self.fed.me())
                .chain(self.fed.peers())
                .map(PartyName::as_str)
                .collect();
            value_error(format!(
                "party '{name}' is not a party of this job (known: {})",
                all.join(", ")
            ))
        })
    }

    fn handles(&self, outputs: &[ObjRef]) -> Vec<FedObject> {
        outputs
            .iter()
            .map(|r| FedObject {
                id: r.id,
                owner: r.owner.clone(),
                fingerprint: r.fingerprint,
                release: self.release.clone(),
                session: self.session,
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        party: PartyName,
        site: (&str, u32),
        name: Option<String>,
        inputs: Vec<ObjRef>,
        count: usize,
        work: impl FnOnce(Body) -> Work,
        consumer: Option<ObjectId>,
    ) -> Vec<ObjRef> {
        let outputs: Vec<ObjRef> = (0..count)
            .map(|i| ObjRef {
                id: self.next_id(),
                owner: party.clone(),
                fingerprint: fingerprint(site.0, site.1, i, name.as_deref()),
            })
            .collect();
        let work = work(Body {
            hooks: self.hooks.clone(),
            exceptions: self.exceptions.clone(),
            outputs: outputs.iter().map(|o| o.id).collect(),
            sources: inputs.iter().map(|o| o.owner.clone()).collect(),
            me: self.fed.me().clone(),
        });
        self.fed.runtime().submit(Call {
            party,
            inputs,
            consumer: Consumer::Call(
                consumer.unwrap_or_else(|| outputs.first().map_or(ObjectId(0), |o| o.id)),
            ),
            outputs: outputs.clone(),
            work,
            name: name.map(Arc::from),
        });
        outputs
    }
}

#[pymethods]
impl Node {
    /// This party's name.
    #[getter]
    fn party(&self) -> String {
        self.fed.me().to_string()
    }

    /// The other parties.
    #[getter]
    fn peers(&self) -> Vec<String> {
        self.fed.peers().iter().map(ToString::to_string).collect()
    }

    /// A task on `party`: `func(*args, **kwargs)` with the inputs' values
    /// in place of the markers; `num_returns` outputs.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (party, file, line, name, func, args, kwargs, inputs, num_returns))]
    fn task(
        &self,
        party: &str,
        file: &str,
        line: u32,
        name: Option<String>,
        func: Py<PyAny>,
        args: Py<PyAny>,
        kwargs: Py<PyAny>,
        inputs: Vec<PyRef<'_, FedObject>>,
        num_returns: usize,
    ) -> PyResult<Vec<FedObject>> {
        if num_returns == 0 {
            return Err(value_error("num_returns must be at least 1"));
        }
        let owner = self.party_of(party)?;
        let inputs = self.refs(&inputs)?;
        let runner = self.runner.clone();
        let outputs = self.submit(
            owner,
            (file, line),
            name,
            inputs,
            num_returns,
            |body| {
                Work::Task(Box::new(move |values| {
                    body.run(
                        |py, vals| runner.call1(py, (func, args, kwargs, vals, num_returns)),
                        values,
                        num_returns,
                    )
                }))
            },
            None,
        );
        Ok(self.handles(&outputs))
    }

    /// Creates an instance of `cls(*args, **kwargs)` living in `party`.
    /// Without FedObjects among the arguments the actor is built when it is
    /// created; with them, its first call builds it once their values are
    /// here (RayFed passes FedObjects to constructors), and a constructor
    /// that fails makes every later method fail with its error.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (party, file, line, name, cls, args, kwargs, inputs))]
    fn actor(
        &self,
        py: Python<'_>,
        party: &str,
        file: &str,
        line: u32,
        name: Option<String>,
        cls: Py<PyAny>,
        args: Py<PyAny>,
        kwargs: Py<PyAny>,
        inputs: Vec<PyRef<'_, FedObject>>,
    ) -> PyResult<ActorRef> {
        let owner = self.party_of(party)?;
        let inputs = self.refs(&inputs)?;
        let id = self.next_id();
        let deferred = !inputs.is_empty();
        let mut parts = Some((cls, args, kwargs));
        let ctor: xsilo_runtime::CtorFn = match (deferred, parts.take()) {
            (false, Some((cls, args, kwargs))) => {
                let runner = self.runner.clone();
                Box::new(move || {
                    crate::threads::attach(|py| {
                        let empty = PyList::empty(py);
                        let obj = runner
                            .call1(py, (cls, args, kwargs, empty, 1usize))
                            .map_err(|e| task_error(py, &e))?;
                        Ok(Box::new(PyActor::Ready(obj)) as Box<dyn std::any::Any + Send>)
                    })
                })
            }
            (_, taken) => {
                parts = taken;
                Box::new(|| Ok(Box::new(PyActor::Unbuilt) as Box<dyn std::any::Any + Send>))
            }
        };
        self.fed.runtime().submit(Call {
            party: owner.clone(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            consumer: Consumer::Call(id),
            work: Work::NewActor { actor: id, ctor },
            name: name.clone().map(Arc::from),
        });
        let mut built_handle = None;
        if let Some((cls, args, kwargs)) = parts {
            let runner = self.runner.clone();
            let init = name.map(|n| format!("{n}.__init__"));
            let init_outputs = self.submit(
                owner.clone(),
                (file, line),
                init,
                inputs,
                1,
                |body| Work::Method {
                    actor: id,
                    f: Box::new(move |state, values| {
                        let Some(slot) = state.downcast_mut::<PyActor>() else {
                            return Err(not_python(id));
                        };
                        let mut built = None;
                        let result = body.run(
                            |py, vals| {
                                built = Some(runner.call1(py, (cls, args, kwargs, vals, 1usize))?);
                                Ok(py.None())
                            },
                            values,
                            1,
                        );
                        match (&result, built) {
                            (Ok(_), Some(obj)) => *slot = PyActor::Ready(obj),
                            (Err(e), _) => *slot = PyActor::Failed(e.clone()),
                            _ => {}
                        }
                        result
                    }),
                },
                None,
            );
            // Its one output is held by the actor's handle, as an input of
            // every later method call.
            if let Some(handle) = self.handles(&init_outputs).pop() {
                built_handle = Some(Py::new(py, handle)?);
            }
        }
        Ok(ActorRef {
            id,
            owner,
            release: self.release.clone(),
            session: self.session,
            built: built_handle,
        })
    }

    /// Calls `method` of an actor, after its earlier calls.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (actor, file, line, name, method, args, kwargs, inputs, num_returns))]
    fn method(
        &self,
        actor: PyRef<'_, ActorRef>,
        file: &str,
        line: u32,
        name: Option<String>,
        method: String,
        args: Py<PyAny>,
        kwargs: Py<PyAny>,
        inputs: Vec<PyRef<'_, FedObject>>,
        num_returns: usize,
    ) -> PyResult<Vec<FedObject>> {
        if num_returns == 0 {
            return Err(value_error("num_returns must be at least 1"));
        }
        self.check_actor(&actor)?;
        let mut inputs = self.refs(&inputs)?;
        if let Some(built) = &actor.built {
            // After the values of the call's own arguments, so that the
            // argument template's slots still number them.
            inputs.push(built.get().obj_ref());
        }
        let runner = self.runner.clone();
        let id = actor.id;
        let outputs = self.submit(
            actor.owner.clone(),
            (file, line),
            name.or_else(|| Some(method.clone())),
            inputs,
            num_returns,
            |body| Work::Method {
                actor: id,
                f: Box::new(move |state, values| {
                    let obj = match state.downcast_ref::<PyActor>() {
                        Some(PyActor::Ready(obj)) => obj,
                        Some(PyActor::Failed(e)) => {
                            return Err(TaskError {
                                kind: e.kind.clone(),
                                message: format!("the actor's constructor failed: {}", e.message),
                                causes: e.causes.clone(),
                            })
                        }
                        Some(PyActor::Unbuilt) | None => return Err(not_python(id)),
                    };
                    body.run(
                        |py, vals| {
                            let bound = obj.bind(py).getattr(method.as_str())?;
                            runner.call1(py, (bound, args, kwargs, vals, num_returns))
                        },
                        values,
                        num_returns,
                    )
                }),
            },
            None,
        );
        Ok(self.handles(&outputs))
    }

    /// Stops an actor after the calls made before (promise M6).
    fn kill(&self, actor: PyRef<'_, ActorRef>) -> PyResult<()> {
        self.check_actor(&actor)?;
        self.fed.runtime().submit(Call {
            party: actor.owner.clone(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            consumer: Consumer::Call(actor.id),
            work: Work::Kill { actor: actor.id },
            name: None,
        });
        Ok(())
    }

    /// The values of `objs`, waiting with the GIL released.
    fn get(&self, py: Python<'_>, objs: Vec<PyRef<'_, FedObject>>) -> PyResult<Vec<Py<PyAny>>> {
        let refs = self.refs(&objs)?;
        let owners: Vec<PartyName> = refs.iter().map(|r| r.owner.clone()).collect();
        let rt = self.fed.runtime().clone();
        let got = py.detach(|| pollster::block_on(rt.get(refs)));
        let payloads = got.map_err(|e| {
            let exception = match &e {
                RuntimeError::Task { object, .. } => self.exceptions.find(py, *object),
                _ => None,
            };
            failure_with(&e, exception)
        })?;
        let me = self.fed.me();
        payloads
            .into_iter()
            .zip(owners)
            .map(|(p, owner)| {
                codec::decode(py, &p.to_bytes(), &self.hooks, &owner == me)
                    .map(Bound::unbind)
                    .map_err(|e| {
                        if &owner == me {
                            return e;
                        }
                        // Name the party the refused value came from.
                        value_error(format!(
                            "a value from party '{owner}' was refused: {}: {}",
                            type_path(py, &e),
                            e.value(py)
                        ))
                    })
            })
            .collect()
    }

    /// What tells when this party's runtime has stopped for good: wait on
    /// it after `shutdown` and after dropping the node.
    fn stopped(&self) -> Stopped {
        Stopped(self.fed.runtime().stopped())
    }

    /// Whether a sending failure ends this party's process
    /// (`exit_on_sending_failure`).
    #[getter]
    fn exits_on_sending_failure(&self) -> bool {
        self.exits_on_sending_failure
    }

    /// Waits, at most `seconds`, until every peer is known to be up (RayFed's
    /// `ping_others`); raises naming the parties not reached.
    fn barrier(&self, py: Python<'_>, seconds: f64) -> PyResult<()> {
        let bound =
            std::time::Duration::try_from_secs_f64(seconds.max(0.0)).map_err(value_error)?;
        let rt = self.fed.runtime().clone();
        py.detach(|| pollster::block_on(rt.barrier(bound)))
            .map_err(|e| failure(&e))
    }

    /// Aborts the job from this party with `reason`: every wait fails and
    /// the peers are told why. `shutdown` then waits for it.
    fn abort(&self, reason: String) {
        self.fed.runtime().abort(reason);
    }

    /// Intended shutdown (promise E8), with the GIL released.
    fn shutdown(&self, py: Python<'_>) -> PyResult<()> {
        let fed = self.fed.clone();
        py.detach(|| self.tokio.block_on(fed.shutdown()))
            .map_err(|e| match e {
                xsilo::Error::Runtime(r) => failure(&r),
                other => RuntimeFailure::new_err((
                    "runtime",
                    other.to_string(),
                    None::<String>,
                    None::<String>,
                    None::<String>,
                    Vec::<String>::new(),
                    None::<Py<PyAny>>,
                )),
            })
    }

    /// Objects and bytes held and moved, as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let fed = self.fed.clone();
        let s = py.detach(|| pollster::block_on(fed.stats()));
        let d = PyDict::new(py);
        d.set_item("live_objects", s.live_objects)?;
        d.set_item("live_bytes", s.live_bytes)?;
        d.set_item("live_actors", s.live_actors)?;
        let sent = PyDict::new(py);
        for (p, c) in &s.sent {
            sent.set_item(p.as_str(), (c.objects, c.bytes))?;
        }
        let received = PyDict::new(py);
        for (p, c) in &s.received {
            received.set_item(p.as_str(), (c.objects, c.bytes))?;
        }
        d.set_item("sent", sent)?;
        d.set_item("received", received)?;
        Ok(d)
    }
}

/// Starts party `party` of the job in `config`, the TOML text of an xsilo
/// file or a dict of its tables and keys (paths relative to `base_dir`). With `dev_secret`, the TLS identity is a development one
/// derived from it (every party of the job derives the same CA).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (config, base_dir, party, dev_secret, failure_handler, encode_hook, decode_hook, runner, exit_hook=None))]
pub(crate) fn start(
    py: Python<'_>,
    config: &Bound<'_, PyAny>,
    base_dir: &str,
    party: &str,
    dev_secret: Option<String>,
    failure_handler: Option<Py<PyAny>>,
    encode_hook: Py<PyAny>,
    decode_hook: Py<PyAny>,
    runner: Py<PyAny>,
    exit_hook: Option<Py<PyAny>>,
) -> PyResult<Node> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("XSILO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        // Colour only on a terminal: a file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
    let config = crate::config::load(config, Path::new(base_dir))?;
    let exits_on_sending_failure = config.comm.exit_on_sending_failure;
    let name: PartyName = party.parse().map_err(value_error)?;
    let mut options = xsilo::InitOptions::default();
    if let Some(secret) = dev_secret {
        let ca =
            xsilo_transport::devcert::DevCa::from_secret(secret.as_bytes()).map_err(value_error)?;
        options.tls = Some(ca.identity(&name).map_err(value_error)?);
    }
    if let Some(handler) = failure_handler {
        options = options.on_sending_failure(move |e| {
            let text = e.map(ToString::to_string);
            Python::attach(|py| {
                crate::threads::park_if_forced_out(|| {
                    if let Err(err) = handler.call1(py, (text,)) {
                        err.print(py);
                    }
                });
            });
        });
    }
    if let Some(hook) = exit_hook {
        // The interpreter exits itself, so that its exit hooks run and its
        // queues flush: `hook(status)` runs on a thread of its own (the
        // control thread never waits for the GIL) and wakes the main thread.
        let hook = Arc::new(hook);
        options.exit_hook = Some(Arc::new(move |status| {
            let hook = hook.clone();
            let spawned = std::thread::Builder::new()
                .name("xsilo-exit".into())
                .spawn(move || {
                    Python::attach(|py| {
                        crate::threads::park_if_forced_out(|| {
                            if let Err(err) = hook.call1(py, (status,)) {
                                err.print(py);
                            }
                        });
                    });
                });
            if spawned.is_err() {
                std::process::exit(status);
            }
        }));
    }
    options.worker_thread = Some(xsilo_runtime::WorkerThreadHooks {
        on_start: Arc::new(crate::threads::on_worker_start),
        on_stop: Arc::new(crate::threads::on_worker_stop),
    });
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(value_error)?;
    let party = party.to_owned();
    let fed = py
        .detach(|| tokio.block_on(xsilo::init_with(config, &party, options)))
        .map_err(|e| match e {
            xsilo::Error::Runtime(r) => failure(&r),
            xsilo::Error::Setup(xsilo_transport::SetupError::Bind { ref error, .. })
                if error.kind() == std::io::ErrorKind::AddrInUse =>
            {
                RuntimeFailure::new_err((
                    "address_in_use",
                    e.to_string(),
                    None::<String>,
                    None::<String>,
                    None::<String>,
                    Vec::<String>::new(),
                    None::<Py<PyAny>>,
                ))
            }
            other => value_error(other),
        })?;
    Ok(Node {
        release: fed.runtime().releaser(),
        fed,
        seq: AtomicU64::new(0),
        tokio,
        hooks: Arc::new(Hooks {
            encode: encode_hook,
            decode: decode_hook,
        }),
        runner: Arc::new(runner),
        exceptions: Arc::default(),
        session: SESSIONS.fetch_add(1, Ordering::Relaxed) + 1,
        exits_on_sending_failure,
    })
}

/// Encodes a value as it would cross (for tests and tools).
#[pyfunction]
pub(crate) fn encode_value(
    py: Python<'_>,
    value: &Bound<'_, PyAny>,
    encode_hook: Py<PyAny>,
    decode_hook: Py<PyAny>,
) -> PyResult<Py<PyAny>> {
    let hooks = Hooks {
        encode: encode_hook,
        decode: decode_hook,
    };
    let bytes = codec::encode(value, &hooks)?;
    Ok(pyo3::types::PyBytes::new(py, &bytes).into_any().unbind())
}

/// Decodes bytes as a value from a peer (for tests and tools).
#[pyfunction]
pub(crate) fn decode_value(
    py: Python<'_>,
    data: &[u8],
    encode_hook: Py<PyAny>,
    decode_hook: Py<PyAny>,
) -> PyResult<Py<PyAny>> {
    let hooks = Hooks {
        encode: encode_hook,
        decode: decode_hook,
    };
    codec::decode(py, data, &hooks, false).map(Bound::unbind)
}

/// Writes a development job into `dir` (a CA, each party's certificate
/// and key, one TOML configuration per party on free ports of 127.0.0.1)
/// and returns each party's configuration path. `communication` holds
/// extra `[communication]` settings as TOML text lines.
#[pyfunction]
#[pyo3(signature = (dir, job, parties, communication=None))]
pub(crate) fn write_local_job(
    dir: &str,
    job: &str,
    parties: Vec<String>,
    communication: Option<Vec<(String, String)>>,
) -> PyResult<std::collections::BTreeMap<String, String>> {
    let names: Vec<&str> = parties.iter().map(String::as_str).collect();
    let paths =
        xsilo::dev::write_local_job(Path::new(dir), job, &names, |_, _| {}).map_err(value_error)?;
    let mut out = std::collections::BTreeMap::new();
    for (party, path) in paths {
        if let Some(extra) = &communication {
            let text = std::fs::read_to_string(&path).map_err(value_error)?;
            let mut doc: toml::Table = toml::from_str(&text).map_err(value_error)?;
            let comm = doc
                .entry("communication")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(comm) = comm else {
                return Err(value_error("[communication] is not a table"));
            };
            for (k, v) in extra {
                let parsed: toml::Table =
                    toml::from_str(&format!("v = {v}")).map_err(value_error)?;
                if let Some(value) = parsed.get("v") {
                    comm.insert(k.clone(), value.clone());
                }
            }
            std::fs::write(&path, toml::to_string(&doc).map_err(value_error)?)
                .map_err(value_error)?;
        }
        out.insert(party, path.to_string_lossy().into_owned());
    }
    Ok(out)
}

#[pymodule]
fn _xsilo(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Node>()?;
    m.add_class::<FedObject>()?;
    m.add_class::<ActorRef>()?;
    m.add_class::<Stopped>()?;
    m.add("RuntimeFailure", m.py().get_type::<RuntimeFailure>())?;
    m.add_function(wrap_pyfunction!(start, m)?)?;
    m.add_function(wrap_pyfunction!(encode_value, m)?)?;
    m.add_function(wrap_pyfunction!(decode_value, m)?)?;
    m.add_function(wrap_pyfunction!(write_local_job, m)?)?;
    let exiting = wrap_pyfunction!(crate::threads::python_exiting, m)?;
    m.py()
        .import("atexit")?
        .call_method1("register", (exiting,))?;
    let forked = wrap_pyfunction!(crate::threads::forked_child, m)?;
    let hook = PyDict::new(m.py());
    hook.set_item("after_in_child", forked)?;
    m.py()
        .import("os")?
        .call_method("register_at_fork", (), Some(&hook))?;
    Ok(())
}
