import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class Parties:
    """Party processes of one scenario, killed at the end of the test."""

    def __init__(self, scenario, parties, start=None, configs=None):
        ports = free_ports(len(parties))
        self.addresses = {p: f"127.0.0.1:{port}" for p, port in zip(parties, ports)}
        self.procs = {}
        for p in start or parties:
            where = configs[p] if configs else json.dumps(self.addresses)
            self.procs[p] = subprocess.Popen(
                [sys.executable, os.path.join(HERE, "parties.py"), scenario, p, where],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )

        # Each party's stdout is read by a thread into a queue, so that every
        # wait on a line has a bound even if the party prints nothing.
        self.lines, self.errs, self.err_threads = {}, {}, {}
        for p, proc in self.procs.items():
            q = queue.Queue()
            self.lines[p] = q
            threading.Thread(target=self._pump, args=(proc.stdout, q), daemon=True).start()
            self.errs[p] = []
            t = threading.Thread(target=self._collect, args=(proc.stderr, self.errs[p]), daemon=True)
            t.start()
            self.err_threads[p] = t

    @staticmethod
    def _collect(stream, into):
        for line in stream:
            into.append(line)

    @staticmethod
    def _pump(stream, q):
        for line in stream:
            q.put(line.rstrip("\n"))
        q.put(None)

    def wait_for_line(self, party, prefix, bound=30):
        """The first line of `party` starting with `prefix`, waiting at most
        `bound` seconds (None if it exits or the bound passes first)."""
        deadline = time.monotonic() + bound
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                line = self.lines[party].get(timeout=left)
            except queue.Empty:
                return None
            if line is None:
                return None
            if line.startswith(prefix):
                return line

    def finish(self, party, timeout=60):
        """Waits (bounded) for a party to exit: (exit code, the stdout lines
        not yet taken, stderr)."""
        proc = self.procs[party]
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            self.err_threads[party].join(timeout=10)
            err = "".join(self.errs[party])
            pytest.fail(f"party {party} did not exit within {timeout} s; stderr: {err[-2000:]!r}")
        self.err_threads[party].join(timeout=10)
        err = "".join(self.errs[party])
        out = []
        while True:
            try:
                line = self.lines[party].get(timeout=10)
            except queue.Empty:
                break
            if line is None:
                break
            out.append(line)
        return proc.returncode, out, err

    def kill_all(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def parties():
    made = []

    def make(scenario, names, start=None, configs=None):
        p = Parties(scenario, names, start, configs)
        made.append(p)
        return p

    yield make
    for p in made:
        p.kill_all()


def errors(lines):
    return [json.loads(line[len("ERROR "):]) for line in lines if line.startswith("ERROR ")]
