//! The in-memory transport: the same [`Transport`] trait between parties of
//! one process, for simulation mode and fast tests (promise C9).
//!
//! It keeps the semantics that matter to the runtime: objects are
//! acknowledged by the receiving runtime, the size limit and job isolation
//! are enforced, peers go up and down. Payloads are shared (`Bytes`), never
//! copied. Objects and control frames share one ordered channel per party:
//! with no bytes on a wire, nothing can queue behind a transfer.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use xsilo_transport::{MemoryNetwork, OutboundObject, Transport, TransportConfig, TransportEvent};
//! use xsilo_wire::ObjectId;
//!
//! let net = MemoryNetwork::new();
//! let job = "demo".parse().unwrap();
//! let parties = ["alice".parse().unwrap(), "bob".parse().unwrap()];
//! let alice = net.join(&job, &parties[0], &parties, TransportConfig::default()).unwrap();
//! let bob = net.join(&job, &parties[1], &parties, TransportConfig::default()).unwrap();
//! let mut inbox = bob.take_events().unwrap();
//! tokio::spawn(async move {
//!     while let Some(event) = inbox.recv().await {
//!         if let TransportEvent::Object(obj) = event {
//!             assert_eq!(&obj.payload.to_bytes()[..], b"hi");
//!             obj.ack.accept();
//!         }
//!     }
//! });
//! let object = OutboundObject { object: ObjectId(1), consumer: 0, fingerprint: 0, payload: "hi".into() };
//! alice.send_object(&parties[1], object).await.unwrap();
//! # });
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use xsilo_wire::handshake::check_header;
use xsilo_wire::{ControlFrame, DataReply, JobName, ObjectHeader, PartyName, Refusal, RefusalCode};

use crate::api::{
    AckHandle, BoxFuture, Delivery, InboundObject, OutboundObject, PeerDownReason, Transport,
    TransportEvent,
};
use crate::config::TransportConfig;
use crate::error::{SetupError, TransportError};
use crate::events::{EventReceiver, EventSender};
use crate::quic::lock;

struct Member {
    events: EventSender,
    max_message_size: u64,
    closed: CancellationToken,
}

type Registry = HashMap<PartyName, HashMap<JobName, Member>>;

/// A set of in-memory parties that can reach each other.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    members: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryNetwork { .. }")
    }
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Joins `party` to `job`; `parties` is the job's address book (names
    /// only), the local party included.
    pub fn join(
        &self,
        job: &JobName,
        party: &PartyName,
        parties: &[PartyName],
        config: TransportConfig,
    ) -> Result<MemoryTransport, SetupError> {
        config.validate()?;
        if !parties.contains(party) {
            return Err(SetupError::AddressBook(format!(
                "the parties of job '{job}' do not include the local party '{party}'"
            )));
        }
        let (tx, rx) = crate::events::channel();
        let closed = CancellationToken::new();
        let mut members = lock(&self.members);
        let slot = members.entry(party.clone()).or_default();
        if slot.contains_key(job) {
            return Err(SetupError::JobTaken(job.clone()));
        }
        slot.insert(
            job.clone(),
            Member {
                events: tx.clone(),
                max_message_size: config.max_message_size,
                closed: closed.clone(),
            },
        );
        let peers: Vec<PartyName> = parties.iter().filter(|p| *p != party).cloned().collect();
        // Tell both sides about every peer already present.
        for peer in &peers {
            if let Some(m) = members.get(peer).and_then(|jobs| jobs.get(job)) {
                let _ = m.events.send(TransportEvent::PeerUp {
                    party: party.clone(),
                });
                let _ = tx.send(TransportEvent::PeerUp {
                    party: peer.clone(),
                });
            }
        }
        Ok(MemoryTransport {
            inner: Arc::new(MemInner {
                net: self.clone(),
                job: job.clone(),
                party: party.clone(),
                peers,
                config,
                events_rx: Mutex::new(Some(rx)),
                closed,
            }),
        })
    }

    /// Removes `party` from `job` as if its process died: its peers get
    /// [`TransportEvent::PeerDown`] with [`PeerDownReason::Lost`], and its
    /// own pending operations fail.
    pub fn kill(&self, job: &JobName, party: &PartyName) {
        self.leave(job, party, PeerDownReason::Lost("killed".into()));
    }

    fn leave(&self, job: &JobName, party: &PartyName, reason: PeerDownReason) {
        let mut members = lock(&self.members);
        let Some(member) = members.get_mut(party).and_then(|jobs| jobs.remove(job)) else {
            return;
        };
        member.closed.cancel();
        for (other, jobs) in members.iter() {
            if other == party {
                continue;
            }
            if let Some(m) = jobs.get(job) {
                let _ = m.events.send(TransportEvent::PeerDown {
                    party: party.clone(),
                    reason: reason.clone(),
                });
            }
        }
    }

    fn route(
        &self,
        job: &JobName,
        dest: &PartyName,
    ) -> Result<(EventSender, u64, CancellationToken), Option<Refusal>> {
        let members = lock(&self.members);
        let Some(jobs) = members.get(dest) else {
            return Err(None);
        };
        match jobs.get(job) {
            Some(m) => Ok((m.events.clone(), m.max_message_size, m.closed.clone())),
            None => Err(Some(Refusal::new(
                RefusalCode::UnknownJob,
                format!("party '{dest}' does not serve job '{job}'"),
            ))),
        }
    }
}

