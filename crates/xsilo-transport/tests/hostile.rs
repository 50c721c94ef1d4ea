//! A hostile peer holding a valid party certificate (MISSION S): an
//! in-tree client over quinn and rustls that speaks the wire protocol by
//! hand, against a real endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use tokio::time::Instant;
use xsilo_transport::{Transport, TransportConfig};
use xsilo_wire::codec::encode_to_vec;
use xsilo_wire::{HelloReply, ObjectHeader, ObjectId};

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
    let (raw, reply) = RawClient::connect(
        &cluster.identity("bob"),
        "bob",
        "bob",
        "alice",
        cluster.addr("alice"),
        "hostile",
    )
    .await;
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
