//! A `Link`: everything this party knows and does about one peer. Sends in
//! flight (so that shutdown can wait for their acknowledgements and a peer
//! that goes down drops them at once), up and down, the probe that makes a
//! wait on a never-seen peer end, and statistics.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;
use xsilo_transport::{Delivery, OutboundObject, PeerDownReason, Transport, TransportError};
use xsilo_wire::{ControlFrame, JobName, ObjectId, PartyName};

use crate::errors::RuntimeError;
use crate::messages::{
    Down, Drain, LinkStats, Probe, Received, Report, SendControl, SendObject, Up, WaitUp,
};
use crate::metrics::LinkMetrics;
use crate::stats::Counts;

struct InFlight {
    handle: SpawnHandle,
    /// The object whose push this is, if any (its end is reported).
    object: Option<ObjectId>,
    /// Counted for drain.
    counted: bool,
}

/// One peer, seen from this party.
pub(crate) struct Link {
    me: PartyName,
    peer: PartyName,
    transport: Arc<dyn Transport>,
    report: Recipient<Report>,
    /// The peer connected (either direction) at least once.
    seen: bool,
    /// Whether our own dial to the peer has succeeded: the barrier needs
    /// it, since the peer dialling us proves nothing about the address we
    /// have for it.
    dialed: bool,
    /// We dialled it because a wait depends on it.
    probed: bool,
    /// It went down (goodbye or lost), with why; cleared if it returns.
    gone: Option<String>,
    sends: HashMap<u64, InFlight>,
    next_send: u64,
    drained: Vec<oneshot::Sender<()>>,
    up_waiters: Vec<oneshot::Sender<Result<(), RuntimeError>>>,
    sent: Counts,
    received: Counts,
    metrics: LinkMetrics,
    metrics_interval: Option<std::time::Duration>,
}

impl Link {
    pub(crate) fn new(
        (job, me, peer): (&JobName, PartyName, PartyName),
        transport: Arc<dyn Transport>,
        report: Recipient<Report>,
        metrics_interval: Option<std::time::Duration>,
    ) -> Self {
        Self {
            metrics: LinkMetrics::new(job, &me, &peer),
            metrics_interval,
            me,
            peer,
            transport,
            report,
            seen: false,
            dialed: false,
            probed: false,
            gone: None,
            sends: HashMap::new(),
            next_send: 0,
            drained: Vec::new(),
            up_waiters: Vec::new(),
            sent: Counts::default(),
            received: Counts::default(),
        }
    }

    fn sample_rtt(&self) {
        if let Some(rtt) = self.transport.rtt(&self.peer) {
            self.metrics.rtt.set(rtt.as_secs_f64());
        }
    }

    fn in_flight(&self) -> usize {
        self.sends.values().filter(|s| s.counted).count()
    }

    fn notify_drained(&mut self) {
        self.metrics.in_flight.set(self.in_flight() as f64);
        if self.in_flight() == 0 {
            for tx in self.drained.drain(..) {
                let _ = tx.send(());
            }
        }
    }

    /// Starts a send and tracks it until it ends. `counted`: drain waits for
    /// it; `report`: its failure is a sending failure of the job (else it
    /// was a courtesy, best effort).
    fn track<F>(
        &mut self,
        ctx: &mut Context<Self>,
        what: String,
        object: Option<ObjectId>,
        (counted, report): (bool, bool),
        fut: F,
    ) where
        F: std::future::Future<Output = Result<Option<Delivery>, TransportError>> + 'static,
    {
        let id = self.next_send;
        self.next_send += 1;
        let handle = ctx.spawn(fut.into_actor(self).map(move |result, act, _| {
            act.sends.remove(&id);
            if let Some(object) = object {
                act.report.do_send(Report::PushDone { object });
            }
            match result {
                Ok(Some(delivery)) => {
                    act.sent.objects += 1;
                    act.sent.bytes += delivery.bytes;
                    act.metrics.sent_objects.increment(1);
                    act.metrics.sent_bytes.increment(delivery.bytes);
                    act.metrics
                        .retries
                        .increment(u64::from(delivery.attempts.saturating_sub(1)));
                    act.sample_rtt();
                }
                Ok(None) => {}
                // A peer that said goodbye waits for nothing more; a frame
                // sent only as a courtesy may be lost.
                Err(TransportError::PeerClosed { .. } | TransportError::Closed { .. }) => {
                    tracing::debug!(party = %act.me, peer = %act.peer, "not delivered ({what}): closed");
                }
                Err(error) if !report => {
                    act.metrics.errors.increment(1);
                    tracing::debug!(party = %act.me, peer = %act.peer, %error, "{what} failed (best effort)");
                }
                Err(error) => {
                    act.metrics.errors.increment(1);
                    tracing::warn!(party = %act.me, peer = %act.peer, %error, "{what} failed");
                    act.report.do_send(Report::SendFailed {
                        peer: act.peer.clone(),
                        what,
                        error,
                    });
                }
            }
            act.notify_drained();
        }));
        self.sends.insert(
            id,
            InFlight {
                handle,
                object,
                counted,
            },
        );
        self.metrics.in_flight.set(self.in_flight() as f64);
    }

