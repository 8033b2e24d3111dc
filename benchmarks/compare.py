"""Print a ratio table from a pytest-benchmark JSON: each fast path against "reference" in its group.

    python benchmarks/compare.py benchmarks/results/latest.json

Time is the median round (or the in-process `seconds` a subprocess benchmark recorded in extra_info);
memory is extra_info["peak_growth_mib"] where a benchmark measured it.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict


def _backend(name: str) -> str:
    paths = "reference|torch|triton|eager|extension|fused|compiled|screened"
    match = re.search(rf"\[(?:[^\]]*-)?({paths})(?:-[^\]]*)?\]", name)
    return match.group(1) if match else name


def rows(report: dict) -> list[tuple[str, str, float, float | None, float, float | None]]:
    """(group, backend, seconds, peak MiB, speed-up vs reference, memory ratio vs reference) per benchmark."""
    groups: dict[str, dict[str, tuple[float, float | None]]] = defaultdict(dict)
    for bench in report["benchmarks"]:
        extra = bench.get("extra_info", {})
        seconds = extra.get("seconds", bench["stats"]["median"])
        groups[bench["group"] or bench["name"]][_backend(bench["name"])] = (seconds, extra.get("peak_growth_mib"))
    table = []
    for group, by_backend in groups.items():
        base = by_backend.get("reference") or by_backend.get("eager")
        for backend, (seconds, memory) in by_backend.items():
            speedup = base[0] / seconds if base else float("nan")
            memory_ratio = memory / base[1] if base and memory is not None and base[1] else None
            table.append((group, backend, seconds, memory, speedup, memory_ratio))
    return table


def main(path: str) -> None:
    with open(path) as handle:
        report = json.load(handle)
    machine = report.get("machine_info", {})
    print(f"machine: {machine.get('cpu', {}).get('brand_raw', '?')}, {machine.get('cpu', {}).get('count', '?')} "
          f"cores; date: {report.get('datetime', '?')}")
    print("| benchmark | backend | time (s) | peak memory growth (MiB) | speed-up vs reference | memory vs reference |")
    print("|---|---|---|---|---|---|")
    for group, backend, seconds, memory, speedup, memory_ratio in rows(report):
        mem = f"{memory:.0f}" if memory is not None else "-"
        ratio = f"{memory_ratio:.2f}x" if memory_ratio is not None else "-"
        print(f"| {group} | {backend} | {seconds:.4f} | {mem} | {speedup:.2f}x | {ratio} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/latest.json")
