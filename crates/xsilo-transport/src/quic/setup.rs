//! Building quinn endpoints and configurations from a [`TlsIdentity`] and a
//! [`TransportConfig`]. Public so that benchmarks and tests can build a raw
//! quinn endpoint with exactly the transport's TLS and QUIC settings.

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, VarInt};
use xsilo_wire::PartyName;

use crate::config::{Congestion, TransportConfig};
use crate::error::SetupError;
use crate::tls::TlsIdentity;

/// The quinn transport parameters derived from `config`: keep-alive, idle
/// timeout (the peer-lost bound), windows, stream limits and congestion
/// controller.
pub fn quinn_transport_config(
    config: &TransportConfig,
) -> Result<quinn::TransportConfig, SetupError> {
    config.validate()?;
    let mut tc = quinn::TransportConfig::default();
    // QUIC restarts its idle timer when it sends the first ack-eliciting
    // packet (a keep-alive) after the last packet it received, so a dead peer
    // is noticed up to one keep-alive interval after the idle timeout. Take
    // that interval off, so that peer_lost_timeout is the bound users asked.
    let idle = config
        .peer_lost_timeout
        .saturating_sub(config.keep_alive_interval);
    let idle = IdleTimeout::try_from(idle).map_err(|_| {
        SetupError::Config(crate::ConfigError {
            key: "peer_lost_timeout",
            reason: "too large for QUIC".into(),
        })
    })?;
    let var = |key: &'static str, v: u64| {
        VarInt::from_u64(v).map_err(|_| {
            SetupError::Config(crate::ConfigError {
                key,
                reason: "must be below 2^62".into(),
            })
        })
    };
    tc.max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(config.keep_alive_interval))
        .stream_receive_window(var("stream_receive_window", config.stream_receive_window)?)
        .receive_window(var("receive_window", config.receive_window)?)
        .send_window(config.send_window)
        // One extra bidirectional stream for the control stream.
        .max_concurrent_bidi_streams(VarInt::from_u32(
            config.max_concurrent_streams.saturating_add(1),
        ))
        .max_concurrent_uni_streams(VarInt::from_u32(0));
    match config.congestion {
        Congestion::Bbr => {
            let mut bbr = quinn::congestion::BbrConfig::default();
            bbr.initial_window(config.initial_window);
            tc.congestion_controller_factory(Arc::new(bbr))
        }
        Congestion::Cubic => {
            let mut cubic = quinn::congestion::CubicConfig::default();
            cubic.initial_window(config.initial_window);
            tc.congestion_controller_factory(Arc::new(cubic))
        }
        Congestion::NewReno => {
            let mut reno = quinn::congestion::NewRenoConfig::default();
            reno.initial_window(config.initial_window);
            tc.congestion_controller_factory(Arc::new(reno))
        }
    };
    Ok(tc)
}

/// The quinn server and client configurations for `party`: mutual TLS 1.3
/// with the party's certificate, ALPN `xsilo/<version>`, and the transport
/// parameters of [`quinn_transport_config`].
pub fn quinn_configs(
    party: &PartyName,
    tls: &TlsIdentity,
    config: &TransportConfig,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), SetupError> {
    let (server, client) = tls.rustls_configs(party)?;
    let tls_err = |e: &dyn std::fmt::Display| SetupError::Tls {
        party: party.clone(),
        reason: e.to_string(),
    };
    let tc = Arc::new(quinn_transport_config(config)?);
    let server = QuicServerConfig::try_from(server).map_err(|e| tls_err(&e))?;
    let client = QuicClientConfig::try_from(client).map_err(|e| tls_err(&e))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
    server.transport_config(tc.clone());
    let mut client = quinn::ClientConfig::new(Arc::new(client));
    client.transport_config(tc);
    Ok((server, client))
}

/// Binds a UDP socket with the configured OS buffer sizes.
pub fn bind_socket(
    listen: SocketAddr,
    config: &TransportConfig,
) -> Result<std::net::UdpSocket, SetupError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind_err = |error| SetupError::Bind {
        addr: listen,
        error,
    };
    let socket = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .map_err(bind_err)?;
    if let Err(e) = socket.set_recv_buffer_size(config.socket_buffer) {
        tracing::warn!(error = %e, "cannot set the UDP receive buffer size");
    }
    if let Err(e) = socket.set_send_buffer_size(config.socket_buffer) {
        tracing::warn!(error = %e, "cannot set the UDP send buffer size");
    }
    socket.bind(&listen.into()).map_err(bind_err)?;
    socket.set_nonblocking(true).map_err(bind_err)?;
    Ok(socket.into())
}

/// A quinn endpoint for `party` listening on `listen`, with the client
/// configuration set as default. Needs a tokio runtime in scope.
pub fn quinn_endpoint(
    party: &PartyName,
    listen: SocketAddr,
    tls: &TlsIdentity,
    config: &TransportConfig,
) -> Result<quinn::Endpoint, SetupError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(SetupError::NoRuntime);
    }
    let (server, client) = quinn_configs(party, tls, config)?;
    let socket = bind_socket(listen, config)?;
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|error| SetupError::Bind {
        addr: listen,
        error,
    })?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}
