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
