# Where the all-to-all check finds the backdoor only at half the suspect's radius, hunt it there instead of at the
# suspect's radius (the variant this round measured against the committed rule; not in awm_fast):
# python hunt_radius_probe.py ATTACK:SEED ['json overrides'] runs trace_digits.py with the variant.
import os
import runpy
import sys

sys.path.insert(0, os.path.dirname(__file__))
from awm_fast import search


def check_and_keep_the_radius(self):
    suspect_radius = self.radius
    for fraction in search.ALL_TO_ALL_RADII:
        self.radius = suspect_radius * fraction
        found = self._check_all_to_all_at_radius()
        if found is not None:
            return found  # the hunt goes on at the radius that found the backdoor
    self.radius = suspect_radius
    return None


search.TargetedSearch._check_all_to_all = check_and_keep_the_radius
runpy.run_path(os.path.join(os.path.dirname(__file__), "trace_digits.py"), run_name="__main__")
