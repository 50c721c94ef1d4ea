//! Federated learning for real: FedAvg across alice, bob and carol on the
//! UCI handwritten digits (1,797 8x8 images, shipped inside the `smartcore`
//! crate; nothing is downloaded).
//!
//! ```text
//! cargo run --release --example fedavg                                    # three processes on this machine
//! cargo run --release --example fedavg -- --party bob --config bob.toml   # one party (a real deployment)
//! cargo run --release --example fedavg -- --fail-at-round 20 --fail-party bob
//! ```
//!
//! Each party holds a disjoint shard of the training images (45%, 35% and
//! 20% of them) and never sends it anywhere; alice also holds the held-out
//! test split (20% of the images). Per round every party trains the global
//! model (multinomial logistic regression, 64 pixels -> 10 digits, plain
//! Rust) on its shard for 15 epochs of mini-batch SGD and returns its
//! weights (a `Vec<f32>`: it crosses as a raw numeric array); alice averages
//! them weighted by shard size (FedAvg) and evaluates the new model on the
//! test split; every party gets accuracy and loss and shows them on a
//! progress bar (stderr). At the end alice trains the same model centrally
//! on the pooled shards, prints both accuracies, and writes a plot of
//! accuracy and loss per round (SVG) whose path she prints.
//!
//! `--fail-at-round K --fail-party P` makes P's training fail at round K:
//! every party prints the RemoteError naming P and exits with status 1.
//!
//! (Every process loads the whole public dataset from the crate and keeps
//! only its own part: in a real deployment each party would load its own
//! data instead.)

mod common;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use plotters::prelude::*;
use xsilo::{Config, FedObject};

const PARTIES: [&str; 3] = ["alice", "bob", "carol"];
/// Each party's share of the training images.
const SHARES: [f64; 3] = [0.45, 0.35, 0.20];
const FEATURES: usize = 64;
const CLASSES: usize = 10;
/// The model: a weight per (class, pixel), then a bias per class.
const PARAMS: usize = CLASSES * FEATURES + CLASSES;

#[derive(Debug, Parser)]
#[command(about = "xsilo: FedAvg across three parties on the UCI digits")]
struct Args {
    /// Run only this party (needs --config).
    #[arg(long, requires = "config")]
    party: Option<String>,
    /// The party's configuration file (TOML).
    #[arg(long, requires = "party")]
    config: Option<PathBuf>,
    /// Rounds of FedAvg (the defaults take about 10 s in release here).
    #[arg(long, default_value_t = 500)]
    rounds: usize,
    /// Local epochs per round in each party.
    #[arg(long, default_value_t = 15)]
    epochs: usize,
    /// Make this party's training fail at --fail-at-round.
    #[arg(long, requires = "fail_at_round")]
    fail_party: Option<String>,
    /// The round (from 1) at which --fail-party's training fails.
    #[arg(long, requires = "fail_party")]
    fail_at_round: Option<usize>,
    /// Where alice writes the plot.
    #[arg(long, default_value = "fedavg.svg")]
    plot: PathBuf,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Images and labels, pixels scaled to [0, 1].
#[derive(Default)]
struct Data {
    x: Vec<f32>,
    y: Vec<usize>,
}

impl Data {
    fn len(&self) -> usize {
        self.y.len()
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.x[i * FEATURES..(i + 1) * FEATURES]
    }

