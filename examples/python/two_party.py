"""Two parties, alice and bob, as two processes on this machine.

    pip install ./crates/xsilo-py
    python examples/python/two_party.py

RayFed's quick start with its imports changed: each party creates an actor,
increments it, and bob adds the two results; both print the sum. No files
to prepare: the parties use development certificates derived from the job
name (pass tls_config={"ca_cert": ..., "cert": ..., "key": ...} for real
deployments).
"""

import multiprocessing
import socket
import sys

import xsilo as fed


@fed.remote
class MyActor:
    def __init__(self, value):
        self.value = value

    def inc(self, num):
        self.value = self.value + num
        return self.value


@fed.remote
def aggregate(val1, val2):
    return val1 + val2


def main(party, addresses):
    fed.init(addresses=addresses, party=party, job_name="two-party-demo",
             config={"barrier_on_initializing": True})
    actor_alice = MyActor.party("alice").remote(1)
    actor_bob = MyActor.party("bob").remote(1)
    val_alice = actor_alice.inc.remote(1)
    val_bob = actor_bob.inc.remote(2)
    sum_val_obj = aggregate.party("bob").remote(val_alice, val_bob)
    result = fed.get(sum_val_obj)
    print(f"The result in party {party} is {result}", flush=True)
    fed.shutdown()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    ports = set()
    while len(ports) < 2:
        ports.add(free_port())
    alice_port, bob_port = sorted(ports)
    addresses = {"alice": f"127.0.0.1:{alice_port}", "bob": f"127.0.0.1:{bob_port}"}
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=main, args=(p, addresses)) for p in ("alice", "bob")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
    sys.exit(0 if codes == [0, 0] else 1)
