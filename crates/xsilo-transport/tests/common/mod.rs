//! Helpers shared by the transport's integration tests. Every wait here is
//! bounded and fails with a message naming what did not happen.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use quinn::{RecvStream, SendStream};
use xsilo_transport::devcert::DevCa;
use xsilo_transport::{
    EventReceiver, InboundObject, OutboundObject, PeerAddress, QuicEndpoint, QuicTransport,
    TlsIdentity, Transport, TransportConfig, TransportError, TransportEvent,
};
use xsilo_wire::codec::{decode_body, encode_to_vec, parse_length};
use xsilo_wire::{Hello, HelloReply, JobName, ObjectId, PartyName, PROTOCOL_VERSION};

/// The longest any single step of a test may take before it fails.
pub const STEP: Duration = Duration::from_secs(20);

/// Sends an object from `from` to party `to` and expects the send to be
/// refused with a TLS error naming `to` whose reason contains `needle`.
pub async fn expect_tls_refusal(from: &impl Transport, to: &str, needle: &str) {
    let err = within(
        STEP,
        "the refusal",
        from.send_object(&party(to), object(1, "x")),
    )
    .await
    .expect_err("the send should have been refused");
    match &err {
        TransportError::Tls { peer, reason } => {
            assert_eq!(peer, &party(to));
            assert!(reason.contains(needle), "expected {needle:?} in: {reason}");
        }
        other => panic!("expected a TLS error, got {other}"),
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Awaits `fut`, failing the test with `what` if it takes longer than `bound`.
pub async fn within<T>(bound: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(bound, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {bound:?} waiting for {what}"),
    }
}

pub fn party(name: &str) -> PartyName {
    name.parse().unwrap()
}

pub fn job(name: &str) -> JobName {
    name.parse().unwrap()
}

pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub fn object(id: u64, payload: impl Into<Bytes>) -> OutboundObject {
    OutboundObject {
        object: ObjectId(id),
        consumer: id + 1000,
        fingerprint: id * 7,
        payload: payload.into().into(),
    }
}

/// Endpoints of several parties sharing one development CA.
pub struct Cluster {
    pub ca: DevCa,
    pub endpoints: BTreeMap<PartyName, QuicEndpoint>,
}

impl Cluster {
    pub fn new(names: &[&str], config: TransportConfig) -> Self {
        let ca = DevCa::new().unwrap();
        let endpoints = names
            .iter()
            .map(|n| {
                let p = party(n);
                let ep = QuicEndpoint::bind(
                    p.clone(),
                    any_port(),
                    &ca.identity(&p).unwrap(),
                    config.clone(),
                )
                .unwrap();
                (p, ep)
            })
            .collect();
        Self { ca, endpoints }
    }

    pub fn book(&self) -> BTreeMap<PartyName, PeerAddress> {
        self.endpoints
            .iter()
            .map(|(p, ep)| (p.clone(), PeerAddress::from(ep.local_addr())))
            .collect()
    }

    pub fn addr(&self, name: &str) -> SocketAddr {
        self.endpoints[&party(name)].local_addr()
    }

    pub fn join(&self, name: &str, job_name: &str) -> QuicTransport {
        self.endpoints[&party(name)]
            .join(job(job_name), self.book())
            .unwrap()
    }

    pub fn identity(&self, name: &str) -> TlsIdentity {
        self.ca.identity(&party(name)).unwrap()
    }
}

/// The inbound side of a transport, with bounded waits.
pub struct Inbox {
    pub rx: EventReceiver,
    pub name: String,
}

impl Inbox {
    pub fn of(t: &impl xsilo_transport::Transport) -> Self {
        Self {
            rx: t.take_events().unwrap(),
            name: t.party().to_string(),
        }
    }

    pub async fn next(&mut self) -> TransportEvent {
        let name = self.name.clone();
        within(STEP, &format!("an event at {name}"), self.rx.recv())
            .await
            .unwrap_or_else(|| panic!("the event channel of {name} closed"))
    }

    /// The next object, skipping peer up/down events.
    pub async fn next_object(&mut self) -> InboundObject {
        loop {
            match self.next().await {
                TransportEvent::Object(o) => return o,
                TransportEvent::PeerUp { .. } | TransportEvent::PeerDown { .. } => {}
                other => panic!("expected an object at {}, got {other:?}", self.name),
            }
        }
    }

    /// Accepts every object from now on, forwarding (id, payload) to the
    /// returned channel.
    pub fn auto_ack(mut self) -> tokio::sync::mpsc::UnboundedReceiver<(ObjectId, Bytes)> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(event) = self.rx.recv().await {
                if let TransportEvent::Object(o) = event {
                    let _ = tx.send((o.header.object, o.payload.to_bytes()));
                    o.ack.accept();
                }
            }
        });
        rx
    }

    /// Whether no event is waiting right now.
    pub fn is_empty(&mut self) -> bool {
        matches!(
            self.rx.try_recv(),
            Err(tokio::sync::mpsc::error::TryRecvError::Empty)
        )
    }
}

/// A raw quinn client with a party's real TLS setup, speaking the wire
/// protocol by hand: for tests of a misbehaving peer.
pub struct RawClient {
    pub conn: quinn::Connection,
    pub control: (SendStream, RecvStream),
    _endpoint: quinn::Endpoint,
}

impl RawClient {
    /// Connects as `as_party` (TLS identity `tls`, which may name another
    /// party) to `to` at `addr`, and sends a hello claiming `claim` for
    /// `job_name`. Returns the client and the acceptor's reply.
    pub async fn connect(
        tls: &TlsIdentity,
        cert_party: &str,
        claim: &str,
        to: &str,
        addr: SocketAddr,
        job_name: &str,
    ) -> (Self, HelloReply) {
        let config = TransportConfig::default();
        let endpoint =
            xsilo_transport::setup::quinn_endpoint(&party(cert_party), any_port(), tls, &config)
                .unwrap();
        let conn = within(STEP, "raw handshake", endpoint.connect(addr, to).unwrap())
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let hello = Hello {
            version: PROTOCOL_VERSION,
            job: job(job_name),
            party: party(claim),
            to: party(to),
            metadata: Default::default(),
            probe: None,
        };
        send.write_all(&encode_to_vec(&hello).unwrap())
            .await
            .unwrap();
        let reply: HelloReply = within(STEP, "hello reply", read_frame(&mut recv)).await;
        (
            Self {
                conn,
                control: (send, recv),
                _endpoint: endpoint,
            },
            reply,
        )
    }
}

/// Reads one length-prefixed frame (test side; panics on errors).
pub async fn read_frame<T: serde::de::DeserializeOwned>(recv: &mut RecvStream) -> T {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix).await.unwrap();
    let len = parse_length(prefix, 1 << 20).unwrap();
    let mut body = vec![0; len];
    recv.read_exact(&mut body).await.unwrap();
    decode_body(&body, "test frame").unwrap()
}
