"""RayFed's README quick start runs with only its imports changed."""

import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def test_rayfed_quick_start_runs_with_its_imports_changed():
    out = subprocess.run([sys.executable, os.path.join(HERE, "rayfed_quickstart.py")],
                         capture_output=True, text=True, timeout=120)
    # The two processes share one pipe; their lines may interleave.
    found = sorted(re.findall(r"The result in party (\w+) is (\d+)", out.stdout))
    assert found == [("alice", "5"), ("bob", "5")], (out.stdout, out.stderr[-3000:])
    assert out.returncode == 0
