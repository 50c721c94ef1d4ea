//! What `xsilo check` relies on: probes answered with the acceptor's
//! verdict without reaching its job, and the inspection of a party's own
//! TLS files. Real QUIC on 127.0.0.1; every wait bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::*;
use time::OffsetDateTime;
use xsilo_transport::devcert::DevCa;
use xsilo_transport::{
    inspect_pem_files, CertificateProblem, IdentityMode, PeerAddress, ProbeError, Prober,
    SetupError, TlsIdentity, Transport, TransportConfig, TransportEvent,
};
use xsilo_wire::RefusalCode;

fn prober(identity: &TlsIdentity, name: &str, config: TransportConfig) -> Prober {
    Prober::bind(party(name), any_port(), identity, config).unwrap()
}

/// The first event at `inbox` once alice really sends: it must be alice's
/// peer-up for that send, so nothing the probes did reached the job.
async fn assert_job_saw_nothing_before_a_real_send(
    alice: &xsilo_transport::QuicTransport,
    inbox: &mut Inbox,
) {
    let send = tokio::spawn({
        let alice = alice.clone();
        async move { alice.send_object(&party("bob"), object(1, "x")).await }
    });
    match inbox.next().await {
        TransportEvent::PeerUp { party: p } => assert_eq!(p, party("alice")),
        other => panic!("the probes reached bob's job: {other:?}"),
    }
    match inbox.next().await {
        TransportEvent::Object(o) => o.ack.accept(),
        other => panic!("expected alice's object, got {other:?}"),
    }
    within(STEP, "alice's send", send).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_probe_gets_the_verdict_and_the_job_sees_nothing() {
    init_tracing();
    let cluster = Cluster::new(&["alice", "bob"], TransportConfig::default());
    let bob = cluster.join("bob", "demo");
    let alice = cluster.join("alice", "demo");
    let mut inbox = Inbox::of(&bob);
    let p = prober(
        &cluster.identity("alice"),
        "alice",
        TransportConfig::default(),
    );
    let at: PeerAddress = cluster.addr("bob").into();

    let ok = within(STEP, "probe", p.probe(&job("demo"), &party("bob"), &at, 0))
        .await
        .unwrap();
    assert!(ok.verdict.is_ok(), "{:?}", ok.verdict);
    assert!(ok.round_trip > Duration::ZERO && ok.round_trip < STEP);
    assert!(ok.transfer.is_none());

    // A wrong job name: with an ordinary hello bob's job would be told
    // (PeerRefused) and abort; a probe only gets the verdict.
    let wrong = within(STEP, "probe", p.probe(&job("other"), &party("bob"), &at, 0))
        .await
        .unwrap();
    let refusal = wrong.verdict.unwrap_err();
    assert_eq!(refusal.code, RefusalCode::UnknownJob);
    assert!(refusal.message.contains("'other'"), "{refusal}");
    p.close().await;

    assert_job_saw_nothing_before_a_real_send(&alice, &mut inbox).await;
    assert!(inbox.is_empty());
}

#[tokio::test]
async fn a_probe_of_a_party_outside_the_job_is_refused_naming_it() {
    let cluster = Cluster::new(&["alice", "bob", "carol"], TransportConfig::default());
    let book: std::collections::BTreeMap<_, PeerAddress> = [
        (party("alice"), cluster.addr("alice").into()),
        (party("bob"), cluster.addr("bob").into()),
    ]
    .into();
    let _bob = cluster.endpoints[&party("bob")]
        .join(job("demo"), book)
        .unwrap();
    let p = prober(
        &cluster.identity("carol"),
        "carol",
        TransportConfig::default(),
    );
    let report = within(
        STEP,
        "probe",
        p.probe(&job("demo"), &party("bob"), &cluster.addr("bob").into(), 0),
    )
    .await
    .unwrap();
    let refusal = report.verdict.unwrap_err();
    assert_eq!(refusal.code, RefusalCode::UnknownParty, "{refusal}");
    assert!(refusal.message.contains("'carol'"), "{refusal}");
}

#[tokio::test]
async fn a_probe_transfer_is_timed_acknowledged_and_bounded_by_the_receiver() {
    let mut small = TransportConfig::default();
    small.max_message_size = 4 * 1024 * 1024;
    let cluster = Cluster::new(&["alice", "bob"], small);
    let bob = cluster.join("bob", "demo");
    let alice = cluster.join("alice", "demo");
    let mut inbox = Inbox::of(&bob);
    let p = prober(
        &cluster.identity("alice"),
        "alice",
        TransportConfig::default(),
    );
    let at: PeerAddress = cluster.addr("bob").into();

    let report = within(
        STEP,
        "probe",
        p.probe(&job("demo"), &party("bob"), &at, 3 * 1024 * 1024),
    )
    .await
    .unwrap();
    let transfer = report.transfer.unwrap().unwrap();
    assert_eq!(transfer.bytes, 3 * 1024 * 1024);
    assert!(transfer.mib_per_s() > 0.0);

    let over = within(
        STEP,
        "probe",
        p.probe(&job("demo"), &party("bob"), &at, 8 * 1024 * 1024),
    )
    .await
    .unwrap();
    let err = over.transfer.unwrap().unwrap_err();
    assert_eq!(err.refusal_code(), Some(RefusalCode::TooLarge), "{err}");
    p.close().await;

    assert_job_saw_nothing_before_a_real_send(&alice, &mut inbox).await;
}

#[tokio::test]
async fn a_probe_of_the_wrong_address_names_the_party_that_answered() {
    let cluster = Cluster::new(&["alice", "bob", "carol"], TransportConfig::default());
    let _carol = cluster.join("carol", "demo");
    let p = prober(
        &cluster.identity("alice"),
        "alice",
        TransportConfig::default(),
    );
    let err = within(
        STEP,
        "probe",
        p.probe(
            &job("demo"),
            &party("bob"),
            &cluster.addr("carol").into(),
            0,
        ),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, ProbeError::ServerCertificate { .. }),
        "{err:?}"
    );
    assert!(
        text.contains("DNS:carol")
            && text.contains("'bob'")
            && text.contains(&cluster.addr("carol").to_string()),
        "{text}"
    );
}

