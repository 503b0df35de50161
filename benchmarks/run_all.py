"""Runs every benchmark in turn (make bench). Each prints its own table."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = [
    ["bench_certify.py"],
    ["bench_certify.py", "--memory", "usps"],
    ["bench_exact.py"],
    ["bench_arml.py"],
    ["bench_quality.py"],
    ["bench_attacks.py", "--n-test", "200", "--n-boundary", "30"],
    ["bench_pairwise.py"],
]

if __name__ == "__main__":
    failed = 0
    for run in RUNS:
        print(f"\n=== {' '.join(run)} ===", flush=True)
        failed += subprocess.run([sys.executable, str(HERE / run[0]), *run[1:]], cwd=HERE).returncode != 0
    sys.exit(1 if failed else 0)
