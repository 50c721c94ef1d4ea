//! The object table of one party: every object this party's driver knows
//! of, local and remote alike, as a plain state machine (no actors, no
//! sockets, no clock). The `Objects` actor (`actors/objects.rs`) feeds it
//! events and carries out the [`Action`]s it queues; the unit tests in
//! `object_table/tests.rs` step it directly.
//!
//! The rules, in short (RFC 0002 has them in full):
//!
//! * **State.** An object is *expected* (remote, not arrived), *pending*
//!   (local, not computed), *ready* (a value) or *failed* (an error). A
//!   freed object has no entry at all.
//! * **Push plan** (M3, M4). A call on another party that consumes an object
//!   owned here makes this party push it there once; `get` pushes to every
//!   party not yet pushed to. A push planned before the value exists leaves
//!   when it is ready; a failed object leaves as a RemoteError frame.
//! * **Lifetime** (L1). An entry is freed once the driver holds no handle to
//!   it, no local call or `get` waiting on it is left, and no push of it is
//!   unacknowledged. Every party runs the same driver and drops the same
//!   handles at the same program points, so no message is needed.
//! * **Checks** (M8). An arriving object is compared with this party's view
//!   of its id as soon as both are known: owner, fingerprint, and whether
//!   this party uses it. When the peers' drivers finish, their positions
//!   (object count and digest) are compared too.
//! * **Failures** (E1-E3). A failure that begins here goes to every party;
//!   a failure that follows from another one (a dependent call) is derived
//!   locally by every party, which saw the same calls, and only sent where
//!   the failed object is consumed.

use std::collections::{HashMap, HashSet, VecDeque};

use xsilo_transport::OutboundObject;
use xsilo_wire::payload::Payload;
use xsilo_wire::{
    Consumer, Fingerprint, FinishedFrame, ObjectId, PartyName, PositionDigest, RemoteErrorFrame,
};

use crate::call::ObjRef;
use crate::errors::{self, RuntimeError};

/// What a submitted call does, with its body `B` (the code to run and the
/// call's name in the runtime, labels in tests), which the table holds
/// until the call runs and never looks into.
#[derive(Debug)]
pub enum Op<B> {
    /// A stateless task.
    Task(B),
    /// Creates actor `0` with constructor `1`.
    NewActor(ObjectId, B),
    /// A method call on actor `0`.
    Method(ObjectId, B),
    /// Stops actor `0` after its earlier calls (M6).
    Kill(ObjectId),
    /// The outputs fail at once (a call on an unknown party).
    Fail(RuntimeError),
}

/// A call of the driver program, as the table sees it.
#[derive(Debug)]
pub struct Submission<B> {
    /// The party that runs it.
    pub party: PartyName,
    /// The objects it consumes, in argument order.
    pub inputs: Vec<ObjRef>,
    /// The objects it makes (owned by `party`).
    pub outputs: Vec<ObjRef>,
    /// The call as the parties it pushes inputs to name it (its first
    /// output, or the actor's id), carried with pushes for diagnostics and
    /// checks.
    pub consumer: Consumer,
    /// What it does.
    pub op: Op<B>,
}

/// Identifies a local call waiting for its inputs or running: the table
/// numbers them, from 1, in the order they are submitted. Local to this
/// party; a call as the other parties know it is a [`Consumer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallId(u64);

/// Identifies a `get` waiting for its values: the shell numbers them and
/// matches each [`Action::Answer`] to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GetId(pub u64);

/// What the table asks its shell to do.
#[derive(Debug)]
pub enum Action<B> {
    /// Run a task or method body on its inputs, then report
    /// [`ObjectTable::completed`].
    Run {
        /// The call.
        call: CallId,
        /// The body.
        body: B,
        /// The inputs' encoded values, in argument order.
        inputs: Vec<Payload>,
        /// The actor whose state the body takes, for a method call.
        actor: Option<ObjectId>,
        /// How many values the body must return.
        outputs: usize,
        /// The first output (for error messages).
        first: ObjectId,
    },
    /// Run an actor's constructor, then report [`ObjectTable::actor_created`].
    CreateActor {
        /// The actor.
        actor: ObjectId,
        /// The constructor.
        ctor: B,
    },
    /// The actor's state is no longer needed (killed, or its last handle
    /// dropped, or the job failed): drop it.
    DropActor(ObjectId),
    /// Send a value to a peer; report [`ObjectTable::push_done`] when the
    /// peer acknowledged it or the send ended otherwise.
    Push {
        /// Destination.
        dest: PartyName,
        /// The object, the consuming call there, its call-site fingerprint
        /// and its encoded value, as the transport sends it.
        push: OutboundObject,
    },
    /// Send a failed object's error to a peer in place of its value; report
    /// [`ObjectTable::push_done`] too.
    PushError {
        /// Destination.
        dest: PartyName,
        /// The frame.
        frame: RemoteErrorFrame,
    },
    /// Answer a `get`.
    Answer {
        /// The get.
        get: GetId,
        /// The values in order, or the first error.
        result: Result<Vec<Payload>, RuntimeError>,
    },
    /// A wait depends on this peer: make sure it is (or gets) connected, and
    /// report [`ObjectTable::peer_gone`] if it is gone.
    NeedPeer(PartyName),
    /// The drivers diverged: fail the job.
    Diverged(RuntimeError),
    /// An error object was made or received (for promise E7).
    ErrorSeen,
}