struct MemInner {
    net: MemoryNetwork,
    job: JobName,
    party: PartyName,
    peers: Vec<PartyName>,
    config: TransportConfig,
    events_rx: Mutex<Option<EventReceiver>>,
    closed: CancellationToken,
}

/// One party's in-memory transport in one job.
#[derive(Clone)]
pub struct MemoryTransport {
    inner: Arc<MemInner>,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("job", &self.inner.job)
            .field("party", &self.inner.party)
            .finish()
    }
}

impl MemInner {
    fn check_peer(&self, peer: &PartyName) -> Result<(), TransportError> {
        if self.peers.contains(peer) {
            return Ok(());
        }
        Err(TransportError::UnknownParty {
            peer: peer.clone(),
            job: self.job.clone(),
            known: self
                .peers
                .iter()
                .map(PartyName::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// The peer's inbox, waiting (with the retry policy's backoff) for a
    /// peer that has not joined yet.
    async fn route(
        &self,
        peer: &PartyName,
        deadline: Instant,
    ) -> Result<(EventSender, u64, CancellationToken, u32), TransportError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if self.closed.is_cancelled() {
                return Err(TransportError::Closed {
                    party: self.party.clone(),
                });
            }
            match self.net.route(&self.job, peer) {
                Ok((tx, max, closed)) => return Ok((tx, max, closed, attempt)),
                Err(Some(refusal)) => {
                    return Err(TransportError::Refused {
                        peer: peer.clone(),
                        refusal,
                    })
                }
                Err(None) => {}
            }
            let backoff = self.config.retry.backoff(attempt);
            if attempt >= self.config.retry.max_attempts || Instant::now() + backoff > deadline {
                return Err(TransportError::Unreachable {
                    peer: peer.clone(),
                    addr: "memory".into(),
                    attempts: attempt,
                    last: format!("party '{peer}' has not joined job '{}'", self.job),
                });
            }
            tokio::time::sleep(backoff).await;
        }
    }
}

impl Transport for MemoryTransport {
    fn party(&self) -> &PartyName {
        &self.inner.party
    }

    fn job(&self) -> &JobName {
        &self.inner.job
    }

    fn peers(&self) -> Vec<PartyName> {
        self.inner.peers.clone()
    }

    fn connect(&self, peer: &PartyName) -> BoxFuture<'static, Result<(), TransportError>> {
        let inner = self.inner.clone();
        let peer = peer.clone();
        Box::pin(async move {
            inner.check_peer(&peer)?;
            let deadline = Instant::now() + inner.config.send_timeout;
            inner.route(&peer, deadline).await.map(|_| ())
        })
    }

    fn send_object(
        &self,
        peer: &PartyName,
        object: OutboundObject,
    ) -> BoxFuture<'static, Result<Delivery, TransportError>> {
        let inner = self.inner.clone();
        let peer = peer.clone();
        Box::pin(async move {
            inner.check_peer(&peer)?;
            let size = object.payload.len() as u64;
            if size > inner.config.max_message_size {
                return Err(TransportError::TooLarge {
                    peer,
                    object: object.object,
                    size,
                    limit: inner.config.max_message_size,
                });
            }
            let deadline = Instant::now() + inner.config.send_timeout;
            let timeout = || TransportError::Timeout {
                peer: peer.clone(),
                what: "sending an object",
                after: inner.config.send_timeout,
            };
            let (tx, max, peer_closed, attempts) =
                tokio::time::timeout_at(deadline, inner.route(&peer, deadline))
                    .await
                    .map_err(|_| timeout())??;
            let header = ObjectHeader {
                job: inner.job.clone(),
                src: inner.party.clone(),
                object: object.object,
                consumer: object.consumer,
                fingerprint: object.fingerprint,
                payload_len: size,
                // The memory transport never loses an acknowledgement.
                resend: false,
            };
            if let Err(refusal) = check_header(&header, &inner.job, &inner.party, max) {
                return Err(TransportError::Refused { peer, refusal });
            }
            let (ack, answer) = AckHandle::new();
            let event = TransportEvent::Object(InboundObject {
                from: inner.party.clone(),
                header,
                payload: object.payload,
                ack,
            });
            // A send error drops the event and with it the AckHandle, which
            // answers "unavailable" below.
            let _ = tx.send(event);
            let reply = tokio::select! {
                r = answer => r.unwrap_or(DataReply::Refused(Refusal::new(RefusalCode::Unavailable, "the receiver is gone"))),
                () = tokio::time::sleep_until(deadline) => return Err(timeout()),
                () = peer_closed.cancelled() => return Err(TransportError::PeerLost { peer, reason: "it left the in-memory network".into() }),
                () = inner.closed.cancelled() => return Err(TransportError::Closed { party: inner.party.clone() }),
            };
            match reply {
                DataReply::Ack => Ok(Delivery {
                    attempts,
                    bytes: size,
                }),
                DataReply::Refused(refusal) => Err(TransportError::Refused { peer, refusal }),
            }
        })
    }

