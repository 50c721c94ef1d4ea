//! The accepting side: the accept loop, hello checks, control frames and
//! data streams from peers.

use std::sync::{Arc, Weak};
use std::time::Duration;

use quinn::{Connection, RecvStream, SendStream, VarInt};
use rustls::pki_types::CertificateDer;
use xsilo_wire::codec::{encode_to_vec, FrameDecoder};
use xsilo_wire::handshake::{check_header, check_hello, AcceptRules};
use xsilo_wire::limits::{MAX_CONTROL_FRAME, MAX_HEADER_FRAME, MAX_PROBE_TRANSFER};
use xsilo_wire::payload::PayloadAssembler;
use xsilo_wire::{
    ControlFrame, DataReply, Hello, HelloReply, JobName, ObjectHeader, PartyName, Probe, Refusal,
    RefusalCode, PROTOCOL_VERSION,
};

use super::budget;
use super::errors::{CLOSE_GOODBYE, CLOSE_PROTOCOL, CLOSE_REFUSED, STREAM_REFUSED};
use super::outbound::read_frame;
use super::{EndpointShared, JobShared};
use crate::api::{
    AckHandle, Direction, InboundObject, ProgressSteps, TransferProgress, TransportEvent,
};
use crate::error::wire_refusal;
use crate::tls::{cert_names, named_party, IdentityMode};

/// Accepts connections until the endpoint closes.
pub(super) async fn accept_loop(endpoint: quinn::Endpoint, shared: Weak<EndpointShared>) {
    while let Some(incoming) = endpoint.accept().await {
        let Some(shared) = shared.upgrade() else {
            break;
        };
        tokio::spawn(handle_incoming(shared, incoming));
    }
}

/// Whether the dialer's leaf certificate `leaf` lets it be `party` in
/// `job`: it names `party` (both modes), or the local party uses a shared
/// certificate ([`IdentityMode::Shared`]) and `leaf` names no party of the
/// job, in which case the claimed name is taken as the dialer's identity.
/// A certificate naming a party of the job is held to that party.
fn authenticates(
    mode: IdentityMode,
    job: &JobShared,
    leaf: &CertificateDer<'static>,
    party: &PartyName,
) -> bool {
    cert_names(leaf, party)
        || (mode == IdentityMode::Shared && named_party(leaf, job.book.keys()).is_none())
}

/// What the acceptor knows about a dialer, for [`check_hello`].
struct Rules<'a> {
    local: &'a PartyName,
    mode: IdentityMode,
    job: Option<&'a JobShared>,
    leaf: Option<&'a CertificateDer<'static>>,
}

impl AcceptRules for Rules<'_> {
    fn local_party(&self) -> &PartyName {
        self.local
    }
    fn serves_job(&self, job: &JobName) -> bool {
        self.job.is_some_and(|j| &j.job == job)
    }
    fn knows_party(&self, _job: &JobName, party: &PartyName) -> bool {
        self.job.is_some_and(|j| j.peers.contains_key(party))
    }
    fn certificate_names(&self, party: &PartyName) -> bool {
        match (self.job, self.leaf) {
            (Some(job), Some(leaf)) => authenticates(self.mode, job, leaf, party),
            (None, Some(leaf)) => cert_names(leaf, party),
            _ => false,
        }
    }
    fn certificate_party(&self, _job: &JobName) -> Option<PartyName> {
        let (job, leaf) = (self.job?, self.leaf?);
        named_party(leaf, job.book.keys()).cloned()
    }
}

