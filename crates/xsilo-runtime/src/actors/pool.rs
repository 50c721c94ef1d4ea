//! Where user code runs: the worker pool of one party, never the control
//! thread (promise X1, RFC 0004).

use xsilo_wire::PartyName;

use crate::errors::RuntimeError;
use crate::options::WorkerThreadHooks;

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

    pub(crate) fn handle(&self) -> Option<&tokio::runtime::Handle> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::cell::Cell;
    use std::collections::HashSet;
    use std::sync::{Arc, Condvar, Mutex};
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
