//! # xsilo-transport: how parties reach each other
//!
//! The runtime talks to other parties only through the [`Transport`] trait:
//! send an object and await the receiving runtime's acknowledgement, send a
//! control frame, and take a stream of [`TransportEvent`]s (objects, control
//! frames, peers up and down). Two implementations:
//!
//! * [`QuicTransport`]: quinn with mutual TLS 1.3 (rustls, ring), always on.
//!   A party's identity is its certificate's DNS name: the dialer checks the
//!   server certificate names the party it dials, the acceptor checks the
//!   client certificate names the party its hello claims. A certificate
//!   naming no party of the job (one shared by every party, RayFed's) is
//!   accepted in [`IdentityMode::Shared`], which keeps the CA check and
//!   gives up binding names to certificates. One control stream
//!   per connection, one stream per object, so control frames never wait
//!   behind data. Keep-alive and idle timeout bound how long a dead peer goes
//!   unnoticed ([`TransportConfig::peer_lost_timeout`]); connects and
//!   interrupted sends retry with exponential backoff ([`RetryPolicy`]);
//!   every send is bounded ([`TransportConfig::send_timeout`]).
//! * [`MemoryTransport`]: the same trait inside one process, for simulation
//!   mode and fast tests.
//!
//! The protocol itself (frames, limits, handshake rules) lives in the
//! sans-IO crate `xsilo-wire`; `rfcs/0001-wire-protocol-and-transport.md`
//! describes both.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::collections::BTreeMap;
//! use xsilo_transport::devcert::DevCa;
//! use xsilo_transport::{OutboundObject, PeerAddress, QuicTransport, Transport, TransportConfig, TransportEvent};
//! use xsilo_wire::{ObjectId, PartyName};
//!
//! let ca = DevCa::new()?; // development certificates, in memory
//! let (alice, bob): (PartyName, PartyName) = ("alice".parse()?, "bob".parse()?);
//! let any = "127.0.0.1:0".parse()?;
//! let job = "demo".parse()?;
//! // Bind both first to learn their ports, then give each the address book.
//! let bob_ep = xsilo_transport::QuicEndpoint::bind(bob.clone(), any, &ca.identity(&bob)?, TransportConfig::default())?;
//! let alice_ep = xsilo_transport::QuicEndpoint::bind(alice.clone(), any, &ca.identity(&alice)?, TransportConfig::default())?;
//! let book: BTreeMap<_, PeerAddress> = [
//!     (alice.clone(), alice_ep.local_addr().into()),
//!     (bob.clone(), bob_ep.local_addr().into()),
//! ].into();
//! let at_bob = bob_ep.join(job, book.clone())?;
//! let at_alice = alice_ep.join("demo".parse()?, book)?;
//!
//! let mut inbox = at_bob.take_events().unwrap();
//! tokio::spawn(async move {
//!     while let Some(event) = inbox.recv().await {
//!         if let TransportEvent::Object(obj) = event {
//!             obj.ack.accept(); // the runtime took it: alice's send completes
//!         }
//!     }
//! });
//! let sent = at_alice
//!     .send_object(&bob, OutboundObject { object: ObjectId(1), consumer: 2, fingerprint: 3, payload: "hello".into() })
//!     .await?;
//! assert_eq!(sent.bytes, 5);
//! at_alice.close().await;
//! at_bob.close().await;
//! # Ok(()) }
//! ```

mod api;
mod config;
#[cfg(feature = "dev-certs")]
pub mod devcert;
mod error;
mod events;
mod memory;
mod quic;
mod tls;

pub use api::{
    AckHandle, AddressBook, BoxFuture, Delivery, Direction, InboundObject, OutboundObject,
    PeerAddress, PeerDownReason, ProgressSteps, TransferProgress, Transport, TransportEvent,
    PROGRESS_MIN,
};
pub use config::{
    ConfigError, Congestion, RetryPolicy, TransportConfig, DEFAULT_LINK_BANDWIDTH,
    DEFAULT_LINK_RTT, DEFAULT_MAX_CONCURRENT_STREAMS,
};
pub use error::{SetupError, TransportError};
pub use events::{EventReceiver, CONTROL_CREDITS, PROGRESS_CREDITS};
pub use memory::{MemoryNetwork, MemoryTransport};
pub use quic::setup;
pub use quic::{ProbeError, ProbeReport, Prober, QuicEndpoint, QuicTransport, Transfer};
pub use tls::{
    inspect_pem_files, CertificateProblem, IdentityMode, IdentityReport, TlsIdentity, Validity,
};
