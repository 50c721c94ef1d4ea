//! One Python thread state for the whole life of each worker thread, and
//! the gate that keeps worker threads out of an exiting interpreter.
//!
//! `Python::attach` on a thread that has no Python thread state makes one
//! (`PyGILState_Ensure`) and frees it again when it detaches. Around every
//! body, that is a new `PyThreadState` and, on CPython 3.11 and later, a
//! new frame stack: an `mmap` and a `munmap` (with a TLB shoot-down on
//! every core) per body. `perf trace` of the tiny-task benchmark showed
//! one `gettid`, one `mmap` and one `munmap` per body on the worker
//! threads (RFC 0005, "Threads and the GIL").
//!
//! Instead each worker thread makes its thread state once, when it starts
//! ([`on_worker_start`]), and keeps it, detached, until it stops
//! ([`on_worker_stop`]). `Python::attach` then finds it and only takes the
//! GIL.
//!
//! **The gate.** Once the interpreter begins to exit (our `atexit` hook,
//! [`python_exiting`]) no worker thread touches it again: the hooks do
//! nothing, and a body ([`attach`]) fails with `InterpreterExiting`
//! instead of attaching (CPython frees every thread state at finalisation,
//! kept ones included). Attaching holds the gate shared until the GIL is
//! held; the `atexit` hook takes it exclusively, with the GIL released, so
//! it passes only when no worker thread is between the check and the GIL.
//! A thread stopping after that leaves its thread state to the
//! interpreter's clean-up, as CPython does for threads it did not start.
//! After `os.fork()` (our `after_in_child` hook, [`forked_child`]) the
//! child's gate is never taken (its lock may have been held by a thread
//! that does not exist in the child), and the child's workers keep no
//! thread state. A C-level `fork()` that bypasses `PyOS_AfterFork_Child`
//! (and so every `after_in_child` hook) is not seen.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use pyo3::ffi;
use pyo3::prelude::*;
use xsilo_runtime::TaskError;

/// True until the `atexit` hook runs: worker threads may attach.
static PYTHON_USABLE: RwLock<bool> = RwLock::new(true);

/// Set in a child of `os.fork()` (an `after_in_child` hook).
static FORKED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The thread state this thread keeps detached, and how
    /// `PyGILState_Ensure` found the thread when it made it.
    static KEPT: Cell<Option<(*mut ffi::PyThreadState, ffi::PyGILState_STATE)>> =
        const { Cell::new(None) };
}

/// The `os.register_at_fork(after_in_child=...)` hook.
#[pyfunction]
pub(crate) fn forked_child() {
    FORKED.store(true, Ordering::Relaxed);
}

fn forked() -> bool {
    FORKED.load(Ordering::Relaxed)
}

/// The gate, shared; `None` after a fork.
fn gate() -> Option<RwLockReadGuard<'static, bool>> {
    if forked() {
        return None;
    }
    Some(PYTHON_USABLE.read().unwrap_or_else(PoisonError::into_inner))
}

/// Makes this worker thread's Python thread state and detaches it, kept.
#[allow(unsafe_code)]
pub(crate) fn on_worker_start() {
    let Some(guard) = gate() else { return };
    if !*guard || KEPT.with(Cell::get).is_some() {
        return;
    }
    // SAFETY: the interpreter is initialised (this module was imported and
    // started the runtime) and not finalising: the atexit hook has not
    // passed, and cannot while we hold the gate. This thread is not
    // attached: it is a new worker thread and runs no body yet.
    // `PyGILState_Ensure` makes its thread state and attaches it;
    // `PyEval_SaveThread` detaches it again and returns it, kept in the
    // interpreter's per-thread slot for later `PyGILState_Ensure` calls.
    let kept = unsafe {
        let state = ffi::PyGILState_Ensure();
        (ffi::PyEval_SaveThread(), state)
    };
    KEPT.with(|k| k.set(Some(kept)));
    drop(guard);
}

/// Frees this worker thread's kept thread state, if the interpreter is
/// still usable. Clearing a thread state runs the finalisers of its
/// `threading.local` values: one that waits for work of this party's pool
/// would wait with the gate held.
#[allow(unsafe_code)]
pub(crate) fn on_worker_stop() {
    let Some((tstate, state)) = KEPT.with(Cell::take) else {
        return;
    };
    let Some(guard) = gate() else { return };
    // SAFETY: a plain read of this thread's slot, valid in any state.
    if !*guard || unsafe { ffi::PyGILState_GetThisThreadState() } != tstate {
        return;
    }
    // SAFETY: `tstate` is this thread's own thread state, made by
    // `on_worker_start`, still in its slot, and detached: every body's
    // attach and detach on this thread were balanced. The interpreter is
    // not finalising (as in `on_worker_start`). `PyEval_RestoreThread`
    // re-attaches it (taking the GIL), and `PyGILState_Release` with the
    // state `PyGILState_Ensure` returned for it undoes that first call: it
    // frees the thread state and leaves the thread detached.
    unsafe {
        ffi::PyEval_RestoreThread(tstate);
        ffi::PyGILState_Release(state);
    }
    drop(guard);
}

/// Runs `f` attached to the interpreter, on a worker thread: fails instead
/// once the interpreter is exiting. The gate is held until the GIL is.
pub(crate) fn attach<T>(
    f: impl FnOnce(Python<'_>) -> Result<T, TaskError>,
) -> Result<T, TaskError> {
    let guard = gate();
    if guard.as_deref() == Some(&false) {
        return Err(TaskError {
            kind: "InterpreterExiting".into(),
            message: "the Python interpreter of this party is exiting".into(),
            causes: Vec::new(),
        });
    }
    Python::attach(move |py| {
        drop(guard);
        park_if_forced_out(|| f(py))
    })
}

/// Runs `f` (Python code, on a thread CPython did not start) under
/// [`ParkIfForcedOut`].
pub(crate) fn park_if_forced_out<T>(f: impl FnOnce() -> T) -> T {
    let mut forced_out = ParkIfForcedOut { armed: true };
    let result = f();
    forced_out.armed = false;
    result
}

/// Parks this thread for good if it leaves Python by an unwind that is not
/// a Rust panic. CPython (3.13 and earlier) ends a thread that wants the GIL
/// back while the interpreter finalises with `pthread_exit`, a forced
/// unwind: a body still running when the driver exits. Run through our
/// frames, that unwind would release a thread state that is not current,
/// a fatal error (an abort, status 134, instead of the driver's own exit
/// status). Parked here, the thread holds nothing (the gate is released)
/// and ends with the process, as CPython 3.14 does with such threads.
struct ParkIfForcedOut {
    armed: bool,
}

impl Drop for ParkIfForcedOut {
    fn drop(&mut self) {
        if self.armed && !std::thread::panicking() {
            loop {
                std::thread::park();
            }
        }
    }
}

/// The `atexit` hook: from now on worker threads leave the interpreter
/// alone. Waits, with the GIL released, for the worker threads between
/// the gate and the GIL.
#[pyfunction]
pub(crate) fn python_exiting(py: Python<'_>) {
    if forked() {
        return;
    }
    py.detach(|| {
        *PYTHON_USABLE
            .write()
            .unwrap_or_else(PoisonError::into_inner) = false
    });
}