    fn push(&mut self, other: &Data, i: usize) {
        self.x.extend_from_slice(other.row(i));
        self.y.push(other.y[i]);
    }
}

/// A small deterministic generator (xorshift64*): the same split and the
/// same batches in every process and every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// The test split and the three training shards.
fn split() -> Result<(Data, Vec<Data>)> {
    let d = smartcore::dataset::digits::load_dataset();
    if d.num_features != FEATURES || d.data.len() != d.num_samples * FEATURES {
        bail!("unexpected digits dataset shape");
    }
    let all = Data {
        x: d.data.iter().map(|p| p / 16.0).collect(),
        y: d.target.iter().map(|t| *t as usize).collect(),
    };
    let mut order: Vec<usize> = (0..all.len()).collect();
    Rng(0x9e37_79b9_7f4a_7c15).shuffle(&mut order);
    let n_test = all.len() / 5;
    let mut test = Data::default();
    for &i in &order[..n_test] {
        test.push(&all, i);
    }
    let train = &order[n_test..];
    let mut shards = Vec::new();
    let mut start = 0;
    for (k, share) in SHARES.iter().enumerate() {
        let end = if k + 1 == SHARES.len() {
            train.len()
        } else {
            start + (train.len() as f64 * share).round() as usize
        };
        let mut s = Data::default();
        for &i in &train[start..end] {
            s.push(&all, i);
        }
        shards.push(s);
        start = end;
    }
    Ok((test, shards))
}

/// Class probabilities of one image.
fn predict(w: &[f32], x: &[f32], p: &mut [f32; CLASSES]) {
    let (weights, bias) = w.split_at(CLASSES * FEATURES);
    for (c, out) in p.iter_mut().enumerate() {
        let row = &weights[c * FEATURES..(c + 1) * FEATURES];
        *out = bias[c] + row.iter().zip(x).map(|(a, b)| a * b).sum::<f32>();
    }
    let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in p.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in p.iter_mut() {
        *v /= sum;
    }
}

/// Mini-batch SGD with a little L2, `epochs` passes over `data`.
fn train(mut w: Vec<f32>, data: &Data, epochs: usize, seed: u64) -> Vec<f32> {
    const LR: f32 = 0.02;
    const L2: f32 = 1e-4;
    const BATCH: usize = 16;
    let mut rng = Rng(seed | 1);
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut grad = vec![0f32; PARAMS];
    let mut p = [0f32; CLASSES];
    for _ in 0..epochs {
        rng.shuffle(&mut order);
        for batch in order.chunks(BATCH) {
            grad.iter_mut().for_each(|g| *g = 0.0);
            for &i in batch {
                let x = data.row(i);
                predict(&w, x, &mut p);
                p[data.y[i]] -= 1.0;
                let (gw, gb) = grad.split_at_mut(CLASSES * FEATURES);
                for c in 0..CLASSES {
                    for (g, xi) in gw[c * FEATURES..(c + 1) * FEATURES].iter_mut().zip(x) {
                        *g += p[c] * xi;
                    }
                    gb[c] += p[c];
                }
            }
            let scale = LR / batch.len() as f32;
            for (k, (wk, g)) in w.iter_mut().zip(&grad).enumerate() {
                let decay = if k < CLASSES * FEATURES {
                    L2 * *wk
                } else {
                    0.0
                };
                *wk -= scale * g + LR * decay;
            }
        }
    }
    w
}

/// Accuracy (0..1) and mean cross-entropy of `w` on `data`.
fn evaluate(w: &[f32], data: &Data) -> (f64, f64) {
    let mut p = [0f32; CLASSES];
    let (mut right, mut loss) = (0usize, 0f64);
    for i in 0..data.len() {
        predict(w, data.row(i), &mut p);
        let best = (0..CLASSES)
            .max_by(|a, b| p[*a].total_cmp(&p[*b]))
            .unwrap_or(0);
        right += usize::from(best == data.y[i]);
        loss -= f64::from(p[data.y[i]].max(1e-12)).ln();
    }
    let n = data.len().max(1) as f64;
    (right as f64 / n, loss / n)
}

/// FedAvg: the updates averaged, each weighted by its shard's size.
fn average(updates: &[Vec<f32>], sizes: &[u64]) -> Vec<f32> {
    let total = sizes.iter().sum::<u64>().max(1) as f32;
    let mut avg = vec![0f32; PARAMS];
    for (u, n) in updates.iter().zip(sizes) {
        let weight = *n as f32 / total;
        for (a, x) in avg.iter_mut().zip(u) {
            *a += weight * x;
        }
    }
    avg
}

/// Why the injected training failure happened.
#[derive(Debug)]
struct InjectedFailure {
    round: usize,
}

impl std::fmt::Display for InjectedFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "training failed at round {} (injected)", self.round)
    }
}
impl std::error::Error for InjectedFailure {}

