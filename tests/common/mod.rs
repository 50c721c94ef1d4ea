//! The harness of the end-to-end tests: every party is a child process of
//! the test binary (re-run with `--exact child --ignored`, through
//! `xsilo_testkit`), with its own configuration file and development
//! certificate in a temporary folder. Every wait is bounded and fails the
//! test with a message naming the party.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use xsilo::{Config, Error, Fed, InitOptions};
use xsilo_testkit::{ChildProcess, Spawn};

const SCENARIO: &str = "XSILO_E2E_SCENARIO";
const PARTY: &str = "XSILO_E2E_PARTY";
const CONFIG: &str = "XSILO_E2E_CONFIG";
/// No child may run longer than this, unless its job says otherwise
/// ([`Job::with_bound`]).
pub const BOUND: Duration = Duration::from_secs(60);
const BOUND_ENV: &str = "XSILO_E2E_BOUND_S";
const RUNTIME_ENV: &str = "XSILO_E2E_RUNTIME";

/// This child's bound.
fn child_bound() -> Duration {
    std::env::var(BOUND_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(BOUND, Duration::from_secs)
}

/// A scenario: the driver program, told its scenario name and party.
pub type Scenario = for<'a> fn(
    &'a str,
    &'a str,
    &'a Fed,
) -> Pin<Box<dyn Future<Output = Result<Json, Error>> + 'a>>;

static HANDLER_CALLS: AtomicUsize = AtomicUsize::new(0);

/// The body of a test binary's `child` test: runs one party.
pub fn child_main(scenario: Scenario) {
    let (Ok(name), Ok(party), Ok(config)) = (
        std::env::var(SCENARIO),
        std::env::var(PARTY),
        std::env::var(CONFIG),
    ) else {
        return;
    };
    // Logs only when asked for (RUST_LOG), so that CI output stays readable.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let options = InitOptions::default().on_sending_failure(|error| {
        let n = HANDLER_CALLS.fetch_add(1, Ordering::SeqCst) + 1;
        println!(
            "XSILO-HANDLER {n} {}",
            error.map_or("no sending error".to_owned(), ToString::to_string)
        );
    });
    let bound = child_bound();
    let driver = async {
        tokio::time::timeout(bound, async {
            let config = Config::from_file(&config)?;
            let fed = xsilo::init_with(config, &party, options).await?;
            let result = scenario(&name, &party, &fed).await;
            let shutdown = fed.shutdown().await;
            let value = result?;
            shutdown?;
            Ok::<Json, Error>(value)
        })
        .await
    };
    // A party embedded in a multi-thread tokio application (the shape of
    // `#[tokio::main]`), or in a plain `fn main` through `xsilo::block_on`.
    let outcome = if std::env::var(RUNTIME_ENV).is_ok_and(|v| v == "tokio-multi") {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(driver)
    } else {
        xsilo::block_on(driver)
    };
    match outcome {
        Ok(Ok(v)) => println!("XSILO-RESULT {v}"),
        Ok(Err(e)) => println!("XSILO-ERROR {}", e.to_string().replace('\n', " | ")),
        Err(_) => println!("XSILO-ERROR the child did not finish within {bound:?}"),
    }
}

/// In a child: waits (bounded) until the test says go ([`Running::go`]):
/// a test makes its fault happen, then lets the driver on, instead of
/// hoping that a sleep is long enough.
pub async fn wait_go() {
    let line = tokio::time::timeout(
        BOUND,
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|_| line)
        }),
    )
    .await;
    match line {
        Ok(Ok(Ok(l))) if l.trim() == "GO" => {}
        other => panic!("the test never said go: {other:?}"),
    }
}

