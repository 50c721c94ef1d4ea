//! The object rules, stepped directly: no actors, no sockets, no clock.
//! Each test plays the events one party sees, in an order that matters,
//! and checks the actions the table asks for and what it still holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

// The party, object and task helpers are the in-memory harness's, so
// that both step the table with the same calls.
use crate::rules::sim::{p, r, task};

/// A table for `me` in a job of alice, bob and carol.
fn table(me: &str) -> ObjectTable<&'static str> {
    let peers = ["alice", "bob", "carol"]
        .into_iter()
        .filter(|x| *x != me)
        .map(p)
        .collect();
    ObjectTable::new(p(me), peers, false)
}

fn actions(t: &mut ObjectTable<&'static str>) -> Vec<Action<&'static str>> {
    std::iter::from_fn(|| t.poll_action()).collect()
}

fn runs(acts: &[Action<&'static str>]) -> Vec<(&'static str, usize)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Run { body, inputs, .. } => Some((*body, inputs.len())),
            _ => None,
        })
        .collect()
}

fn pushes(acts: &[Action<&'static str>]) -> Vec<(String, u64)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Push { dest, push } => Some((dest.to_string(), push.object.0)),
            Action::PushError { dest, frame } => Some((format!("{dest}!"), frame.object.0)),
            _ => None,
        })
        .collect()
}

fn call_of(acts: &[Action<&'static str>], body: &str) -> CallId {
    acts.iter()
        .find_map(|a| match a {
            Action::Run { call, body: b, .. } if *b == body => Some(*call),
            _ => None,
        })
        .expect("the body was run")
}

fn answer(acts: &[Action<&'static str>], get: GetId) -> Result<Vec<Payload>, RuntimeError> {
    acts.iter()
        .find_map(|a| match a {
            Action::Answer { get: g, result } if *g == get => Some(result.clone()),
            _ => None,
        })
        .expect("the get was answered")
}

fn diverged(acts: &[Action<&'static str>]) -> Option<String> {
    acts.iter().find_map(|a| match a {
        Action::Diverged(e) => Some(e.to_string()),
        _ => None,
    })
}

/// The links acknowledge every push among `acts`.
fn ack_all(t: &mut ObjectTable<&'static str>, acts: &[Action<&'static str>]) {
    for a in acts {
        match a {
            Action::Push { push, .. } => t.push_done(push.object),
            Action::PushError { frame, .. } => t.push_done(frame.object),
            _ => {}
        }
    }
}

fn v(s: &'static str) -> Payload {
    Payload::from(s.as_bytes())
}

#[test]
fn a_value_is_pushed_once_per_destination_and_freed_when_acked_and_dropped() {
    let mut t = table("alice");
    t.submit(task("alice", vec![], r(1, "alice"), "make"));
    let a = actions(&mut t);
    let call = call_of(&a, "make");
    // Two calls in bob consume #1: one push.
    t.submit(task("bob", vec![r(1, "alice")], r(2, "bob"), "use1"));
    t.submit(task("bob", vec![r(1, "alice")], r(3, "bob"), "use2"));
    assert!(pushes(&actions(&mut t)).is_empty(), "not ready yet");
    t.completed(call, Ok(vec![v("value")]));
    assert_eq!(pushes(&actions(&mut t)), vec![("bob".into(), 1)]);
    assert_eq!(t.held().bytes, 5);
    // The driver drops its handles: the value stays until bob acked.
    for id in [1, 2, 3] {
        t.release(ObjectId(id));
    }
    assert_eq!(t.held().objects, 1, "the push is not acknowledged yet");
    t.push_done(ObjectId(1));
    assert_eq!(t.held(), Held::default(), "nothing is left");
}

#[test]
fn a_remote_value_is_cached_for_every_local_consumer_then_freed() {
    let mut t = table("bob");
    t.submit(task("alice", vec![], r(1, "alice"), "make"));
    t.submit(task("bob", vec![r(1, "alice")], r(2, "bob"), "use1"));
    t.submit(task("bob", vec![r(1, "alice")], r(3, "bob"), "use2"));
    let a = actions(&mut t);
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::NeedPeer(q) if *q == p("alice"))));
    assert!(runs(&a).is_empty());
    t.arrived(
        &p("alice"),
        ObjectId(1),
        Fingerprint(1001),
        Consumer::Call(ObjectId(2)),
        false,
        v("abc"),
    );
    let a = actions(&mut t);
    assert_eq!(runs(&a), vec![("use1", 1), ("use2", 1)]);
    t.completed(call_of(&a, "use1"), Ok(vec![v("x")]));
    t.completed(call_of(&a, "use2"), Ok(vec![v("y")]));
    for id in [1, 2, 3] {
        t.release(ObjectId(id));
    }
    assert_eq!(t.held(), Held::default());
}

