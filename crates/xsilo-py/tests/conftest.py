import json
import os
import socket
import subprocess
import sys

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

    def finish(self, party, timeout=60):
        """Waits (bounded) for a party to exit: (exit code, stdout lines, stderr)."""
        proc = self.procs[party]
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"party {party} did not exit within {timeout} s; stdout: {out!r}; stderr: {err[-2000:]!r}")
        return proc.returncode, out.splitlines(), err

    def kill_all(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


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
