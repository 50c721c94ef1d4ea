//! The QUIC transport: quinn with mutual TLS, party names bound to
//! certificates (or, with a shared certificate, only the CA checked:
//! [`crate::IdentityMode`]).
//!
//! One [`QuicEndpoint`] (one UDP socket, one certificate) can serve several
//! jobs; [`QuicEndpoint::join`] returns the [`QuicTransport`] of one job.
//! Each party dials each peer it sends to; the dialled connection carries the
//! dialer's control frames on one control stream and one bidirectional data
//! stream per object. See `rfcs/0001-wire-protocol-and-transport.md`.

mod budget;
mod errors;
mod inbound;
mod outbound;
mod probe;
pub mod setup;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use tokio_util::sync::CancellationToken;
use xsilo_wire::{ControlFrame, JobName, PartyName};

use crate::api::{
    AddressBook, BoxFuture, Delivery, OutboundObject, PeerDownReason, Transport, TransportEvent,
};
use crate::config::TransportConfig;
use crate::error::{SetupError, TransportError};
use crate::events::EventReceiver;
use crate::tls::{IdentityMode, TlsIdentity};

pub use probe::{ProbeError, ProbeReport, Prober, Transfer};

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of our short critical sections cannot leave
    // the data half-updated (each is a single insert/remove/increment), so a
    // poisoned lock is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The leaf certificate the peer of `conn` presented in the handshake.
pub(crate) fn leaf_certificate(
    conn: &quinn::Connection,
) -> Option<rustls::pki_types::CertificateDer<'static>> {
    let identity = conn.peer_identity()?;
    let chain = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    chain.first().cloned()
}

/// State shared by the endpoint's accept loop and its jobs.
struct EndpointShared {
    party: PartyName,
    /// Whether the endpoint's certificate names its party.
    mode: IdentityMode,
    /// The endpoint's own leaf certificate (checked against each job's
    /// parties when it joins).
    leaf: rustls::pki_types::CertificateDer<'static>,
    endpoint: quinn::Endpoint,
    config: TransportConfig,
    /// Bytes of inbound objects not yet taken, all jobs and peers together.
    inbound: budget::Budget,
    jobs: Mutex<HashMap<JobName, Weak<JobShared>>>,
}

impl Drop for EndpointShared {
    fn drop(&mut self) {
        self.endpoint
            .close(errors::CLOSE_GOODBYE.into(), b"endpoint dropped");
    }
}

/// A bound QUIC endpoint of one party: one UDP socket, one certificate, any
/// number of jobs.
#[derive(Clone)]
pub struct QuicEndpoint {
    shared: Arc<EndpointShared>,
}

impl std::fmt::Debug for QuicEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicEndpoint")
            .field("party", &self.shared.party)
            .field("local_addr", &self.local_addr())
            .finish()
    }
}

impl QuicEndpoint {
    /// Binds `listen` for `party` with its TLS material and starts accepting.
    /// A certificate that names `party` binds it ([`IdentityMode::Bound`]);
    /// one that does not is a shared certificate ([`IdentityMode::Shared`]),
    /// which [`QuicEndpoint::join`] refuses for a job if it names another
    /// party of that job. Needs a tokio runtime in scope.
    pub fn bind(
        party: PartyName,
        listen: SocketAddr,
        tls: &TlsIdentity,
        config: TransportConfig,
    ) -> Result<Self, SetupError> {
        let endpoint = setup::quinn_endpoint(&party, listen, tls, &config)?;
        let shared = Arc::new(EndpointShared {
            mode: tls.mode(&party),
            leaf: tls.leaf().clone(),
            party,
            endpoint: endpoint.clone(),
            inbound: budget::Budget::new(config.inbound_limits().0),
            config,
            jobs: Mutex::new(HashMap::new()),
        });
        tokio::spawn(inbound::accept_loop(endpoint, Arc::downgrade(&shared)));
        Ok(Self { shared })
    }

    /// The address the socket is bound to (with the real port if 0 was
    /// asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared
            .endpoint
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The local party.
    pub fn party(&self) -> &PartyName {
        &self.shared.party
    }

    /// Whether the endpoint's certificate binds its party's name.
    pub fn mode(&self) -> IdentityMode {
        self.shared.mode
    }

    /// Bytes of inbound objects admitted and not yet taken by a runtime, all
    /// jobs and peers together: at most
    /// [`TransportConfig::inbound_limits`]'s first value.
    pub fn inbound_held(&self) -> u64 {
        self.shared.inbound.held()
    }