/// Microseconds since the epoch (one machine, one clock for every party).
fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// One round's figures on the test split.
#[derive(Clone, Copy)]
struct Point {
    round: usize,
    accuracy: f64,
    loss: f64,
}

/// The driver: the same code in every party. Returns every round's
/// figures and the final model.
async fn driver(
    fed: &xsilo::Fed,
    args: &Args,
    bar: &ProgressBar,
) -> Result<(Vec<Point>, Vec<f32>)> {
    let me = fed.me().as_str().to_owned();
    let (test, mut shards) = split()?;
    // This process keeps its own shard, and alice the test split.
    let index = PARTIES.iter().position(|p| *p == me).unwrap_or(0);
    let mine = Arc::new(std::mem::take(&mut shards[index]));
    let test = Arc::new(if me == "alice" { test } else { Data::default() });
    // Shard sizes: each party says its own.
    let sizes: Vec<_> = PARTIES
        .iter()
        .map(|p| {
            let n = mine.len() as u64;
            fed.party(p).named("shard size").task((), move |()| n)
        })
        .collect();
    let sizes: Arc<Vec<u64>> = Arc::new(fed.get(sizes).await?);
    let mut global: FedObject<Vec<f32>> = fed
        .party("alice")
        .named("init")
        .task((), |()| vec![0f32; PARAMS]);
    let mut history = Vec::with_capacity(args.rounds);
    let epochs = args.epochs;
    for round in 1..=args.rounds {
        let updates: Vec<FedObject<Vec<f32>>> = PARTIES
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let shard = mine.clone();
                let fail =
                    args.fail_party.as_deref() == Some(*p) && args.fail_at_round == Some(round);
                let seed = (round * 31 + k) as u64;
                fed.party(p)
                    .named("train")
                    .try_task(global.clone(), move |w: Vec<f32>| {
                        if fail {
                            println!("FAIL-AT {}", now_us());
                            return Err(InjectedFailure { round });
                        }
                        Ok(train(w, &shard, epochs, seed))
                    })
            })
            .collect();
        let weights = sizes.clone();
        global = fed
            .party("alice")
            .named("aggregate")
            .task(updates, move |us: Vec<Vec<f32>>| average(&us, &weights));
        let held_out = test.clone();
        let eval = fed
            .party("alice")
            .named("evaluate")
            .task(global.clone(), move |w: Vec<f32>| evaluate(&w, &held_out));
        let (accuracy, loss) = fed.get(&eval).await?;
        history.push(Point {
            round,
            accuracy,
            loss,
        });
        bar.set_position(round as u64);
        bar.set_message(format!(
            "accuracy {:.1}%  loss {:.3}",
            accuracy * 100.0,
            loss
        ));
    }
    let model = fed.get(&global).await?;
    Ok((history, model))
}

/// Accuracy and loss per round, with the central accuracy as a line.
fn plot(path: &Path, history: &[Point], central: f64) -> Result<()> {
    let rounds = history.len().max(2);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(280);
    let low = history
        .iter()
        .map(|p| p.accuracy * 100.0)
        .fold(central * 100.0, f64::min);
    let mut acc = ChartBuilder::on(&top)
        .caption(
            "FedAvg on the UCI digits: alice, bob, carol (test accuracy)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(1..rounds, (low - 2.0).max(0.0)..100.0)?;
    acc.configure_mesh()
        .x_desc("round")
        .y_desc("accuracy %")
        .draw()?;
    acc.draw_series(LineSeries::new(
        history.iter().map(|p| (p.round, p.accuracy * 100.0)),
        BLUE.stroke_width(2),
    ))?
    .label("federated (weighted FedAvg)")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    acc.draw_series(LineSeries::new(
        [(1, central * 100.0), (rounds, central * 100.0)],
        RED.stroke_width(1),
    ))?
    .label("central (pooled data)")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(1)));
    acc.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    let high = history.iter().map(|p| p.loss).fold(0.1, f64::max);
    let mut loss = ChartBuilder::on(&bottom)
        .caption("test loss (cross-entropy)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(1..rounds, 0.0..high * 1.05)?;
    loss.configure_mesh()
        .x_desc("round")
        .y_desc("loss")
        .draw()?;
    loss.draw_series(LineSeries::new(
        history.iter().map(|p| (p.round, p.loss)),
        GREEN.stroke_width(2),
    ))?;
    root.present()?;
    Ok(())
}