async fn handle_incoming(endpoint: Arc<EndpointShared>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let local = endpoint.party.clone();
    let bound = endpoint.config.connect_timeout;
    let conn = match tokio::time::timeout(bound, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            // A dialer that gave up its own handshake is no event; a
            // certificate or protocol failure is.
            let abandoned = match &e {
                quinn::ConnectionError::ApplicationClosed(_)
                | quinn::ConnectionError::LocallyClosed => true,
                // An application close during the handshake travels as the
                // transport error APPLICATION_ERROR (0xc).
                quinn::ConnectionError::ConnectionClosed(c) => u64::from(c.error_code) == 0xc,
                _ => false,
            };
            if abandoned {
                tracing::debug!(party = %local, %remote, error = %e, "a dialer abandoned its handshake");
            } else {
                tracing::warn!(party = %local, %remote, error = %e, "refused a connection in the TLS handshake");
            }
            return;
        }
        Err(_) => {
            tracing::warn!(party = %local, %remote, "a connection did not complete its handshake within connect_timeout");
            return;
        }
    };
    let leaf = super::leaf_certificate(&conn);
    let hello = tokio::time::timeout(bound, async {
        let (send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let hello: Hello = read_frame(&mut recv, MAX_CONTROL_FRAME, &local, "hello")
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((send, recv, hello))
    })
    .await;
    let (mut send, recv, hello) = match hello {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            // A dialer runs a few handshakes at once while its peer is
            // silent (outbound::handshake) and drops the losers: closed by
            // the application with code 0 before any hello.
            let dropped = matches!(
                conn.close_reason(),
                Some(quinn::ConnectionError::ApplicationClosed(c)) if u64::from(c.error_code) == 0
            );
            if dropped {
                tracing::debug!(party = %local, %remote, "a dialer dropped a duplicate connection attempt");
                return;
            }
            tracing::warn!(party = %local, %remote, error = %e, "no valid hello on a new connection");
            conn.close(
                CLOSE_PROTOCOL.into(),
                b"expected a hello on the control stream",
            );
            return;
        }
        Err(_) => {
            tracing::warn!(party = %local, %remote, "no hello within connect_timeout");
            conn.close(
                CLOSE_PROTOCOL.into(),
                b"no hello within the connect timeout",
            );
            return;
        }
    };
    let job = lock_job(&endpoint, &hello.job);
    let rules = Rules {
        local: &local,
        mode: endpoint.mode,
        job: job.as_deref(),
        leaf: leaf.as_ref(),
    };
    let verdict = check_hello(&hello, &rules);
    if let Some(probe) = hello.probe {
        // A probe never reaches a job: no peer-up, no refusal event, no data.
        answer_probe(&endpoint, &conn, send, &hello, verdict, probe).await;
        return;
    }
    if let Err(refusal) = verdict {
        tracing::warn!(party = %local, %remote, claimed = %hello.party, job = %hello.job, %refusal, "refused a hello");
        tell_jobs_of_refusal(&endpoint, &hello, leaf.as_ref(), &refusal);
        refuse_connection(&conn, &mut send, refusal, bound).await;
        return;
    }
    let Some(job) = job else {
        // check_hello refuses unknown jobs; nothing to serve.
        return;
    };
    // Each live connection may leave a connection window of unread bytes
    // in QUIC: a peer gets at most MAX_INBOUND_PER_PEER of them.
    if !job.try_add_inbound(&hello.party, &conn) {
        let refusal = Refusal::new(
            RefusalCode::Unavailable,
            format!(
                "party '{local}' already has {} live connections from party '{}' in job '{}'",
                super::MAX_INBOUND_PER_PEER,
                hello.party,
                job.job
            ),
        );
        tracing::warn!(party = %local, %remote, peer = %hello.party, %refusal, "refused a connection");
        refuse_connection(&conn, &mut send, refusal, bound).await;
        return;
    }
    let reply = HelloReply::Accepted {
        version: PROTOCOL_VERSION,
        party: local.clone(),
    };
    let Ok(bytes) = encode_to_vec(&reply) else {
        return;
    };
    if send.write_all(&bytes).await.is_err() {
        return;
    }
    let peer = hello.party;
    tracing::debug!(job = %job.job, party = %local, %peer, %remote, "accepted a connection");
    job.connection_up(&peer);
    // The control frames of a connection are all delivered before its
    // peer-down event: an abort sent just before a close is never overtaken
    // by the close.
    let control = tokio::spawn(read_control(
        job.clone(),
        peer.clone(),
        conn.clone(),
        send,
        recv,
    ));
    loop {
        tokio::select! {
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    tokio::spawn(serve_object(job.clone(), peer.clone(), conn.clone(), send, recv));
                }
                Err(e) => {
                    let _ = control.await;
                    job.connection_down(&peer, &e);
                    return;
                }
            },
            () = job.closed.cancelled() => {
                let e = conn.closed().await;
                let _ = control.await;
                job.connection_down(&peer, &e);
                return;
            }
        }
    }
}

