//! One peer's rules, stepped directly: no actor, no transport, no sleep.
//! Each test plays what the coordinator asks and what the transport
//! reports, in an order that matters, and checks the actions asked for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use xsilo_wire::payload::Payload;
use xsilo_wire::{Consumer, Fingerprint, RemoteErrorFrame};

use super::*;

fn p(s: &str) -> PartyName {
    s.parse().unwrap()
}

/// alice's view of bob.
fn bob() -> PeerState {
    PeerState::new(p("alice"), p("bob"))
}

fn push(id: u64) -> OutboundObject {
    OutboundObject::new(
        ObjectId(id),
        Consumer::Call(ObjectId(id + 1)),
        Fingerprint(1000 + id),
        Payload::from(&b"value"[..]),
    )
}

fn error_frame(id: u64) -> ControlFrame {
    ControlFrame::RemoteError(RemoteErrorFrame {
        origin: p("alice"),
        object: ObjectId(id),
        origin_object: ObjectId(id),
        kind: "Boom".into(),
        message: None,
        causes: vec![],
        fingerprint: Some(1000 + id),
        name: None,
    })
}

fn unreachable() -> TransportError {
    TransportError::Unreachable {
        peer: p("bob"),
        addr: "127.0.0.1:1".into(),
        attempts: 3,
        last: "connection refused".into(),
    }
}

fn delivered(bytes: u64) -> Result<Option<Delivery>, TransportError> {
    Ok(Some(Delivery { attempts: 1, bytes }))
}

/// The actions queued, and the sends among them in order.
fn actions(s: &mut PeerState) -> (Vec<String>, Vec<SendId>) {
    let mut sends = Vec::new();
    let shown = std::iter::from_fn(|| s.poll_action())
        .map(|a| match a {
            PeerAction::SendObject { send, push } => {
                sends.push(send);
                format!("SendObject({})", push.object)
            }
            PeerAction::SendControl { send, frame } => {
                sends.push(send);
                let kind = match frame {
                    ControlFrame::RemoteError(f) => format!("RemoteError({})", f.object),
                    ControlFrame::Abort { .. } => "Abort".into(),
                    ControlFrame::Finished(_) => "Finished".into(),
                    ControlFrame::Goodbye => "Goodbye".into(),
                    ControlFrame::Heartbeat { .. } => "Heartbeat".into(),
                };
                format!("SendControl({kind})")
            }
            PeerAction::Cancel(_) => "Cancel".into(),
            PeerAction::Dial(d) => format!("Dial({d:?})"),
            PeerAction::PushDone(o) => format!("PushDone({o})"),
            PeerAction::Delivered(d) => format!("Delivered({})", d.bytes),
            PeerAction::SendError => "SendError".into(),
            PeerAction::Failed { what, .. } => format!("Failed({what})"),
            PeerAction::PeerGone { reason, lost } => format!("PeerGone({reason}, lost: {lost})"),
            PeerAction::AnswerUp(Ok(())) => "AnswerUp(Ok)".into(),
            PeerAction::AnswerUp(Err(e)) => format!("AnswerUp(Err({e}))"),
            PeerAction::Drained => "Drained".into(),
        })
        .collect();
    (shown, sends)
}

fn only(s: &mut PeerState) -> Vec<String> {
    actions(s).0
}

#[test]
fn a_push_is_in_flight_until_it_ends_and_the_drain_waits_for_it() {
    let mut s = bob();
    s.send_object(push(1));
    let (a, sends) = actions(&mut s);
    assert_eq!(a, vec!["SendObject(#1)"]);
    assert_eq!(s.in_flight(), 1);
    s.drain();
    assert!(only(&mut s).is_empty(), "the push is still in flight");
    s.send_ended(sends[0], delivered(5));
    assert_eq!(
        only(&mut s),
        vec!["PushDone(#1)", "Delivered(5)", "Drained"],
        "the table learns first, then the statistics, then the drain"
    );
    assert_eq!(s.in_flight(), 0);
    assert_eq!(
        s.counts().0,
        Counts {
            objects: 1,
            bytes: 5
        }
    );
    s.drain();
    assert_eq!(only(&mut s), vec!["Drained"], "nothing in flight: at once");
}

