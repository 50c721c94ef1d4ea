//! The programming model in simulation mode (promises M1-M7), over memory
//! and over QUIC on loopback. Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use xsilo::{Error, Fed, SimNetwork, Simulation};

struct Counter(i64);
impl Counter {
    fn inc(&mut self, by: i64) -> i64 {
        self.0 += by;
        self.0
    }
}

const BOUND: Duration = Duration::from_secs(60);

fn run<T: std::fmt::Debug + 'static, Fut>(
    parties: &[&str],
    network: SimNetwork,
    driver: impl Fn(Fed) -> Fut,
) -> std::collections::BTreeMap<String, Result<T, Error>>
where
    Fut: std::future::Future<Output = Result<T, Error>> + 'static,
{
    let sim = Simulation::new(parties).unwrap();
    let sim = if network == SimNetwork::Quic {
        sim.over_quic()
    } else {
        sim
    };
    xsilo::block_on(async move {
        tokio::time::timeout(BOUND, sim.run(driver))
            .await
            .expect("the simulation did not finish within its bound")
            .unwrap()
    })
    .into_iter()
    .map(|(p, r)| (p.to_string(), r))
    .collect()
}

async fn quick_start(fed: Fed) -> Result<i64, Error> {
    let a = fed.party("alice").actor(|| Counter(0));
    let b = fed.party("bob").actor(|| Counter(0));
    let va = a.call(|c| c.inc(1));
    let vb = b.call(|c| c.inc(2));
    let sum = fed.party("bob").task((va, vb), |(x, y)| x + y);
    let v = fed.get(&sum).await?;
    fed.shutdown().await?;
    Ok(v)
}

#[test]
fn quick_start_gives_the_same_result_in_every_party_in_memory_and_over_quic() {
    for network in [SimNetwork::Memory, SimNetwork::Quic] {
        let results = run(&["alice", "bob"], network, quick_start);
        assert_eq!(results.len(), 2);
        for (party, r) in results {
            assert_eq!(r.unwrap(), 3, "party {party} over {network:?}");
        }
    }
}

#[test]
fn a_one_party_simulation_runs_in_memory_and_over_quic_and_none_is_refused() {
    for network in [SimNetwork::Memory, SimNetwork::Quic] {
        let results = run(&["alice"], network, |fed| async move {
            assert!(fed.peers().is_empty());
            let counter = fed.party("alice").actor(|| Counter(0));
            let v = counter.call(|c| c.inc(4));
            let t = fed.party("alice").task(v.clone(), |x: i64| x + 1);
            let got = fed.get((&v, &t)).await?;
            let started = std::time::Instant::now();
            fed.shutdown().await?;
            Ok((got, started.elapsed()))
        });
        assert_eq!(results.len(), 1);
        let ((v, t), shutdown) = results["alice"].as_ref().unwrap();
        assert_eq!((*v, *t), (4, 5), "over {network:?}");
        assert!(
            *shutdown < Duration::from_secs(1),
            "shutdown took {shutdown:?} over {network:?}"
        );
    }
    let err = Simulation::new(&[]).unwrap_err().to_string();
    assert!(err.contains("parties"), "{err}");
}

#[test]
fn containers_of_fedobjects_and_several_returns() {
    let results = run(
        &["alice", "bob", "carol"],
        SimNetwork::Memory,
        |fed| async move {
            let xs: Vec<_> = (0..4)
                .map(|i| fed.party("alice").task((), move |()| i * 10))
                .collect();
            let maybe = Some(fed.party("carol").task((), |()| 5i32));
            let pair = [
                fed.party("bob").task((), |()| 1i32),
                fed.party("carol").task((), |()| 2i32),
            ];
            let (lo, hi) = fed.party("bob").task_multi(
                (xs, maybe, pair),
                |(xs, m, p): (Vec<i32>, Option<i32>, Vec<i32>)| {
                    let total: i32 =
                        xs.iter().sum::<i32>() + m.unwrap_or(0) + p.iter().sum::<i32>();
                    (total - 1, total + 1)
                },
            );
            let both = fed
                .party("carol")
                .task((lo.clone(), hi.clone()), |(a, b): (i32, i32)| {
                    format!("{a}..{b}")
                });
            let got = fed.get((&lo, &hi, &both)).await?;
            fed.shutdown().await?;
            Ok(got)
        },
    );
    for (party, r) in results {
        assert_eq!(r.unwrap(), (67, 69, "67..69".to_owned()), "party {party}");
    }
}

