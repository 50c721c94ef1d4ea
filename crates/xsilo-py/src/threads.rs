//! One Python thread state for the whole life of each worker thread.
//!
//! `Python::attach` on a thread that has no Python thread state makes one
//! (`PyGILState_Ensure`) and frees it again when it detaches. Around every
//! body, that is a new `PyThreadState` and, on CPython 3.11 and later, a
//! new frame stack: an `mmap` and a `munmap` (with a TLB shoot-down on
//! every core) per body. `perf trace` of the tiny-task benchmark showed
//! one `gettid`, one `mmap` and one `munmap` per body on the worker
//! threads, and `flush_tlb_mm_range` among the worker's hottest kernel
//! symbols (RFC 0005, "Threads").
//!
//! Instead each worker thread makes its thread state once, when it starts
//! ([`on_worker_start`]), and keeps it, detached, until it stops
//! ([`on_worker_stop`]). `Python::attach` then finds it and only takes the
//! GIL. Once the interpreter begins to exit (our `atexit` hook,
//! [`python_exiting`]), worker threads no longer touch it: a thread that
//! stops after that leaves its thread state to the interpreter's own
//! clean-up, as CPython does for every thread it did not start.

use std::cell::Cell;
use std::sync::Mutex;

use pyo3::ffi;
use pyo3::prelude::*;

/// Whether worker threads may still attach to the interpreter: true until
/// the `atexit` hook runs. Held while a worker thread attaches or detaches
/// its kept thread state, so that the hook cannot pass while one does.
static PYTHON_USABLE: Mutex<bool> = Mutex::new(true);

thread_local! {
    /// The thread state this thread keeps detached, and how
    /// `PyGILState_Ensure` found the thread when it made it.
    static KEPT: Cell<Option<(*mut ffi::PyThreadState, ffi::PyGILState_STATE)>> =
        const { Cell::new(None) };
}

fn usable() -> std::sync::MutexGuard<'static, bool> {
    PYTHON_USABLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Makes this worker thread's Python thread state and detaches it, kept.
#[allow(unsafe_code)]
pub(crate) fn on_worker_start() {
    let guard = usable();
    if !*guard || KEPT.with(Cell::get).is_some() {
        return;
    }
    // SAFETY: the interpreter is initialised (this module was imported and
    // started the runtime) and not yet finalising (the atexit hook has not
    // passed, and cannot while we hold `PYTHON_USABLE`). This thread is not
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
/// still usable.
#[allow(unsafe_code)]
pub(crate) fn on_worker_stop() {
    let guard = usable();
    let Some((tstate, state)) = KEPT.with(Cell::take) else {
        return;
    };
    if !*guard {
        return;
    }
    // SAFETY: `tstate` is this thread's own thread state, made by
    // `on_worker_start` and detached since: every body's attach and detach
    // on this thread were balanced. The interpreter is not finalising (as
    // in `on_worker_start`). `PyEval_RestoreThread` re-attaches it (taking
    // the GIL), and `PyGILState_Release` with the state `PyGILState_Ensure`
    // returned for it undoes that first call: it frees the thread state and
    // leaves the thread detached.
    unsafe {
        ffi::PyEval_RestoreThread(tstate);
        ffi::PyGILState_Release(state);
    }
    drop(guard);
}

/// The `atexit` hook: from now on worker threads leave the interpreter
/// alone. Waits, with the GIL released, for a worker thread that is
/// attaching or detaching its thread state.
#[pyfunction]
pub(crate) fn python_exiting(py: Python<'_>) {
    py.detach(|| *usable() = false);
}
