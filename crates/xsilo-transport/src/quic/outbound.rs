//! The dialling side: connections we open, hellos, object and control sends,
//! retries with backoff, goodbye.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::{RecvStream, SendStream};
use tokio::sync::Mutex as AsyncMutex;
use tokio::time::Instant;
use xsilo_wire::codec::{decode_body, encode_to_vec, parse_length};
use xsilo_wire::handshake::check_hello_reply;
use xsilo_wire::limits::{LENGTH_PREFIX, MAX_CONTROL_FRAME, MAX_REPLY_FRAME};
use xsilo_wire::{
    payload, ControlFrame, DataReply, Hello, HelloReply, ObjectHeader, PartyName, PROTOCOL_VERSION,
};

use super::errors::{self, connection_error, read_exact_error, write_error};
use super::{lock, JobShared};
use crate::api::{
    Delivery, Direction, OutboundObject, ProgressSteps, TransferProgress, TransportEvent,
};
use crate::error::TransportError;

/// A connection we dialled, accepted by the peer, with its control stream.
#[derive(Clone)]
pub(super) struct Outbound {
    pub(super) conn: quinn::Connection,
    control: Arc<AsyncMutex<SendStream>>,
}

/// Reads one length-prefixed frame of at most `limit` bytes.
pub(super) async fn read_frame<T: serde::de::DeserializeOwned>(
    recv: &mut RecvStream,
    limit: u32,
    peer: &PartyName,
    what: &'static str,
) -> Result<T, TransportError> {
    let mut prefix = [0u8; LENGTH_PREFIX];
    recv.read_exact(&mut prefix)
        .await
        .map_err(|e| read_exact_error(peer, &e))?;
    let len = parse_length(prefix, limit).map_err(|e| TransportError::Protocol {
        peer: peer.clone(),
        reason: e.to_string(),
    })?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| read_exact_error(peer, &e))?;
    decode_body(&body, what).map_err(|e| TransportError::Protocol {
        peer: peer.clone(),
        reason: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(peer: &PartyName, frame: &T) -> Result<Vec<u8>, TransportError> {
    encode_to_vec(frame).map_err(|e| TransportError::Protocol {
        peer: peer.clone(),
        reason: e.to_string(),
    })
}

/// One connection attempt: QUIC + TLS handshake, then the hello exchange.
async fn dial(job: &JobShared, peer: &PartyName) -> Result<Outbound, TransportError> {
    let addr = job
        .book
        .get(peer)
        .ok_or_else(|| TransportError::UnknownParty {
            peer: peer.clone(),
            job: job.job.clone(),
            known: job
                .book
                .keys()
                .map(PartyName::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let connecting = job
        .endpoint
        .connect(addr.addr, peer.as_str())
        .map_err(|e| TransportError::Unreachable {
            peer: peer.clone(),
            addr: addr.addr.to_string(),
            attempts: 1,
            last: e.to_string(),
        })?;
    let conn = connecting.await.map_err(|e| match e {
        // Nothing answered the handshake: nobody listens there (yet).
        quinn::ConnectionError::TimedOut => TransportError::Unreachable {
            peer: peer.clone(),
            addr: addr.addr.to_string(),
            attempts: 1,
            last: "no answer to the QUIC handshake".into(),
        },
        other => connection_error(peer, &other),
    })?;
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| connection_error(peer, &e))?;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        job: job.job.clone(),
        party: job.party.clone(),
        to: peer.clone(),
        metadata: addr.metadata.clone(),
        probe: None,
    };
    send.write_all(&encode(peer, &hello)?)
        .await
        .map_err(|e| write_error(peer, &e))?;
    let reply: Result<HelloReply, TransportError> =
        read_frame(&mut recv, MAX_CONTROL_FRAME, peer, "hello reply").await;
    let reply = match reply {
        Ok(r) => r,
        // The acceptor may have closed with the refusal as the close reason
        // before we read its reply frame; the close reason says why.
        Err(e) => {
            return Err(conn
                .close_reason()
                .map(|c| connection_error(peer, &c))
                .unwrap_or(e))
        }
    };
    if let Err(refusal) = check_hello_reply(reply, peer) {
        conn.close(errors::CLOSE_PROTOCOL.into(), b"hello refused");
        return Err(TransportError::Refused {
            peer: peer.clone(),
            refusal,
        });
    }
    Ok(Outbound {
        conn,
        control: Arc::new(AsyncMutex::new(send)),
    })
}

/// The live outbound connection to `peer`, dialling (once, for all
/// concurrent callers) if there is none.
async fn outbound(job: &Arc<JobShared>, peer: &PartyName) -> Result<Outbound, TransportError> {
    let slot = job.slot(peer)?;
    let mut guard = slot.outbound.lock().await;
    if let Some(out) = guard.as_ref() {
        match out.conn.close_reason() {
            None => return Ok(out.clone()),
            // It said goodbye: it takes nothing more in this job; dialling
            // again would only wait for an endpoint that is gone.
            Some(quinn::ConnectionError::ApplicationClosed(c))
                if c.error_code.into_inner() == u64::from(errors::CLOSE_GOODBYE) =>
            {
                return Err(TransportError::PeerClosed { peer: peer.clone() });
            }
            Some(_) => {}
        }
    }
    if job.closed.is_cancelled() {
        return Err(TransportError::Closed {
            party: job.party.clone(),
        });
    }
    let out = tokio::time::timeout(job.config.connect_timeout, dial(job, peer))
        .await
        .map_err(|_| TransportError::Unreachable {
            peer: peer.clone(),
            addr: job
                .book
                .get(peer)
                .map(|a| a.addr.to_string())
                .unwrap_or_default(),
            attempts: 1,
            last: format!(
                "no answer within connect_timeout ({:?})",
                job.config.connect_timeout
            ),
        })??;
    tracing::debug!(job = %job.job, party = %job.party, peer = %peer, "connected");
    job.connection_up(peer, None);
    let watcher = job.clone();
    let conn = out.conn.clone();
    let watched_peer = peer.clone();
    tokio::spawn(async move {
        let error = conn.closed().await;
        watcher.connection_down(&watched_peer, &error);
    });
    *guard = Some(out.clone());
    Ok(out)
}

/// Runs `op` on the outbound connection to `peer`, re-dialling and retrying
/// with exponential backoff while the failure is transient, until the retry
/// policy is exhausted or `deadline` passes.
pub(super) async fn with_retries<T, F, Fut>(
    job: &Arc<JobShared>,
    peer: &PartyName,
    deadline: Instant,
    what: &'static str,
    mut op: F,
) -> Result<(T, u32), TransportError>
where
    F: FnMut(Outbound) -> Fut,
    Fut: Future<Output = Result<T, TransportError>>,
{
    let policy = &job.config.retry;
    let mut attempt = 0u32;
    let timeout_err = || TransportError::Timeout {
        peer: peer.clone(),
        what,
        after: job.config.send_timeout,
    };
    loop {
        attempt += 1;
        let result = tokio::select! {
            r = async {
                let out = outbound(job, peer).await?;
                op(out).await
            } => r,
            () = tokio::time::sleep_until(deadline) => return Err(timeout_err()),
            () = job.closed.cancelled() => return Err(TransportError::Closed { party: job.party.clone() }),
        };
        let error = match result {
            Ok(v) => return Ok((v, attempt)),
            Err(e) => e,
        };
        if !error.is_transient() || attempt >= policy.max_attempts {
            return Err(match error {
                TransportError::Unreachable {
                    peer, addr, last, ..
                } => TransportError::Unreachable {
                    peer,
                    addr,
                    attempts: attempt,
                    last,
                },
                other => other,
            });
        }
        let backoff = policy.backoff(attempt);
        tracing::debug!(job = %job.job, party = %job.party, peer = %peer, %error, ?backoff, "{what}: retrying");
        if Instant::now() + backoff >= deadline {
            return Err(timeout_err());
        }
        tokio::time::sleep(backoff).await;
    }
}

/// Sends one object and waits for the receiving runtime's answer.
pub(super) async fn send_object(
    job: &Arc<JobShared>,
    peer: &PartyName,
    object: OutboundObject,
) -> Result<Delivery, TransportError> {
    let size = object.payload.len() as u64;
    job.slot(peer)?;
    payload::check_outgoing(size, job.config.max_message_size).map_err(|_| {
        TransportError::TooLarge {
            peer: peer.clone(),
            object: object.object,
            size,
            limit: job.config.max_message_size,
        }
    })?;
    let header = ObjectHeader {
        job: job.job.clone(),
        src: job.party.clone(),
        object: object.object,
        consumer: object.consumer,
        fingerprint: object.fingerprint,
        payload_len: size,
        resend: false,
    };
    let first = Bytes::from(encode(peer, &header)?);
    // A later attempt says so: the first may have been taken by the
    // receiving runtime while its acknowledgement was lost with the
    // connection.
    let again = Bytes::from(encode(
        peer,
        &ObjectHeader {
            resend: true,
            ..header
        },
    )?);
    let deadline = Instant::now() + job.config.send_timeout;
    let mut tries = 0u32;
    let id = object.object;
    let report = |done: u64| {
        job.emit(TransportEvent::Progress(TransferProgress {
            peer: peer.clone(),
            object: id,
            direction: Direction::Sending,
            done,
            total: size,
        }));
    };
    let ((), attempts) = with_retries(job, peer, deadline, "sending an object", |out| {
        tries += 1;
        let header = if tries == 1 {
            first.clone()
        } else {
            again.clone()
        };
        send_on(out, peer, header, object.payload.clone(), &report)
    })
    .await?;
    Ok(Delivery {
        attempts,
        bytes: size,
    })
}

async fn send_on(
    out: Outbound,
    peer: &PartyName,
    header: Bytes,
    payload: Bytes,
    report: &(dyn Fn(u64) + Sync),
) -> Result<(), TransportError> {
    let (mut send, mut recv) = out
        .conn
        .open_bi()
        .await
        .map_err(|e| connection_error(peer, &e))?;
    // A receiver that refuses early stops our stream; its reply still says why.
    let written = async {
        send.write_chunk(header).await?;
        match ProgressSteps::new(payload.len() as u64) {
            // Slices of one buffer: no copy. Each write returns once QUIC
            // took the slice, so progress follows what left (at most a send
            // window ahead of what was acknowledged).
            Some(steps) => {
                let step = usize::try_from(steps.step()).unwrap_or(usize::MAX);
                let mut at = 0;
                while at < payload.len() {
                    let end = at.saturating_add(step).min(payload.len());
                    send.write_chunk(payload.slice(at..end)).await?;
                    report(end as u64);
                    at = end;
                }
            }
            None if !payload.is_empty() => send.write_chunk(payload).await?,
            None => {}
        }
        Ok::<(), quinn::WriteError>(())
    }
    .await;
    match written {
        Ok(()) => {
            let _ = send.finish();
        }
        Err(quinn::WriteError::Stopped(_)) => {}
        Err(e) => return Err(write_error(peer, &e)),
    }
    let reply: DataReply = read_frame(&mut recv, MAX_REPLY_FRAME, peer, "data reply").await?;
    match reply {
        DataReply::Ack => Ok(()),
        DataReply::Refused(refusal) if refusal.code == xsilo_wire::RefusalCode::ShuttingDown => {
            Err(TransportError::PeerClosed { peer: peer.clone() })
        }
        DataReply::Refused(refusal) => Err(TransportError::Refused {
            peer: peer.clone(),
            refusal,
        }),
    }
}

/// Writes a control frame on the control stream of our connection to `peer`.
pub(super) async fn send_control(
    job: &Arc<JobShared>,
    peer: &PartyName,
    frame: ControlFrame,
) -> Result<(), TransportError> {
    job.slot(peer)?;
    let bytes = encode(peer, &frame)?;
    let deadline = Instant::now() + job.config.send_timeout;
    with_retries(job, peer, deadline, "sending a control frame", |out| {
        let bytes = &bytes;
        async move {
            let mut control = out.control.lock().await;
            control.write_all(bytes).await.map_err(|e| match e {
                // The peer stops reading our control stream only when it
                // closes the job (`read_control`): it is leaving, not
                // breaking the protocol (MISSION S3).
                quinn::WriteError::Stopped(code)
                    if code.into_inner() == u64::from(errors::CLOSE_GOODBYE) =>
                {
                    TransportError::PeerClosed { peer: peer.clone() }
                }
                e => write_error(peer, &e),
            })
        }
    })
    .await
    .map(|_| ())
}

/// Says goodbye on every outbound connection and closes every connection of
/// the job. Bounded: one second for the goodbyes to be acknowledged.
pub(super) async fn close_job(job: &Arc<JobShared>) {
    job.closed.cancel();
    let goodbye = encode(&job.party, &ControlFrame::Goodbye).unwrap_or_default();
    let mut outs = Vec::new();
    for slot in job.peers.values() {
        if let Some(out) = slot.outbound.lock().await.take() {
            outs.push(out);
        }
    }
    // One round trip per peer on a healthy link; a dead peer costs at most
    // the bound.
    let farewells = async {
        for out in &outs {
            let mut control = out.control.lock().await;
            if control.write_all(&goodbye).await.is_ok() && control.finish().is_ok() {
                let _ = control.stopped().await;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), farewells).await;
    for out in &outs {
        out.conn.close(errors::CLOSE_GOODBYE.into(), b"goodbye");
    }
    for slot in job.peers.values() {
        for conn in lock(&slot.live).inbound.drain(..) {
            conn.close(errors::CLOSE_GOODBYE.into(), b"goodbye");
        }
    }
}
