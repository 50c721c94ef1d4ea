//! A hostile peer holding a valid party certificate (promise S1): an
//! in-tree client over quinn and rustls that speaks the wire protocol by
//! hand, against a real endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use tokio::time::Instant;
use xsilo_transport::{Transport, TransportConfig};
use xsilo_wire::codec::encode_to_vec;
use xsilo_wire::{ControlFrame, HelloReply, ObjectHeader, ObjectId};

/// bob (holding his real certificate) dials alice for `job_name` by hand.
async fn bob_dials_alice(cluster: &Cluster, job_name: &str) -> (RawClient, HelloReply) {
    RawClient::connect(
        &cluster.identity("bob"),
        "bob",
        "bob",
        "alice",
        cluster.addr("alice"),
        job_name,
    )
    .await
}

/// Tests that measure this process's resident memory run one at a time:
/// tests of one file share the process.
static MEASURES_RSS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_announcing_large_objects_and_stalling_holds_no_more_than_its_budget() {
    init_tracing();
    let _alone = MEASURES_RSS.lock().await;
    const MAX: u64 = 32 << 20;
    let mut config = TransportConfig::default();
    config.max_message_size = MAX; // budgets: 32 MiB per peer, 64 MiB in all
    let cluster = Cluster::new(&["alice", "bob", "carol"], config.clone());
    let (all, per_peer) = config.inbound_limits();
    assert_eq!((all, per_peer), (2 * MAX, MAX));
    let alice = cluster.join("alice", "hostile");
    let carol = cluster.join("carol", "hostile");
    let mut taken = Inbox::of(&alice).auto_ack();

    // bob is hostile: 64 streams, each announcing MAX and sending 8 MiB.
    let (raw, reply) = bob_dials_alice(&cluster, "hostile").await;
    assert!(matches!(reply, HelloReply::Accepted { .. }), "{reply:?}");
    let before = rss_bytes();
    let written = Arc::new(AtomicU64::new(0));
    let piece = Bytes::from(vec![0u8; 1 << 20]);
    let mut attack = Vec::new();
    for i in 0..64u64 {
        let conn = raw.conn.clone();
        let written = written.clone();
        let piece = piece.clone();
        attack.push(tokio::spawn(async move {
            let Ok((mut send, _recv)) = conn.open_bi().await else {
                return;
            };
            let header = ObjectHeader {
                job: job("hostile"),
                src: party("bob"),
                object: ObjectId(i),
                consumer: i,
                fingerprint: 0,
                payload_len: MAX,
                resend: false,
            };
            if send
                .write_all(&encode_to_vec(&header).unwrap())
                .await
                .is_err()
            {
                return;
            }
            for _ in 0..8 {
                if send.write_chunk(piece.clone()).await.is_err() {
                    return;
                }
                written.fetch_add(1 << 20, Ordering::Relaxed);
            }
            // Stall: never send the rest, never finish.
            std::future::pending::<()>().await;
        }));
    }

    // While the attack runs (3 s, the scenario's length), carol's objects
    // still arrive and alice never holds more than bob's budget for bob.
    let attack_ends = Instant::now() + Duration::from_secs(3);
    let mut id = 1000u64;
    let mut peak_held = 0;
    while Instant::now() < attack_ends {
        id += 1;
        within(
            Duration::from_secs(10),
            "a legitimate party's send during the attack",
            carol.send_object(&party("alice"), object(id, vec![3u8; 1 << 20])),
        )
        .await
        .unwrap();
        let (got, _) = within(STEP, "carol's object at alice", taken.recv())
            .await
            .unwrap();
        assert_eq!(got.0, id);
        peak_held = peak_held.max(cluster.endpoints[&party("alice")].inbound_held());
    }
    let grew = rss_bytes().saturating_sub(before);
    let sent = written.load(Ordering::Relaxed);
    assert!(
        peak_held <= per_peer + (1 << 20),
        "alice held {peak_held} bytes of inbound objects, over bob's budget {per_peer} (+ carol's 1 MiB)"
    );
    assert!(
        grew <= all + (64 << 20),
        "alice's resident memory grew by {} MiB while bob pushed {} MiB; the cap is {} MiB + 64",
        grew >> 20,
        sent >> 20,
        all >> 20
    );
    assert!(id > 1001, "carol got only {} objects through", id - 1000);
    for a in attack {
        a.abort();
    }
    raw.conn.close(0u32.into(), b"done");
    alice.close().await;
    carol.close().await;
}

