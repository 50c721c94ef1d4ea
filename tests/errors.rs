//! Cross-silo errors, unintended shutdown and peer liveness across real
//! processes over QUIC (promises E1-E10): nobody waits forever. Every wait is
//! bounded; each test also checks that the parties ended promptly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::job;
use serde_json::{json, Value as Json};
use xsilo::{Error, Fed};

/// A failure must reach every party well before any liveness timeout.
const PROMPT: Duration = Duration::from_secs(8);

async fn scenario(name: &str, party: &str, fed: &Fed) -> Result<Json, Error> {
    match name {
        // alice -> bob -> carol, every party gets carol's object.
        "chain" => {
            let a = fed.party("alice").try_task((), |()| {
                Err::<i64, _>(std::io::Error::other("alice's secret detail"))
            });
            let b = fed.party("bob").task(a, |x: i64| x + 1);
            let c = fed.party("carol").task(b, |x: i64| x + 1);
            Ok(json!(fed.get(&c).await?))
        }
        "actor_method" => {
            let acc = fed.party("alice").actor(|| 0i64);
            let v = acc.try_call_with((), |_, ()| {
                Err::<i64, _>(std::io::Error::other("method secret"))
            });
            let w = fed.party("bob").task(v, |x: i64| x * 2);
            Ok(json!(fed.get(&w).await?))
        }
        // alice stays alive but produces nothing until she is signalled or
        // killed; bob waits on her value.
        "wait_on_alice" => {
            // Every party is past start-up (its barrier) when it says so.
            println!("XSILO-READY");
            if party == "alice" {
                tokio::time::sleep(Duration::from_secs(50)).await;
            }
            let a = fed.party("alice").task((), |()| 1i64);
            let b = fed.party("bob").task(a, |x: i64| x + 1);
            let got = fed.get(&b).await;
            if got.is_err() {
                // When the wait ended, before shutdown's own bounded steps.
                println!("XSILO-GET-FAILED");
            }
            Ok(json!(got?))
        }
        // A round, then (after GO) 20 more: a job that an intruder's dial
        // must not disturb.
        // Promise S1: a peer far ahead; report what this party holds.
        "held" => {
            println!("XSILO-READY");
            common::wait_go().await;
            let s = fed.stats().await;
            println!("XSILO-HELD {} {}", s.live_objects, s.live_bytes);
            Ok(json!(null))
        }
        "intruded" => {
            let a = fed.party("alice").task((), |()| 1i64);
            let b = fed.party("bob").task(a, |x: i64| x + 1);
            fed.get(&b).await?;
            println!("XSILO-READY");
            common::wait_go().await;
            let mut done = 0i64;
            for i in 0..20i64 {
                let a = fed.party("alice").task((), move |()| i);
                let b = fed.party("bob").task(a, |x: i64| x + 1);
                done += fed.get(&b).await? - i;
            }
            Ok(json!(done))
        }
        // alice's value is over bob's size limit.
        "too_large" => {
            let a = fed.party("alice").task((), |()| vec![1u8; 2 << 20]);
            let b = fed.party("bob").task(a, |v: Vec<u8>| v.len());
            Ok(json!(fed.get(&b).await?))
        }
        // A value of carol's, and carol may never start.
        "needs_carol" => {
            let c = fed.party("carol").task((), |()| 3i64);
            let s = fed.party("alice").task(c, |x: i64| x * 10);
            Ok(json!(fed.get(&s).await?))
        }
        // alice pushes 40 values to bob, one every 50 ms, across a blip of
        // the link between them; bob sums them.
        "blip" => {
            let mut parts = Vec::new();
            for i in 0..40u64 {
                let v = fed.party("alice").task((), move |()| i);
                parts.push(fed.party("bob").task(v, move |x: u64| {
                    println!("XSILO-GOT {i}");
                    x
                }));
                // The pace of the workload, not a synchronisation.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let total = fed
                .party("bob")
                .task(parts, |p: Vec<u64>| p.iter().sum::<u64>());
            Ok(json!(fed.get(&total).await?))
        }
        // Both parties wait on each other across a cut longer than the bound.
        "cut" => {
            println!("XSILO-READY");
            common::wait_go().await;
            let a = fed.party("alice").task((), |()| 1u64);
            let b = fed.party("bob").task(a, |x: u64| x + 1);
            let c = fed.party("alice").task(b, |x: u64| x + 1);
            let got = fed.get(&c).await;
            if got.is_err() {
                println!("XSILO-GET-FAILED");
            }
            Ok(json!(got?))
        }
        // alice queues 16 MiB for bob over a slow link, then a task of hers
        // fails (an error is sent), then she shuts down at once. bob waits
        // for the 16 MiB.
        "queued" => {
            let big = fed
                .party("alice")
                .task((), |()| xsilo::Bytes::from(vec![5u8; 16 << 20]));
            let len = fed.party("bob").task(big, |b: xsilo::Bytes| b.len());
            let bad = fed
                .party("alice")
                .try_task((), |()| Err::<u8, _>(std::io::Error::other("failed")));
            if party == "alice" {
                let _ = fed.get(&bad).await;
                let start = Instant::now();
                let shutdown = fed.shutdown().await;
                return Ok(
                    json!({ "shutdown_ms": start.elapsed().as_millis() as u64, "ok": shutdown.is_ok() }),
                );
            }
            Ok(json!(fed.get(&len).await?))
        }
        // 100 values of 64 KiB in flight to bob, and one of 2 MiB among
        // them that bob's limit refuses.
        "storm" => {
            let mut parts = Vec::new();
            for i in 0..101u32 {
                let size = if i == 50 { 2 << 20 } else { 64 << 10 };
                let v = fed.party("alice").task((), move |()| vec![i as u8; size]);
                parts.push(fed.party("bob").task(v, |v: Vec<u8>| v.len()));
            }
            let total = fed
                .party("bob")
                .task(parts, |p: Vec<usize>| p.iter().sum::<usize>());
            Ok(json!(fed.get(&total).await?))
        }
        other => panic!("unknown scenario {other}"),
    }
}

#[test]
#[ignore = "runs only as a child process of the error tests"]
fn child() {
    common::child_main(|name, party, fed| Box::pin(scenario(name, party, fed)));
}

#[test]
fn a_failure_cascades_along_a_chain_and_every_party_fails_promptly_naming_its_origin() {
    let out = job(&["alice", "bob", "carol"], |_, _| {}).run("chain");
    for p in ["alice", "bob", "carol"] {
        let o = &out[p];
        let e = o.error();
        assert!(e.contains("failed in party 'alice'"), "party {p}: {e}");
        assert!(
            e.contains("RemoteError"),
            "party {p} gets a RemoteError: {e}"
        );
        assert!(
            !e.contains("secret detail"),
            "party {p}: the message must not cross by default: {e}"
        );
        assert!(o.elapsed < PROMPT, "party {p} took {:?}", o.elapsed);
        assert!(o.status.success(), "party {p}: {}", o.status);
        assert_eq!(o.handler_calls(), 0, "a task failure is no sending failure");
    }
}

#[test]
fn a_failing_actor_method_reaches_the_consumer_as_a_remote_error() {
    let out = job(&["alice", "bob"], |_, _| {}).run("actor_method");
    assert!(
        out["bob"].error().contains("failed in party 'alice'"),
        "{}",
        out["bob"].error()
    );
    assert!(!out["bob"].error().contains("method secret"));
    assert!(out["alice"].error().contains("failed in party 'alice'"));
}

#[test]
fn the_error_trace_crosses_only_when_exposed() {
    let out = job(&["alice", "bob", "carol"], |_, c| {
        c.comm.expose_error_trace = true
    })
    .run("chain");
    for p in ["bob", "carol"] {
        let e = out[p].error();
        assert!(
            e.contains("alice's secret detail"),
            "party {p}: with expose_error_trace the message crosses: {e}"
        );
    }
}

#[test]
fn a_party_killed_with_sigkill_fails_the_waits_on_it_within_the_bound() {
    let bound = Duration::from_secs(3);
    let job = job(&["alice", "bob"], |_, c| {
        c.comm.peer_lost_timeout = bound;
        c.comm.keep_alive_interval = Duration::from_millis(500);
    });
    let mut run = job.start("wait_on_alice", &[]);
    run.wait_line("alice", "XSILO-READY");
    run.wait_line("bob", "XSILO-READY");
    let killed = run.signal("alice", "KILL");
    run.wait_line("bob", "XSILO-GET-FAILED");
    let noticed = killed.elapsed();
    let out = run.finish();
    let e = out["bob"].error();
    assert!(e.contains("party 'alice' is gone"), "bob: {e}");
    assert!(
        noticed < bound + Duration::from_secs(3),
        "bob noticed after {noticed:?}"
    );
    assert!(!out["alice"].status.success());
}

#[test]
fn sigint_runs_the_handler_once_tells_the_peers_and_exits_non_zero() {
    let job = job(&["alice", "bob"], |_, _| {});
    let mut run = job.start("wait_on_alice", &[]);
    run.wait_line("alice", "XSILO-READY");
    run.wait_line("bob", "XSILO-READY");
    let sent = run.signal("alice", "INT");
    let out = run.finish();
    let alice = &out["alice"];
    assert_eq!(alice.handler_calls(), 1, "alice's lines: {:?}", alice.lines);
    assert_eq!(
        alice.status.code(),
        Some(130),
        "128 + SIGINT: {:?}",
        alice.lines
    );
    let e = out["bob"].error();
    assert!(
        e.contains("aborted by party 'alice'") && e.contains("SIGINT"),
        "bob: {e}"
    );
    assert!(sent.elapsed() < PROMPT, "took {:?}", sent.elapsed());
}

#[test]
fn exit_on_sending_failure_runs_the_handler_once_and_tells_the_peer() {
    let job = job(&["alice", "bob"], |p, c| {
        if p == "alice" {
            c.comm.exit_on_sending_failure = true;
        } else {
            c.comm.max_message_size = 1 << 20;
        }
    });
    let out = job.run("too_large");
    let alice = &out["alice"];
    assert_eq!(alice.handler_calls(), 1, "alice's lines: {:?}", alice.lines);
    let handler_line = alice
        .lines
        .iter()
        .find(|l| l.contains("XSILO-HANDLER"))
        .unwrap();
    assert!(
        handler_line.contains("too large"),
        "the handler gets the last sending error: {handler_line}"
    );
    assert_eq!(alice.status.code(), Some(1));
    let e = out["bob"].error();
    assert!(
        e.contains("aborted by party 'alice'") && e.contains("max_message_size"),
        "bob: {e}"
    );
    for (p, o) in &out {
        assert!(o.elapsed < PROMPT, "party {p} took {:?}", o.elapsed);
    }
}

#[test]
fn without_exit_on_sending_failure_a_refused_send_still_fails_both_parties_promptly() {
    let job = job(&["alice", "bob"], |p, c| {
        if p == "bob" {
            c.comm.max_message_size = 1 << 20;
        }
    });
    let out = job.run("too_large");
    let a = out["alice"].error();
    assert!(a.contains("max_message_size"), "alice: {a}");
    let b = out["bob"].error();
    assert!(b.contains("aborted by party 'alice'"), "bob: {b}");
    for (p, o) in &out {
        assert!(
            o.status.success(),
            "party {p} ends its driver normally, with the error"
        );
        assert_eq!(o.handler_calls(), 0);
        assert!(o.elapsed < PROMPT, "party {p} took {:?}", o.elapsed);
    }
}

#[test]
fn a_wrong_job_name_ends_both_parties_with_the_refusal() {
    let job = job(&["alice", "bob"], |p, c| {
        c.comm.barrier_on_initializing = false;
        if p == "bob" {
            c.job = "another-job".parse().unwrap();
        }
    });
    let out = job.run("too_large");
    for p in ["alice", "bob"] {
        let e = out[p].error();
        assert!(
            e.contains("does not serve job"),
            "party {p} ends with the refusal: {e}"
        );
        assert!(
            out[p].elapsed < PROMPT,
            "party {p} took {:?}",
            out[p].elapsed
        );
    }
}

/// A hand-made dial, as `as_party` (its certificate), to `to`, with a hello
/// naming `job_name` (this job's when `None`): the endpoint, the connection
/// and the control stream. Must run in a tokio runtime.
async fn raw_dial(
    job: &common::Job,
    as_party: &str,
    to: &str,
    job_name: Option<&str>,
) -> (
    quinn::Endpoint,
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
) {
    let config = xsilo::Config::from_file(job.config(as_party)).unwrap();
    let me: xsilo::PartyName = as_party.parse().unwrap();
    let peer: xsilo::PartyName = to.parse().unwrap();
    let tls = config.tls_identity().unwrap();
    let addr = config.address_book(&me)[&peer].addr;
    let endpoint = xsilo_transport::setup::quinn_endpoint(
        &me,
        "127.0.0.1:0".parse().unwrap(),
        &tls,
        &config.transport_config_for(&me),
    )
    .unwrap();
    let conn = tokio::time::timeout(Duration::from_secs(10), endpoint.connect(addr, to).unwrap())
        .await
        .expect("the hand-made dial's handshake timed out")
        .unwrap();
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let hello = xsilo_wire::Hello {
        version: xsilo_wire::PROTOCOL_VERSION,
        job: job_name.map_or(config.job.clone(), |j| j.parse().unwrap()),
        party: me,
        to: peer,
        metadata: Default::default(),
        probe: None,
    };
    send.write_all(&xsilo_wire::codec::encode_to_vec(&hello).unwrap())
        .await
        .unwrap();
    (endpoint, conn, send, recv)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Dials `to` with `as_party`'s certificate and a hello naming `job_name`;
/// returns the refusal's text.
fn dial_for_another_job(job: &common::Job, as_party: &str, to: &str, job_name: &str) -> String {
    block_on(async {
        let (_endpoint, conn, _send, mut recv) = raw_dial(job, as_party, to, Some(job_name)).await;
        let reply = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(1 << 16))
            .await
            .expect("no answer to the intruder's hello");
        let text = match reply {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => e.to_string(),
        };
        conn.close(0u32.into(), b"done");
        text
    })
}

/// As `as_party` (its certificate and a hello for this job), pushes `n`
/// objects of `len` bytes to `to`, each for a call far ahead of any driver,
/// one after the other; returns how many `to` acknowledged before one was
/// held unanswered for 3 s.
fn push_far_ahead(job: &common::Job, as_party: &str, to: &str, n: u64, len: usize) -> u64 {
    let config = xsilo::Config::from_file(job.config(as_party)).unwrap();
    let me: xsilo::PartyName = as_party.parse().unwrap();
    block_on(async {
        let (_endpoint, conn, _control, mut answer) = raw_dial(job, as_party, to, None).await;
        let mut prefix = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), answer.read_exact(&mut prefix))
            .await
            .expect("no answer to the hello")
            .unwrap();
        let payload = vec![7u8; len];
        let mut acked = 0;
        for i in 0..n {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let header = xsilo_wire::ObjectHeader {
                job: config.job.clone(),
                src: me.clone(),
                object: xsilo_wire::ObjectId(1_000_000 + i),
                consumer: 1_000_000 + i,
                fingerprint: 1,
                payload_len: len as u64,
                resend: false,
            };
            send.write_all(&xsilo_wire::codec::encode_to_vec(&header).unwrap())
                .await
                .unwrap();
            send.write_all(&payload).await.unwrap();
            let _ = send.finish();
            let reply = async {
                let mut prefix = [0u8; 4];
                recv.read_exact(&mut prefix)
                    .await
                    .map_err(|e| e.to_string())?;
                let len = xsilo_wire::codec::parse_length(prefix, 1 << 16).unwrap();
                let mut body = vec![0; len];
                recv.read_exact(&mut body)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(body)
            };
            match tokio::time::timeout(Duration::from_secs(3), reply).await {
                Ok(Ok(body)) => {
                    let reply: xsilo_wire::DataReply =
                        xsilo_wire::codec::decode_body(&body, "data reply").unwrap();
                    assert_eq!(reply, xsilo_wire::DataReply::Ack, "object {i}");
                    acked += 1;
                }
                Ok(Err(e)) => panic!("no reply to object {i}: {e}"),
                Err(_) => break,
            }
        }
        conn.close(0u32.into(), b"done");
        acked
    })
}

