//! Probing a peer without joining a job (`xsilo check`): QUIC and TLS
//! handshake, a hello marked as a probe, the acceptor's verdict, and
//! optionally a short transfer to measure throughput. The acceptor answers
//! a probe without it ever reaching a job (RFC 0001, "Probes").

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::crypto::rustls::QuicClientConfig;
use xsilo_wire::codec::encode_to_vec;
use xsilo_wire::handshake::check_hello_reply;
use xsilo_wire::limits::{MAX_CONTROL_FRAME, MAX_PROBE_TRANSFER, MAX_REPLY_FRAME};
use xsilo_wire::{
    DataReply, Hello, HelloReply, JobName, PartyName, Probe, Refusal, PROTOCOL_VERSION,
};

use super::errors::{self, connection_error, write_error};
use super::outbound::read_frame;
use crate::api::PeerAddress;
use crate::config::TransportConfig;
use crate::error::{SetupError, TransportError};
use crate::tls::{cert_names, date, presented_names, tidy_names, TlsIdentity};

/// Why a probe could not get a verdict from the peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// Nothing answered the QUIC handshake within `connect_timeout`.
    #[error(
        "nothing answered at {addr} within connect_timeout ({after:?}): is party '{peer}' \
         started, is the address right, and does its firewall let UDP port {} in?",
        .addr.port()
    )]
    NoAnswer {
        /// The party dialled.
        peer: PartyName,
        /// The address dialled.
        addr: SocketAddr,
        /// The bound that passed.
        after: Duration,
    },
    /// We rejected the certificate the server at the address presented.
    #[error("the server at {addr} is not party '{peer}' as our CA knows it: {reason}")]
    ServerCertificate {
        /// The party dialled.
        peer: PartyName,
        /// The address dialled.
        addr: SocketAddr,
        /// What is wrong with its certificate, and what to change.
        reason: String,
    },
    /// The handshake or the hello failed otherwise (the peer rejected our
    /// certificate, closed, broke the protocol).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Our own TLS material or settings are unusable.
    #[error(transparent)]
    Setup(#[from] SetupError),
}

/// What a probe found.
#[derive(Debug)]
#[non_exhaustive]
pub struct ProbeReport {
    /// From the first QUIC packet to the end of the TLS handshake.
    pub handshake: Duration,
    /// From writing the hello to reading the verdict: one round trip plus
    /// the acceptor's checks.
    pub round_trip: Duration,
    /// quinn's smoothed RTT estimate of the path after the verdict.
    pub path_rtt: Duration,
    /// The acceptor's verdict on our job, party and protocol version:
    /// `Ok` if it would accept a connection of our job from us.
    pub verdict: Result<(), Refusal>,
    /// The throughput transfer, when asked and the verdict was `Ok`.
    pub transfer: Option<Result<Transfer, TransportError>>,
    /// Whether the server's certificate names the party dialled. Always
    /// true for a prober whose own certificate binds its party (its TLS
    /// check required it); a prober with a shared certificate
    /// ([`crate::IdentityMode::Shared`]) checks the chain only, and the
    /// caller compares [`ProbeReport::server_names`] with the job's parties.
    pub server_names_peer: bool,
    /// The DNS names the server's certificate presents (`DNS:bob`).
    pub server_names: Vec<String>,
}

/// A throughput transfer of a probe.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    /// Bytes sent and acknowledged.
    pub bytes: u64,
    /// From the first byte written to the acceptor's acknowledgement.
    pub elapsed: Duration,
}

