//! Two or three parties' rules stepped against each other in memory,
//! deterministically, with a virtual clock (the way `quinn-proto`'s tests
//! step a pair of endpoints): the real [`ObjectTable`], [`Lifecycle`] and
//! one [`PeerState`] per peer of every party, with no actor, socket,
//! thread or sleep. A scenario feeds every party the same driver program
//! (or, for a divergence, different ones), runs the parties until nothing
//! moves, and looks at what each ended with and what crossed the wire.
//!
//! # The mapping, as the actors do it
//!
//! Every action is carried out as the actors carry it out
//! (`actors/objects.rs`, `actors/coordinator.rs`, `actors/link.rs`), and
//! every message between parties becomes the event the coordinator makes of
//! the transport's event:
//!
//! | rule action | what the actors do | here |
//! |---|---|---|
//! | table `Run`, `CreateActor` | a worker runs the body, `completed` / `actor_created` | a `Completed` / `Created` event to the same party, queued (bodies named in [`Sim::fail_body`] fail with a task error, the others return their own name) |
//! | table `Push` | `Report::Push`: link's `send_object`, or `push_done` without a link | the same |
//! | table `PushError` | `error_seen`, link's `send_control(RemoteError, Some(object))` | the same |
//! | table `Answer` | the `get` caller's answer | [`SimParty::answers`] (a second answer for one get fails the test) |
//! | table `NeedPeer` | link's `probe` | the same |
//! | table `Diverged` | `FailAll` + `abort_here` | the same, recorded in [`SimParty::diverged`] |
//! | table `ErrorSeen` | lifecycle's `error_seen` | the same |
//! | life `FailAll` | table's `fail_all` | the same |
//! | life `SendAbort` | every link's `send_control(Abort)` | the same |
//! | life `Flush` | `flushed` once the table is flushed | the same, checked after each step |
//! | life `Drain` | every link's `drain`; `drained` when all answered | the same |
//! | life `Finish` | table's `finish`; `Finished` to every link; on a divergence `FailAll` + abort; `told` | the same |
//! | life `Close` | transport `close` / `close_aborted`, then `closed`; the event stream ends: table `peer_gone` for every peer | the in-memory transport's close: every live peer gets `PeerDown(Goodbye)`; then the same |
//! | life `Answer`, `RunHandler`, `Exit` | shutdown callers, the handler, the exit | counted in [`SimParty`] |
//! | link `SendObject` / `SendControl` | transport send | a message on the wire (FIFO); the receiver's ack ends the send (`Ok(Some(Delivery))`), a control frame's delivery ends it (`Ok(None)`); a message to a closed party ends with `PeerClosed`, to a lost one never |
//! | link `Cancel` | cancel the send | the message leaves the wire if still on it |
//! | link `Dial` | transport `connect`, `dial_ended` | `Ok` to a live party, `PeerClosed` to a closed one, never to a lost one |
//! | link `PushDone` | `Report::PushDone`: table's `push_done` | the same |
//! | link `Failed` | lifecycle's `send_failed("{what} failed: {error}")` | the same |
//! | link `PeerGone` | `error_seen` if lost; table `peer_gone`; life `peer_done` | the same |
//! | link `Drained` | answers the drain's waiters | the same |
//! | transport `Object` | link `received`; `Objects::take` (early bound, deferral), ack, table `arrived` | the same |
//! | transport `RemoteError` | `error_seen`; table `arrived_error` | the same |
//! | transport `Abort` | lifecycle `abort(Some(from))` | the same |
//! | transport `Finished` | table `peer_finished`, then life `peer_done` | the same |
//! | transport `PeerUp` / `PeerDown` | link `up` / `down` | `PeerUp` at both ends before the first message between two parties; `PeerDown(TimedOut)` [`Sim::lose`]'s bound after a party is lost |
//!
//! Each event's consequences are carried out at once and in the order the
//! rules queue them; the actors' mailboxes keep that order between any two
//! actors, and the wire keeps it between two parties. Time passes only when
//! nothing else can happen: the clock jumps to the next lifecycle deadline
//! or scheduled event.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use xsilo_transport::{Delivery, OutboundObject, PeerDownReason, TransportError};
use xsilo_wire::payload::Payload;
use xsilo_wire::{Consumer, ControlFrame, Fingerprint, ObjectId, PartyName};

use crate::call::ObjRef;
use crate::errors::{RuntimeError, TaskError};
use crate::rules::lifecycle::{LifeAction, LifeOptions, Lifecycle};
use crate::rules::object_table::{Action, CallId, GetId, ObjectTable, Op, Submission};
use crate::rules::peer::{Dial, PeerAction, PeerState, SendId};

