//! Metrics for Prometheus (promise F2): `[observability] prometheus =
//! "127.0.0.1:9464"` serves every party's metrics of this process at
//! `http://127.0.0.1:9464/metrics`. The metrics themselves are listed in
//! [`crate::metrics`].

use std::net::SocketAddr;
use std::sync::Mutex;

use metrics_exporter_prometheus::{BuildError, PrometheusBuilder};

/// Why the metrics endpoint could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ObservabilityError {
    /// The address could not be listened on (in use, not ours).
    #[error("cannot serve metrics on {addr} (observability.prometheus): {reason}")]
    Listen {
        /// The configured address.
        addr: SocketAddr,
        /// What the system said.
        reason: String,
    },
    /// This process serves its metrics on another address already (a
    /// process has one metrics registry; its parties share one endpoint).
    #[error(
        "this process serves its metrics on {serving} already; observability.prometheus = \
         {wanted} cannot be served too (give every party of one process the same address)"
    )]
    AnotherAddress {
        /// The address served.
        serving: SocketAddr,
        /// The address asked for.
        wanted: SocketAddr,
    },
    /// Something else in this process installed a `metrics` recorder.
    #[error(
        "cannot serve metrics on {addr} (observability.prometheus): the process has a metrics \
         recorder of its own"
    )]
    OtherRecorder {
        /// The configured address.
        addr: SocketAddr,
    },
}

/// The address this process serves its metrics on, once it does.
static SERVING: Mutex<Option<SocketAddr>> = Mutex::new(None);

/// Serves the process's metrics on `addr`, once per process: a second party
/// of the process asking for the same address shares the endpoint.
pub(crate) fn serve_prometheus(addr: SocketAddr) -> Result<(), ObservabilityError> {
    let mut serving = SERVING.lock().unwrap_or_else(|p| p.into_inner());
    match *serving {
        Some(s) if s == addr => return Ok(()),
        Some(s) => {
            return Err(ObservabilityError::AnotherAddress {
                serving: s,
                wanted: addr,
            })
        }
        None => {}
    }
    // Installed from a thread outside any runtime, so that the exporter gets
    // a thread and a runtime of its own and outlives the party's.
    let installed = std::thread::Builder::new()
        .name("xsilo-metrics-setup".into())
        .spawn(move || PrometheusBuilder::new().with_http_listener(addr).install())
        .map_err(|e| ObservabilityError::Listen {
            addr,
            reason: e.to_string(),
        })?
        .join()
        .map_err(|_| ObservabilityError::Listen {
            addr,
            reason: "the exporter's set-up panicked".into(),
        })?;
    match installed {
        Ok(()) => {}
        Err(BuildError::FailedToSetGlobalRecorder(_)) => {
            return Err(ObservabilityError::OtherRecorder { addr })
        }
        Err(e) => {
            return Err(ObservabilityError::Listen {
                addr,
                reason: e.to_string(),
            })
        }
    }
    xsilo_runtime::metrics::describe();
    *serving = Some(addr);
    tracing::info!(%addr, "serving metrics for Prometheus at http://{addr}/metrics");
    Ok(())
}