impl Transfer {
    /// MiB per second.
    pub fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A client-only QUIC endpoint that probes the peers of a party, as that
/// party, without joining any job and without accepting connections.
#[derive(Debug)]
pub struct Prober {
    party: PartyName,
    endpoint: quinn::Endpoint,
    tls: TlsIdentity,
    config: TransportConfig,
}

impl Prober {
    /// Binds a client-only endpoint on `local` (use port 0) for `party`.
    /// Needs a tokio runtime in scope.
    pub fn bind(
        party: PartyName,
        local: SocketAddr,
        tls: &TlsIdentity,
        config: TransportConfig,
    ) -> Result<Self, SetupError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SetupError::NoRuntime);
        }
        config.validate()?;
        let socket = super::setup::bind_socket(local, &config)?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|error| SetupError::Bind { addr: local, error })?;
        Ok(Self {
            party,
            endpoint,
            tls: tls.clone(),
            config,
        })
    }

    /// Probes `peer` at `addr` for `job`: handshake within
    /// `connect_timeout`, a probe hello, the verdict; then, if the verdict
    /// is `Ok` and `transfer > 0`, sends `transfer` bytes (at most
    /// [`MAX_PROBE_TRANSFER`]) within `send_timeout` and times the
    /// acknowledgement. The peer delivers nothing to its jobs.
    pub async fn probe(
        &self,
        job: &JobName,
        peer: &PartyName,
        addr: &PeerAddress,
        transfer: u64,
    ) -> Result<ProbeReport, ProbeError> {
        let bound = self.config.connect_timeout;
        let (client, verifier) = self.tls.recording_client_config(&self.party)?;
        let client = QuicClientConfig::try_from(client).map_err(|e| SetupError::Tls {
            party: self.party.clone(),
            reason: e.to_string(),
        })?;
        let mut client = quinn::ClientConfig::new(Arc::new(client));
        client.transport_config(Arc::new(super::setup::quinn_transport_config(
            &self.config,
        )?));
        let no_answer = || ProbeError::NoAnswer {
            peer: peer.clone(),
            addr: addr.addr,
            after: bound,
        };
        let started = Instant::now();
        let connecting = self
            .endpoint
            .connect_with(client, addr.addr, peer.as_str())
            .map_err(|e| TransportError::Unreachable {
                peer: peer.clone(),
                addr: addr.addr.to_string(),
                attempts: 1,
                last: e.to_string(),
            })?;
        let conn = match tokio::time::timeout(bound, connecting).await {
            Err(_) | Ok(Err(quinn::ConnectionError::TimedOut)) => return Err(no_answer()),
            Ok(Err(e)) => {
                return Err(match verifier.rejection() {
                    Some(rejected) => ProbeError::ServerCertificate {
                        peer: peer.clone(),
                        addr: addr.addr,
                        reason: server_certificate_problem(&rejected, peer),
                    },
                    None => ProbeError::Transport(connection_error(peer, &e)),
                })
            }
            Ok(Ok(conn)) => conn,
        };
        let handshake = started.elapsed();
        let leaf = super::leaf_certificate(&conn);
        let result = self
            .hello_and_transfer(&conn, job, peer, addr, transfer, handshake)
            .await
            .map(|mut report| {
                if let Some(leaf) = &leaf {
                    report.server_names_peer = cert_names(leaf, peer);
                    report.server_names = presented_names(leaf);
                }
                report
            });
        conn.close(errors::CLOSE_GOODBYE.into(), b"probe done");
        result
    }

    async fn hello_and_transfer(
        &self,
        conn: &quinn::Connection,
        job: &JobName,
        peer: &PartyName,
        addr: &PeerAddress,
        transfer: u64,
        handshake: Duration,
    ) -> Result<ProbeReport, ProbeError> {
        let bound = self.config.connect_timeout;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            job: job.clone(),
            party: self.party.clone(),
            to: peer.clone(),
            metadata: addr.metadata.clone(),
            probe: Some(Probe { transfer }),
        };
        let bytes = encode_to_vec(&hello).map_err(|e| TransportError::Protocol {
            peer: peer.clone(),
            reason: e.to_string(),
        })?;
        let exchange = async {
            let (mut send, mut recv) = conn
                .open_bi()
                .await
                .map_err(|e| connection_error(peer, &e))?;
            let sent = Instant::now();
            send.write_all(&bytes)
                .await
                .map_err(|e| write_error(peer, &e))?;
            let reply: Result<HelloReply, TransportError> =
                read_frame(&mut recv, MAX_CONTROL_FRAME, peer, "hello reply").await;
            let round_trip = sent.elapsed();
            Ok::<_, TransportError>((reply, round_trip))
        };
        let (reply, round_trip) = tokio::time::timeout(bound, exchange).await.map_err(|_| {
            TransportError::Timeout {
                peer: peer.clone(),
                what: "the probe's hello",
                after: bound,
            }
        })??;
        let verdict = match reply {
            Ok(reply) => check_hello_reply(reply, peer),
            // The acceptor may have closed with the refusal as the close
            // reason before we read its reply frame.
            Err(e) => match conn.close_reason().map(|c| connection_error(peer, &c)) {
                Some(TransportError::Refused { refusal, .. }) => Err(refusal),
                Some(other) => return Err(other.into()),
                None => return Err(e.into()),
            },
        };
        let path_rtt = conn.rtt();
        let transfer = if verdict.is_ok() && transfer > 0 {
            let within = self.config.send_timeout;
            Some(
                tokio::time::timeout(within, send_transfer(conn, peer, transfer))
                    .await
                    .unwrap_or(Err(TransportError::Timeout {
                        peer: peer.clone(),
                        what: "the probe's transfer",
                        after: within,
                    })),
            )
        } else {
            None
        };
        Ok(ProbeReport {
            handshake,
            round_trip,
            path_rtt,
            verdict,
            transfer,
            server_names_peer: false,
            server_names: Vec::new(),
        })
    }

    /// Closes the endpoint (bounded, 1 s).
    pub async fn close(&self) {
        self.endpoint
            .close(errors::CLOSE_GOODBYE.into(), b"probe done");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

async fn send_transfer(
    conn: &quinn::Connection,
    peer: &PartyName,
    bytes: u64,
) -> Result<Transfer, TransportError> {
    let bytes = bytes.min(MAX_PROBE_TRANSFER);
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| connection_error(peer, &e))?;
    const CHUNK: usize = 1024 * 1024;
    let chunk = Bytes::from(vec![0u8; CHUNK]);
    let started = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        match send.write_chunk(chunk.slice(..n)).await {
            Ok(()) => left -= n as u64,
            // Refused early: the reply says why.
            Err(quinn::WriteError::Stopped(_)) => break,
            Err(e) => return Err(write_error(peer, &e)),
        }
    }
    let _ = send.finish();
    let reply: DataReply = read_frame(&mut recv, MAX_REPLY_FRAME, peer, "probe reply").await?;
    match reply {
        DataReply::Ack => Ok(Transfer {
            bytes,
            elapsed: started.elapsed(),
        }),
        DataReply::Refused(refusal) => Err(TransportError::Refused {
            peer: peer.clone(),
            refusal,
        }),
    }
}

