//! The SenderProxy: pushes objects and control frames to peers through the
//! transport, counts what is in flight, and tells the supervisor of
//! failures.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;
use xsilo_transport::{OutboundObject, Transport, TransportError};
use xsilo_wire::{ControlFrame, ObjectId, PartyName};

use crate::stats::Counts;
use crate::supervisor::{CleanupSupervisor, SendFailed};

/// Sends for the driver; one instance per party.
pub struct SenderProxy {
    transport: Arc<dyn Transport>,
    in_flight: usize,
    drained: Vec<oneshot::Sender<()>>,
    sent: HashMap<PartyName, Counts>,
    supervisor: Option<Addr<CleanupSupervisor>>,
    /// Peers that went down (goodbye or lost): nothing more is sent to them
    /// until they are back.
    departed: std::collections::HashSet<PartyName>,
    /// Sends in flight, by id, with their destination, so that the sends to
    /// a peer that went down can be dropped instead of retried.
    sends: HashMap<u64, (PartyName, SpawnHandle)>,
    next_send: u64,
}

impl SenderProxy {
    pub(crate) fn new(transport: Arc<dyn Transport>) -> Self {
        Self {
            transport,
            in_flight: 0,
            drained: Vec::new(),
            sent: HashMap::new(),
            supervisor: None,
            departed: std::collections::HashSet::new(),
            sends: HashMap::new(),
            next_send: 0,
        }
    }

    fn skip(&self, dest: &PartyName, what: &str) -> bool {
        let skip = self.departed.contains(dest);
        if skip {
            tracing::debug!(peer = %dest, "not {what}: the peer is down");
        }
        skip
    }

    fn track<F>(&mut self, ctx: &mut Context<Self>, dest: PartyName, what: String, fut: F)
    where
        F: std::future::Future<Output = Result<Option<u64>, TransportError>> + 'static,
    {
        self.in_flight += 1;
        let id = self.next_send;
        self.next_send += 1;
        let peer = dest.clone();
        let handle = ctx.spawn(fut.into_actor(self).map(move |result, act, _| {
            act.sends.remove(&id);
            act.in_flight -= 1;
            match result {
                Ok(Some(bytes)) => {
                    let c = act.sent.entry(dest).or_default();
                    c.objects += 1;
                    c.bytes += bytes;
                }
                Ok(None) => {}
                // A peer that said goodbye waits for nothing more.
                Err(TransportError::PeerClosed { .. }) => {
                    tracing::debug!(peer = %dest, "not delivered ({what}): the peer has shut down");
                }
                Err(error) => {
                    tracing::warn!(peer = %dest, %error, "{what} failed");
                    if let Some(s) = &act.supervisor {
                        s.do_send(SendFailed { dest, what, error });
                    }
                }
            }
            act.notify_drained();
        }));
        self.sends.insert(id, (peer, handle));
    }

    fn notify_drained(&mut self) {
        if self.in_flight == 0 {
            for tx in self.drained.drain(..) {
                let _ = tx.send(());
            }
        }
    }
}

impl Actor for SenderProxy {
    type Context = Context<Self>;
}

/// Connects the sender to the supervisor (set once at start).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetSupervisor(pub(crate) Addr<CleanupSupervisor>);

impl Handler<SetSupervisor> for SenderProxy {
    type Result = ();
    fn handle(&mut self, msg: SetSupervisor, _: &mut Self::Context) {
        self.supervisor = Some(msg.0);
    }
}

/// Push an object's value to `dest`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SendObject {
    pub(crate) dest: PartyName,
    pub(crate) object: ObjectId,
    pub(crate) consumer: u64,
    pub(crate) fingerprint: u64,
    pub(crate) payload: Bytes,
}

impl Handler<SendObject> for SenderProxy {
    type Result = ();
    fn handle(&mut self, msg: SendObject, ctx: &mut Self::Context) {
        let what = format!("sending object {} to party '{}'", msg.object, msg.dest);
        if self.skip(&msg.dest, &what) {
            return;
        }
        let fut = self.transport.send_object(
            &msg.dest,
            OutboundObject {
                object: msg.object,
                consumer: msg.consumer,
                fingerprint: msg.fingerprint,
                payload: msg.payload,
            },
        );
        self.track(ctx, msg.dest, what, async move {
            fut.await.map(|d| Some(d.bytes))
        });
    }
}

