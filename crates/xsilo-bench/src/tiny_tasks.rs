//! `tiny-tasks`: RayFed's many-tiny-tasks benchmark on xsilo.
//!
//! Two processes, alice (this one) and bob (a child), each a party running
//! the same driver on an actix System over QUIC with mutual TLS. Per round:
//! one call on an actor in alice, one on an actor in bob, an aggregating
//! call on an actor in alice consuming both (bob pushes its value), and
//! `get` of the result (alice pushes it to bob). The baseline is the raw
//! quinn request/response round trip (stream per request, 64 bytes)
//! between the same two processes with the same TLS and QUIC settings,
//! measured in the same run, in blocks interleaved with the rounds.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde_json::json;
use xsilo::{Config, Fed, PartyName};
use xsilo_transport::{setup, TransportConfig};

use crate::child::{exit_with_parent, Party};
use crate::stats::{emit, median};

struct Acc(i64);

/// Unmeasured rounds first: connections, windows, allocator.
const WARM_UP: usize = 200;

/// The measured rounds run in this many blocks; alice measures a block of
/// the raw baseline before each, so that both see the machine in the same
/// state (its wake-up latency drifts during a run).
const BLOCKS: usize = 10;

/// Raw quinn round trips measured between blocks (alice only).
struct Baseline<'a> {
    conn: &'a quinn::Connection,
    per_block: usize,
    samples: Vec<f64>,
}

impl Baseline<'_> {
    async fn block(&mut self) -> Result<(), xsilo::Error> {
        let ping = Bytes::from(vec![7u8; 64]);
        for _ in 0..self.per_block {
            let t = Instant::now();
            if let Err(e) = crate::transport::raw_request(self.conn, ping.clone()).await {
                eprintln!("baseline request failed: {e:#}");
                continue;
            }
            self.samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        Ok(())
    }
}