#[derive(Debug, Clone)]
enum State {
    Expected,
    Pending,
    Ready(Payload),
    Failed(RuntimeError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiter {
    Call(CallId),
    Get(GetId),
}

#[derive(Debug)]
struct Entry {
    owner: PartyName,
    fingerprint: Fingerprint,
    state: State,
    /// The driver has made this object (false for an early arrival).
    known: bool,
    /// The driver still holds a handle.
    handle: bool,
    /// Local calls and gets waiting on it, and pushes of it not yet done.
    uses: u32,
    waiters: Vec<Waiter>,
    /// Parties it was pushed (or is to be pushed) to.
    pushed: Vec<PartyName>,
    /// Pushes planned before the value was ready: (destination, consumer).
    planned: Vec<(PartyName, Consumer)>,
    /// Outputs of calls on other parties that consume it: they fail with it.
    dependents: Vec<ObjectId>,
    /// A local call or get of this party consumes it.
    claimed: bool,
    /// A peer pushed it for one of our calls (not for a `get`).
    pushed_for_call: bool,
}

impl Entry {
    fn new(owner: PartyName, fingerprint: Fingerprint, state: State, known: bool) -> Self {
        Self {
            owner,
            fingerprint,
            state,
            known,
            handle: known,
            uses: 0,
            waiters: Vec::new(),
            pushed: Vec::new(),
            planned: Vec::new(),
            dependents: Vec::new(),
            claimed: false,
            pushed_for_call: false,
        }
    }

    fn settled(&self) -> bool {
        matches!(self.state, State::Ready(_) | State::Failed(_))
    }
}

#[derive(Debug)]
struct PendingCall<B> {
    inputs: Vec<ObjectId>,
    missing: usize,
    outputs: Vec<ObjectId>,
    actor: Option<ObjectId>,
    body: Option<B>,
    /// Inputs not yet released (released when the call runs or fails).
    holding: bool,
}

#[derive(Debug)]
struct PendingGet {
    refs: Vec<ObjectId>,
    missing: usize,
}

#[derive(Debug)]
enum Queued {
    Call(CallId),
    Kill,
}

#[derive(Debug)]
enum ActorState {
    Creating,
    Idle,
    Busy,
    Unavailable(String),
}

#[derive(Debug)]
struct ActorSlot {
    state: ActorState,
    queue: VecDeque<Queued>,
    handle: bool,
    killed: bool,
}

/// Counts of what the table holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Live object entries (local and remote).
    pub objects: u64,
    /// Bytes of the values held.
    pub bytes: u64,
    /// Live actors owned here.
    pub actors: u64,
    /// Local calls waiting or running.
    pub calls: u64,
}

/// The object table of one party. See the module docs for the rules.
#[derive(Debug)]
pub struct ObjectTable<B> {
    me: PartyName,
    peers: Vec<PartyName>,
    expose_error_trace: bool,
    entries: HashMap<ObjectId, Entry>,
    /// Remote objects freed here before their push arrived: the arrival is
    /// acknowledged and discarded.
    tombstones: HashSet<(PartyName, ObjectId)>,
    calls: HashMap<CallId, PendingCall<B>>,
    gets: HashMap<GetId, PendingGet>,
    actors: HashMap<ObjectId, ActorSlot>,
    next_call: CallId,
    /// The highest id the driver has made.
    position: u64,
    digest: PositionDigest,
    /// The job failed: every wait, now and later, fails with this.
    failed: Option<RuntimeError>,
    /// A divergence was reported (once: the job fails on it; later calls
    /// of a driver that ran on are not each reported again).
    divergence_reported: bool,
    /// An error object was made or received: drivers may stop early.
    saw_error: bool,
    /// The driver finished (intended shutdown began).
    finished: bool,
    /// Peers whose drivers finished, and where.
    peers_finished: HashMap<PartyName, FinishedFrame>,
    /// What each peer sent ahead of this party's driver (promise S1).
    early: HashMap<PartyName, EarlyHeld>,
    /// Bytes of early values kept per peer; see [`ObjectTable::early_room`].
    early_bytes_cap: u64,
    bytes_held: u64,
    /// Value bytes freed since the start (for returning memory, RFC 0002).
    bytes_freed: u64,
    actions: VecDeque<Action<B>>,
}

/// Objects (values and failures) one peer may have sent ahead of this
/// party's driver and kept here (promise S1).
pub const MAX_EARLY_OBJECTS: u64 = 4096;

/// Objects and bytes a peer sent before this party's driver made them.
#[derive(Debug, Default, Clone, Copy)]
struct EarlyHeld {
    objects: u64,
    bytes: u64,
}

impl<B> ObjectTable<B> {
    /// The table of party `me` in a job with `peers`.
    pub fn new(me: PartyName, peers: Vec<PartyName>, expose_error_trace: bool) -> Self {
        Self {
            me,
            peers,
            expose_error_trace,
            entries: HashMap::new(),
            tombstones: HashSet::new(),
            calls: HashMap::new(),
            gets: HashMap::new(),
            actors: HashMap::new(),
            next_call: CallId(1),
            position: 0,
            digest: PositionDigest::new(),
            failed: None,
            divergence_reported: false,
            saw_error: false,
            finished: false,
            peers_finished: HashMap::new(),
            early: HashMap::new(),
            early_bytes_cap: u64::MAX,
            bytes_held: 0,
            bytes_freed: 0,
            actions: VecDeque::new(),
        }
    }

    /// The next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action<B>> {
        self.actions.pop_front()
    }

    /// Bounds the bytes of values one peer may send ahead of this party's
    /// driver (default: no bound but [`MAX_EARLY_OBJECTS`]).
    pub fn limit_early_bytes(&mut self, per_peer: u64) {
        self.early_bytes_cap = per_peer;
    }

    /// Whether an object of `len` bytes from `src` may be taken now. An
    /// object this party's driver has not made yet is kept until it does;
    /// one peer's such objects are bounded by [`MAX_EARLY_OBJECTS`] and by
    /// the bytes of [`ObjectTable::limit_early_bytes`] (one object always
    /// fits when none is kept). When this is false the caller holds the
    /// object unanswered, so the transport's budget and QUIC flow control
    /// hold its sender, and offers it again after the driver advanced.
    pub fn early_room(&self, src: &PartyName, id: ObjectId, len: u64) -> bool {
        if id.0 <= self.position || self.entries.contains_key(&id) || self.failed.is_some() {
            return true;
        }
        let held = self.early.get(src).copied().unwrap_or_default();
        held.objects == 0
            || (held.objects < MAX_EARLY_OBJECTS
                && held.bytes.saturating_add(len) <= self.early_bytes_cap)
    }

