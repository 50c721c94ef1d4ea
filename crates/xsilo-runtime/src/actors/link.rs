//! A `Link`: the shell around one peer's [`PeerState`]. It feeds the rules
//! what the coordinator asks (send, probe, drain, wait until up) and what
//! the transport reports (up, down, the end of a send or a dial), and
//! carries out their [`PeerAction`]s: it starts the sends and dials on the
//! transport, cancels them, answers the drain's and the barrier's waiters,
//! reports to the coordinator, and keeps the metrics.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;
use xsilo_transport::{Delivery, Transport, TransportError};
use xsilo_wire::{JobName, PartyName};

use crate::errors::RuntimeError;
use crate::messages::{
    Down, Drain, LinkStats, Probe, Received, Report, SendControl, SendObject, Up, WaitUp,
};
use crate::metrics::LinkMetrics;
use crate::rules::peer::{PeerAction, PeerState, SendId};

/// One peer, seen from this party.
pub(crate) struct Link {
    state: PeerState,
    transport: Arc<dyn Transport>,
    report: Recipient<Report>,
    /// The sends the rules started, to cancel them.
    sends: HashMap<SendId, SpawnHandle>,
    drained: Vec<oneshot::Sender<()>>,
    up_waiters: Vec<oneshot::Sender<Result<(), RuntimeError>>>,
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
            state: PeerState::new(me, peer),
            transport,
            report,
            sends: HashMap::new(),
            drained: Vec::new(),
            up_waiters: Vec::new(),
        }
    }

    fn sample_rtt(&self) {
        if let Some(rtt) = self.transport.rtt(self.state.peer()) {
            self.metrics.rtt.set(rtt.as_secs_f64());
        }
    }

    /// Starts send `send` and reports its end to the rules.
    fn spawn_send<F>(&mut self, ctx: &mut Context<Self>, send: SendId, fut: F)
    where
        F: std::future::Future<Output = Result<Option<Delivery>, TransportError>> + 'static,
    {
        let handle = ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.sends.remove(&send);
            act.state.send_ended(send, result);
            act.pump(ctx);
        }));
        self.sends.insert(send, handle);
    }

    /// Carries out every action the rules queued.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while let Some(action) = self.state.poll_action() {
            match action {
                PeerAction::SendObject { send, push } => {
                    let fut = self.transport.send_object(self.state.peer(), push);
                    self.spawn_send(ctx, send, async move { fut.await.map(Some) });
                }
                PeerAction::SendControl { send, frame } => {
                    let fut = self.transport.send_control(self.state.peer(), frame);
                    self.spawn_send(ctx, send, async move { fut.await.map(|()| None) });
                }
                PeerAction::Cancel(send) => {
                    if let Some(handle) = self.sends.remove(&send) {
                        ctx.cancel_future(handle);
                    }
                }
                PeerAction::Dial(dial) => {
                    let fut = self.transport.connect(self.state.peer());
                    ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
                        act.state.dial_ended(dial, result);
                        act.pump(ctx);
                    }));
                }
                PeerAction::PushDone(object) => self.report.do_send(Report::PushDone { object }),
                PeerAction::Delivered(delivery) => {
                    self.metrics.sent_objects.increment(1);
                    self.metrics.sent_bytes.increment(delivery.bytes);
                    self.metrics
                        .retries
                        .increment(u64::from(delivery.attempts.saturating_sub(1)));
                    self.sample_rtt();
                }
                PeerAction::SendError => self.metrics.errors.increment(1),
                PeerAction::Failed { what, error } => self.report.do_send(Report::SendFailed {
                    peer: self.state.peer().clone(),
                    what,
                    error,
                }),
                PeerAction::PeerGone { reason, lost } => self.report.do_send(Report::PeerGone {
                    peer: self.state.peer().clone(),
                    reason,
                    lost,
                }),
                PeerAction::AnswerUp(answer) => {
                    for tx in self.up_waiters.drain(..) {
                        let _ = tx.send(answer.clone());
                    }
                }
                PeerAction::Drained => {
                    for tx in self.drained.drain(..) {
                        let _ = tx.send(());
                    }
                }
            }
        }
        self.metrics.in_flight.set(self.state.in_flight() as f64);
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
    fn handle(&mut self, SendObject(push): SendObject, ctx: &mut Self::Context) {
        self.state.send_object(push);
        self.pump(ctx);
    }
}

impl Handler<SendControl> for Link {
    type Result = ();
    fn handle(&mut self, msg: SendControl, ctx: &mut Self::Context) {
        self.state.send_control(msg.frame, msg.object);
        self.pump(ctx);
    }
}

impl Handler<Up> for Link {
    type Result = ();
    fn handle(&mut self, _: Up, ctx: &mut Self::Context) {
        self.state.up();
        self.pump(ctx);
    }
}

impl Handler<Down> for Link {
    type Result = ();
    fn handle(&mut self, Down(reason): Down, ctx: &mut Self::Context) {
        self.state.down(&reason);
        self.pump(ctx);
    }
}

impl Handler<Probe> for Link {
    type Result = ();
    fn handle(&mut self, _: Probe, ctx: &mut Self::Context) {
        self.state.probe();
        self.pump(ctx);
    }
}

impl Handler<Received> for Link {
    type Result = ();
    fn handle(&mut self, Received(bytes): Received, _: &mut Self::Context) {
        self.state.received(bytes);
        self.metrics.received_objects.increment(1);
        self.metrics.received_bytes.increment(bytes);
    }
}

impl Handler<Drain> for Link {
    type Result = ();
    fn handle(&mut self, Drain(tx): Drain, ctx: &mut Self::Context) {
        self.drained.push(tx);
        self.state.drain();
        self.pump(ctx);
    }
}

impl Handler<WaitUp> for Link {
    type Result = ();
    fn handle(&mut self, WaitUp(tx): WaitUp, ctx: &mut Self::Context) {
        self.up_waiters.push(tx);
        self.state.wait_up();
        self.pump(ctx);
    }
}

impl Handler<LinkStats> for Link {
    type Result = MessageResult<LinkStats>;
    fn handle(&mut self, _: LinkStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.state.counts())
    }
}
