//! `workload`: the execution engine under the work users have (promises X1,
//! X2). Alice and bob as two processes over QUIC with mutual TLS.
//!
//! (a) Parallel speed-up: 8 CPU tasks of 0.5 s in alice; the value is the
//!     wall time from their submission to `get` of all, the baseline the
//!     ideal 8 x 0.5 s / workers.
//! (b) The control plane under load: per trial, every worker of both
//!     parties gets a 50 ms CPU task, then a task in alice fails and bob's
//!     task consumes it; the time from the failing body's return to the
//!     RemoteError in bob's `get` (one machine, one clock), p50 and p99.
//!     Measured twice: with each party's workers set to its share of this
//!     machine's cores (as two parties on machines of their own would be:
//!     `propagation_under_load`), and with the default of one worker per
//!     core in each party, the two parties then oversubscribing the cores
//!     twice (`propagation_under_load_oversubscribed`).
//! (c) A long task: one CPU task of 30 s (quick: 12 s) in alice, consumed by
//!     bob, with `peer_lost_timeout` = 5 s; both parties must get its value.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use xsilo::Config;

use crate::child::{exit_with_parent, Party};
use crate::errors::{now_us, Injected};
use crate::stats::{emit, median, percentile};

/// Keeps a core busy for `d`: real CPU work, not a sleep.
pub(crate) fn busy(d: Duration) -> u64 {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < d {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
        }
    }
    x
}

/// One party, started by [`run`]; `phases` says which of a, b, c it runs.
pub(crate) fn party(
    config: &Path,
    me: &str,
    trials: usize,
    long_s: u64,
    phases: &str,
) -> Result<()> {
    exit_with_parent(Duration::from_secs(900));
    let config = Config::from_file(config)?;
    let workers = config.execution.workers();
    let me = me.to_owned();
    let phases = phases.to_owned();
    xsilo::block_on(async move {
        let fed = xsilo::init(config, &me).await?;
        if phases.contains('a') {
            // (a) parallel speed-up, measured in alice.
            let start = Instant::now();
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    fed.party("alice")
                        .task((), |()| busy(Duration::from_millis(500)))
                })
                .collect();
            fed.get(tasks).await?;
            if me == "alice" {
                println!("PARALLEL-S {} {workers}", start.elapsed().as_secs_f64());
            }
        }
        if phases.contains('b') {
            // (b) propagation while the workers are busy.
            for trial in 0..trials {
                for p in ["alice", "bob"] {
                    for _ in 0..workers {
                        let _load = fed.party(p).task((), |()| busy(Duration::from_millis(50)));
                    }
                }
                let rb = fed.party("bob").task((), |()| 0i64);
                let f = fed.party("alice").try_task(rb, move |_: i64| {
                    println!("T {trial} alice {}", now_us());
                    Err::<i64, _>(Injected)
                });
                let b = fed.party("bob").task(f, |x: i64| x);
                let got = fed.get(&b).await;
                let at = now_us();
                if got.is_ok() {
                    bail!("trial {trial}: the failure did not surface in {me}");
                }
                if me == "bob" {
                    println!("T {trial} bob {at}");
                }
            }
        }
        if phases.contains('c') {
            // (c) a long task.
            let start = Instant::now();
            let v = fed
                .party("alice")
                .task((), move |()| busy(Duration::from_secs(long_s)));
            let w = fed.party("bob").task(v, |x: u64| x);
            fed.get(&w).await?;
            println!("LONG-S {}", start.elapsed().as_secs_f64());
        }
        fed.shutdown().await?;
        println!("DONE");
        Ok::<(), anyhow::Error>(())
    })
}

