//! The rules of a party as plain state machines, driven by events with time
//! passed in where time matters: no actors, no sockets, no clock. The
//! actors in `crate::actors` are thin shells that feed them and carry out
//! their actions; the tests beside each machine step it directly.
//!
//! * [`object_table`]: every object of the driver, local and remote, and
//!   the calls waiting on them; driven by the `Objects` actor.
//! * [`lifecycle`]: shutdown and abort; driven by the `Coordinator`.
//! * [`peer`]: what this party knows of one peer and owes it (sends in
//!   flight, up and down, the probe, the barrier's dial); driven by that
//!   peer's `Link`.

pub mod lifecycle;
pub mod object_table;
pub mod peer;

// Two or three parties' rules stepped against each other (tests only).
#[cfg(test)]
mod sim;
