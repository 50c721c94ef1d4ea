//! Errors of the runtime, as users see them.

use std::fmt;

use thiserror::Error;
use xsilo_transport::TransportError;
use xsilo_wire::{ObjectId, PartyName};

/// Why a task, an actor constructor or an actor method failed where it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    /// The kind: the error's type name, or `panic`.
    pub kind: String,
    /// The message (`Display` of the error, or the panic payload).
    pub message: String,
    /// The cause chain, outermost first (`Error::source` links).
    pub causes: Vec<String>,
}

impl TaskError {
    /// Captures an error value, its type name and its source chain.
    pub fn from_error<E: std::error::Error + 'static>(error: &E) -> Self {
        let mut causes = Vec::new();
        let mut source = error.source();
        while let Some(s) = source {
            causes.push(s.to_string());
            source = s.source();
        }
        Self {
            kind: short_type_name::<E>(),
            message: error.to_string(),
            causes,
        }
    }

    /// From a caught panic's payload.
    pub fn from_panic(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with a non-string payload".to_owned());
        Self {
            kind: "panic".into(),
            message,
            causes: Vec::new(),
        }
    }
}

fn short_type_name<T>() -> String {
    let full = std::any::type_name::<T>();
    // Strip module paths outside generics: a::b::Err<c::D> -> Err<c::D>.
    let head = full.split('<').next().unwrap_or(full);
    let short = head.rsplit("::").next().unwrap_or(head);
    format!("{short}{}", &full[head.len()..])
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        for cause in &self.causes {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

/// An error of a federated computation.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A task or actor method failed in this party (MISSION E1).
    #[error("object {object} failed in party '{party}': {error}")]
    Task {
        /// The party where it ran (this one).
        party: PartyName,
        /// The object it was to produce.
        object: ObjectId,
        /// The full local error.
        error: TaskError,
    },
    /// An object this party needed failed in another party (MISSION E2).
    /// Only the kind and origin cross the silo boundary unless the origin
    /// enabled `expose_error_trace` (MISSION E4).
    #[error("{}", remote_text(.origin, .object, .kind, .message.as_deref(), .causes))]
    Remote {
        /// The party where the failure began.
        origin: PartyName,
        /// The object that failed there (the failure may have reached us
        /// through objects that depend on it).
        object: ObjectId,
        /// The error's kind.
        kind: String,
        /// Its message, if the origin exposes it.
        message: Option<String>,
        /// Its causes, if the origin exposes them.
        causes: Vec<String>,
    },
    /// A party this one waits on was lost or shut down before sending.
    #[error("party '{party}' is gone ({reason}); object {object} from it will never arrive")]
    PeerLost {
        /// The party.
        party: PartyName,
        /// The object waited for.
        object: ObjectId,
        /// Why it is gone.
        reason: String,
    },
    /// The drivers of two parties diverged (MISSION M8).
    #[error(
        "driver divergence: object {object} from party '{from}' was made at a different call site \
         there (fingerprint {theirs:#018x}) than here in party '{here}' ({ours:#018x}); every \
         party must run the same driver code in the same order"
    )]
    Diverged {
        /// The party that received the object.
        here: PartyName,
        /// The party that sent it.
        from: PartyName,
        /// The object.
        object: ObjectId,
        /// Our call-site fingerprint.
        ours: u64,
        /// Theirs.
        theirs: u64,
    },
    /// The job was aborted (by this party or another).
    #[error("the job was aborted by party '{by}': {reason}")]
    Aborted {
        /// The party that aborted.
        by: PartyName,
        /// Why.
        reason: String,
    },
    /// A value could not be decoded as the type the driver expects.
    #[error("object {object} from party '{from}' cannot be decoded as {expected}: {reason}")]
    Decode {
        /// The object.
        object: ObjectId,
        /// Its owner.
        from: PartyName,
        /// The expected type.
        expected: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// A value could not be encoded.
    #[error("object {object} cannot be encoded: {reason}")]
    Encode {
        /// The object.
        object: ObjectId,
        /// The encoder's message.
        reason: String,
    },
    /// A call named a party that is not in the job.
    #[error("party '{party}' is not a party of this job (known: {known})")]
    UnknownParty {
        /// The name used.
        party: String,
        /// The parties of the job.
        known: String,
    },
    /// An object this party should own was never made here: the handle
    /// comes from another job or another `Fed`.
    #[error("object {object} was never made in party '{party}': the handle belongs to another job or Fed")]
    UnknownObject {
        /// The object.
        object: ObjectId,
        /// This party.
        party: PartyName,
    },
    /// A call on an actor that was killed or whose constructor failed.
    #[error("actor {actor} of party '{party}' is not available: {reason}")]
    ActorUnavailable {
        /// The actor's id.
        actor: ObjectId,
        /// Its owner.
        party: PartyName,
        /// Why.
        reason: String,
    },
    /// Sending failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The runtime has shut down; no more calls.
    #[error("the runtime of party '{party}' has shut down")]
    ShutDown {
        /// This party.
        party: PartyName,
    },
    /// An actor of the runtime stopped unexpectedly (a bug).
    #[error("the runtime's {0} actor is gone")]
    ActorGone(&'static str),
    /// The runtime was started outside an actix System.
    #[error("xsilo must run inside an actix System: wrap the driver in xsilo::block_on")]
    NoSystem,
    /// A bounded wait passed.
    #[error("{what} did not finish within {after:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// The bound.
        after: std::time::Duration,
    },
}

fn remote_text(
    origin: &PartyName,
    object: &ObjectId,
    kind: &str,
    message: Option<&str>,
    causes: &[String],
) -> String {
    let mut text = format!("RemoteError: object {object} failed in party '{origin}' ({kind})");
    match message {
        Some(m) => {
            text.push_str(": ");
            text.push_str(m);
            for c in causes {
                text.push_str(": ");
                text.push_str(c);
            }
        }
        None => text.push_str("; details hidden (the origin sets expose_error_trace = false)"),
    }
    text
}
