//! Scenarios across parties, on the in-memory harness: every party runs
//! the real rules, and what one party sends is what the other receives.

use super::*;

/// The error `party` answered get `get` with.
fn get_error(sim: &Sim, party: &str, get: u64) -> String {
    match sim.party(party).answers.get(&GetId(get)) {
        Some(Err(e)) => e.to_string(),
        other => panic!(
            "{party} answered get {get} with {other:?}; trace {:#?}",
            sim.trace()
        ),
    }
}

/// Where `entry` is in the trace.
fn at(sim: &Sim, entry: &str) -> usize {
    sim.trace()
        .iter()
        .position(|t| t == entry)
        .unwrap_or_else(|| panic!("no {entry:?} in {:#?}", sim.trace()))
}

/// The trace entries containing `needle`.
fn traced(sim: &Sim, needle: &str) -> Vec<String> {
    sim.trace()
        .iter()
        .filter(|t| t.contains(needle))
        .cloned()
        .collect()
}

/// `party` ended exactly once, and how.
fn ended_once(sim: &Sim, party: &str) -> Result<(), String> {
    let q = sim.party(party);
    assert_eq!(q.ended.len(), 1, "{party} ended {:?}", q.ended);
    assert!(q.life.shutdowns_run() <= 1);
    q.ended[0].clone().map_err(|e| e.to_string())
}

#[test]
fn calls_made_in_different_orders_are_a_divergence_named_at_both_parties() {
    let mut sim = Sim::new(&["alice", "bob"]);
    // alice's driver: #1 in alice, then #2 in bob on #1.
    sim.at("alice", |q, _| {
        q.table.submit(task("alice", vec![], r(1, "alice"), "a"));
        q.table
            .submit(task("bob", vec![r(1, "alice")], r(2, "bob"), "b"));
        q.table.get(GetId(1), &[r(2, "bob")]);
    });
    // bob's driver makes the two calls the other way round.
    sim.at("bob", |q, _| {
        q.table.submit(task("bob", vec![], r(1, "bob"), "b"));
        q.table
            .submit(task("alice", vec![r(1, "bob")], r(2, "alice"), "a"));
        q.table.get(GetId(1), &[r(2, "alice")]);
    });
    sim.run();
    for (here, other) in [("alice", "bob"), ("bob", "alice")] {
        let q = sim.party(here);
        let d = q
            .diverged
            .first()
            .unwrap_or_else(|| panic!("{here} saw no divergence: {:#?}", sim.trace()))
            .to_string();
        assert!(
            d.contains(&format!(
                "between party '{here}' and party '{other}' at object #1"
            )) && d.contains(&format!("party '{other}' sent it as its own")),
            "{d}"
        );
        // Nothing waits: the get fails with the divergence, the party
        // aborts (telling the other) and ends, once.
        let e = get_error(&sim, here, 1);
        assert!(e.contains("driver divergence"), "{e}");
        let end = ended_once(&sim, here).unwrap_err();
        assert!(end.contains("aborted"), "{end}");
        assert_eq!(traced(&sim, &format!("{here} -> {other}: abort")).len(), 1);
        // Neither runs the call the other party thinks it makes.
        assert_eq!(q.ran.len(), 1, "{here} ran {:?}", q.ran);
    }
}

#[test]
fn an_extra_call_shows_when_the_drivers_finish_at_both_parties() {
    let mut sim = Sim::new(&["alice", "bob"]);
    sim.submit(|| task("alice", vec![], r(1, "alice"), "x"));
    sim.submit(|| task("bob", vec![], r(2, "bob"), "y"));
    // bob's driver alone makes a third call (local: nothing crosses).
    sim.at("bob", |q, _| {
        q.table.submit(task("bob", vec![], r(3, "bob"), "z"))
    });
    sim.shutdown();
    sim.run();
    for (here, other) in [("alice", "bob"), ("bob", "alice")] {
        let d = sim.party(here).diverged.first().map(ToString::to_string);
        let d = d.unwrap_or_else(|| panic!("{here} saw no divergence: {:#?}", sim.trace()));
        assert!(
            d.contains(&format!("between party '{here}' and party '{other}'")),
            "{d}"
        );
        assert!(ended_once(&sim, here).is_err());
    }
}

