//! The facade's error type.

use xsilo_runtime::RuntimeError;
use xsilo_transport::SetupError;

use crate::config::ConfigError;
use crate::observability::ObservabilityError;

/// Anything that can go wrong in xsilo, as users see it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; the message names the key.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The transport could not start (TLS material, listen address).
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The metrics endpoint could not be served
    /// (`[observability] prometheus`).
    #[error(transparent)]
    Observability(#[from] ObservabilityError),
    /// The federated computation failed: a task, a RemoteError from another
    /// party, a lost peer, a divergence, an abort.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Start-up (the barrier) could not dial every party: each is named
    /// with the address this party has for it and the configuration key
    /// that gives it. The same error went to the parties that had dialled
    /// us, in the close of their connections.
    #[error("party '{party}' could not reach {} at start-up: {reason}", unreached(.party, .peers))]
    Unreached {
        /// This party.
        party: xsilo_wire::PartyName,
        /// The parties not reached, with the address this party has for each.
        peers: Vec<(xsilo_wire::PartyName, String)>,
        /// Why: the last dial's error or the bound that passed.
        reason: String,
    },
}

/// "party 'bob' at 10.0.0.2:11011 (`parties.bob` in alice's configuration)".
fn unreached(me: &xsilo_wire::PartyName, peers: &[(xsilo_wire::PartyName, String)]) -> String {
    peers
        .iter()
        .map(|(p, addr)| format!("party '{p}' at {addr} (`parties.{p}` in {me}'s configuration)"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Error {
    /// For a RemoteError, the party where the failure began.
    pub fn remote_origin(&self) -> Option<&xsilo_wire::PartyName> {
        match self {
            Self::Runtime(RuntimeError::Remote { origin, .. }) => Some(origin),
            _ => None,
        }
    }
}
