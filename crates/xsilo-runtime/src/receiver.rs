//! The ReceiverProxy: the mailbox of objects pushed to this party, keyed by
//! (source party, object id), and the waiters parked on it.

use std::collections::HashMap;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;
use xsilo_transport::{PeerDownReason, TransportEvent};
use xsilo_wire::{ControlFrame, ObjectId, PartyName, RemoteErrorFrame};

use crate::error::RuntimeError;
use crate::stats::Counts;
use crate::supervisor::{Abort, CleanupSupervisor};

enum Arrived {
    Data { fingerprint: u64, payload: Bytes },
    Failed(RemoteErrorFrame),
}

struct Waiter {
    fingerprint: u64,
    tx: oneshot::Sender<Result<Bytes, RuntimeError>>,
}

/// Holds what other parties pushed here until the driver needs it; values
/// stay cached for every later consumer (MISSION M3).
pub struct ReceiverProxy {
    party: PartyName,
    mailbox: HashMap<(PartyName, ObjectId), Arrived>,
    waiters: HashMap<(PartyName, ObjectId), Vec<Waiter>>,
    gone: HashMap<PartyName, String>,
    failed: Option<RuntimeError>,
    received: HashMap<PartyName, Counts>,
    supervisor: Option<Addr<CleanupSupervisor>>,
    sender: Option<Addr<crate::sender::SenderProxy>>,
    /// Peers that have connected to us at least once, and the waiters of
    /// [`WaitSeen`].
    seen: std::collections::HashSet<PartyName>,
    seen_waiters: HashMap<PartyName, Vec<oneshot::Sender<()>>>,
}

impl ReceiverProxy {
    /// A receiver for `party`.
    pub(crate) fn new(party: PartyName) -> Self {
        Self {
            party,
            mailbox: HashMap::new(),
            waiters: HashMap::new(),
            gone: HashMap::new(),
            failed: None,
            received: HashMap::new(),
            supervisor: None,
            sender: None,
            seen: std::collections::HashSet::new(),
            seen_waiters: HashMap::new(),
        }
    }

    fn answer(
        &self,
        src: &PartyName,
        id: ObjectId,
        arrived: &Arrived,
        fingerprint: u64,
    ) -> Result<Bytes, RuntimeError> {
        match arrived {
            Arrived::Data {
                fingerprint: theirs,
                payload,
            } => {
                if *theirs != fingerprint {
                    let error = RuntimeError::Diverged {
                        here: self.party.clone(),
                        from: src.clone(),
                        object: id,
                        ours: fingerprint,
                        theirs: *theirs,
                    };
                    if let Some(s) = &self.supervisor {
                        s.do_send(Abort::local(error.to_string()));
                    }
                    return Err(error);
                }
                Ok(payload.clone())
            }
            Arrived::Failed(frame) => Err(RuntimeError::Remote {
                origin: frame.origin.clone(),
                object: frame.origin_object,
                kind: frame.kind.clone(),
                message: frame.message.clone(),
                causes: frame.causes.clone(),
            }),
        }
    }

    fn arrive(&mut self, src: PartyName, id: ObjectId, arrived: Arrived) {
        let key = (src, id);
        if self.mailbox.contains_key(&key) {
            // A resend after a lost acknowledgement: keep the first.
            return;
        }
        if let Some(waiters) = self.waiters.remove(&key) {
            for w in waiters {
                let _ = w.tx.send(self.answer(&key.0, id, &arrived, w.fingerprint));
            }
        }
        self.mailbox.insert(key, arrived);
    }

    fn peer_gone(&mut self, party: PartyName, reason: String) {
        let keys: Vec<_> = self
            .waiters
            .keys()
            .filter(|(p, _)| *p == party)
            .cloned()
            .collect();
        for key in keys {
            for w in self.waiters.remove(&key).unwrap_or_default() {
                let _ = w.tx.send(Err(RuntimeError::PeerLost {
                    party: party.clone(),
                    object: key.1,
                    reason: reason.clone(),
                }));
            }
        }
        self.gone.insert(party, reason);
    }
}

impl Actor for ReceiverProxy {
    type Context = Context<Self>;
}

/// Connects the receiver to the supervisor (set once at start).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetSupervisor(
    pub(crate) Addr<CleanupSupervisor>,
    pub(crate) Addr<crate::sender::SenderProxy>,
);

impl Handler<SetSupervisor> for ReceiverProxy {
    type Result = ();
    fn handle(&mut self, msg: SetSupervisor, _: &mut Self::Context) {
        self.supervisor = Some(msg.0);
        self.sender = Some(msg.1);
    }
}