/// A party of one of our jobs, authenticated by its certificate (in shared
/// mode: by a certificate naming no party of that job), dialled us with a
/// configuration we refuse (another job name, another protocol version):
/// that job will not work with it, so the job is told at once instead of
/// finding out when a wait on that party runs out.
fn tell_jobs_of_refusal(
    endpoint: &EndpointShared,
    hello: &Hello,
    leaf: Option<&CertificateDer<'static>>,
    refusal: &Refusal,
) {
    if !matches!(
        refusal.code,
        RefusalCode::UnknownJob | RefusalCode::VersionMismatch
    ) {
        return;
    }
    let Some(leaf) = leaf else { return };
    let jobs: Vec<Arc<JobShared>> = super::lock(&endpoint.jobs)
        .values()
        .filter_map(Weak::upgrade)
        .collect();
    for job in jobs {
        if job.peers.contains_key(&hello.party)
            && authenticates(endpoint.mode, &job, leaf, &hello.party)
        {
            job.emit(TransportEvent::PeerRefused {
                party: hello.party.clone(),
                refusal: Refusal::new(
                    refusal.code,
                    format!("we refused party '{}': {}", hello.party, refusal.message),
                ),
            });
        }
    }
}

/// Answers a probe hello (`xsilo check`) with the verdict of the ordinary
/// hello checks, reads and discards the probe's transfer if it was accepted
/// and asked for one, and closes. Nothing reaches a job: no `PeerUp`, no
/// `PeerRefused`, no object.
async fn answer_probe(
    endpoint: &EndpointShared,
    conn: &Connection,
    mut send: SendStream,
    hello: &Hello,
    verdict: Result<(), Refusal>,
    probe: Probe,
) {
    let local = &endpoint.party;
    let bound = endpoint.config.connect_timeout;
    tracing::info!(party = %local, remote = %conn.remote_address(), claimed = %hello.party, job = %hello.job, ?verdict, "answered a probe");
    if let Err(refusal) = verdict {
        refuse_connection(conn, &mut send, refusal, bound).await;
        return;
    }
    let reply = HelloReply::Accepted {
        version: PROTOCOL_VERSION,
        party: local.clone(),
    };
    if let Ok(bytes) = encode_to_vec(&reply) {
        if send.write_all(&bytes).await.is_ok() {
            let _ = send.finish();
        }
    }
    if probe.transfer > 0 {
        let limit = MAX_PROBE_TRANSFER.min(endpoint.config.max_message_size);
        let within = endpoint.config.send_timeout;
        let _ = tokio::time::timeout(within, discard_transfer(conn, probe.transfer, limit)).await;
    }
    // The prober closes once it has its answers.
    let _ = tokio::time::timeout(bound.min(Duration::from_secs(2)), conn.closed()).await;
    conn.close(CLOSE_GOODBYE.into(), b"probe answered");
}

/// Reads a probe's transfer on its one data stream, keeping nothing, and
/// acknowledges it if exactly `announced` bytes (at most `limit`) came.
async fn discard_transfer(conn: &Connection, announced: u64, limit: u64) {
    let Ok((mut send, mut recv)) = conn.accept_bi().await else {
        return;
    };
    let refuse = |recv: &mut RecvStream, code, message: String| {
        let _ = recv.stop(VarInt::from_u32(STREAM_REFUSED));
        DataReply::Refused(Refusal::new(code, message))
    };
    let reply = if announced > limit {
        refuse(
            &mut recv,
            RefusalCode::TooLarge,
            format!("a probe may send at most {limit} bytes, not {announced}"),
        )
    } else {
        let mut got = 0u64;
        loop {
            match recv.read_chunk(usize::MAX, false).await {
                Ok(Some(chunk)) => {
                    got += chunk.bytes.len() as u64;
                    if got > announced {
                        break refuse(
                            &mut recv,
                            RefusalCode::Malformed,
                            format!("the probe announced {announced} bytes and sent more"),
                        );
                    }
                }
                Ok(None) if got == announced => break DataReply::Ack,
                Ok(None) => {
                    break DataReply::Refused(Refusal::new(
                        RefusalCode::Malformed,
                        format!("the probe announced {announced} bytes and sent {got}"),
                    ))
                }
                Err(_) => return,
            }
        }
    };
    if let Ok(bytes) = encode_to_vec(&reply) {
        if send.write_all(&bytes).await.is_ok() {
            let _ = send.finish();
        }
    }
}

