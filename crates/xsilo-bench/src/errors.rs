//! `errors`: how fast failures reach every party.
//!
//! (a) Propagation: alice, bob and carol as three processes over QUIC. Per
//! trial a task in alice fails once bob and carol have reached the trial
//! (it consumes a value of each); bob's task consumes its result, carol
//! waits on alice's object directly. Each party stamps the wall clock (one machine,
//! one clock): alice when her task returns the error, bob and carol when the
//! RemoteError surfaces in their `get`. RayFed, measured on this machine,
//! takes a median of 33 ms and up to 198 ms.
//!
//! (b) Peer loss: alice waits forever inside her driver; bob waits on her
//! value; the benchmark SIGKILLs alice and bob stamps when his `get` fails.
//! Compared with the configured `peer_lost_timeout` (the baseline).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use xsilo::Config;

use crate::child::{exit_with_parent, Party};
use crate::stats::{emit, median, percentile};

/// Microseconds since the epoch (one machine, one clock for every party).
pub(crate) fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// A task failure, carrying nothing secret.
#[derive(Debug)]
pub(crate) struct Injected;
impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected failure")
    }
}
impl std::error::Error for Injected {}

/// One party of either scenario.
pub(crate) fn party(config: &Path, party: &str, scenario: &str, trials: usize) -> Result<()> {
    exit_with_parent(Duration::from_secs(900));
    let config = Config::from_file(config)?;
    let me = party.to_owned();
    let scenario = scenario.to_owned();
    xsilo::block_on(async move {
        let fed = xsilo::init(config, &me).await?;
        match scenario.as_str() {
            "propagation" => {
                for trial in 0..trials {
                    // The failing task runs only once bob and carol have
                    // reached this trial (their values are its inputs), so
                    // every party is waiting when it fails: the figures
                    // measure propagation, not how far a party lags.
                    let rb = fed.party("bob").task((), |()| 0i64);
                    let rc = fed.party("carol").task((), |()| 0i64);
                    let f = fed.party("alice").try_task((rb, rc), move |_: (i64, i64)| {
                        println!("T {trial} alice {}", now_us());
                        Err::<i64, _>(Injected)
                    });
                    let b = fed.party("bob").task(f.clone(), |x: i64| x);
                    let got = if me == "carol" {
                        fed.get(&f).await
                    } else {
                        fed.get(&b).await
                    };
                    let at = now_us();
                    if got.is_ok() {
                        bail!("trial {trial}: the failure did not surface in {me}");
                    }
                    if me != "alice" {
                        println!("T {trial} {me} {at}");
                    }
                }
            }
            "loss" => {
                if me == "alice" {
                    println!("READY");
                    // Killed by the benchmark while waiting here.
                    tokio::time::sleep(Duration::from_secs(120)).await;
                }
                let a = fed.party("alice").task((), |()| 1i64);
                let b = fed.party("bob").task(a, |x: i64| x);
                if fed.get(&b).await.is_err() {
                    println!("LOST {}", now_us());
                }
            }
            other => bail!("unknown scenario {other}"),
        }
        let _ = fed.shutdown().await;
        println!("DONE");
        Ok(())
    })
}

/// Certificates and configurations in `dir`; returns the config paths.
fn write_job(
    dir: &Path,
    parties: &[&str],
    tweak: impl Fn(&mut Config),
) -> Result<BTreeMap<String, String>> {
    let paths = xsilo::dev::write_local_job(dir, "errors-bench", parties, |_, c| {
        c.comm.barrier_on_initializing = true;
        tweak(c);
    })?;
    paths
        .into_iter()
        .map(|(p, path)| Ok((p, path.to_str().context("path is not UTF-8")?.to_owned())))
        .collect()
}

fn spawn(config: &str, party: &str, scenario: &str, trials: usize) -> Result<Party> {
    Party::spawn(
        &[
            "errors-party",
            "--config",
            config,
            "--party",
            party,
            "--scenario",
            scenario,
            "--trials",
            &trials.to_string(),
        ],
        &[],
    )
}