/// Certificates and one configuration file per party.
pub struct Job {
    pub dir: tempfile::TempDir,
    pub parties: Vec<String>,
    bound: Duration,
    env: Vec<(String, String)>,
    /// Jobs of one test binary run one at a time: each starts several
    /// processes, and the bounds they assert are about the runtime, not
    /// about a 2-core machine running a dozen of them at once.
    _serial: std::sync::MutexGuard<'static, ()>,
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A job of `parties`; `tweak(party, config)` adjusts each party's file.
pub fn job(parties: &[&str], tweak: impl Fn(&str, &mut Config)) -> Job {
    let serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    xsilo::dev::write_local_job(dir.path(), "e2e", parties, |p, c| {
        c.comm.barrier_on_initializing = true;
        c.comm.barrier_timeout = Duration::from_secs(20);
        tweak(p, c);
    })
    .unwrap();
    Job {
        dir,
        parties: parties.iter().map(|p| (*p).to_owned()).collect(),
        bound: BOUND,
        env: Vec::new(),
        _serial: serial,
    }
}

/// What one child did.
#[derive(Debug)]
pub struct Outcome {
    /// `Ok(json)` or `Err(message)`; `None` if it printed neither (it exited
    /// from an unintended shutdown).
    pub result: Option<Result<Json, String>>,
    /// Its exit status.
    pub status: ExitStatus,
    /// Every line it printed.
    pub lines: Vec<String>,
    /// From its start to its exit.
    pub elapsed: Duration,
}

impl Outcome {
    /// How many times its sending-failure handler ran.
    pub fn handler_calls(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| l.contains("XSILO-HANDLER"))
            .count()
    }

    /// The error it ended with; fails the test otherwise.
    pub fn error(&self) -> &str {
        match &self.result {
            Some(Err(e)) => e,
            other => panic!("expected an error, got {other:?} (lines {:?})", self.lines),
        }
    }

    /// The value it ended with; fails the test otherwise.
    pub fn value(&self) -> &Json {
        match &self.result {
            Some(Ok(v)) => v,
            other => panic!("expected a value, got {other:?} (lines {:?})", self.lines),
        }
    }
}

/// The running children of a job.
pub struct Running {
    procs: BTreeMap<String, ChildProcess>,
    scenario: String,
    bound: Duration,
}

impl Job {
    /// Lets every child run up to `bound` (for long tasks).
    pub fn with_bound(mut self, bound: Duration) -> Self {
        self.bound = bound;
        self
    }

    /// Sets an environment variable in every child.
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs the children's drivers in a multi-thread tokio runtime, as a
    /// `#[tokio::main]` application does.
    pub fn in_tokio_multi_thread(self) -> Self {
        self.with_env(RUNTIME_ENV, "tokio-multi")
    }

    pub fn config(&self, party: &str) -> PathBuf {
        self.dir.path().join(format!("{party}.toml"))
    }

    /// Starts `scenario` in the listed parties (all when `only` is empty).
    pub fn start(&self, scenario: &str, only: &[&str]) -> Running {
        self.start_in(scenario, only, &BTreeMap::new())
    }

    /// Like [`Job::start`], running the parties named in `namespaces`
    /// inside those network namespaces (`ip netns exec`).
    pub fn start_in(
        &self,
        scenario: &str,
        only: &[&str],
        namespaces: &BTreeMap<String, String>,
    ) -> Running {
        let mut procs = BTreeMap::new();
        for p in &self.parties {
            if !only.is_empty() && !only.contains(&p.as_str()) {
                continue;
            }
            let mut spawn = Spawn::this_test(&format!("party {p} of {scenario}"), "child")
                .env(SCENARIO, scenario)
                .env(PARTY, p)
                .env(CONFIG, self.config(p))
                .env(BOUND_ENV, self.bound.as_secs().to_string());
            for (k, v) in &self.env {
                spawn = spawn.env(k, v);
            }
            if let Some(ns) = namespaces.get(p) {
                spawn = spawn.launched_by(["ip", "netns", "exec", ns]);
            }
            procs.insert(p.clone(), spawn.spawn());
        }
        Running {
            procs,
            scenario: scenario.to_owned(),
            bound: self.bound,
        }
    }

    /// Runs `scenario` in every party and waits for all.
    pub fn run(&self, scenario: &str) -> BTreeMap<String, Outcome> {
        self.start(scenario, &[]).finish()
    }
}

impl Running {
    /// Waits until `party` prints a line containing `marker`.
    pub fn wait_line(&mut self, party: &str, marker: &str) -> String {
        self.procs
            .get_mut(party)
            .unwrap()
            .wait_line(marker, self.bound)
    }