/// Alice and bob of one job, started with `phases`; `workers` sets each
/// party's `[execution] workers` (none: one per core).
fn start_pair(
    dir: &Path,
    workers: Option<usize>,
    trials: usize,
    long_s: u64,
    phases: &str,
) -> Result<(Party, Party)> {
    xsilo::dev::write_local_job(dir, "workload", &["alice", "bob"], |_, c| {
        c.comm.barrier_on_initializing = true;
        c.comm.peer_lost_timeout = Duration::from_secs(5);
        c.comm.keep_alive_interval = Duration::from_millis(500);
        c.execution.workers = workers;
    })?;
    let spawn = |p: &str| -> Result<Party> {
        let config = dir.join(format!("{p}.toml"));
        Party::spawn(
            &[
                "workload-party",
                "--config",
                config.to_str().context("temporary path is not UTF-8")?,
                "--party",
                p,
                "--trials",
                &trials.to_string(),
                "--long-s",
                &long_s.to_string(),
                "--phases",
                phases,
            ],
            &[],
        )
    };
    Ok((spawn("alice")?, spawn("bob")?))
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Reads (b)'s stamps from both parties; prints p50 and p99.
fn propagation(
    (alice, bob): (&Party, &Party),
    trials: usize,
    bound: Duration,
    name: &str,
    workers: usize,
) -> Result<()> {
    let stamp = |line: &str| -> Result<(usize, u128)> {
        let f: Vec<&str> = line.split_whitespace().collect();
        Ok((
            f.first().context("trial")?.parse()?,
            f.get(2).context("stamp")?.parse()?,
        ))
    };
    let mut lat = Vec::new();
    for _ in 0..trials {
        let (ta, at) = stamp(&alice.expect_line("T ", bound)?)?;
        let (tb, bt) = stamp(&bob.expect_line("T ", bound)?)?;
        if ta != tb {
            bail!("trials out of step: {ta} and {tb}");
        }
        lat.push(bt.saturating_sub(at) as f64);
    }
    let note = json!({ "trials": trials, "target_p99": "< 5000 us", "workers_per_party": workers,
                       "cores": cores(),
                       "load": "every worker of both parties busy with 50 ms CPU tasks" });
    emit(
        &format!("{name}_p50"),
        median(&mut lat),
        "us",
        None,
        note.clone(),
    );
    emit(
        &format!("{name}_p99"),
        percentile(&mut lat, 99.0),
        "us",
        None,
        note,
    );
    Ok(())
}

/// Starts the parties, collects and prints the figures.
pub(crate) fn run(quick: bool) -> Result<()> {
    let trials = if quick { 30 } else { 100 };
    let long_s: u64 = if quick { 12 } else { 30 };
    let cores = cores();
    eprintln!(
        "workload: alice and bob as two processes over QUIC (mTLS); (a) 8 x 0.5 s CPU tasks, \
         (b) {trials} failures while the workers are busy, (c) one {long_s} s task with \
         peer_lost_timeout 5 s"
    );
    let bound = Duration::from_secs(120 + long_s);
    // One worker per core in each party (the default): (a), (b) with the
    // two parties oversubscribing the cores twice, (c).
    let dir = tempfile::tempdir()?;
    let (alice, bob) = start_pair(dir.path(), None, trials, long_s, "abc")?;
    let parallel = alice.expect_line("PARALLEL-S", bound)?;
    let mut it = parallel.split_whitespace();
    let wall: f64 = it.next().context("no wall time")?.parse()?;
    let workers: f64 = it.next().context("no worker count")?.parse()?;
    emit(
        "workload.parallel_8x500ms",
        wall,
        "s",
        Some(8.0 * 0.5 / workers.min(8.0)),
        json!({ "workers": workers, "target_ratio": "<= 1.15",
                "baseline_is": "8 x 0.5 s / workers" }),
    );
    let name = "workload.propagation_under_load_oversubscribed";
    propagation((&alice, &bob), trials, bound, name, cores)?;
    let long_a: f64 = alice.expect_line("LONG-S", bound)?.parse()?;
    let long_b: f64 = bob.expect_line("LONG-S", bound)?.parse()?;
    emit(
        "workload.long_task",
        long_a.max(long_b),
        "s",
        Some(long_s as f64),
        json!({ "peer_lost_timeout_s": 5, "completed_in": ["alice", "bob"],
                "baseline_is": "the task's length" }),
    );
    alice.expect_line("DONE", bound)?;
    bob.expect_line("DONE", bound)?;
    drop((alice, bob));
    // Each party with its share of this machine's cores, as two parties on
    // machines of their own would be.
    let share = (cores / 2).max(1);
    let dir = tempfile::tempdir()?;
    let (alice, bob) = start_pair(dir.path(), Some(share), trials, long_s, "b")?;
    propagation(
        (&alice, &bob),
        trials,
        bound,
        "workload.propagation_under_load",
        share,
    )?;
    alice.expect_line("DONE", bound)?;
    bob.expect_line("DONE", bound)?;
    Ok(())
}