#[test]
fn courtesy_frames_hold_no_drain_and_their_failures_fail_nothing() {
    let mut s = bob();
    s.send_control(ControlFrame::Goodbye, None);
    s.send_control(ControlFrame::Heartbeat { seq: 1 }, None);
    let finished = ControlFrame::Finished(xsilo_wire::FinishedFrame {
        objects: 3,
        digest: 7,
        clean: true,
    });
    s.send_control(finished.clone(), None);
    let (a, sends) = actions(&mut s);
    assert_eq!(
        a,
        vec![
            "SendControl(Goodbye)",
            "SendControl(Heartbeat)",
            "SendControl(Finished)"
        ]
    );
    assert_eq!(
        s.in_flight(),
        0,
        "where our driver finished is drained only to a peer we have seen"
    );
    s.drain();
    assert_eq!(only(&mut s), vec!["Drained"]);
    for send in sends {
        s.send_ended(send, Err(unreachable()));
    }
    assert_eq!(
        only(&mut s),
        vec!["SendError", "SendError", "SendError"],
        "counted as errors, reported as none"
    );

    s.up();
    s.send_control(finished, None);
    actions(&mut s);
    assert_eq!(
        s.in_flight(),
        1,
        "a seen peer is told before the drain ends"
    );
}

#[test]
fn a_failed_push_or_abort_is_a_sending_failure_but_a_closed_peer_is_not() {
    let mut s = bob();
    s.send_control(error_frame(4), Some(ObjectId(4)));
    s.send_control(ControlFrame::Abort { reason: "x".into() }, None);
    s.send_object(push(5));
    let (a, sends) = actions(&mut s);
    assert_eq!(
        a,
        vec![
            "SendControl(RemoteError(#4))",
            "SendControl(Abort)",
            "SendObject(#5)"
        ]
    );
    assert_eq!(s.in_flight(), 3);
    s.send_ended(sends[0], Err(unreachable()));
    assert_eq!(
        only(&mut s),
        vec![
            "PushDone(#4)",
            "SendError",
            "Failed(sending the error of object #4 to party 'bob')"
        ]
    );
    s.send_ended(sends[1], Err(unreachable()));
    assert_eq!(
        only(&mut s),
        vec!["SendError", "Failed(sending an abort to party 'bob')"]
    );
    s.send_ended(sends[2], Err(TransportError::PeerClosed { peer: p("bob") }));
    assert_eq!(
        only(&mut s),
        vec!["PushDone(#5)"],
        "a peer that said goodbye waits for nothing more"
    );
    assert_eq!(s.counts().0, Counts::default());
}

#[test]
fn a_peer_going_down_drops_its_sends_and_nothing_more_is_sent_until_it_is_back() {
    let mut s = bob();
    s.up();
    s.send_object(push(1));
    s.send_control(ControlFrame::Abort { reason: "x".into() }, None);
    let (_, sends) = actions(&mut s);
    s.drain();
    assert!(only(&mut s).is_empty());
    s.down(&PeerDownReason::TimedOut);
    assert_eq!(
        only(&mut s),
        vec![
            "Cancel",
            "PushDone(#1)",
            "Cancel",
            "Drained",
            "PeerGone(nothing heard from it within peer_lost_timeout, lost: true)"
        ]
    );
    assert_eq!(s.in_flight(), 0);
    // A cancelled send that ends after all is not reported twice.
    s.send_ended(sends[0], delivered(5));
    assert!(only(&mut s).is_empty());
    // While it is down a push ends at once, unsent; a wait on it ends too.
    s.send_object(push(2));
    assert_eq!(only(&mut s), vec!["PushDone(#2)"]);
    s.probe();
    assert_eq!(
        only(&mut s),
        vec!["PeerGone(nothing heard from it within peer_lost_timeout, lost: false)"]
    );
    // Back: sends go again.
    s.up();
    s.send_object(push(3));
    assert_eq!(only(&mut s), vec!["SendObject(#3)"]);
}