/// A body, as the table holds it: its name.
pub(crate) type Body = &'static str;

/// A party name.
pub(crate) fn p(s: &str) -> PartyName {
    s.parse().unwrap()
}

/// Object `id` made in `owner`, with a fingerprint of its id.
pub(crate) fn r(id: u64, owner: &str) -> ObjRef {
    ObjRef {
        id: ObjectId(id),
        owner: p(owner),
        fingerprint: Fingerprint(1000 + id),
    }
}

/// A task in `party` consuming `inputs` and making `out`.
pub(crate) fn task(party: &str, inputs: Vec<ObjRef>, out: ObjRef, body: Body) -> Submission<Body> {
    Submission {
        party: p(party),
        inputs,
        consumer: Consumer::Call(out.id),
        outputs: vec![out],
        op: Op::Task(body),
    }
}

/// What reaches a party: from the wire, from its own worker pool, or from
/// its transport.
#[derive(Debug)]
enum Event {
    Object {
        from: PartyName,
        send: SendId,
        push: OutboundObject,
    },
    Control {
        from: PartyName,
        send: SendId,
        frame: ControlFrame,
    },
    Up(PartyName),
    Down(PartyName, PeerDownReason),
    SendEnded {
        peer: PartyName,
        send: SendId,
        result: Result<Option<Delivery>, TransportError>,
    },
    DialEnded {
        peer: PartyName,
        dial: Dial,
        result: Result<(), TransportError>,
    },
    Completed {
        call: CallId,
        result: Result<Vec<Payload>, RuntimeError>,
    },
    Created(ObjectId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Alive,
    Closed,
    Lost,
}

/// The wire, the clock and what happened, shared by the parties.
#[derive(Debug)]
struct Net {
    now: Instant,
    queue: VecDeque<(PartyName, Event)>,
    status: BTreeMap<PartyName, Status>,
    connected: BTreeSet<(PartyName, PartyName)>,
    failing: HashMap<Body, &'static str>,
    trace: Vec<String>,
}

impl Net {
    /// Connects `a` and `b` (both see `PeerUp`) unless they are.
    fn connect(&mut self, a: &PartyName, b: &PartyName) {
        let key = if a < b {
            (a.clone(), b.clone())
        } else {
            (b.clone(), a.clone())
        };
        if self.connected.insert(key) {
            self.queue.push_back((a.clone(), Event::Up(b.clone())));
            self.queue.push_back((b.clone(), Event::Up(a.clone())));
        }
    }

    fn send(&mut self, from: &PartyName, to: &PartyName, event: Event, what: String) {
        self.connect(from, to);
        self.trace.push(format!("{from} -> {to}: {what}"));
        self.queue.push_back((to.clone(), event));
    }
}

/// One party: its three kinds of rules and what its shell saw.
#[derive(Debug)]
pub(crate) struct SimParty {
    me: PartyName,
    /// Its object table.
    pub(crate) table: ObjectTable<Body>,
    /// Its lifecycle.
    pub(crate) life: Lifecycle,
    links: BTreeMap<PartyName, PeerState>,
    flush_waiting: bool,
    drains: Vec<BTreeSet<PartyName>>,
    deferred: BTreeMap<PartyName, VecDeque<(SendId, OutboundObject)>>,
    /// Every `get` answer.
    pub(crate) answers: HashMap<GetId, Result<Vec<Payload>, RuntimeError>>,
    /// The bodies run here, in order.
    pub(crate) ran: Vec<Body>,
    /// Every divergence the table reported.
    pub(crate) diverged: Vec<RuntimeError>,
    /// Every answer to the shutdown callers (`LifeAction::Answer`).
    pub(crate) ended: Vec<Result<(), RuntimeError>>,
    /// How many times the sending-failure handler ran.
    pub(crate) handler_runs: u32,
}

impl SimParty {
    fn new(me: PartyName, all: &[PartyName], options: LifeOptions) -> Self {
        let peers: Vec<PartyName> = all.iter().filter(|q| **q != me).cloned().collect();
        Self {
            table: ObjectTable::new(me.clone(), peers.clone(), false),
            life: Lifecycle::new(me.clone(), peers.clone(), options),
            links: peers
                .iter()
                .map(|q| (q.clone(), PeerState::new(me.clone(), q.clone())))
                .collect(),
            me,
            flush_waiting: false,
            drains: Vec::new(),
            deferred: BTreeMap::new(),
            answers: HashMap::new(),
            ran: Vec::new(),
            diverged: Vec::new(),
            ended: Vec::new(),
            handler_runs: 0,
        }
    }

