//! The rules of a party as plain state machines, driven by events with time
//! passed in: no actors, no sockets, no clock. The actors in
//! [`crate::actors`] are thin shells that feed them and carry out their
//! actions; the tests beside each machine step it directly.

pub mod lifecycle;
pub mod objects;