#[test]
fn a_value_arriving_after_its_object_was_freed_is_discarded() {
    // bob's call consumes #1 from alice and #2 from carol; #2 fails first,
    // so the call fails and bob drops everything before #1 arrives.
    let mut t = table("bob");
    t.submit(task("alice", vec![], r(1, "alice"), "a"));
    t.submit(task("carol", vec![], r(2, "carol"), "c"));
    t.submit(task(
        "bob",
        vec![r(1, "alice"), r(2, "carol")],
        r(3, "bob"),
        "sum",
    ));
    t.get(GetId(7), &[r(3, "bob")]);
    actions(&mut t);
    let frame = RemoteErrorFrame {
        origin: p("carol"),
        object: ObjectId(2),
        origin_object: ObjectId(2),
        kind: "Boom".into(),
        message: None,
        causes: vec![],
        fingerprint: Some(1002),
        name: None,
    };
    t.arrived_error(&p("carol"), &frame);
    let a = actions(&mut t);
    let e = answer(&a, GetId(7)).unwrap_err().to_string();
    assert!(e.contains("failed in party 'carol' (Boom)"), "{e}");
    assert!(runs(&a).is_empty(), "a call with a failed input never runs");
    ack_all(&mut t, &a);
    for id in [1, 2, 3] {
        t.release(ObjectId(id));
    }
    assert_eq!(t.held().objects, 0, "{:?}", t.entries);
    // Now alice's push arrives: acknowledged and discarded, no divergence.
    t.arrived(
        &p("alice"),
        ObjectId(1),
        Fingerprint(1001),
        Consumer::Call(ObjectId(3)),
        false,
        v("late"),
    );
    let a = actions(&mut t);
    assert_eq!(diverged(&a), None);
    assert_eq!(t.held(), Held::default());
    assert!(
        t.tombstones.is_empty(),
        "the tombstone went with the arrival"
    );
}

#[test]
fn a_remote_error_arriving_before_the_call_that_consumes_it() {
    let mut t = table("bob");
    // carol's failure is broadcast before bob's driver has made #1.
    let frame = RemoteErrorFrame {
        origin: p("alice"),
        object: ObjectId(1),
        origin_object: ObjectId(1),
        kind: "Boom".into(),
        message: None,
        causes: vec![],
        fingerprint: Some(1001),
        name: None,
    };
    t.arrived_error(&p("alice"), &frame);
    assert_eq!(t.held().objects, 1, "kept for the call that will come");
    t.submit(task("alice", vec![], r(1, "alice"), "a"));
    t.submit(task("bob", vec![r(1, "alice")], r(2, "bob"), "use"));
    t.get(GetId(1), &[r(2, "bob")]);
    let a = actions(&mut t);
    assert_eq!(diverged(&a), None);
    assert!(runs(&a).is_empty());
    let e = answer(&a, GetId(1)).unwrap_err().to_string();
    assert!(
        e.contains("RemoteError: object #1 failed in party 'alice' (Boom)"),
        "{e}"
    );
}

#[test]
fn a_value_arriving_before_its_call_is_checked_when_the_call_comes() {
    let mut t = table("bob");
    t.arrived(
        &p("alice"),
        ObjectId(1),
        Fingerprint(1001),
        Consumer::Call(ObjectId(2)),
        false,
        v("early"),
    );
    t.submit(task("alice", vec![], r(1, "alice"), "a"));
    t.submit(task("bob", vec![r(1, "alice")], r(2, "bob"), "use"));
    let a = actions(&mut t);
    assert_eq!(diverged(&a), None);
    assert_eq!(runs(&a), vec![("use", 1)]);

    // The same early arrival, but bob's driver made #1 elsewhere.
    let mut t = table("bob");
    t.arrived(
        &p("alice"),
        ObjectId(1),
        Fingerprint(999),
        Consumer::Call(ObjectId(2)),
        false,
        v("early"),
    );
    t.submit(task("alice", vec![], r(1, "alice"), "a"));
    let e = diverged(&actions(&mut t)).expect("a divergence");
    assert!(
        e.contains("between party 'bob' and party 'alice' at object #1"),
        "{e}"
    );
    assert!(e.contains("another call site"), "{e}");
}