    /// Lets `party`'s driver go on past [`wait_go`].
    pub fn go(&mut self, party: &str) {
        self.procs.get_mut(party).unwrap().send_line("GO");
    }

    /// Sends a signal (`"INT"`, `"TERM"`, `"KILL"`) to `party`.
    pub fn signal(&self, party: &str, signal: &str) -> Instant {
        self.procs[party].signal(signal)
    }

    /// Waits for every child to exit (bounded) and collects the outcomes.
    pub fn finish(self) -> BTreeMap<String, Outcome> {
        let deadline = Instant::now() + self.bound + Duration::from_secs(10);
        let mut outcomes = BTreeMap::new();
        for (p, mut proc) in self.procs {
            let finished = proc.finish(deadline.saturating_duration_since(Instant::now()));
            let mut result = None;
            for line in &finished.lines {
                if let Some(at) = line.find("XSILO-RESULT ") {
                    result = Some(Ok(serde_json::from_str(&line[at + 13..]).unwrap()));
                } else if let Some(at) = line.find("XSILO-ERROR ") {
                    result = Some(Err(line[at + 12..].to_owned()));
                }
            }
            outcomes.insert(
                p,
                Outcome {
                    result,
                    status: finished.status,
                    lines: finished.lines,
                    elapsed: finished.elapsed,
                },
            );
        }
        outcomes
    }
}

/// Two network namespaces joined by a veth pair, for cutting a link between
/// two parties. Removed when dropped.
pub struct NetPair {
    pub ns: [String; 2],
    pub addr: [std::net::IpAddr; 2],
    dev: [String; 2],
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether tests that need root may skip: not under CI (`CI=true`), where
/// a test that cannot run fails instead of passing unseen.
pub fn may_skip_without_root() -> bool {
    std::env::var("CI").map_or(true, |v| v != "true")
}

/// Whether this process runs as root (namespaces need it).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl NetPair {
    /// Creates two namespaces with addresses 10.77.<tag>.1 and .2 on a
    /// veth pair between them.
    pub fn new(tag: u8) -> Result<Self, String> {
        let id = format!("{}{tag}", std::process::id() % 10_000);
        let ns = [format!("xs{id}a"), format!("xs{id}b")];
        let dev = [format!("xv{id}a"), format!("xv{id}b")];
        let addr: [std::net::IpAddr; 2] = [
            format!("10.77.{tag}.1").parse().unwrap(),
            format!("10.77.{tag}.2").parse().unwrap(),
        ];
        let pair = Self { ns, addr, dev };
        for n in &pair.ns {
            ip(&["netns", "add", n])?;
            ip(&["netns", "exec", n, "ip", "link", "set", "lo", "up"])?;
        }
        ip(&[
            "link",
            "add",
            &pair.dev[0],
            "type",
            "veth",
            "peer",
            "name",
            &pair.dev[1],
        ])?;
        for i in 0..2 {
            ip(&["link", "set", &pair.dev[i], "netns", &pair.ns[i]])?;
            let cidr = format!("{}/24", pair.addr[i]);
            ip(&[
                "netns",
                "exec",
                &pair.ns[i],
                "ip",
                "addr",
                "add",
                &cidr,
                "dev",
                &pair.dev[i],
            ])?;
            ip(&[
                "netns",
                "exec",
                &pair.ns[i],
                "ip",
                "link",
                "set",
                &pair.dev[i],
                "up",
            ])?;
        }
        Ok(pair)
    }

    /// Limits what end `i` sends to `rate` (tc token bucket, e.g.
    /// `"20mbit"`; netem is not in every kernel).
    pub fn rate_limit(&self, i: usize, rate: &str) {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns[i],
                "tc",
                "qdisc",
                "add",
                "dev",
                &self.dev[i],
            ])
            .args([
                "root", "tbf", "rate", rate, "burst", "64kbit", "latency", "400ms",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Sets the link down (cut) or up again, on both ends.
    pub fn link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        for i in 0..2 {
            ip(&[
                "netns",
                "exec",
                &self.ns[i],
                "ip",
                "link",
                "set",
                &self.dev[i],
                state,
            ])
            .unwrap();
        }
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for n in &self.ns {
            let _ = ip(&["netns", "del", n]);
        }
    }
}
