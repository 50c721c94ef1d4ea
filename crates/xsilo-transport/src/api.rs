//! The transport trait the runtime talks to, and the types it exchanges.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use xsilo_wire::{
    ControlFrame, DataReply, JobName, ObjectHeader, ObjectId, PartyName, Refusal, RefusalCode,
};

use crate::error::TransportError;

/// A boxed, sendable future: what the trait's methods return, so that the
/// trait can be used as `Arc<dyn Transport>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Receives the transport's inbound events, in arrival order per stream.
pub type EventReceiver = mpsc::UnboundedReceiver<TransportEvent>;

/// Where a party is reached, and what it is told when we connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddress {
    /// The advertised address other parties dial.
    pub addr: SocketAddr,
    /// Metadata headers sent in the hello to this party (MISSION C7).
    pub metadata: BTreeMap<String, String>,
}

impl From<SocketAddr> for PeerAddress {
    fn from(addr: SocketAddr) -> Self {
        Self {
            addr,
            metadata: BTreeMap::new(),
        }
    }
}

/// The parties of a job and their addresses (the local party included).
pub type AddressBook = BTreeMap<PartyName, PeerAddress>;

/// An object to send: ids and the raw payload (already serialised).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundObject {
    /// The object.
    pub object: ObjectId,
    /// The consuming call in the destination (0 for a push for `get`).
    pub consumer: u64,
    /// Call-site fingerprint (MISSION M8).
    pub fingerprint: u64,
    /// The bytes. Cloning `Bytes` does not copy them, so a retry resends the
    /// same buffer.
    pub payload: Bytes,
}

/// What a successful send reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Attempts it took (1 when the first one succeeded).
    pub attempts: u32,
    /// Payload bytes delivered.
    pub bytes: u64,
}

/// An object that arrived, waiting for the runtime to take it.
///
/// The sender's `send_object` completes only when [`AckHandle::accept`] is
/// called (MISSION C3); dropping the handle refuses the object with
/// [`RefusalCode::Unavailable`].
#[derive(Debug)]
pub struct InboundObject {
    /// The authenticated sender.
    pub from: PartyName,
    /// The header as received (already checked against the connection's job
    /// and identity and the size limit).
    pub header: ObjectHeader,
    /// The payload, exactly `header.payload_len` bytes.
    pub payload: Bytes,
    /// Answers the sender.
    pub ack: AckHandle,
}

/// Answers the sender of an [`InboundObject`]. Exactly one answer is sent.
#[derive(Debug)]
pub struct AckHandle {
    tx: Option<oneshot::Sender<DataReply>>,
}

impl AckHandle {
    pub(crate) fn new() -> (Self, oneshot::Receiver<DataReply>) {
        let (tx, rx) = oneshot::channel();
        (Self { tx: Some(tx) }, rx)
    }

    /// The runtime took the object: the sender's send completes.
    pub fn accept(mut self) {
        self.answer(DataReply::Ack);
    }

    /// The runtime refuses the object: the sender's send fails with this
    /// refusal.
    pub fn refuse(mut self, refusal: Refusal) {
        self.answer(DataReply::Refused(refusal));
    }

    fn answer(&mut self, reply: DataReply) {
        if let Some(tx) = self.tx.take() {
            // The stream may be gone already (peer lost); nobody to tell then.
            let _ = tx.send(reply);
        }
    }
}

impl Drop for AckHandle {
    fn drop(&mut self) {
        self.answer(DataReply::Refused(Refusal::new(
            RefusalCode::Unavailable,
            "the receiving runtime dropped the object without taking it",
        )));
    }
}

/// Why a peer went down.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerDownReason {
    /// The peer said goodbye (intended shutdown).
    Goodbye,
    /// Nothing was heard from the peer within `peer_lost_timeout`.
    TimedOut,
    /// The connection was closed or reset for another reason.
    Lost(String),
    /// The local transport was closed.
    LocalClose,
}

impl fmt::Display for PeerDownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Goodbye => f.write_str("it said goodbye"),
            Self::TimedOut => f.write_str("nothing heard from it within peer_lost_timeout"),
            Self::Lost(why) => write!(f, "connection lost: {why}"),
            Self::LocalClose => f.write_str("the local transport closed"),
        }
    }
}

/// Something that happened on the transport.
#[derive(Debug)]
#[non_exhaustive]
pub enum TransportEvent {
    /// An object arrived; answer it through its [`AckHandle`].
    Object(InboundObject),
    /// A control frame arrived from `from`.
    Control {
        /// The authenticated sender.
        from: PartyName,
        /// The frame.
        frame: ControlFrame,
    },
    /// A first connection with `party` is established (either direction).
    PeerUp {
        /// The peer.
        party: PartyName,
    },
    /// A party of this job dialled us with a configuration we refused
    /// (another job name, another protocol version): the job cannot work
    /// with it. Its certificate proved its identity.
    PeerRefused {
        /// The peer.
        party: PartyName,
        /// What we answered it.
        refusal: Refusal,
    },
    /// The last connection with `party` closed.
    PeerDown {
        /// The peer.
        party: PartyName,
        /// Why.
        reason: PeerDownReason,
    },
}

/// The transport a party's runtime uses: QUIC in production
/// ([`crate::QuicTransport`]), in memory for simulation and fast tests
/// ([`crate::MemoryTransport`]).
///
/// Methods take `&self` and return `'static` futures, so an actor can start a
/// send and await it on its own context. Every returned future completes
/// within the configured bounds.
pub trait Transport: Send + Sync + 'static {
    /// The local party.
    fn party(&self) -> &PartyName;

    /// The job served.
    fn job(&self) -> &JobName;

    /// The other parties of the job.
    fn peers(&self) -> Vec<PartyName>;

    /// Connects to `peer` (with the retry policy) unless already connected.
    fn connect(&self, peer: &PartyName) -> BoxFuture<'static, Result<(), TransportError>>;

    /// Sends an object to `peer`; completes when the receiving runtime
    /// accepted it, or fails with why. Retries over a new connection if the
    /// connection is lost mid-send; bounded by `send_timeout`.
    fn send_object(
        &self,
        peer: &PartyName,
        object: OutboundObject,
    ) -> BoxFuture<'static, Result<Delivery, TransportError>>;

    /// Sends a control frame to `peer` on the control stream, ahead of any
    /// data in flight; completes when the frame is handed to the connection.
    fn send_control(
        &self,
        peer: &PartyName,
        frame: ControlFrame,
    ) -> BoxFuture<'static, Result<(), TransportError>>;

    /// Takes the receiver of inbound events. Only the first call gets it.
    fn take_events(&self) -> Option<EventReceiver>;

    /// Says goodbye to every connected peer and closes. Sends in flight fail
    /// with [`TransportError::Closed`]; drain them first for a clean stop.
    fn close(&self) -> BoxFuture<'static, ()>;

    /// Closes as [`Transport::close`] after the job aborted for `reason`:
    /// peers whose connections to us carry no control frames from us learn
    /// the reason in the close (their `PeerDown` says it). By default, a
    /// plain close.
    fn close_aborted(&self, reason: String) -> BoxFuture<'static, ()> {
        let _ = reason;
        self.close()
    }
}
