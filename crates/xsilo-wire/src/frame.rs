//! The frames of the protocol.
//!
//! All frames are serde types encoded as msgpack (rmp-serde, structs as maps
//! so that a field added later is ignored by an older peer of the same
//! protocol version). Payload bytes never appear in a frame: they follow the
//! [`ObjectHeader`] raw on the data stream.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::names::{JobName, PartyName};

/// Identifies an object (a `FedObject` of the runtime) within a job: the
/// sequence number that every party's driver assigns in the same order
/// (promise M1).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ObjectId(pub u64);

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Whom a pushed object is for in the receiving party: what
/// [`ObjectHeader::consumer`] means. The header carries it as a `u64`
/// ([`Consumer::to_wire`], [`Consumer::from_wire`]): 0 for a `get`, the
/// call's id otherwise.
///
/// ```
/// use xsilo_wire::{Consumer, ObjectId};
/// assert_eq!(Consumer::from_wire(0), Consumer::Get);
/// assert_eq!(Consumer::from_wire(5), Consumer::Call(ObjectId(5)));
/// assert_eq!(Consumer::Call(ObjectId(5)).to_wire(), 5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Consumer {
    /// A `get`, or a failure announced to every party: the owner sends it
    /// to every party that has not had it (promises M4, E3).
    Get,
    /// A call pinned to the receiving party, named by its id in every
    /// party's driver (RayFed's downstream sequence id): its first output,
    /// or the actor it creates, calls or kills. A call with neither is
    /// `Call(ObjectId(0))`, which the header cannot tell from a `get`.
    Call(ObjectId),
}

impl Consumer {
    /// What [`ObjectHeader::consumer`] carries: 0 for a `get`, the call's
    /// id otherwise.
    pub const fn to_wire(self) -> u64 {
        match self {
            Self::Get => 0,
            Self::Call(id) => id.0,
        }
    }

    /// The consumer an [`ObjectHeader::consumer`] names.
    pub const fn from_wire(consumer: u64) -> Self {
        match consumer {
            0 => Self::Get,
            id => Self::Call(ObjectId(id)),
        }
    }

    /// Whether a call consumes the object (not a `get`), as the header
    /// tells it.
    pub const fn is_call(self) -> bool {
        self.to_wire() != 0
    }
}

impl fmt::Display for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Get => f.write_str("get"),
            Self::Call(id) => write!(f, "call {id}"),
        }
    }
}

/// First frame on the control stream, sent by the dialer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the dialer speaks ([`crate::PROTOCOL_VERSION`]).
    pub version: u16,
    /// The job this connection serves.
    pub job: JobName,
    /// The party the dialer claims to be. The acceptor checks it against the
    /// dialer's client certificate.
    pub party: PartyName,
    /// The party the dialer means to reach. The acceptor checks that it is
    /// itself (the TLS layer has already checked the server certificate).
    pub to: PartyName,
    /// Free-form metadata headers (RayFed's per-party metadata), at most
    /// [`crate::limits::MAX_METADATA_ENTRIES`] entries.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Set when the dialer only asks for the acceptor's verdict (`xsilo
    /// check`): the acceptor applies the same checks and answers with the
    /// same [`HelloReply`], then closes the connection without it ever
    /// reaching a job (no peer-up, no refusal event, no data). Absent in an
    /// ordinary hello.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
}

/// What a probing dialer asks for besides the verdict (see [`Hello::probe`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Bytes the dialer sends on one data stream after an accepted verdict,
    /// to measure throughput; 0 for none. The acceptor reads and discards
    /// them, then answers [`DataReply::Ack`]; it refuses a transfer over
    /// [`crate::limits::MAX_PROBE_TRANSFER`] or its maximum message size
    /// with [`RefusalCode::TooLarge`], and one whose length differs from
    /// this with [`RefusalCode::Malformed`].
    #[serde(default)]
    pub transfer: u64,
}

/// The acceptor's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// The connection is accepted for the job.
    Accepted {
        /// The protocol version the acceptor speaks.
        version: u16,
        /// The acceptor's party name (equal to the hello's `to`).
        party: PartyName,
    },
    /// The connection is refused; the acceptor closes it after this frame.
    Refused(Refusal),
}

/// A frame on the control stream after the hello exchange.
///
/// Control frames are small and travel on their own stream, so they are never
/// queued behind an object transfer (promise C1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlFrame {
    /// Application-level liveness signal with a sequence number.
    Heartbeat {
        /// Increases by one per heartbeat.
        seq: u64,
    },
    /// An object that a consumer waits for failed at its origin (promise E2).
    RemoteError(RemoteErrorFrame),
    /// The sender shuts down unintentionally (promise E6).
    Abort {
        /// Why, in words.
        reason: String,
    },
    /// The sender shuts down intentionally; it will send nothing more.
    Goodbye,
    /// The sender's driver program has finished (intended shutdown): where
    /// it ended, so that the receiver can tell whether its own driver made
    /// the same calls (promise M8). Sent once, before the goodbye.
    Finished(FinishedFrame),
}