#[tokio::test]
async fn a_probe_across_two_cas_fails_on_both_sides_certificates() {
    let ours = Cluster::new(&["alice"], TransportConfig::default());
    let theirs = Cluster::new(&["alice", "bob"], TransportConfig::default());
    let _bob = theirs.join("bob", "demo");
    let p = prober(&ours.identity("alice"), "alice", TransportConfig::default());
    let err = within(
        STEP,
        "probe",
        p.probe(&job("demo"), &party("bob"), &theirs.addr("bob").into(), 0),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("not signed by our CA"), "{err}");
}

#[tokio::test]
async fn a_probe_of_an_address_nobody_listens_on_names_it_within_connect_timeout() {
    let mut config = TransportConfig::default();
    config.connect_timeout = Duration::from_millis(300);
    let cluster = Cluster::new(&["alice"], config.clone());
    let nobody = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let p = prober(&cluster.identity("alice"), "alice", config);
    let started = Instant::now();
    let err = within(
        STEP,
        "probe",
        p.probe(&job("demo"), &party("bob"), &nobody.into(), 0),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ProbeError::NoAnswer { .. }), "{err:?}");
    assert!(err.to_string().contains(&nobody.to_string()), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

// --- a party's own files --------------------------------------------------

/// The parties of the job the files are inspected for.
fn parties() -> Vec<xsilo_wire::PartyName> {
    vec![party("alice"), party("bob")]
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

#[test]
fn a_key_of_another_certificate_is_refused_naming_both_files() {
    let ca = DevCa::new().unwrap();
    let f = Files::new();
    let ca_pem = f.write("ca.pem", &ca.ca_pem());
    let alice = ca.issue(&party("alice")).unwrap();
    let bob = ca.issue(&party("bob")).unwrap();
    let cert = f.write("alice.pem", &alice.cert_pem);
    let key = f.write("bob.key", &bob.key_pem);
    let err = TlsIdentity::from_pem_files(&ca_pem, &cert, &key).unwrap_err();
    assert!(matches!(err, SetupError::KeyMismatch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&cert.display().to_string()) && text.contains(&key.display().to_string()),
        "{text}"
    );
    let report = inspect_pem_files(
        &ca_pem,
        &cert,
        &key,
        &party("alice"),
        &parties(),
        SystemTime::now(),
    );
    assert!(matches!(
        report.key,
        Some(Err(SetupError::KeyMismatch { .. }))
    ));
    assert!(matches!(report.chain, Some(Ok(()))));
}

#[test]
fn inspection_separates_expiry_names_and_the_ca() {
    let ca = DevCa::new().unwrap();
    let other_ca = DevCa::new().unwrap();
    let f = Files::new();
    let ca_pem = f.write("ca.pem", &ca.ca_pem());
    let now = OffsetDateTime::now_utc();
    let expired = ca
        .issue_valid(
            &party("alice"),
            now - time::Duration::days(30),
            now - time::Duration::days(1),
        )
        .unwrap();
    let cert = f.write("expired.pem", &expired.cert_pem);
    let key = f.write("expired.key", &expired.key_pem);
    let r = inspect_pem_files(
        &ca_pem,
        &cert,
        &key,
        &party("alice"),
        &parties(),
        SystemTime::now(),
    );
    assert!(
        matches!(r.validity, Some(Err(CertificateProblem::Expired { .. }))),
        "{r:?}"
    );
    // Judged within its validity, the chain itself is fine.
    assert!(matches!(r.chain, Some(Ok(()))), "{r:?}");
    assert!(matches!(r.name, Some(Ok(IdentityMode::Bound))), "{r:?}");

    let good = ca.issue(&party("alice")).unwrap();
    let cert = f.write("alice.pem", &good.cert_pem);
    let key = f.write("alice.key", &good.key_pem);
    let r = inspect_pem_files(
        &ca_pem,
        &cert,
        &key,
        &party("bob"),
        &parties(),
        SystemTime::now(),
    );
    match r.name {
        Some(Err(CertificateProblem::WrongName { presented, .. })) => {
            assert_eq!(presented, vec!["DNS:alice".to_owned()])
        }
        other => panic!("{other:?}"),
    }
    let v = r.validity.unwrap().unwrap();
    let days = v
        .not_after
        .duration_since(SystemTime::now())
        .unwrap()
        .as_secs()
        / 86_400;
    assert!((363..=365).contains(&days), "{days}");

    let other_pem = f.write("other-ca.pem", &other_ca.ca_pem());
    let r = inspect_pem_files(
        &other_pem,
        &cert,
        &key,
        &party("alice"),
        &parties(),
        SystemTime::now(),
    );
    assert!(
        matches!(r.chain, Some(Err(CertificateProblem::NotSignedByCa { .. }))),
        "{r:?}"
    );
    assert!(matches!(r.key, Some(Ok(()))));

    let missing = f.dir.path().join("missing.pem");
    let r = inspect_pem_files(
        &missing,
        &cert,
        &key,
        &party("alice"),
        &parties(),
        SystemTime::now(),
    );
    assert!(r.ca.unwrap_err().to_string().contains("missing.pem"));
    assert!(r.chain.is_none());
}
