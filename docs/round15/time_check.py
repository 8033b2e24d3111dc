# Seconds per digits purify with and without the half-radius check, alternated in one process (round 15):
# PYTHONPATH=. python docs/round15/time_check.py (from the repository root; the models come from cases.py's cache)
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "round5"))
from cases import load_case

import awm_fast
from awm_fast import search

for radii in [(1.0,), (1.0, 0.5), (1.0,), (1.0, 0.5)]:
    search.ALL_TO_ALL_RADII = radii
    for attack in ("badnets", "all-to-all"):
        model, _, few, _ = load_case(attack, 0)
        start = time.perf_counter()
        awm_fast.purify(model, few, seed=0)
        print(radii, attack, f"{time.perf_counter() - start:.1f} s", flush=True)