impl StreamHandler<TransportEvent> for ReceiverProxy {
    fn handle(&mut self, event: TransportEvent, _: &mut Self::Context) {
        match event {
            TransportEvent::Object(obj) => {
                if !self
                    .mailbox
                    .contains_key(&(obj.from.clone(), obj.header.object))
                {
                    let counts = self.received.entry(obj.from.clone()).or_default();
                    counts.objects += 1;
                    counts.bytes += obj.payload.len() as u64;
                }
                let (from, header, payload) = (obj.from, obj.header, obj.payload);
                // Taken into the mailbox: acknowledge (MISSION C3).
                obj.ack.accept();
                self.arrive(
                    from,
                    header.object,
                    Arrived::Data {
                        fingerprint: header.fingerprint,
                        payload,
                    },
                );
            }
            TransportEvent::Control { from, frame } => match frame {
                ControlFrame::RemoteError(f) => {
                    let id = f.object;
                    self.arrive(from, id, Arrived::Failed(f));
                }
                ControlFrame::Abort { reason } => {
                    if let Some(s) = &self.supervisor {
                        s.do_send(Abort::remote(from, reason));
                    }
                }
                ControlFrame::Heartbeat { .. } | ControlFrame::Goodbye => {}
            },
            TransportEvent::PeerUp { party } => {
                for tx in self.seen_waiters.remove(&party).unwrap_or_default() {
                    let _ = tx.send(());
                }
                self.seen.insert(party);
            }
            TransportEvent::PeerDown { party, reason } => {
                let text = match reason {
                    PeerDownReason::Goodbye => {
                        if let Some(s) = &self.sender {
                            s.do_send(crate::sender::Departed(party.clone()));
                        }
                        "it shut down".to_owned()
                    }
                    other => other.to_string(),
                };
                tracing::info!(party = %self.party, peer = %party, reason = %text, "peer down");
                self.peer_gone(party, text);
            }
            _ => {}
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {
        // The transport's event stream ended (it closed): nothing more comes.
        let parties: Vec<_> = self.waiters.keys().map(|(p, _)| p.clone()).collect();
        for p in parties {
            self.peer_gone(p, "the local transport closed".into());
        }
    }
}

/// Waits for `id` from `src`, checking its call-site fingerprint.
#[derive(Message)]
#[rtype(result = "Result<Bytes, RuntimeError>")]
pub(crate) struct Await {
    pub(crate) src: PartyName,
    pub(crate) id: ObjectId,
    pub(crate) fingerprint: u64,
}

impl Handler<Await> for ReceiverProxy {
    type Result = ResponseFuture<Result<Bytes, RuntimeError>>;

    fn handle(&mut self, msg: Await, _: &mut Self::Context) -> Self::Result {
        let key = (msg.src, msg.id);
        if let Some(arrived) = self.mailbox.get(&key) {
            let answer = self.answer(&key.0, key.1, arrived, msg.fingerprint);
            return Box::pin(async move { answer });
        }
        if let Some(error) = &self.failed {
            let error = error.clone();
            return Box::pin(async move { Err(error) });
        }
        if let Some(reason) = self.gone.get(&key.0) {
            let error = RuntimeError::PeerLost {
                party: key.0.clone(),
                object: key.1,
                reason: reason.clone(),
            };
            return Box::pin(async move { Err(error) });
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.entry(key).or_default().push(Waiter {
            fingerprint: msg.fingerprint,
            tx,
        });
        Box::pin(async move { rx.await.unwrap_or(Err(RuntimeError::ActorGone("receiver"))) })
    }
}

/// Fails every waiter, now and later (the job aborted or shut down).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct FailAll(pub(crate) RuntimeError);

impl Handler<FailAll> for ReceiverProxy {
    type Result = ();
    fn handle(&mut self, msg: FailAll, _: &mut Self::Context) {
        for (_, waiters) in self.waiters.drain() {
            for w in waiters {
                let _ = w.tx.send(Err(msg.0.clone()));
            }
        }
        self.failed.get_or_insert(msg.0);
    }
}

/// Objects and bytes received, per source party.
#[derive(Message)]
#[rtype(result = "HashMap<PartyName, Counts>")]
pub(crate) struct ReceivedStats;

impl Handler<ReceivedStats> for ReceiverProxy {
    type Result = MessageResult<ReceivedStats>;
    fn handle(&mut self, _: ReceivedStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.received.clone())
    }
}

/// Resolves once `0` has connected to this party (now or earlier): proof
/// that it is up, for the barrier.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WaitSeen(pub(crate) PartyName);

impl Handler<WaitSeen> for ReceiverProxy {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, msg: WaitSeen, _: &mut Self::Context) -> Self::Result {
        if self.seen.contains(&msg.0) {
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        self.seen_waiters.entry(msg.0).or_default().push(tx);
        Box::pin(async move {
            // A dropped sender (receiver stopped) never counts as seen.
            if rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}
