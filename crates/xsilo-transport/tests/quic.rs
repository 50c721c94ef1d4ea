//! The QUIC transport over real sockets on 127.0.0.1 (promises C1-C5, C8).
//! Every wait is bounded and fails with a message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use sha2::{Digest, Sha256};
use xsilo_transport::{
    PeerDownReason, QuicEndpoint, QuicTransport, TlsIdentity, Transport, TransportConfig,
    TransportError, TransportEvent,
};
use xsilo_wire::codec::encode_to_vec;
use xsilo_wire::{
    ControlFrame, DataReply, HelloReply, ObjectHeader, ObjectId, RefusalCode, RemoteErrorFrame,
};

#[tokio::test]
async fn object_is_delivered_and_the_send_completes_only_after_the_receiver_acks() {
    init_tracing();
    let cluster = Cluster::new(&["alice", "bob"], TransportConfig::default());
    let alice = cluster.join("alice", "demo");
    let bob = cluster.join("bob", "demo");
    let mut inbox = Inbox::of(&bob);

    let sending = tokio::spawn({
        let alice = alice.clone();
        async move {
            alice
                .send_object(&party("bob"), object(5, "hello bob"))
                .await
        }
    });
    let obj = inbox.next_object().await;
    assert_eq!(obj.from, party("alice"));
    assert_eq!(obj.header.object, ObjectId(5));
    assert_eq!(obj.header.consumer, 1005);
    assert_eq!(obj.header.fingerprint, 35);
    assert_eq!(obj.header.job, job("demo"));
    assert_eq!(&obj.payload.to_bytes()[..], b"hello bob");
    // The object is in bob's hands but not yet taken: alice must still wait
    // (promise C3: acknowledged by the receiving runtime, not the transport).
    assert!(
        !sending.is_finished(),
        "the send completed before bob's runtime acknowledged"
    );
    obj.ack.accept();
    let delivery = within(STEP, "alice's send to complete", sending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivery.bytes, 9);
    assert_eq!(delivery.attempts, 1);
}

#[tokio::test]
async fn a_refusal_by_the_receiving_runtime_reaches_the_sender() {
    let cluster = Cluster::new(&["alice", "bob"], TransportConfig::default());
    let alice = cluster.join("alice", "demo");
    let bob = cluster.join("bob", "demo");
    let mut inbox = Inbox::of(&bob);
    let sending =
        tokio::spawn(async move { alice.send_object(&party("bob"), object(1, "x")).await });
    // Dropping the handle refuses: the sender must not hang or count it done.
    drop(inbox.next_object().await);
    let err = within(STEP, "the refusal", sending)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.refusal_code(), Some(RefusalCode::Unavailable), "{err}");
}