    /// Not sending to a peer that is down: the push counts as ended.
    fn skip(&self, object: Option<ObjectId>, what: &str) -> bool {
        if self.gone.is_none() {
            return false;
        }
        tracing::debug!(party = %self.me, peer = %self.peer, "not {what}: the peer is down");
        if let Some(object) = object {
            self.report.do_send(Report::PushDone { object });
        }
        true
    }
}

impl Actor for Link {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(every) = self.metrics_interval {
            ctx.run_interval(every, |act, _| act.sample_rtt());
        }
    }
}

impl Handler<SendObject> for Link {
    type Result = ();
    fn handle(&mut self, msg: SendObject, ctx: &mut Self::Context) {
        let what = format!("sending object {} to party '{}'", msg.object, self.peer);
        if self.skip(Some(msg.object), &what) {
            return;
        }
        let fut = self.transport.send_object(
            &self.peer,
            OutboundObject {
                object: msg.object,
                consumer: msg.consumer,
                fingerprint: msg.fingerprint,
                payload: msg.payload,
            },
        );
        self.track(ctx, what, Some(msg.object), (true, true), async move {
            fut.await.map(Some)
        });
    }
}

impl Handler<SendControl> for Link {
    type Result = ();
    fn handle(&mut self, msg: SendControl, ctx: &mut Self::Context) {
        // RemoteErrors and aborts are the job's; where a finished driver
        // ended is a courtesy, drained only to a peer we know (a dial to a
        // peer never met could take the whole connect bound).
        let (what, counted, report) = match &msg.frame {
            ControlFrame::RemoteError(f) => (
                format!("sending the error of object {}", f.object),
                true,
                true,
            ),
            ControlFrame::Abort { .. } => ("sending an abort".to_owned(), true, true),
            ControlFrame::Finished(_) => (
                "sending where our driver finished".to_owned(),
                self.seen,
                false,
            ),
            ControlFrame::Goodbye => ("sending a goodbye".to_owned(), false, false),
            ControlFrame::Heartbeat { .. } => ("sending a heartbeat".to_owned(), false, false),
        };
        let what = format!("{what} to party '{}'", self.peer);
        if self.skip(msg.object, &what) {
            return;
        }
        let fut = self.transport.send_control(&self.peer, msg.frame);
        self.track(ctx, what, msg.object, (counted, report), async move {
            fut.await.map(|()| None)
        });
    }
}

impl Handler<Up> for Link {
    type Result = ();
    fn handle(&mut self, _: Up, _: &mut Self::Context) {
        self.seen = true;
        if self.gone.take().is_some() {
            tracing::info!(party = %self.me, peer = %self.peer, "peer back");
        }
        // The barrier's waiters wait for our own dial (WaitUp), not for
        // this: the peer reaching us says nothing of our address for it.
    }
}