    fn early_kept(&mut self, src: &PartyName, bytes: u64) {
        let held = self.early.entry(src.clone()).or_default();
        held.objects += 1;
        held.bytes = held.bytes.saturating_add(bytes);
    }

    fn early_claimed(&mut self, src: &PartyName, bytes: u64) {
        if let Some(held) = self.early.get_mut(src) {
            held.objects = held.objects.saturating_sub(1);
            held.bytes = held.bytes.saturating_sub(bytes);
            if held.objects == 0 {
                self.early.remove(src);
            }
        }
    }

    /// Value bytes this table has freed since it was made.
    pub fn bytes_freed(&self) -> u64 {
        self.bytes_freed
    }

    /// What the table holds now.
    pub fn held(&self) -> Held {
        Held {
            objects: self.entries.len() as u64,
            bytes: self.bytes_held,
            actors: self.actors.len() as u64,
            calls: self.calls.len() as u64,
        }
    }

    /// Whether every push planned for a value still being made has left:
    /// the first step of an intended shutdown (E8).
    pub fn flushed(&self) -> bool {
        self.failed.is_some()
            || !self
                .entries
                .values()
                .any(|e| matches!(e.state, State::Pending) && !e.planned.is_empty())
    }

    /// Whether actor `actor` still lives here (its state is to be kept).
    pub fn actor_live(&self, actor: ObjectId) -> bool {
        self.actors
            .get(&actor)
            .is_some_and(|slot| !matches!(slot.state, ActorState::Unavailable(_)))
    }

    /// Whether the job has failed (and with what).
    pub fn failure(&self) -> Option<&RuntimeError> {
        self.failed.as_ref()
    }

    // ----- the driver's events -------------------------------------------

    /// A call of the driver program, in program order.
    pub fn submit(&mut self, call: Submission<B>) {
        let Submission {
            party,
            inputs,
            outputs,
            consumer,
            op,
        } = call;
        let local = party == self.me;
        // Ids and digest first: every party makes every call (M1).
        let actor_id = match &op {
            Op::NewActor(id, _) => Some(*id),
            _ => None,
        };
        // The owner is part of the position, except for a call on an
        // unknown party, which every party makes as its own.
        let owner = match &op {
            Op::Fail(_) => None,
            _ => Some(party.clone()),
        };
        for (id, fingerprint) in outputs
            .iter()
            .map(|o| (o.id, o.fingerprint))
            .chain(actor_id.map(|a| (a, Fingerprint::NONE)))
        {
            self.advance(id, fingerprint, owner.as_ref());
        }
        // The outputs' entries (or the check of an early arrival).
        for out in &outputs {
            self.make_entry(out, local);
        }
        if self.failed.is_some() {
            // Nothing runs or moves any more; the outputs are failed.
            if let Op::NewActor(actor, _) = op {
                self.actors.insert(
                    actor,
                    ActorSlot {
                        state: ActorState::Unavailable("the job failed".into()),
                        queue: VecDeque::new(),
                        handle: true,
                        killed: false,
                    },
                );
            }
            return;
        }
        if !local {
            self.plan_remote_call(&party, &inputs, &outputs, consumer);
            return;
        }
        let output_ids: Vec<ObjectId> = outputs.iter().map(|o| o.id).collect();
        match op {
            // Every party makes the same failed call: nothing to announce.
            Op::Fail(error) => self.settle_all(&output_ids, Err(error), false),
            Op::NewActor(actor, ctor) => {
                self.actors.insert(
                    actor,
                    ActorSlot {
                        state: ActorState::Creating,
                        queue: VecDeque::new(),
                        handle: true,
                        killed: false,
                    },
                );
                self.actions.push_back(Action::CreateActor { actor, ctor });
            }
            Op::Kill(actor) => {
                if let Some(slot) = self.actors.get_mut(&actor) {
                    if !slot.killed {
                        slot.killed = true;
                        slot.queue.push_back(Queued::Kill);
                        self.pump_actor(actor);
                    }
                }
            }
            Op::Task(body) => {
                self.add_call(&inputs, output_ids, None, body);
            }
            Op::Method(actor, body) => {
                let unavailable = match self.actors.get(&actor) {
                    None => Some("no such actor was created here".to_owned()),
                    Some(slot) if slot.killed => Some("it was killed".to_owned()),
                    Some(ActorSlot {
                        state: ActorState::Unavailable(reason),
                        ..
                    }) => Some(reason.clone()),
                    Some(_) => None,
                };
                if let Some(reason) = unavailable {
                    let error = RuntimeError::ActorUnavailable {
                        actor,
                        party: self.me.clone(),
                        reason,
                    };
                    // Claim the inputs all the same: their pushes still come.
                    for input in &inputs {
                        let _ = self.claim(input);
                    }
                    self.release_inputs(&inputs.iter().map(|i| i.id).collect::<Vec<_>>());
                    self.settle_all(&output_ids, Err(error), true);
                    return;
                }
                let call = self.add_call(&inputs, output_ids, Some(actor), body);
                if let Some(call) = call {
                    if let Some(slot) = self.actors.get_mut(&actor) {
                        slot.queue.push_back(Queued::Call(call));
                    }
                    self.pump_actor(actor);
                }
            }
        }
    }