    /// One event from outside, then everything it sets off here.
    fn handle(&mut self, event: Event, net: &mut Net) {
        let now = net.now;
        match event {
            Event::Object { from, send, push } => {
                if let Some(link) = self.links.get_mut(&from) {
                    link.received(push.payload.len() as u64);
                }
                self.take(from, send, push, net);
            }
            Event::Control { from, send, frame } => {
                net.queue.push_back((
                    from.clone(),
                    Event::SendEnded {
                        peer: self.me.clone(),
                        send,
                        result: Ok(None),
                    },
                ));
                match frame {
                    ControlFrame::RemoteError(frame) => {
                        self.life.error_seen();
                        self.table.arrived_error(&from, &frame);
                    }
                    ControlFrame::Abort { reason } => self.life.abort(Some(&from), &reason, now),
                    ControlFrame::Finished(frame) => {
                        self.table.peer_finished(&from, frame);
                        self.pump(net);
                        self.life.peer_done(&from);
                    }
                    ControlFrame::Heartbeat { .. } | ControlFrame::Goodbye => {}
                }
            }
            Event::Up(peer) => self.link(&peer).up(),
            Event::Down(peer, reason) => self.link(&peer).down(&reason),
            Event::SendEnded { peer, send, result } => self.link(&peer).send_ended(send, result),
            Event::DialEnded { peer, dial, result } => self.link(&peer).dial_ended(dial, result),
            Event::Completed { call, result } => self.table.completed(call, result),
            Event::Created(actor) => self.table.actor_created(actor, Ok(())),
        }
        self.pump(net);
    }

    fn link(&mut self, peer: &PartyName) -> &mut PeerState {
        self.links.get_mut(peer).expect("a peer of the job")
    }

    /// `Objects::take`: deferred past the early bound, else accepted.
    fn take(&mut self, from: PartyName, send: SendId, push: OutboundObject, net: &mut Net) {
        let queue = self.deferred.entry(from.clone()).or_default();
        let room = self
            .table
            .early_room(&from, push.object, push.payload.len() as u64);
        if !queue.is_empty() || !room {
            queue.push_back((send, push));
            return;
        }
        self.accept(from, send, push, net);
    }

    /// `Objects::accept`: acknowledged, then given to the table.
    fn accept(&mut self, from: PartyName, send: SendId, push: OutboundObject, net: &mut Net) {
        net.trace
            .push(format!("{} acks {} from {from}", self.me, push.object));
        net.queue.push_back((
            from.clone(),
            Event::SendEnded {
                peer: self.me.clone(),
                send,
                result: Ok(Some(Delivery {
                    attempts: 1,
                    bytes: push.payload.len() as u64,
                })),
            },
        ));
        self.table.arrived(
            &from,
            push.object,
            Fingerprint(push.fingerprint),
            Consumer::from_wire(push.consumer),
            false,
            push.payload,
        );
    }

    /// `Objects::take_deferred`.
    fn take_deferred(&mut self, net: &mut Net) {
        let peers: Vec<PartyName> = self.deferred.keys().cloned().collect();
        for peer in peers {
            while let Some((send, push)) =
                self.deferred.get_mut(&peer).and_then(VecDeque::pop_front)
            {
                let len = push.payload.len() as u64;
                if !self.table.early_room(&peer, push.object, len) {
                    self.deferred
                        .get_mut(&peer)
                        .unwrap()
                        .push_front((send, push));
                    break;
                }
                self.accept(peer.clone(), send, push, net);
            }
        }
        self.deferred.retain(|_, q| !q.is_empty());
    }