/// One attack of the property test below.
#[derive(Debug, Clone)]
enum Garbage {
    /// Bytes where the hello belongs.
    Hello(Vec<u8>),
    /// Bytes on the control stream after a valid hello.
    Control(Vec<u8>),
    /// Bytes on a data stream after a valid hello.
    Data(Vec<u8>),
}

/// Sends `garbage` to alice as bob (a valid certificate), then leaves.
async fn attack(cluster: &Cluster, garbage: Garbage) {
    let bound = Duration::from_secs(5);
    if let Garbage::Hello(bytes) = &garbage {
        let endpoint = xsilo_transport::setup::quinn_endpoint(
            &party("bob"),
            any_port(),
            &cluster.identity("bob"),
            &TransportConfig::default(),
        )
        .unwrap();
        let connecting = endpoint.connect(cluster.addr("alice"), "alice").unwrap();
        let conn = within(bound, "the garbage hello's handshake", connecting)
            .await
            .unwrap();
        if let Ok((mut send, mut recv)) = conn.open_bi().await {
            let _ = send.write_all(bytes).await;
            let _ = send.finish();
            // The answer or the close, whichever comes; bounded.
            let _ = tokio::time::timeout(bound, recv.read_to_end(1 << 16)).await;
        }
        conn.close(0u32.into(), b"done");
        return;
    }
    let (raw, reply) = bob_dials_alice(cluster, "garbage").await;
    assert!(matches!(reply, HelloReply::Accepted { .. }), "{reply:?}");
    let (mut control, _control_recv) = raw.control;
    match garbage {
        Garbage::Control(bytes) => {
            let _ = control.write_all(&bytes).await;
            let _ = control.finish();
        }
        Garbage::Data(bytes) => {
            if let Ok((mut send, mut recv)) = raw.conn.open_bi().await {
                let _ = send.write_all(&bytes).await;
                let _ = send.finish();
                let _ = tokio::time::timeout(bound, recv.read_to_end(1 << 16)).await;
            }
        }
        Garbage::Hello(_) => {}
    }
    raw.conn.close(0u32.into(), b"done");
}

fn garbage() -> impl Strategy<Value = Garbage> {
    let bytes = || {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..2048),
            // A length prefix announcing much, then a little.
            (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..256)).prop_map(|(n, tail)| {
                let mut v = n.to_be_bytes().to_vec();
                v.extend(tail);
                v
            }),
        ]
    };
    prop_oneof![
        bytes().prop_map(Garbage::Hello),
        bytes().prop_map(Garbage::Control),
        bytes().prop_map(Garbage::Data),
    ]
}

/// Any byte sequence on any stream, from a holder of a valid certificate,
/// leaves the endpoint serving a legitimate party with its inbound memory
/// inside the cap (issue: hostile peers, point 6).
#[test]
fn any_bytes_on_any_stream_leave_the_endpoint_serving_within_its_cap() {
    init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = TransportConfig::default();
    config.max_message_size = 8 << 20;
    let (cluster, alice, carol, taken) = rt.block_on(async {
        let cluster = Cluster::new(&["alice", "bob", "carol"], config.clone());
        let alice = cluster.join("alice", "garbage");
        let carol = cluster.join("carol", "garbage");
        let taken = Inbox::of(&alice).auto_ack();
        (cluster, alice, carol, taken)
    });
    let (cap, _) = config.inbound_limits();
    let _alone = MEASURES_RSS.blocking_lock();
    let before = rss_bytes();
    let id = std::cell::Cell::new(0u64);
    let taken = tokio::sync::Mutex::new(taken);
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 40,
        failure_persistence: None,
        ..Default::default()
    });
    runner
        .run(&garbage(), |g| {
            rt.block_on(async {
                attack(&cluster, g).await;
                id.set(id.get() + 1);
                let id = id.get();
                within(
                    STEP,
                    "a legitimate send after the garbage",
                    carol.send_object(&party("alice"), object(id, vec![9u8; 4096])),
                )
                .await
                .unwrap();
                let mut taken = taken.lock().await;
                let (got, _) = within(STEP, "carol's object", taken.recv()).await.unwrap();
                assert_eq!(got.0, id);
                let held = cluster.endpoints[&party("alice")].inbound_held();
                assert!(held <= cap, "held {held} over the cap {cap}");
            });
            Ok(())
        })
        .unwrap();
    let grew = rss_bytes().saturating_sub(before);
    assert!(grew <= cap + (64 << 20), "grew by {} MiB", grew >> 20);
    rt.block_on(async {
        alice.close().await;
        carol.close().await;
    });
}