/// Promise S1 (RFC 0002, "Object lifetime"): a party keeps what a peer
/// sends before its driver made it, but only up to its per-peer inbound
/// budget; past that, objects wait unanswered and the transport's budget
/// holds the sender.
#[test]
fn objects_sent_far_ahead_of_the_driver_are_held_back_within_the_budget() {
    let job = job(&["alice", "bob"], |_, c| {
        c.comm.barrier_on_initializing = false;
        c.comm.max_message_size = 4 << 20; // budget per peer: 4 MiB
        c.comm.send_timeout = Duration::from_secs(5);
    });
    let mut run = job.start("held", &["alice"]);
    run.wait_line("alice", "XSILO-READY");
    // 1 MiB each: 4 fit in alice's 4 MiB bound for bob; the fifth waits
    // unanswered (and holds bob's transport budget).
    let acked = push_far_ahead(&job, "bob", "alice", 32, 1 << 20);
    assert_eq!(acked, 4, "alice acknowledged {acked} objects sent ahead");
    run.go("alice");
    let held = run.wait_line("alice", "XSILO-HELD");
    let held = held.trim().trim_start_matches("XSILO-HELD").trim();
    let (objects, bytes) = held.split_once(' ').unwrap();
    assert_eq!(objects, "4", "alice holds {held}");
    let bytes: u64 = bytes.parse().unwrap();
    assert!(
        bytes <= 4 << 20,
        "alice holds {bytes} bytes of bob's objects"
    );
    let out = run.finish();
    assert!(
        out["alice"].elapsed < Duration::from_secs(30),
        "alice took {:?}",
        out["alice"].elapsed
    );
}