    /// Carries out every queued action of every rule until none is left.
    fn pump(&mut self, net: &mut Net) {
        loop {
            let mut moved = false;
            self.take_deferred(net);
            while let Some(action) = self.table.poll_action() {
                moved = true;
                self.on_table(action, net);
            }
            if self.flush_waiting && self.table.flushed() {
                moved = true;
                self.flush_waiting = false;
                self.life.flushed(net.now);
            }
            while let Some(action) = self.life.poll_action() {
                moved = true;
                self.on_life(action, net);
            }
            let peers: Vec<PartyName> = self.links.keys().cloned().collect();
            for peer in peers {
                while let Some(action) = self.link(&peer).poll_action() {
                    moved = true;
                    self.on_peer(&peer, action, net);
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// `Objects::pump` and the coordinator's `Report` handler.
    fn on_table(&mut self, action: Action<Body>, net: &mut Net) {
        match action {
            Action::Run {
                call,
                body,
                outputs,
                first,
                ..
            } => {
                self.ran.push(body);
                let result = match net.failing.get(body) {
                    Some(kind) => Err(RuntimeError::Task {
                        party: self.me.clone(),
                        object: first,
                        name: Some(body.into()),
                        error: Box::new(TaskError {
                            kind: (*kind).to_owned(),
                            message: "secret".into(),
                            causes: Vec::new(),
                        }),
                    }),
                    None => Ok(vec![Payload::from(body); outputs]),
                };
                net.queue
                    .push_back((self.me.clone(), Event::Completed { call, result }));
            }
            Action::CreateActor { actor, .. } => {
                net.queue
                    .push_back((self.me.clone(), Event::Created(actor)));
            }
            Action::DropActor(_) => {}
            Action::Push { dest, push } => match self.links.get_mut(&dest) {
                Some(link) => link.send_object(push),
                None => self.table.push_done(push.object),
            },
            Action::PushError { dest, frame } => {
                self.life.error_seen();
                let object = frame.object;
                match self.links.get_mut(&dest) {
                    Some(link) => link.send_control(ControlFrame::RemoteError(frame), Some(object)),
                    None => self.table.push_done(object),
                }
            }
            Action::Answer { get, result } => {
                let earlier = self.answers.insert(get, result);
                assert!(earlier.is_none(), "{}: get {get:?} answered twice", self.me);
            }
            Action::NeedPeer(peer) => {
                if let Some(link) = self.links.get_mut(&peer) {
                    link.probe();
                }
            }
            Action::Diverged(error) => {
                self.diverged.push(error.clone());
                self.table.fail_all(error.clone());
                self.life.abort(None, &error.to_string(), net.now);
            }
            Action::ErrorSeen => self.life.error_seen(),
        }
    }

    /// `Coordinator::drive`.
    fn on_life(&mut self, action: LifeAction, net: &mut Net) {
        let now = net.now;
        match action {
            LifeAction::FailAll(error) => self.table.fail_all(error),
            LifeAction::SendAbort(reason) => {
                for link in self.links.values_mut() {
                    link.send_control(
                        ControlFrame::Abort {
                            reason: reason.clone(),
                        },
                        None,
                    );
                }
            }
            LifeAction::Flush => self.flush_waiting = true,
            LifeAction::Drain => {
                if self.links.is_empty() {
                    self.life.drained(now);
                    return;
                }
                self.drains.push(self.links.keys().cloned().collect());
                for link in self.links.values_mut() {
                    link.drain();
                }
            }
            LifeAction::Finish => {
                let frame = self.table.finish();
                // `Objects` answers `Finish` with the divergence its pump saw.
                let mut diverged = None;
                while let Some(action) = self.table.poll_action() {
                    match action {
                        Action::Diverged(e) => {
                            self.diverged.push(e.clone());
                            diverged = Some(e);
                        }
                        other => self.on_table(other, net),
                    }
                }
                for link in self.links.values_mut() {
                    link.send_control(ControlFrame::Finished(frame), None);
                }
                if let Some(error) = diverged {
                    self.table.fail_all(error.clone());
                    self.life.abort(None, &error.to_string(), now);
                }
                self.life.told(now);
            }
            LifeAction::Close => {
                net.trace.push(format!("{} closes", self.me));
                net.status.insert(self.me.clone(), Status::Closed);
                let live: Vec<PartyName> = net
                    .status
                    .iter()
                    .filter(|(q, s)| **q != self.me && **s == Status::Alive)
                    .map(|(q, _)| q.clone())
                    .collect();
                for q in live {
                    net.trace.push(format!("{} -> {q}: goodbye", self.me));
                    net.queue
                        .push_back((q, Event::Down(self.me.clone(), PeerDownReason::Goodbye)));
                }
                self.life.closed();
                // The transport's event stream ends.
                for peer in self.links.keys().cloned().collect::<Vec<_>>() {
                    self.table.peer_gone(&peer, "the local transport closed");
                }
            }
            LifeAction::Answer(result) => self.ended.push(result),
            LifeAction::RunHandler => self.handler_runs += 1,
            LifeAction::Exit(_) => {}
        }
    }

    /// `Link::pump` and the coordinator's `Report` handler.
    fn on_peer(&mut self, peer: &PartyName, action: PeerAction, net: &mut Net) {
        let me = self.me.clone();
        match action {
            PeerAction::SendObject { send, push } => {
                let what = format!("object {}", push.object);
                let event = Event::Object {
                    from: me.clone(),
                    send,
                    push,
                };
                net.send(&me, peer, event, what);
            }
            PeerAction::SendControl { send, frame } => {
                let what = match &frame {
                    ControlFrame::RemoteError(f) => format!("error of {}", f.object),
                    ControlFrame::Abort { .. } => "abort".to_owned(),
                    ControlFrame::Finished(_) => "finished".to_owned(),
                    other => format!("{other:?}"),
                };
                let event = Event::Control {
                    from: me.clone(),
                    send,
                    frame,
                };
                net.send(&me, peer, event, what);
            }
            PeerAction::Cancel(cancelled) => net.queue.retain(|(to, event)| {
                !(to == peer
                    && matches!(event,
                        Event::Object { from, send, .. } | Event::Control { from, send, .. }
                            if *from == me && *send == cancelled))
            }),
            PeerAction::Dial(dial) => match net.status[peer] {
                Status::Alive => {
                    net.connect(&me, peer);
                    net.queue.push_back((
                        me,
                        Event::DialEnded {
                            peer: peer.clone(),
                            dial,
                            result: Ok(()),
                        },
                    ));
                }
                Status::Closed => net.queue.push_back((
                    me,
                    Event::DialEnded {
                        peer: peer.clone(),
                        dial,
                        result: Err(TransportError::PeerClosed { peer: peer.clone() }),
                    },
                )),
                Status::Lost => {}
            },
            PeerAction::PushDone(object) => self.table.push_done(object),
            PeerAction::Delivered(_) | PeerAction::SendError | PeerAction::AnswerUp(_) => {}
            PeerAction::Failed { what, error } => {
                self.life
                    .send_failed(&format!("{what} failed: {error}"), net.now);
            }
            PeerAction::PeerGone { reason, lost } => {
                if lost {
                    self.life.error_seen();
                }
                self.table.peer_gone(peer, &reason);
                self.life.peer_done(peer);
            }
            PeerAction::Drained => {
                for waiting in &mut self.drains {
                    waiting.remove(peer);
                }
                let before = self.drains.len();
                self.drains.retain(|w| !w.is_empty());
                for _ in self.drains.len()..before {
                    self.life.drained(net.now);
                }
            }
        }
    }
}

/// Parties stepped against each other.
#[derive(Debug)]
pub(crate) struct Sim {
    start: Instant,
    net: Net,
    parties: BTreeMap<PartyName, SimParty>,
    /// Events due at a virtual time (in order of time, then of scheduling).
    timers: BTreeMap<(Instant, u64), (PartyName, Event)>,
    scheduled: u64,
}

/// The lifecycle settings of every party (a drain bound longer than the
/// abort grace, a finish wait, no process to exit).
pub(crate) fn life_options() -> LifeOptions {
    LifeOptions {
        drain_timeout: Duration::from_secs(60),
        finish_wait: Duration::from_secs(10),
        continue_waiting_for_data_sending_on_error: false,
        exit_on_sending_failure: false,
        exit_process: false,
    }
}

impl Sim {
    /// A job of these parties, all running, none connected yet.
    pub(crate) fn new(names: &[&str]) -> Self {
        let all: Vec<PartyName> = names.iter().map(|n| p(n)).collect();
        let start = Instant::now();
        Self {
            start,
            net: Net {
                now: start,
                queue: VecDeque::new(),
                status: all.iter().map(|q| (q.clone(), Status::Alive)).collect(),
                connected: BTreeSet::new(),
                failing: HashMap::new(),
                trace: Vec::new(),
            },
            parties: all
                .iter()
                .map(|q| (q.clone(), SimParty::new(q.clone(), &all, life_options())))
                .collect(),
            timers: BTreeMap::new(),
            scheduled: 0,
        }
    }

    /// Runs of `body` fail with a task error of this kind.
    pub(crate) fn fail_body(&mut self, body: Body, kind: &'static str) {
        self.net.failing.insert(body, kind);
    }

    /// Party `name`.
    pub(crate) fn party(&self, name: &str) -> &SimParty {
        &self.parties[&p(name)]
    }

    /// What crossed the wire and what happened at the parties, in order:
    /// `"alice -> bob: object #1"`, `"bob acks #1 from alice"`, `"alice -> bob:
    /// error of #1"`, `"... abort"`, `"... finished"`, `"alice closes"`,
    /// `"alice -> bob: goodbye"`.
    pub(crate) fn trace(&self) -> &[String] {
        &self.net.trace
    }

    /// Virtual time since the start.
    pub(crate) fn elapsed(&self) -> Duration {
        self.net.now - self.start
    }

    /// Driver code at one party, then what it sets off there.
    pub(crate) fn at(&mut self, name: &str, driver: impl FnOnce(&mut SimParty, Instant)) {
        let party = self.parties.get_mut(&p(name)).expect("a party of the job");
        driver(party, self.net.now);
        party.pump(&mut self.net);
    }

    /// A call of the driver program, made at every live party.
    pub(crate) fn submit(&mut self, call: impl Fn() -> Submission<Body>) {
        for name in self.live() {
            self.at(name.as_str(), |q, _| q.table.submit(call()));
        }
    }

    /// A `get` of the driver program, at every live party.
    pub(crate) fn get(&mut self, get: u64, refs: &[ObjRef]) {
        for name in self.live() {
            self.at(name.as_str(), |q, _| q.table.get(GetId(get), refs));
        }
    }

    /// `shutdown()` at every live party (a result at once is recorded as
    /// an answer).
    pub(crate) fn shutdown(&mut self) {
        for name in self.live() {
            self.at(name.as_str(), |q, now| {
                if let Some(result) = q.life.shutdown(now) {
                    q.ended.push(result);
                }
            });
        }
    }

    fn live(&self) -> Vec<PartyName> {
        self.net
            .status
            .iter()
            .filter(|(_, s)| **s == Status::Alive)
            .map(|(q, _)| q.clone())
            .collect()
    }

    /// Party `name` is lost (killed, or its network cut): it does nothing
    /// more, what is sent to it is never acknowledged, and every other
    /// party's transport reports it down `after` from now (its
    /// `peer_lost_timeout`).
    pub(crate) fn lose(&mut self, name: &str, after: Duration) {
        let lost = p(name);
        self.net.status.insert(lost.clone(), Status::Lost);
        for q in self.live() {
            self.scheduled += 1;
            self.timers.insert(
                (self.net.now + after, self.scheduled),
                (q, Event::Down(lost.clone(), PeerDownReason::TimedOut)),
            );
        }
    }

    /// Steps the parties until nothing moves: messages are delivered in
    /// the order they were sent; when none is left the clock jumps to the
    /// next deadline. Fails the test if the parties never settle.
    pub(crate) fn run(&mut self) {
        for _ in 0..100_000 {
            if let Some((to, event)) = self.net.queue.pop_front() {
                self.deliver(to, event);
                continue;
            }
            let next_timer = self.timers.keys().next().map(|(at, _)| *at);
            let next_life = self
                .parties
                .values()
                .filter(|q| self.net.status[&q.me] == Status::Alive)
                .filter_map(|q| q.life.poll_timeout())
                .min();
            let Some(at) = next_timer.into_iter().chain(next_life).min() else {
                return;
            };
            self.net.now = self.net.now.max(at);
            let now = self.net.now;
            while let Some(entry) = self.timers.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let (to, event) = entry.remove();
                self.net.queue.push_back((to, event));
            }
            for q in self.parties.values_mut() {
                let due = q.life.poll_timeout().is_some_and(|t| t <= now);
                if due && self.net.status[&q.me] == Status::Alive {
                    q.life.handle_timeout(now);
                    q.pump(&mut self.net);
                }
            }
        }
        panic!(
            "the parties never settled; the last of the trace: {:?}",
            self.net.trace.iter().rev().take(20).collect::<Vec<_>>()
        );
    }

    fn deliver(&mut self, to: PartyName, event: Event) {
        match self.net.status[&to] {
            Status::Alive => {
                let party = self.parties.get_mut(&to).expect("a party of the job");
                party.handle(event, &mut self.net);
            }
            // The transport refuses what comes after a goodbye.
            Status::Closed => match event {
                Event::Object { from, send, .. } | Event::Control { from, send, .. }
                    if self.net.status[&from] == Status::Alive =>
                {
                    self.net.queue.push_back((
                        from,
                        Event::SendEnded {
                            peer: to.clone(),
                            send,
                            result: Err(TransportError::PeerClosed { peer: to }),
                        },
                    ));
                }
                _ => {}
            },
            Status::Lost => {}
        }
    }
}

#[cfg(test)]
mod tests;