#[test]
fn an_object_sent_by_a_party_that_does_not_own_it_is_a_divergence() {
    // Two calls swapped: alice thinks #1 is hers; bob pushed his #1.
    let mut t = table("alice");
    t.submit(task("alice", vec![], r(1, "alice"), "mine"));
    actions(&mut t);
    t.arrived(
        &p("bob"),
        ObjectId(1),
        Fingerprint(1001),
        Consumer::Call(ObjectId(3)),
        false,
        v("bob's"),
    );
    let e = diverged(&actions(&mut t)).expect("a divergence");
    assert!(
        e.contains(
            "party 'bob' sent it as its own, but this party's driver made it in party 'alice'"
        ),
        "{e}"
    );
}

#[test]
fn a_push_for_a_call_this_party_never_makes_is_a_divergence() {
    // alice pushed #1 for bob's call #2; bob's driver skipped that call and
    // dropped #1.
    let mut t = table("bob");
    t.submit(task("alice", vec![], r(1, "alice"), "a"));
    t.submit(task("alice", vec![], r(2, "alice"), "b"));
    t.release(ObjectId(1));
    t.arrived(
        &p("alice"),
        ObjectId(1),
        Fingerprint(1001),
        Consumer::Call(ObjectId(3)),
        false,
        v("x"),
    );
    let e = diverged(&actions(&mut t)).expect("a divergence");
    assert!(e.contains("makes no call that consumes it"), "{e}");
    // A resend or a get's broadcast of a freed object is not one.
    let mut t = table("bob");
    t.submit(task("alice", vec![], r(1, "alice"), "a"));
    t.release(ObjectId(1));
    t.arrived(
        &p("alice"),
        ObjectId(1),
        Fingerprint(1001),
        Consumer::Call(ObjectId(3)),
        true,
        v("x"),
    );
    t.arrived(
        &p("alice"),
        ObjectId(1),
        Fingerprint(1001),
        Consumer::Get,
        false,
        v("x"),
    );
    assert_eq!(diverged(&actions(&mut t)), None);
}

#[test]
fn finished_positions_are_compared_at_both_ends() {
    let frame = |objects, digest| FinishedFrame {
        objects,
        digest,
        clean: true,
    };
    // Same calls, both shutting down: no divergence (across parties, in
    // `rules/sim/tests.rs`). Where alice's driver finished:
    let mut a = table("alice");
    a.submit(task("alice", vec![], r(1, "alice"), "x"));
    a.submit(task("bob", vec![], r(2, "bob"), "y"));
    let fa = a.finish();
    assert_eq!(diverged(&actions(&mut a)), None);

    // bob makes an extra call after alice finished: caught when it is made.
    let mut b = table("bob");
    b.submit(task("alice", vec![], r(1, "alice"), "x"));
    b.submit(task("bob", vec![], r(2, "bob"), "y"));
    b.peer_finished(&p("alice"), fa);
    assert_eq!(diverged(&actions(&mut b)), None);
    b.submit(task("alice", vec![], r(3, "alice"), "extra"));
    let e = diverged(&actions(&mut b)).expect("a divergence");
    assert!(
        e.contains("party 'alice' finished its driver after object #2"),
        "{e}"
    );
    // A driver that runs on makes more calls before the job has failed:
    // the divergence is reported once, not once per call.
    for id in 4..1000 {
        b.submit(task("alice", vec![], r(id, "alice"), "more"));
    }
    assert_eq!(diverged(&actions(&mut b)), None, "reported again");

    // Same count, other call sites.
    let mut b = table("bob");
    b.submit(task("alice", vec![], r(1, "alice"), "x"));
    b.submit(task("bob", vec![], r(2, "bob"), "y"));
    b.finish();
    b.peer_finished(&p("alice"), frame(2, fa.digest ^ 1));
    let e = diverged(&actions(&mut b)).expect("a divergence");
    assert!(e.contains("other call sites"), "{e}");

    // After an error, drivers may stop anywhere: nothing is compared.
    let mut b = table("bob");
    b.submit(task("alice", vec![], r(1, "alice"), "x"));
    b.peer_finished(
        &p("alice"),
        FinishedFrame {
            objects: 0,
            digest: 0,
            clean: false,
        },
    );
    b.finish();
    assert_eq!(diverged(&actions(&mut b)), None);
}

