//! The coordinator: the one actor that addresses the others. It creates
//! `Objects` and one `Link` per peer before any of them handles a message,
//! routes the transport's events and the others' [`Report`]s, and drives the
//! party's [`Lifecycle`] (shutdown and abort), carrying out its actions.
//! Every trigger of shutdown or failure is a message here, handled one at a
//! time: the exactly-once guarantees need no lock (promises E8, E11).
//!
//! It is not named a supervisor: in actix (and Erlang) a supervisor
//! restarts the actors it watches, and this one restarts nothing (a
//! failure fails the job, RFC 0003); `actix::Supervisor`, which the actix
//! prelude brings in, would be shadowed by the name too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use tokio::sync::oneshot;
use xsilo_transport::{EventReceiver, Transport, TransportError, TransportEvent};
use xsilo_wire::{ControlFrame, PartyName};

use crate::actors::link::Link;
use crate::actors::objects::Objects;
use crate::actors::pool::Pool;
use crate::errors::RuntimeError;
use crate::messages::{
    AbortJob, Arrived, ArrivedError, Barrier, Down, Drain, FailAll, Finish, Flush, GatherStats,
    HeldNow, LinkStats, PeerFinished, PeerGone, Probe, PushDone, Received, Report, SendControl,
    SendObject, Shutdown, ShutdownsRun, Signal, Up, WaitUp,
};
use crate::metrics::PartyMetrics;
use crate::options::RuntimeOptions;
use crate::rules::lifecycle::{LifeAction, LifeOptions, Lifecycle};
use crate::stats::Stats;

/// Owns the party's lifecycle and the wiring between its actors.
pub(crate) struct Coordinator {
    me: PartyName,
    transport: Arc<dyn Transport>,
    objects: Addr<Objects>,
    links: BTreeMap<PartyName, Addr<Link>>,
    life: Lifecycle,
    options: RuntimeOptions,
    waiters: Vec<oneshot::Sender<Result<(), RuntimeError>>>,
    last_send_error: Option<TransportError>,
    timer: Option<SpawnHandle>,
    /// Parties that have connected in this job at least once.
    connected: std::collections::BTreeSet<PartyName>,
}

impl Coordinator {
    /// Starts the coordinator, `Objects` and the links, all wired, and feeds
    /// the transport's events to the coordinator. Returns the coordinator
    /// and `Objects`.
    pub(crate) fn launch(
        transport: Arc<dyn Transport>,
        events: EventReceiver,
        pool: Pool,
        options: RuntimeOptions,
    ) -> (Addr<Self>, Option<Addr<Objects>>) {
        let me = transport.party().clone();
        let mut peers = transport.peers();
        peers.sort();
        let mut wired = None;
        let coordinator = Coordinator::create(|ctx| {
            let report = ctx.address().recipient::<Report>();
            let objects = Objects::new(
                me.clone(),
                peers.clone(),
                options.expose_error_trace,
                options.early_bytes_per_peer,
                pool,
                report.clone(),
            )
            .start();
            let links = peers
                .iter()
                .map(|p| {
                    let link = Link::new(
                        (transport.job(), me.clone(), p.clone()),
                        transport.clone(),
                        report.clone(),
                        options.metrics_interval,
                    );
                    (p.clone(), link.start())
                })
                .collect();
            ctx.add_stream(events);
            wired = Some(objects.clone());
            let life = Lifecycle::new(
                me.clone(),
                peers.clone(),
                LifeOptions {
                    drain_timeout: options.drain_timeout,
                    finish_wait: options.finish_wait,
                    continue_waiting_for_data_sending_on_error: options
                        .continue_waiting_for_data_sending_on_error,
                    exit_on_sending_failure: options.exit_on_sending_failure,
                    exit_process: options.exit_process,
                },
            );
            Coordinator {
                me,
                transport,
                objects,
                links,
                life,
                options,
                waiters: Vec::new(),
                last_send_error: None,
                timer: None,
                connected: Default::default(),
            }
        });
        // `create` runs its closure before it returns.
        (coordinator, wired)
    }

    fn link(&self, peer: &PartyName) -> Option<&Addr<Link>> {
        self.links.get(peer)
    }