    /// Starts serving `job` with its address book (which must contain the
    /// local party). Hellos and data for jobs not joined are refused.
    ///
    /// Fails if the endpoint's certificate does not name the local party
    /// but names another party of the job. With a certificate that names no
    /// party of the job ([`IdentityMode::Shared`]) it logs one warning:
    /// party names are then not bound to certificates.
    pub fn join(&self, job: JobName, book: AddressBook) -> Result<QuicTransport, SetupError> {
        let party = self.shared.party.clone();
        if !book.contains_key(&party) {
            return Err(SetupError::AddressBook(format!(
                "the address book of job '{job}' does not contain the local party '{party}'"
            )));
        }
        let mode = crate::tls::check_mode_in_job(&self.shared.leaf, &party, book.keys())?;
        let mut jobs = lock(&self.shared.jobs);
        if jobs.get(&job).and_then(Weak::upgrade).is_some() {
            return Err(SetupError::JobTaken(job));
        }
        let (tx, rx) = crate::events::channel();
        let peers = book
            .keys()
            .filter(|p| **p != party)
            .map(|p| {
                (
                    p.clone(),
                    PeerSlot {
                        outbound: Default::default(),
                        live: Default::default(),
                        inbound: budget::Budget::new(self.shared.config.inbound_limits().1),
                        control: crate::events::control_credits(),
                    },
                )
            })
            .collect();
        let shared = Arc::new(JobShared {
            mode: self.shared.mode,
            inbound: self.shared.inbound.clone(),
            job: job.clone(),
            party,
            book,
            endpoint: self.shared.endpoint.clone(),
            config: self.shared.config.clone(),
            events: tx,
            events_rx: Mutex::new(Some(rx)),
            peers,
            closed: CancellationToken::new(),
        });
        if mode == IdentityMode::Shared {
            let names = crate::tls::presented_names(&self.shared.leaf);
            tracing::warn!(
                %job,
                party = %shared.party,
                "party '{}' uses a shared certificate: it names no party of job '{job}' \
                 (it names {}), so party identities are not bound to certificates; any holder \
                 of a certificate the CA signed (the shared one included) can claim any party \
                 name of the job. Mutual TLS and the CA check stay on.",
                shared.party,
                if names.is_empty() { "no DNS name".to_owned() } else { names.join(", ") }
            );
        }
        jobs.insert(job, Arc::downgrade(&shared));
        Ok(QuicTransport {
            job: shared,
            endpoint: self.clone(),
            owns_endpoint: false,
        })
    }

    /// Closes the endpoint: every connection of every job ends.
    ///
    /// Waits for the connections to drain for at most 200 ms: long enough
    /// for the close packets to leave, which is all the peers need (they
    /// already had our goodbye on the control stream). Draining itself
    /// lasts three probe timeouts, and a handshake that never heard from
    /// its peer (one of the staggered first flights that lost its race)
    /// drains for about 3 s at QUIC's initial round-trip estimate; waiting
    /// for that would add a second to every shutdown after a start-up race.
    pub async fn close(&self) {
        self.shared
            .endpoint
            .close(errors::CLOSE_GOODBYE.into(), b"goodbye");
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            self.shared.endpoint.wait_idle(),
        )
        .await;
    }
}

/// Live connections a peer may hold to us in one job. A party needs one;
/// a few more cover re-dials while an old connection is not yet known dead.
pub(crate) const MAX_INBOUND_PER_PEER: usize = 8;

/// Per-peer connection state within a job.
struct PeerSlot {
    /// Bytes of this peer's inbound objects not yet taken.
    inbound: budget::Budget,
    /// This peer's control frames decoded and not yet taken (events.rs).
    control: Arc<tokio::sync::Semaphore>,
    /// The connection we dialled, with its control stream. The async mutex
    /// makes dialling single-flight: concurrent senders wait for one dial.
    outbound: tokio::sync::Mutex<Option<outbound::Outbound>>,
    live: Mutex<Liveness>,
}

#[derive(Default)]
struct Liveness {
    connections: u32,
    said_goodbye: bool,
    /// Why we closed a connection of this peer ourselves (protocol breach).
    closed_because: Option<String>,
    inbound: Vec<quinn::Connection>,
}

