//! Every message between the runtime's actors, in one place.
//!
//! * The facade talks to the [`Objects`](crate::actors::objects::Objects)
//!   actor (calls, gets, dropped handles) and to the
//!   [`Coordinator`](crate::actors::coordinator::Coordinator) (shutdown,
//!   abort, barrier, statistics).
//! * `Objects` and each `Link` report up to the coordinator through one
//!   type, [`Report`]; they hold no other actor's address.
//! * The coordinator, the only actor that addresses the others, routes
//!   transport events and reports to `Objects` and the links.
//! * A push has one type from the object table to the transport,
//!   [`OutboundObject`]: `Action::Push`, `Report::Push` and [`SendObject`]
//!   carry it as it is.

use actix::prelude::*;
use tokio::sync::oneshot;
use xsilo_transport::{InboundObject, OutboundObject, TransportError};
use xsilo_wire::payload::Payload;
use xsilo_wire::{ControlFrame, FinishedFrame, ObjectId, PartyName, RemoteErrorFrame};

use crate::call::{Call, ObjRef};
use crate::errors::RuntimeError;
use crate::rules::object_table::Held;
use crate::stats::Counts;

// ----- reports, up to the coordinator --------------------------------------

/// What `Objects` and the links tell the coordinator.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) enum Report {
    /// Objects: send this value to `dest`.
    Push {
        dest: PartyName,
        push: OutboundObject,
    },
    /// Objects: send this error frame to `dest` in place of a value.
    PushError {
        dest: PartyName,
        frame: RemoteErrorFrame,
    },
    /// Objects: a wait depends on `0`.
    NeedPeer(PartyName),
    /// Objects: the drivers diverged.
    Diverged(RuntimeError),
    /// Objects: an error object was made or received (E7).
    ErrorSeen,
    /// Objects: a peer's driver finished, and its position was compared
    /// with ours (any divergence was reported before this).
    PeerFinished(PartyName),
    /// A link: a push of `object` ended (acknowledged, dropped or failed).
    PushDone { object: ObjectId },
    /// A link: a send failed for good.
    SendFailed {
        peer: PartyName,
        what: String,
        error: TransportError,
    },
    /// A link: its peer is gone (shut down or lost); `lost` when it did not
    /// say goodbye.
    PeerGone {
        peer: PartyName,
        reason: String,
        lost: bool,
    },
}

// ----- to Objects -----------------------------------------------------------

/// A call of the driver program, in program order.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Submit(pub(crate) Call);

/// The values of these objects (M4).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Get {
    pub(crate) refs: Vec<ObjRef>,
    pub(crate) reply: oneshot::Sender<Result<Vec<Payload>, RuntimeError>>,
}

/// The driver dropped its last handle on an object.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Release(pub(crate) ObjectId);

/// The driver dropped its last handle on an actor.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ReleaseActor(pub(crate) ObjectId);

/// A value arrived (answer it through its ack handle).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Arrived(pub(crate) InboundObject);

/// A RemoteError frame arrived.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ArrivedError {
    pub(crate) from: PartyName,
    pub(crate) frame: RemoteErrorFrame,
}

/// A peer's driver finished.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PeerFinished {
    pub(crate) from: PartyName,
    pub(crate) frame: FinishedFrame,
}

/// A peer is gone: what we expect from it fails.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PeerGone {
    pub(crate) peer: PartyName,
    pub(crate) reason: String,
}

/// The job failed: every wait fails, queued work is dropped.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct FailAll(pub(crate) RuntimeError);

/// A push ended.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PushDone(pub(crate) ObjectId);

/// Resolves once every push planned for a value still being made has been
/// handed on (the first step of an intended shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Flush(pub(crate) oneshot::Sender<()>);

/// The driver finished: where, and the divergence that comparing with the
/// peers that finished earlier found, if any.
#[derive(Message)]
#[rtype(result = "(FinishedFrame, Option<RuntimeError>)")]
pub(crate) struct Finish;

/// What the object table holds.
#[derive(Message)]
#[rtype(result = "Held")]
pub(crate) struct HeldNow;

// ----- to a link -------------------------------------------------------------

/// Send a value to the link's peer.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SendObject(pub(crate) OutboundObject);

/// Send a control frame to the link's peer. `object` is set for a
/// RemoteError in place of a value (its end is reported as a push's).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SendControl {
    pub(crate) frame: ControlFrame,
    pub(crate) object: Option<ObjectId>,
}

/// The transport reports the peer up.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Up;

/// The transport reports the peer down.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Down(pub(crate) xsilo_transport::PeerDownReason);

/// A wait depends on the peer: connect if never connected; report it gone
/// if it is.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Probe;

/// An object from the peer was received (statistics).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Received(pub(crate) u64);

/// Resolves when nothing is in flight to the peer.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Drain(pub(crate) oneshot::Sender<()>);

/// Resolves when the peer is known to be up: our dial succeeded or it
/// connected to us (C6).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WaitUp(pub(crate) oneshot::Sender<Result<(), RuntimeError>>);

/// What was sent to and received from the peer.
#[derive(Message)]
#[rtype(result = "(Counts, Counts)")]
pub(crate) struct LinkStats;

// ----- to the coordinator ------------------------------------------------------

/// Intended shutdown; the answer comes on the channel.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Shutdown(pub(crate) oneshot::Sender<Result<(), RuntimeError>>);

/// Abort the job from this party.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AbortJob(pub(crate) String);

/// SIGINT or SIGTERM arrived (E9).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Signal(pub(crate) &'static str);

/// Wait, at most `bound`, until every peer is up.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Barrier {
    pub(crate) bound: std::time::Duration,
    pub(crate) reply: oneshot::Sender<Result<(), RuntimeError>>,
}

/// Statistics of the party.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct GatherStats(pub(crate) oneshot::Sender<crate::stats::Stats>);

/// How many times the shutdown sequence ran.
#[derive(Message)]
#[rtype(result = "u32")]
pub(crate) struct ShutdownsRun;