// The failure of A -> B -> C across alice, bob and carol, each party's
// table stepped against the others': `rules/sim/tests.rs`.

#[test]
fn actor_calls_run_one_at_a_time_in_order_even_when_an_early_one_waits() {
    let mut t = table("bob");
    t.submit(Submission {
        party: p("bob"),
        inputs: vec![],
        outputs: vec![],
        consumer: Consumer::Call(ObjectId(1)),
        op: Op::NewActor(ObjectId(1), "ctor"),
    });
    t.submit(task("alice", vec![], r(2, "alice"), "remote"));
    let method = |inputs, out: ObjRef, body| Submission {
        party: p("bob"),
        inputs,
        consumer: Consumer::Call(out.id),
        outputs: vec![out],
        op: Op::Method(ObjectId(1), body),
    };
    t.submit(method(vec![r(2, "alice")], r(3, "bob"), "first"));
    t.submit(method(vec![], r(4, "bob"), "second"));
    let a = actions(&mut t);
    assert!(a.iter().any(|x| matches!(x, Action::CreateActor { .. })));
    t.actor_created(ObjectId(1), Ok(()));
    assert!(
        runs(&actions(&mut t)).is_empty(),
        "second waits behind first"
    );
    t.arrived(
        &p("alice"),
        ObjectId(2),
        Fingerprint(1002),
        Consumer::Call(ObjectId(3)),
        false,
        v("in"),
    );
    let a = actions(&mut t);
    assert_eq!(runs(&a), vec![("first", 1)]);
    t.completed(call_of(&a, "first"), Ok(vec![v("1")]));
    let a = actions(&mut t);
    assert_eq!(runs(&a), vec![("second", 0)]);
    t.completed(call_of(&a, "second"), Ok(vec![v("2")]));
    // Kill after the calls; a later call fails; dropping the handle frees.
    t.submit(Submission {
        party: p("bob"),
        inputs: vec![],
        outputs: vec![],
        consumer: Consumer::Call(ObjectId(1)),
        op: Op::Kill(ObjectId(1)),
    });
    t.submit(method(vec![], r(5, "bob"), "late"));
    t.get(GetId(1), &[r(5, "bob")]);
    let a = actions(&mut t);
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::DropActor(ObjectId(1)))));
    assert!(answer(&a, GetId(1))
        .unwrap_err()
        .to_string()
        .contains("it was killed"));
    ack_all(&mut t, &a);
    t.release_actor(ObjectId(1));
    for id in 2..=5 {
        t.release(ObjectId(id));
    }
    assert_eq!(t.held(), Held::default(), "{:?}", t.entries);
}

#[test]
fn a_dropped_actor_is_freed_after_its_queued_calls() {
    let mut t = table("alice");
    t.submit(Submission {
        party: p("alice"),
        inputs: vec![],
        outputs: vec![],
        consumer: Consumer::Call(ObjectId(1)),
        op: Op::NewActor(ObjectId(1), "ctor"),
    });
    t.submit(Submission {
        party: p("alice"),
        inputs: vec![],
        consumer: Consumer::Call(ObjectId(2)),
        outputs: vec![r(2, "alice")],
        op: Op::Method(ObjectId(1), "m"),
    });
    t.release_actor(ObjectId(1));
    actions(&mut t);
    assert_eq!(t.held().actors, 1, "a call is still queued");
    t.actor_created(ObjectId(1), Ok(()));
    let a = actions(&mut t);
    t.completed(call_of(&a, "m"), Ok(vec![v("done")]));
    let a = actions(&mut t);
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::DropActor(ObjectId(1)))));
    assert_eq!(t.held().actors, 0);
}

#[test]
fn an_abort_fails_every_wait_drops_queued_work_and_later_calls_fail_at_once() {
    let mut t = table("bob");
    t.submit(task("alice", vec![], r(1, "alice"), "a"));
    t.submit(task("bob", vec![r(1, "alice")], r(2, "bob"), "queued"));
    t.get(GetId(1), &[r(2, "bob")]);
    actions(&mut t);
    let abort = RuntimeError::Aborted {
        by: p("carol"),
        reason: "SIGINT".into(),
    };
    t.fail_all(abort.clone());
    let a = actions(&mut t);
    assert!(answer(&a, GetId(1))
        .unwrap_err()
        .to_string()
        .contains("aborted by party 'carol'"));
    assert_eq!(t.held().calls, 0, "queued work is dropped");
    // The value arriving now runs nothing.
    t.arrived(
        &p("alice"),
        ObjectId(1),
        Fingerprint(1001),
        Consumer::Call(ObjectId(2)),
        false,
        v("x"),
    );
    assert!(runs(&actions(&mut t)).is_empty());
    t.submit(task("bob", vec![], r(3, "bob"), "later"));
    t.get(GetId(2), &[r(3, "bob")]);
    let a = actions(&mut t);
    assert!(runs(&a).is_empty());
    assert!(answer(&a, GetId(2)).is_err());
}