/// One job's state, shared by its transport handle and its tasks.
struct JobShared {
    /// The local party's identity mode (the endpoint's).
    mode: IdentityMode,
    /// The endpoint's inbound budget, shared by its jobs.
    inbound: budget::Budget,
    job: JobName,
    party: PartyName,
    book: AddressBook,
    endpoint: quinn::Endpoint,
    config: TransportConfig,
    events: crate::events::EventSender,
    events_rx: Mutex<Option<EventReceiver>>,
    peers: HashMap<PartyName, PeerSlot>,
    closed: CancellationToken,
}

impl JobShared {
    fn slot(&self, peer: &PartyName) -> Result<&PeerSlot, TransportError> {
        self.peers
            .get(peer)
            .ok_or_else(|| TransportError::UnknownParty {
                peer: peer.clone(),
                job: self.job.clone(),
                known: self
                    .peers
                    .keys()
                    .map(PartyName::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    fn emit(&self, event: TransportEvent) {
        // Fails only when the receiver was dropped; the event (and an
        // object's AckHandle, which then refuses) is dropped with it. Events
        // not yet taken wait in the channel until they are; what bounds
        // each kind is in events.rs.
        let _ = self.events.send(event);
    }

    /// Emits a control frame of `peer` once one of its credits is free:
    /// until then its control stream is not read (events.rs).
    async fn emit_control(&self, peer: &PartyName, frame: ControlFrame) {
        let Some(slot) = self.peers.get(peer) else {
            return;
        };
        let event = TransportEvent::Control {
            from: peer.clone(),
            frame,
        };
        tokio::select! {
            _ = self.events.send_control(&slot.control, event) => {}
            () = self.closed.cancelled() => {}
        }
    }

    /// Emits a progress report, or drops it if the runtime lags.
    fn emit_progress(&self, progress: crate::api::TransferProgress) {
        self.events
            .send_progress(TransportEvent::Progress(progress));
    }

    /// Records an inbound connection from `peer` unless it already has
    /// [`MAX_INBOUND_PER_PEER`] live ones (RFC 0001, "Inbound memory").
    fn try_add_inbound(&self, peer: &PartyName, conn: &quinn::Connection) -> bool {
        let Some(slot) = self.peers.get(peer) else {
            return false;
        };
        let mut live = lock(&slot.live);
        live.inbound.retain(|c| c.close_reason().is_none());
        if live.inbound.len() >= MAX_INBOUND_PER_PEER {
            return false;
        }
        live.inbound.push(conn.clone());
        true
    }

    fn connection_up(&self, peer: &PartyName) {
        let Some(slot) = self.peers.get(peer) else {
            return;
        };
        let first = {
            let mut live = lock(&slot.live);
            live.connections += 1;
            if live.connections == 1 {
                live.said_goodbye = false;
                live.closed_because = None;
            }
            live.connections == 1
        };
        if first {
            tracing::debug!(job = %self.job, party = %self.party, peer = %peer, "peer up");
            self.emit(TransportEvent::PeerUp {
                party: peer.clone(),
            });
        }
    }

    fn connection_down(&self, peer: &PartyName, error: &quinn::ConnectionError) {
        let Some(slot) = self.peers.get(peer) else {
            return;
        };
        let reason = {
            let mut live = lock(&slot.live);
            live.connections = live.connections.saturating_sub(1);
            if live.connections > 0 {
                return;
            }
            let code_is_goodbye = matches!(error, quinn::ConnectionError::ApplicationClosed(c)
                if c.error_code.into_inner() == u64::from(errors::CLOSE_GOODBYE));
            if let Some(why) = live.closed_because.take() {
                PeerDownReason::Lost(why)
            } else if self.closed.is_cancelled()
                || matches!(error, quinn::ConnectionError::LocallyClosed)
            {
                PeerDownReason::LocalClose
            } else if live.said_goodbye || code_is_goodbye {
                PeerDownReason::Goodbye
            } else if matches!(error, quinn::ConnectionError::TimedOut) {
                PeerDownReason::TimedOut
            } else {
                PeerDownReason::Lost(errors::connection_error(peer, error).to_string())
            }
        };
        tracing::info!(job = %self.job, party = %self.party, peer = %peer, %reason, "peer down");
        self.emit(TransportEvent::PeerDown {
            party: peer.clone(),
            reason,
        });
    }

    /// Closes `conn` because `peer` broke the protocol; the peer-down event
    /// then carries `reason`.
    fn close_for_breach(&self, peer: &PartyName, conn: &quinn::Connection, reason: String) {
        if let Some(slot) = self.peers.get(peer) {
            lock(&slot.live).closed_because =
                Some(format!("party '{peer}' broke the protocol: {reason}"));
        }
        conn.close(errors::CLOSE_PROTOCOL.into(), reason.as_bytes());
    }

    fn said_goodbye(&self, peer: &PartyName) {
        if let Some(slot) = self.peers.get(peer) {
            lock(&slot.live).said_goodbye = true;
        }
    }
}

/// The QUIC transport of one job. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct QuicTransport {
    job: Arc<JobShared>,
    endpoint: QuicEndpoint,
    /// Whether `close` also closes the endpoint (it was bound for this job).
    owns_endpoint: bool,
}

impl std::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicTransport")
            .field("job", &self.job.job)
            .field("party", &self.job.party)
            .field("local_addr", &self.endpoint.local_addr())
            .finish()
    }
}

impl QuicTransport {
    /// Binds an endpoint of its own on `listen` and joins `job`: the usual
    /// set-up of one party in one job.
    ///
    /// `listen` may differ from the party's advertised address in `book`
    /// (promise C7), for example `0.0.0.0:11011` behind a NAT.
    pub fn bind(
        job: JobName,
        party: PartyName,
        listen: SocketAddr,
        book: AddressBook,
        tls: &TlsIdentity,
        config: TransportConfig,
    ) -> Result<Self, SetupError> {
        let mut transport = QuicEndpoint::bind(party, listen, tls, config)?.join(job, book)?;
        transport.owns_endpoint = true;
        Ok(transport)
    }

