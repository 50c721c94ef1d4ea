//! The lifecycle, stepped with a fake clock: every interleaving here runs
//! in microseconds, with no actor, socket or sleep.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn p(s: &str) -> PartyName {
    s.parse().unwrap()
}

fn options() -> LifeOptions {
    LifeOptions {
        drain_timeout: Duration::from_secs(65),
        finish_wait: Duration::from_secs(10),
        continue_waiting_for_data_sending_on_error: false,
        exit_on_sending_failure: false,
        exit_process: true,
    }
}

fn life(options: LifeOptions) -> Lifecycle {
    Lifecycle::new(p("alice"), [p("bob"), p("carol")], options)
}

fn actions(l: &mut Lifecycle) -> Vec<String> {
    std::iter::from_fn(|| l.poll_action())
        .map(|a| match a {
            LifeAction::FailAll(e) => format!("FailAll({e})"),
            LifeAction::SendAbort(r) => format!("SendAbort({r})"),
            LifeAction::Answer(Ok(())) => "Answer(Ok)".into(),
            LifeAction::Answer(Err(e)) => format!("Answer(Err({e}))"),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn an_intended_shutdown_flushes_drains_waits_for_the_peers_and_closes_once() {
    let t0 = Instant::now();
    let mut l = life(options());
    assert!(l.shutdown(t0).is_none());
    assert!(l.shutdown(t0).is_none(), "a second call joins the first");
    assert_eq!(actions(&mut l), vec!["Flush"]);
    l.flushed(t0);
    assert_eq!(actions(&mut l), vec!["Finish"]);
    l.told(t0);
    assert_eq!(
        actions(&mut l),
        vec!["Drain"],
        "the Finished frames drain too"
    );
    l.drained(t0);
    assert!(actions(&mut l).is_empty(), "waiting for the peers");
    l.peer_done(&p("bob"));
    assert!(actions(&mut l).is_empty(), "carol has not finished yet");
    l.peer_done(&p("carol"));
    let a = actions(&mut l);
    assert_eq!(a[1], "Close");
    assert!(a[0].starts_with("FailAll(the runtime of party 'alice' has shut down"));
    l.closed();
    assert_eq!(actions(&mut l), vec!["Answer(Ok)"]);
    assert!(
        matches!(l.shutdown(t0), Some(Ok(()))),
        "later calls get the result"
    );
    assert_eq!(l.shutdowns_run(), 1);
}

#[test]
fn a_peer_that_does_not_finish_is_waited_for_only_within_the_bound() {
    let t0 = Instant::now();
    let mut l = life(options());
    l.shutdown(t0);
    l.flushed(t0);
    l.told(t0);
    l.drained(t0);
    actions(&mut l);
    assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    l.handle_timeout(t0 + Duration::from_secs(9));
    assert!(actions(&mut l).is_empty());
    l.handle_timeout(t0 + Duration::from_secs(10));
    assert!(actions(&mut l).contains(&"Close".to_owned()));
}

#[test]
fn a_drain_that_passes_its_bound_closes_with_a_timeout() {
    let t0 = Instant::now();
    let mut l = life(options());
    l.shutdown(t0);
    l.flushed(t0);
    l.told(t0);
    // An error seen during the drain does not change the bound it got.
    l.error_seen();
    actions(&mut l);
    l.handle_timeout(t0 + Duration::from_secs(65));
    assert!(actions(&mut l).contains(&"Close".to_owned()));
    l.closed();
    let a = actions(&mut l);
    assert_eq!(
        a,
        vec!["Answer(Err(draining the sends in flight did not finish within 65s))"]
    );
}

#[test]
fn after_an_error_shutdown_waits_only_the_grace_and_not_for_the_peers() {
    let t0 = Instant::now();
    let mut l = life(options());
    l.error_seen();
    l.shutdown(t0);
    assert_eq!(l.poll_timeout(), Some(t0 + ABORT_GRACE), "E7");
    l.flushed(t0);
    l.told(t0);
    l.drained(t0);
    let a = actions(&mut l);
    assert!(
        a.contains(&"Finish".to_owned()) && a.contains(&"Close".to_owned()),
        "{a:?}"
    );
}

#[test]
fn a_failure_during_the_drain_aborts_and_every_caller_gets_the_abort() {
    let t0 = Instant::now();
    let mut l = life(options());
    l.shutdown(t0);
    l.flushed(t0);
    l.told(t0);
    actions(&mut l);
    l.send_failed("sending object #3 to party 'bob' failed: refused", t0);
    let a = actions(&mut l);
    assert_eq!(
        a[0],
        "SendAbort(sending object #3 to party 'bob' failed: refused)"
    );
    assert!(a[1].starts_with("FailAll(the job was aborted by party 'alice'"));
    assert_eq!(a[2], "Drain");
    // The earlier drain finishing now does not close an intended shutdown.
    l.drained(t0 + Duration::from_millis(1));
    assert!(actions(&mut l).is_empty(), "it lingers first");
    l.handle_timeout(t0 + ABORT_LINGER);
    assert_eq!(actions(&mut l), vec!["Close"]);
    l.closed();
    let a = actions(&mut l);
    assert_eq!(
        a.len(),
        1,
        "no handler, no exit without exit_on_sending_failure"
    );
    assert!(a[0].starts_with("Answer(Err(the job was aborted by party 'alice'"));
    assert!(matches!(
        l.shutdown(t0),
        Some(Err(RuntimeError::Aborted { .. }))
    ));
}

#[test]
fn an_abort_during_the_barrier_fails_the_start_and_the_later_shutdown() {
    // The barrier runs while the party is Running; a peer's abort then.
    let t0 = Instant::now();
    let mut l = life(options());
    l.abort(Some(&p("bob")), "party 'bob' could not start", t0);
    let a = actions(&mut l);
    assert!(
        !a.iter().any(|x| x.starts_with("SendAbort")),
        "told by bob: not echoed"
    );
    assert!(a[0].starts_with("FailAll(the job was aborted by party 'bob'"));
    // init then calls shutdown to wait for the abort to finish.
    assert!(l.shutdown(t0).is_none());
    l.drained(t0);
    l.handle_timeout(t0 + ABORT_LINGER);
    l.closed();
    let a = actions(&mut l);
    assert!(a.contains(&"Close".to_owned()));
    assert!(a
        .last()
        .unwrap()
        .starts_with("Answer(Err(the job was aborted by party 'bob'"));
    assert_eq!(l.shutdowns_run(), 0, "the shutdown sequence never ran");
}

#[test]
fn a_signal_during_shutdown_is_an_unintended_shutdown_handler_once_then_exit() {
    let t0 = Instant::now();
    let mut l = life(options());
    l.shutdown(t0);
    l.flushed(t0);
    actions(&mut l);
    l.signal("SIGTERM", t0);
    let a = actions(&mut l);
    assert_eq!(a[0], "SendAbort(party 'alice' received SIGTERM)");
    // A send failure meanwhile changes nothing: one unintended shutdown.
    l.send_failed("late", t0);
    assert!(actions(&mut l).is_empty());
    l.handle_timeout(t0 + ABORT_GRACE);
    l.closed();
    let a = actions(&mut l);
    // Before the answer: a driver it wakes must not exit the process first.
    assert_eq!(&a[a.len() - 3..a.len() - 1], ["RunHandler", "Exit(143)"]);
    assert!(a[a.len() - 1].starts_with("Answer(Err("), "{a:?}");
    // A second signal after it: out at once, no second handler.
    l.signal("SIGINT", t0);
    assert_eq!(actions(&mut l), vec!["Exit(130)"]);
}

#[test]
fn a_second_signal_before_the_first_finished_exits_at_once() {
    let t0 = Instant::now();
    let mut l = life(options());
    l.signal("SIGINT", t0);
    actions(&mut l);
    l.signal("SIGINT", t0);
    assert_eq!(actions(&mut l), vec!["Exit(130)"]);
}

#[test]
fn exit_on_sending_failure_runs_the_handler_exactly_once_across_many_failures() {
    let t0 = Instant::now();
    let mut l = life(LifeOptions {
        exit_on_sending_failure: true,
        ..options()
    });
    for i in 0..100 {
        l.send_failed(&format!("send {i} failed"), t0);
    }
    l.drained(t0);
    l.handle_timeout(t0 + ABORT_LINGER);
    l.closed();
    for i in 0..10 {
        l.send_failed(&format!("late {i}"), t0);
    }
    let a = actions(&mut l);
    assert_eq!(a.iter().filter(|x| *x == "RunHandler").count(), 1, "{a:?}");
    assert_eq!(a.iter().filter(|x| *x == "Exit(1)").count(), 1, "{a:?}");
    assert_eq!(a.iter().filter(|x| x.starts_with("SendAbort")).count(), 1);
}

#[test]
fn with_continue_waiting_an_abort_waits_for_the_full_drain() {
    let t0 = Instant::now();
    let mut l = life(LifeOptions {
        continue_waiting_for_data_sending_on_error: true,
        ..options()
    });
    l.abort(None, "boom", t0);
    actions(&mut l);
    l.handle_timeout(t0 + ABORT_GRACE);
    assert!(
        actions(&mut l).is_empty(),
        "still waiting for queued data (E7)"
    );
    l.drained(t0 + Duration::from_secs(30));
    assert_eq!(actions(&mut l), vec!["Close"]);
}

#[test]
fn a_signal_while_the_transport_closes_still_runs_the_handler_and_exits() {
    let t0 = Instant::now();
    let mut l = life(options());
    l.shutdown(t0);
    l.flushed(t0);
    l.told(t0);
    l.drained(t0);
    l.peer_done(&p("bob"));
    l.peer_done(&p("carol"));
    actions(&mut l);
    l.signal("SIGINT", t0);
    assert!(
        actions(&mut l).is_empty(),
        "the goodbye is already on its way"
    );
    l.closed();
    assert_eq!(
        actions(&mut l),
        vec!["RunHandler", "Exit(130)", "Answer(Ok)"]
    );
}