    fn send_control(
        &self,
        peer: &PartyName,
        frame: ControlFrame,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        let inner = self.inner.clone();
        let peer = peer.clone();
        Box::pin(async move {
            inner.check_peer(&peer)?;
            let deadline = Instant::now() + inner.config.send_timeout;
            let (tx, _, _, _) = inner.route(&peer, deadline).await?;
            // In memory the peers are this process's own: no credit needed.
            if tx.send(TransportEvent::Control {
                from: inner.party.clone(),
                frame,
            }) {
                Ok(())
            } else {
                Err(TransportError::PeerLost {
                    peer,
                    reason: "its inbox is closed".into(),
                })
            }
        })
    }

    fn take_events(&self) -> Option<EventReceiver> {
        lock(&self.inner.events_rx).take()
    }

    fn close(&self) -> BoxFuture<'static, ()> {
        let inner = self.inner.clone();
        Box::pin(async move {
            for peer in &inner.peers {
                if let Ok((tx, _, _)) = inner.net.route(&inner.job, peer) {
                    let _ = tx.send(TransportEvent::Control {
                        from: inner.party.clone(),
                        frame: ControlFrame::Goodbye,
                    });
                }
            }
            inner
                .net
                .leave(&inner.job, &inner.party, PeerDownReason::Goodbye);
            inner.closed.cancel();
        })
    }
}