#[test]
fn a_lost_peer_fails_what_this_party_waits_for_from_it() {
    let mut t = table("bob");
    t.submit(task("alice", vec![], r(1, "alice"), "a"));
    t.get(GetId(1), &[r(1, "alice")]);
    actions(&mut t);
    t.peer_gone(
        &p("alice"),
        "nothing heard from it within peer_lost_timeout",
    );
    let e = answer(&actions(&mut t), GetId(1)).unwrap_err().to_string();
    assert!(e.contains("party 'alice' is gone"), "{e}");
}

#[test]
fn flush_waits_for_values_still_being_made_for_other_parties() {
    let mut t = table("alice");
    t.submit(task("alice", vec![], r(1, "alice"), "big"));
    let call = call_of(&actions(&mut t), "big");
    t.submit(task("bob", vec![r(1, "alice")], r(2, "bob"), "use"));
    assert!(!t.flushed());
    t.completed(call, Ok(vec![v("data")]));
    assert!(t.flushed());
}

#[test]
fn many_rounds_keep_the_table_flat() {
    // 1,000 rounds of a model pushed alice -> bob -> back, handles dropped
    // each round as a loop body does: nothing accumulates.
    let mut a = table("alice");
    let mut id = 0;
    for _ in 0..1000 {
        id += 1;
        let model = r(id, "alice");
        id += 1;
        let update = r(id, "bob");
        a.submit(task("alice", vec![], model.clone(), "model"));
        let call = call_of(&actions(&mut a), "model");
        a.completed(call, Ok(vec![Payload::from(vec![0u8; 1024])]));
        a.submit(task("bob", vec![model.clone()], update.clone(), "train"));
        a.get(GetId(id), std::slice::from_ref(&update));
        for act in actions(&mut a) {
            if let Action::Push { push, .. } = act {
                a.push_done(push.object);
            }
        }
        a.arrived(
            &p("bob"),
            update.id,
            update.fingerprint,
            Consumer::Get,
            false,
            v("u"),
        );
        actions(&mut a);
        a.release(model.id);
        a.release(update.id);
    }
    assert_eq!(a.held(), Held::default());
    assert!(a.tombstones.is_empty());
}

#[test]
fn a_call_on_an_unknown_party_fails_alike_everywhere_and_nothing_crosses() {
    // Every party makes the failed outputs as its own: a get of them sends
    // nothing, and the finished positions still agree.
    let mut tables = [table("alice"), table("bob")];
    let mut frames = Vec::new();
    for t in &mut tables {
        let me = t.me.to_string();
        t.submit(Submission {
            party: p(&me),
            inputs: vec![],
            outputs: vec![r(1, &me)],
            consumer: Consumer::Call(ObjectId(1)),
            op: Op::Fail(RuntimeError::UnknownParty {
                party: "dave".into(),
                known: "alice, bob".into(),
            }),
        });
        t.get(GetId(1), &[r(1, &me)]);
        let a = actions(t);
        assert!(pushes(&a).is_empty(), "{me}: {:?}", pushes(&a));
        assert!(answer(&a, GetId(1))
            .unwrap_err()
            .to_string()
            .contains("'dave' is not a party"));
        t.release(ObjectId(1));
        assert_eq!(t.held(), Held::default());
        frames.push(t.finish());
    }
    tables[0].peer_finished(&p("bob"), frames[1]);
    tables[1].peer_finished(&p("alice"), frames[0]);
    for t in &mut tables {
        assert_eq!(diverged(&actions(t)), None);
    }
}

#[test]
fn two_parties_sending_the_same_early_object_is_a_divergence() {
    let mut t = table("carol");
    t.arrived(
        &p("alice"),
        ObjectId(5),
        Fingerprint(1),
        Consumer::Get,
        false,
        v("a"),
    );
    t.arrived(
        &p("bob"),
        ObjectId(5),
        Fingerprint(1),
        Consumer::Get,
        false,
        v("b"),
    );
    let e = diverged(&actions(&mut t)).expect("a divergence");
    assert!(
        e.contains("both party 'alice' and party 'bob' sent it as their own"),
        "{e}"
    );
}

