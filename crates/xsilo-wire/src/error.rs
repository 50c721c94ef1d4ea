//! Errors of the wire layer.

use thiserror::Error;

/// What went wrong while encoding or decoding a frame.
///
/// Every variant is the peer's fault or a local limit; none is a bug of this
/// crate, and none panics.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// A length prefix announced a frame larger than the limit. The body is
    /// not read further (bytes already pushed with the prefix stay bounded by
    /// the reader's chunk size).
    #[error("frame of {announced} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// The length the peer announced.
        announced: u64,
        /// The limit in force.
        limit: u64,
    },
    /// An object's payload is larger than the maximum message size.
    #[error("payload of {announced} bytes exceeds the maximum message size of {limit} bytes")]
    PayloadTooLarge {
        /// The length announced (or attempted).
        announced: u64,
        /// The limit in force.
        limit: u64,
    },
    /// The peer sent more payload bytes than its header announced.
    #[error("peer sent more than the {announced} payload bytes its header announced")]
    PayloadOverrun {
        /// The length the header announced.
        announced: u64,
    },
    /// The stream ended before the announced payload was complete.
    #[error("stream ended after {received} of {announced} announced payload bytes")]
    PayloadTruncated {
        /// Bytes received before the end.
        received: u64,
        /// The length the header announced.
        announced: u64,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended in the middle of a frame ({buffered} bytes buffered)")]
    TruncatedFrame {
        /// Bytes of the incomplete frame that were buffered.
        buffered: usize,
    },
    /// A frame body is not a valid msgpack encoding of the expected type.
    #[error("malformed {what} frame: {reason}")]
    Malformed {
        /// Which frame type was expected.
        what: &'static str,
        /// The decoder's explanation.
        reason: String,
    },
    /// A frame could not be encoded (only possible for values that serde
    /// cannot represent in msgpack; not for the frames of this crate).
    #[error("cannot encode frame: {0}")]
    Encode(String),
}