    /// `get` of these objects: the owner pushes each to every party that has
    /// not had it (M4); the answer comes as [`Action::Answer`].
    pub fn get(&mut self, get: GetId, refs: &[ObjRef]) {
        if let Some(error) = &self.failed {
            let result = Err(error.clone());
            self.actions.push_back(Action::Answer { get, result });
            return;
        }
        for r in refs {
            if r.owner == self.me {
                for peer in self.peers.clone() {
                    self.push(r.id, &peer, Consumer::Get);
                }
            }
        }
        for (i, r) in refs.iter().enumerate() {
            if let Err(error) = self.claim(r) {
                let claimed: Vec<ObjectId> = refs[..i].iter().map(|x| x.id).collect();
                self.release_inputs(&claimed);
                self.actions.push_back(Action::Answer {
                    get,
                    result: Err(error),
                });
                return;
            }
        }
        let refs: Vec<ObjectId> = refs.iter().map(|r| r.id).collect();
        let mut missing = 0;
        let mut seen = HashSet::new();
        for id in &refs {
            if seen.insert(*id) && self.wait_on(*id, Waiter::Get(get)) {
                missing += 1;
            }
        }
        if missing == 0 {
            self.answer_get(get, &refs);
        } else {
            self.gets.insert(get, PendingGet { refs, missing });
        }
    }