fn main() -> ExitCode {
    common::init_logging("off");
    let args = Args::parse();
    let result = match (&args.party, &args.config) {
        (Some(party), Some(config)) => run_party(party, config, &args),
        _ => run_all(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One party.
fn run_party(party: &str, config: &Path, args: &Args) -> Result<()> {
    let config = Config::from_file(config)?;
    let start = Instant::now();
    let bar = ProgressBar::new(args.rounds as u64);
    if args.quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{prefix:>5} [{bar:30}] round {pos}/{len}  {msg}")?
            .progress_chars("=> "),
    );
    bar.set_prefix(party.to_owned());
    let outcome = xsilo::block_on(async {
        let fed = xsilo::init(config, party).await?;
        let result = driver(&fed, args, &bar).await;
        if let Err(e) = &result {
            // Said at once, before the shutdown.
            bar.finish_and_clear();
            let origin = e
                .downcast_ref::<xsilo::Error>()
                .and_then(xsilo::Error::remote_origin)
                .map_or("an error".to_owned(), |p| {
                    format!("a RemoteError naming party '{p}'")
                });
            println!("ERROR-AT {}", now_us());
            println!("party {party} got {origin}: {e}");
        }
        let shutdown = fed.shutdown().await;
        let out = result?;
        shutdown?;
        Ok::<_, anyhow::Error>(out)
    });
    bar.finish_and_clear();
    let (history, model) = outcome.with_context(|| format!("party {party}"))?;
    let last = history.last().map_or(0.0, |p| p.accuracy);
    if party != "alice" {
        println!(
            "party {party}: federated accuracy {:.1}% after {} rounds ({:.1} s)",
            last * 100.0,
            history.len(),
            start.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    // The reference: the same model trained on the pooled shards, as many
    // epochs as every shard saw.
    let (test, shards) = split()?;
    let mut pooled = Data::default();
    for s in &shards {
        for i in 0..s.len() {
            pooled.push(s, i);
        }
    }
    let central = train(
        vec![0f32; PARAMS],
        &pooled,
        args.rounds * args.epochs,
        0x5eed,
    );
    let (central_acc, _) = evaluate(&central, &test);
    let (fed_acc, _) = evaluate(&model, &test);
    println!(
        "party alice: federated accuracy {:.1}%, central {:.1}% (difference {:.1} points), \
         {} rounds in {:.1} s",
        fed_acc * 100.0,
        central_acc * 100.0,
        (fed_acc - central_acc).abs() * 100.0,
        history.len(),
        start.elapsed().as_secs_f64()
    );
    println!("ACCURACY {fed_acc} {central_acc}");
    plot(&args.plot, &history, central_acc).context("cannot write the plot")?;
    println!("plot: {}", args.plot.display());
    Ok(())
}

/// alice, bob and carol as three processes of this program; alice alone
/// shows a progress bar.
fn run_all(args: &Args) -> Result<()> {
    let plot = std::path::absolute(&args.plot)?;
    let mut common_args = vec![
        "--rounds".to_owned(),
        args.rounds.to_string(),
        "--epochs".to_owned(),
        args.epochs.to_string(),
        "--plot".to_owned(),
        plot.display().to_string(),
    ];
    if let (Some(p), Some(k)) = (&args.fail_party, args.fail_at_round) {
        common_args.extend(["--fail-party".to_owned(), p.clone()]);
        common_args.extend(["--fail-at-round".to_owned(), k.to_string()]);
    }
    let quiet = args.quiet;
    common::run_local_job(
        "fedavg-demo",
        &PARTIES,
        |_, c| {
            c.comm.barrier_on_initializing = true;
        },
        |p| {
            let mut a = common_args.clone();
            if quiet || p != "alice" {
                a.push("--quiet".to_owned());
            }
            a
        },
    )
}
