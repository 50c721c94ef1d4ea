//! What this party knows of one peer and owes it, as a plain state machine:
//! the sends in flight to it (so that shutdown can wait for their
//! acknowledgements, and a peer that goes down drops them at once), whether
//! it is up, down or never seen, the probe that makes a wait on a
//! never-seen peer end, the barrier's own dial, and what was sent and
//! received. The `Link` actor (`actors/link.rs`) feeds it events and
//! carries out the [`PeerAction`]s it queues; the unit tests in
//! `peer/tests.rs` step it directly.
//!
//! It needs no clock: every bound on a send or a dial is the transport's,
//! which ends the send or the dial with an error that is then an event
//! here.
//!
//! ```text
//!  never seen ──up (either direction)──▶ seen ──down──▶ gone(reason) ──up──▶ seen
//!  probe:   never seen, not probed ──▶ Dial(Probe) (once)    gone ──▶ PeerGone at once
//!  barrier: not dialled ──▶ Dial(Barrier) (one for every waiter) ──ok──▶ dialled
//!  sends:   gone ──▶ PushDone at once     down ──▶ Cancel every send, PushDone its push
//! ```

use std::collections::{BTreeMap, VecDeque};

use xsilo_transport::{Delivery, OutboundObject, PeerDownReason, TransportError};
use xsilo_wire::{ControlFrame, ObjectId, PartyName};

use crate::errors::RuntimeError;
use crate::stats::Counts;

/// Identifies a send in flight to the peer: the rules number them, from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SendId(u64);

/// Which dial a [`PeerAction::Dial`] asks for; its end is reported with
/// [`PeerState::dial_ended`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dial {
    /// A wait depends on a peer never seen: connect, so that the wait ends
    /// (the peer comes up, or is found gone). Not in flight: shutdown does
    /// not wait for it.
    Probe,
    /// The barrier (promise C6): our own dial, even when the peer reached
    /// us, since a wrong address or port in our book must show at start-up.
    Barrier,
}

/// What the rules ask the link's shell to do.
#[derive(Debug)]
pub enum PeerAction {
    /// Send this value to the peer; report [`PeerState::send_ended`] with
    /// `send` when the send ends.
    SendObject {
        /// The send.
        send: SendId,
        /// The push.
        push: OutboundObject,
    },
    /// Send this control frame to the peer; report [`PeerState::send_ended`]
    /// with `send` when the send ends.
    SendControl {
        /// The send.
        send: SendId,
        /// The frame.
        frame: ControlFrame,
    },
    /// Stop send `0`: the peer went down. Its end is not reported.
    Cancel(SendId),
    /// Dial the peer; report [`PeerState::dial_ended`].
    Dial(Dial),
    /// The push of this object ended (acknowledged, dropped, failed, or
    /// never sent to a peer that is down): tell the object table.
    PushDone(ObjectId),
    /// An object was delivered (statistics).
    Delivered(Delivery),
    /// A send ended in an error other than a close (statistics).
    SendError,
    /// A sending failure of the job: report it.
    Failed {
        /// What was being sent or dialled, to which party.
        what: String,
        /// Why it failed.
        error: TransportError,
    },
    /// The peer is gone: whatever this party expects from it fails. `lost`
    /// when it did not say goodbye.
    PeerGone {
        /// Why, in words.
        reason: String,
        /// It was lost rather than shut down.
        lost: bool,
    },
    /// Answer every barrier waiter with this.
    AnswerUp(Result<(), RuntimeError>),
    /// Nothing that drain waits for is in flight: answer every drain waiter.
    Drained,
}

#[derive(Debug)]
struct InFlight {
    /// What is sent, to whom (for logs and failures).
    what: String,
    /// The object whose push this is, if any (its end is reported).
    object: Option<ObjectId>,
    /// Drain waits for it.
    counted: bool,
    /// Its failure is a sending failure of the job (else it was a
    /// courtesy, best effort).
    report: bool,
}

/// One peer, seen from this party. See the module docs for the rules.
#[derive(Debug)]
pub struct PeerState {
    me: PartyName,
    peer: PartyName,
    /// The peer connected (either direction) at least once.
    seen: bool,
    /// Our own dial to the peer has succeeded: the barrier needs it, since
    /// the peer dialling us proves nothing about the address we have for it.
    dialed: bool,
    /// We dialled it because a wait depends on it.
    probed: bool,
    /// It went down (goodbye or lost), with why; cleared if it returns.
    gone: Option<String>,
    sends: BTreeMap<SendId, InFlight>,
    next_send: u64,
    /// Someone waits for the drain.
    draining: bool,
    /// Barrier waiters not yet answered.
    up_waiters: usize,
    sent: Counts,
    received: Counts,
    actions: VecDeque<PeerAction>,
}