    /// The driver dropped its last handle on `id`.
    pub fn release(&mut self, id: ObjectId) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.handle = false;
            self.maybe_free(id);
        }
    }

    /// The driver dropped its last handle on actor `actor`.
    pub fn release_actor(&mut self, actor: ObjectId) {
        if let Some(slot) = self.actors.get_mut(&actor) {
            slot.handle = false;
            self.maybe_drop_actor(actor);
        }
    }

    /// The driver finished (intended shutdown begins): where it ended.
    /// Positions of peers that finished earlier are compared now.
    pub fn finish(&mut self) -> FinishedFrame {
        self.finished = true;
        let mine = self.position_frame();
        let peers: Vec<_> = self.peers_finished.drain().collect();
        for (peer, theirs) in peers {
            self.compare_positions(&peer, &theirs);
        }
        mine
    }

    // ----- the shell's reports ---------------------------------------------

    /// A body finished: its encoded outputs, or why it failed.
    pub fn completed(&mut self, call: CallId, result: Result<Vec<Payload>, RuntimeError>) {
        self.finish_call(call, result, true);
    }

    fn finish_call(
        &mut self,
        call: CallId,
        result: Result<Vec<Payload>, RuntimeError>,
        origin: bool,
    ) {
        let Some(pending) = self.calls.remove(&call) else {
            return;
        };
        let result = match result {
            Ok(values) if values.len() == pending.outputs.len() => Ok(values),
            Ok(values) => Err(RuntimeError::Encode {
                object: pending.outputs.first().copied().unwrap_or(ObjectId(0)),
                reason: format!(
                    "the call returned {} values for {} outputs",
                    values.len(),
                    pending.outputs.len()
                ),
            }),
            Err(e) => Err(e),
        };
        match result {
            Ok(values) => {
                for (id, v) in pending.outputs.iter().zip(values) {
                    self.settle(*id, Ok(v), origin);
                }
            }
            Err(e) => self.settle_all(&pending.outputs, Err(e), origin),
        }
        if let Some(actor) = pending.actor {
            if let Some(slot) = self.actors.get_mut(&actor) {
                if matches!(slot.state, ActorState::Busy) {
                    slot.state = ActorState::Idle;
                }
            }
            self.pump_actor(actor);
        }
    }

    /// An actor's constructor ran: `Err` holds why it failed.
    pub fn actor_created(&mut self, actor: ObjectId, result: Result<(), String>) {
        let Some(slot) = self.actors.get_mut(&actor) else {
            return;
        };
        slot.state = match result {
            Ok(()) => ActorState::Idle,
            Err(reason) => ActorState::Unavailable(format!("its constructor failed: {reason}")),
        };
        self.pump_actor(actor);
    }

    /// A push of `object` to `dest` ended (acknowledged, dropped or failed).
    pub fn push_done(&mut self, object: ObjectId) {
        self.release_use(object);
    }

    // ----- peers' events ---------------------------------------------------

    /// A value arrived from `src`. Always acknowledge it: a value that turns
    /// out not to be needed is discarded, a divergence fails the job.
    pub fn arrived(
        &mut self,
        src: &PartyName,
        id: ObjectId,
        fingerprint: Fingerprint,
        consumer: Consumer,
        resend: bool,
        payload: Payload,
    ) {
        let ours = self.entries.get(&id).map(|e| (e.known, e.settled()));
        match ours {
            Some((true, settled)) => {
                if let Err(e) = self.check_arrival(src, id, Some(fingerprint)) {
                    self.diverged(e);
                    return;
                }
                if let Some(e) = self.entries.get_mut(&id) {
                    if consumer.is_call() {
                        e.pushed_for_call = true;
                    }
                }
                if !settled {
                    self.settle(id, Ok(payload), false);
                }
            }
            // A second copy of an early arrival: from the same party, or
            // two parties claim the same object.
            Some((false, _)) => {
                let owner = self.entries.get(&id).map(|e| e.owner.clone());
                if let Some(owner) = owner.filter(|o| o != src) {
                    self.diverged(RuntimeError::Diverged {
                        here: self.me.clone(),
                        from: src.clone(),
                        object: id,
                        what: format!(
                            "both party '{owner}' and party '{src}' sent it as their own"
                        ),
                    });
                }
            }
            None => {
                if self.tombstones.remove(&(src.clone(), id)) {
                    return;
                }
                if id.0 > self.position {
                    // Before our driver made it: kept, checked when it does.
                    self.early_kept(src, payload.len() as u64);
                    self.bytes_held += payload.len() as u64;
                    let mut e = Entry::new(src.clone(), fingerprint, State::Ready(payload), false);
                    e.pushed_for_call = consumer.is_call();
                    self.entries.insert(id, e);
                    return;
                }
                if resend || !consumer.is_call() || self.lenient() {
                    tracing::debug!(party = %self.me, from = %src, object = %id, "discarding an object nobody here needs any more");
                    return;
                }
                self.diverged(RuntimeError::Diverged {
                    here: self.me.clone(),
                    from: src.clone(),
                    object: id,
                    what: format!(
                        "party '{src}' pushed it for {consumer} here, but this party's \
                         driver makes no call that consumes it"
                    ),
                });
            }
        }
    }

    /// A RemoteError arrived from `src` in place of object `frame.object`.
    pub fn arrived_error(&mut self, src: &PartyName, frame: &RemoteErrorFrame) {
        self.saw_error = true;
        self.actions.push_back(Action::ErrorSeen);
        let id = frame.object;
        let error = errors::from_frame(frame);
        match self.entries.get(&id).map(|e| (e.known, e.settled())) {
            Some((true, settled)) => {
                if let Err(e) = self.check_arrival(src, id, frame.fingerprint.map(Fingerprint)) {
                    self.diverged(e);
                    return;
                }
                if !settled {
                    self.settle(id, Err(error), false);
                }
            }
            Some((false, _)) => {}
            None => {
                if self.tombstones.remove(&(src.clone(), id)) {
                    return;
                }
                if id.0 > self.position {
                    let held = self.early.get(src).map_or(0, |h| h.objects);
                    if held >= MAX_EARLY_OBJECTS {
                        // A failure cannot be held back as a value can: a
                        // peer this far ahead with failures is not running
                        // our program (or is hostile).
                        self.diverged(RuntimeError::Diverged {
                            here: self.me.clone(),
                            from: src.clone(),
                            object: id,
                            what: format!(
                                "it announced the failure of object {id} while {held} objects it \
                                 sent are still ahead of this party's driver (at most \
                                 {MAX_EARLY_OBJECTS} are kept)"
                            ),
                        });
                        return;
                    }
                    self.early_kept(src, 0);
                    let e = Entry::new(
                        src.clone(),
                        frame.fingerprint.map_or(Fingerprint::NONE, Fingerprint),
                        State::Failed(error),
                        false,
                    );
                    self.entries.insert(id, e);
                }
                // Otherwise a failure broadcast to a party that does not
                // use the object (E3), or uses it no more: nothing to do.
            }
        }
    }

    /// A peer's driver finished at this position.
    pub fn peer_finished(&mut self, peer: &PartyName, theirs: FinishedFrame) {
        if self.finished {
            self.compare_positions(peer, &theirs);
        } else if theirs.clean && !self.lenient() && self.position > theirs.objects {
            let error = self.position_error(peer, &theirs, "");
            self.diverged(error);
        } else {
            self.peers_finished.insert(peer.clone(), theirs);
        }
    }

    /// `peer` is gone (shut down or lost): every object this party still
    /// expects from it fails with [`RuntimeError::PeerLost`].
    pub fn peer_gone(&mut self, peer: &PartyName, reason: &str) {
        self.tombstones.retain(|(p, _)| p != peer);
        let mut lost: Vec<ObjectId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.owner == *peer && e.known && matches!(e.state, State::Expected))
            .filter(|(_, e)| e.claimed)
            .map(|(id, _)| *id)
            .collect();
        // Later objects first: a dependent always has a higher id than its
        // inputs, so each lost object fails with its own PeerLost before a
        // failure derived from an earlier one could reach it.
        lost.sort_unstable_by(|a, b| b.cmp(a));
        for id in lost {
            let error = RuntimeError::PeerLost {
                party: peer.clone(),
                object: id,
                reason: reason.to_owned(),
            };
            self.settle(id, Err(error), false);
        }
    }

    /// The job failed (aborted, or shut down): every wait fails with
    /// `error`, queued work is dropped, nothing more runs or moves.
    pub fn fail_all(&mut self, error: RuntimeError) {
        if self.failed.is_some() {
            return;
        }
        self.failed = Some(error.clone());
        for (_, call) in self.calls.drain() {
            drop(call.body);
        }
        let gets: Vec<GetId> = self.gets.keys().copied().collect();
        for get in gets {
            self.gets.remove(&get);
            self.actions.push_back(Action::Answer {
                get,
                result: Err(error.clone()),
            });
        }
        for e in self.entries.values_mut() {
            if !e.settled() {
                e.state = State::Failed(error.clone());
            }
            e.waiters.clear();
            e.planned.clear();
            e.uses = 0;
        }
        for (actor, _) in self.actors.drain() {
            self.actions.push_back(Action::DropActor(actor));
        }
        self.tombstones.clear();
        let ids: Vec<ObjectId> = self.entries.keys().copied().collect();
        for id in ids {
            self.maybe_free(id);
        }
    }

    // ----- internals -------------------------------------------------------

    fn lenient(&self) -> bool {
        self.saw_error || self.failed.is_some() || self.finished
    }

    fn advance(&mut self, id: ObjectId, fingerprint: Fingerprint, owner: Option<&PartyName>) {
        self.position = self.position.max(id.0);
        self.digest.add(id, fingerprint, owner);
        if self.lenient() {
            return;
        }
        let beyond: Option<(PartyName, FinishedFrame)> = self
            .peers_finished
            .iter()
            .find(|(_, f)| f.clean && id.0 > f.objects)
            .map(|(p, f)| (p.clone(), *f));
        if let Some((peer, theirs)) = beyond {
            let error = self.position_error(&peer, &theirs, "");
            self.diverged(error);
        }
    }

    fn position_frame(&self) -> FinishedFrame {
        FinishedFrame {
            objects: self.position,
            digest: self.digest.value(),
            clean: !self.saw_error && self.failed.is_none(),
        }
    }

    fn compare_positions(&mut self, peer: &PartyName, theirs: &FinishedFrame) {
        let mine = self.position_frame();
        if !theirs.clean || !mine.clean {
            return;
        }
        if theirs.objects != mine.objects {
            let error = self.position_error(peer, theirs, "");
            self.diverged(error);
        } else if theirs.digest != mine.digest {
            let error = self.position_error(
                peer,
                theirs,
                " with the same number of objects but made at other call sites",
            );
            self.diverged(error);
        }
    }

    fn position_error(
        &self,
        peer: &PartyName,
        theirs: &FinishedFrame,
        extra: &str,
    ) -> RuntimeError {
        RuntimeError::Diverged {
            here: self.me.clone(),
            from: peer.clone(),
            object: ObjectId(theirs.objects.max(self.position)),
            what: format!(
                "party '{peer}' finished its driver after object #{} and party '{}' has made \
                 {} object(s){extra}",
                theirs.objects, self.me, self.position
            ),
        }
    }

    fn diverged(&mut self, error: RuntimeError) {
        if self.failed.is_some() || self.divergence_reported {
            return;
        }
        self.divergence_reported = true;
        tracing::error!(party = %self.me, %error, "driver divergence");
        self.actions.push_back(Action::Diverged(error));
    }

    fn check_arrival(
        &self,
        src: &PartyName,
        id: ObjectId,
        fingerprint: Option<Fingerprint>,
    ) -> Result<(), RuntimeError> {
        let Some(e) = self.entries.get(&id) else {
            return Ok(());
        };
        let what = if e.owner != *src {
            Some(format!(
                "party '{src}' sent it as its own, but this party's driver made it in party '{}'",
                e.owner
            ))
        } else {
            match fingerprint {
                Some(fp) if fp != e.fingerprint => Some(format!(
                    "it was made at another call site in party '{src}' (fingerprint {fp}) \
                     than here ({})",
                    e.fingerprint
                )),
                _ => None,
            }
        };
        match what {
            Some(what) => Err(RuntimeError::Diverged {
                here: self.me.clone(),
                from: src.clone(),
                object: id,
                what,
            }),
            None => Ok(()),
        }
    }

    fn make_entry(&mut self, out: &ObjRef, local: bool) {
        let state = match &self.failed {
            Some(e) => State::Failed(e.clone()),
            None if local => State::Pending,
            None => State::Expected,
        };
        if let Some(early) = self.entries.get(&out.id) {
            if !early.known {
                // It arrived before our driver made it: check it now.
                let what = if early.owner != out.owner {
                    Some(format!(
                        "party '{}' sent it as its own, but this party's driver made it in party '{}'",
                        early.owner, out.owner
                    ))
                } else if early.fingerprint != out.fingerprint
                    && early.fingerprint != Fingerprint::NONE
                {
                    Some(format!(
                        "it was made at another call site in party '{}' (fingerprint {}) \
                         than here ({})",
                        early.owner, early.fingerprint, out.fingerprint
                    ))
                } else {
                    None
                };
                if let Some(what) = what {
                    let error = RuntimeError::Diverged {
                        here: self.me.clone(),
                        from: early.owner.clone(),
                        object: out.id,
                        what,
                    };
                    self.diverged(error);
                }
                let kept = self.entries.get(&out.id).map(|e| {
                    let bytes = match &e.state {
                        State::Ready(v) => v.len() as u64,
                        _ => 0,
                    };
                    (e.owner.clone(), bytes)
                });
                if let Some((owner, bytes)) = kept {
                    self.early_claimed(&owner, bytes);
                }
                if let Some(e) = self.entries.get_mut(&out.id) {
                    e.known = true;
                    e.handle = true;
                    e.owner = out.owner.clone();
                    e.fingerprint = out.fingerprint;
                }
                return;
            }
        }
        self.entries.insert(
            out.id,
            Entry::new(out.owner.clone(), out.fingerprint, state, true),
        );
    }

    /// A call on another party: push what we own there, and note which of
    /// its outputs fail with which input.
    fn plan_remote_call(
        &mut self,
        party: &PartyName,
        inputs: &[ObjRef],
        outputs: &[ObjRef],
        consumer: Consumer,
    ) {
        for input in inputs {
            if input.owner == self.me {
                self.push(input.id, party, consumer);
            }
            if let Some(e) = self.entries.get_mut(&input.id) {
                match &e.state {
                    State::Failed(error) => {
                        let error = error.clone();
                        let outs: Vec<ObjectId> = outputs.iter().map(|o| o.id).collect();
                        self.cascade_remote(input.id, &outs, &error);
                        continue;
                    }
                    _ => e.dependents.extend(outputs.iter().map(|o| o.id)),
                }
            }
        }
    }

    /// Outputs of calls on other parties whose input failed: they fail here
    /// too, without a frame (every party derives the same).
    fn cascade_remote(&mut self, failed: ObjectId, outputs: &[ObjectId], error: &RuntimeError) {
        // An object of another party fails as that party reports it: a
        // failure that began here is seen as its RemoteError (E2, E4).
        let error = &errors::as_crossed(&self.me, failed, error, self.expose_error_trace);
        for id in outputs {
            let expected = self
                .entries
                .get(id)
                .is_some_and(|e| e.known && matches!(e.state, State::Expected));
            if expected {
                self.settle(*id, Err(error.clone()), false);
            }
        }
    }

    fn claim(&mut self, r: &ObjRef) -> Result<(), RuntimeError> {
        match self.entries.get_mut(&r.id) {
            Some(e) => {
                e.claimed = true;
                e.uses += 1;
                Ok(())
            }
            None => Err(RuntimeError::UnknownObject {
                object: r.id,
                party: self.me.clone(),
            }),
        }
    }

    /// Registers `w` on `id` unless it is settled; true when it waits.
    fn wait_on(&mut self, id: ObjectId, w: Waiter) -> bool {
        let Some(e) = self.entries.get_mut(&id) else {
            return false;
        };
        if e.settled() {
            return false;
        }
        e.waiters.push(w);
        if e.owner != self.me && matches!(e.state, State::Expected) {
            let owner = e.owner.clone();
            self.actions.push_back(Action::NeedPeer(owner));
        }
        true
    }

    fn add_call(
        &mut self,
        inputs: &[ObjRef],
        outputs: Vec<ObjectId>,
        actor: Option<ObjectId>,
        body: B,
    ) -> Option<CallId> {
        let call = self.next_call;
        self.next_call.0 += 1;
        for (i, input) in inputs.iter().enumerate() {
            if let Err(error) = self.claim(input) {
                let ids: Vec<ObjectId> = inputs[..i].iter().map(|x| x.id).collect();
                self.release_inputs(&ids);
                self.settle_all(&outputs, Err(error), true);
                return None;
            }
        }
        let ids: Vec<ObjectId> = inputs.iter().map(|i| i.id).collect();
        // An input that already failed fails the call at once.
        if let Some(error) = ids
            .iter()
            .find_map(|id| match &self.entries.get(id)?.state {
                State::Failed(e) => Some(e.clone()),
                _ => None,
            })
        {
            self.release_inputs(&ids);
            self.settle_all(&outputs, Err(error), false);
            return None;
        }
        let mut missing = 0;
        let mut seen = HashSet::new();
        for id in &ids {
            if seen.insert(*id) && self.wait_on(*id, Waiter::Call(call)) {
                missing += 1;
            }
        }
        self.calls.insert(
            call,
            PendingCall {
                inputs: ids,
                missing,
                outputs,
                actor,
                body: Some(body),
                holding: true,
            },
        );
        if actor.is_none() && missing == 0 {
            self.start_call(call);
        }
        Some(call)
    }

    fn values(&self, ids: &[ObjectId]) -> Result<Vec<Payload>, RuntimeError> {
        ids.iter()
            .map(|id| match self.entries.get(id).map(|e| &e.state) {
                Some(State::Ready(v)) => Ok(v.clone()),
                Some(State::Failed(e)) => Err(e.clone()),
                _ => Err(RuntimeError::UnknownObject {
                    object: *id,
                    party: self.me.clone(),
                }),
            })
            .collect()
    }

    /// Hands a call whose inputs are all ready to the shell.
    fn start_call(&mut self, call: CallId) {
        let Some(pending) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(body) = pending.body.take() else {
            return;
        };
        let ids = std::mem::take(&mut pending.inputs);
        let (actor, outputs, first) = (
            pending.actor,
            pending.outputs.len(),
            pending.outputs.first().copied().unwrap_or(ObjectId(0)),
        );
        pending.holding = false;
        match self.values(&ids) {
            Ok(inputs) => {
                self.release_inputs(&ids);
                self.actions.push_back(Action::Run {
                    call,
                    body,
                    inputs,
                    actor,
                    outputs,
                    first,
                });
            }
            Err(error) => {
                self.release_inputs(&ids);
                self.finish_call(call, Err(error), false);
            }
        }
    }

    fn release_inputs(&mut self, ids: &[ObjectId]) {
        for id in ids {
            self.release_use(*id);
        }
    }

    fn release_use(&mut self, id: ObjectId) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.uses = e.uses.saturating_sub(1);
            self.maybe_free(id);
        }
    }

    fn pump_actor(&mut self, actor: ObjectId) {
        loop {
            let Some(slot) = self.actors.get_mut(&actor) else {
                return;
            };
            let runnable = matches!(slot.state, ActorState::Idle | ActorState::Unavailable(_));
            if !runnable {
                return;
            }
            match slot.queue.front() {
                None => {
                    self.maybe_drop_actor(actor);
                    return;
                }
                Some(Queued::Kill) => {
                    slot.queue.pop_front();
                    slot.state = ActorState::Unavailable("it was killed".into());
                    self.actions.push_back(Action::DropActor(actor));
                }
                Some(Queued::Call(call)) => {
                    let call = *call;
                    if let ActorState::Unavailable(reason) = &slot.state {
                        let error = RuntimeError::ActorUnavailable {
                            actor,
                            party: self.me.clone(),
                            reason: reason.clone(),
                        };
                        slot.queue.pop_front();
                        self.fail_call(call, error, true);
                        continue;
                    }
                    let ready = self.calls.get(&call).is_none_or(|c| c.missing == 0);
                    if !ready {
                        return;
                    }
                    slot.queue.pop_front();
                    if self.calls.contains_key(&call) {
                        slot.state = ActorState::Busy;
                        self.start_call(call);
                    }
                }
            }
        }
    }

    fn maybe_drop_actor(&mut self, actor: ObjectId) {
        let Some(slot) = self.actors.get(&actor) else {
            return;
        };
        let idle = matches!(slot.state, ActorState::Idle | ActorState::Unavailable(_));
        if !slot.handle && slot.queue.is_empty() && idle {
            let was_live = matches!(slot.state, ActorState::Idle);
            self.actors.remove(&actor);
            if was_live {
                self.actions.push_back(Action::DropActor(actor));
            }
        }
    }

    fn fail_call(&mut self, call: CallId, error: RuntimeError, origin: bool) {
        if let Some(mut pending) = self.calls.remove(&call) {
            for id in &pending.inputs {
                if let Some(e) = self.entries.get_mut(id) {
                    e.waiters.retain(|w| *w != Waiter::Call(call));
                }
            }
            if pending.holding {
                let ids = std::mem::take(&mut pending.inputs);
                self.release_inputs(&ids);
            }
            self.settle_all(&pending.outputs, Err(error), origin);
        }
    }

    fn settle_all(&mut self, ids: &[ObjectId], value: Result<Payload, RuntimeError>, origin: bool) {
        for id in ids {
            self.settle(*id, value.clone(), origin);
        }
    }

    /// An object becomes ready or failed: wake its waiters, send its planned
    /// pushes, broadcast a failure that begins here (`origin`: not derived
    /// from a failed input, which every party derives alike), fail its
    /// dependents.
    fn settle(&mut self, id: ObjectId, value: Result<Payload, RuntimeError>, origin: bool) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        if e.settled() {
            return;
        }
        let owned = e.owner == self.me;
        e.state = match &value {
            Ok(v) => State::Ready(v.clone()),
            Err(err) => State::Failed(err.clone()),
        };
        if let Ok(v) = &value {
            self.bytes_held += v.len() as u64;
        }
        let waiters = std::mem::take(&mut e.waiters);
        let planned = std::mem::take(&mut e.planned);
        let dependents = std::mem::take(&mut e.dependents);
        let fingerprint = e.fingerprint;
        if let Err(error) = &value {
            if self.failed.is_none() && !matches!(error, RuntimeError::Aborted { .. }) {
                self.saw_error = true;
                self.actions.push_back(Action::ErrorSeen);
            }
        }
        // Planned pushes leave now (the uses they hold end on push_done).
        for (dest, consumer) in planned {
            self.send(id, fingerprint, &dest, consumer, &value);
        }
        if let Err(error) = &value {
            if owned && origin && errors::crosses(error) && self.failed.is_none() {
                // A failure that begins here goes to every party (E3).
                for peer in self.peers.clone() {
                    self.push(id, &peer, Consumer::Get);
                }
            }
            self.cascade_remote(id, &dependents, error);
        }
        for w in waiters {
            match w {
                Waiter::Call(call) => self.input_settled(call, &value),
                Waiter::Get(get) => self.get_input_settled(get, &value),
            }
        }
        self.maybe_free(id);
    }

    fn input_settled(&mut self, call: CallId, value: &Result<Payload, RuntimeError>) {
        if let Err(error) = value {
            let queued_on = self.calls.get(&call).and_then(|c| c.actor);
            self.fail_call(call, error.clone(), false);
            if let Some(actor) = queued_on {
                if let Some(slot) = self.actors.get_mut(&actor) {
                    slot.queue
                        .retain(|q| !matches!(q, Queued::Call(c) if *c == call));
                }
                self.pump_actor(actor);
            }
            return;
        }
        let Some(pending) = self.calls.get_mut(&call) else {
            return;
        };
        pending.missing = pending.missing.saturating_sub(1);
        if pending.missing == 0 {
            match pending.actor {
                Some(actor) => self.pump_actor(actor),
                None => self.start_call(call),
            }
        }
    }

    fn get_input_settled(&mut self, get: GetId, value: &Result<Payload, RuntimeError>) {
        let Some(pending) = self.gets.get_mut(&get) else {
            return;
        };
        if value.is_err() {
            if let Some(pending) = self.gets.remove(&get) {
                self.answer_get(get, &pending.refs);
            }
            return;
        }
        pending.missing = pending.missing.saturating_sub(1);
        if pending.missing == 0 {
            if let Some(pending) = self.gets.remove(&get) {
                self.answer_get(get, &pending.refs);
            }
        }
    }

    fn answer_get(&mut self, get: GetId, refs: &[ObjectId]) {
        let result = self.values(refs);
        for id in refs {
            if let Some(e) = self.entries.get_mut(id) {
                e.waiters.retain(|w| *w != Waiter::Get(get));
            }
        }
        self.release_inputs(refs);
        self.actions.push_back(Action::Answer { get, result });
    }

    /// Pushes an object owned here to `dest` once (M3), now or when ready.
    fn push(&mut self, id: ObjectId, dest: &PartyName, consumer: Consumer) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        if e.owner != self.me || e.pushed.contains(dest) {
            return;
        }
        e.pushed.push(dest.clone());
        e.uses += 1;
        match e.state.clone() {
            State::Ready(v) => {
                let fp = e.fingerprint;
                self.send(id, fp, dest, consumer, &Ok(v));
            }
            State::Failed(err) => {
                let fp = e.fingerprint;
                self.send(id, fp, dest, consumer, &Err(err));
            }
            State::Pending | State::Expected => e.planned.push((dest.clone(), consumer)),
        }
    }

    fn send(
        &mut self,
        id: ObjectId,
        fingerprint: Fingerprint,
        dest: &PartyName,
        consumer: Consumer,
        value: &Result<Payload, RuntimeError>,
    ) {
        match value {
            Ok(payload) => self.actions.push_back(Action::Push {
                dest: dest.clone(),
                push: OutboundObject::new(id, consumer, fingerprint, payload.clone()),
            }),
            Err(error) if !errors::crosses(error) => {
                // Every party learns of these by itself (an abort, a
                // shutdown, a call on an unknown party): nothing to send.
                self.release_use(id);
            }
            Err(error) => {
                let frame =
                    errors::frame_for(&self.me, id, fingerprint, error, self.expose_error_trace);
                self.actions.push_back(Action::PushError {
                    dest: dest.clone(),
                    frame,
                });
            }
        }
    }

    fn maybe_free(&mut self, id: ObjectId) {
        let Some(e) = self.entries.get(&id) else {
            return;
        };
        if e.handle || e.uses > 0 || !e.known || matches!(e.state, State::Pending) {
            return;
        }
        let Some(e) = self.entries.remove(&id) else {
            return;
        };
        if let State::Ready(v) = &e.state {
            self.bytes_held = self.bytes_held.saturating_sub(v.len() as u64);
            self.bytes_freed = self.bytes_freed.saturating_add(v.len() as u64);
        }
        if e.owner != self.me {
            match e.state {
                State::Expected if e.claimed && self.failed.is_none() => {
                    // Its push is still on its way: discard it on arrival.
                    self.tombstones.insert((e.owner.clone(), id));
                }
                State::Ready(_) if e.pushed_for_call && !e.claimed && !self.lenient() => {
                    let error = RuntimeError::Diverged {
                        here: self.me.clone(),
                        from: e.owner.clone(),
                        object: id,
                        what: format!(
                            "party '{}' pushed it here for a call, but this party's driver \
                             dropped it without using it",
                            e.owner
                        ),
                    };
                    self.diverged(error);
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
