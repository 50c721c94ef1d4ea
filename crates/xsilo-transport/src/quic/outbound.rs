//! The dialling side: connections we open, hellos, object and control sends,
//! retries with backoff, goodbye.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::{RecvStream, SendStream};
use tokio::sync::Mutex as AsyncMutex;
use tokio::time::Instant;
use xsilo_wire::codec::{decode_body, encode_to_vec, parse_length};
use xsilo_wire::handshake::check_hello_reply;
use xsilo_wire::limits::{LENGTH_PREFIX, MAX_CONTROL_FRAME, MAX_REPLY_FRAME};
use xsilo_wire::payload::Payload;
use xsilo_wire::{
    payload, ControlFrame, DataReply, Hello, HelloReply, ObjectHeader, PartyName, PROTOCOL_VERSION,
};

use super::errors::{self, connection_error, read_exact_error, write_error};
use super::{lock, JobShared};
use crate::api::{Delivery, Direction, OutboundObject, ProgressSteps, TransferProgress};
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

/// When a send last made progress. A send fails when it has made none for
/// `send_timeout` (RFC 0001, "Progress, not a stopwatch"): a large object
/// on a slow link takes as long as it takes while its bytes keep moving.
#[derive(Clone, Debug)]
pub(super) struct Progress {
    base: Instant,
    /// Milliseconds after `base` of the last progress.
    last: Arc<std::sync::atomic::AtomicU64>,
}

