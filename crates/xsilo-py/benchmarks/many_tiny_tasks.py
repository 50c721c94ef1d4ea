"""RayFed's many-tiny-tasks benchmark, in its shape: per round one actor
call in alice, one in bob, and an aggregating call in alice on both
results, then get. Its imports are the only lines a RayFed user changes
(``import ray`` / ``import fed``). Run one process per party:

    python many_tiny_tasks.py alice & python many_tiny_tasks.py bob

Prints ``num_calls: N, time: T`` (seconds) in each party.
"""

import sys
import time

import xsilo as fed
import xsilo.ray as ray


@fed.remote
class MyActor:
    def run(self):
        return None


@fed.remote
class Aggregator:
    def aggr(self, val1, val2):
        return None


def main(party, num_calls):
    ray.init(address="local", include_dashboard=False)
    addresses = {
        "alice": "127.0.0.1:11010",
        "bob": "127.0.0.1:11011",
    }
    fed.init(addresses=addresses, party=party)

    actor_alice = MyActor.party("alice").remote()
    actor_bob = MyActor.party("bob").remote()
    aggregator = Aggregator.party("alice").remote()

    start = time.time()
    for _ in range(num_calls):
        val_alice = actor_alice.run.remote()
        val_bob = actor_bob.run.remote()
        sum_val_obj = aggregator.aggr.remote(val_alice, val_bob)
        fed.get(sum_val_obj)
    print(f"num_calls: {num_calls}, time: {time.time() - start}", flush=True)
    fed.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    assert len(sys.argv) >= 2, "Please run this script with party."
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10000)
