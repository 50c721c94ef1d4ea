//! Mapping quinn's errors to [`TransportError`]s that name the peer and say
//! which side rejected what.

use quinn::{ConnectionError, ReadError, ReadExactError, WriteError};
use xsilo_wire::{codec, PartyName, Refusal};

use crate::error::TransportError;

/// Application close code: intended shutdown.
pub(crate) const CLOSE_GOODBYE: u32 = 0;
/// Application close code: the hello was refused; the reason carries the
/// msgpack-encoded [`Refusal`].
pub(crate) const CLOSE_REFUSED: u32 = 1;
/// Application close code: the peer broke the protocol.
pub(crate) const CLOSE_PROTOCOL: u32 = 2;
/// Application close code: the job aborted; the reason carries why, in
/// UTF-8 (at most [`MAX_CLOSE_REASON`] bytes).
pub(crate) const CLOSE_ABORTED: u32 = 3;
/// Longest abort reason carried in a close (it must fit in one packet).
pub(crate) const MAX_CLOSE_REASON: usize = 900;
/// Stream stop/reset code: the object was refused (the reply says why).
pub(crate) const STREAM_REFUSED: u32 = 16;

/// The name of a TLS alert, for error messages.
fn alert_name(alert: u64) -> &'static str {
    match alert {
        10 => "unexpected_message",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        80 => "internal_error",
        109 => "missing_extension",
        112 => "unrecognized_name",
        116 => "certificate_required",
        120 => "no_application_protocol",
        _ => "other",
    }
}

fn alert_hint(alert: u64, peer: &PartyName) -> String {
    match alert {
        // A certificate from another CA whose name equals the trusted one
        // fails its signature check: decrypt_error (51).
        48 | 42 | 46 | 51 => format!(
            "our certificate is not signed by a CA that party '{peer}' trusts (check the CA \
             files on both sides)"
        ),
        45 => format!("party '{peer}' says our certificate has expired"),
        116 => format!("party '{peer}' requires a client certificate and we sent none"),
        120 => format!(
            "party '{peer}' does not speak our protocol version ({})",
            String::from_utf8_lossy(&xsilo_wire::alpn())
        ),
        _ => format!("party '{peer}' rejected the TLS handshake"),
    }
}

/// Maps a connection-level error with `peer`.
pub(crate) fn connection_error(peer: &PartyName, e: &ConnectionError) -> TransportError {
    match e {
        ConnectionError::TimedOut => TransportError::PeerLost {
            peer: peer.clone(),
            reason: "nothing heard from it within peer_lost_timeout".into(),
        },
        ConnectionError::Reset => TransportError::PeerLost {
            peer: peer.clone(),
            reason: "connection reset (the peer restarted?)".into(),
        },
        ConnectionError::ApplicationClosed(close) => {
            let code = close.error_code.into_inner();
            if code == u64::from(CLOSE_REFUSED) {
                if let Ok(refusal) = codec::decode_body::<Refusal>(&close.reason, "refusal") {
                    return TransportError::Refused {
                        peer: peer.clone(),
                        refusal,
                    };
                }
            }
            if code == u64::from(CLOSE_GOODBYE) {
                return TransportError::PeerClosed { peer: peer.clone() };
            }
            if code == u64::from(CLOSE_ABORTED) {
                return TransportError::Aborted {
                    peer: peer.clone(),
                    reason: String::from_utf8_lossy(&close.reason).into_owned(),
                };
            }
            if code == u64::from(CLOSE_PROTOCOL) {
                return TransportError::Protocol {
                    peer: peer.clone(),
                    reason: format!(
                        "it closed the connection for a protocol breach: {}",
                        String::from_utf8_lossy(&close.reason)
                    ),
                };
            }
            TransportError::PeerLost {
                peer: peer.clone(),
                reason: format!(
                    "it closed the connection with code {code}: {}",
                    String::from_utf8_lossy(&close.reason)
                ),
            }
        }
        ConnectionError::ConnectionClosed(close) => {
            let code = u64::from(close.error_code);
            if code == 0xc {
                // APPLICATION_ERROR in a handshake: the peer's application
                // closed its endpoint while we connected (it is stopping).
                return TransportError::PeerLost {
                    peer: peer.clone(),
                    reason: "it closed the connection during the handshake (is it stopping?)"
                        .into(),
                };
            }
            if code == 0x2 {
                // CONNECTION_REFUSED: its endpoint is closing (quinn refuses
                // new connections then), not a breach.
                return TransportError::PeerClosed { peer: peer.clone() };
            }
            if (0x100..0x200).contains(&code) {
                let alert = code - 0x100;
                return TransportError::Tls {
                    peer: peer.clone(),
                    reason: format!(
                        "{} (TLS alert {}: {})",
                        alert_hint(alert, peer),
                        alert,
                        alert_name(alert)
                    ),
                };
            }
            TransportError::Protocol {
                peer: peer.clone(),
                reason: format!("its QUIC stack closed the connection: {close}"),
            }
        }
        ConnectionError::TransportError(te) => {
            let code = u64::from(te.code);
            if (0x100..0x200).contains(&code) {
                return TransportError::Tls {
                    peer: peer.clone(),
                    reason: format!("we rejected its certificate: {}", te.reason),
                };
            }
            TransportError::Protocol {
                peer: peer.clone(),
                reason: te.to_string(),
            }
        }
        ConnectionError::VersionMismatch => TransportError::Protocol {
            peer: peer.clone(),
            reason: "no QUIC version in common".into(),
        },
        ConnectionError::LocallyClosed => TransportError::PeerLost {
            peer: peer.clone(),
            reason: "the connection was closed locally".into(),
        },
        ConnectionError::CidsExhausted => TransportError::PeerLost {
            peer: peer.clone(),
            reason: "connection ids exhausted".into(),
        },
    }
}

pub(crate) fn write_error(peer: &PartyName, e: &WriteError) -> TransportError {
    match e {
        WriteError::ConnectionLost(c) => connection_error(peer, c),
        // The peer stopped reading: a closing peer stops the control stream
        // it reads as it goes (a frame written into it at that moment is a
        // closing peer, not a breach). Data streams handle Stopped before
        // this, by reading the reply that says why.
        WriteError::Stopped(_) => TransportError::PeerClosed { peer: peer.clone() },
        other => TransportError::Protocol {
            peer: peer.clone(),
            reason: format!("stream write failed: {other}"),
        },
    }
}

pub(crate) fn read_error(peer: &PartyName, e: &ReadError) -> TransportError {
    match e {
        ReadError::ConnectionLost(c) => connection_error(peer, c),
        other => TransportError::Protocol {
            peer: peer.clone(),
            reason: format!("stream read failed: {other}"),
        },
    }
}

pub(crate) fn read_exact_error(peer: &PartyName, e: &ReadExactError) -> TransportError {
    match e {
        ReadExactError::ReadError(r) => read_error(peer, r),
        ReadExactError::FinishedEarly(n) => TransportError::Protocol {
            peer: peer.clone(),
            reason: format!("stream ended after {n} bytes, in the middle of a frame"),
        },
    }
}