pub(crate) fn run(quick: bool) -> Result<()> {
    let (trials, losses) = if quick { (50, 3) } else { (200, 5) };
    let bound = Duration::from_secs(3);
    eprintln!(
        "errors: alice, bob, carol as processes over QUIC (mTLS); {trials} propagation trials; \
         {losses} SIGKILL trials with peer_lost_timeout = {bound:?}"
    );

    // (a) Propagation.
    let dir = tempfile::tempdir()?;
    let paths = write_job(dir.path(), &["alice", "bob", "carol"], |_| {})?;
    let parties: Vec<(String, Party)> = ["alice", "bob", "carol"]
        .iter()
        .map(|p| {
            Ok((
                (*p).to_owned(),
                spawn(&paths[*p], p, "propagation", trials)?,
            ))
        })
        .collect::<Result<_>>()?;
    let mut stamps: BTreeMap<(usize, String), u128> = BTreeMap::new();
    for (name, party) in &parties {
        loop {
            let line = party.expect_line("", Duration::from_secs(120))?;
            if line == "DONE" {
                break;
            }
            let mut f = line.split_whitespace();
            if f.next() != Some("T") {
                continue;
            }
            let (Some(t), Some(p), Some(us)) = (f.next(), f.next(), f.next()) else {
                bail!("{name} printed {line:?}");
            };
            stamps.insert((t.parse()?, p.to_owned()), us.parse()?);
        }
    }
    drop(parties);
    let to = |who: &str| -> Result<Vec<f64>> {
        (0..trials)
            .map(|t| {
                let start = stamps
                    .get(&(t, "alice".to_owned()))
                    .ok_or_else(|| anyhow!("no alice stamp {t}"))?;
                let end = stamps
                    .get(&(t, who.to_owned()))
                    .ok_or_else(|| anyhow!("no {who} stamp {t}"))?;
                Ok(end.saturating_sub(*start) as f64)
            })
            .collect()
    };
    let mut bob = to("bob")?;
    let mut carol = to("carol")?;
    let note = json!({ "trials": trials, "target_p99": "< 5000 us (5 ms)", "rayfed_here": "median 33 ms, max 198 ms" });
    emit(
        "errors.propagation_consumer_p50",
        median(&mut bob),
        "us",
        None,
        note.clone(),
    );
    emit(
        "errors.propagation_consumer_p99",
        percentile(&mut bob, 99.0),
        "us",
        None,
        note.clone(),
    );
    emit(
        "errors.propagation_third_party_p50",
        median(&mut carol),
        "us",
        None,
        note.clone(),
    );
    emit(
        "errors.propagation_third_party_p99",
        percentile(&mut carol, 99.0),
        "us",
        None,
        note,
    );

    // (b) Peer loss.
    let mut lost = Vec::new();
    for _ in 0..losses {
        let dir = tempfile::tempdir()?;
        let paths = write_job(dir.path(), &["alice", "bob"], |c| {
            c.comm.peer_lost_timeout = bound;
            c.comm.keep_alive_interval = Duration::from_millis(500);
        })?;
        let alice = Command::new(std::env::current_exe()?)
            .args([
                "errors-party",
                "--config",
                &paths["alice"],
                "--party",
                "alice",
                "--scenario",
                "loss",
                "--trials",
                "1",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let bob = spawn(&paths["bob"], "bob", "loss", 1)?;
        let mut alice = alice;
        let mut out =
            std::io::BufReader::new(alice.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
        let mut line = String::new();
        // alice prints READY within the barrier's bound, or exits.
        while !line.starts_with("READY") {
            line.clear();
            if std::io::BufRead::read_line(&mut out, &mut line)? == 0 {
                bail!("alice exited before READY");
            }
        }
        alice.kill()?;
        let killed = now_us();
        let _ = alice.wait();
        let at: u128 = bob.expect_line("LOST", bound * 4)?.parse()?;
        lost.push(at.saturating_sub(killed) as f64 / 1000.0);
    }
    let b = bound.as_secs_f64() * 1000.0;
    let note = json!({ "trials": losses, "target": "<= bound + 10%" });
    emit(
        "errors.peer_loss_median",
        median(&mut lost),
        "ms",
        Some(b),
        note.clone(),
    );
    emit(
        "errors.peer_loss_max",
        percentile(&mut lost, 100.0),
        "ms",
        Some(b),
        note,
    );
    Ok(())
}