/// Each live connection may leave a connection window unread in QUIC, so a
/// holder of a party's certificate gets at most eight (RFC 0001, "Inbound
/// memory"); the ninth is refused, naming the limit, and the job goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gets_at_most_eight_live_connections() {
    init_tracing();
    let cluster = Cluster::new(&["alice", "bob", "carol"], TransportConfig::default());
    let alice = cluster.join("alice", "conns");
    let carol = cluster.join("carol", "conns");
    let mut taken = Inbox::of(&alice).auto_ack();
    let mut held = Vec::new();
    for i in 0..9 {
        let (raw, reply) = bob_dials_alice(&cluster, "conns").await;
        match (i, reply) {
            (0..8, HelloReply::Accepted { .. }) => held.push(raw),
            (8, HelloReply::Refused(r)) => {
                assert!(r.message.contains("8 live connections"), "{r}");
            }
            (i, other) => panic!("connection {i}: {other:?}"),
        }
    }
    within(
        STEP,
        "carol's send while bob holds his connections",
        carol.send_object(&party("alice"), object(1, vec![1u8; 1024])),
    )
    .await
    .unwrap();
    within(STEP, "carol's object", taken.recv()).await.unwrap();
    for raw in held {
        raw.conn.close(0u32.into(), b"done");
    }
    alice.close().await;
    carol.close().await;
}

/// RFC 0001, "Events": a holder of a party certificate floods its control
/// stream with frames while the victim's runtime takes no events. The
/// victim decodes at most its credits' worth, QUIC flow control then holds
/// the flooder, and once the runtime takes events the flood moves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_control_frames_is_held_by_flow_control_not_memory() {
    init_tracing();
    let _alone = MEASURES_RSS.lock().await;
    let cluster = Cluster::new(&["alice", "bob"], TransportConfig::default());
    let alice = cluster.join("alice", "flood");
    // alice's runtime is stuck: nobody takes her events during the flood.
    let mut inbox = Inbox::of(&alice);
    let (raw, reply) = bob_dials_alice(&cluster, "flood").await;
    assert!(matches!(reply, HelloReply::Accepted { .. }), "{reply:?}");
    let (mut control, _control_recv) = raw.control;
    let mut one = Vec::new();
    xsilo_wire::codec::encode_frame(&ControlFrame::Heartbeat { seq: 7 }, &mut one).unwrap();
    let batch = Bytes::from(one.repeat(4096));
    let before = rss_bytes();

    // Write until a write blocks for a second: flow control holds bob.
    let cap: u64 = 1 << 30;
    let mut written = 0u64;
    let mut pos = 0usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    let held = loop {
        assert!(
            written < cap,
            "bob wrote {} MiB of control frames and was never held",
            written >> 20
        );
        assert!(
            Instant::now() < deadline,
            "bob's flood was neither held nor refused within 60 s ({} MiB written)",
            written >> 20
        );
        // `write` takes nothing when it is cancelled while waiting, and the
        // batch is whole frames, so frames stay whole across the wrap.
        match tokio::time::timeout(Duration::from_secs(1), control.write(&batch[pos..])).await {
            Ok(Ok(n)) => {
                written += n as u64;
                pos = (pos + n) % batch.len();
            }
            Ok(Err(e)) => panic!("the control stream failed during the flood: {e}"),
            Err(_) => break written,
        }
    };
    let queued = inbox.rx.len();
    let grew = rss_bytes().saturating_sub(before);
    let window = TransportConfig::default().stream_receive_window;
    assert!(
        queued <= xsilo_transport::CONTROL_CREDITS + 4,
        "alice queued {queued} events, over bob's {} control credits",
        xsilo_transport::CONTROL_CREDITS
    );
    assert!(
        held <= window + (4 << 20),
        "bob wrote {held} bytes before he was held; the stream window is {window}"
    );
    assert!(
        grew <= 64 << 20,
        "alice's resident memory grew by {} MiB during the flood",
        grew >> 20
    );

    // The runtime takes events again: credits come back, the flood moves.
    let mut heartbeats = 0;
    while heartbeats < xsilo_transport::CONTROL_CREDITS {
        if let xsilo_transport::TransportEvent::Control { frame, .. } = inbox.next().await {
            assert_eq!(frame, ControlFrame::Heartbeat { seq: 7 });
            heartbeats += 1;
        }
    }
    let taker = tokio::spawn(async move { while inbox.rx.recv().await.is_some() {} });
    let n = within(
        Duration::from_secs(10),
        "bob's next write once alice takes events again",
        control.write(&batch[pos..]),
    )
    .await
    .unwrap();
    assert!(n > 0);
    raw.conn.close(0u32.into(), b"done");
    alice.close().await;
    taker.abort();
}