fn lock_job(endpoint: &EndpointShared, job: &JobName) -> Option<Arc<JobShared>> {
    super::lock(&endpoint.jobs).get(job).and_then(Weak::upgrade)
}

/// Sends the refusal on the control stream, lets the dialer read it (bounded)
/// and closes with the refusal as the close reason too.
async fn refuse_connection(
    conn: &Connection,
    send: &mut SendStream,
    refusal: Refusal,
    bound: Duration,
) {
    let reply = HelloReply::Refused(refusal.clone());
    if let Ok(bytes) = encode_to_vec(&reply) {
        if send.write_all(&bytes).await.is_ok() {
            let _ = send.finish();
        }
    }
    // The dialer closes once it has read the refusal.
    let _ = tokio::time::timeout(bound.min(Duration::from_secs(2)), conn.closed()).await;
    let mut short = refusal;
    if let Some((cut, _)) = short.message.char_indices().nth(600) {
        short.message.truncate(cut);
    }
    let reason = encode_to_vec(&short)
        .map(|b| b[4..].to_vec())
        .unwrap_or_default();
    conn.close(CLOSE_REFUSED.into(), &reason);
}

/// Reads the dialer's control frames and turns them into events.
async fn read_control(
    job: Arc<JobShared>,
    peer: PartyName,
    conn: Connection,
    _send: SendStream,
    mut recv: RecvStream,
) {
    let mut decoder = FrameDecoder::new(MAX_CONTROL_FRAME);
    loop {
        let chunk = tokio::select! {
            c = recv.read_chunk(64 * 1024, true) => c,
            () = job.closed.cancelled() => {
                // Tells a dialer still writing that we are leaving
                // (`send_control` reads this code as `PeerClosed`).
                let _ = recv.stop(CLOSE_GOODBYE.into());
                return;
            }
        };
        match chunk {
            Ok(Some(chunk)) => decoder.push(&chunk.bytes),
            Ok(None) => {
                if let Err(e) = decoder.finish() {
                    tracing::warn!(job = %job.job, %peer, error = %e, "control stream ended mid-frame");
                }
                return;
            }
            // The connection ended; the accept loop reports it.
            Err(_) => return,
        }
        loop {
            match decoder.next_frame::<ControlFrame>() {
                Ok(Some(frame)) => {
                    if frame == ControlFrame::Goodbye {
                        job.said_goodbye(&peer);
                    }
                    job.emit_control(&peer, frame).await;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(job = %job.job, %peer, error = %e, "malformed control frame: closing the connection");
                    job.close_for_breach(&peer, &conn, format!("malformed control frame: {e}"));
                    return;
                }
            }
        }
    }
}

/// Receives one object on its data stream, hands it to the runtime and
/// writes the runtime's answer.
async fn serve_object(
    job: Arc<JobShared>,
    peer: PartyName,
    conn: Connection,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let received = receive_object(&job, &peer, &mut recv).await;
    let reply = match received {
        // The budget is held until the runtime has answered.
        Ok((header, payload, _admitted)) => {
            let (ack, answer) = AckHandle::new();
            let object = header.object;
            job.emit(TransportEvent::Object(InboundObject {
                from: peer.clone(),
                header,
                payload,
                ack,
            }));
            tokio::select! {
                r = answer => r.unwrap_or(DataReply::Refused(Refusal::new(RefusalCode::Unavailable, "the receiving runtime is gone"))),
                () = job.closed.cancelled() => DataReply::Refused(Refusal::new(
                    RefusalCode::ShuttingDown,
                    format!("party '{}' is shutting down; object {object} was not taken", job.party),
                )),
                // No timer here: the answer is the runtime's alone, so that
                // an accept is never contradicted. The sender's send_timeout
                // bounds its wait; this task ends with the connection.
                _ = conn.closed() => return,
            }
        }
        Err(refusal) => {
            tracing::warn!(job = %job.job, party = %job.party, %peer, %refusal, "refused an object");
            let _ = recv.stop(VarInt::from_u32(STREAM_REFUSED));
            DataReply::Refused(refusal)
        }
    };
    if let Ok(bytes) = encode_to_vec(&reply) {
        if send.write_all(&bytes).await.is_ok() {
            let _ = send.finish();
        }
    }
}

