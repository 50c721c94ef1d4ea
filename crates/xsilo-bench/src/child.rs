//! Starting a benchmark party as a child process of the benchmark itself,
//! and reading the lines it prints, with bounded waits.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

/// A child process killed when dropped.
pub(crate) struct Party {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Held open; the child exits when it closes (see [`exit_with_parent`]).
    _stdin: Option<std::process::ChildStdin>,
}

impl Party {
    /// Runs this executable with `args`, passing `env`.
    pub(crate) fn spawn(args: &[&str], env: &[(&str, String)]) -> Result<Self> {
        let exe = std::env::current_exe().context("cannot find the benchmark executable")?;
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .context("cannot start the benchmark's child party")?;
        let stdout: ChildStdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no child stdout"))?;
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            lines,
            _stdin: stdin,
        })
    }

    /// What follows `prefix` on the next line starting with it.
    pub(crate) fn expect_line(&self, prefix: &str, bound: Duration) -> Result<String> {
        let deadline = std::time::Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.lines.recv_timeout(left).map_err(|_| {
                anyhow!("the child party did not print {prefix:?} within {bound:?}")
            })?;
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok(rest.trim().to_owned());
            }
        }
    }
}

impl Drop for Party {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In a child party: exits the process when the parent closes our stdin (the
/// parent ended, however it ended), or after `cap` in any case.
pub(crate) fn exit_with_parent(cap: Duration) {
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
    std::thread::spawn(move || {
        std::thread::sleep(cap);
        eprintln!("benchmark child: exiting after {cap:?}");
        std::process::exit(1);
    });
}
