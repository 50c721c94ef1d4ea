//! The in-memory transport keeps the semantics the runtime relies on
//! (promises C3, C4, C5, C9).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use xsilo_transport::{
    MemoryNetwork, PeerDownReason, Transport, TransportConfig, TransportError, TransportEvent,
};
use xsilo_wire::{ControlFrame, ObjectId, RefusalCode};

fn parties() -> Vec<xsilo_wire::PartyName> {
    vec![party("alice"), party("bob")]
}

#[tokio::test]
async fn objects_are_acknowledged_by_the_receiving_runtime() {
    let net = MemoryNetwork::new();
    let alice = net
        .join(
            &job("demo"),
            &party("alice"),
            &parties(),
            TransportConfig::default(),
        )
        .unwrap();
    let bob = net
        .join(
            &job("demo"),
            &party("bob"),
            &parties(),
            TransportConfig::default(),
        )
        .unwrap();
    let mut inbox = Inbox::of(&bob);
    let sending = tokio::spawn({
        let alice = alice.clone();
        async move { alice.send_object(&party("bob"), object(3, "payload")).await }
    });
    let obj = inbox.next_object().await;
    assert_eq!(
        (
            obj.from.as_str(),
            obj.header.object,
            &obj.payload.to_bytes()[..]
        ),
        ("alice", ObjectId(3), &b"payload"[..])
    );
    assert!(!sending.is_finished());
    obj.ack.accept();
    assert_eq!(
        within(STEP, "the ack", sending)
            .await
            .unwrap()
            .unwrap()
            .bytes,
        7
    );
}

#[tokio::test]
async fn limits_jobs_and_unknown_parties_fail_as_over_quic() {
    let net = MemoryNetwork::new();
    let mut small = TransportConfig::default();
    small.max_message_size = 10;
    let alice = net
        .join(
            &job("demo"),
            &party("alice"),
            &parties(),
            TransportConfig::default(),
        )
        .unwrap();
    let _bob = net
        .join(&job("demo"), &party("bob"), &parties(), small.clone())
        .unwrap();
    let other = net
        .join(
            &job("other"),
            &party("alice"),
            &parties(),
            TransportConfig::default(),
        )
        .unwrap();
    // Receiver's limit.
    let err = alice
        .send_object(&party("bob"), object(1, vec![0u8; 11]))
        .await
        .unwrap_err();
    assert_eq!(err.refusal_code(), Some(RefusalCode::TooLarge), "{err}");
    // Sender's limit, before anything is sent.
    let tiny = net
        .join(&job("tiny"), &party("alice"), &parties(), small)
        .unwrap();
    assert!(matches!(
        tiny.send_object(&party("bob"), object(1, vec![0u8; 11]))
            .await,
        Err(TransportError::TooLarge { .. })
    ));
    // Another job.
    let err = other
        .send_object(&party("bob"), object(1, "x"))
        .await
        .unwrap_err();
    assert_eq!(err.refusal_code(), Some(RefusalCode::UnknownJob));
    assert!(err.to_string().contains("'other'"), "{err}");
    // Not a party of the job.
    assert!(matches!(
        alice.send_object(&party("carol"), object(1, "x")).await,
        Err(TransportError::UnknownParty { .. })
    ));
}

#[tokio::test]
async fn a_party_that_never_joins_is_unreachable_after_the_retry_policy() {
    let net = MemoryNetwork::new();
    let mut config = TransportConfig::default();
    config.retry.max_attempts = 3;
    config.retry.initial_backoff = Duration::from_millis(5);
    let alice = net
        .join(&job("demo"), &party("alice"), &parties(), config)
        .unwrap();
    let err = within(
        STEP,
        "giving up",
        alice.send_object(&party("bob"), object(1, "x")),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, TransportError::Unreachable { attempts: 3, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn peers_go_up_and_down_and_kill_fails_pending_sends() {
    let net = MemoryNetwork::new();
    let alice = net
        .join(
            &job("demo"),
            &party("alice"),
            &parties(),
            TransportConfig::default(),
        )
        .unwrap();
    let mut alice_in = Inbox::of(&alice);
    let bob = net
        .join(
            &job("demo"),
            &party("bob"),
            &parties(),
            TransportConfig::default(),
        )
        .unwrap();
    let mut bob_in = Inbox::of(&bob);
    assert!(
        matches!(alice_in.next().await, TransportEvent::PeerUp { party: p } if p == party("bob"))
    );
    assert!(
        matches!(bob_in.next().await, TransportEvent::PeerUp { party: p } if p == party("alice"))
    );

    alice
        .send_control(&party("bob"), ControlFrame::Heartbeat { seq: 1 })
        .await
        .unwrap();
    assert!(matches!(
        bob_in.next().await,
        TransportEvent::Control {
            frame: ControlFrame::Heartbeat { seq: 1 },
            ..
        }
    ));

    let pending = tokio::spawn({
        let alice = alice.clone();
        async move { alice.send_object(&party("bob"), object(1, "x")).await }
    });
    let _held = bob_in.next_object().await;
    net.kill(&job("demo"), &party("bob"));
    let err = within(STEP, "the pending send to fail", pending)
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, TransportError::PeerLost { .. }), "{err}");
    assert!(matches!(
        alice_in.next().await,
        TransportEvent::PeerDown {
            reason: PeerDownReason::Lost(_),
            ..
        }
    ));
}

#[tokio::test]
async fn close_says_goodbye() {
    let net = MemoryNetwork::new();
    let alice = net
        .join(
            &job("demo"),
            &party("alice"),
            &parties(),
            TransportConfig::default(),
        )
        .unwrap();
    let bob = net
        .join(
            &job("demo"),
            &party("bob"),
            &parties(),
            TransportConfig::default(),
        )
        .unwrap();
    let mut bob_in = Inbox::of(&bob);
    assert!(matches!(bob_in.next().await, TransportEvent::PeerUp { .. }));
    alice.close().await;
    assert!(matches!(
        bob_in.next().await,
        TransportEvent::Control {
            frame: ControlFrame::Goodbye,
            ..
        }
    ));
    assert!(matches!(
        bob_in.next().await,
        TransportEvent::PeerDown {
            reason: PeerDownReason::Goodbye,
            ..
        }
    ));
    assert!(matches!(
        alice.send_object(&party("bob"), object(1, "x")).await,
        Err(TransportError::Closed { .. })
    ));
}
