//! # xsilo-wire: the sans-IO wire protocol of xsilo
//!
//! This crate holds everything two xsilo parties must agree on to talk, and
//! nothing else: no sockets, no async runtime, no clock. The transport
//! (`xsilo-transport`) feeds it bytes and acts on what it returns; that is
//! why every rule here is tested in memory and the decoder can be fuzzed.
//!
//! ```text
//!            control stream (one per connection, bidirectional)
//!  dialer ── Hello ───────────────────────────────▶ acceptor
//!         ◀─────────────── HelloReply::Accepted / Refused
//!         ── ControlFrame* (Heartbeat, RemoteError, Abort, Finished, Goodbye) ─▶
//!
//!            data stream (one per object, bidirectional)
//!  sender ── [u32 len][ObjectHeader][payload bytes…] FIN ─▶ receiver
//!         ◀───────────────────── [u32 len][DataReply] FIN
//! ```
//!
//! * [`frame`]: the typed frames (serde, encoded as msgpack with rmp-serde).
//! * [`codec`]: length-prefixed framing; the length is checked against a limit
//!   before a single byte of the body is buffered.
//! * [`payload`]: assembles an object's raw payload from chunks, cutting off a
//!   peer that sends more (or fewer) bytes than its header announced.
//! * [`array`](mod@array): numeric arrays (`Vec<f32>` and kin) as raw little-endian
//!   bytes behind a checked header (element type, shape).
//! * [`handshake`]: the acceptance rules for a hello and for an object header.
//! * [`names`]: validated party and job names.
//! * [`position`]: the call-site fingerprint and the position digest, which
//!   every party computes alike to tell whether the drivers diverged.
//! * [`limits`]: the default limits and why they are what they are.
//!
//! Decoding never panics on arbitrary input and never allocates more than the
//! configured limit (property-tested here, fuzzed under `fuzz/`).
//!
//! ```
//! use xsilo_wire::codec::{encode_frame, FrameDecoder};
//! use xsilo_wire::frame::ControlFrame;
//!
//! let mut buf = Vec::new();
//! encode_frame(&ControlFrame::Heartbeat { seq: 7 }, &mut buf).unwrap();
//!
//! let mut decoder = FrameDecoder::new(1024);
//! decoder.push(&buf);
//! let frame: Option<ControlFrame> = decoder.next_frame().unwrap();
//! assert_eq!(frame, Some(ControlFrame::Heartbeat { seq: 7 }));
//! ```

pub mod array;
pub mod codec;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod limits;
pub mod names;
pub mod payload;
pub mod position;

pub use error::WireError;
pub use frame::Probe;
pub use frame::{
    Consumer, ControlFrame, DataReply, FinishedFrame, Hello, HelloReply, ObjectHeader, ObjectId,
    Refusal, RefusalCode, RemoteErrorFrame,
};
pub use names::{JobName, NameError, PartyName};
pub use position::{Fingerprint, PositionDigest};

/// The protocol's name, as carried in ALPN together with the version.
pub const PROTOCOL_NAME: &str = "xsilo";

/// The protocol version this crate speaks. Bumped on any incompatible change
/// of a frame or of how values are encoded (2: numeric arrays as
/// [`array`](mod@array) payloads instead of msgpack); the hello carries it and a mismatch is refused with
/// [`RefusalCode::VersionMismatch`].
pub const PROTOCOL_VERSION: u16 = 2;

/// The ALPN identifier negotiated in the TLS handshake: `xsilo/<version>`.
///
/// A peer speaking another version fails the TLS handshake with a
/// `no_application_protocol` alert; the dialer's transport reports it as a
/// TLS error naming the peer and our protocol version.
pub fn alpn() -> Vec<u8> {
    format!("{PROTOCOL_NAME}/{PROTOCOL_VERSION}").into_bytes()
}
