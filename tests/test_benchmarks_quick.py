"""Keep the benchmark suite from rotting: run every benchmark once, in quick mode, without timing."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_suite_runs_in_quick_mode():
    env = {**os.environ, "AWM_BENCH_QUICK": "1"}
    env.pop("TRITON_INTERPRET", None)  # benchmarks never time the interpreter
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "benchmarks",
                             "--benchmark-disable"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