/// The driver both parties run; returns the per-round microseconds. Alice
/// passes the baseline to measure between blocks (bob then just waits for
/// the next round's value, as it would for a slow task).
async fn driver(
    fed: &Fed,
    rounds: usize,
    mut baseline: Option<&mut Baseline<'_>>,
) -> Result<Vec<f64>, xsilo::Error> {
    let a = fed.party("alice").actor(|| Acc(0));
    let b = fed.party("bob").actor(|| Acc(0));
    let agg = fed.party("alice").actor(|| Acc(0));
    let mut samples = Vec::with_capacity(rounds + WARM_UP);
    let block = (rounds / BLOCKS).max(1);
    for round in 0..rounds + WARM_UP {
        if round >= WARM_UP && (round - WARM_UP) % block == 0 {
            if let Some(b) = baseline.as_deref_mut() {
                b.block().await?;
            }
        }
        let t = Instant::now();
        let va = a.call(|s| {
            s.0 += 1;
            s.0
        });
        let vb = b.call(|s| {
            s.0 += 2;
            s.0
        });
        let sum = agg.call_with((va, vb), |s, (x, y): (i64, i64)| {
            s.0 += x + y;
            s.0
        });
        fed.get(&sum).await?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(samples.split_off(WARM_UP))
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Party bob, started by [`run`].
pub(crate) fn bob(config: &Path, rounds: usize) -> Result<()> {
    exit_with_parent(Duration::from_secs(900));
    let config = Config::from_file(config)?;
    let tls = config.tls_identity()?;
    let bob: PartyName = "bob".parse()?;
    xsilo::block_on(async move {
        // The baseline's echo server, in this same process and thread.
        let raw = setup::quinn_endpoint(
            &bob,
            "127.0.0.2:0".parse()?,
            &tls,
            &TransportConfig::default(),
        )?;
        println!("RAW-PORT {}", raw.local_addr()?.port());
        tokio::spawn(crate::transport::raw_server(raw));
        let fed = xsilo::init(config, "bob").await?;
        driver(&fed, rounds, None).await?;
        fed.shutdown().await?;
        println!("PEAK-RSS-KIB {}", peak_rss_kib().unwrap_or(0));
        // Keep serving the baseline until alice is done with it; the process
        // exits when alice closes our stdin (exit_with_parent).
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// Alice: starts bob, measures, prints.
pub(crate) fn run(quick: bool) -> Result<()> {
    let rounds = if quick { 1_000 } else { 10_000 };
    let raw_n = if quick { 1_000 } else { 4_000 };
    let dir = tempfile::tempdir()?;
    xsilo::dev::write_local_job(dir.path(), "tiny-tasks", &["alice", "bob"], |_, c| {
        c.comm.barrier_on_initializing = true;
    })?;
    let bob_config = dir.path().join("bob.toml");
    let child = Party::spawn(
        &[
            "tiny-tasks-party",
            "--config",
            bob_config.to_str().context("temporary path is not UTF-8")?,
            "--rounds",
            &rounds.to_string(),
        ],
        &[],
    )?;
    let raw_port: u16 = child
        .expect_line("RAW-PORT", Duration::from_secs(30))?
        .parse()?;
    eprintln!(
        "tiny-tasks: {rounds} rounds, alice and bob as two processes over QUIC (mTLS), one actix \
         System (1 thread) each; baseline: raw quinn round trip x {raw_n}"
    );
    let config = Config::from_file(dir.path().join("alice.toml"))?;
    let tls = config.tls_identity()?;
    let alice: PartyName = "alice".parse()?;
    let (samples, mut raw) = xsilo::block_on(async move {
        let raw_ep = setup::quinn_endpoint(
            &alice,
            "127.0.0.2:0".parse()?,
            &tls,
            &TransportConfig::default(),
        )?;
        let raw = raw_ep
            .connect(
                std::net::SocketAddr::from(([127, 0, 0, 2], raw_port)),
                "bob",
            )?
            .await?;
        let ping = Bytes::from(vec![7u8; 64]);
        for _ in 0..200 {
            crate::transport::raw_request(&raw, ping.clone()).await?;
        }
        let mut baseline = Baseline {
            conn: &raw,
            per_block: raw_n / BLOCKS,
            samples: Vec::with_capacity(raw_n),
        };
        let fed = xsilo::init(config, "alice").await?;
        let samples = driver(&fed, rounds, Some(&mut baseline)).await?;
        fed.shutdown().await?;
        let raw_lat = baseline.samples;
        raw.close(0u32.into(), b"done");
        Ok::<_, anyhow::Error>((samples, raw_lat))
    })?;
    let bob_rss = child.expect_line("PEAK-RSS-KIB", Duration::from_secs(60))?;
    let bob_rss: f64 = bob_rss.parse::<f64>()? / 1024.0;
    let alice_rss = peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    if samples.len() != rounds {
        bail!("ran {} rounds of {rounds}", samples.len());
    }
    let baseline = median(&mut raw);
    let mut samples = samples;
    // The measured rounds' total divided by the rounds.
    let per_round_mean = samples.iter().sum::<f64>() / rounds as f64;
    let per_round_median = median(&mut samples);
    let note = json!({ "rounds": rounds, "warm_up_rounds": WARM_UP, "target_ratio": "<= 3", "target_value": "< 300 us (RayFed here: 11-15 ms)",
                       "baseline_is": "raw quinn request/response round trip, same processes, same TLS" });
    emit(
        "tiny_tasks.round_median",
        per_round_median,
        "us",
        Some(baseline),
        note.clone(),
    );
    emit(
        "tiny_tasks.round_mean",
        per_round_mean,
        "us",
        Some(baseline),
        note,
    );
    emit(
        "tiny_tasks.peak_rss_alice",
        alice_rss,
        "MiB",
        None,
        json!({ "target": "< 30 MiB", "includes": "alice's raw quinn baseline endpoint" }),
    );
    emit(
        "tiny_tasks.peak_rss_bob",
        bob_rss,
        "MiB",
        None,
        json!({ "target": "< 30 MiB" }),
    );
    Ok(())
}