#[test]
fn a_goodbye_is_a_peer_gone_but_not_lost() {
    let mut s = bob();
    s.down(&PeerDownReason::Goodbye);
    assert_eq!(only(&mut s), vec!["PeerGone(it shut down, lost: false)"]);
}

#[test]
fn a_probe_dials_a_never_seen_peer_once() {
    let mut s = bob();
    s.probe();
    assert_eq!(only(&mut s), vec!["Dial(Probe)"]);
    s.probe();
    assert!(only(&mut s).is_empty(), "one probe is enough");
    s.dial_ended(Dial::Probe, Ok(()));
    assert!(only(&mut s).is_empty(), "the peer's up event says the rest");

    let mut seen = bob();
    seen.up();
    seen.probe();
    assert!(only(&mut seen).is_empty(), "a peer seen needs no probe");
}

#[test]
fn a_probe_that_fails_ends_the_wait_as_the_failure_says() {
    let mut s = bob();
    s.probe();
    actions(&mut s);
    s.dial_ended(
        Dial::Probe,
        Err(TransportError::Closed { party: p("alice") }),
    );
    assert!(only(&mut s).is_empty(), "we are closing: nobody waits");
    s.dial_ended(Dial::Probe, Err(unreachable()));
    assert_eq!(
        only(&mut s),
        vec!["Failed(connecting to party 'bob' (a wait depends on it))"]
    );
    s.dial_ended(
        Dial::Probe,
        Err(TransportError::PeerClosed { peer: p("bob") }),
    );
    assert_eq!(
        only(&mut s),
        vec!["PeerGone(it shut down, lost: false)"],
        "a peer shutting down ends the wait as its goodbye would"
    );
    s.send_object(push(1));
    assert_eq!(only(&mut s), vec!["PushDone(#1)"], "and is down");
}

#[test]
fn the_barrier_dials_once_for_all_its_waiters_and_remembers_success() {
    let mut s = bob();
    s.up();
    s.wait_up();
    s.wait_up();
    assert_eq!(
        only(&mut s),
        vec!["Dial(Barrier)"],
        "our own dial, even though the peer reached us"
    );
    s.dial_ended(Dial::Barrier, Err(unreachable()));
    let a = only(&mut s);
    assert_eq!(a.len(), 1);
    assert!(
        a[0].starts_with("AnswerUp(Err(") && a[0].contains("unreachable"),
        "{a:?}"
    );
    s.wait_up();
    assert_eq!(
        only(&mut s),
        vec!["Dial(Barrier)"],
        "a failed dial is tried again"
    );
    s.dial_ended(Dial::Barrier, Ok(()));
    assert_eq!(only(&mut s), vec!["AnswerUp(Ok)"]);
    s.wait_up();
    assert_eq!(only(&mut s), vec!["AnswerUp(Ok)"], "known up: no dial");
}

#[test]
fn a_barrier_waiting_on_a_peer_that_left_ends_as_it_left() {
    // It reached us and said goodbye: it was up (it finished first).
    let mut s = bob();
    s.up();
    s.wait_up();
    actions(&mut s);
    s.down(&PeerDownReason::Goodbye);
    assert_eq!(
        only(&mut s),
        vec!["AnswerUp(Ok)", "PeerGone(it shut down, lost: false)"]
    );
    // The dial ends later: nobody is left to answer.
    s.dial_ended(Dial::Barrier, Ok(()));
    assert!(only(&mut s).is_empty());

    // It reached us and was lost: the wait fails now, naming it.
    let mut s = bob();
    s.up();
    s.wait_up();
    actions(&mut s);
    s.down(&PeerDownReason::Lost("reset".into()));
    let a = only(&mut s);
    assert!(
        a[0].starts_with("AnswerUp(Err(") && a[0].contains("it reached us, then was lost"),
        "{a:?}"
    );
    assert_eq!(a[1], "PeerGone(connection lost: reset, lost: true)");
}

#[test]
fn what_is_received_is_counted() {
    let mut s = bob();
    s.received(10);
    s.received(5);
    assert_eq!(
        s.counts(),
        (
            Counts::default(),
            Counts {
                objects: 2,
                bytes: 15
            }
        )
    );
    assert!(only(&mut s).is_empty());
}