#[tokio::test]
async fn a_64_mib_object_arrives_intact() {
    let cluster = Cluster::new(&["alice", "bob"], TransportConfig::default());
    let alice = cluster.join("alice", "demo");
    let bob = cluster.join("bob", "demo");
    let mut received = Inbox::of(&bob).auto_ack();
    let payload: Vec<u8> = (0..64u64 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let digest = Sha256::digest(&payload);
    let delivery = within(
        Duration::from_secs(120),
        "a 64 MiB send",
        alice.send_object(&party("bob"), object(1, payload)),
    )
    .await
    .unwrap();
    assert_eq!(delivery.bytes, 64 << 20);
    let (id, bytes) = within(STEP, "the 64 MiB object", received.recv())
        .await
        .unwrap();
    assert_eq!(id, ObjectId(1));
    assert_eq!(bytes.len(), 64 << 20);
    assert_eq!(
        Sha256::digest(&bytes),
        digest,
        "payload corrupted in transit"
    );
}

#[tokio::test]
async fn two_hundred_concurrent_objects_all_arrive() {
    let cluster = Cluster::new(&["alice", "bob"], TransportConfig::default());
    let alice = cluster.join("alice", "demo");
    let bob = cluster.join("bob", "demo");
    let mut received = Inbox::of(&bob).auto_ack();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..200u64 {
        let alice = alice.clone();
        let payload = vec![i as u8; 1000 + i as usize * 37];
        sends.spawn(async move { alice.send_object(&party("bob"), object(i, payload)).await });
    }
    while let Some(r) = within(STEP, "200 sends", sends.join_next()).await {
        r.unwrap().unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let (id, bytes) = within(STEP, "200 objects", received.recv()).await.unwrap();
        assert_eq!(bytes.len(), 1000 + id.0 as usize * 37);
        assert!(bytes.iter().all(|b| *b == id.0 as u8));
        assert!(seen.insert(id.0), "object {id} delivered twice");
    }
    assert_eq!(seen.len(), 200);
}

/// Alice as an xsilo transport and bob as a raw quinn endpoint with a
/// certificate of the same CA, for tests that play bob's side by hand.
fn alice_and_raw_bob() -> (QuicEndpoint, QuicTransport, quinn::Endpoint) {
    let ca = xsilo_transport::devcert::DevCa::new().unwrap();
    let (alice_p, bob_p) = (party("alice"), party("bob"));
    let config = TransportConfig::default();
    let bob_ep = xsilo_transport::setup::quinn_endpoint(
        &bob_p,
        any_port(),
        &ca.identity(&bob_p).unwrap(),
        &config,
    )
    .unwrap();
    let alice_ep = QuicEndpoint::bind(
        alice_p.clone(),
        any_port(),
        &ca.identity(&alice_p).unwrap(),
        config,
    )
    .unwrap();
    let book = [
        (alice_p, alice_ep.local_addr().into()),
        (bob_p, bob_ep.local_addr().unwrap().into()),
    ]
    .into();
    let alice = alice_ep.join(job("demo"), book).unwrap();
    (alice_ep, alice, bob_ep)
}

/// Raw bob accepts alice's connection and answers her hello: the
/// connection and its control stream.
async fn accept_alice(
    bob_ep: &quinn::Endpoint,
) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    let conn = within(STEP, "alice's connection", bob_ep.accept())
        .await
        .unwrap()
        .await
        .unwrap();
    let (mut ctl_send, mut ctl_recv) = conn.accept_bi().await.unwrap();
    let _hello: xsilo_wire::Hello = read_frame(&mut ctl_recv).await;
    let reply = HelloReply::Accepted {
        version: xsilo_wire::PROTOCOL_VERSION,
        party: party("bob"),
    };
    ctl_send
        .write_all(&encode_to_vec(&reply).unwrap())
        .await
        .unwrap();
    (conn, ctl_send, ctl_recv)
}

