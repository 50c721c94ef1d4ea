//! The FedAvg example (promise F1) run as a user runs it: without arguments,
//! so that alice, bob and carol are three processes over QUIC with mutual
//! TLS, with fewer rounds than its default.
//!
//! The example binary is built by `cargo test` (which builds every example)
//! or `cargo build -p xsilo --example fedavg`; this test runs it from the
//! target directory it was built into.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use xsilo_testkit::Spawn;

/// Bound of one run of the example (an unoptimised build trains slowly).
const BOUND: Duration = Duration::from_secs(240);

fn example() -> PathBuf {
    // target/<profile>/deps/fedavg-<hash> -> target/<profile>/examples/fedavg
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = dir
        .join("examples")
        .join(format!("fedavg{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run `cargo test -p xsilo` (it builds the examples) or \
         `cargo build -p xsilo --example fedavg` first",
        path.display()
    );
    path
}

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

/// Runs the example with `args`; returns its exit status, its output lines
/// (the parties print to the same stdout) and when it exited (µs since
/// the epoch).
fn run(args: &[&str]) -> (ExitStatus, Vec<String>, u128) {
    // Read until the pipe closes, then reaped: the pipe closes when the
    // example and its parties have exited.
    let finished = Spawn::program("the fedavg example", example())
        .args(args)
        .spawn()
        .finish(BOUND);
    (finished.status, finished.lines, now_us())
}

fn stamp(lines: &[String], prefix: &str) -> Vec<u128> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|v| v.trim().parse().unwrap())
        .collect()
}

#[test]
fn federated_accuracy_is_within_two_points_of_central_and_the_plot_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("fedavg.svg");
    let (status, lines, _) = run(&[
        "--rounds",
        "100",
        "--epochs",
        "2",
        "--quiet",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(status.success(), "{status}: {lines:#?}");
    let acc = lines
        .iter()
        .find_map(|l| l.strip_prefix("ACCURACY "))
        .unwrap_or_else(|| panic!("no accuracy line: {lines:#?}"));
    let acc: Vec<f64> = acc.split_whitespace().map(|v| v.parse().unwrap()).collect();
    let (federated, central) = (acc[0], acc[1]);
    assert!(
        (federated - central).abs() <= 0.02,
        "federated {federated}, central {central}"
    );
    assert!(federated > 0.9, "the model did not learn: {federated}");
    for p in ["bob", "carol"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("party {p}: federated accuracy"))),
            "{p} did not finish: {lines:#?}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("plot: {}", plot.display())),
        "the plot's path is not printed: {lines:#?}"
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg"), "not an SVG file");
    assert!(
        svg.matches("<polyline").count() >= 3,
        "accuracy, central and loss lines expected"
    );
}

#[test]
fn a_failure_injected_in_bob_reaches_every_party_and_every_party_exits() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("fedavg.svg");
    let (status, lines, exited) = run(&[
        "--rounds",
        "20",
        "--epochs",
        "2",
        "--fail-at-round",
        "5",
        "--fail-party",
        "bob",
        "--quiet",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(!status.success(), "the job should fail: {lines:#?}");
    for p in ["alice", "bob", "carol"] {
        let line = format!("party {p} got a RemoteError naming party 'bob': ");
        assert!(
            lines.iter().any(|l| l.starts_with(&line)),
            "{p} did not report the RemoteError naming bob: {lines:#?}"
        );
    }
    assert!(lines
        .iter()
        .any(|l| l.contains("task 'train'") && l.contains("InjectedFailure")));
    let failed = stamp(&lines, "FAIL-AT");
    assert_eq!(failed.len(), 1, "{lines:#?}");
    let errors = stamp(&lines, "ERROR-AT");
    assert_eq!(errors.len(), 3, "{lines:#?}");
    // Promise E3 and issue 9: promptly, not after a timeout. The bound is
    // the promise (a second), not a performance figure.
    for at in errors {
        assert!(
            at.saturating_sub(failed[0]) < 1_000_000,
            "an error arrived {} ms after the failure",
            at.saturating_sub(failed[0]) / 1000
        );
    }
    assert!(
        exited.saturating_sub(failed[0]) < 1_000_000,
        "the parties exited {} ms after the failure",
        exited.saturating_sub(failed[0]) / 1000
    );
    assert!(!plot.exists(), "no plot for a failed job");
}