#[test]
fn the_owner_is_part_of_the_position() {
    let mut a = table("alice");
    let mut b = table("bob");
    // The same call site, pinned to alice in one driver and to bob in the
    // other; nothing crosses.
    a.submit(task("alice", vec![], r(1, "alice"), "x"));
    b.submit(task("bob", vec![], r(1, "bob"), "x"));
    actions(&mut a);
    let fa = a.finish();
    b.finish();
    b.peer_finished(&p("alice"), fa);
    assert!(diverged(&actions(&mut b)).is_some());
}

#[test]
fn every_object_expected_from_a_lost_peer_names_that_peer() {
    // bob: #1 from alice feeds bob's call #2, which feeds alice's #3, which
    // bob gets. alice is lost: the get of #3 says alice is gone, whatever
    // order the table holds them in.
    for _ in 0..20 {
        let mut t = table("bob");
        t.submit(task("alice", vec![], r(1, "alice"), "a"));
        t.submit(task("bob", vec![r(1, "alice")], r(2, "bob"), "b"));
        t.submit(task("alice", vec![r(2, "bob")], r(3, "alice"), "c"));
        t.get(GetId(9), &[r(3, "alice")]);
        actions(&mut t);
        t.peer_gone(
            &p("alice"),
            "nothing heard from it within peer_lost_timeout",
        );
        let e = answer(&actions(&mut t), GetId(9)).unwrap_err().to_string();
        assert!(e.contains("party 'alice' is gone"), "{e}");
        assert!(e.contains("object #3"), "{e}");
    }
}

#[test]
fn what_a_peer_sends_ahead_of_the_driver_is_bounded_and_freed_as_the_driver_catches_up() {
    let mut t = table("bob");
    t.limit_early_bytes(10);
    let alice = p("alice");
    // One object always fits when none is kept, however large.
    assert!(t.early_room(&alice, ObjectId(1), 1_000));
    t.arrived(
        &alice,
        ObjectId(1),
        Fingerprint(1001),
        Consumer::Call(ObjectId(2)),
        false,
        v("0123456"),
    );
    // 7 bytes kept: 4 more would pass the 10-byte bound; 3 do not.
    assert!(!t.early_room(&alice, ObjectId(2), 4));
    assert!(t.early_room(&alice, ObjectId(2), 3));
    // Other peers have bounds of their own.
    assert!(t.early_room(&p("carol"), ObjectId(3), 8));
    // The driver makes #1: its bytes are no longer ahead.
    t.submit(task("alice", vec![], r(1, "alice"), "a"));
    assert!(t.early_room(&alice, ObjectId(2), 10));
    // Objects the driver has made already are never held back.
    assert!(t.early_room(&alice, ObjectId(1), 1_000));
    assert_eq!(diverged(&actions(&mut t)), None);
}

#[test]
fn at_most_max_early_objects_per_peer_are_kept_and_a_failure_past_them_fails_the_job() {
    let mut t = table("bob");
    let alice = p("alice");
    for id in 1..=MAX_EARLY_OBJECTS {
        assert!(t.early_room(&alice, ObjectId(id), 1), "object {id}");
        t.arrived(
            &alice,
            ObjectId(id),
            Fingerprint(1000 + id),
            Consumer::Call(ObjectId(2)),
            false,
            v("x"),
        );
    }
    let next = ObjectId(MAX_EARLY_OBJECTS + 1);
    assert!(
        !t.early_room(&alice, next, 1),
        "a value past the bound waits"
    );
    assert_eq!(diverged(&actions(&mut t)), None);
    // A failure cannot wait unanswered: past the bound it fails the job,
    // naming both parties and what happened.
    let frame = RemoteErrorFrame {
        origin: alice.clone(),
        object: next,
        origin_object: next,
        kind: "Boom".into(),
        message: None,
        causes: vec![],
        fingerprint: Some(1000 + next.0),
        name: None,
    };
    t.arrived_error(&alice, &frame);
    let why = diverged(&actions(&mut t)).expect("a divergence");
    assert!(
        why.contains("'bob'")
            && why.contains("'alice'")
            && why.contains("ahead of this party's driver"),
        "{why}"
    );
}
