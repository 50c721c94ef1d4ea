//! The execution engine across real processes over QUIC (promises X1-X4):
//! user code never runs on the control plane, independent work runs in
//! parallel, one actor's calls keep their order, async bodies await real
//! I/O, a panic is the object's error, an abort ends everything at once.
//! Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{job, Outcome};
use serde_json::{json, Value as Json};
use xsilo::{Error, Fed};

const ECHO_PORT: &str = "XSILO_E2E_ECHO_PORT";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Keeps a core busy for `d`: real CPU work, not a sleep.
fn busy(d: Duration) -> u64 {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < d {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
    x
}

#[derive(Debug)]
struct Training;
impl std::fmt::Display for Training {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("loss is NaN")
    }
}
impl std::error::Error for Training {}

async fn scenario(name: &str, party: &str, fed: &Fed) -> Result<Json, Error> {
    match name {
        // 60 s of CPU in alice while bob waits for it, connections up.
        "long_task" => {
            let v = fed.party("alice").task((), |()| {
                busy(Duration::from_secs(60));
                7u64
            });
            let w = fed.party("bob").task(v, |x: u64| x * 6);
            Ok(json!(fed.get(&w).await?))
        }
        // Four independent 1 s CPU tasks in one party.
        "parallel" => {
            let spans: Vec<_> = (0..4)
                .map(|_| {
                    fed.party("alice").task((), |()| {
                        let start = now_ms();
                        busy(Duration::from_secs(1));
                        (start, now_ms())
                    })
                })
                .collect();
            Ok(json!(fed.get(spans).await?))
        }
        // Two actors, four calls each of 300 ms: each keeps its order.
        "two_actors" => {
            let a = fed.party("alice").actor(Vec::<u64>::new);
            let b = fed.party("alice").actor(Vec::<u64>::new);
            let mut calls = Vec::new();
            for seq in 0..4u64 {
                for (tag, actor) in [(0u64, &a), (1u64, &b)] {
                    calls.push(actor.call(move |log| {
                        let start = now_ms();
                        busy(Duration::from_millis(300));
                        log.push(seq);
                        (tag, seq, start, now_ms(), log.clone())
                    }));
                }
            }
            Ok(json!(fed.get(calls).await?))
        }
        // An async task awaiting a timer and a TCP echo server; an actor's
        // async calls in order.
        "async_io" => {
            let port: u16 = std::env::var(ECHO_PORT).unwrap().parse().unwrap();
            let echoed = fed.party("bob").try_task_async((), move |()| async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                s.write_all(b"ping from bob").await?;
                let mut buf = vec![0u8; 13];
                s.read_exact(&mut buf).await?;
                Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).into_owned())
            });
            let log = fed.party("alice").actor(Vec::<u32>::new);
            for i in 0..5u32 {
                log.call_async((), move |l, ()| {
                    Box::pin(async move {
                        // Later calls wait less: order must still hold.
                        tokio::time::sleep(Duration::from_millis(u64::from(50 - 10 * i))).await;
                        l.push(i);
                    })
                });
            }
            let order = log.call(|l| l.clone());
            Ok(json!(fed.get((&echoed, &order)).await?))
        }
        "panic" => {
            let x = fed
                .party("alice")
                .task((), |()| -> u64 { panic!("worker down") });
            let y = fed.party("bob").task(x.clone(), |v: u64| v + 1);
            let ex = fed.get(&x).await.map_err(|e| e.to_string());
            let ey = fed.get(&y).await.map_err(|e| e.to_string());
            // The party goes on: later calls still run.
            let z = fed.party("alice").task((), |()| 5u64);
            Ok(json!({ "x": ex.unwrap_err(), "y": ey.unwrap_err(), "after": fed.get(&z).await? }))
        }
        "named" => {
            let x = fed
                .party("alice")
                .named("train")
                .try_task((), |()| Err::<u64, _>(Training));
            Ok(json!(fed.get(&x).await?))
        }
        // alice runs a 30 s task that bob waits for; the test aborts bob.
        "abort_long" => {
            let v = fed.party("alice").task((), |()| {
                println!("XSILO-LONG-STARTED");
                busy(Duration::from_secs(30))
            });
            let w = fed.party("bob").task(v.clone(), |x: u64| x);
            let got = fed.get((&v, &w)).await;
            if got.is_err() {
                println!("XSILO-GET-FAILED {}", now_ms());
            }
            Ok(json!(got?))
        }
        // The quick start, in a multi-thread tokio application.
        "quick_start" => {
            let a = fed.party("alice").task((), |()| 2i64);
            let b = fed
                .party("bob")
                .task_async(a, |x: i64| async move { x + 3 });
            let _ = party;
            Ok(json!(fed.get(&b).await?))
        }
        other => panic!("unknown scenario {other}"),
    }
}

#[test]
#[ignore = "runs only as a child process of the execution tests"]
fn child() {
    common::child_main(|name, party, fed| Box::pin(scenario(name, party, fed)));
}

fn ok<'a>(out: &'a BTreeMap<String, Outcome>, p: &str) -> &'a Json {
    out[p].value()
}

#[test]
fn a_60_s_cpu_task_never_makes_its_party_look_lost() {
    let job = job(&["alice", "bob"], |_, c| {
        c.comm.peer_lost_timeout = Duration::from_secs(10);
        c.comm.keep_alive_interval = Duration::from_secs(1);
    })
    .with_bound(Duration::from_secs(120));
    let out = job.run("long_task");
    for p in ["alice", "bob"] {
        assert_eq!(ok(&out, p), &json!(42), "party {p}: {:?}", out[p].lines);
        assert!(out[p].status.success(), "party {p}");
    }
}