    /// Carries out the lifecycle's actions and re-arms its timer.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        while let Some(action) = self.life.poll_action() {
            match action {
                LifeAction::FailAll(error) => self.objects.do_send(FailAll(error)),
                LifeAction::SendAbort(reason) => {
                    for link in self.links.values() {
                        link.do_send(SendControl {
                            frame: ControlFrame::Abort {
                                reason: reason.clone(),
                            },
                            object: None,
                        });
                    }
                }
                LifeAction::Flush => {
                    let (tx, rx) = oneshot::channel();
                    self.objects.do_send(Flush(tx));
                    ctx.spawn(async move { rx.await.is_ok() }.into_actor(self).map(
                        |ok, act, ctx| {
                            if ok {
                                act.life.flushed(Instant::now());
                                act.drive(ctx);
                            }
                        },
                    ));
                }
                LifeAction::Drain => {
                    let waits: Vec<_> = self
                        .links
                        .values()
                        .map(|link| {
                            let (tx, rx) = oneshot::channel();
                            link.do_send(Drain(tx));
                            rx
                        })
                        .collect();
                    ctx.spawn(
                        async move {
                            for w in waits {
                                let _ = w.await;
                            }
                        }
                        .into_actor(self)
                        .map(|(), act, ctx| {
                            act.life.drained(Instant::now());
                            act.drive(ctx);
                        }),
                    );
                }
                LifeAction::Finish => {
                    let finish = self.objects.send(Finish);
                    ctx.spawn(finish.into_actor(self).map(|answer, act, ctx| {
                        if let Ok((frame, diverged)) = answer {
                            // Handed to the links before the drain starts,
                            // so the drain waits for them to leave.
                            for link in act.links.values() {
                                link.do_send(SendControl {
                                    frame: ControlFrame::Finished(frame),
                                    object: None,
                                });
                            }
                            if let Some(error) = diverged {
                                act.objects.do_send(FailAll(error.clone()));
                                act.abort_here(&error.to_string(), ctx);
                            }
                        }
                        act.life.told(Instant::now());
                        act.drive(ctx);
                    }));
                }
                LifeAction::Close => {
                    let close = match self.life.abort_closing() {
                        Some(error) => self.transport.close_aborted(error.to_string()),
                        None => self.transport.close(),
                    };
                    ctx.spawn(close.into_actor(self).map(|(), act, ctx| {
                        act.life.closed();
                        act.drive(ctx);
                    }));
                }
                LifeAction::Answer(result) => {
                    match &result {
                        Ok(()) => tracing::info!(party = %self.me, "shut down"),
                        Err(e) => tracing::info!(party = %self.me, error = %e, "ended"),
                    }
                    for w in self.waiters.drain(..) {
                        let _ = w.send(result.clone());
                    }
                }
                LifeAction::RunHandler => {
                    if let Some(handler) = self.options.failure_handler.take() {
                        tracing::warn!(party = %self.me, "running the sending-failure handler");
                        let last = self.last_send_error.clone();
                        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            handler(last.as_ref());
                        }));
                        if ran.is_err() {
                            tracing::error!(party = %self.me, "the sending-failure handler panicked");
                        }
                    }
                }
                LifeAction::Exit(status) => {
                    if self.options.exit_process {
                        tracing::error!(party = %self.me, "unintended shutdown: exiting with status {status}");
                        match &self.options.exit_hook {
                            Some(hook) => hook(status),
                            None => std::process::exit(status),
                        }
                    }
                }
            }
        }
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        if let Some(at) = self.life.poll_timeout() {
            let wait = at.saturating_duration_since(Instant::now());
            self.timer = Some(ctx.run_later(wait, |act, ctx| {
                act.timer = None;
                act.life.handle_timeout(Instant::now());
                act.drive(ctx);
            }));
        }
    }

    fn abort_here(&mut self, reason: &str, ctx: &mut Context<Self>) {
        if self.life.running() {
            tracing::error!(party = %self.me, %reason, "job aborted");
        }
        self.life.abort(None, reason, Instant::now());
        self.drive(ctx);
    }
}

impl Actor for Coordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(every) = self.options.metrics_interval else {
            return;
        };
        let gauges = PartyMetrics::new(self.transport.job(), &self.me);
        let sample = move |act: &mut Self, ctx: &mut Self::Context| {
            let gauges = gauges.clone();
            let held = act.objects.send(HeldNow);
            ctx.spawn(
                async move {
                    if let Ok(held) = held.await {
                        gauges.live_objects.set(held.objects as f64);
                        gauges.live_bytes.set(held.bytes as f64);
                        gauges.live_actors.set(held.actors as f64);
                    }
                }
                .into_actor(act),
            );
        };
        // Once now, so that the gauges exist from the start, then on.
        sample(self, ctx);
        ctx.run_interval(every, sample);
    }
}