/// RFC 0003, "Who can abort a job" (issue: 135 of 149 round trips failed
/// when this happened mid-job).
#[test]
fn a_dial_naming_another_job_mid_job_does_not_abort_the_job() {
    let job = job(&["alice", "bob"], |_, _| {});
    let mut run = job.start("intruded", &[]);
    run.wait_line("alice", "XSILO-READY");
    run.wait_line("bob", "XSILO-READY");
    // Someone holding bob's certificate dials alice for another job.
    let answer = dial_for_another_job(&job, "bob", "alice", "another-job");
    assert!(
        answer.contains("another-job"),
        "the intruder is refused naming the job: {answer}"
    );
    run.go("alice");
    run.go("bob");
    let out = run.finish();
    for p in ["alice", "bob"] {
        assert_eq!(out[p].value(), &json!(20), "party {p}");
    }
}

/// Issue: a wrong port was found after a minute, unnamed, and the peer was
/// told only that alice "shut down".
#[test]
fn a_wrong_port_fails_start_up_at_both_ends_naming_the_party_address_and_key() {
    // A port nobody listens on, in alice's book only.
    let wrong = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let job = job(&["alice", "bob"], |p, c| {
        c.comm.barrier_timeout = Duration::from_secs(3);
        if p == "alice" {
            c.parties.insert("bob".parse().unwrap(), wrong);
        }
    });
    let started = Instant::now();
    let out = job.run("too_large");
    let wrong = wrong.to_string();
    for p in ["alice", "bob"] {
        let e = out[p].error();
        assert!(
            e.contains("could not reach party 'bob'")
                && e.contains(&wrong)
                && e.contains("parties.bob"),
            "party {p} names bob, the address and the key: {e}"
        );
    }
    assert!(
        out["bob"].error().contains("alice"),
        "{}",
        out["bob"].error()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3) + PROMPT,
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_party_that_never_starts_fails_the_others_naming_it() {
    let job = job(&["alice", "bob", "carol"], |_, c| {
        c.comm.barrier_on_initializing = false;
        c.comm.connect_timeout = Duration::from_millis(500);
        c.comm.retry.max_attempts = 3;
        c.comm.retry.initial_backoff = Duration::from_millis(100);
    });
    let started = Instant::now();
    let out = job.start("needs_carol", &["alice", "bob"]).finish();
    for p in ["alice", "bob"] {
        let e = out[p].error();
        assert!(e.contains("carol"), "party {p}: {e}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

/// A job of alice and bob, each in its own network namespace.
fn netns_job(
    tag: u8,
    bound: Duration,
) -> Option<(
    common::NetPair,
    common::Job,
    std::collections::BTreeMap<String, String>,
)> {
    netns_job_with(tag, bound, |_| {})
}

/// [`netns_job`] with a further tweak of every party's configuration.
fn netns_job_with(
    tag: u8,
    bound: Duration,
    tweak: impl Fn(&mut xsilo::Config),
) -> Option<(
    common::NetPair,
    common::Job,
    std::collections::BTreeMap<String, String>,
)> {
    if !common::is_root() {
        assert!(
            common::may_skip_without_root(),
            "network namespace tests need root, and CI=true forbids skipping them"
        );
        eprintln!("SKIPPED: network namespaces need root");
        return None;
    }
    let pair = common::NetPair::new(tag)
        .unwrap_or_else(|e| panic!("cannot create network namespaces as root: {e}"));
    let port = 21_000 + u16::from(tag) * 10 + (std::process::id() % 5) as u16;
    let addrs = [
        std::net::SocketAddr::new(pair.addr[0], port),
        std::net::SocketAddr::new(pair.addr[1], port),
    ];
    let job = job(&["alice", "bob"], |_, c| {
        c.parties.insert("alice".parse().unwrap(), addrs[0]);
        c.parties.insert("bob".parse().unwrap(), addrs[1]);
        c.comm.peer_lost_timeout = bound;
        c.comm.keep_alive_interval = Duration::from_millis(500);
        tweak(c);
    });
    let ns = [
        ("alice".to_owned(), pair.ns[0].clone()),
        ("bob".to_owned(), pair.ns[1].clone()),
    ]
    .into();
    Some((pair, job, ns))
}

#[test]
fn a_link_blip_shorter_than_the_bound_is_survived_without_loss() {
    let bound = Duration::from_secs(4);
    let Some((pair, job, ns)) = netns_job(1, bound) else {
        return;
    };
    let mut run = job.start_in("blip", &[], &ns);
    // Cut once values are flowing (bob has used the fifth), for 1 s: the
    // blip's length is the experiment, shorter than the 4 s bound; values
    // go on being made and pushed across it.
    run.wait_line("bob", "XSILO-GOT 5");
    pair.link(false);
    std::thread::sleep(Duration::from_secs(1));
    pair.link(true);
    run.wait_line("bob", "XSILO-GOT 39");
    let out = run.finish();
    for p in ["alice", "bob"] {
        assert_eq!(
            out[p].value(),
            &json!(780),
            "party {p}: every value once, none lost"
        );
    }
}

#[test]
fn a_link_cut_longer_than_the_bound_fails_both_parties_naming_each_other() {
    let bound = Duration::from_secs(3);
    let Some((pair, job, ns)) = netns_job(2, bound) else {
        return;
    };
    let mut run = job.start_in("cut", &[], &ns);
    run.wait_line("alice", "XSILO-READY");
    run.wait_line("bob", "XSILO-READY");
    pair.link(false);
    let cut = Instant::now();
    // Only now do the drivers make the calls that cross the cut link.
    run.go("alice");
    run.go("bob");
    run.wait_line("bob", "XSILO-GET-FAILED");
    run.wait_line("alice", "XSILO-GET-FAILED");
    let noticed = cut.elapsed();
    let out = run.finish();
    pair.link(true);
    let (a, b) = (out["alice"].error(), out["bob"].error());
    assert!(a.contains("party 'bob' is gone"), "alice: {a}");
    assert!(b.contains("party 'alice' is gone"), "bob: {b}");
    assert!(
        noticed < bound + Duration::from_secs(3),
        "noticed after {noticed:?}"
    );
}

#[test]
fn a_certificate_from_another_ca_ends_both_parties_with_a_tls_error() {
    let job = job(&["alice", "bob"], |_, c| {
        c.comm.barrier_on_initializing = false;
    });
    // bob's certificate and key now come from a CA nobody else trusts.
    let rogue = xsilo_transport::devcert::DevCa::new().unwrap();
    let cert = rogue.issue(&"bob".parse().unwrap()).unwrap();
    std::fs::write(job.dir.path().join("bob.pem"), &cert.cert_pem).unwrap();
    std::fs::write(job.dir.path().join("bob.key"), &cert.key_pem).unwrap();
    let out = job.run("too_large");
    let a = out["alice"].error();
    assert!(
        a.contains("TLS handshake with party 'bob' failed"),
        "alice: {a}"
    );
    let b = out["bob"].error();
    assert!(
        b.contains("TLS handshake with party 'alice' failed"),
        "bob: {b}"
    );
    for (p, o) in &out {
        assert!(o.elapsed < PROMPT, "party {p} took {:?}", o.elapsed);
    }
}

#[test]
fn a_process_with_another_partys_certificate_cannot_start_and_its_peer_fails_naming_it() {
    let job = job(&["alice", "bob", "carol"], |_, c| {
        c.comm.barrier_on_initializing = false;
        c.comm.connect_timeout = Duration::from_millis(500);
        c.comm.retry.max_attempts = 3;
        c.comm.retry.initial_backoff = Duration::from_millis(100);
    });
    // "bob" runs with carol's certificate.
    for ext in ["pem", "key"] {
        std::fs::copy(
            job.dir.path().join(format!("carol.{ext}")),
            job.dir.path().join(format!("bob.{ext}")),
        )
        .unwrap();
    }
    let out = job.start("too_large", &["alice", "bob"]).finish();
    let b = out["bob"].error();
    assert!(
        b.contains("does not name party 'bob'"),
        "bob refuses to start: {b}"
    );
    let a = out["alice"].error();
    assert!(a.contains("party 'bob'"), "alice: {a}");
}

/// Promise E7 over a slow link (20 Mbit/s: 16 MiB take about 7 s): after an
/// error, shutdown waits for queued data only with the flag.
fn queued_data(
    continue_waiting: bool,
    tag: u8,
) -> Option<std::collections::BTreeMap<String, common::Outcome>> {
    let (pair, job, ns) = netns_job_with(tag, Duration::from_secs(10), move |c| {
        c.comm.continue_waiting_for_data_sending_on_error = continue_waiting;
    })?;
    pair.rate_limit(0, "20mbit");
    Some(job.start_in("queued", &[], &ns).finish())
}

#[test]
fn after_an_error_shutdown_does_not_wait_for_queued_data_by_default() {
    let Some(out) = queued_data(false, 3) else {
        return;
    };
    // alice's shutdown gives up on the queued 16 MiB after the 2 s grace
    // and says so (its result, returned again to every later call).
    let alice = &out["alice"];
    assert!(
        alice.error().contains("did not finish within 2s"),
        "alice: {}",
        alice.error()
    );
    assert!(
        alice.elapsed < Duration::from_secs(6),
        "alice took {:?}",
        alice.elapsed
    );
    let b = out["bob"].error();
    assert!(
        b.contains("party 'alice'"),
        "bob never gets the 16 MiB: {b}"
    );
}

#[test]
fn with_continue_waiting_shutdown_delivers_queued_data_after_an_error() {
    let Some(out) = queued_data(true, 4) else {
        return;
    };
    let alice = out["alice"].value();
    assert_eq!(alice["ok"], json!(true), "{alice}");
    assert_eq!(out["bob"].value(), &json!(16 << 20), "bob gets all of it");
}

#[test]
fn stress_a_sending_failure_among_100_sends_in_flight_runs_the_handler_once_every_time() {
    // 50 runs, two processes each: every run ends with an error in both
    // parties, alice's handler ran exactly once, and nothing hangs (each
    // run is bounded by the harness).
    for run_no in 0..50 {
        let job = job(&["alice", "bob"], |p, c| {
            if p == "alice" {
                c.comm.exit_on_sending_failure = true;
            } else {
                c.comm.max_message_size = 1 << 20;
            }
        });
        let out = job.run("storm");
        let alice = &out["alice"];
        assert_eq!(alice.handler_calls(), 1, "run {run_no}: {:?}", alice.lines);
        assert_eq!(alice.status.code(), Some(1), "run {run_no}");
        let b = out["bob"].error();
        assert!(
            b.contains("aborted by party 'alice'"),
            "run {run_no}, bob: {b}"
        );
        // No false alarm (issue: 4 of 50 runs said "broke the protocol").
        for (p, o) in &out {
            let text = format!("{:?} {:?}", o.result, o.lines);
            assert!(
                !text.contains("broke the protocol"),
                "run {run_no}, {p}: {text}"
            );
        }
    }
}

#[test]
fn stress_sigkill_while_three_parties_wait_never_reports_a_protocol_breach() {
    // 50 runs of three processes: alice is killed while bob and carol wait
    // on her; both end with the error naming her, never with "broke the
    // protocol" (a RemoteError written into a control stream its closing
    // peer had just stopped used to read as a breach: 1 run in 2).
    let bound = Duration::from_secs(1);
    for run_no in 0..50 {
        let job = job(&["alice", "bob", "carol"], |_, c| {
            c.comm.peer_lost_timeout = bound;
            c.comm.keep_alive_interval = Duration::from_millis(300);
        });
        let mut run = job.start("wait_on_alice", &[]);
        for p in ["alice", "bob", "carol"] {
            run.wait_line(p, "XSILO-READY");
        }
        run.signal("alice", "KILL");
        let out = run.finish();
        for p in ["bob", "carol"] {
            let e = out[p].error();
            // Carol may hear first from bob, whose wait on alice failed.
            assert!(
                e.contains("alice") || e.contains("(PeerLost)"),
                "run {run_no}, {p}: {e}"
            );
            assert!(!e.contains("broke the protocol"), "run {run_no}, {p}: {e}");
        }
    }
}

#[test]
fn a_party_unknown_to_its_peer_ends_both_parties_naming_it() {
    let job = job(&["alice", "bob"], |p, c| {
        c.comm.barrier_timeout = Duration::from_secs(15);
        if p == "bob" {
            // bob's job has "alicia" where alice is.
            let addr = c.parties.remove(&"alice".parse().unwrap()).unwrap();
            c.parties.insert("alicia".parse().unwrap(), addr);
        }
    });
    let out = job.run("too_large");
    let a = out["alice"].error();
    assert!(
        a.contains("is not a party of job"),
        "alice is refused by bob: {a}"
    );
    let b = out["bob"].error();
    assert!(
        b.contains("party 'alicia'") && b.contains("alice"),
        "bob: {b}"
    );
    for (p, o) in &out {
        assert!(o.elapsed < PROMPT, "party {p} took {:?}", o.elapsed);
    }
}
