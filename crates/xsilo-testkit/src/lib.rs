//! The child-process harness shared by the workspace's tests: a test runs
//! a party (or any program) as a child process, reads its stdout lines as
//! they come, and waits for them, for its exit, always within a bound.
//!
//! * [`Spawn::this_test`] re-runs the current test binary with only one
//!   (ignored) test selected: that test reads its environment (set with
//!   [`Spawn::env`]) to know which party it is and with which
//!   configuration, and returns at once when the variables are absent (a
//!   plain `cargo test --ignored`). [`Spawn::program`] runs another binary
//!   (`env!("CARGO_BIN_EXE_...")`).
//! * Its stdout is read line by line on a thread of its own into a
//!   channel; every wait on it ([`ChildProcess::wait_line`],
//!   [`ChildProcess::finish`]) takes a bound and, when the bound passes,
//!   fails the test naming the party, what was awaited, the lines it printed
//!   and the last lines of its stderr.
//! * Its stderr is read on another thread, echoed to the test's stderr
//!   (captured by the test harness like the test's own output) and its last
//!   [`STDERR_KEPT`] lines kept for those messages.
//! * It runs in a process group of its own, which is killed (`SIGKILL`)
//!   when the [`ChildProcess`] is dropped: a failed test leaves no party
//!   (nor anything the party started) behind.
//!
//! Nothing here sleeps: every wait is a bounded receive on a channel.
//! Standard library only, so that every crate's tests may use it.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many of its last stderr lines a failure message shows.
pub const STDERR_KEPT: usize = 20;

/// What to start: a program, its arguments and environment.
#[derive(Debug, Clone)]
pub struct Spawn {
    name: String,
    launcher: Vec<OsString>,
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl Spawn {
    /// The current test binary, running only the ignored test named
    /// exactly `test` (`--exact <test> --ignored --nocapture
    /// --test-threads=1`), as party `name` (the name is for messages; pass
    /// it to the child with [`Spawn::env`]).
    pub fn this_test(name: &str, test: &str) -> Self {
        #[allow(clippy::expect_used)]
        let exe = std::env::current_exe().expect("the test binary knows its path");
        let mut spawn = Self::program(name, exe);
        spawn.args = [
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        spawn
    }

    /// Another program, as `name` (for messages).
    pub fn program(name: &str, program: impl AsRef<OsStr>) -> Self {
        Self {
            name: name.to_owned(),
            launcher: Vec::new(),
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// One more argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// More arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// An environment variable of the child.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Runs the program through `launcher` (e.g. `["ip", "netns", "exec",
    /// ns]`), which executes it in place.
    pub fn launched_by<I, S>(mut self, launcher: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.launcher = launcher
            .into_iter()
            .map(|a| a.as_ref().to_owned())
            .collect();
        self
    }

    /// Starts it, in a process group of its own, with stdin, stdout and
    /// stderr piped. Panics (naming it) if it cannot start.
    pub fn spawn(self) -> ChildProcess {
        let mut command = match self.launcher.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({command:?}): {e}", self.name));
        let pid = child.id();
        let stdin = child.stdin.take();
        let (line_tx, lines) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if line_tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            let tail = Arc::clone(&stderr_tail);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("{line}");
                    let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                    if tail.len() == STDERR_KEPT {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            });
        }
        // The exit is awaited on a thread too, so that every wait for it is
        // a bounded receive.
        let (exit_tx, exit) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = exit_tx.send(child.wait());
        });
        ChildProcess {
            name: self.name,
            pid,
            stdin,
            lines,
            seen: Vec::new(),
            stdout_closed: false,
            stderr_tail,
            exit,
            status: None,
            started: Instant::now(),
        }
    }
}

/// A running child (see the crate docs); killed with its process group
/// when dropped.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    pid: u32,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stdout_closed: bool,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    exit: mpsc::Receiver<std::io::Result<ExitStatus>>,
    status: Option<ExitStatus>,
    started: Instant,
}

/// How a child ended ([`ChildProcess::finish`]).
#[derive(Debug)]
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// Every line it printed on stdout.
    pub lines: Vec<String>,
    /// From its start to its exit (as seen here).
    pub elapsed: Duration,
}

/// What follows `marker` in `line` (trimmed), if it is there: the test
/// harness of a child may print `test child ... ` before its first line.
pub fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|at| line[at + marker.len()..].trim())
}

