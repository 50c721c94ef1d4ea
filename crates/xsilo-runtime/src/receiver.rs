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
    /// Peers we asked the sender to connect to because a wait needs them.
    probed: std::collections::HashSet<PartyName>,
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
            probed: std::collections::HashSet::new(),
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
                    if let Some(s) = &self.supervisor {
                        s.do_send(crate::supervisor::ErrorSeen);
                    }
                    let id = f.object;
                    self.arrive(from, id, Arrived::Failed(f));
                }
                ControlFrame::Abort { reason } => {
                    // Fail our waits now, not after a round trip through the
                    // supervisor: the peer's goodbye may be the next event,
                    // and the abort is what the waits must report.
                    self.fail_all(RuntimeError::Aborted {
                        by: from.clone(),
                        reason: reason.clone(),
                    });
                    if let Some(s) = &self.supervisor {
                        s.do_send(Abort::remote(from, reason));
                    }
                }
                ControlFrame::Heartbeat { .. } | ControlFrame::Goodbye => {}
            },
            TransportEvent::PeerRefused { party, refusal } => {
                if let Some(s) = &self.supervisor {
                    s.do_send(Abort::local(format!(
                        "party '{party}' cannot join this job: {refusal}"
                    )));
                }
            }
            TransportEvent::PeerUp { party } => {
                for tx in self.seen_waiters.remove(&party).unwrap_or_default() {
                    let _ = tx.send(());
                }
                // Back after a loss (a restart): new waits may succeed.
                if self.gone.remove(&party).is_some() {
                    if let Some(s) = &self.sender {
                        s.do_send(crate::sender::Returned(party.clone()));
                    }
                }
                self.seen.insert(party);
            }
            TransportEvent::PeerDown { party, reason } => {
                if let Some(s) = &self.sender {
                    s.do_send(crate::sender::Departed(party.clone()));
                }
                let text = match reason {
                    PeerDownReason::Goodbye => "it shut down".to_owned(),
                    other => {
                        // A lost peer is an error of the job (MISSION E7):
                        // shutdown then does not wait out sends to it.
                        if let Some(s) = &self.supervisor {
                            s.do_send(crate::supervisor::ErrorSeen);
                        }
                        other.to_string()
                    }
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
        if !self.seen.contains(&key.0) && self.probed.insert(key.0.clone()) {
            // No connection with that party yet: make sure it exists, so
            // that its absence or a refusal ends this wait (MISSION E10).
            if let Some(s) = &self.sender {
                s.do_send(crate::sender::Probe(key.0.clone()));
            }
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
        self.fail_all(msg.0);
    }
}

impl ReceiverProxy {
    fn fail_all(&mut self, error: RuntimeError) {
        for (_, waiters) in self.waiters.drain() {
            for w in waiters {
                let _ = w.tx.send(Err(error.clone()));
            }
        }
        self.failed.get_or_insert(error);
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
