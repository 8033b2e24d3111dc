# Would the all-to-all check find anything where the warp check names the suspect first (and the check does not run)?
# python warp_first_probe.py DATASET MODEL CASES: radius_probe.py's measurements, run when purify builds the targeted
# search with the warp check's suspect (before any mask step); cases where the naming search runs print nothing.
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import radius_probe  # replaces TargetedSearch._check_all_to_all with its printing copy

from awm_fast import search

named_init = search.TargetedSearch.__init__


def init_and_check(self, model, x, cfg, generator, suspect=None):
    named_init(self, model, x, cfg, generator, suspect)
    if suspect is not None:
        print(f"  warp suspect {suspect}")
        search.TargetedSearch._check_all_to_all(self)


search.TargetedSearch.__init__ = init_and_check
radius_probe.main()