impl Progress {
    /// Progress made now.
    pub(super) fn new() -> Self {
        Self {
            base: Instant::now(),
            last: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// Notes progress now.
    pub(super) fn mark(&self) {
        let ms = self.base.elapsed().as_millis().min(u128::from(u64::MAX)) as u64;
        self.last.fetch_max(ms, Ordering::AcqRel);
    }

    /// When the send fails if nothing moves before.
    pub(super) fn deadline(&self, bound: Duration) -> Instant {
        self.base + Duration::from_millis(self.last.load(Ordering::Acquire)) + bound
    }

    /// Completes once `bound` has passed without progress.
    pub(super) async fn stalled(&self, bound: Duration) {
        loop {
            let deadline = self.deadline(bound);
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// An object's payload is written in pieces of this size; each piece QUIC
/// takes (its send window frees as the peer acknowledges) is progress.
const PIECE: usize = 1024 * 1024;

/// Bytes a connection must send between two looks for a send still
/// transferring to count as making progress (a link of 8 kB/s or more);
/// keep-alives alone send about 50 bytes a second.
const MOVING_BYTES: u64 = 2 * 1024;

/// How often a transferring send looks at its connection's counters.
fn progress_period(rtt: Duration) -> Duration {
    rtt.saturating_mul(2).min(Duration::from_millis(250))
}

/// Handshakes to one peer at once, at most.
const HANDSHAKES_AT_ONCE: usize = 8;

/// For this long fresh handshakes start every `first_flight_resend`.
const STEADY_RESEND: Duration = Duration::from_secs(2);

/// The QUIC and TLS handshake to `peer` at `addr`. A first flight sent
/// before the peer has bound its port is lost, and QUIC re-sends it only
/// after its probe timeout (about 1 s at first). So while nothing at all
/// has answered, a fresh attempt starts every `first_flight_resend` for
/// [`STEADY_RESEND`], then at intervals growing by half up to 1 s, at most
/// [`HANDSHAKES_AT_ONCE`] at once (the oldest gives way). The first to
/// complete wins; the others are dropped. Once the peer has answered any
/// attempt, no more start, and that one runs to its end.
async fn handshake(
    job: &JobShared,
    peer: &PartyName,
    addr: std::net::SocketAddr,
) -> Result<quinn::Connection, TransportError> {
    let answered = Arc::new(AtomicBool::new(false));
    let mut attempts = tokio::task::JoinSet::new();
    let mut running = std::collections::VecDeque::new();
    let unreachable = |last: String| TransportError::Unreachable {
        peer: peer.clone(),
        addr: addr.to_string(),
        attempts: 1,
        last,
    };
    let start = |attempts: &mut tokio::task::JoinSet<_>| {
        let mut connecting = job
            .endpoint
            .connect(addr, peer.as_str())
            .map_err(|e| unreachable(e.to_string()))?;
        let answered = answered.clone();
        Ok::<_, TransportError>(attempts.spawn(async move {
            if connecting.handshake_data().await.is_ok() {
                answered.store(true, Ordering::Release);
            }
            connecting.await
        }))
    };
    running.push_back(start(&mut attempts)?);
    let mut interval = job.config.first_flight_resend;
    let began = Instant::now();
    let mut next = began + interval;
    let mut last = None;
    loop {
        let quiet = !answered.load(Ordering::Acquire);
        tokio::select! {
            done = attempts.join_next() => match done {
                Some(Ok(Ok(conn))) => return Ok(conn),
                // Nothing answered this attempt's handshake.
                Some(Ok(Err(quinn::ConnectionError::TimedOut))) => {
                    last = Some(unreachable("no answer to the QUIC handshake".into()));
                }
                // A real answer: a refusal, a certificate problem.
                Some(Ok(Err(other))) => return Err(connection_error(peer, &other)),
                // An attempt that gave way to a newer one.
                Some(Err(_)) => {}
                None => {
                    return Err(last.unwrap_or_else(|| unreachable("no answer to the QUIC handshake".into())))
                }
            },
            () = tokio::time::sleep_until(next), if quiet => {
                // An answer may have come while we slept: then let that
                // attempt finish, and start (and abort) nothing.
                if answered.load(Ordering::Acquire) {
                    continue;
                }
                if running.len() >= HANDSHAKES_AT_ONCE {
                    if let Some(oldest) = running.pop_front() {
                        oldest.abort();
                    }
                }
                running.push_back(start(&mut attempts)?);
                // Every first_flight_resend for the first two seconds, then
                // slower, so that attempts on a very long path get old
                // enough to be answered before they give way.
                if began.elapsed() >= STEADY_RESEND {
                    interval = interval.mul_f64(1.5).min(Duration::from_secs(1));
                }
                next = Instant::now() + interval;
            }
        }
    }
}

/// The dialer's check of the server's name, after the TLS handshake
/// checked its chain. A bound party's verifier already required the
/// certificate to name `peer`. A party with a shared certificate
/// (`IdentityMode::Shared`) verified the chain only: the server may present
/// a certificate naming `peer` or naming no party of the job (a shared one;
/// its hello reply then says who it is), but not one naming another party
/// of the job (an address book that puts `peer` at that party's address).
fn check_server_identity(
    job: &JobShared,
    peer: &PartyName,
    conn: &quinn::Connection,
) -> Result<(), TransportError> {
    let refused = |reason: String| TransportError::Tls {
        peer: peer.clone(),
        reason,
    };
    let Some(leaf) = super::leaf_certificate(conn) else {
        return Err(refused("the server presented no certificate".into()));
    };
    if crate::tls::cert_names(&leaf, peer) {
        return Ok(());
    }
    match (job.mode, crate::tls::named_party(&leaf, job.book.keys())) {
        (crate::tls::IdentityMode::Shared, None) => Ok(()),
        (_, Some(other)) => Err(refused(format!(
            "we rejected its certificate: the server at {} presents a certificate naming party \
             '{other}', not '{peer}': is the address of '{peer}' right?",
            conn.remote_address()
        ))),
        (_, None) => Err(refused(format!(
            "we rejected its certificate: it names {:?}, not '{peer}'",
            crate::tls::presented_names(&leaf)
        ))),
    }
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
    let conn = handshake(job, peer, addr.addr).await?;
    if let Err(e) = check_server_identity(job, peer, &conn) {
        conn.close(errors::CLOSE_PROTOCOL.into(), b"server certificate refused");
        return Err(e);
    }
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
    job.connection_up(peer);
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
/// policy is exhausted or `send_timeout` passes without `progress`.
pub(super) async fn with_retries<T, F, Fut>(
    job: &Arc<JobShared>,
    peer: &PartyName,
    progress: &Progress,
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
            () = progress.stalled(job.config.send_timeout) => return Err(timeout_err()),
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
        if Instant::now() + backoff >= progress.deadline(job.config.send_timeout) {
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
    let progress = Progress::new();
    let mut tries = 0u32;
    let id = object.object;
    let report = |done: u64| {
        job.emit_progress(TransferProgress {
            peer: peer.clone(),
            object: id,
            direction: Direction::Sending,
            done,
            total: size,
        });
    };
    let ((), attempts) = with_retries(job, peer, &progress, "sending an object", |out| {
        tries += 1;
        let header = if tries == 1 {
            first.clone()
        } else {
            again.clone()
        };
        send_on(
            out,
            peer,
            header,
            object.payload.clone(),
            &progress,
            &report,
        )
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
    payload: Payload,
    progress: &Progress,
    report: &(dyn Fn(u64) + Sync),
) -> Result<(), TransportError> {
    let (mut send, mut recv) = out
        .conn
        .open_bi()
        .await
        .map_err(|e| connection_error(peer, &e))?;
    // A receiver that refuses early stops our stream; its reply still says why.
    let transfer = async {
        let written = async {
            send.write_chunk(header).await?;
            // Slices of the payload's one or two buffers: no copy. Each
            // piece QUIC takes is progress; the user's progress reports come
            // at coarser steps.
            let mut steps = ProgressSteps::new(payload.len() as u64);
            let mut done = 0u64;
            for part in payload.parts() {
                let mut at = 0;
                while at < part.len() {
                    let end = (at + PIECE).min(part.len());
                    send.write_chunk(part.slice(at..end)).await?;
                    done += (end - at) as u64;
                    progress.mark();
                    if steps.as_mut().is_some_and(|s| s.reached(done)) {
                        report(done);
                    }
                    at = end;
                }
            }
            Ok::<(), quinn::WriteError>(())
        }
        .await;
        match written {
            Ok(()) => {
                let _ = send.finish();
                // Every byte acknowledged (or the receiver stopped the
                // stream; its reply says why): progress too.
                if send.stopped().await.is_ok() {
                    progress.mark();
                }
                Ok(())
            }
            Err(quinn::WriteError::Stopped(_)) => Ok(()),
            Err(e) => Err(write_error(peer, &e)),
        }
    };
    // Until every byte is acknowledged, bytes leaving on the connection are
    // progress: QUIC sends only as acknowledgements open its window.
    let moving = async {
        let period = (progress_period(out.conn.rtt())).max(Duration::from_millis(50));
        let mut last = out.conn.stats().udp_tx.bytes;
        loop {
            tokio::time::sleep(period).await;
            let now = out.conn.stats().udp_tx.bytes;
            if now >= last + MOVING_BYTES {
                progress.mark();
            }
            last = now;
        }
    };
    tokio::select! {
        r = transfer => r?,
        () = moving => {}
    }
    let reply: DataReply = read_frame(&mut recv, MAX_REPLY_FRAME, peer, "data reply").await?;
    // The receiver finishes its side right after the reply, so the end of
    // the stream is normally here already, in the reply's packet. Taking
    // it closes the stream at both ends; dropping the stream unread would
    // send STOP_SENDING, one more packet (and one more wake-up of the peer)
    // per object. Polled once: if the end is not here, we do not wait.
    let mut end = std::pin::pin!(recv.read_to_end(0));
    let _ = std::future::poll_fn(|cx| std::task::Poll::Ready(end.as_mut().poll(cx))).await;
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
    with_retries(
        job,
        peer,
        &Progress::new(),
        "sending a control frame",
        |out| {
            let bytes = &bytes;
            async move {
                let mut control = out.control.lock().await;
                // A stop of our control stream is its peer leaving, not a
                // breach (write_error, promise S3).
                control
                    .write_all(bytes)
                    .await
                    .map_err(|e| write_error(peer, &e))
            }
        },
    )
    .await
    .map(|_| ())
}

/// Says goodbye on every outbound connection and closes every connection of
/// the job. Bounded: one second for the goodbyes to be acknowledged. After
/// an abort, the connections peers dialled to us close with
/// [`errors::CLOSE_ABORTED`] and `aborted` as the reason: they carry no
/// control frames from us, so this is how those peers learn why.
pub(super) async fn close_job(job: &Arc<JobShared>, aborted: Option<&str>) {
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
            match aborted {
                Some(reason) => {
                    let mut end = reason.len().min(errors::MAX_CLOSE_REASON);
                    while !reason.is_char_boundary(end) {
                        end -= 1;
                    }
                    conn.close(errors::CLOSE_ABORTED.into(), &reason.as_bytes()[..end]);
                }
                None => conn.close(errors::CLOSE_GOODBYE.into(), b"goodbye"),
            }
        }
    }
}
