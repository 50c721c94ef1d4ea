//! `xsilo check` run as a user would: the built binary against parties that
//! are real processes (this test binary re-run as `child`) or real QUIC
//! endpoints, with real files. Every failure the check names is produced
//! for real; a check during a running job leaves its results and exit status
//! unchanged. Every wait is bounded and fails with a message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use xsilo::Config;
use xsilo_testkit::{ChildProcess, Spawn};
use xsilo_transport::devcert::DevCa;
use xsilo_transport::{PeerAddress, QuicEndpoint, TlsIdentity, TransportConfig};
use xsilo_wire::PartyName;

const CHILD: &str = "XSILO_CHECK_CHILD";
/// No process of these tests may run longer than this.
const BOUND: Duration = Duration::from_secs(60);

fn p(name: &str) -> PartyName {
    name.parse().unwrap()
}

// --- a party as a child process ---------------------------------------------

/// The child: one party of a two-party job. Round one (alice's value pushed
/// to bob's task, the sum sent back), then, with a gate, it waits for a
/// line on stdin before round two; prints its results.
#[test]
#[ignore = "runs only as a child process of the tests below"]
fn child() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let mut parts = spec.split('|');
    let (party, config, gated) = (
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
        parts.next() == Some("gate"),
    );
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut line = String::new();
        if gated {
            let _ = std::io::stdin().read_line(&mut line);
        }
        let _ = go_tx.send(());
    });
    let outcome = xsilo::block_on(async {
        tokio::time::timeout(BOUND, async {
            let config = Config::from_file(&config)?;
            let fed = xsilo::init(config, &party).await?;
            println!("XSILO-STARTED");
            let run = async {
                let a = fed.party("alice").task((), |()| 2i64);
                let s = fed.party("bob").task(a, |x: i64| x * 10);
                let first = fed.get(&s).await?;
                println!("XSILO-MID");
                let _ = go_rx.await;
                let t = fed.party("alice").task(s, |x: i64| x + 1);
                let second = fed.get(&t).await?;
                Ok::<_, xsilo::Error>(vec![first, second])
            };
            let result = run.await;
            let shutdown = fed.shutdown().await;
            let values = result?;
            shutdown?;
            Ok::<_, xsilo::Error>(values)
        })
        .await
    });
    match outcome {
        Ok(Ok(v)) => println!("XSILO-RESULT {v:?}"),
        Ok(Err(e)) => {
            println!("XSILO-ERROR {e}");
            std::process::exit(1);
        }
        Err(_) => {
            println!("XSILO-ERROR the child did not finish within {BOUND:?}");
            std::process::exit(1);
        }
    }
}

/// A running party: this test binary re-run as `child`.
struct Party(ChildProcess);

/// Waits for alice and bob to finish the quick start: both print its
/// result and exit with success.
fn both_finish_the_quick_start(alice: Party, bob: Party) {
    let (a, a_status) = alice.finish();
    let (b, b_status) = bob.finish();
    assert_eq!(a, "XSILO-RESULT [20, 21]");
    assert_eq!(b, "XSILO-RESULT [20, 21]");
    assert!(a_status.success(), "{a_status}");
    assert!(b_status.success(), "{b_status}");
}

impl Party {
    fn start(name: &str, config: &Path, gate: bool) -> Self {
        let spec = format!(
            "{name}|{}|{}",
            config.display(),
            if gate { "gate" } else { "open" }
        );
        Self(
            Spawn::this_test(&format!("party {name}"), "child")
                .env(CHILD, spec)
                .spawn(),
        )
    }

    /// Waits (bounded) for a line containing `prefix`; returns it from
    /// `prefix` on (the harness prints `test child ... ` before the
    /// child's first line).
    fn wait_for(&mut self, prefix: &str) -> String {
        let line = self.0.wait_line_or(prefix, BOUND, &["XSILO-ERROR"]);
        line[line.find(prefix).unwrap_or(0)..].to_owned()
    }

    fn release(&mut self) {
        self.0.send_line("go");
    }

    /// Its result line and exit status, bounded.
    fn finish(mut self) -> (String, std::process::ExitStatus) {
        let result = self.wait_for("XSILO-RESULT");
        (result, self.0.wait_exit(BOUND))
    }
}

// --- running the check --------------------------------------------------------

struct Checked {
    success: bool,
    stdout: String,
    elapsed: Duration,
}

