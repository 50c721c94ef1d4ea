//! Limits of the protocol and their defaults.
//!
//! Every length a peer sends is checked against one of these before any
//! buffer is allocated for it.

/// Default maximum size of one object's payload: 500 MiB (RayFed's default,
/// promise C5). Larger values are refused at the sender before transfer and at
/// the receiver when a peer announces more. Raise it for bigger models; the
/// receiver holds one whole payload in memory per concurrent transfer.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 500 * 1024 * 1024;

/// Maximum size of one control frame (hello, heartbeat, RemoteError, abort,
/// goodbye): 1 MiB. Large enough for a RemoteError with a long cause chain;
/// small enough that a hostile peer cannot make us buffer much.
pub const MAX_CONTROL_FRAME: u32 = 1024 * 1024;

/// Maximum size of an object header frame: 64 KiB. Headers carry names and
/// ids only.
pub const MAX_HEADER_FRAME: u32 = 64 * 1024;

/// Maximum size of a data reply frame (ack or refusal): 64 KiB.
pub const MAX_REPLY_FRAME: u32 = 64 * 1024;

/// Maximum number of metadata headers in a hello.
pub const MAX_METADATA_ENTRIES: usize = 64;

/// Maximum length of a metadata key or value, in bytes.
pub const MAX_METADATA_LEN: usize = 1024;

/// Maximum number of bytes a probe ([`crate::Probe`]) may send to measure
/// throughput: 1 GiB. A probe's bytes are discarded as they arrive, so the
/// bound is on the acceptor's time and bandwidth, not its memory.
pub const MAX_PROBE_TRANSFER: u64 = 1024 * 1024 * 1024;

/// Size of the length prefix of every frame.
pub const LENGTH_PREFIX: usize = 4;