/// The body of a [`ControlFrame::Finished`]: the position at which the
/// sender's driver program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedFrame {
    /// How many object ids the driver assigned (the last id).
    pub objects: u64,
    /// A running digest of every object's (id, call-site fingerprint,
    /// owner), in program order; the owner is left out for a call on a
    /// party unknown to the job, which every party makes as its own
    /// ([`PositionDigest::value`](crate::PositionDigest::value)).
    pub digest: u64,
    /// No object of the job failed and no error was seen by the sender: a
    /// driver that ran into an error may legitimately stop early, so only
    /// clean positions are compared.
    pub clean: bool,
}

/// The body of a [`ControlFrame::RemoteError`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteErrorFrame {
    /// The party where the failure began (not the forwarding party).
    pub origin: PartyName,
    /// The object this error stands in for: the one the receiver was sent
    /// instead of its value.
    pub object: ObjectId,
    /// The object whose computation failed at the origin; differs from
    /// `object` when the failure cascaded through dependent calls.
    pub origin_object: ObjectId,
    /// The kind of error (the error's type name, or `panic`); always sent.
    pub kind: String,
    /// The error message; sent only when the origin enables
    /// `expose_error_trace` (promise E4).
    #[serde(default)]
    pub message: Option<String>,
    /// The cause chain, outermost first; sent only with `expose_error_trace`.
    #[serde(default)]
    pub causes: Vec<String>,
    /// The call-site fingerprint of `object` in the sender's driver (a
    /// [`Fingerprint`](crate::Fingerprint)'s `u64`), so that a failure is
    /// checked for divergence like a value (promise M8).
    #[serde(default)]
    pub fingerprint: Option<u64>,
    /// The name of the call that failed at the origin, if it had one
    /// (carried for error messages).
    #[serde(default)]
    pub name: Option<String>,
}

/// The header that opens a data stream. The payload's raw bytes follow it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectHeader {
    /// The job; must equal the connection's job.
    pub job: JobName,
    /// The sending party; must equal the connection's authenticated party.
    pub src: PartyName,
    /// The object carried.
    pub object: ObjectId,
    /// The call that consumes it in the receiving party (RayFed's downstream
    /// sequence id); 0 when the object is pushed for a `get`: a
    /// [`Consumer`] as [`Consumer::to_wire`] writes it.
    pub consumer: u64,
    /// Call-site fingerprint of the object, for divergence detection (M8):
    /// a [`Fingerprint`](crate::Fingerprint)'s `u64`.
    pub fingerprint: u64,
    /// Exact number of payload bytes that follow the header.
    pub payload_len: u64,
    /// This is a second or later attempt of the same send (the first may
    /// have been taken while its acknowledgement was lost): the receiver may
    /// already have had, used and freed the object, and then discards it.
    #[serde(default)]
    pub resend: bool,
}

/// The receiver's answer on a data stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataReply {
    /// The receiving runtime took the object (promise C3).
    Ack,
    /// The object was refused.
    Refused(Refusal),
}

/// Why something was refused, with a reason a human can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Machine-readable reason.
    pub code: RefusalCode,
    /// Human-readable explanation, naming the job, party or limit at fault.
    pub message: String,
}

impl Refusal {
    /// Builds a refusal.
    pub fn new(code: RefusalCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// Machine-readable refusal reasons.
///
/// A refusal is permanent: retrying the same thing gets the same answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RefusalCode {
    /// The peer does not serve the job named (RayFed answers HTTP 417).
    UnknownJob,
    /// A data header names another job than the connection's.
    WrongJob,
    /// The party is not in the job's address book.
    UnknownParty,
    /// The claimed party is not the one the certificate names.
    IdentityMismatch,
    /// The protocol versions differ.
    VersionMismatch,
    /// The payload is over the receiver's maximum message size.
    TooLarge,
    /// A frame could not be decoded, or the payload length was wrong.
    Malformed,
    /// The receiving runtime dropped the object without taking it.
    Unavailable,
    /// The receiving party is shutting down intentionally and takes nothing
    /// more; it needs nothing more either.
    ShuttingDown,
}

impl fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnknownJob => "unknown job",
            Self::WrongJob => "wrong job",
            Self::UnknownParty => "unknown party",
            Self::IdentityMismatch => "identity mismatch",
            Self::VersionMismatch => "protocol version mismatch",
            Self::TooLarge => "too large",
            Self::Malformed => "malformed",
            Self::Unavailable => "unavailable",
            Self::ShuttingDown => "shutting down",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_is_written_as_the_header_has_always_carried_it() {
        assert_eq!(Consumer::Get.to_wire(), 0);
        assert_eq!(Consumer::from_wire(0), Consumer::Get);
        for id in [1, 2, 1_000_000, u64::MAX] {
            let call = Consumer::Call(ObjectId(id));
            assert_eq!(call.to_wire(), id);
            assert_eq!(Consumer::from_wire(id), call);
            assert!(call.is_call());
        }
        assert!(!Consumer::Get.is_call());
        // A call that makes nothing reads back as a get: the header has no
        // other value for it.
        assert_eq!(
            Consumer::from_wire(Consumer::Call(ObjectId(0)).to_wire()),
            Consumer::Get
        );
    }
}