#[test]
fn actor_calls_run_in_order_and_kill_stops_later_calls() {
    let results = run(&["alice", "bob"], SimNetwork::Memory, |fed| async move {
        let log = fed.party("bob").actor(Vec::<i64>::new);
        let slow_input = fed.party("alice").task((), |()| 7i64);
        // The first call waits for a remote input; later calls must not
        // overtake it.
        log.call_with(slow_input, |l, v| l.push(v));
        for i in 0..20 {
            log.call(move |l| l.push(i));
        }
        let snapshot = log.call(|l| l.clone());
        log.kill();
        let after = log.call(|l| l.len());
        let snapshot = fed.get(&snapshot).await?;
        let after = fed.get(&after).await;
        fed.shutdown().await?;
        Ok((snapshot, after.map_err(|e| e.to_string())))
    });
    for (party, r) in results {
        let (snapshot, after) = r.unwrap();
        let mut expected = vec![7];
        expected.extend(0..20);
        assert_eq!(snapshot, expected, "party {party}");
        let err = after.unwrap_err();
        if party == "bob" {
            assert!(err.contains("it was killed"), "party {party}: {err}");
        } else {
            assert!(
                err.contains("failed in party 'bob' (ActorUnavailable)"),
                "party {party}: {err}"
            );
        }
    }
}

#[test]
fn a_consumed_object_is_sent_once_per_destination() {
    let results = run(&["alice", "bob"], SimNetwork::Memory, |fed| async move {
        let x = fed.party("alice").task((), |()| vec![1u8; 1000]);
        let outs: Vec<_> = (0..3)
            .map(|i| {
                fed.party("bob")
                    .task(x.clone(), move |v: Vec<u8>| v.len() + i)
            })
            .collect();
        let got = fed.get(outs).await?;
        let stats = fed.stats().await;
        fed.shutdown().await?;
        Ok((got, stats))
    });
    let (got, alice) = results["alice"].as_ref().unwrap();
    assert_eq!(got, &vec![1000, 1001, 1002]);
    let to_bob = alice
        .sent
        .get(&"bob".parse().unwrap())
        .copied()
        .unwrap_or_default();
    assert_eq!(
        to_bob.objects, 1,
        "x must be pushed to bob once, not once per consumer"
    );
    assert_eq!(to_bob.bytes, 1000, "raw bytes cross without re-encoding");
}

#[test]
fn task_errors_stay_local_in_full_and_cross_as_remote_errors() {
    let results = run(&["alice", "bob"], SimNetwork::Memory, |fed| async move {
        let bad = fed.party("alice").try_task((), |()| {
            Err::<i32, _>(std::io::Error::other("secret detail"))
        });
        let downstream = fed.party("bob").task(bad.clone(), |x: i32| x + 1);
        let own = fed.get(&bad).await.map_err(|e| e.to_string());
        let r = fed.get(&downstream).await.map_err(|e| e.to_string());
        fed.shutdown().await.ok();
        Ok((own, r))
    });
    let (alice_own, alice_down) = results["alice"].as_ref().unwrap();
    let (bob_own, bob_down) = results["bob"].as_ref().unwrap();
    let alice_own = alice_own.as_ref().unwrap_err();
    assert!(
        alice_own.contains("secret detail"),
        "alice sees her full local error: {alice_own}"
    );
    for err in [alice_down, bob_own, bob_down] {
        let err = err.as_ref().unwrap_err();
        assert!(
            err.starts_with("RemoteError: object #1 failed in party 'alice'"),
            "{err}"
        );
        assert!(
            !err.contains("secret detail"),
            "the message must not cross by default: {err}"
        );
    }
}

#[test]
fn shutdown_runs_once_however_often_and_from_wherever_it_is_called() {
    let results = run(&["alice", "bob"], SimNetwork::Quic, |fed| async move {
        let x = fed.party("alice").task((), |()| vec![3u8; 1 << 20]);
        let y = fed.party("bob").task(x, |v: Vec<u8>| v.len());
        let got = fed.get(&y).await?;
        // Three concurrent shutdowns and a late one: one run, one result.
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let fed = fed.clone();
                actix_rt::spawn(async move { fed.shutdown().await.map_err(|e| e.to_string()) })
            })
            .collect();
        let mut outcomes = Vec::new();
        for c in calls {
            outcomes.push(c.await.unwrap());
        }
        outcomes.push(fed.shutdown().await.map_err(|e| e.to_string()));
        // After shutdown, calls fail fast instead of hanging.
        let late = fed.party("alice").task((), |()| 1);
        let late = fed.get(&late).await.map_err(|e| e.to_string());
        let runs = fed.runtime().shutdowns_run().await;
        Ok((got, outcomes, late, runs))
    });
    for (party, r) in results {
        let (got, outcomes, late, runs) = r.unwrap();
        assert_eq!(
            runs, 1,
            "party {party}: the shutdown sequence ran {runs} times"
        );
        assert_eq!(got, 1 << 20, "party {party}");
        assert!(
            outcomes.iter().all(Result::is_ok),
            "party {party}: {outcomes:?}"
        );
        let late = late.unwrap_err();
        assert!(late.contains("has shut down"), "party {party}: {late}");
    }
}

