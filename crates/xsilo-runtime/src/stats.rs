//! Per-party statistics.

use std::collections::BTreeMap;

use xsilo_wire::PartyName;

/// Objects and payload bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Objects.
    pub objects: u64,
    /// Payload bytes.
    pub bytes: u64,
}

/// What this party sent to and received from each peer, and what it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Objects acknowledged by each destination.
    pub sent: BTreeMap<PartyName, Counts>,
    /// Objects received from each source (a resend counted again).
    pub received: BTreeMap<PartyName, Counts>,
    /// Objects this party holds now: its own values, values received, and
    /// entries for objects still expected (promise L1).
    pub live_objects: u64,
    /// Bytes of the values held now.
    pub live_bytes: u64,
    /// Actors living in this party now.
    pub live_actors: u64,
}