impl Handler<Down> for Link {
    type Result = ();
    fn handle(&mut self, Down(reason): Down, ctx: &mut Self::Context) {
        let lost = reason != PeerDownReason::Goodbye;
        let text = match reason {
            PeerDownReason::Goodbye => "it shut down".to_owned(),
            other => other.to_string(),
        };
        tracing::info!(party = %self.me, peer = %self.peer, reason = %text, "peer down");
        // A barrier still waiting for our dial to a peer that reached us and
        // went away: one that left on purpose was up (it finished first);
        // one that was lost fails the wait now, within the liveness bound.
        if !self.dialed && !self.up_waiters.is_empty() {
            let answer = if lost {
                Err(RuntimeError::Unreached {
                    peers: vec![self.peer.clone()],
                    reason: format!("it reached us, then was lost ({text})"),
                })
            } else {
                Ok(())
            };
            for tx in self.up_waiters.drain(..) {
                let _ = tx.send(answer.clone());
            }
        }
        // Sends still in flight to it (retrying a dial, waiting for an
        // acknowledgement) can only fail now: drop them, so that shutdown
        // does not wait out their retries.
        for (_, send) in self.sends.drain() {
            ctx.cancel_future(send.handle);
            if let Some(object) = send.object {
                self.report.do_send(Report::PushDone { object });
            }
        }
        self.notify_drained();
        self.gone = Some(text.clone());
        self.report.do_send(Report::PeerGone {
            peer: self.peer.clone(),
            reason: text,
            lost,
        });
    }
}

impl Handler<Probe> for Link {
    type Result = ();
    fn handle(&mut self, _: Probe, ctx: &mut Self::Context) {
        if let Some(reason) = &self.gone {
            self.report.do_send(Report::PeerGone {
                peer: self.peer.clone(),
                reason: reason.clone(),
                lost: false,
            });
            return;
        }
        if self.seen || self.probed {
            return;
        }
        self.probed = true;
        // Not counted in flight: shutdown does not wait for a probe.
        let fut = self.transport.connect(&self.peer);
        ctx.spawn(fut.into_actor(self).map(|result, act, _| match result {
            // We are closing: nobody waits on this dial.
            Ok(()) | Err(TransportError::Closed { .. }) => {}
            // The peer is shutting down and takes nothing more: the wait
            // that needed it ends as for a goodbye.
            Err(TransportError::PeerClosed { .. }) => {
                let reason = "it shut down".to_owned();
                act.gone = Some(reason.clone());
                act.report.do_send(Report::PeerGone {
                    peer: act.peer.clone(),
                    reason,
                    lost: false,
                });
            }
            Err(error) => {
                act.report.do_send(Report::SendFailed {
                    what: format!("connecting to party '{}' (a wait depends on it)", act.peer),
                    peer: act.peer.clone(),
                    error,
                });
            }
        }));
    }
}

impl Handler<Received> for Link {
    type Result = ();
    fn handle(&mut self, Received(bytes): Received, _: &mut Self::Context) {
        self.received.objects += 1;
        self.received.bytes += bytes;
        self.metrics.received_objects.increment(1);
        self.metrics.received_bytes.increment(bytes);
    }
}

impl Handler<Drain> for Link {
    type Result = ();
    fn handle(&mut self, Drain(tx): Drain, _: &mut Self::Context) {
        self.drained.push(tx);
        self.notify_drained();
    }
}

impl Handler<WaitUp> for Link {
    type Result = ();
    fn handle(&mut self, WaitUp(tx): WaitUp, ctx: &mut Self::Context) {
        if self.dialed {
            let _ = tx.send(Ok(()));
            return;
        }
        self.up_waiters.push(tx);
        if self.up_waiters.len() > 1 {
            // A dial for an earlier waiter is running; its answer is ours.
            return;
        }
        // Our own dial, even when the peer's connection proves it up: a
        // wrong address or port in our book shows here, at start-up.
        let fut = self.transport.connect(&self.peer);
        ctx.spawn(fut.into_actor(self).map(|result, act, _| {
            let answer = match result {
                Ok(()) => {
                    act.seen = true;
                    act.dialed = true;
                    Ok(())
                }
                Err(e) => Err(RuntimeError::from(e)),
            };
            for tx in act.up_waiters.drain(..) {
                let _ = tx.send(answer.clone());
            }
        }));
    }
}

impl Handler<LinkStats> for Link {
    type Result = MessageResult<LinkStats>;
    fn handle(&mut self, _: LinkStats, _: &mut Self::Context) -> Self::Result {
        MessageResult((self.sent, self.received))
    }
}