impl Checked {
    /// The text line of `check`.
    fn line(&self, check: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(check))
            .unwrap_or_else(|| panic!("no line for {check} in:\n{}", self.stdout))
    }

    fn assert_line(&self, check: &str, status: &str, needles: &[&str]) {
        let line = self.line(check);
        assert!(
            line.starts_with(status) && needles.iter().all(|n| line.contains(n)),
            "expected {status} with {needles:?} for {check}, got:\n{line}\nin:\n{}",
            self.stdout
        );
    }

    fn json(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

fn check(config: &Path, party: &str, more: &[&str]) -> Checked {
    let started = Instant::now();
    let finished = Spawn::program("xsilo check", env!("CARGO_BIN_EXE_xsilo"))
        .args(["check", "--party", party, "--config"])
        .arg(config)
        .args(more)
        .spawn()
        .finish(BOUND);
    let status = finished.status;
    let stdout = finished
        .lines
        .iter()
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    assert!(
        status.code() == Some(0) || status.code() == Some(1),
        "{status}: {stdout}"
    );
    Checked {
        success: status.success(),
        stdout,
        elapsed: started.elapsed(),
    }
}

// --- jobs on disk ---------------------------------------------------------------

/// Tests that start processes run one at a time: their bounds are about
/// xsilo, not about a 2-core machine running several jobs at once.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Job {
    dir: tempfile::TempDir,
    configs: std::collections::BTreeMap<String, PathBuf>,
    _serial: std::sync::MutexGuard<'static, ()>,
}

fn job(parties: &[&str], barrier: bool) -> Job {
    let serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let configs = xsilo::dev::write_local_job(dir.path(), "e2e", parties, |_, c| {
        c.comm.connect_timeout = Duration::from_secs(1);
        c.comm.barrier_on_initializing = barrier;
        c.comm.barrier_timeout = Duration::from_secs(20);
    })
    .unwrap();
    Job {
        dir,
        configs,
        _serial: serial,
    }
}

impl Job {
    fn config(&self, party: &str) -> Config {
        Config::from_file(&self.configs[party]).unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `config` as `name` and returns its path.
    fn write(&self, name: &str, config: &Config) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, config.to_toml_string().unwrap()).unwrap();
        path
    }

    /// Alice's configuration with other TLS files.
    fn alice_with_tls(&self, name: &str, ca: &str, cert: &str, key: &str) -> PathBuf {
        let mut c = self.config("alice");
        c.tls = Some(xsilo::TlsPaths::new(
            self.path(ca),
            self.path(cert),
            self.path(key),
        ));
        self.write(name, &c)
    }
}

// --- the tests --------------------------------------------------------------------

#[test]
fn all_good_across_two_processes_then_the_job_runs_undisturbed() {
    let job = job(&["alice", "bob"], false);
    let mut bob = Party::start("bob", &job.configs["bob"], false);
    bob.wait_for("XSILO-STARTED");

    let checked = check(
        &job.configs["alice"],
        "alice",
        &["--json", "--throughput", "8"],
    );
    assert!(checked.success, "{}", checked.stdout);
    let lines = checked.json();
    let get = |name: &str| {
        lines
            .iter()
            .find(|l| l["check"] == name)
            .unwrap_or_else(|| panic!("no {name} in {}", checked.stdout))
            .clone()
    };
    for name in [
        "config",
        "tls.ca",
        "tls.cert",
        "tls.chain",
        "tls.validity",
        "tls.name",
        "tls.key",
        "listen",
        "bob.address",
        "bob.handshake",
        "bob.certificate",
        "bob.hello",
        "bob.rtt",
        "bob.throughput",
    ] {
        assert_eq!(get(name)["status"], "ok", "{name}: {}", checked.stdout);
    }
    let rtt = get("bob.rtt")["rtt_ms"].as_f64().unwrap();
    let mib_s = get("bob.throughput")["mib_per_s"].as_f64().unwrap();
    assert!(rtt > 0.0 && rtt < 1000.0, "{rtt}");
    assert!(mib_s > 0.0, "{mib_s}");
    assert_eq!(get("summary")["errors"], 0);
    eprintln!(
        "all-good check: rtt {rtt} ms, throughput {mib_s} MiB/s, handshake {} ms, run {:?}",
        get("bob.handshake")["handshake_ms"],
        checked.elapsed
    );

    // Then the job itself: bob, probed while it waited, is unaffected.
    let alice = Party::start("alice", &job.configs["alice"], false);
    both_finish_the_quick_start(alice, bob);
}