#[test]
fn independent_tasks_run_in_parallel() {
    let job = job(&["alice", "bob"], |_, c| c.execution.workers = Some(2));
    let out = job.run("parallel");
    let spans: Vec<(u64, u64)> = serde_json::from_value(ok(&out, "bob").clone()).unwrap();
    assert_eq!(
        ok(&out, "alice"),
        ok(&out, "bob"),
        "the same values everywhere"
    );
    // With 2 workers, some two of the four 1 s tasks ran at the same time.
    let overlapping = spans
        .iter()
        .enumerate()
        .any(|(i, a)| spans.iter().skip(i + 1).any(|b| a.0 < b.1 && b.0 < a.1));
    assert!(overlapping, "no two tasks overlapped: {spans:?}");
    // And never more than the 2 workers at once.
    for a in &spans {
        let at_once = spans.iter().filter(|b| b.0 <= a.0 && a.0 < b.1).count();
        assert!(
            at_once <= 2,
            "{at_once} tasks at once with 2 workers: {spans:?}"
        );
    }
}

#[test]
fn two_actors_run_in_parallel_and_each_keeps_its_order() {
    let job = job(&["alice", "bob"], |_, c| c.execution.workers = Some(2));
    let out = job.run("two_actors");
    type Call = (u64, u64, u64, u64, Vec<u64>);
    let calls: Vec<Call> = serde_json::from_value(ok(&out, "bob").clone()).unwrap();
    for tag in [0, 1] {
        let mine: Vec<&Call> = calls.iter().filter(|c| c.0 == tag).collect();
        for (i, c) in mine.iter().enumerate() {
            assert_eq!(c.1, i as u64, "actor {tag}: calls in submission order");
            assert_eq!(
                c.4,
                (0..=i as u64).collect::<Vec<_>>(),
                "actor {tag}: its own state"
            );
            if i > 0 {
                assert!(
                    mine[i - 1].3 <= c.2,
                    "actor {tag}: calls {} and {i} overlapped",
                    i - 1
                );
            }
        }
    }
    let overlap = calls.iter().filter(|c| c.0 == 0).any(|a| {
        calls
            .iter()
            .filter(|c| c.0 == 1)
            .any(|b| a.2 < b.3 && b.2 < a.3)
    });
    assert!(
        overlap,
        "the two actors never ran at the same time: {calls:?}"
    );
}

#[test]
fn an_async_task_awaits_a_timer_and_a_tcp_echo_server() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 13];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    });
    let job = job(&["alice", "bob"], |_, _| {}).with_env(ECHO_PORT, &port.to_string());
    let out = job.run("async_io");
    for p in ["alice", "bob"] {
        assert_eq!(
            ok(&out, p),
            &json!(["ping from bob", [0, 1, 2, 3, 4]]),
            "party {p}"
        );
    }
    echo.join().unwrap();
}

#[test]
fn a_panic_on_a_worker_is_the_objects_error_and_the_party_goes_on() {
    let out = job(&["alice", "bob"], |_, _| {}).run("panic");
    let alice = ok(&out, "alice");
    assert!(
        alice["x"]
            .as_str()
            .unwrap()
            .contains("failed in party 'alice': panic: worker down"),
        "alice has the full error: {alice}"
    );
    let bob = ok(&out, "bob");
    for (who, v) in [("alice", alice), ("bob", bob)] {
        assert!(
            v["y"]
                .as_str()
                .unwrap()
                .contains("failed in party 'alice' (panic)"),
            "{who}: the dependent fails with the origin's kind: {v}"
        );
    }
    assert!(
        bob["x"]
            .as_str()
            .unwrap()
            .contains("RemoteError: object #1 failed in party 'alice' (panic)"),
        "bob: {bob}"
    );
    assert_eq!(alice["after"], json!(5));
    assert_eq!(bob["after"], json!(5));
}

#[test]
fn a_named_task_is_named_in_its_error_everywhere() {
    let out = job(&["alice", "bob"], |_, _| {}).run("named");
    let alice = out["alice"].error();
    assert!(
        alice.contains("task 'train' (object #1) failed in party 'alice': Training: loss is NaN"),
        "alice: {alice}"
    );
    let bob = out["bob"].error();
    assert!(
        bob.contains("RemoteError: task 'train' (object #1) failed in party 'alice' (Training)"),
        "bob: {bob}"
    );
}

#[test]
fn an_abort_during_a_long_task_fails_every_wait_at_once_and_every_process_exits() {
    let job = job(&["alice", "bob"], |_, _| {});
    let mut run = job.start("abort_long", &[]);
    run.wait_line("alice", "XSILO-LONG-STARTED");
    // SIGTERM in bob: an unintended shutdown; alice is told by its abort.
    let signalled = run.signal("bob", "TERM");
    let line = run.wait_line("alice", "XSILO-GET-FAILED");
    let failed_after = signalled.elapsed();
    let out = run.finish();
    assert!(
        failed_after < Duration::from_secs(1),
        "alice's get failed {failed_after:?} after the abort: {line}"
    );
    let alice = out["alice"].error();
    assert!(alice.contains("aborted by party 'bob'"), "alice: {alice}");
    assert_eq!(
        out["bob"].status.code(),
        Some(143),
        "bob exits as for SIGTERM"
    );
    // alice did not wait for her 30 s task to end.
    assert!(
        out["alice"].elapsed < Duration::from_secs(20),
        "alice took {:?}",
        out["alice"].elapsed
    );
}

#[test]
fn a_party_runs_inside_a_multi_thread_tokio_application() {
    let out = job(&["alice", "bob"], |_, _| {})
        .in_tokio_multi_thread()
        .run("quick_start");
    for p in ["alice", "bob"] {
        assert_eq!(ok(&out, p), &json!(5), "party {p}");
    }
}
