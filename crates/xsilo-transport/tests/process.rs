//! A peer in another OS process, killed with SIGKILL: the transport reports
//! it down within `peer_lost_timeout` and the send waiting on it fails with
//! an error naming it (promise E10, transport part).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use xsilo_testkit::{ChildProcess, Spawn};
use xsilo_transport::devcert::DevCa;
use xsilo_transport::{
    PeerAddress, PeerDownReason, QuicEndpoint, TlsIdentity, Transport, TransportConfig,
    TransportError, TransportEvent,
};

const CHILD_ENV: &str = "XSILO_TEST_CHILD";
/// Objects with this consumer id are held by the child, never acknowledged.
const HOLD: u64 = u64::MAX;

fn liveness_config() -> TransportConfig {
    let mut config = TransportConfig::default();
    config.peer_lost_timeout = Duration::from_secs(2);
    config.keep_alive_interval = Duration::from_millis(400);
    config.retry.max_attempts = 1;
    config
}

/// The child: bob, serving job "demo" until killed (or 60 s, so a lost
/// child never lingers). Runs only when re-executed by the parent test.
#[test]
#[ignore = "runs only as the child process of peer_killed_with_sigkill_is_reported_down_within_the_bound"]
fn child_bob() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.split('|');
    let (ca, cert, key, alice_addr) = (
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
        parts
            .next()
            .unwrap()
            .parse::<std::net::SocketAddr>()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tls = TlsIdentity::from_pem(&ca, &cert, &key).unwrap();
        let ep = QuicEndpoint::bind(party("bob"), any_port(), &tls, liveness_config()).unwrap();
        let book: BTreeMap<_, PeerAddress> = [
            (party("alice"), PeerAddress::from(alice_addr)),
            (party("bob"), ep.local_addr().into()),
        ]
        .into();
        let bob = ep.join(job("demo"), book).unwrap();
        let mut events = bob.take_events().unwrap();
        println!("PORT {}", ep.local_addr().port());
        let mut held = Vec::new();
        let serve = async {
            while let Some(event) = events.recv().await {
                if let TransportEvent::Object(o) = event {
                    if o.header.consumer == HOLD {
                        println!("HELD {}", o.header.object.0);
                        held.push(o);
                    } else {
                        o.ack.accept();
                    }
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(60), serve).await;
    });
}

/// What follows `marker` on the child's next stdout line containing it,
/// waited for (bounded) off the runtime's thread, which goes on serving
/// alice's endpoint meanwhile.
async fn next_line(child: &mut Option<ChildProcess>, marker: &'static str) -> String {
    let mut proc = child.take().expect("the child is here between waits");
    let (proc, rest) = tokio::task::spawn_blocking(move || {
        let rest = proc.wait_after(marker, STEP);
        (proc, rest)
    })
    .await
    .unwrap();
    *child = Some(proc);
    rest
}

#[tokio::test]
async fn peer_killed_with_sigkill_is_reported_down_within_the_bound() {
    init_tracing();
    let config = liveness_config();
    let ca = DevCa::new().unwrap();
    let bob_cert = ca.issue(&party("bob")).unwrap();
    let alice_ep = QuicEndpoint::bind(
        party("alice"),
        any_port(),
        &ca.identity(&party("alice")).unwrap(),
        config.clone(),
    )
    .unwrap();

    let spec = format!(
        "{}|{}|{}|{}",
        ca.ca_pem(),
        bob_cert.cert_pem,
        bob_cert.key_pem,
        alice_ep.local_addr()
    );
    let mut child = Some(
        Spawn::this_test("the child bob", "child_bob")
            .env(CHILD_ENV, spec)
            .spawn(),
    );
    let port: u16 = next_line(&mut child, "PORT").await.parse().unwrap();

    let book: BTreeMap<_, PeerAddress> = [
        (party("alice"), PeerAddress::from(alice_ep.local_addr())),
        (
            party("bob"),
            PeerAddress::from(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
        ),
    ]
    .into();
    let alice = alice_ep.join(job("demo"), book).unwrap();
    let mut inbox = Inbox::of(&alice);
    alice
        .send_object(&party("bob"), object(1, "acked"))
        .await
        .unwrap();
    assert!(matches!(inbox.next().await, TransportEvent::PeerUp { party: p } if p == party("bob")));

    // A send the child holds: in flight when the child dies.
    let mut held = object(2, "held");
    held.consumer = HOLD;
    let in_flight = tokio::spawn({
        let alice = alice.clone();
        async move { alice.send_object(&party("bob"), held).await }
    });
    assert_eq!(next_line(&mut child, "HELD").await, "2");

    let mut child = child.unwrap();
    let killed_at = child.signal("KILL");
    tokio::task::spawn_blocking(move || {
        child.wait_exit(STEP);
    })
    .await
    .unwrap();

    let bound = config.peer_lost_timeout + Duration::from_secs(3);
    let event = within(bound, "bob reported down after SIGKILL", inbox.next()).await;
    let elapsed = killed_at.elapsed();
    match event {
        TransportEvent::PeerDown { party: p, reason } => {
            assert_eq!(p, party("bob"));
            assert_eq!(reason, PeerDownReason::TimedOut);
        }
        other => panic!("expected bob down, got {other:?}"),
    }
    eprintln!(
        "bob reported down {elapsed:?} after SIGKILL (peer_lost_timeout {:?})",
        config.peer_lost_timeout
    );
    let err = within(bound, "the in-flight send to fail", in_flight)
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&err, TransportError::PeerLost { peer, .. } if peer == &party("bob")),
        "{err}"
    );
}
