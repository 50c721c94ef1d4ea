//! One certificate shared by every party (RayFed's set-up; RFC 0001,
//! "Handshake and identity"): a certificate that names no party of the job
//! is accepted, the CA is still checked both ways, a certificate that names
//! a party of the job is still held to it. Real QUIC on 127.0.0.1; every
//! wait bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::SystemTime;

use common::*;
use time::OffsetDateTime;
use xsilo_transport::devcert::{self_signed_shared, DevCa, DevCert};
use xsilo_transport::{
    inspect_pem_files, CertificateProblem, IdentityMode, PeerAddress, Prober, QuicEndpoint,
    SetupError, TlsIdentity, Transport, TransportConfig, TransportEvent,
};
use xsilo_wire::{HelloReply, PartyName, RefusalCode};

/// RayFed's tool's shape: self-signed, `CN=ray-internal`, DNS names
/// `127.0.0.1` and `localhost`, no other extension.
fn rayfed_like() -> DevCert {
    self_signed_shared("ray-internal", &["127.0.0.1", "localhost"]).unwrap()
}

/// The shared certificate as every party uses it: as its certificate and
/// as its CA file.
fn as_own_ca(shared: &DevCert) -> TlsIdentity {
    TlsIdentity::from_pem(&shared.cert_pem, &shared.cert_pem, &shared.key_pem).unwrap()
}

fn bind(name: &str, tls: &TlsIdentity) -> QuicEndpoint {
    QuicEndpoint::bind(party(name), any_port(), tls, TransportConfig::default()).unwrap()
}

fn book_of(endpoints: &[(&str, &QuicEndpoint)]) -> BTreeMap<PartyName, PeerAddress> {
    endpoints
        .iter()
        .map(|(n, ep)| (party(n), PeerAddress::from(ep.local_addr())))
        .collect()
}

/// A send from `from` to `to`, accepted by `to`'s runtime: the object
/// arrives from the party `from` claimed.
async fn send_and_take(
    from: &xsilo_transport::QuicTransport,
    to: &str,
    inbox: &mut Inbox,
    id: u64,
) {
    let sending = tokio::spawn({
        let from = from.clone();
        let to = party(to);
        async move { from.send_object(&to, object(id, "shared")).await }
    });
    let obj = inbox.next_object().await;
    assert_eq!(&obj.from, from.party());
    assert_eq!(obj.header.object.0, id);
    obj.ack.accept();
    let delivery = within(STEP, "the send", sending).await.unwrap().unwrap();
    assert_eq!(delivery.bytes, 6);
}

#[tokio::test]
async fn two_parties_sharing_one_self_signed_certificate_exchange_objects_both_ways() {
    init_tracing();
    let shared = rayfed_like();
    let tls = as_own_ca(&shared);
    assert_eq!(tls.mode(&party("alice")), IdentityMode::Shared);
    assert_eq!(
        tls.presented_names(),
        vec!["DNS:127.0.0.1".to_owned(), "DNS:localhost".to_owned()]
    );
    let (alice_ep, bob_ep) = (bind("alice", &tls), bind("bob", &tls));
    assert_eq!(alice_ep.mode(), IdentityMode::Shared);
    let book = book_of(&[("alice", &alice_ep), ("bob", &bob_ep)]);
    let alice = alice_ep.join(job("demo"), book.clone()).unwrap();
    let bob = bob_ep.join(job("demo"), book).unwrap();
    let (mut at_alice, mut at_bob) = (Inbox::of(&alice), Inbox::of(&bob));

    send_and_take(&alice, "bob", &mut at_bob, 1).await;
    send_and_take(&bob, "alice", &mut at_alice, 2).await;
    send_and_take(&alice, "bob", &mut at_bob, 3).await;
    alice.close().await;
    bob.close().await;
}

/// A shared certificate issued by `ca` (naming `localhost`, no party),
/// trusting `ca`.
fn issued_shared(ca: &DevCa) -> TlsIdentity {
    let now = OffsetDateTime::now_utc();
    let year = time::Duration::days(365);
    let shared = ca
        .issue_names("shared", &["localhost"], now - year, now + year)
        .unwrap();
    TlsIdentity::from_pem(&ca.ca_pem(), &shared.cert_pem, &shared.key_pem).unwrap()
}