#[test]
fn a_failure_cascades_from_alice_through_bob_to_carol_and_nothing_waits() {
    // A -> B -> C (alice -> bob -> carol); every party gets C.
    let mut sim = Sim::new(&["alice", "bob", "carol"]);
    sim.fail_body("a", "Boom");
    sim.submit(|| task("alice", vec![], r(1, "alice"), "a"));
    sim.submit(|| task("bob", vec![r(1, "alice")], r(2, "bob"), "b"));
    sim.submit(|| task("carol", vec![r(2, "bob")], r(3, "carol"), "c"));
    sim.get(9, &[r(3, "carol")]);
    sim.run();
    for party in ["alice", "bob", "carol"] {
        let e = get_error(&sim, party, 9);
        assert!(
            e.contains("RemoteError: task 'a' (object #1) failed in party 'alice' (Boom)"),
            "{party}: {e}"
        );
        assert!(!e.contains("secret"), "{party}: {e}");
        // Nothing is left waiting, and no dependent body ran.
        assert_eq!(sim.party(party).table.held().calls, 0, "{party}");
        assert!(sim.party(party).diverged.is_empty(), "{party}");
    }
    assert_eq!(sim.party("alice").ran, vec!["a"]);
    assert!(sim.party("bob").ran.is_empty());
    assert!(sim.party("carol").ran.is_empty());
    // alice announces #1 to everyone, once; bob derives #2's failure and
    // sends it where it is consumed (carol); carol derives her own #3 and
    // sends it to every party because every party's `get` asks for it (M4).
    let mut errors = traced(&sim, ": error of");
    errors.sort();
    assert_eq!(
        errors,
        vec![
            "alice -> bob: error of #1",
            "alice -> carol: error of #1",
            "bob -> carol: error of #2",
            "carol -> alice: error of #3",
            "carol -> bob: error of #3",
        ],
        "{:#?}",
        sim.trace()
    );
    // A task's failure is the job's data, not an abort.
    assert!(traced(&sim, "abort").is_empty(), "{:#?}", sim.trace());
    // After an error, shutdown waits for no peer's driver: each ends once.
    sim.shutdown();
    sim.run();
    for party in ["alice", "bob", "carol"] {
        assert_eq!(ended_once(&sim, party), Ok(()), "{party}");
    }
}

#[test]
fn an_intended_shutdown_waits_for_every_acknowledgement_tells_the_peers_and_ends_once() {
    let mut sim = Sim::new(&["alice", "bob", "carol"]);
    sim.submit(|| task("alice", vec![], r(1, "alice"), "a"));
    sim.submit(|| task("bob", vec![r(1, "alice")], r(2, "bob"), "b"));
    sim.submit(|| task("carol", vec![r(2, "bob")], r(3, "carol"), "c"));
    // The drivers end at once, before any body ran; a second call joins
    // the first.
    sim.shutdown();
    sim.shutdown();
    sim.run();
    // The values still being made were made and pushed before the end.
    assert_eq!(sim.party("alice").ran, vec!["a"]);
    assert_eq!(sim.party("bob").ran, vec!["b"]);
    assert_eq!(sim.party("carol").ran, vec!["c"]);
    let parties = ["alice", "bob", "carol"];
    for me in parties {
        assert_eq!(ended_once(&sim, me), Ok(()), "{me}: {:#?}", sim.trace());
        assert_eq!(sim.party(me).life.shutdowns_run(), 1);
        assert!(sim.party(me).diverged.is_empty());
        let closes = at(&sim, &format!("{me} closes"));
        // Every push it made was acknowledged before it closed.
        for ack in traced(&sim, &format!("from {me}")) {
            assert!(at(&sim, &ack) < closes, "{ack} after {me} closed");
        }
        // It told every peer where its driver finished, and closed only
        // after every peer had told it.
        for peer in parties.iter().filter(|q| **q != me) {
            assert!(at(&sim, &format!("{me} -> {peer}: finished")) < closes);
            assert!(at(&sim, &format!("{peer} -> {me}: finished")) < closes);
        }
    }
    // Exactly the two pushes crossed; no error, no abort.
    assert_eq!(
        traced(&sim, ": object"),
        vec!["alice -> bob: object #1", "bob -> carol: object #2"]
    );
    assert!(traced(&sim, "abort").is_empty() && traced(&sim, "error").is_empty());
    // Nobody waited out a bound.
    assert!(
        sim.elapsed() < life_options().finish_wait,
        "{:?}",
        sim.elapsed()
    );
}

#[test]
fn a_lost_peer_fails_what_depends_on_it_within_its_bound() {
    let lost_after = Duration::from_secs(5);
    let mut sim = Sim::new(&["alice", "bob"]);
    sim.submit(|| task("alice", vec![], r(1, "alice"), "a"));
    sim.lose("alice", lost_after);
    sim.get(1, &[r(1, "alice")]);
    sim.run();
    let e = get_error(&sim, "bob", 1);
    assert!(
        e.contains("party 'alice' is gone (nothing heard from it within peer_lost_timeout)"),
        "{e}"
    );
    assert_eq!(sim.elapsed(), lost_after);
    // A lost peer is an error of the job: bob's shutdown waits for nothing
    // from it, and ends once.
    sim.shutdown();
    sim.run();
    assert_eq!(ended_once(&sim, "bob"), Ok(()));
    assert_eq!(sim.elapsed(), lost_after);
}