#[tokio::test]
async fn a_control_frame_overtakes_a_stalled_large_transfer() {
    // Bob is a raw quinn peer that reads the start of a 64 MiB object and then
    // stops reading, so alice's transfer is provably in progress and blocked
    // by flow control. Alice's RemoteError must still reach bob at once.
    init_tracing();
    let (_alice_ep, alice, bob_ep) = alice_and_raw_bob();

    let big = Bytes::from(vec![7u8; 64 << 20]);
    let sending = tokio::spawn({
        let alice = alice.clone();
        async move { alice.send_object(&party("bob"), object(9, big)).await }
    });
    let (conn, _ctl_send, mut ctl_recv) = accept_alice(&bob_ep).await;
    let (_data_send, mut data_recv) = within(STEP, "the data stream", conn.accept_bi())
        .await
        .unwrap();
    let header: ObjectHeader = read_frame(&mut data_recv).await;
    assert_eq!(header.payload_len, 64 << 20);
    let mut first = vec![0u8; 1 << 20];
    data_recv.read_exact(&mut first).await.unwrap();
    // Bob now stops reading the data stream; alice's send cannot finish.
    assert!(!sending.is_finished());
    let error = ControlFrame::RemoteError(RemoteErrorFrame {
        origin: party("alice"),
        object: ObjectId(3),
        origin_object: ObjectId(3),
        kind: "TaskFailed".into(),
        message: None,
        causes: vec![],
        fingerprint: None,
        name: None,
    });
    within(
        STEP,
        "sending the control frame",
        alice.send_control(&party("bob"), error.clone()),
    )
    .await
    .unwrap();
    let got: ControlFrame = within(
        STEP,
        "the control frame behind a stalled transfer",
        read_frame(&mut ctl_recv),
    )
    .await;
    assert_eq!(got, error);
    assert!(
        !sending.is_finished(),
        "the large transfer finished, so nothing was overtaken"
    );
    sending.abort();
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let cluster = Cluster::new(&["alice", "bob"], TransportConfig::default());
    let _bob = cluster.join("bob", "demo");
    // Mallory trusts the right CA (so the server check passes) but presents
    // an "alice" certificate issued by a CA of her own.
    let rogue = xsilo_transport::devcert::DevCa::new().unwrap();
    let fake = rogue.issue(&party("alice")).unwrap();
    let tls = TlsIdentity::from_pem(&cluster.ca.ca_pem(), &fake.cert_pem, &fake.key_pem).unwrap();
    let mallory = QuicEndpoint::bind(party("alice"), any_port(), &tls, TransportConfig::default())
        .unwrap()
        .join(job("demo"), cluster.book())
        .unwrap();
    expect_tls_refusal(
        &mallory,
        "bob",
        "not signed by a CA that party 'bob' trusts",
    )
    .await;
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_by_the_dialer() {
    let cluster = Cluster::new(&["alice"], TransportConfig::default());
    let rogue = xsilo_transport::devcert::DevCa::new().unwrap();
    let bob_ep = QuicEndpoint::bind(
        party("bob"),
        any_port(),
        &rogue.identity(&party("bob")).unwrap(),
        TransportConfig::default(),
    )
    .unwrap();
    let mut book = cluster.book();
    book.insert(party("bob"), bob_ep.local_addr().into());
    let alice = cluster.endpoints[&party("alice")]
        .join(job("demo"), book)
        .unwrap();
    expect_tls_refusal(&alice, "bob", "we rejected its certificate").await;
}

#[tokio::test]
async fn carols_certificate_claiming_to_be_bob_is_refused_naming_both() {
    let cluster = Cluster::new(&["alice", "bob", "carol"], TransportConfig::default());
    let alice = cluster.join("alice", "demo");
    let mut inbox = Inbox::of(&alice);
    // A process with carol's certificate says "I am bob" in its hello.
    let (client, reply) = RawClient::connect(
        &cluster.identity("carol"),
        "carol",
        "bob",
        "alice",
        cluster.addr("alice"),
        "demo",
    )
    .await;
    match reply {
        HelloReply::Refused(r) => {
            assert_eq!(r.code, RefusalCode::IdentityMismatch);
            assert!(
                r.message.contains("'bob'") && r.message.contains("'carol'"),
                "{}",
                r.message
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let closed = within(
        STEP,
        "the refused connection to close",
        client.conn.closed(),
    )
    .await;
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(_)),
        "{closed}"
    );
    assert!(
        inbox.is_empty(),
        "alice reported a peer for a refused connection"
    );

    // And the transport refuses to serve a job of carol's as bob with
    // carol's certificate (it does not name bob and names another party of
    // the job, so it is no shared certificate either).
    let err = QuicEndpoint::bind(
        party("bob"),
        any_port(),
        &cluster.identity("carol"),
        TransportConfig::default(),
    )
    .unwrap()
    .join(job("demo"), cluster.book())
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("does not name party 'bob'")
            && err.contains("DNS:bob")
            && err.contains("'carol'"),
        "{err}"
    );
}

#[tokio::test]
async fn dialling_a_party_whose_certificate_names_another_is_refused() {
    // The address book says bob is at carol's address.
    let cluster = Cluster::new(&["alice", "carol"], TransportConfig::default());
    let _carol = cluster.join("carol", "demo");
    let mut book = cluster.book();
    book.insert(party("bob"), cluster.addr("carol").into());
    let alice = cluster.endpoints[&party("alice")]
        .join(job("demo"), book)
        .unwrap();
    expect_tls_refusal(&alice, "bob", "carol").await;
}

#[tokio::test]
async fn data_for_another_job_is_refused_and_the_sender_is_told_the_job() {
    let cluster = Cluster::new(&["alice", "bob"], TransportConfig::default());
    let _bob = cluster.join("bob", "demo");
    let alice = cluster.join("alice", "other-job");
    let err = within(
        STEP,
        "the refusal",
        alice.send_object(&party("bob"), object(1, "x")),
    )
    .await
    .unwrap_err();
    assert_eq!(err.refusal_code(), Some(RefusalCode::UnknownJob), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("'other-job'") && text.contains("'bob'"),
        "{text}"
    );
    // Refusals are permanent: exactly one attempt, no retry storm.
    let again = alice
        .send_object(&party("bob"), object(2, "x"))
        .await
        .unwrap_err();
    assert_eq!(again.refusal_code(), Some(RefusalCode::UnknownJob));
}

#[tokio::test]
async fn one_endpoint_serves_two_jobs_without_mixing_them() {
    let cluster = Cluster::new(&["alice", "bob"], TransportConfig::default());
    let bob_a = cluster.join("bob", "job-a");
    let bob_b = cluster.join("bob", "job-b");
    let alice_a = cluster.join("alice", "job-a");
    let alice_b = cluster.join("alice", "job-b");
    let mut rx_a = Inbox::of(&bob_a).auto_ack();
    let mut rx_b = Inbox::of(&bob_b).auto_ack();
    alice_a
        .send_object(&party("bob"), object(1, "for a"))
        .await
        .unwrap();
    alice_b
        .send_object(&party("bob"), object(1, "for b"))
        .await
        .unwrap();
    assert_eq!(
        &within(STEP, "job a", rx_a.recv()).await.unwrap().1[..],
        b"for a"
    );
    assert_eq!(
        &within(STEP, "job b", rx_b.recv()).await.unwrap().1[..],
        b"for b"
    );
    assert!(rx_a.try_recv().is_err() && rx_b.try_recv().is_err());
}

#[tokio::test]
async fn an_object_over_the_limit_is_refused_before_it_is_sent() {
    let mut small = TransportConfig::default();
    small.max_message_size = 1 << 20;
    let cluster = Cluster::new(&["alice", "bob"], small);
    let alice = cluster.join("alice", "demo");
    let bob = cluster.join("bob", "demo");
    let mut inbox = Inbox::of(&bob);
    let err = alice
        .send_object(&party("bob"), object(4, vec![0u8; (1 << 20) + 1]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::TooLarge { size, limit, .. } if size == (1 << 20) + 1 && limit == 1 << 20),
        "{err}"
    );
    assert!(err.to_string().contains("max_message_size"), "{err}");
    // Nothing reached bob: no connection was even made.
    assert!(inbox.is_empty());
}

#[tokio::test]
async fn the_receiver_enforces_its_own_limit() {
    let cluster = Cluster::new(&["alice"], TransportConfig::default());
    let mut small = TransportConfig::default();
    small.max_message_size = 1 << 20;
    let bob_ep = QuicEndpoint::bind(
        party("bob"),
        any_port(),
        &cluster.ca.identity(&party("bob")).unwrap(),
        small,
    )
    .unwrap();
    let mut book = cluster.book();
    book.insert(party("bob"), bob_ep.local_addr().into());
    let bob = bob_ep.join(job("demo"), book.clone()).unwrap();
    let mut received = Inbox::of(&bob).auto_ack();
    let alice = cluster.endpoints[&party("alice")]
        .join(job("demo"), book)
        .unwrap();
    let err = within(
        STEP,
        "the refusal",
        alice.send_object(&party("bob"), object(1, vec![1u8; 4 << 20])),
    )
    .await
    .unwrap_err();
    assert_eq!(err.refusal_code(), Some(RefusalCode::TooLarge), "{err}");
    assert!(err.to_string().contains("max_message_size"), "{err}");
    // The connection still serves objects within the limit.
    alice
        .send_object(&party("bob"), object(2, vec![1u8; 1000]))
        .await
        .unwrap();
    assert_eq!(
        within(STEP, "the small object", received.recv())
            .await
            .unwrap()
            .0,
        ObjectId(2)
    );
}

/// Opens a data stream on a raw connection, writes `bytes`, finishes, and
/// returns the receiver's reply.
async fn raw_object(conn: &quinn::Connection, bytes: &[u8]) -> DataReply {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    // The receiver may stop the stream early; the reply still comes.
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    within(STEP, "the data reply", read_frame(&mut recv)).await
}

fn header(len: u64, id: u64) -> ObjectHeader {
    ObjectHeader {
        job: job("demo"),
        src: party("alice"),
        object: ObjectId(id),
        consumer: 0,
        fingerprint: 0,
        payload_len: len,
        resend: false,
    }
}

#[tokio::test]
async fn a_peer_that_lies_about_the_length_is_cut_off_and_the_endpoint_goes_on() {
    let cluster = Cluster::new(&["alice", "bob"], TransportConfig::default());
    let bob = cluster.join("bob", "demo");
    let mut received = Inbox::of(&bob).auto_ack();
    let (client, reply) = RawClient::connect(
        &cluster.identity("alice"),
        "alice",
        "alice",
        "bob",
        cluster.addr("bob"),
        "demo",
    )
    .await;
    assert!(matches!(reply, HelloReply::Accepted { .. }), "{reply:?}");

    // Announces 10 bytes, sends 1 MiB.
    let mut bytes = encode_to_vec(&header(10, 1)).unwrap();
    bytes.extend(vec![0u8; 1 << 20]);
    match raw_object(&client.conn, &bytes).await {
        DataReply::Refused(r) => {
            assert_eq!(r.code, RefusalCode::Malformed);
            assert!(
                r.message.contains("more than the 10 payload bytes"),
                "{}",
                r.message
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Announces 100 bytes, sends 5.
    let mut bytes = encode_to_vec(&header(100, 2)).unwrap();
    bytes.extend(b"short");
    assert!(
        matches!(raw_object(&client.conn, &bytes).await, DataReply::Refused(r) if r.code == RefusalCode::Malformed)
    );
    // Announces more than the limit: refused from the header alone.
    let bytes = encode_to_vec(&header(u64::MAX, 3)).unwrap();
    assert!(
        matches!(raw_object(&client.conn, &bytes).await, DataReply::Refused(r) if r.code == RefusalCode::TooLarge)
    );

    // The same connection still delivers an honest object.
    let mut bytes = encode_to_vec(&header(4, 4)).unwrap();
    bytes.extend(b"fine");
    assert_eq!(raw_object(&client.conn, &bytes).await, DataReply::Ack);
    let (id, payload) = within(STEP, "the honest object", received.recv())
        .await
        .unwrap();
    assert_eq!((id, &payload[..]), (ObjectId(4), &b"fine"[..]));
}

#[tokio::test]
async fn a_malformed_frame_closes_only_its_stream() {
    let cluster = Cluster::new(&["alice", "bob", "carol"], TransportConfig::default());
    let bob = cluster.join("bob", "demo");
    let carol = cluster.join("carol", "demo");
    let mut received = Inbox::of(&bob).auto_ack();
    let (client, _) = RawClient::connect(
        &cluster.identity("alice"),
        "alice",
        "alice",
        "bob",
        cluster.addr("bob"),
        "demo",
    )
    .await;

    // A length prefix followed by bytes that are not a header.
    let mut garbage = 12u32.to_be_bytes().to_vec();
    garbage.extend(b"\xc1\xc1 garbage!!");
    match raw_object(&client.conn, &garbage).await {
        DataReply::Refused(r) => {
            assert_eq!(r.code, RefusalCode::Malformed);
            assert!(
                r.message.contains("malformed object header"),
                "{}",
                r.message
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A header claiming another job is refused with that job named.
    let mut other = header(1, 5);
    other.job = job("elsewhere");
    let mut bytes = encode_to_vec(&other).unwrap();
    bytes.push(1);
    assert!(
        matches!(raw_object(&client.conn, &bytes).await, DataReply::Refused(r) if r.code == RefusalCode::WrongJob && r.message.contains("'elsewhere'"))
    );
    // A header claiming to come from carol on alice's connection.
    let mut forged = header(1, 6);
    forged.src = party("carol");
    let mut bytes = encode_to_vec(&forged).unwrap();
    bytes.push(1);
    assert!(
        matches!(raw_object(&client.conn, &bytes).await, DataReply::Refused(r) if r.code == RefusalCode::IdentityMismatch)
    );

    // The connection and the endpoint keep serving.
    let mut bytes = encode_to_vec(&header(2, 7)).unwrap();
    bytes.extend(b"ok");
    assert_eq!(raw_object(&client.conn, &bytes).await, DataReply::Ack);
    carol
        .send_object(&party("bob"), object(8, "from carol"))
        .await
        .unwrap();
    let mut ids = vec![
        within(STEP, "object 7", received.recv()).await.unwrap().0,
        within(STEP, "object 8", received.recv()).await.unwrap().0,
    ];
    ids.sort();
    assert_eq!(ids, vec![ObjectId(7), ObjectId(8)]);
}

#[tokio::test]
async fn a_malformed_control_frame_closes_that_connection_with_a_reason() {
    let cluster = Cluster::new(&["alice", "bob"], TransportConfig::default());
    let bob = cluster.join("bob", "demo");
    let mut inbox = Inbox::of(&bob);
    let (mut client, _) = RawClient::connect(
        &cluster.identity("alice"),
        "alice",
        "alice",
        "bob",
        cluster.addr("bob"),
        "demo",
    )
    .await;
    assert!(matches!(inbox.next().await, TransportEvent::PeerUp { .. }));
    client
        .control
        .0
        .write_all(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1])
        .await
        .unwrap();
    let closed = within(STEP, "the connection to close", client.conn.closed()).await;
    assert!(
        closed.to_string().contains("malformed control frame"),
        "{closed}"
    );
    match inbox.next().await {
        TransportEvent::PeerDown {
            party: p,
            reason: PeerDownReason::Lost(_),
        } => assert_eq!(p, party("alice")),
        other => panic!("expected alice down, got {other:?}"),
    }
}

#[tokio::test]
async fn control_frames_arrive_in_order_and_goodbye_marks_the_peer_down() {
    let cluster = Cluster::new(&["alice", "bob"], TransportConfig::default());
    let alice = cluster.join("alice", "demo");
    let bob = cluster.join("bob", "demo");
    let mut inbox = Inbox::of(&bob);
    for seq in 0..50 {
        alice
            .send_control(&party("bob"), ControlFrame::Heartbeat { seq })
            .await
            .unwrap();
    }
    assert!(
        matches!(inbox.next().await, TransportEvent::PeerUp { party: p } if p == party("alice"))
    );
    for seq in 0..50 {
        match inbox.next().await {
            TransportEvent::Control { from, frame } => {
                assert_eq!(from, party("alice"));
                assert_eq!(frame, ControlFrame::Heartbeat { seq });
            }
            other => panic!("expected heartbeat {seq}, got {other:?}"),
        }
    }
    within(STEP, "alice's close", alice.close()).await;
    let mut saw_goodbye = false;
    loop {
        match inbox.next().await {
            TransportEvent::Control {
                frame: ControlFrame::Goodbye,
                ..
            } => saw_goodbye = true,
            TransportEvent::PeerDown { party: p, reason } => {
                assert_eq!(p, party("alice"));
                assert_eq!(reason, PeerDownReason::Goodbye);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        saw_goodbye,
        "the goodbye frame did not arrive before the peer went down"
    );
    let err = alice
        .send_object(&party("bob"), object(1, "late"))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Closed { .. }), "{err}");
}

#[tokio::test]
async fn an_unreachable_party_fails_after_the_retry_policy_and_a_late_one_is_reached() {
    let mut config = TransportConfig::default();
    config.connect_timeout = Duration::from_millis(300);
    config.retry.max_attempts = 3;
    config.retry.initial_backoff = Duration::from_millis(20);
    let cluster = Cluster::new(&["alice"], config.clone());
    // Reserve a port for bob, then free it: nobody listens there yet.
    let bob_addr = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut book = cluster.book();
    book.insert(party("bob"), bob_addr.into());
    let alice = cluster.endpoints[&party("alice")]
        .join(job("demo"), book.clone())
        .unwrap();
    let err = within(
        STEP,
        "giving up on bob",
        alice.send_object(&party("bob"), object(1, "x")),
    )
    .await
    .unwrap_err();
    match &err {
        TransportError::Unreachable {
            peer,
            attempts,
            addr,
            ..
        } => {
            assert_eq!(peer, &party("bob"));
            assert_eq!(*attempts, 3);
            assert_eq!(addr, &bob_addr.to_string());
        }
        other => panic!("expected unreachable, got {other}"),
    }
    // Bob comes up at that address; the next send dials again and succeeds.
    let bob = QuicEndpoint::bind(party("bob"), bob_addr, &cluster.identity("bob"), config)
        .unwrap()
        .join(job("demo"), book)
        .unwrap();
    let mut received = Inbox::of(&bob).auto_ack();
    within(
        STEP,
        "the late send",
        alice.send_object(&party("bob"), object(2, "now")),
    )
    .await
    .unwrap();
    assert_eq!(
        within(STEP, "the object", received.recv()).await.unwrap().0,
        ObjectId(2)
    );
}

#[tokio::test]
async fn sending_to_a_party_outside_the_job_names_the_known_ones() {
    let cluster = Cluster::new(&["alice", "bob"], TransportConfig::default());
    let alice = cluster.join("alice", "demo");
    let err = alice
        .send_object(&party("mallory"), object(1, "x"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "party 'mallory' is not a party of job 'demo' (known: bob)"
    );
}

#[tokio::test]
async fn a_hello_from_a_party_outside_the_job_is_refused() {
    let cluster = Cluster::new(&["bob", "dave"], TransportConfig::default());
    // bob's job knows only alice and bob.
    let mut book = cluster.book();
    book.remove(&party("dave"));
    book.insert(party("alice"), any_port().into());
    let _bob = cluster.endpoints[&party("bob")]
        .join(job("demo"), book)
        .unwrap();
    let (_c, reply) = RawClient::connect(
        &cluster.identity("dave"),
        "dave",
        "dave",
        "bob",
        cluster.addr("bob"),
        "demo",
    )
    .await;
    assert!(
        matches!(reply, HelloReply::Refused(r) if r.code == RefusalCode::UnknownParty && r.message.contains("'dave'"))
    );
}

#[tokio::test]
async fn the_sender_takes_the_end_of_the_reply_and_does_not_stop_the_stream() {
    // Bob is a raw quinn peer: it reads alice's object, replies Ack and
    // finishes. Alice must read the reply's end too, so that the stream
    // closes at both ends without a STOP_SENDING from her (one packet, and
    // one wake-up of bob, less per object).
    init_tracing();
    let (_alice_ep, alice, bob_ep) = alice_and_raw_bob();
    let send = |id: u64| {
        let alice = alice.clone();
        tokio::spawn(async move { alice.send_object(&party("bob"), object(id, "four")).await })
    };
    let sending = send(4);
    let (conn, _ctl_send, _ctl_recv) = accept_alice(&bob_ep).await;
    // Bob takes one object and replies as xsilo does; returns once alice
    // has acknowledged the whole reply. A STOP_SENDING from her would have
    // come with that acknowledgement (it leaves at once, with the ACK due).
    let serve = |id: u64| {
        let conn = conn.clone();
        async move {
            let (mut data_send, mut data_recv) = within(STEP, "the data stream", conn.accept_bi())
                .await
                .unwrap();
            let header: ObjectHeader = read_frame(&mut data_recv).await;
            assert_eq!(header.object, ObjectId(id));
            let payload = within(STEP, "the payload", data_recv.read_to_end(64))
                .await
                .unwrap();
            assert_eq!(&payload[..], b"four");
            data_send
                .write_all(&encode_to_vec(&DataReply::Ack).unwrap())
                .await
                .unwrap();
            data_send.finish().unwrap();
            let stopped = within(STEP, "the reply to be acknowledged", data_send.stopped())
                .await
                .unwrap();
            assert_eq!(stopped, None);
        }
    };
    serve(4).await;
    let delivery = within(STEP, "alice's first send", sending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivery.bytes, 4);
    // The first object also set the connection up (alice keeps only the
    // send half of the control stream); count from here.
    let before = conn.stats().frame_rx.stop_sending;
    let sending = send(5);
    serve(5).await;
    within(STEP, "alice's second send", sending)
        .await
        .unwrap()
        .unwrap();
    // A third object as a barrier: a STOP_SENDING for the second would
    // have left before the third's data, which bob has now read.
    let sending = send(6);
    serve(6).await;
    within(STEP, "alice's third send", sending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        conn.stats().frame_rx.stop_sending,
        before,
        "alice stopped the reply's stream instead of reading its end"
    );
}