/// What is wrong with a server certificate that WebPKI rejected, in words
/// that say what to change.
fn server_certificate_problem(e: &rustls::Error, peer: &PartyName) -> String {
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(c) = e else {
        return e.to_string();
    };
    match c {
        C::NotValidForNameContext { presented, .. } => format!(
            "its certificate names {:?}, not '{peer}': is the address (or port) of \
             '{peer}' in [parties] right? (If '{peer}' uses a certificate shared by every \
             party, naming none, so must we: our certificate names our party, which binds \
             every peer's name to its certificate)",
            tidy_names(presented)
        ),
        C::NotValidForName => format!(
            "its certificate does not name '{peer}': is the address (or port) of '{peer}' in \
             [parties] right?"
        ),
        C::UnknownIssuer | C::BadSignature => format!(
            "its certificate is not signed by our CA (tls.ca): '{peer}' and we must use \
             certificates of one CA ({c:?})"
        ),
        C::ExpiredContext { not_after, .. } => format!(
            "its certificate expired on {} (UTC): '{peer}' must renew it",
            date(std::time::UNIX_EPOCH + Duration::from_secs(not_after.as_secs()))
        ),
        C::NotValidYetContext { not_before, .. } => format!(
            "its certificate is valid only from {} (UTC): check the clocks",
            date(std::time::UNIX_EPOCH + Duration::from_secs(not_before.as_secs()))
        ),
        other => format!("its certificate was rejected: {other:?}"),
    }
}
