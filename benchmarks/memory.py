"""Peak-memory measurement for benchmarks.

CPU: a process's peak resident set (VmHWM) only ever grows, so each measurement runs in a fresh
subprocess and reports the growth of the peak over the resident set just before the measured call.
CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats, in-process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def rss_kib() -> int:
    return _status_kib("VmRSS")


def peak_rss_kib() -> int:
    return _status_kib("VmHWM")


def peak_growth_mib_in_subprocess(script: str) -> dict:
    """Run `script` (Python source defining `setup()` -> state and `measured(state)`) in a fresh process.

    Returns {"peak_growth_mib": peak RSS growth during measured(), "seconds": its wall time}.
    """
    driver = f"""
import json, time, sys
sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); sys.path.insert(0, {str(ROOT / 'tests')!r})
from memory import rss_kib, peak_rss_kib
{script}
state = setup()
before = rss_kib()
start = time.perf_counter()
measured(state)
seconds = time.perf_counter() - start
print(json.dumps({{"peak_growth_mib": (peak_rss_kib() - before) / 1024, "seconds": seconds}}))
"""
    out = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])
