//! Per-party traffic statistics.

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

/// What this party sent to and received from each peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Objects acknowledged by each destination.
    pub sent: BTreeMap<PartyName, Counts>,
    /// Objects received from each source.
    pub received: BTreeMap<PartyName, Counts>,
}