impl PeerState {
    /// Party `me`'s view of `peer`, never seen yet.
    pub fn new(me: PartyName, peer: PartyName) -> Self {
        Self {
            me,
            peer,
            seen: false,
            dialed: false,
            probed: false,
            gone: None,
            sends: BTreeMap::new(),
            next_send: 0,
            draining: false,
            up_waiters: 0,
            sent: Counts::default(),
            received: Counts::default(),
            actions: VecDeque::new(),
        }
    }

    /// The peer.
    pub fn peer(&self) -> &PartyName {
        &self.peer
    }

    /// The next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<PeerAction> {
        self.actions.pop_front()
    }

    /// Sends in flight that drain waits for.
    pub fn in_flight(&self) -> usize {
        self.sends.values().filter(|s| s.counted).count()
    }

    /// What was sent to the peer (acknowledged) and received from it.
    pub fn counts(&self) -> (Counts, Counts) {
        (self.sent, self.received)
    }

    // ----- what this party sends -----------------------------------------

    /// Send a value to the peer.
    pub fn send_object(&mut self, push: OutboundObject) {
        let what = format!("sending object {} to party '{}'", push.object, self.peer);
        if let Some(send) = self.start(what, Some(push.object), (true, true)) {
            self.actions
                .push_back(PeerAction::SendObject { send, push });
        }
    }

    /// Send a control frame to the peer; `object` is set for a RemoteError
    /// in place of a value (its end is reported as a push's).
    pub fn send_control(&mut self, frame: ControlFrame, object: Option<ObjectId>) {
        // RemoteErrors and aborts are the job's; where a finished driver
        // ended is a courtesy, drained only to a peer we know (a dial to a
        // peer never met could take the whole connect bound).
        let (what, counted, report) = match &frame {
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
        if let Some(send) = self.start(what, object, (counted, report)) {
            self.actions
                .push_back(PeerAction::SendControl { send, frame });
        }
    }

    /// Tracks a send until it ends, unless the peer is down: then the push
    /// counts as ended and nothing is sent.
    fn start(
        &mut self,
        what: String,
        object: Option<ObjectId>,
        (counted, report): (bool, bool),
    ) -> Option<SendId> {
        if self.gone.is_some() {
            tracing::debug!(party = %self.me, peer = %self.peer, "not {what}: the peer is down");
            if let Some(object) = object {
                self.actions.push_back(PeerAction::PushDone(object));
            }
            return None;
        }
        let send = SendId(self.next_send);
        self.next_send += 1;
        self.sends.insert(
            send,
            InFlight {
                what,
                object,
                counted,
                report,
            },
        );
        Some(send)
    }

    /// Send `send` ended: delivered (`Some` for an object), handed on (`None`
    /// for a control frame), or failed.
    pub fn send_ended(&mut self, send: SendId, result: Result<Option<Delivery>, TransportError>) {
        let Some(InFlight {
            what,
            object,
            report,
            ..
        }) = self.sends.remove(&send)
        else {
            return;
        };
        if let Some(object) = object {
            self.actions.push_back(PeerAction::PushDone(object));
        }
        match result {
            Ok(Some(delivery)) => {
                self.sent.objects += 1;
                self.sent.bytes += delivery.bytes;
                self.actions.push_back(PeerAction::Delivered(delivery));
            }
            Ok(None) => {}
            // A peer that said goodbye waits for nothing more; a frame sent
            // only as a courtesy may be lost.
            Err(TransportError::PeerClosed { .. } | TransportError::Closed { .. }) => {
                tracing::debug!(party = %self.me, peer = %self.peer, "not delivered ({what}): closed");
            }
            Err(error) if !report => {
                self.actions.push_back(PeerAction::SendError);
                tracing::debug!(party = %self.me, peer = %self.peer, %error, "{what} failed (best effort)");
            }
            Err(error) => {
                self.actions.push_back(PeerAction::SendError);
                tracing::warn!(party = %self.me, peer = %self.peer, %error, "{what} failed");
                self.actions.push_back(PeerAction::Failed { what, error });
            }
        }
        self.check_drained();
    }

    /// Someone waits until nothing counted is in flight
    /// ([`PeerAction::Drained`]).
    pub fn drain(&mut self) {
        self.draining = true;
        self.check_drained();
    }

    fn check_drained(&mut self) {
        if self.draining && self.in_flight() == 0 {
            self.draining = false;
            self.actions.push_back(PeerAction::Drained);
        }
    }

    // ----- the peer --------------------------------------------------------

    /// The transport reports the peer up.
    pub fn up(&mut self) {
        self.seen = true;
        if self.gone.take().is_some() {
            tracing::info!(party = %self.me, peer = %self.peer, "peer back");
        }
        // The barrier's waiters wait for our own dial, not for this: the
        // peer reaching us says nothing of our address for it.
    }

    /// The transport reports the peer down.
    pub fn down(&mut self, reason: &PeerDownReason) {
        let lost = *reason != PeerDownReason::Goodbye;
        let text = match reason {
            PeerDownReason::Goodbye => "it shut down".to_owned(),
            other => other.to_string(),
        };
        tracing::info!(party = %self.me, peer = %self.peer, reason = %text, "peer down");
        // A barrier still waiting for our dial to a peer that reached us and
        // went away: one that left on purpose was up (it finished first);
        // one that was lost fails the wait now, within the liveness bound.
        if !self.dialed && self.up_waiters > 0 {
            self.up_waiters = 0;
            let answer = if lost {
                Err(RuntimeError::Unreached {
                    peers: vec![self.peer.clone()],
                    reason: format!("it reached us, then was lost ({text})"),
                })
            } else {
                Ok(())
            };
            self.actions.push_back(PeerAction::AnswerUp(answer));
        }
        // Sends still in flight to it (retrying a dial, waiting for an
        // acknowledgement) can only fail now: drop them, so that shutdown
        // does not wait out their retries.
        for (send, in_flight) in std::mem::take(&mut self.sends) {
            self.actions.push_back(PeerAction::Cancel(send));
            if let Some(object) = in_flight.object {
                self.actions.push_back(PeerAction::PushDone(object));
            }
        }
        self.check_drained();
        self.gone = Some(text.clone());
        self.actions
            .push_back(PeerAction::PeerGone { reason: text, lost });
    }

    /// A wait depends on the peer: connect if never connected; report it
    /// gone if it is.
    pub fn probe(&mut self) {
        if let Some(reason) = &self.gone {
            self.actions.push_back(PeerAction::PeerGone {
                reason: reason.clone(),
                lost: false,
            });
            return;
        }
        if self.seen || self.probed {
            return;
        }
        self.probed = true;
        self.actions.push_back(PeerAction::Dial(Dial::Probe));
    }

    /// The barrier waits until the peer is known to be up: our own dial
    /// succeeded (C6). The answer comes as [`PeerAction::AnswerUp`].
    pub fn wait_up(&mut self) {
        if self.dialed {
            self.actions.push_back(PeerAction::AnswerUp(Ok(())));
            return;
        }
        self.up_waiters += 1;
        if self.up_waiters == 1 {
            // A dial for an earlier waiter would answer this one too.
            self.actions.push_back(PeerAction::Dial(Dial::Barrier));
        }
    }

    /// A dial ended.
    pub fn dial_ended(&mut self, dial: Dial, result: Result<(), TransportError>) {
        match dial {
            Dial::Barrier => {
                let answer = match result {
                    Ok(()) => {
                        self.seen = true;
                        self.dialed = true;
                        Ok(())
                    }
                    Err(e) => Err(RuntimeError::from(e)),
                };
                if self.up_waiters > 0 {
                    self.up_waiters = 0;
                    self.actions.push_back(PeerAction::AnswerUp(answer));
                }
            }
            Dial::Probe => match result {
                // We are closing: nobody waits on this dial.
                Ok(()) | Err(TransportError::Closed { .. }) => {}
                // The peer is shutting down and takes nothing more: the wait
                // that needed it ends as for a goodbye.
                Err(TransportError::PeerClosed { .. }) => {
                    let reason = "it shut down".to_owned();
                    self.gone = Some(reason.clone());
                    self.actions.push_back(PeerAction::PeerGone {
                        reason,
                        lost: false,
                    });
                }
                Err(error) => self.actions.push_back(PeerAction::Failed {
                    what: format!("connecting to party '{}' (a wait depends on it)", self.peer),
                    error,
                }),
            },
        }
    }

    /// An object of `bytes` payload bytes was received from the peer.
    pub fn received(&mut self, bytes: u64) {
        self.received.objects += 1;
        self.received.bytes += bytes;
    }
}

#[cfg(test)]
mod tests;
