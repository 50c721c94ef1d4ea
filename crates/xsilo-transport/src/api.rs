//! The transport trait the runtime talks to, and the types it exchanges.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::sync::oneshot;
use xsilo_wire::payload::Payload;
use xsilo_wire::{
    Consumer, ControlFrame, DataReply, Fingerprint, JobName, ObjectHeader, ObjectId, PartyName,
    Refusal, RefusalCode,
};

use crate::error::TransportError;
use crate::events::EventReceiver;

/// A boxed, sendable future: what the trait's methods return, so that the
/// trait can be used as `Arc<dyn Transport>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a party is reached, and what it is told when we connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddress {
    /// The advertised address other parties dial.
    pub addr: SocketAddr,
    /// Metadata headers sent in the hello to this party (promise C7).
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

/// A push: an object to send, with its ids and its raw payload (already
/// serialised). The one type a push has from the runtime's object table,
/// which makes it, to the transport, which writes it as an
/// [`ObjectHeader`] and the payload. `consumer` and `fingerprint` are as
/// the header carries them; [`OutboundObject::new`] writes them from their
/// types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundObject {
    /// The object.
    pub object: ObjectId,
    /// The consuming call in the destination, 0 for a push for `get`
    /// ([`Consumer::to_wire`]).
    pub consumer: u64,
    /// Call-site fingerprint (promise M8), as [`Fingerprint`]'s `u64`.
    pub fingerprint: u64,
    /// The value's bytes (raw, or a typed array written as its header and
    /// elements). Cloning a `Payload` does not copy it, so a retry resends
    /// the same buffer.
    pub payload: Payload,
}

impl OutboundObject {
    /// The push of `object`'s value `payload`, made at call site
    /// `fingerprint`, to `consumer` in the destination.
    pub fn new(
        object: ObjectId,
        consumer: Consumer,
        fingerprint: Fingerprint,
        payload: Payload,
    ) -> Self {
        Self {
            object,
            consumer: consumer.to_wire(),
            fingerprint: fingerprint.0,
            payload,
        }
    }
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
/// called (promise C3); dropping the handle refuses the object with
/// [`RefusalCode::Unavailable`].
#[derive(Debug)]
pub struct InboundObject {
    /// The authenticated sender.
    pub from: PartyName,
    /// The header as received (already checked against the connection's job
    /// and identity and the size limit).
    pub header: ObjectHeader,
    /// The payload, exactly `header.payload_len` bytes (a numeric array
    /// received into a typed vector, see [`Payload`]).
    pub payload: Payload,
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

/// Which way a transfer goes, seen from the local party.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// We send the object to the peer.
    Sending,
    /// We receive the object from the peer.
    Receiving,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sending => "sending",
            Self::Receiving => "receiving",
        })
    }
}

/// How far the transfer of one large object is ([`TransportEvent::Progress`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransferProgress {
    /// The other end.
    pub peer: PartyName,
    /// The object.
    pub object: ObjectId,
    /// Which way.
    pub direction: Direction,
    /// Payload bytes written (sending: handed to QUIC, which holds at most
    /// its send window unacknowledged) or received so far.
    pub done: u64,
    /// The payload's length.
    pub total: u64,
}

/// Payloads of at least this many bytes report their progress: 32 MiB,
/// about 50 ms at loopback speed; smaller ones end before a report would
/// tell anyone anything.
pub const PROGRESS_MIN: u64 = 32 * 1024 * 1024;

/// Reports of one transfer's progress, by bytes rather than by time so that
/// every transfer of a given size reports at the same points: an eighth of
/// the payload apart, and at least 16 MiB, so at most eight reports per
/// transfer whatever its size and speed (the last when it is complete).
#[derive(Debug, Clone)]
pub struct ProgressSteps {
    total: u64,
    step: u64,
    next: u64,
}

impl ProgressSteps {
    /// The steps of a payload of `total` bytes; `None` under [`PROGRESS_MIN`].
    ///
    /// ```
    /// use xsilo_transport::ProgressSteps;
    /// let mut steps = ProgressSteps::new(256 << 20).unwrap();
    /// assert_eq!(steps.step(), 32 << 20);
    /// assert!(!steps.reached(10 << 20));
    /// assert!(steps.reached(40 << 20));
    /// assert!(!steps.reached(50 << 20));
    /// assert!(steps.reached(256 << 20));
    /// assert!(ProgressSteps::new(1 << 20).is_none());
    /// ```
    pub fn new(total: u64) -> Option<Self> {
        (total >= PROGRESS_MIN).then(|| {
            let step = (total / 8).max(16 * 1024 * 1024);
            Self {
                total,
                step,
                next: step.min(total),
            }
        })
    }

    /// Bytes between two reports.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Whether `done` bytes crossed the next report point (and moves it on).
    pub fn reached(&mut self, done: u64) -> bool {
        if done < self.next {
            return false;
        }
        while self.next <= done && self.next < self.total {
            self.next = (self.next + self.step).min(self.total);
        }
        if done >= self.total {
            // Reported once, at the end.
            self.next = u64::MAX;
        }
        true
    }
}

/// Something that happened on the transport.
#[derive(Debug)]
#[non_exhaustive]
pub enum TransportEvent {
    /// A large transfer advanced ([`ProgressSteps`]; QUIC transport only).
    Progress(TransferProgress),
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

    /// The smoothed round-trip time of the live connection with `peer`, if
    /// there is one and the transport measures it (QUIC: quinn's path
    /// estimate; in memory: none).
    fn rtt(&self, peer: &PartyName) -> Option<std::time::Duration> {
        let _ = peer;
        None
    }

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