#[test]
fn a_check_in_the_middle_of_a_job_leaves_its_results_and_exit_status_unchanged() {
    let job = job(&["alice", "bob"], true);
    let mut alice = Party::start("alice", &job.configs["alice"], true);
    let mut bob = Party::start("bob", &job.configs["bob"], true);
    alice.wait_for("XSILO-MID");
    bob.wait_for("XSILO-MID");

    // Alice's own deployment, checked while alice runs: her port is taken.
    let checked = check(&job.configs["alice"], "alice", &[]);
    assert!(!checked.success, "{}", checked.stdout);
    let listen = job.config("alice").parties[&p("alice")].to_string();
    checked.assert_line("listen", "error", &["in use", &listen, "parties.alice"]);
    checked.assert_line("bob.hello", "ok", &["accepts job 'e2e'"]);
    checked.assert_line("bob.rtt", "ok", &["round trip"]);

    // A wrong job name: an ordinary hello refused for its job makes bob's
    // job abort (PeerRefused); a probe only gets the verdict.
    let mut other = job.config("alice");
    other.job = "other".parse().unwrap();
    let other = job.write("other.toml", &other);
    let checked = check(&other, "alice", &[]);
    assert!(!checked.success);
    checked.assert_line(
        "bob.hello",
        "error",
        &["does not serve job 'other'", "set `job`"],
    );

    alice.release();
    bob.release();
    both_finish_the_quick_start(alice, bob);
}

#[test]
fn certificate_problems_are_each_named_with_their_files() {
    let job = job(&["alice", "bob"], false);
    let ca = DevCa::new().unwrap();
    let now = time::OffsetDateTime::now_utc();
    std::fs::write(job.path("other-ca.pem"), ca.ca_pem()).unwrap();

    // Certificates from another CA.
    let path = job.alice_with_tls("a1.toml", "other-ca.pem", "alice.pem", "alice.key");
    let c = check(&path, "alice", &[]);
    assert!(!c.success);
    c.assert_line(
        "tls.chain",
        "error",
        &["alice.pem is not signed by the CA in", "other-ca.pem"],
    );

    // Expired, and one not valid for 10 more days (a warning), both
    // issued by the job's CA... which is gone: use a CA of this test for
    // the whole set instead.
    let cert = ca
        .issue_valid(
            &p("alice"),
            now - time::Duration::days(60),
            now - time::Duration::days(2),
        )
        .unwrap();
    std::fs::write(job.path("expired.pem"), &cert.cert_pem).unwrap();
    std::fs::write(job.path("expired.key"), &cert.key_pem).unwrap();
    let path = job.alice_with_tls("a2.toml", "other-ca.pem", "expired.pem", "expired.key");
    let c = check(&path, "alice", &[]);
    c.assert_line(
        "tls.validity",
        "error",
        &["expired.pem has expired", "renew"],
    );
    c.assert_line("tls.chain", "ok", &[]);

    let cert = ca
        .issue_valid(
            &p("alice"),
            now - time::Duration::days(1),
            now + time::Duration::days(10),
        )
        .unwrap();
    std::fs::write(job.path("soon.pem"), &cert.cert_pem).unwrap();
    std::fs::write(job.path("soon.key"), &cert.key_pem).unwrap();
    let path = job.alice_with_tls("a3.toml", "other-ca.pem", "soon.pem", "soon.key");
    let c = check(&path, "alice", &[]);
    c.assert_line(
        "tls.validity",
        "warning",
        &["soon.pem expires on", "renew it soon"],
    );

    // A certificate naming another party.
    let path = job.alice_with_tls("a4.toml", "ca.pem", "bob.pem", "bob.key");
    let c = check(&path, "alice", &[]);
    c.assert_line(
        "tls.name",
        "error",
        &["bob.pem names [\"DNS:bob\"], not party 'alice'"],
    );

    // A key of another certificate: both files named, by check and by init.
    let path = job.alice_with_tls("a5.toml", "ca.pem", "alice.pem", "bob.key");
    let c = check(&path, "alice", &[]);
    c.assert_line(
        "tls.key",
        "error",
        &["bob.key does not fit the certificate in", "alice.pem"],
    );
    c.assert_line("peers", "error", &["not probed"]);
    let init_error = Config::from_file(&path)
        .unwrap()
        .tls_identity()
        .unwrap_err()
        .to_string();
    assert!(
        init_error.contains("bob.key does not fit the certificate in")
            && init_error.contains("alice.pem"),
        "{init_error}"
    );

    // A configuration error is init's, naming the key.
    let bad = job.path("bad.toml");
    std::fs::write(&bad, "job = \"e2e\"\nparties = { alice = \"127.0.0.1:1\", bob = \"127.0.0.1:2\" }\n[communication]\nsend_timeot = \"1s\"\n").unwrap();
    let c = check(&bad, "alice", &[]);
    assert!(!c.success);
    c.assert_line("config", "error", &["send_timeot"]);
}