#[tokio::test]
async fn a_certificate_naming_carol_cannot_claim_bob_at_a_party_with_a_shared_certificate() {
    // A CA issues the shared certificate (naming no party) and carol's own.
    let ca = DevCa::new().unwrap();
    let shared_tls = issued_shared(&ca);
    let carol_tls = ca.identity(&party("carol")).unwrap();
    let alice_ep = bind("alice", &shared_tls);
    let bob_ep = bind("bob", &shared_tls);
    let carol_ep = bind("carol", &carol_tls);
    assert_eq!(carol_ep.mode(), IdentityMode::Bound);
    let book = book_of(&[("alice", &alice_ep), ("bob", &bob_ep), ("carol", &carol_ep)]);
    let alice = alice_ep.join(job("demo"), book).unwrap();
    let mut inbox = Inbox::of(&alice);

    // The holder of carol's certificate says "I am bob". (Its own check of
    // alice's server certificate is its business: it dials with a verifier
    // that takes the shared certificate, as a party named "mallory" would.)
    let (client, reply) = RawClient::connect(
        &carol_tls,
        "mallory",
        "bob",
        "alice",
        alice_ep.local_addr(),
        "demo",
    )
    .await;
    match reply {
        HelloReply::Refused(r) => {
            assert_eq!(r.code, RefusalCode::IdentityMismatch);
            assert!(
                r.message.contains("claimed to be party 'bob'")
                    && r.message.contains("names party 'carol'"),
                "{}",
                r.message
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    client.conn.close(0u32.into(), b"done");
    assert!(inbox.is_empty(), "alice reported a refused connection");

    // As carol it is accepted: its certificate names carol.
    let (client, reply) = RawClient::connect(
        &carol_tls,
        "mallory",
        "carol",
        "alice",
        alice_ep.local_addr(),
        "demo",
    )
    .await;
    assert!(matches!(reply, HelloReply::Accepted { .. }), "{reply:?}");
    client.conn.close(0u32.into(), b"done");

    // What shared mode gives up (documented): the holder of the shared
    // certificate is whoever it claims, bob included.
    let (client, reply) = RawClient::connect(
        &shared_tls,
        "mallory",
        "bob",
        "alice",
        alice_ep.local_addr(),
        "demo",
    )
    .await;
    assert!(matches!(reply, HelloReply::Accepted { .. }), "{reply:?}");
    client.conn.close(0u32.into(), b"done");
}

#[tokio::test]
async fn certificates_of_another_ca_are_still_refused_in_shared_mode_both_ways() {
    let ours = rayfed_like();
    let theirs = rayfed_like(); // same shape and names, another key
    let alice_ep = bind("alice", &as_own_ca(&ours));
    let bob_ep = bind("bob", &as_own_ca(&ours));

    // A client certificate of another CA: mallory trusts ours (so its check
    // of alice's certificate passes) but presents its own.
    let mallory_tls =
        TlsIdentity::from_pem(&ours.cert_pem, &theirs.cert_pem, &theirs.key_pem).unwrap();
    let mallory_ep = bind("bob", &mallory_tls);
    let book = book_of(&[("alice", &alice_ep), ("bob", &mallory_ep)]);
    let _alice = alice_ep.join(job("demo"), book.clone()).unwrap();
    let mallory = mallory_ep.join(job("demo"), book).unwrap();
    expect_tls_refusal(
        &mallory,
        "alice",
        "not signed by a CA that party 'alice' trusts",
    )
    .await;

    // A server certificate of another CA: the address book puts bob at an
    // endpoint whose shared certificate is of another CA.
    let rogue_ep = bind("bob", &as_own_ca(&theirs));
    let book = book_of(&[("alice", &alice_ep), ("bob", &rogue_ep)]);
    let alice = alice_ep.join(job("other"), book).unwrap();
    expect_tls_refusal(&alice, "bob", "we rejected its certificate").await;
    // The real bob is untouched by all this.
    drop(bob_ep);
}

#[tokio::test]
async fn another_partys_certificate_is_no_shared_certificate() {
    let ca = DevCa::new().unwrap();
    let (bob_tls, carol_tls) = (
        ca.identity(&party("bob")).unwrap(),
        ca.identity(&party("carol")).unwrap(),
    );
    // alice started with bob's certificate: it names another party of the
    // job, so the job refuses it, naming both.
    let alice_ep = bind("alice", &bob_tls);
    let bob_ep = bind("bob", &bob_tls);
    let book = book_of(&[("alice", &alice_ep), ("bob", &bob_ep)]);
    let err = alice_ep.join(job("demo"), book).unwrap_err();
    assert!(matches!(err, SetupError::Tls { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("does not name party 'alice'")
            && text.contains("DNS:alice")
            && text.contains("names party 'bob'"),
        "{text}"
    );
    // In a job without bob, the same certificate names no party: shared.
    let carol_ep = bind("carol", &carol_tls);
    let book = book_of(&[("alice", &alice_ep), ("carol", &carol_ep)]);
    let alice = alice_ep.join(job("demo"), book.clone()).unwrap();
    let _carol = carol_ep.join(job("demo"), book).unwrap();
    assert_eq!(
        bob_tls
            .mode_in_job(&party("alice"), [party("alice"), party("carol")].iter())
            .unwrap(),
        IdentityMode::Shared
    );

    // A shared-mode dialer still holds a server certificate that names a
    // party of the job to that party: dave's address book puts bob at
    // carol's address.
    let dave_ep = bind("dave", &issued_shared(&ca));
    assert_eq!(dave_ep.mode(), IdentityMode::Shared);
    let mut book = book_of(&[("dave", &dave_ep), ("carol", &carol_ep)]);
    book.insert(party("bob"), carol_ep.local_addr().into());
    let dave = dave_ep.join(job("demo"), book).unwrap();
    expect_tls_refusal(&dave, "bob", "naming party 'carol', not 'bob'").await;
    alice.close().await;
}

/// Shared mode is the local party's choice, not a peer's: a party whose
/// certificate names it keeps binding every peer's name, so a job that
/// mixes the two fails at both ends, each saying why.
#[tokio::test]
async fn a_party_whose_certificate_names_it_still_refuses_a_shared_certificate() {
    let ca = DevCa::new().unwrap();
    let alice_ep = bind("alice", &issued_shared(&ca));
    let bob_ep = bind("bob", &ca.identity(&party("bob")).unwrap());
    assert_eq!(bob_ep.mode(), IdentityMode::Bound);
    let book = book_of(&[("alice", &alice_ep), ("bob", &bob_ep)]);
    let alice = alice_ep.join(job("demo"), book.clone()).unwrap();
    let bob = bob_ep.join(job("demo"), book).unwrap();

    let err = within(
        STEP,
        "bob's refusal",
        alice.send_object(&party("bob"), object(1, "x")),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.refusal_code(),
        Some(RefusalCode::IdentityMismatch),
        "{err}"
    );
    assert!(
        err.to_string().contains(
            "claimed to be party 'alice' but its certificate names no party of job 'demo'"
        ),
        "{err}"
    );
    expect_tls_refusal(&bob, "alice", "we rejected its certificate").await;
}

#[tokio::test]
async fn a_probe_between_parties_sharing_a_certificate_reports_its_names() {
    let shared = rayfed_like();
    let tls = as_own_ca(&shared);
    let alice_ep = bind("alice", &tls);
    let bob_ep = bind("bob", &tls);
    let book = book_of(&[("alice", &alice_ep), ("bob", &bob_ep)]);
    let _bob = bob_ep.join(job("demo"), book).unwrap();
    let prober =
        Prober::bind(party("alice"), any_port(), &tls, TransportConfig::default()).unwrap();
    let report = within(
        STEP,
        "probe",
        prober.probe(&job("demo"), &party("bob"), &bob_ep.local_addr().into(), 0),
    )
    .await
    .unwrap();
    assert!(report.verdict.is_ok(), "{:?}", report.verdict);
    assert!(!report.server_names_peer);
    assert_eq!(
        report.server_names,
        vec!["DNS:127.0.0.1".to_owned(), "DNS:localhost".to_owned()]
    );
    prober.close().await;
    drop(alice_ep);
}

#[test]
fn inspection_reports_a_shared_certificate_and_refuses_another_partys() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let shared = rayfed_like();
    let cert = write("server.crt", &shared.cert_pem);
    let key = write("server.key", &shared.key_pem);
    let job = [party("alice"), party("bob")];
    // The self-signed certificate as its own CA: a usable chain, shared.
    let r = inspect_pem_files(&cert, &cert, &key, &party("alice"), &job, SystemTime::now());
    assert!(matches!(r.ca, Ok(1)), "{r:?}");
    assert!(matches!(r.chain, Some(Ok(()))), "{r:?}");
    assert!(matches!(r.key, Some(Ok(()))), "{r:?}");
    assert!(matches!(r.name, Some(Ok(IdentityMode::Shared))), "{r:?}");
    assert_eq!(r.presented, vec!["DNS:127.0.0.1", "DNS:localhost"]);

    let ca = DevCa::new().unwrap();
    let bob = ca.issue(&party("bob")).unwrap();
    let ca_pem = write("ca.pem", &ca.ca_pem());
    let bob_cert = write("bob.pem", &bob.cert_pem);
    let bob_key = write("bob.key", &bob.key_pem);
    let r = inspect_pem_files(
        &ca_pem,
        &bob_cert,
        &bob_key,
        &party("alice"),
        &job,
        SystemTime::now(),
    );
    match r.name {
        Some(Err(CertificateProblem::WrongName { presented, .. })) => {
            assert_eq!(presented, vec!["DNS:bob".to_owned()])
        }
        other => panic!("{other:?}"),
    }
}

/// RayFed's own tool's output, when given: run
/// `python3 rayfed/tool/generate_tls_certs.py` (it writes
/// `/tmp/rayfed/test-certs/server.crt` and `server.key`: RSA 2048,
/// self-signed, `CN=ray-internal`, no basicConstraints), then
/// `XSILO_RAYFED_CERTS=/tmp/rayfed/test-certs cargo test -p xsilo-transport
/// --test shared_cert -- --ignored`.
#[tokio::test]
#[ignore = "needs the output of RayFed's certificate tool (XSILO_RAYFED_CERTS)"]
async fn rayfeds_own_certificate_serves_as_certificate_and_ca() {
    let dir = std::env::var("XSILO_RAYFED_CERTS")
        .expect("set XSILO_RAYFED_CERTS to the folder of server.crt and server.key");
    let dir = std::path::Path::new(&dir);
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    let tls = TlsIdentity::from_pem_files(&cert, &cert, &key).unwrap();
    assert_eq!(tls.mode(&party("alice")), IdentityMode::Shared);
    let job_parties = [party("alice"), party("bob")];
    let r = inspect_pem_files(
        &cert,
        &cert,
        &key,
        &party("alice"),
        &job_parties,
        SystemTime::now(),
    );
    assert!(matches!(r.chain, Some(Ok(()))), "{r:?}");
    assert!(matches!(r.name, Some(Ok(IdentityMode::Shared))), "{r:?}");
    let (alice_ep, bob_ep) = (bind("alice", &tls), bind("bob", &tls));
    let book = book_of(&[("alice", &alice_ep), ("bob", &bob_ep)]);
    let alice = alice_ep.join(job("demo"), book.clone()).unwrap();
    let bob = bob_ep.join(job("demo"), book).unwrap();
    let (mut at_alice, mut at_bob) = (Inbox::of(&alice), Inbox::of(&bob));
    send_and_take(&alice, "bob", &mut at_bob, 1).await;
    send_and_take(&bob, "alice", &mut at_alice, 2).await;
    for event in [at_alice.rx.try_recv(), at_bob.rx.try_recv()] {
        assert!(
            !matches!(event, Ok(TransportEvent::PeerRefused { .. })),
            "{event:?}"
        );
    }
}

/// `openssl req -x509`'s default: a self-signed certificate with
/// basicConstraints CA:TRUE. WebPKI refuses it as a peer's certificate
/// (`CaUsedAsEndEntity`) even as its own CA, so no party could ever accept
/// it: `bind` refuses it at once, saying what to change, and the inspection
/// of `xsilo check` names the problem.
#[test]
fn a_self_signed_ca_certificate_as_a_partys_own_is_refused_saying_why() {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let tls = TlsIdentity::from_pem(&cert.pem(), &cert.pem(), &key.serialize_pem()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(async {
            QuicEndpoint::bind(party("alice"), any_port(), &tls, TransportConfig::default())
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("CA:TRUE") && err.contains("CA:FALSE"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let (crt, pem_key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&pem_key, key.serialize_pem()).unwrap();
    let r = inspect_pem_files(
        &crt,
        &crt,
        &pem_key,
        &party("alice"),
        &[],
        SystemTime::now(),
    );
    assert!(
        matches!(r.chain, Some(Err(CertificateProblem::CaCertificate { .. }))),
        "{r:?}"
    );
}
