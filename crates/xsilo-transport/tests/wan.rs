//! The transport across emulated wide-area links (promises W1-W2): a user-space
//! relay (`xsilo-linkem`) between real QUIC endpoints on loopback, no root
//! needed. Bounds here are generous multiples of what the transport does
//! (RFC 0001, "Wide-area links"), and well under what it did before: with
//! quinn's default Cubic, 16 MiB at 50 ms and 0.1% loss took about 11 s; a
//! first flight lost to a peer not yet bound cost a second.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use tokio::time::Instant;
use xsilo_linkem::{LinkProfile, Relay};
use xsilo_transport::{PeerAddress, QuicEndpoint, Transport, TransportConfig, TransportError};

/// A job of alice and bob in which alice reaches bob only through `relay`.
fn through(cluster: &Cluster, relay: &Relay) -> BTreeMap<xsilo_wire::PartyName, PeerAddress> {
    let mut book = cluster.book();
    book.insert(party("bob"), relay.addr().into());
    book
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_cross_a_lossy_50ms_link_within_a_bound() {
    init_tracing();
    let cluster = Cluster::new(&["alice", "bob"], TransportConfig::default());
    let profile = LinkProfile::wan(Duration::from_millis(50), 0.001, 125_000_000);
    let relay = Relay::start(any_port(), cluster.addr("bob"), profile, 11)
        .await
        .unwrap();
    let alice = cluster.endpoints[&party("alice")]
        .join(job("wan"), through(&cluster, &relay))
        .unwrap();
    let bob = cluster.join("bob", "wan");
    let mut got = Inbox::of(&bob).auto_ack();
    let payload = vec![5u8; 16 << 20];
    let started = Instant::now();
    let sent = within(
        Duration::from_secs(8),
        "16 MiB through (50 ms, 0.1%) (about 11 s with quinn's default Cubic)",
        alice.send_object(&party("bob"), object(1, payload.clone())),
    )
    .await
    .unwrap();
    let took = started.elapsed();
    assert_eq!(sent.bytes, 16 << 20);
    let (id, bytes) = within(STEP, "bob's copy", got.recv()).await.unwrap();
    assert_eq!(id.0, 1);
    assert_eq!(bytes, payload, "the object arrived intact");
    assert!(
        relay.forward().lost > 0,
        "the link lost nothing in {took:?}: the test did not test loss ({:?})",
        relay.forward()
    );
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_starts_300ms_late_is_connected_soon_after_it_binds() {
    init_tracing();
    let ca = xsilo_transport::devcert::DevCa::new().unwrap();
    let (a, b) = (party("alice"), party("bob"));
    // Reserve bob's port, then free it: bob binds it 300 ms later.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let profile = LinkProfile::wan(Duration::from_millis(10), 0.0, 125_000_000);
    let relay = Relay::start(any_port(), port, profile, 5).await.unwrap();
    let alice_ep = QuicEndpoint::bind(
        a.clone(),
        any_port(),
        &ca.identity(&a).unwrap(),
        TransportConfig::default(),
    )
    .unwrap();
    let book: BTreeMap<_, PeerAddress> = [
        (a.clone(), alice_ep.local_addr().into()),
        (b.clone(), relay.addr().into()),
    ]
    .into();
    let alice = alice_ep.join(job("late"), book.clone()).unwrap();
    let dialing = {
        let alice = alice.clone();
        let b = b.clone();
        tokio::spawn(async move { alice.connect(&b).await })
    };
    // This wait is the scenario (bob starts late), not a synchronisation.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bob_ep = QuicEndpoint::bind(
        b.clone(),
        port,
        &ca.identity(&b).unwrap(),
        TransportConfig::default(),
    )
    .unwrap();
    let bound_at = Instant::now();
    let _bob = bob_ep.join(job("late"), book).unwrap();
    let connected: Result<(), TransportError> =
        within(STEP, "alice's dial", dialing).await.unwrap();
    connected.unwrap();
    let after = bound_at.elapsed();
    eprintln!("alice connected {after:?} after bob bound");
    assert!(
        after < Duration::from_millis(500),
        "alice connected {after:?} after bob bound (QUIC alone re-sends its first flight after about 1 s)"
    );
    alice.close().await;
}

/// `send_timeout` bounds time without progress, not the whole send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_keeps_moving_outlasts_send_timeout() {
    init_tracing();
    let mut config = TransportConfig::default();
    config.send_timeout = Duration::from_secs(1);
    let cluster = Cluster::new(&["alice", "bob"], config);
    // 1 MB/s towards bob: 3 MiB take about 3.3 s, three send_timeouts.
    let slow = LinkProfile {
        delay: Duration::from_millis(5),
        loss: 0.0,
        rate: Some(1_000_000),
        queue: 256 * 1024,
    };
    let relay = Relay::start_asymmetric(
        any_port(),
        cluster.addr("bob"),
        slow,
        LinkProfile::ideal(),
        2,
    )
    .await
    .unwrap();
    let alice = cluster.endpoints[&party("alice")]
        .join(job("slow"), through(&cluster, &relay))
        .unwrap();
    let bob = cluster.join("bob", "slow");
    let mut got = Inbox::of(&bob).auto_ack();
    let started = Instant::now();
    let sent = within(
        STEP,
        "3 MiB at 1 MB/s",
        alice.send_object(&party("bob"), object(1, vec![1u8; 3 << 20])),
    )
    .await;
    let took = started.elapsed();
    sent.unwrap_or_else(|e| panic!("a send making progress failed after {took:?}: {e}"));
    assert!(
        took > Duration::from_secs(2),
        "3 MiB took {took:?} at 1 MB/s: the link did not limit it, the test tests nothing"
    );
    within(STEP, "bob's copy", got.recv()).await.unwrap();
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_without_progress_fails_after_send_timeout_naming_the_setting() {
    init_tracing();
    let mut config = TransportConfig::default();
    config.send_timeout = Duration::from_secs(1);
    let cluster = Cluster::new(&["alice", "bob"], config);
    let alice = cluster.join("alice", "stall");
    let bob = cluster.join("bob", "stall");
    let mut inbox = Inbox::of(&bob);
    let send = {
        let alice = alice.clone();
        tokio::spawn(async move {
            alice
                .send_object(&party("bob"), object(1, vec![2u8; 1 << 20]))
                .await
        })
    };
    // Bob's runtime takes the object and never answers.
    let held = inbox.next_object().await;
    let started = Instant::now();
    let result = within(STEP, "the stalled send to fail", send)
        .await
        .unwrap();
    let waited = started.elapsed();
    match result {
        Err(e @ TransportError::Timeout { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("'bob'") && text.contains("send_timeout"),
                "{text}"
            );
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        waited < Duration::from_secs(5),
        "failed only after {waited:?}"
    );
    drop(held);
    alice.close().await;
    bob.close().await;
}