#[test]
fn peer_and_address_problems_are_named() {
    // dave is never started; bob's address in alice's file is carol's port.
    let job = job(&["alice", "bob", "carol", "dave"], false);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _entered = rt.enter();
    let carol_config = job.config("carol");
    let tls = carol_config.tls.clone().unwrap();
    let identity = TlsIdentity::from_pem_files(&tls.ca, &tls.cert, &tls.key).unwrap();
    let carol_addr = carol_config.parties[&p("carol")];
    let carol = QuicEndpoint::bind(
        p("carol"),
        carol_addr,
        &identity,
        TransportConfig::default(),
    )
    .unwrap();
    let book = carol_config
        .parties
        .iter()
        .map(|(k, v)| (k.clone(), PeerAddress::from(*v)))
        .collect();
    let _carol_job = carol.join("e2e".parse().unwrap(), book).unwrap();

    let mut alice = job.config("alice");
    alice.parties.insert(p("bob"), carol_addr);
    let path = job.write("alice-wrong.toml", &alice);
    let listen = alice.parties[&p("alice")];
    let _squatter = std::net::UdpSocket::bind(listen).unwrap();

    let c = check(&path, "alice", &[]);
    assert!(!c.success);
    c.assert_line("listen", "error", &["in use", &listen.to_string()]);
    c.assert_line(
        "bob.certificate",
        "error",
        &[&carol_addr.to_string(), "DNS:carol", "not 'bob'"],
    );
    c.assert_line(
        "carol.hello",
        "ok",
        &["accepts job 'e2e' from party 'alice'"],
    );
    let dave = alice.parties[&p("dave")].to_string();
    c.assert_line(
        "dave.handshake",
        "error",
        &[&dave, "connect_timeout", "is party 'dave' started"],
    );
    // The unreachable peer costs one connect_timeout, not a minute.
    assert!(c.elapsed < Duration::from_secs(10), "{:?}", c.elapsed);
}

#[test]
fn a_shared_certificate_is_reported_and_its_job_runs() {
    // RayFed's set-up: one self-signed certificate naming no party, used by
    // every party as its certificate and as its CA.
    let job = job(&["alice", "bob"], false);
    let shared =
        xsilo_transport::devcert::self_signed_shared("ray-internal", &["127.0.0.1", "localhost"])
            .unwrap();
    std::fs::write(job.path("server.crt"), &shared.cert_pem).unwrap();
    std::fs::write(job.path("server.key"), &shared.key_pem).unwrap();
    let mut configs = std::collections::BTreeMap::new();
    for party in ["alice", "bob"] {
        let mut c = job.config(party);
        c.tls = Some(xsilo::TlsPaths::new(
            job.path("server.crt"),
            job.path("server.crt"),
            job.path("server.key"),
        ));
        configs.insert(party, job.write(&format!("{party}-shared.toml"), &c));
    }
    let mut bob = Party::start("bob", &configs["bob"], false);
    bob.wait_for("XSILO-STARTED");

    let c = check(&configs["alice"], "alice", &[]);
    assert!(c.success, "warnings pass: {}", c.stdout);
    c.assert_line(
        "tls.name",
        "warning",
        &[
            "server.crt names no party of job 'e2e'",
            "DNS:localhost",
            "not bound to certificates",
            "can claim any party name",
        ],
    );
    c.assert_line("tls.chain", "ok", &["server.crt is signed by the CA in"]);
    c.assert_line(
        "bob.certificate",
        "ok",
        &["names no party of the job", "DNS:localhost"],
    );
    c.assert_line("bob.hello", "ok", &["accepts job 'e2e' from party 'alice'"]);

    let alice = Party::start("alice", &configs["alice"], false);
    both_finish_the_quick_start(alice, bob);
}

#[test]
fn a_one_party_job_has_no_peer_to_probe_and_passes() {
    let job = job(&["alice"], true);
    let c = check(&job.configs["alice"], "alice", &[]);
    assert!(c.success, "{}", c.stdout);
    c.assert_line("config", "ok", &["party 'alice' of 1 (alice)"]);
    c.assert_line("tls.name", "ok", &["names party 'alice'"]);
    c.assert_line("peers", "ok", &["none", "only party of job 'e2e'"]);
}
