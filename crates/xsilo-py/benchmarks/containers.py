"""A model's weights as RayFed programs pass them: a dict of float32 arrays
crossing alice -> bob, against the same bytes as one array, in the same run.

    python crates/xsilo-py/benchmarks/containers.py [--mib 100] [--rounds 5]

Runs itself as alice and bob (two processes over QUIC with mutual TLS, on
127.0.0.1). Each round, alice's task makes the value (and alice waits until
it is made), then bob's task takes it and returns its size: the time from
that call to alice's fed.get of the size is the crossing (push, decode, the
body, the small answer back). Prints one JSON line: the dict's median
crossing, the one array's median crossing as the baseline, their ratio
(issue 21: at most 1.2), and each party's peak resident memory.
"""

import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

ARRAYS = 100  # layers of the "model"


def free_ports(n):
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def party_main(party, addresses, mib, rounds):
    import numpy as np

    import xsilo as fed

    @fed.remote
    def make(shape, mib):
        n = mib * (1 << 20) // 4
        if shape == "array":
            return np.ones(n, dtype=np.float32)
        per = n // ARRAYS
        return {f"layer{i}.weight": np.full(per, i, dtype=np.float32) for i in range(ARRAYS)}

    @fed.remote
    def nbytes(v):
        if isinstance(v, dict):
            return int(sum(a.nbytes for a in v.values()))
        return int(v.nbytes)

    fed.init(addresses=addresses, party=party, job_name="bench-containers",
             config={"barrier_on_initializing": True})
    times = {"array": [], "dict": []}
    size = {}
    for r in range(rounds + 1):  # the first round of each shape warms up
        for shape in ("array", "dict"):
            v = make.party("alice").remote(shape, mib)
            fed.get(nbytes.party("alice").remote(v))
            start = time.perf_counter()
            size[shape] = fed.get(nbytes.party("bob").remote(v))
            if r:
                times[shape].append(time.perf_counter() - start)
            del v
    fed.shutdown()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT", json.dumps({"times": times, "size": size, "peak_mib": round(peak_mib, 1)}), flush=True)


def main():
    args = sys.argv[1:]
    if args and args[0] == "--party":
        party, addresses, mib, rounds = args[1], json.loads(args[2]), int(args[3]), int(args[4])
        return party_main(party, addresses, mib, rounds)
    mib = int(args[args.index("--mib") + 1]) if "--mib" in args else 100
    rounds = int(args[args.index("--rounds") + 1]) if "--rounds" in args else 5
    ports = free_ports(2)
    addresses = {"alice": f"127.0.0.1:{ports[0]}", "bob": f"127.0.0.1:{ports[1]}"}
    procs = {
        p: subprocess.Popen([sys.executable, os.path.abspath(__file__), "--party", p, json.dumps(addresses),
                             str(mib), str(rounds)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for p in ("alice", "bob")
    }
    results = {}
    for p, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            for q in procs.values():
                q.kill()
            sys.exit(f"party {p} did not finish within 900 s")
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.exit(f"party {p} failed (exit {proc.returncode}): {out[-2000:]!r}")
        results[p] = json.loads(lines[0][len("RESULT "):])
    alice = results["alice"]
    dict_ms = statistics.median(alice["times"]["dict"]) * 1e3
    array_ms = statistics.median(alice["times"]["array"]) * 1e3
    print(json.dumps({
        "bench": "python.dict_of_arrays.crossing_median",
        "value": round(dict_ms, 1),
        "unit": "ms",
        "baseline": round(array_ms, 1),
        "baseline_is": "the same bytes as one float32 array, measured in the same run",
        "ratio": round(dict_ms / array_ms, 3),
        "target_ratio": "<= 1.2",
        "bytes": alice["size"]["dict"],
        "arrays": ARRAYS,
        "rounds": rounds,
        "dict_ms": [round(t * 1e3, 1) for t in alice["times"]["dict"]],
        "array_ms": [round(t * 1e3, 1) for t in alice["times"]["array"]],
        "peak_rss_mib": {p: r["peak_mib"] for p, r in results.items()},
    }))


if __name__ == "__main__":
    main()