async fn receive_object(
    job: &JobShared,
    peer: &PartyName,
    recv: &mut RecvStream,
) -> Result<(ObjectHeader, xsilo_wire::payload::Payload, budget::Admitted), Refusal> {
    // Progress, not a stopwatch: each read waits at most send_timeout, so a
    // large object on a slow link arrives while its bytes keep coming, and
    // a stream that stalls is refused (RFC 0001).
    let bound = job.config.send_timeout;
    let stalled = || {
        Refusal::new(
            RefusalCode::Malformed,
            format!("no byte of the object arrived for the receiver's send_timeout ({bound:?})"),
        )
    };
    let header: ObjectHeader = tokio::time::timeout(
        bound,
        read_frame(recv, MAX_HEADER_FRAME, peer, "object header"),
    )
    .await
    .map_err(|_| stalled())?
    .map_err(|e| Refusal::new(RefusalCode::Malformed, e.to_string()))?;
    check_header(&header, &job.job, peer, job.config.max_message_size)?;
    // Admitted whole before any payload is read; until then QUIC flow
    // control holds the sender.
    let slot = job
        .slot(peer)
        .map_err(|e| Refusal::new(RefusalCode::UnknownParty, e.to_string()))?;
    let admission = budget::admit(&slot.inbound, &job.inbound, header.payload_len, bound).await;
    let admitted = admission
        .map_err(|why| match why {
            budget::NotAdmitted::TooLarge => Refusal::new(
                RefusalCode::TooLarge,
                format!(
                    "object {} of {} bytes is over the receiver's inbound budget",
                    header.object, header.payload_len
                ),
            ),
            budget::NotAdmitted::Full => Refusal::new(
                RefusalCode::Unavailable,
                format!(
                    "the receiver's inbound memory budget stayed full for its send_timeout ({bound:?}); \
                     object {} was not read",
                    header.object
                ),
            ),
        })?;
    let mut payload = PayloadAssembler::new(header.payload_len, job.config.max_message_size)
        .map_err(|e| wire_refusal(&e))?;
    let mut steps = ProgressSteps::new(header.payload_len);
    loop {
        let chunk = tokio::time::timeout(bound, recv.read_chunk(usize::MAX, true))
            .await
            .map_err(|_| stalled())?;
        match chunk {
            Ok(Some(chunk)) => {
                payload.push(&chunk.bytes).map_err(|e| {
                    Refusal::new(
                        RefusalCode::Malformed,
                        format!("object {} from '{peer}': {e}; cut off", header.object),
                    )
                })?;
                slot.inbound.touch();
                job.inbound.touch();
                let done = header.payload_len - payload.remaining();
                if steps.as_mut().is_some_and(|s| s.reached(done)) {
                    job.emit_progress(TransferProgress {
                        peer: peer.clone(),
                        object: header.object,
                        direction: Direction::Receiving,
                        done,
                        total: header.payload_len,
                    });
                }
            }
            Ok(None) => break,
            Err(e) => {
                return Err(Refusal::new(
                    RefusalCode::Malformed,
                    format!("object {} from '{peer}': {e}", header.object),
                ))
            }
        }
    }
    let payload = payload.finish().map_err(|e| {
        Refusal::new(
            RefusalCode::Malformed,
            format!("object {} from '{peer}': {e}", header.object),
        )
    })?;
    Ok((header, payload, admitted))
}