/// The router: transport events to `Objects`, the links, the lifecycle.
impl StreamHandler<TransportEvent> for Coordinator {
    fn handle(&mut self, event: TransportEvent, ctx: &mut Self::Context) {
        match event {
            TransportEvent::Object(obj) => {
                if let Some(link) = self.link(&obj.from) {
                    link.do_send(Received(obj.payload.len() as u64));
                }
                self.objects.do_send(Arrived(obj));
            }
            TransportEvent::Control { from, frame } => match frame {
                ControlFrame::RemoteError(frame) => {
                    self.life.error_seen();
                    self.objects.do_send(ArrivedError { from, frame });
                }
                ControlFrame::Abort { reason } => {
                    if self.life.running() {
                        tracing::error!(party = %self.me, by = %from, %reason, "job aborted");
                    }
                    self.life.abort(Some(&from), &reason, Instant::now());
                    self.drive(ctx);
                }
                ControlFrame::Finished(frame) => {
                    // Compared by the table first; it reports back.
                    self.objects.do_send(PeerFinished { from, frame });
                }
                ControlFrame::Heartbeat { .. } | ControlFrame::Goodbye => {}
            },
            TransportEvent::PeerUp { party } => {
                self.connected.insert(party.clone());
                if let Some(link) = self.link(&party) {
                    link.do_send(Up);
                }
            }
            TransportEvent::PeerDown { party, reason } => {
                if let Some(link) = self.link(&party) {
                    link.do_send(Down(reason));
                }
            }
            // RFC 0003, "Who can abort a job": a party that has already
            // connected in this job proved its configuration; a dial of its
            // naming another job is its other job, or someone else holding
            // its certificate, and must not abort this one. A party that
            // never connected is misconfigured: fail fast, naming it.
            TransportEvent::PeerRefused { party, refusal } if self.connected.contains(&party) => {
                tracing::warn!(party = %self.me, peer = %party, %refusal,
                    "a dial from a party of this job, for something else, was refused; this job goes on");
            }
            TransportEvent::PeerRefused { party, refusal } => {
                let reason = format!("party '{party}' cannot join this job: {refusal}");
                self.abort_here(&reason, ctx);
            }
            TransportEvent::Progress(progress) => {
                const MIB: f64 = 1024.0 * 1024.0;
                tracing::info!(
                    party = %self.me,
                    peer = %progress.peer,
                    object = %progress.object,
                    "{} {:.1} of {:.1} MiB",
                    progress.direction,
                    progress.done as f64 / MIB,
                    progress.total as f64 / MIB,
                );
                if let Some(sink) = &self.options.progress {
                    // Full or gone: this report is dropped, never waited for.
                    let _ = sink.try_send(progress);
                }
            }
            _ => {}
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {
        // The transport's event stream ended (it closed): nothing more comes.
        for peer in self.links.keys() {
            self.objects.do_send(PeerGone {
                peer: peer.clone(),
                reason: "the local transport closed".into(),
            });
        }
    }
}

impl Handler<Report> for Coordinator {
    type Result = ();
    fn handle(&mut self, report: Report, ctx: &mut Self::Context) {
        match report {
            Report::Push { dest, push } => match self.link(&dest) {
                Some(link) => link.do_send(SendObject(push)),
                None => self.objects.do_send(PushDone(push.object)),
            },
            Report::PushError { dest, frame } => {
                self.life.error_seen();
                let object = frame.object;
                match self.link(&dest) {
                    Some(link) => link.do_send(SendControl {
                        frame: ControlFrame::RemoteError(frame),
                        object: Some(object),
                    }),
                    None => self.objects.do_send(PushDone(object)),
                }
            }
            Report::NeedPeer(peer) => {
                if let Some(link) = self.link(&peer) {
                    link.do_send(Probe);
                }
            }
            Report::Diverged(error) => {
                // The detecting party's waits fail with the divergence
                // itself; the peers learn it through the abort frame.
                self.objects.do_send(FailAll(error.clone()));
                self.abort_here(&error.to_string(), ctx);
            }
            Report::ErrorSeen => self.life.error_seen(),
            Report::PeerFinished(peer) => {
                self.life.peer_done(&peer);
                self.drive(ctx);
            }
            Report::PushDone { object } => self.objects.do_send(PushDone(object)),
            Report::SendFailed { peer, what, error } => {
                tracing::warn!(party = %self.me, %peer, %what, %error, "sending failed");
                let reason = format!("{what} failed: {error}");
                self.last_send_error = Some(error);
                self.life.send_failed(&reason, Instant::now());
                self.drive(ctx);
            }
            Report::PeerGone { peer, reason, lost } => {
                if lost {
                    // A lost peer is an error of the job (E7): shutdown then
                    // does not wait out sends to it.
                    self.life.error_seen();
                }
                self.objects.do_send(PeerGone {
                    peer: peer.clone(),
                    reason,
                });
                self.life.peer_done(&peer);
                self.drive(ctx);
            }
        }
    }
}

impl Handler<Shutdown> for Coordinator {
    type Result = ();
    fn handle(&mut self, Shutdown(tx): Shutdown, ctx: &mut Self::Context) {
        if self.life.running() {
            tracing::info!(party = %self.me, "shutting down: draining sends");
        }
        match self.life.shutdown(Instant::now()) {
            Some(result) => {
                let _ = tx.send(result);
            }
            None => self.waiters.push(tx),
        }
        self.drive(ctx);
    }
}

impl Handler<AbortJob> for Coordinator {
    type Result = ();
    fn handle(&mut self, AbortJob(reason): AbortJob, ctx: &mut Self::Context) {
        self.abort_here(&reason, ctx);
    }
}

impl Handler<Signal> for Coordinator {
    type Result = ();
    fn handle(&mut self, Signal(name): Signal, ctx: &mut Self::Context) {
        self.life.signal(name, Instant::now());
        self.drive(ctx);
    }
}

impl Handler<Barrier> for Coordinator {
    type Result = ();
    fn handle(&mut self, Barrier { bound, reply }: Barrier, ctx: &mut Self::Context) {
        let waits: Vec<_> = self
            .links
            .iter()
            .map(|(peer, link)| {
                let (tx, rx) = oneshot::channel();
                link.do_send(WaitUp(tx));
                (peer.clone(), rx)
            })
            .collect();
        // The bound is kept here, on the control thread's clock, so that a
        // driver on any executor can wait for the answer.
        ctx.spawn(
            async move {
                let mut waits = waits;
                let mut reached: Vec<PartyName> = Vec::new();
                // All dials run at once; the waits are read in order, and
                // at the bound the ones still open are looked at, so the
                // error names exactly the parties not reached.
                let all = async {
                    for (peer, w) in waits.iter_mut() {
                        match w.await {
                            Ok(Ok(())) => reached.push(peer.clone()),
                            Ok(Err(e @ RuntimeError::Unreached { .. })) => return Err(e),
                            Ok(Err(e)) => {
                                return Err(RuntimeError::Unreached {
                                    peers: vec![peer.clone()],
                                    reason: e.to_string(),
                                })
                            }
                            Err(_) => return Err(RuntimeError::ActorGone("link")),
                        }
                    }
                    Ok::<(), RuntimeError>(())
                };
                let outcome = tokio::time::timeout(bound, all).await;
                let result = match outcome {
                    Ok(r) => r,
                    Err(_) => {
                        let mut unreached = Vec::new();
                        for (p, w) in waits.iter_mut() {
                            if !reached.contains(p) && !matches!(w.try_recv(), Ok(Ok(()))) {
                                unreached.push(p.clone());
                            }
                        }
                        Err(RuntimeError::Unreached {
                            peers: unreached,
                            reason: format!(
                                "no dial succeeded within the barrier's {bound:?} \
                                 (communication.barrier_timeout)"
                            ),
                        })
                    }
                };
                let _ = reply.send(result);
            }
            .into_actor(self),
        );
    }
}

impl Handler<GatherStats> for Coordinator {
    type Result = ();
    fn handle(&mut self, GatherStats(tx): GatherStats, ctx: &mut Self::Context) {
        let links: Vec<_> = self
            .links
            .iter()
            .map(|(p, l)| (p.clone(), l.send(LinkStats)))
            .collect();
        let held = self.objects.send(HeldNow);
        ctx.spawn(
            async move {
                let mut stats = Stats::default();
                for (peer, counts) in links {
                    if let Ok((sent, received)) = counts.await {
                        if sent.objects > 0 {
                            stats.sent.insert(peer.clone(), sent);
                        }
                        if received.objects > 0 {
                            stats.received.insert(peer, received);
                        }
                    }
                }
                if let Ok(held) = held.await {
                    stats.live_objects = held.objects;
                    stats.live_bytes = held.bytes;
                    stats.live_actors = held.actors;
                }
                let _ = tx.send(stats);
            }
            .into_actor(self),
        );
    }
}

impl Handler<ShutdownsRun> for Coordinator {
    type Result = u32;
    fn handle(&mut self, _: ShutdownsRun, _: &mut Self::Context) -> u32 {
        self.life.shutdowns_run()
    }
}

/// Forwards SIGINT and SIGTERM to the coordinator as messages: tokio's
/// handler writes to a pipe, no lock is taken in signal context (E11).
pub(crate) fn watch_signals(coordinator: Addr<Coordinator>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        for (kind, name) in [
            (SignalKind::interrupt(), "SIGINT"),
            (SignalKind::terminate(), "SIGTERM"),
        ] {
            match signal(kind) {
                Ok(mut stream) => {
                    let coordinator = coordinator.clone();
                    actix_rt::spawn(async move {
                        while stream.recv().await.is_some() {
                            coordinator.do_send(Signal(name));
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "cannot watch {name}"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = coordinator;
}