/// Send a control frame to `dest`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SendControl {
    pub(crate) dest: PartyName,
    pub(crate) frame: ControlFrame,
}

impl Handler<SendControl> for SenderProxy {
    type Result = ();
    fn handle(&mut self, msg: SendControl, ctx: &mut Self::Context) {
        let what = match &msg.frame {
            ControlFrame::RemoteError(f) => format!("sending the error of object {}", f.object),
            ControlFrame::Abort { .. } => "sending an abort".to_owned(),
            ControlFrame::Goodbye => "sending a goodbye".to_owned(),
            ControlFrame::Heartbeat { .. } => "sending a heartbeat".to_owned(),
        };
        let what = format!("{what} to party '{}'", msg.dest);
        if self.skip(&msg.dest, &what) {
            return;
        }
        if let (ControlFrame::RemoteError(_), Some(s)) = (&msg.frame, &self.supervisor) {
            s.do_send(crate::supervisor::ErrorSeen);
        }
        let fut = self.transport.send_control(&msg.dest, msg.frame);
        self.track(ctx, msg.dest, what, async move { fut.await.map(|()| None) });
    }
}

/// Connect to a peer that a wait depends on, so that a peer that never
/// starts, or refuses us, fails the job instead of leaving the wait open.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Probe(pub(crate) PartyName);

impl Handler<Probe> for SenderProxy {
    type Result = ();
    fn handle(&mut self, Probe(peer): Probe, ctx: &mut Self::Context) {
        if self.departed.contains(&peer) {
            return;
        }
        let fut = self.transport.connect(&peer);
        // Not counted in flight: shutdown does not wait for a probe.
        ctx.spawn(fut.into_actor(self).map(move |result, act, _| {
            if let Err(error) = result {
                if let Some(s) = &act.supervisor {
                    s.do_send(SendFailed {
                        what: format!("connecting to party '{peer}' (a wait depends on it)"),
                        dest: peer,
                        error,
                    });
                }
            }
        }));
    }
}

/// A peer went down (goodbye or lost): nothing more is sent to it until it
/// is back.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Departed(pub(crate) PartyName);

impl Handler<Departed> for SenderProxy {
    type Result = ();
    fn handle(&mut self, msg: Departed, ctx: &mut Self::Context) {
        // Sends still in flight to it (retrying a dial, waiting for an
        // acknowledgement) can only fail now: drop them, so that shutdown
        // does not wait out their retries. Its waits ended with its loss.
        let gone: Vec<u64> = self
            .sends
            .iter()
            .filter(|(_, (dest, _))| *dest == msg.0)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some((_, handle)) = self.sends.remove(&id) {
                ctx.cancel_future(handle);
                self.in_flight -= 1;
            }
        }
        self.notify_drained();
        tracing::debug!(peer = %msg.0, "peer down: nothing more is sent to it");
        self.departed.insert(msg.0);
    }
}

/// A peer is up again (it restarted and connected).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Returned(pub(crate) PartyName);

impl Handler<Returned> for SenderProxy {
    type Result = ();
    fn handle(&mut self, msg: Returned, _: &mut Self::Context) {
        self.departed.remove(&msg.0);
    }
}

/// Resolves when nothing is in flight (every send acknowledged or failed).
/// Each send is bounded by the transport's `send_timeout`, so this is too.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Drain;

impl Handler<Drain> for SenderProxy {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, _: Drain, _: &mut Self::Context) -> Self::Result {
        if self.in_flight == 0 {
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        self.drained.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

/// Objects and bytes acknowledged, per destination.
#[derive(Message)]
#[rtype(result = "HashMap<PartyName, Counts>")]
pub(crate) struct SentStats;

impl Handler<SentStats> for SenderProxy {
    type Result = MessageResult<SentStats>;
    fn handle(&mut self, _: SentStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.sent.clone())
    }
}
