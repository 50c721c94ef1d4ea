//! End to end across real processes over real QUIC (promises M1-M8, C4-C7,
//! E8): each party is a child process of this test binary, with its own
//! configuration file and development certificate. Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{job, Outcome};
use serde_json::{json, Value as Json};
use xsilo::{Config, Error, Fed};

struct Counter(i64);
impl Counter {
    fn inc(&mut self, by: i64) -> i64 {
        self.0 += by;
        self.0
    }
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The driver programs. `party` lets a scenario diverge on purpose.
async fn scenario(name: &str, party: &str, fed: &Fed) -> Result<Json, Error> {
    match name {
        "quick_start" => {
            let a = fed.party("alice").actor(|| Counter(1));
            let b = fed.party("bob").actor(|| Counter(1));
            let va = a.call(|c| c.inc(1));
            let vb = b.call(|c| c.inc(2));
            let sum = fed.party("bob").task((va, vb), |(x, y)| x + y);
            Ok(json!(fed.get(&sum).await?))
        }
        "containers" => {
            let xs: Vec<_> = (1..=3)
                .map(|i| fed.party("alice").task((), move |()| i))
                .collect();
            let opt = Some(fed.party("bob").task((), |()| 10));
            let arr = [
                fed.party("carol").task((), |()| 100),
                fed.party("alice").task((), |()| 1000),
            ];
            let total = fed.party("carol").task(
                (xs, opt, arr),
                |(xs, o, a): (Vec<i32>, Option<i32>, Vec<i32>)| {
                    xs.iter().sum::<i32>() + o.unwrap_or(0) + a.iter().sum::<i32>()
                },
            );
            let (lo, hi) = fed
                .party("bob")
                .task_multi(total.clone(), |t: i32| (t - 1, t + 1));
            Ok(json!(fed.get((&total, &lo, &hi)).await?))
        }
        "broadcast" => {
            let secret = fed
                .party("alice")
                .task((), |()| "owned by alice".to_owned());
            let v = fed.get(&secret).await?;
            // Shutdown waits for every acknowledgement; then count.
            fed.shutdown().await?;
            let stats = fed.stats().await;
            Ok(json!({ "value": v, "sent": stats.sent.values().map(|c| c.objects).sum::<u64>() }))
        }
        "sent_once" => {
            let x = fed.party("alice").task((), |()| vec![9u8; 4096]);
            let outs: Vec<_> = (0..3)
                .map(|i| {
                    fed.party("bob")
                        .task(x.clone(), move |v: Vec<u8>| v.len() + i)
                })
                .collect();
            let got = fed.get(outs).await?;
            fed.shutdown().await?;
            let stats = fed.stats().await;
            let to_bob = stats
                .sent
                .get(&"bob".parse().unwrap())
                .copied()
                .unwrap_or_default();
            let from_alice = stats
                .received
                .get(&"alice".parse().unwrap())
                .copied()
                .unwrap_or_default();
            Ok(
                json!({ "got": got, "to_bob": [to_bob.objects, to_bob.bytes], "from_alice": [from_alice.objects, from_alice.bytes] }),
            )
        }
        "actors" => {
            let log = fed.party("bob").actor(Vec::<i64>::new);
            let first = fed.party("alice").task((), |()| -1i64);
            log.call_with(first, |l, v| l.push(v));
            for i in 0..50 {
                log.call(move |l| l.push(i));
            }
            let (len, last) = log.call_multi((), |l, ()| (l.len(), l.last().copied()));
            let snapshot = log.call(|l| l.clone());
            log.kill();
            let after = log.call(|l| l.len());
            let got = fed.get((&len, &last, &snapshot)).await?;
            let after = fed.get(&after).await.map_err(|e| e.to_string());
            Ok(json!({ "got": got, "after_kill": after.unwrap_err() }))
        }
        "diverge" => {
            // Same object id, different call sites in alice and in bob.
            let x = if party == "alice" {
                fed.party("alice").task((), |()| 1i64)
            } else {
                fed.party("alice").task((), |()| 2i64)
            };
            let y = fed.party("bob").task(x, |x: i64| x + 1);
            Ok(json!(fed.get(&y).await?))
        }
        // Two calls made in the other order in bob: alice's #1 is bob's #1.
        "swapped" => {
            let (x, y) = if party == "alice" {
                let x = fed.party("alice").task((), |()| 1i64);
                (x, fed.party("bob").task((), |()| 2i64))
            } else {
                let y = fed.party("bob").task((), |()| 2i64);
                (fed.party("alice").task((), |()| 1i64), y)
            };
            let z = fed.party("alice").task((x, y), |(x, y): (i64, i64)| x + y);
            Ok(json!(fed.get(&z).await?))
        }
        // bob skips a call that alice makes: every later id shifts.
        "skipped" => {
            if party == "alice" {
                let _unused = fed.party("alice").task((), |()| 0i64);
            }
            let b = fed.party("alice").task((), |()| 2i64);
            let c = fed.party("bob").task(b, |x: i64| x + 1);
            Ok(json!(fed.get(&c).await?))
        }
        // bob makes one call more than alice, at the end.
        "extra" => {
            let x = fed.party("alice").task((), |()| 1i64);
            let y = fed.party("bob").task(x, |x: i64| x + 1);
            let got = fed.get(&y).await?;
            if party == "bob" {
                let w = fed.party("alice").task((), |()| 5i64);
                return Ok(json!([got, fed.get(&w).await?]));
            }
            Ok(json!(got))
        }
        // The same number of calls, one made elsewhere in bob, and nothing
        // of it crosses: only the finished positions can tell.
        "unseen_site" => {
            let x = fed.party("alice").task((), |()| 1i64);
            let _unused = if party == "alice" {
                fed.party("alice").task((), |()| 1i64)
            } else {
                fed.party("alice").task((), |()| 2i64)
            };
            Ok(json!(fed.get(&x).await?))
        }
        "one_party" => {
            // A job of one party: nothing crosses, nobody is waited for.
            let counter = fed.party("alice").actor(|| Counter(1));
            let v = counter.call(|c| c.inc(2));
            let t = fed.party("alice").task(v.clone(), |x: i64| x * 10);
            let (x, y) = fed.get((&v, &t)).await?;
            let started = std::time::Instant::now();
            fed.shutdown().await?;
            let shutdown_ms = started.elapsed().as_millis() as u64;
            Ok(json!({ "values": [x, y], "peers": fed.peers().len(), "shutdown_ms": shutdown_ms }))
        }
        "big_then_shutdown" => {
            let blob = fed
                .party("alice")
                .task((), |()| xsilo::Bytes::from(vec![7u8; 64 << 20]));
            let sum = fed
                .party("bob")
                .task(blob, |b: xsilo::Bytes| (b.len(), checksum(&b)));
            if party == "alice" {
                // Shut down at once: the 64 MiB value is still being made
                // and sent; shutdown must wait for bob's acknowledgement.
                return Ok(json!("alice shut down"));
            }
            Ok(json!(fed.get(&sum).await?))
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// The child process: one party running one scenario.
#[test]
#[ignore = "runs only as a child process of the e2e tests"]
fn child() {
    common::child_main(|name, party, fed| Box::pin(scenario(name, party, fed)));
}

fn ok(outcomes: &BTreeMap<String, Outcome>, party: &str) -> Json {
    outcomes[party].value().clone()
}

/// RayFed's one-party jobs (`fed.init(addresses={'alice': ...}, party='alice')`):
/// init (with the start-up barrier, which has nobody to wait for), an actor
/// call and a task, get, and a shutdown that waits for no peer.
#[test]
fn a_one_party_job_runs_a_task_and_an_actor_and_shuts_down_at_once() {
    let out = job(&["alice"], |_, c| {
        assert!(c.comm.barrier_on_initializing);
    })
    .run("one_party");
    let v = ok(&out, "alice");
    assert_eq!(v["values"], json!([3, 30]), "{v}");
    assert_eq!(v["peers"], json!(0), "{v}");
    let shutdown_ms = v["shutdown_ms"].as_u64().unwrap();
    eprintln!(
        "one-party job: shutdown {shutdown_ms} ms, whole process {:?}",
        out["alice"].elapsed
    );
    assert!(shutdown_ms < 1000, "shutdown took {shutdown_ms} ms");
    assert!(
        out["alice"].elapsed < Duration::from_secs(10),
        "{:?}",
        out["alice"].elapsed
    );
}

/// RayFed's certificate set-up: one self-signed certificate naming no party
/// (the shape of its `generate_tls_certs.py`), used by every party as its
/// certificate and as its CA.
#[test]
fn two_parties_sharing_one_self_signed_certificate_complete_a_job() {
    let job = job(&["alice", "bob"], |_, c| {
        c.tls = Some(xsilo::TlsPaths::new(
            "server.crt",
            "server.crt",
            "server.key",
        ));
    });
    let shared =
        xsilo_transport::devcert::self_signed_shared("ray-internal", &["127.0.0.1", "localhost"])
            .unwrap();
    std::fs::write(job.dir.path().join("server.crt"), &shared.cert_pem).unwrap();
    std::fs::write(job.dir.path().join("server.key"), &shared.key_pem).unwrap();
    let out = job.run("quick_start");
    assert_eq!(ok(&out, "alice"), json!(5));
    assert_eq!(ok(&out, "bob"), json!(5));
}

#[test]
fn quick_start_result_is_5_in_both_parties() {
    let out = job(&["alice", "bob"], |_, _| {}).run("quick_start");
    assert_eq!(ok(&out, "alice"), json!(5));
    assert_eq!(ok(&out, "bob"), json!(5));
}

#[test]
fn three_parties_pass_fedobjects_in_containers() {
    let out = job(&["alice", "bob", "carol"], |_, _| {}).run("containers");
    for p in ["alice", "bob", "carol"] {
        assert_eq!(ok(&out, p), json!([1116, 1115, 1117]), "party {p}");
    }
}

#[test]
fn get_broadcasts_an_owned_object_to_every_party() {
    let out = job(&["alice", "bob", "carol"], |_, _| {}).run("broadcast");
    for p in ["alice", "bob", "carol"] {
        assert_eq!(ok(&out, p)["value"], json!("owned by alice"), "party {p}");
    }
    assert_eq!(
        ok(&out, "alice")["sent"],
        json!(2),
        "alice pushes once to each other party"
    );
    assert_eq!(ok(&out, "bob")["sent"], json!(0));
}

#[test]
fn an_object_consumed_by_three_tasks_is_sent_once() {
    let out = job(&["alice", "bob"], |_, _| {}).run("sent_once");
    let alice = ok(&out, "alice");
    let bob = ok(&out, "bob");
    assert_eq!(alice["got"], json!([4096, 4097, 4098]));
    assert_eq!(
        alice["to_bob"],
        json!([1, 4096]),
        "one object of 4096 raw bytes"
    );
    assert_eq!(bob["from_alice"], json!([1, 4096]));
}

#[test]
fn actor_calls_run_in_order_several_returns_and_kill() {
    let out = job(&["alice", "bob"], |_, _| {}).run("actors");
    for p in ["alice", "bob"] {
        let v = ok(&out, p);
        let mut expected: Vec<i64> = vec![-1];
        expected.extend(0..50);
        assert_eq!(v["got"], json!([51, 49, expected]), "party {p}");
        let after = v["after_kill"].as_str().unwrap();
        assert!(
            after.contains("ActorUnavailable") || after.contains("killed"),
            "party {p}: {after}"
        );
    }
}

#[test]
fn diverged_drivers_fail_with_a_clear_error_at_both_ends() {
    let out = job(&["alice", "bob"], |_, _| {}).run("diverge");
    let bob = out["bob"].error();
    assert!(
        bob.contains("driver divergence") && bob.contains("party 'alice'"),
        "bob: {bob}"
    );
    let alice = out["alice"].error();
    assert!(
        alice.contains("aborted by party 'bob'") && alice.contains("driver divergence"),
        "alice: {alice}"
    );
}

/// Both parties end with a divergence error naming both parties and the
/// object, within 5 s (promise M8).
fn assert_divergence_at_both_ends(out: &BTreeMap<String, Outcome>, object: &str) {
    for (p, o) in out {
        let e = o.error();
        assert!(e.contains("driver divergence"), "party {p}: {e}");
        assert!(
            e.contains("party 'alice'") && e.contains("party 'bob'"),
            "party {p}: both parties named: {e}"
        );
        assert!(
            e.contains(object),
            "party {p}: the object {object} named: {e}"
        );
        assert!(
            o.elapsed < Duration::from_secs(5),
            "party {p} took {:?}",
            o.elapsed
        );
    }
}

#[test]
fn two_calls_swapped_end_both_parties_with_a_divergence() {
    let out = job(&["alice", "bob"], |_, _| {}).run("swapped");
    assert_divergence_at_both_ends(&out, "#1");
    let alice = out["alice"].error();
    assert!(
        alice.contains(
            "party 'bob' sent it as its own, but this party's driver made it in party 'alice'"
        ),
        "alice says what differs: {alice}"
    );
}

#[test]
fn a_skipped_call_ends_both_parties_with_a_divergence() {
    let out = job(&["alice", "bob"], |_, _| {}).run("skipped");
    assert_divergence_at_both_ends(&out, "#2");
    let bob = out["bob"].error();
    assert!(
        bob.contains(
            "party 'alice' sent it as its own, but this party's driver made it in party 'bob'"
        ),
        "bob says what differs: {bob}"
    );
}

#[test]
fn an_extra_call_at_the_end_ends_both_parties_with_a_divergence() {
    let out = job(&["alice", "bob"], |_, _| {}).run("extra");
    assert_divergence_at_both_ends(&out, "#3");
    let bob = out["bob"].error();
    assert!(
        bob.contains("party 'alice' finished its driver after object #2 and party 'bob' has made 3 object(s)"),
        "bob says what differs: {bob}"
    );
}

#[test]
fn drivers_that_differ_only_where_nothing_crosses_end_with_a_divergence_at_both_ends() {
    let out = job(&["alice", "bob"], |_, _| {}).run("unseen_site");
    assert_divergence_at_both_ends(&out, "#2");
    for (p, o) in &out {
        assert!(
            o.error().contains("other call sites"),
            "party {p}: {}",
            o.error()
        );
    }
}

#[test]
fn shutdown_right_after_sending_64_mib_loses_nothing() {
    let out = job(&["alice", "bob"], |_, _| {}).run("big_then_shutdown");
    assert_eq!(ok(&out, "alice"), json!("alice shut down"));
    let expected = checksum(&vec![7u8; 64 << 20]);
    assert_eq!(ok(&out, "bob"), json!([64 << 20, expected]));
}

#[test]
fn config_errors_name_the_key() {
    let job = job(&["alice", "bob"], |_, c| {
        c.comm.barrier_timeout = Duration::from_secs(3)
    });
    let path = job.config("alice");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("send_timeout", "send_timout")).unwrap();
    let err = Config::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("send_timout"), "{err}");
    let out = job.run("quick_start");
    let alice = out["alice"].error();
    assert!(
        alice.contains("send_timout"),
        "alice must fail naming the key: {alice}"
    );
    // Bob waits for alice at the barrier and fails naming her, within its bound.
    let bob = out["bob"].error();
    assert!(bob.contains("alice"), "bob: {bob}");
}
