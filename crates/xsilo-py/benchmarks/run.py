"""The Python tiny-task benchmark beside the Rust one, in the same run.

    python crates/xsilo-py/benchmarks/run.py [--quick]

Runs ``many_tiny_tasks.py`` as alice and bob (two processes over QUIC with
mutual TLS), then the Rust ``tiny-tasks`` benchmark
(``cargo run --release -p xsilo-bench -- tiny-tasks``), and prints one JSON
line: the Python round (microseconds, alice's mean over the rounds), the
Rust round measured in the same run as the baseline, their ratio (target
at most 5), and the speed-up over RayFed's 10.1 ms round on this machine
kind (../shared/MEASURED.md; target at least 20).
"""

import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
RAYFED_ROUND_US = 10_100.0  # MEASURED.md: RayFed's many-tiny-tasks round, p50


def python_round_us(rounds):
    procs = {
        p: subprocess.Popen([sys.executable, os.path.join(HERE, "many_tiny_tasks.py"), p, str(rounds)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for p in ("alice", "bob")
    }
    times = {}
    for p, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for q in procs.values():
                q.kill()
            sys.exit(f"party {p} did not finish within 600 s")
        m = re.search(r"num_calls: (\d+), time: ([0-9.]+)", out)
        if proc.returncode != 0 or not m:
            sys.exit(f"party {p} failed (exit {proc.returncode}): {out!r}")
        times[p] = float(m.group(2)) / int(m.group(1)) * 1e6
    return times["alice"]


def rust_round_us(quick):
    cmd = ["cargo", "run", "--release", "-q", "-p", "xsilo-bench", "--", "tiny-tasks"] + (["--quick"] if quick else [])
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if rec.get("bench") == "tiny_tasks.round_mean":
                return rec["value"]
    sys.exit(f"no tiny_tasks.round_mean line from the Rust benchmark: {out.stdout!r} {out.stderr[-2000:]!r}")


def main():
    quick = "--quick" in sys.argv
    rounds = 1000 if quick else 10000
    py = python_round_us(rounds)
    rust = rust_round_us(quick)
    print(json.dumps({
        "bench": "python.tiny_tasks.round_mean",
        "value": round(py, 1),
        "unit": "us",
        "baseline": rust,
        "baseline_is": "the Rust tiny-tasks round (mean), measured in the same run",
        "ratio": round(py / rust, 2),
        "target_ratio": "<= 5",
        "rounds": rounds,
        "rayfed_round_us": RAYFED_ROUND_US,
        "speedup_vs_rayfed": round(RAYFED_ROUND_US / py, 1),
        "target_speedup_vs_rayfed": ">= 20",
    }))


if __name__ == "__main__":
    main()