    /// The endpoint this transport runs on.
    pub fn endpoint(&self) -> &QuicEndpoint {
        &self.endpoint
    }

    /// The address the endpoint listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }
}

impl Transport for QuicTransport {
    fn party(&self) -> &PartyName {
        &self.job.party
    }

    fn job(&self) -> &JobName {
        &self.job.job
    }

    fn peers(&self) -> Vec<PartyName> {
        self.job.peers.keys().cloned().collect()
    }

    fn connect(&self, peer: &PartyName) -> BoxFuture<'static, Result<(), TransportError>> {
        let job = self.job.clone();
        let peer = peer.clone();
        Box::pin(async move {
            let progress = outbound::Progress::new();
            outbound::with_retries(&job, &peer, &progress, "connect", |_| async { Ok(()) })
                .await
                .map(|_| ())
        })
    }

    fn send_object(
        &self,
        peer: &PartyName,
        object: OutboundObject,
    ) -> BoxFuture<'static, Result<Delivery, TransportError>> {
        let job = self.job.clone();
        let peer = peer.clone();
        Box::pin(async move { outbound::send_object(&job, &peer, object).await })
    }

    fn send_control(
        &self,
        peer: &PartyName,
        frame: ControlFrame,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        let job = self.job.clone();
        let peer = peer.clone();
        Box::pin(async move { outbound::send_control(&job, &peer, frame).await })
    }

    fn rtt(&self, peer: &PartyName) -> Option<std::time::Duration> {
        let slot = self.job.peers.get(peer)?;
        // Our dialled connection if it is not being dialled right now, else
        // the peer's.
        if let Ok(out) = slot.outbound.try_lock() {
            if let Some(out) = out.as_ref().filter(|o| o.conn.close_reason().is_none()) {
                return Some(out.conn.rtt());
            }
        }
        lock(&slot.live)
            .inbound
            .iter()
            .find(|c| c.close_reason().is_none())
            .map(quinn::Connection::rtt)
    }

    fn take_events(&self) -> Option<EventReceiver> {
        lock(&self.job.events_rx).take()
    }

    fn close(&self) -> BoxFuture<'static, ()> {
        self.close_with(None)
    }

    fn close_aborted(&self, reason: String) -> BoxFuture<'static, ()> {
        self.close_with(Some(reason))
    }
}

impl QuicTransport {
    fn close_with(&self, aborted: Option<String>) -> BoxFuture<'static, ()> {
        let job = self.job.clone();
        let endpoint = self.endpoint.clone();
        let owns_endpoint = self.owns_endpoint;
        Box::pin(async move {
            outbound::close_job(&job, aborted.as_deref()).await;
            lock(&endpoint.shared.jobs).remove(&job.job);
            if owns_endpoint {
                endpoint.close().await;
            }
        })
    }
}