#[test]
fn stress_a_failure_while_100_sends_are_in_flight_never_hangs() {
    // 50 runs over QUIC: alice pushes 100 values of 64 KiB to bob while one
    // of her tasks fails; every party must end with an error naming alice,
    // each run within its bound.
    for run_no in 0..50 {
        let results = run(&["alice", "bob"], SimNetwork::Quic, move |fed| async move {
            let parts: Vec<_> = (0..100u32)
                .map(|i| {
                    fed.party("alice").try_task((), move |()| {
                        if i == 37 + run_no % 50 {
                            Err(std::io::Error::other("shard lost"))
                        } else {
                            Ok(vec![i as u8; 64 << 10])
                        }
                    })
                })
                .collect();
            let sizes: Vec<_> = parts
                .into_iter()
                .map(|p| fed.party("bob").task(p, |v: Vec<u8>| v.len()))
                .collect();
            let total = fed
                .party("bob")
                .task(sizes, |s: Vec<usize>| s.iter().sum::<usize>());
            let r = fed.get(&total).await.map_err(|e| e.to_string());
            fed.shutdown().await.ok();
            Ok(r)
        });
        for (party, r) in results {
            let err = r.unwrap().unwrap_err();
            assert!(
                err.contains("failed in party 'alice'"),
                "run {run_no}, party {party}: {err}"
            );
        }
    }
}

/// A FedAvg-shaped loop (promise L1): each round every party makes an
/// update from the global model (1 MiB), the aggregator makes the next
/// model, everyone gets a checksum; the loop variable's handles are
/// overwritten round after round. What a party holds stays that of one
/// round, in every party, over memory and over QUIC.
#[test]
fn many_rounds_of_large_values_keep_every_party_flat() {
    for network in [SimNetwork::Memory, SimNetwork::Quic] {
        let results = run(&["alice", "bob", "carol"], network, |fed| async move {
            let mut model = fed
                .party("alice")
                .task((), |()| xsilo::Bytes::from(vec![0u8; 1 << 20]));
            let mut peak = 0;
            for round in 0..40u8 {
                let updates: Vec<_> = ["alice", "bob", "carol"]
                    .into_iter()
                    .map(|p| {
                        fed.party(p).task(model.clone(), move |m: xsilo::Bytes| {
                            xsilo::Bytes::from(vec![m[0].wrapping_add(round); m.len()])
                        })
                    })
                    .collect();
                model = fed.party("alice").task(updates, |us: Vec<xsilo::Bytes>| {
                    us.into_iter().next().unwrap_or_default()
                });
                let check = fed
                    .party("alice")
                    .task(model.clone(), |m: xsilo::Bytes| m[0]);
                fed.get(&check).await?;
                peak = peak.max(fed.stats().await.live_bytes);
            }
            drop(model);
            let end = fed.stats().await;
            Ok((peak, end.live_bytes, end.live_objects))
        });
        for (party, r) in results {
            let (peak, end, objects) = r.unwrap();
            // One round holds the model, at most three updates and the
            // next model: 5 MiB. 40 rounds kept would be over 100 MiB.
            assert!(
                peak <= 5 << 20,
                "{network:?} party {party}: peak {peak} bytes held"
            );
            assert!(
                end <= 2 << 20,
                "{network:?} party {party}: {end} bytes held at the end"
            );
            assert!(
                objects <= 4,
                "{network:?} party {party}: {objects} objects held at the end"
            );
        }
    }
}

/// A call on a party that is not in the job fails in every party alike,
/// with nothing sent between them and no false divergence (M8).
#[test]
fn a_call_on_an_unknown_party_fails_alike_in_every_party() {
    let results = run(&["alice", "bob"], SimNetwork::Quic, |fed| async move {
        let x = fed.party("dave").task((), |()| 1i64);
        let y = fed.party("bob").task(x.clone(), |v: i64| v + 1);
        let gx = fed.get(&x).await.map_err(|e| e.to_string());
        let gy = fed.get(&y).await.map_err(|e| e.to_string());
        let ok = fed.party("alice").task((), |()| 7i64);
        let after = fed.get(&ok).await?;
        Ok((gx, gy, after))
    });
    for (party, r) in results {
        let (gx, gy, after) = r.unwrap();
        let gx = gx.unwrap_err();
        assert!(
            gx.contains("party 'dave' is not a party of this job"),
            "party {party}: {gx}"
        );
        assert!(gy.unwrap_err().contains("dave"), "party {party}");
        assert_eq!(after, 7, "party {party}: the job goes on");
    }
}