impl ChildProcess {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id (and process group id).
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Every stdout line read so far by the waits.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// The last lines of its stderr.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr_tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Fails the test: `what` did not happen, with everything known of the
    /// child.
    pub fn fail(&self, what: &str) -> ! {
        panic!(
            "{} {what}\n  its stdout: {:?}\n  its last stderr lines:\n    {}",
            self.name,
            self.seen,
            self.stderr_tail().join("\n    ")
        )
    }

    /// The next stdout line, or why there is none within `bound`: `Err(true)`
    /// if stdout closed.
    fn next_line(&mut self, deadline: Instant) -> Result<String, bool> {
        if self.stdout_closed {
            return Err(true);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => {
                self.seen.push(line.clone());
                Ok(line)
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.stdout_closed = true;
                Err(true)
            }
            Err(RecvTimeoutError::Timeout) => Err(false),
        }
    }

    /// Waits until it prints a line containing `marker` and returns that
    /// line; the test fails if it does not within `bound`, or if it closes
    /// its stdout first.
    pub fn wait_line(&mut self, marker: &str, bound: Duration) -> String {
        self.wait_line_or(marker, bound, &[])
    }

    /// Like [`ChildProcess::wait_line`], failing at once if a line contains
    /// one of `fatal` first (a child that reports its own failure).
    pub fn wait_line_or(&mut self, marker: &str, bound: Duration, fatal: &[&str]) -> String {
        let deadline = Instant::now() + bound;
        loop {
            match self.next_line(deadline) {
                Ok(line) if line.contains(marker) => return line,
                Ok(line) if fatal.iter().any(|f| line.contains(f)) => {
                    self.fail(&format!("failed before printing {marker:?}: {line}"))
                }
                Ok(_) => {}
                Err(true) => self.fail(&format!("exited before printing {marker:?}")),
                Err(false) => self.fail(&format!("printed no {marker:?} within {bound:?}")),
            }
        }
    }

    /// What follows `marker` on the line [`ChildProcess::wait_line`] waits
    /// for, trimmed.
    pub fn wait_after(&mut self, marker: &str, bound: Duration) -> String {
        let line = self.wait_line(marker, bound);
        after(&line, marker).unwrap_or_default().to_owned()
    }

    /// Writes `line` to its stdin.
    pub fn send_line(&mut self, line: &str) {
        let Some(stdin) = self.stdin.as_mut() else {
            self.fail(&format!("has no stdin left to send {line:?} to"));
        };
        let sent = writeln!(stdin, "{line}").and_then(|()| stdin.flush());
        if let Err(e) = sent {
            self.fail(&format!("does not read its stdin ({line:?}: {e})"));
        }
    }

    /// Closes its stdin (a child may take that as its cue to end).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends `signal` (`"INT"`, `"TERM"`, `"KILL"`, ...) to the child
    /// itself; returns when it was sent.
    pub fn signal(&self, signal: &str) -> Instant {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status();
        match status {
            Ok(s) if s.success() => Instant::now(),
            other => self.fail(&format!("could not be sent SIG{signal}: {other:?}")),
        }
    }

    /// Kills its whole process group (`SIGKILL`), unless it has exited.
    pub fn kill(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--"])
            .arg(format!("-{}", self.pid))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Its exit status, if it has exited (does not wait).
    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Ok(status)) = self.exit.try_recv() {
                self.status = Some(status);
            }
        }
        self.status
    }

    /// Waits until it exits, within `bound`; the test fails otherwise.
    pub fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        match self.exit.recv_timeout(bound) {
            Ok(Ok(status)) => {
                self.status = Some(status);
                status
            }
            Ok(Err(e)) => self.fail(&format!("could not be waited for: {e}")),
            Err(_) => {
                self.kill();
                self.fail(&format!("did not exit within {bound:?}"))
            }
        }
    }

    /// Reads its stdout until it closes and waits for it to exit, all
    /// within `bound`: how it ended and every line it printed. The test
    /// fails (and the child is killed) if it does not end in time.
    pub fn finish(&mut self, bound: Duration) -> Finished {
        let deadline = Instant::now() + bound;
        loop {
            match self.next_line(deadline) {
                Ok(_) => {}
                Err(true) => break,
                Err(false) => {
                    self.kill();
                    self.fail(&format!("did not finish within {bound:?}"));
                }
            }
        }
        let status = self.wait_exit(deadline.saturating_duration_since(Instant::now()));
        Finished {
            status,
            lines: self.seen.clone(),
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
        // Reaped by its waiter thread; do not hang a failing test on it.
        let _ = self.exit.recv_timeout(Duration::from_secs(5));
    }
}
