//! Errors of the transport. Each names the peer and what to change.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;
use xsilo_wire::{JobName, ObjectId, PartyName, Refusal, RefusalCode, WireError};

use crate::config::ConfigError;

/// A transport operation failed.
#[derive(Debug, Error, Clone)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer refused (permanently: retrying gives the same answer).
    #[error("party '{peer}' refused: {refusal}")]
    Refused {
        /// Who refused.
        peer: PartyName,
        /// Its reason.
        refusal: Refusal,
    },
    /// The TLS handshake with the peer failed: a certificate was rejected by
    /// one side or the other (wrong CA, missing or expired certificate, a
    /// certificate that does not name the party).
    #[error("TLS handshake with party '{peer}' failed: {reason}")]
    Tls {
        /// The peer.
        peer: PartyName,
        /// What TLS said, and which side rejected what.
        reason: String,
    },
    /// The object is larger than the maximum message size; nothing was sent.
    #[error(
        "object {object} for party '{peer}' has {size} bytes, over the maximum message size of \
         {limit} bytes (setting max_message_size); nothing was sent"
    )]
    TooLarge {
        /// Destination.
        peer: PartyName,
        /// The object.
        object: ObjectId,
        /// Its payload size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The party is not in this job's address book.
    #[error("party '{peer}' is not a party of job '{job}' (known: {known})")]
    UnknownParty {
        /// The party asked for.
        peer: PartyName,
        /// The job.
        job: JobName,
        /// The parties of the job, comma-separated.
        known: String,
    },
    /// No connection could be made within the retry policy.
    #[error("party '{peer}' at {addr} is unreachable after {attempts} attempt(s): {last}")]
    Unreachable {
        /// The peer.
        peer: PartyName,
        /// The address dialled.
        addr: String,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: String,
    },
    /// A send made no progress for `send_timeout` (or a connect did not
    /// complete within it).
    #[error(
        "{what} to party '{peer}' made no progress for {after:?} (communication.send_timeout)"
    )]
    Timeout {
        /// The peer.
        peer: PartyName,
        /// What was being done.
        what: &'static str,
        /// The bound that passed.
        after: Duration,
    },
    /// The connection to the peer was lost and could not be restored.
    #[error("lost party '{peer}': {reason}")]
    PeerLost {
        /// The peer.
        peer: PartyName,
        /// Why.
        reason: String,
    },
    /// The peer shut down intentionally (it said goodbye); it will not take
    /// more data in this job.
    #[error("party '{peer}' has shut down (it said goodbye)")]
    PeerClosed {
        /// The peer.
        peer: PartyName,
    },
    /// The peer's job aborted and it closed its connections, saying why.
    #[error("party '{peer}' aborted and closed its connections: {reason}")]
    Aborted {
        /// The peer.
        peer: PartyName,
        /// Its abort's reason.
        reason: String,
    },
    /// The peer broke the protocol (a malformed or unexpected frame).
    #[error("party '{peer}' broke the protocol: {reason}")]
    Protocol {
        /// The peer.
        peer: PartyName,
        /// What it did.
        reason: String,
    },
    /// The local transport is closed.
    #[error("the transport of party '{party}' is closed")]
    Closed {
        /// The local party.
        party: PartyName,
    },
}

impl TransportError {
    /// Whether a new attempt may succeed (a lost connection, a timeout of one
    /// attempt); refusals, TLS failures and local limits are permanent.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::PeerLost { .. } | Self::Unreachable { .. })
    }

    /// The refusal code, if the peer refused.
    pub fn refusal_code(&self) -> Option<RefusalCode> {
        match self {
            Self::Refused { refusal, .. } => Some(refusal.code),
            _ => None,
        }
    }
}

/// Setting up a transport failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SetupError {
    /// An invalid setting.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A PEM file could not be read or parsed.
    #[error("cannot load {what} from {path}: {reason}")]
    Pem {
        /// `"CA certificate"`, `"certificate chain"` or `"private key"`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The TLS material is unusable (for example a key that does not match
    /// the certificate, or a certificate that does not name the party).
    #[error("invalid TLS material for party '{party}': {reason}")]
    Tls {
        /// The local party.
        party: PartyName,
        /// Why.
        reason: String,
    },
    /// The private key does not belong to the certificate (or cannot be
    /// used at all); names both files.
    #[error(
        "the private key in {} does not fit the certificate in {}: {reason}; use the key \
         that was made with that certificate",
        .key.display(), .cert.display()
    )]
    KeyMismatch {
        /// The certificate chain file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// The UDP socket could not be bound.
    // The OS error is in the message, not a `source()`: a printed chain
    // does not repeat it.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The listen address.
        addr: std::net::SocketAddr,
        /// The OS error.
        error: std::io::Error,
    },
    /// No tokio runtime is running (quinn needs one; inside actix it is the
    /// System's).
    #[error("no tokio runtime is running: create the transport inside a tokio or actix runtime")]
    NoRuntime,
    /// The job is already served by this endpoint.
    #[error("job '{0}' is already served by this endpoint")]
    JobTaken(JobName),
    /// The address book is unusable.
    #[error("invalid address book: {0}")]
    AddressBook(String),
}

/// Wire errors met while reading a stream, for logs and refusals.
pub(crate) fn wire_refusal(e: &WireError) -> Refusal {
    let code = match e {
        WireError::PayloadTooLarge { .. } | WireError::FrameTooLarge { .. } => {
            RefusalCode::TooLarge
        }
        _ => RefusalCode::Malformed,
    };
    Refusal::new(code, e.to_string())
}
